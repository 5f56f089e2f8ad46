"""gunicorn settings for the Char-RNN service (`make serve`).

Why these choices:
- gthread workers: a streaming or waiting request holds a thread, not a process, so one
  process serves many concurrent clients; the engine inside batches them.
- One worker by default, on CPU and GPU alike: each process batches only its own requests and
  holds its own copy of the model, so fewer processes mean bigger batches. Torch threads are
  split across workers so workers x threads never exceeds the cores.
- No preload: the app (torch, model, engine thread) is created in each worker after fork;
  OpenMP pools created before a fork can deadlock the children.
Every value can be overridden with the environment variables named below.
"""
import os

_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
wsgi_app = "service.wsgi:app"
# gthread plus a drain on SIGTERM and gunicorn's own errors (414, 431, 400) as JSON: see the module.
worker_class = "service.gunicorn_worker.Worker"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Connections per worker that can be mid-request at once. A client that sends half a request and
# stalls holds one of these threads, so they are also how many stalled clients it takes to block
# everyone (docs/serving.md, "Limits and failure behaviour"): idle threads are cheap, so there are many.
# The engine's max_batch/max_queue, not this, bound the work.
threads = int(os.environ.get("CHARRNN_HTTP_THREADS", "512"))
worker_connections = int(os.environ.get("CHARRNN_HTTP_CONNECTIONS", "2000"))  # open connections per worker
preload_app = False
timeout = 60               # heartbeat: a worker silent this long is restarted (threads keep it alive)
graceful_timeout = int(os.environ.get("CHARRNN_GRACEFUL_TIMEOUT", "30"))  # on SIGTERM: time to finish in-flight
keepalive = 5
max_requests = int(os.environ.get("CHARRNN_MAX_REQUESTS", "20000"))  # recycle workers now and then ...
max_requests_jitter = 2000                                            # ... not all at once
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")

# Workers x torch threads <= cores (read by create_app through Settings).
os.environ.setdefault("CHARRNN_TORCH_THREADS", str(max(1, _cores // workers)))


def when_ready(server):
    """Once, in the master: warn when the API is open (no key) and reachable beyond this machine, and
    start the trainer (jobs/runner.py) beside the workers unless it runs elsewhere (CHARRNN_TRAINER=off):
    a process of its own, never a serving worker, so `make serve` serves and trains."""
    from service.http.auth import open_beyond_loopback

    if os.environ.get("CHARRNN_TRAINER", "local") == "local":
        import subprocess
        import sys

        def die_with_master():
            import ctypes
            import signal
            try:
                ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphan if we are killed
            except OSError:
                pass
        server.charrnn_trainer = subprocess.Popen([sys.executable, "-m", "jobs.runner"], preexec_fn=die_with_master)
        server.log.info("trainer started (pid %d): fine-tuning jobs run beside the server", server.charrnn_trainer.pid)

    exposed = open_beyond_loopback(server.cfg.bind, os.environ)
    if exposed:
        server.log.warning("no API key set (CHARRNN_API_KEY / CHARRNN_API_KEY_FILE) and listening on %s: "
                           "anyone who can reach it may use it", ", ".join(exposed))


def on_exit(server):
    """The trainer stops with the server: its jobs checkpoint and resume at the next start."""
    trainer = getattr(server, "charrnn_trainer", None)
    if trainer is not None and trainer.poll() is None:
        trainer.terminate()
        try:
            trainer.wait(35)
        except Exception:
            trainer.kill()
