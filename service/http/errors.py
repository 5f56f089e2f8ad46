"""The one error dispatcher (its bodies are the pydantic models the OpenAPI document shows): every error answer (validation, auth, drain, overload, deadline, engine
failure, unknown model, anything unexpected) is rendered here, in the shape of the API family the
request came to:

- native:  {"error": {"type", "message", "details"}}, 422 for a request the schema rejects;
- OpenAI (/v1/...): {"error": {"message", "type", "param", "code"}}, 400 for every bad request, so
  the official client raises its own classes (BadRequestError, NotFoundError, RateLimitError, ...)
  and its retry on 429 follows our Retry-After.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from service.core.errors import APIError, validation_details
from service.core.openai_schemas import OpenAIError, OpenAIErrorBody
from service.core.schemas import ErrorBody, ErrorResponse

log = logging.getLogger("charrnn.service")

OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                422: "invalid_request_error", 429: "rate_limit_error"}
OPENAI_CODES = {"unauthorized": "invalid_api_key"}  # OpenAI's own code, which its clients know
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def family(path: str) -> str:
    return "openai" if path == "/v1" or path.startswith("/v1/") else "native"


def error_body(fam: str, status: int, code: str, message: str, details: list | None = None,
               param: str | None = None) -> tuple[int, dict]:
    """-> (status, body) of an error in family `fam`'s shape."""
    if fam == "openai":
        if param is None and details and isinstance(details[0], dict):
            param = details[0].get("field")
        body = OpenAIError(error=OpenAIErrorBody(message=message, type=OPENAI_TYPES.get(status, "server_error"),
                                                 param=param, code=OPENAI_CODES.get(code, code)))
        return 400 if status == 422 else status, body.model_dump()
    return status, ErrorResponse(error=ErrorBody(type=code, message=message, details=details or [])).model_dump()


def error_response(status: int, code: str, message: str, details: list | None = None, headers: dict | None = None,
                   path: str | None = None) -> Response:
    """An error answer to the current request (or to `path`'s family)."""
    status, body = error_body(family(request.path if path is None else path), status, code, message, details)
    resp = jsonify(body)
    resp.status_code = status
    resp.headers.update(headers or {})
    return resp


def from_api_error(e: APIError) -> Response:
    return error_response(e.status, e.type, e.message, e.details, e.headers)


def from_validation(e: ValidationError) -> Response:
    d = validation_details(e)
    if family(request.path) == "openai":  # OpenAI names every field at fault in its message
        msg = "; ".join(f"{x['field']}: {x['message'].removeprefix('Value error, ')}" for x in d)
        return error_response(422, d[0]["type"], msg, d)
    return error_response(422, "validation_error", f"invalid request field(s): "
                          f"{', '.join(sorted({x['field'] for x in d}))}", d)


def register(app: Flask) -> None:
    app.register_error_handler(APIError, from_api_error)
    app.register_error_handler(ValidationError, from_validation)

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        headers = {"Allow": ", ".join(e.valid_methods)} if getattr(e, "valid_methods", None) else None
        return error_response(e.code or 500, HTTP_CODES.get(e.code, "http_error"), e.description or e.name, None,
                              headers)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error")  # the traceback stays in the server log, never in the body
        return error_response(500, "internal_error", "internal server error")
