"""A real gunicorn server (gunicorn.conf.py, the production config) on a free port, for the tests
that need what only a real server does: sockets, signals, gunicorn's own parser and limits."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, weights: Path, **env: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "CHARRNN_WEIGHTS": str(weights),
                "WEB_CONCURRENCY": "1", "CHARRNN_HTTP_THREADS": "16", "CHARRNN_TORCH_THREADS": "1", **env}
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.proc = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py"], cwd=ROOT, env=full,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = ""

    def wait_ready(self, timeout: float = 60) -> "Server":
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.base + "/ready", timeout=1)
                return self
            except urllib.error.HTTPError:
                return self  # answering (a 503 is the test's business)
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not start:\n" + self.output[-3000:])

    def stop(self, timeout: float = 40) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.output += self.proc.communicate(timeout=timeout)[0].decode(errors="replace")
        if self.proc.poll() is None:
            self.proc.kill()
            self.output += self.proc.communicate()[0].decode(errors="replace")
        return self.output
