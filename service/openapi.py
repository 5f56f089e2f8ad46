"""OpenAPI 3.1 document generated from the pydantic models, and a self-contained docs page.

A thin layer of our own: six routes and pydantic's own JSON Schema output are all it takes,
and the docs page needs no CDN or UI bundle, so it works offline.
"""
from __future__ import annotations

import html
import json

from flask import Blueprint, Response, current_app, jsonify
from pydantic.json_schema import models_json_schema

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
]


def build_spec() -> dict:
    models = [PredictRequest, PredictResponse, GenerateRequest, GenerateResponse, ErrorResponse]
    refs, defs = models_json_schema([(m, "validation" if "Request" in m.__name__ else "serialization")
                                     for m in models], ref_template="#/components/schemas/{model}")
    ref = {m: refs[(m, "validation" if "Request" in m.__name__ else "serialization")] for m in models}
    err = {"description": "error", "content": {"application/json": {"schema": ref[ErrorResponse]}}}
    paths: dict = {}
    for method, path, summary, req, resp, errors in ROUTES:
        op = {"summary": summary, "responses": {"200": {"description": "OK"}}}
        if req is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[req]}}}
        if resp is not None:
            content = {"application/json": {"schema": ref[resp]}}
            if path == "/generate":
                content["text/event-stream"] = {"schema": {"type": "string", "description":
                    'data: {"index": i, "text": chunk} events, then per completion one with its '
                    'finish_reason, then data: [DONE]'}}
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


@bp.get("/docs")
def docs():
    spec = current_app.extensions["charrnn"].spec
    parts = [f"<h1>{html.escape(spec['info']['title'])}</h1><p>{html.escape(spec['info']['description'])} "
             "Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            parts.append(f"<h2><code>{method.upper()} {html.escape(path)}</code></h2><p>{html.escape(op['summary'])}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                name = body["$ref"].rsplit("/", 1)[-1]
                rows = "".join(
                    f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(json.dumps(v.get('default', 'required')))}</td>"
                    f"<td>{html.escape(v.get('description', ''))}</td></tr>"
                    for k, v in spec["components"]["schemas"][name]["properties"].items())
                parts.append(f"<table><tr><th>field</th><th>default</th><th>meaning</th></tr>{rows}</table>")
            parts.append("<p>responses: " + ", ".join(op["responses"]) + "</p>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Char-RNN API</title><style>"
            "body{font-family:sans-serif;max-width:52em;margin:2em auto}td,th{border:1px solid #ccc;padding:.2em .5em}"
            "table{border-collapse:collapse}</style></head><body>" + "".join(parts) + "</body></html>")
    return Response(page, mimetype="text/html")
