"""Graceful drain, started by SIGTERM (service/gunicorn_worker.py): from then on /ready answers 503
(load balancers stop sending), a new request gets a fast 503 instead of waiting, requests in
flight run on, and just before the graceful timeout the engine stops, so a stream still open
gets a final error event and [DONE] instead of a cut connection."""
from __future__ import annotations

import logging
import threading

from flask import Flask, request

from service.http.errors import error_response

log = logging.getLogger("charrnn.service")

STILL_ANSWERED = {"/health", "/metrics"}  # liveness and scraping carry on while draining


class Drain:
    def __init__(self, engine):
        self.engine = engine
        self.started = threading.Event()
        self._timer: threading.Timer | None = None

    def begin(self, grace_s: float) -> None:
        """Start draining; the engine stops after grace_s (in-flight requests finish before)."""
        if self.started.is_set():
            return
        self.started.set()
        log.info("draining: new requests get 503; the engine stops in %.1f s", grace_s)
        self._timer = threading.Timer(max(0.0, grace_s), self.engine.stop)
        self._timer.daemon = True
        self._timer.start()

    def finish(self) -> None:
        """The worker is exiting: stop the engine now (whatever is left gets 'shutting down')."""
        if self._timer is not None:
            self._timer.cancel()
        self.engine.stop()

    def register(self, app: Flask) -> "Drain":
        app.extensions["charrnn_drain"] = self

        @app.before_request
        def _refuse_while_draining():
            if not self.started.is_set() or request.path in STILL_ANSWERED:
                return None
            if request.path == "/ready":
                return error_response(503, "not_ready", "the server is shutting down")
            return error_response(503, "shutting_down", "the server is shutting down; retry (another instance)",
                                  None, {"Retry-After": "1", "Connection": "close"})
        return self
