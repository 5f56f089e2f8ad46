"""The gunicorn worker of this service: gunicorn's gthread worker plus two things it lacks.

- Drain on SIGTERM: the app is told at once (service/drain.py: /ready 503, new requests 503, the
  engine stopped shortly before the graceful timeout so open streams end with an error event),
  and the worker closes its listening sockets as soon as its loop stops accepting. Otherwise the
  kernel keeps completing handshakes into the backlog of a socket nobody accepts from any more:
  such a client waits, unanswered, until the worker exits and its connection is reset. Closed, a
  new connection is refused at once (with one worker; with several, the others still take it
  until they get the signal too).
- gunicorn's own errors (request line over limit_request_line: 414, headers over their limits:
  431, malformed requests: 400) in the API's JSON error shape instead of an HTML page.
"""
from __future__ import annotations

import json
import threading

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from service.http.errors import error_body, family

TYPES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
         431: "headers_too_large", 500: "internal_error", 501: "not_implemented"}
_request = threading.local()  # the path of the request gunicorn is answering with an error, when it parsed one


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for gunicorn.util.write_error (same arguments), writing the API's JSON error shape:
    OpenAI's for a request gunicorn could tell was for /v1, else the native one."""
    _, obj = error_body(family(getattr(_request, "path", "") or ""), status_int,
                        TYPES.get(status_int, "bad_request"), mesg or reason)
    body = json.dumps(obj).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin1")
    util.write_nonblock(sock, head + body)


class Worker(ThreadWorker):
    def init_process(self):
        # gunicorn's handle_error looks util.write_error up at each call; this process is ours alone.
        util.write_error = write_json_error
        super().init_process()

    def handle_error(self, req, client, addr, exc):
        _request.path = getattr(req, "path", None) if req is not None else None
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            _request.path = None

    def _drain(self):
        return getattr(self.wsgi, "extensions", {}).get("charrnn_drain") if self.wsgi else None

    def handle_exit(self, sig, frame):
        drain = self._drain()
        if drain is not None and self.alive:
            # The master kills us graceful_timeout after its SIGTERM: stop the engine a little
            # before, so every stream still open gets its error event and [DONE] in time.
            g = self.cfg.graceful_timeout
            drain.begin(max(0.0, g - min(2.0, g / 4)))
        super().handle_exit(sig, frame)

    def set_accept_enabled(self, enabled):
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # leaving the loop: refuse new connections from now
            for s in self.sockets:
                s.close()

    def run(self):
        try:
            super().run()
        finally:  # in-flight requests are done (or out of time): stop the engine thread cleanly
            drain = self._drain()
            if drain is not None:
                drain.finish()
