"""The HTTP service: create_app(settings) builds a Flask app around the model registry and its one
engine thread. Nothing is read or loaded at import time.

Layers, each importing only those below it:
  service/http/    the HTTP faces: routes, the native and OpenAI APIs, errors, auth, drain, pages
  service/core/    the completion layer (one spec from any API's request), request schemas, the registry
  service/engine/  continuous batching of every loaded model on one thread (knows no HTTP)
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref

import torch
from flask import Flask, g, request

from model.checkpoint import pick_device
from service.core.features import RegexCompiler
from service.core.registry import Registry
from service.engine import Engine
from service.memory import IdleTrimmer
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("charrnn.service")


def _stop_engine(ref: weakref.ref) -> None:
    engine = ref()
    if engine is not None:
        engine.stop(timeout=1.0)


def _yield_to_training(engine: Engine, store, settings: Settings, threads: int, every_s: float = 2.0) -> None:
    """While fine-tuning jobs run on this machine, the engine's wide turns use their cores' worth of
    threads fewer (Engine.reserved; docs/training.md, serving while training). Reads the jobs database
    every few seconds; runs no torch."""
    while engine.ready:
        try:
            running = len(store.jobs(("running",)))
        except Exception:  # a database busy past its timeout: keep the last answer
            running = None
        if running is not None:
            engine.reserved = min(threads - 1, running * settings.train_threads)
        time.sleep(every_s)


def create_app(settings: Settings | None = None) -> Flask:
    from service.http import auth, drain, errors, openapi, openapi_limits, routes
    from service.http.common import AppContext

    settings = settings or Settings.from_env()
    device = pick_device(settings.device)
    t0 = time.time()
    # The engine thread must be the only thread with an OpenMP team. libgomp counts the workers
    # of every thread's team; once they outnumber the cores it stops spin-waiting between
    # parallel regions and puts its workers to sleep, so every op of a decode step pays futex
    # wake-ups. So every model is built, warmed up and probed on the engine thread (which sets the
    # real thread count for itself), and this thread runs no torch op at all (bench/threads.py
    # measures the difference).
    threads = settings.torch_threads or torch.get_num_threads()
    metrics = Metrics()
    engine = Engine(max_queue=settings.max_queue, threads=threads, on_idle=IdleTrimmer(), metrics=metrics).start()
    # Under gunicorn the worker stops the engine as it drains (service/http/drain.py); under any other
    # server the engine still stops at interpreter exit (a weak reference: the app may go first).
    atexit.register(_stop_engine, weakref.ref(engine))
    registry = Registry(engine=engine, settings=settings, device=device, metrics=metrics)
    try:
        registry.preload()
    except Exception:
        engine.stop()
        raise
    log.info("serving %s from %s (default %s; loaded: %s) on %s in %.2fs", ", ".join(registry.names()),
             settings.models_dir, registry.default, ", ".join(registry.loaded()), device, time.time() - t0)

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.ensure_ascii = False  # characters as themselves in JSON answers
    app.json.sort_keys = False
    keys = auth.register(app, settings)  # first of the before_request hooks: nothing runs for a wrong key
    drain.Drain(engine).register(app)  # begun by SIGTERM in service/gunicorn_worker.py
    base = openapi.build_spec(routes.ROUTES)
    cached, lock = {}, threading.Lock()

    def document() -> dict:
        """The OpenAPI document for what is served now: rebuilt when the models or their files change.
        Each model's part comes from its card (registry.describe), so no model is loaded for it."""
        import copy

        from service.core.errors import APIError

        cards = {}
        for name in registry.names():
            try:
                entry = registry.describe(name)["entry"]
            except APIError:  # gone since names() listed it
                continue
            cards[name] = (entry.card_ident, entry.card)
        key = tuple((name, ident) for name, (ident, _) in cards.items())
        with lock:
            if cached.get("key") != key:
                cached["spec"] = openapi_limits.complete(copy.deepcopy(base), settings=settings, auth=keys,
                                                         cards={n: card for n, (_, card) in cards.items()},
                                                         default=registry.default)
                cached["key"] = key
            return cached["spec"]

    from jobs.store import Store

    app.extensions["charrnn"] = AppContext(settings=settings, device=device, engine=engine, registry=registry,
                                           metrics=metrics, compiler=RegexCompiler(), openapi=document,
                                           store=Store(settings.data_dir, settings.db_journal))
    if settings.train_shares_cores and threads > 1:
        threading.Thread(target=_yield_to_training, args=(engine, app.extensions["charrnn"].store, settings, threads),
                         name="charrnn-training-watch", daemon=True).start()

    @app.before_request
    def _uploads_may_be_larger():  # an upload's limit is its own setting, not the JSON bodies'
        if request.path == "/v1/files" and request.method == "POST":
            request.max_content_length = settings.max_file_bytes + (1 << 20)  # + the multipart framing
    routes.register(app)
    errors.register(app)

    @app.before_request
    def _start_timer():
        g.t0 = time.monotonic()

    @app.after_request
    def _count(resp):
        endpoint = request.url_rule.rule if request.url_rule else "(unmatched)"
        model = g.get("model", "")
        metrics.requests.labels(endpoint, str(resp.status_code), model).inc()
        if resp.mimetype != "text/event-stream":  # a stream observes its own end, in its body
            metrics.latency.labels(endpoint, model).observe(time.monotonic() - g.get("t0", time.monotonic()))
        return resp

    return app
