"""OpenAPI 3.1 document generated from the pydantic models, and the interactive docs at /docs.

A thin layer of our own: the routes and pydantic's own JSON Schema output are all it takes.
/docs is Swagger UI ("Try it out" against this server), its assets served from the
swagger-ui-py package (Swagger UI 5: the first to render OpenAPI 3.1), so it works offline.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, jsonify, send_from_directory
from pydantic.json_schema import models_json_schema

from service.openai_schemas import CompletionRequest, CompletionResponse, ModelCard, ModelList, OpenAIError
from service.inspect_schemas import InspectRequest, InspectResponse
from service.schemas import ErrorResponse, GenerateRequest, GenerateResponse, PredictRequest, PredictResponse

bp = Blueprint("openapi", __name__)

ROUTES = [  # (method, path, summary, request model, response model, error statuses)
    ("post", "/predict-next", "Next-character distribution after a text", PredictRequest, PredictResponse,
     [400, 413, 422, 429, 503, 504]),
    ("post", "/generate", "Sample text (JSON, or text/event-stream with \"stream\": true)", GenerateRequest,
     GenerateResponse, [400, 413, 422, 429, 503, 504]),
    ("get", "/health", "Process is alive", None, None, []),
    ("get", "/ready", "Model loaded and engine running (503 otherwise)", None, None, [503]),
    ("get", "/info", "Model card, device and limits", None, None, []),
    ("get", "/metrics", "Prometheus metrics", None, None, []),
    ("post", "/inspect", "LSTM gates and cell states per character, and the model's surprise at each",
     InspectRequest, InspectResponse, [400, 413, 422, 504]),
    ("get", "/v1/models", "OpenAI-compatible: the served model; a character's index in `vocab` is its logit_bias key",
     None, ModelList, []),
    ("get", "/v1/models/{model}", "OpenAI-compatible: one model (404 model_not_found for any other id)", None,
     ModelCard, [404]),
    ("post", "/v1/completions", "OpenAI-compatible completions, a character per token (text/event-stream with "
     "\"stream\": true); errors in OpenAI's shape", CompletionRequest, CompletionResponse, [400, 404, 413, 429, 503, 504]),
]


def build_spec() -> dict:
    models = [PredictRequest, PredictResponse, GenerateRequest, GenerateResponse, ErrorResponse,
              CompletionRequest, CompletionResponse, ModelCard, ModelList, OpenAIError,
              InspectRequest, InspectResponse]
    refs, defs = models_json_schema([(m, "validation" if "Request" in m.__name__ else "serialization")
                                     for m in models], ref_template="#/components/schemas/{model}")
    ref = {m: refs[(m, "validation" if "Request" in m.__name__ else "serialization")] for m in models}
    paths: dict = {}
    for method, path, summary, req, resp, errors in ROUTES:
        shape = ref[OpenAIError if path.startswith("/v1/") else ErrorResponse]  # /v1: OpenAI's error shape
        err = {"description": "error", "content": {"application/json": {"schema": shape}}}
        op = {"summary": summary, "responses": {"200": {"description": "OK"}}}
        if "{model}" in path:
            op["parameters"] = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
        if req is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[req]}}}
        if resp is not None:
            content = {"application/json": {"schema": ref[resp]}}
            if path == "/generate":
                content["text/event-stream"] = {"schema": {"type": "string", "description":
                    'data: {"index": i, "text": chunk} events, then per completion one with its '
                    'finish_reason, then data: [DONE]'}}
            if path == "/v1/completions":
                content["text/event-stream"] = {"schema": {"type": "string", "description":
                    'data: {"id", "object": "text_completion", "created", "model", "choices": [{"text", "index", '
                    '"logprobs", "finish_reason": null}]} chunks, a last one per choice with its finish_reason, '
                    'a usage chunk with stream_options.include_usage, then data: [DONE]'}}
            op["responses"]["200"] = {"description": "OK", "content": content}
        for code in errors:
            op["responses"][str(code)] = err
        paths.setdefault(path, {})[method] = op
    return {"openapi": "3.1.0",
            "info": {"title": "Char-RNN text generation", "version": "1.0.0",
                     "description": "A character-level LSTM language model served over HTTP."},
            "paths": paths, "components": {"schemas": defs["$defs"]}}


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(current_app.extensions["charrnn"].spec)


# The only Swagger UI files the page loads (the package also ships the editor: not served).
SWAGGER_FILES = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"}
STATIC = Path(__file__).parent / "static"


@bp.get("/docs")
def docs():
    return send_from_directory(STATIC, "docs.html")


@bp.get("/docs/static/<name>")
def swagger_asset(name: str):
    import swagger_ui  # swagger-ui-py: Swagger UI's release files as package data

    if name not in SWAGGER_FILES:
        abort(404)
    return send_from_directory(Path(swagger_ui.__file__).parent / "static", name)
