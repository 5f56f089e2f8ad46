"""APIError: what a request did wrong (or what stopped it), independent of any API's error shape.
The HTTP layer (service/http/errors.py) renders it in the shape of the API family the request came
to: the native one, or OpenAI's under /v1."""
from __future__ import annotations

from pydantic import ValidationError


class APIError(Exception):
    def __init__(self, status: int, type_: str, message: str, details: list | None = None, headers=None):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message
        self.details, self.headers = details or [], headers or {}

    @property
    def param(self) -> str | None:
        """The request field at fault, when one is (OpenAI's `param`)."""
        d = self.details[0] if self.details and isinstance(self.details[0], dict) else {}
        return d.get("field")


def invalid(field: str, message: str, status: int = 422) -> APIError:
    """One field's value is wrong in a way its schema cannot say (e.g. a character the model lacks)."""
    return APIError(status, "validation_error", f"invalid request field(s): {field}",
                    [{"field": field, "message": message, "type": "value_error"}])


def validation_details(e: ValidationError) -> list[dict]:
    # A client's unknown key may hold a lone surrogate: replaced, so the answer can be UTF-8 encoded.
    return [{"field": ".".join(str(p) for p in err["loc"]).encode("utf-8", "replace").decode() or "(body)",
             "message": err["msg"], "type": err["type"]}
            for err in e.errors(include_url=False, include_context=False, include_input=False)]
