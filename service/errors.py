"""Every error is JSON {"error": {"type", "message", "details"}} with a 4xx/5xx status."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("charrnn.service")


class APIError(Exception):
    def __init__(self, status: int, type_: str, message: str, details: list | None = None, headers=None):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message
        self.details, self.headers = details or [], headers or {}


def error_response(status: int, type_: str, message: str, details=None, headers=None):
    resp = jsonify({"error": {"type": type_, "message": message, "details": details or []}})
    resp.status_code = status
    resp.headers.update(headers or {})
    return resp


def validation_details(e: ValidationError) -> list[dict]:
    # A client's unknown key may hold a lone surrogate: replaced, so the answer can be UTF-8 encoded.
    return [{"field": ".".join(str(p) for p in err["loc"]).encode("utf-8", "replace").decode() or "(body)",
             "message": err["msg"], "type": err["type"]}
            for err in e.errors(include_url=False, include_context=False, include_input=False)]


def register(app: Flask) -> None:
    @app.errorhandler(APIError)
    def _api(e: APIError):
        return error_response(e.status, e.type, e.message, e.details, e.headers)

    @app.errorhandler(ValidationError)
    def _validation(e: ValidationError):
        d = validation_details(e)
        fields = ", ".join(sorted({x["field"] for x in d}))
        return error_response(422, "validation_error", f"invalid request field(s): {fields}", d)

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        names = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        headers = {"Allow": ", ".join(e.valid_methods)} if getattr(e, "valid_methods", None) else None
        return error_response(e.code or 500, names.get(e.code, "http_error"), e.description or e.name, None, headers)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error")  # the traceback stays in the server log, never in the body
        return error_response(500, "internal_error", "internal server error")
