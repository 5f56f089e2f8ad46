"""The HTTP service: create_app(settings) builds a Flask app around one loaded model and its
batching engine. Nothing is read or loaded at import time."""
from __future__ import annotations

import atexit
import logging
import time
import weakref
from dataclasses import dataclass

import torch
from flask import Flask, g, request

from model.checkpoint import load_weights, pick_device
from model.precision import candidate_precisions, resolve_precision
from model.network import CharRNN
from model.vocab import Vocab
from service.engine import Engine
from service.memory import IdleTrimmer
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("charrnn.service")


@dataclass
class AppContext:
    settings: Settings
    model: CharRNN
    vocab: Vocab
    card: dict
    device: torch.device
    engine: Engine
    metrics: Metrics
    spec: dict


def _stop_engine(ref: weakref.ref) -> None:
    engine = ref()
    if engine is not None:
        engine.stop(timeout=1.0)


def context_window(settings: Settings, card: dict) -> int:
    """CHARRNN_MAX_CONTEXT, else the window bench/context.py measured for these weights, else 0 (all)."""
    if settings.max_context is not None:
        return settings.max_context
    return int(card.get("inference", {}).get("max_context", 0))


def create_app(settings: Settings | None = None) -> Flask:
    from service import (api, auth, drain, errors, inspect_api, inspect_schemas, openai_api, openai_schemas, openapi,
                         openapi_limits, playground)

    settings = settings or Settings.from_env()
    device = pick_device(settings.device)
    t0 = time.time()
    # The engine thread must be the only thread with an OpenMP team. libgomp counts the workers
    # of every thread's team; once they outnumber the cores it stops spin-waiting between
    # parallel regions and puts its workers to sleep, so every op of a decode step pays futex
    # wake-ups. So this thread loads the model with one torch thread (no team), and the engine
    # thread sets the real count for itself. bench/threads.py (4000 batch-1 steps in a second
    # thread): after a 2-thread load 826-868 us a step and ~45k context switches; after a
    # 1-thread load 511-684 us and under 100.
    before = torch.get_num_threads()
    threads = settings.torch_threads or before
    torch.set_num_threads(1)
    try:
        model, vocab, card = load_weights(settings.weights, device)
        # auto: every candidate precision is timed on the engine thread at start (model/precision.py)
        precisions = (candidate_precisions(device, card) if settings.precision == "auto"
                      else [resolve_precision(settings.precision, device)])
        model.set_precision(precisions[0])
    finally:
        torch.set_num_threads(before)
    metrics = Metrics()
    engine = Engine(model, vocab, max_batch=settings.max_batch, max_queue=settings.max_queue,
                    prefill_chunk=settings.prefill_chunk, metrics=metrics, prefix_cache=settings.prefix_cache,
                    on_idle=IdleTrimmer(), stream_interval=settings.stream_interval_ms / 1000, threads=threads,
                    max_context=context_window(settings, card), precisions=precisions).start()
    # Under gunicorn the worker stops the engine as it drains (service/drain.py); under any other
    # server the engine still stops at interpreter exit (a weak reference: the app may go first).
    atexit.register(_stop_engine, weakref.ref(engine))
    log.info("loaded %s (%d params) on %s, inference in %s, in %.2fs", settings.weights, model.num_params(),
             device, model.precision, time.time() - t0)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.ensure_ascii = False  # characters as themselves in JSON answers
    app.json.sort_keys = False
    keys = auth.register(app, settings)  # first of the before_request hooks: nothing runs for a wrong key
    drain.Drain(engine).register(app)  # begun by SIGTERM in service/gunicorn_worker.py
    spec = openapi_limits.complete(openapi.build_spec(), settings, vocab, auth=keys)
    spec = openai_schemas.complete(spec, settings, vocab, openai_schemas.served_id(settings))  # /v1's limits
    spec = inspect_schemas.complete(spec, settings, vocab, model)  # /inspect's: the model's layers and units
    app.extensions["charrnn"] = AppContext(settings, model, vocab, card, device, engine, metrics, spec)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(openai_api.bp)  # /v1/*: OpenAI-compatible, OpenAI-shaped errors
    app.register_blueprint(playground.bp)
    app.register_blueprint(inspect_api.bp)
    errors.register(app)

    @app.before_request
    def _start_timer():
        g.t0 = time.monotonic()

    @app.after_request
    def _count(resp):
        endpoint = request.url_rule.rule if request.url_rule else "(unmatched)"
        metrics.requests.labels(endpoint, str(resp.status_code)).inc()
        if resp.mimetype != "text/event-stream":  # a stream observes its own end, in its body
            metrics.latency.labels(endpoint).observe(time.monotonic() - g.get("t0", time.monotonic()))
        return resp

    return app
