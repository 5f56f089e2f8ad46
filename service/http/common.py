"""What the HTTP faces share, below all of them: the app's context, body parsing, the model a
request names, and server-sent events. Endpoint modules import from here, never from each other."""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from flask import Response, current_app, g, request, stream_with_context

from service.core.errors import APIError


@dataclass
class AppContext:
    settings: object
    device: torch.device
    engine: object          # service.engine.Engine
    registry: object        # service.core.registry.Registry
    metrics: object         # service.metrics.Metrics
    compiler: object        # service.core.features.RegexCompiler
    openapi: object         # () -> the OpenAPI document of what is served now
    store: object = None    # jobs.store.Store: uploaded files, fine-tuning jobs and their events


def ctx() -> AppContext:
    return current_app.extensions["charrnn"]


def parse(schema):
    """The JSON body as `schema` (a pydantic model), validated against this server's limits."""
    if not request.is_json:
        raise APIError(400, "bad_request", "expected a JSON body with Content-Type: application/json")
    try:  # json.loads, not get_json: its RecursionError on deeply nested input would be a 500
        data = json.loads(request.get_data())
    except RecursionError:
        raise APIError(400, "bad_request", "the body's JSON nests too deeply") from None
    except ValueError:  # malformed, not UTF-8, or an integer of more than 4300 digits
        raise APIError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise APIError(400, "bad_request", "the body must be a JSON object")
    return schema.model_validate(data, context={"settings": ctx().settings})


def lane_for(name: str | None):
    """The lane serving model `name` (None: the default), loaded first if need be; the request's
    metrics carry the model's id from here on."""
    c = ctx()
    lane = c.registry.lane(name, timeout=c.settings.request_timeout_s)
    g.model = lane.name
    return lane


def start(req, name: str | None):
    """Look the model up, build the request's spec and submit it -> (lane, spec, Run). A reload that
    retires the lane between the lookup and the submit is met by looking it up again."""
    from service.core.completion import Run, spec_from
    from service.engine import LaneRetired

    c = ctx()
    for attempt in range(3):
        lane = lane_for(name)
        spec = spec_from(req, lane, settings=c.settings, compiler=c.compiler)
        try:
            return lane, spec, Run(c.engine, spec)
        except LaneRetired:
            continue
    raise APIError(503, "not_ready", "the model was reloaded repeatedly; retry", headers={"Retry-After": "1"})


def sse(obj) -> str:
    """One server-sent event: a JSON object, or a bare string such as [DONE]."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


def sse_response(body, seed: int | None = None) -> Response:
    """A text/event-stream answer that proxies pass through unbuffered (X-Accel-Buffering for nginx);
    a completion's says its seed (X-Seed)."""
    resp = Response(stream_with_context(body), mimetype="text/event-stream")
    resp.headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    if seed is not None:
        resp.headers["X-Seed"] = str(seed)
    return resp
