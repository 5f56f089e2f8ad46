"""The one table of routes: it registers the Flask views and is what the OpenAPI document
(service/http/openapi.py) is built from, so the two cannot disagree. A new endpoint is a view in
its API's module and a line here."""
from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Flask

from service.core.inspect_schemas import InspectRequest, InspectResponse
from service.core.openai_schemas import CompletionRequest, CompletionResponse, ModelCard, ModelList
from service.core.schemas import GenerateRequest, GenerateResponse, PredictRequest, PredictResponse
from service.http import inspect, native, openai, pages

GEN_STREAM = ('data: {"index": i, "text": chunk} events, then per completion one with its finish_reason, then '
              'data: [DONE]')
V1_STREAM = ('data: {"id", "object": "text_completion", "created", "model", "choices": [{"text", "index", '
             '"logprobs", "finish_reason": null}]} chunks, a last one per choice with its finish_reason, a usage '
             'chunk with stream_options.include_usage, then data: [DONE]')


@dataclass(frozen=True)
class Route:
    method: str
    path: str                     # OpenAPI's form: /v1/models/{model}
    view: object
    summary: str = ""
    request: type | None = None   # the JSON body's pydantic model
    response: type | None = None  # the 200 body's pydantic model
    errors: tuple = ()            # documented error statuses
    stream: str | None = None     # a text/event-stream answer too: what its events are
    documented: bool = True       # pages' assets are served, not documented

    @property
    def flask_path(self) -> str:  # a path parameter takes any characters, so the view answers 404 itself
        return re.sub(r"\{(\w+)\}", r"<path:\1>", self.path)


ROUTES = [
    Route("post", "/predict-next", native.predict_next, "Next-character distribution after a text",
          PredictRequest, PredictResponse, (400, 404, 413, 422, 429, 503, 504)),
    Route("post", "/generate", native.generate, "Sample text (JSON, or text/event-stream with \"stream\": true)",
          GenerateRequest, GenerateResponse, (400, 404, 413, 422, 429, 503, 504), stream=GEN_STREAM),
    Route("post", "/inspect", inspect.inspect, "LSTM gates and cell states per character, and the model's surprise "
          "at each", InspectRequest, InspectResponse, (400, 404, 413, 422, 503, 504)),
    Route("get", "/health", native.health, "Process is alive"),
    Route("get", "/ready", native.ready, "Default model loaded and engine running (503 otherwise)", errors=(503,)),
    Route("get", "/info", native.info, "The default model's card, what is loaded, device and limits"),
    Route("get", "/metrics", native.metrics, "Prometheus metrics"),
    Route("get", "/v1/models", openai.models, "OpenAI-compatible: every model of the models directory, with its "
          "card; a character's index in `vocab` is its logit_bias key", response=ModelList),
    Route("get", "/v1/models/{model}", openai.model, "OpenAI-compatible: one model (404 model_not_found, listing the "
          "ids there are, for any other id)", response=ModelCard, errors=(404,)),
    Route("post", "/v1/completions", openai.completions, "OpenAI-compatible completions, a character per token "
          "(text/event-stream with \"stream\": true); errors in OpenAI's shape", CompletionRequest, CompletionResponse,
          (400, 404, 413, 429, 503, 504), stream=V1_STREAM),
    Route("get", "/", pages.index, documented=False),
    Route("get", "/ui/{name}", pages.ui_asset, documented=False),
    Route("get", "/openapi.json", pages.openapi_json, documented=False),
    Route("get", "/docs", pages.docs, documented=False),
    Route("get", "/docs/static/{name}", pages.swagger_asset, documented=False),
]


def register(app: Flask, routes: list[Route] = ROUTES) -> None:
    for r in routes:
        app.add_url_rule(r.flask_path, endpoint=f"{r.method}:{r.path}", view_func=r.view, methods=[r.method.upper()])
