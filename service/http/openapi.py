"""The OpenAPI 3.1 document, built from the route table (service/http/routes.py) and pydantic's own
JSON Schemas: request bodies in validation mode, answers in serialization mode. What only the
running server knows (its limits, the models served and their vocabularies) is filled in by
service/http/openapi_limits.py."""
from __future__ import annotations

from pydantic.json_schema import models_json_schema

from service.core.openai_schemas import OpenAIError
from service.core.schemas import ErrorResponse


def build_spec(routes) -> dict:
    docs = [r for r in routes if r.documented]
    models = ([(r.request, "validation") for r in docs if r.request] +
              [(m, "serialization") for m in [r.response for r in docs if r.response] + [ErrorResponse, OpenAIError]])
    refs, defs = models_json_schema(list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}")
    paths: dict = {}
    for r in docs:
        shape = refs[(OpenAIError if r.path.startswith("/v1/") else ErrorResponse, "serialization")]
        err = {"description": "error", "content": {"application/json": {"schema": shape}}}
        op = {"summary": r.summary, "responses": {"200": {"description": "OK"}}}
        params = [p.strip("{}") for p in r.path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        op["parameters"] = op.get("parameters", []) + [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}
            for name, schema, desc in r.query]
        if not op["parameters"]:
            del op["parameters"]
        if r.request is not None:
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": refs[(r.request, "validation")]}}}
        if r.form is not None:
            op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": r.form}}}
        if r.binary:
            op["responses"]["200"] = {"description": "OK", "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}
        if r.response is not None:
            content = {"application/json": {"schema": refs[(r.response, "serialization")]}}
            if r.stream:
                content["text/event-stream"] = {"schema": {"type": "string", "description": r.stream}}
            op["responses"]["200"] = {"description": "OK", "content": content}
        for code in r.errors:
            op["responses"][str(code)] = err
        paths.setdefault(r.path, {})[r.method] = op
    return {"openapi": "3.1.0",
            "info": {"title": "Char-RNN text generation", "version": "1.0.0",
                     "description": "A character-level LSTM language model served over HTTP: several models by name, "
                                    "a native API and an OpenAI-compatible one."},
            "paths": paths, "components": {"schemas": defs["$defs"]}}
