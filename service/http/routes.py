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
from service.core.tuning_schemas import (CheckpointList, Deleted, EventList, FileList, FileObject, Job, JobCreate,
                                         JobList)
from service.http import inspect, native, openai, pages, tuning

GEN_STREAM = ('data: {"index": i, "text": chunk} events, then per completion one with its finish_reason, then '
              'data: [DONE]')
V1_STREAM = ('data: {"id", "object": "text_completion", "created", "model", "choices": [{"text", "index", '
             '"logprobs", "finish_reason": null}]} chunks, a last one per choice with its finish_reason, a usage '
             'chunk with stream_options.include_usage, then data: [DONE]')


UPLOAD = {"type": "object", "required": ["file", "purpose"], "properties": {
    # a text, not any bytes: an upload that is not UTF-8 is refused (400 invalid_utf8)
    "file": {"type": "string", "contentMediaType": "text/plain", "description": "the training text, UTF-8"},
    "purpose": {"type": "string", "enum": ["fine-tune"], "description": "always fine-tune"}}}
AFTER = ("after", {"type": "string"}, "the id of the last item of the previous page")


def LIMIT(most: int) -> tuple:  # noqa: N802 (a constant's shape, made per route)
    return "limit", {"type": "integer", "minimum": 1, "maximum": most}, f"items per page (at most {most})"


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
    form: dict | None = None      # a multipart/form-data body: its JSON Schema
    query: tuple = ()             # (name, JSON Schema, description) of query parameters
    binary: bool = False          # the 200 answer is the bytes of a file

    @property
    def flask_path(self) -> str:
        # A model id takes any characters, so the registry answers 404 in the API's shape, listing the ids
        # there are; a file's or job's id has routes below it (/content, /cancel): one path segment.
        return re.sub(r"\{(\w+)\}", lambda m: f"<path:{m[1]}>" if m[1] == "model" else f"<{m[1]}>", self.path)


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
    Route("delete", "/v1/models/{model}", tuning.delete_model, "Delete a fine-tuned model (403 for any other model)",
          response=Deleted, errors=(403, 404)),
    Route("post", "/v1/files", tuning.create_file, "Upload a training text (UTF-8, or JSONL of text / prompt+completion)",
          response=FileObject, errors=(400, 413), form=UPLOAD),
    Route("get", "/v1/files", tuning.list_files, "Uploaded files, newest first", response=FileList, errors=(400,),
          query=(("purpose", {"type": "string"}, "only files of this purpose"), AFTER, LIMIT(10000))),
    Route("get", "/v1/files/{file_id}", tuning.get_file, "One uploaded file", response=FileObject, errors=(404,)),
    Route("get", "/v1/files/{file_id}/content", tuning.file_content, "The file's bytes as uploaded", errors=(404,),
          binary=True),
    Route("delete", "/v1/files/{file_id}", tuning.delete_file, "Delete an uploaded file", response=Deleted,
          errors=(404,)),
    Route("post", "/v1/fine_tuning/jobs", tuning.create_job, "Create a fine-tuning job: the offline trainer fine-tunes "
          "a served model (or trains one from scratch) on an uploaded text; the result is served by name",
          JobCreate, Job, (400, 404, 413)),
    Route("get", "/v1/fine_tuning/jobs", tuning.list_jobs, "Fine-tuning jobs, newest first", response=JobList,
          errors=(400,), query=(AFTER, LIMIT(100))),
    Route("get", "/v1/fine_tuning/jobs/{job_id}", tuning.get_job, "One fine-tuning job", response=Job, errors=(404,)),
    Route("post", "/v1/fine_tuning/jobs/{job_id}/cancel", tuning.cancel_job, "Cancel a job (the trainer stops at its "
          "next step; the events stay)", response=Job, errors=(400, 404)),
    Route("get", "/v1/fine_tuning/jobs/{job_id}/events", tuning.job_events, "A job's events, newest first; with "
          "stream=true, server-sent events (oldest first) until the job ends", response=EventList, errors=(400, 404),
          query=(AFTER, LIMIT(1000), ("stream", {"type": "boolean"}, "follow the events live (text/event-stream)")),
          stream='data: {fine_tuning.job.event} per event, oldest first, then data: [DONE] when the job has ended'),
    Route("get", "/v1/fine_tuning/jobs/{job_id}/checkpoints", tuning.job_checkpoints, "A job's evaluations, newest "
          "first, with their metrics", response=CheckpointList, errors=(400, 404), query=(AFTER, LIMIT(1000))),
    Route("get", "/", pages.index, documented=False),
    Route("get", "/ui/{name}", pages.ui_asset, documented=False),
    Route("get", "/openapi.json", pages.openapi_json, documented=False),
    Route("get", "/docs", pages.docs, documented=False),
    Route("get", "/docs/static/{name}", pages.swagger_asset, documented=False),
]


def register(app: Flask, routes: list[Route] = ROUTES) -> None:
    for r in routes:
        app.add_url_rule(r.flask_path, endpoint=f"{r.method}:{r.path}", view_func=r.view, methods=[r.method.upper()])
