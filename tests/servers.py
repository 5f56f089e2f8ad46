"""A real gunicorn server (gunicorn.conf.py, the production config) on a free port, for the tests
that need what only a real server does: sockets, signals, gunicorn's own parser and limits."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
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
                "CHARRNN_MODELS_DIR": str(Path(weights).parent), "CHARRNN_DATA_DIR": str(Path(weights).parent / "data"),
                "CHARRNN_TRAINER": "off",
                "WEB_CONCURRENCY": "1", "CHARRNN_HTTP_THREADS": "16", "CHARRNN_TORCH_THREADS": "1", **env}
        gunicorn = Path(sys.executable).with_name("gunicorn")
        # A file, not a pipe: nobody reads a pipe while the test runs, and once its 64 KiB fill up
        # with access-log lines gunicorn blocks writing them and stops answering.
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py"], cwd=ROOT, env=full,
                                     stdout=self._log, stderr=subprocess.STDOUT)

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
        raise RuntimeError("gunicorn did not start:\n" + self.stop()[-3000:])

    @property
    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self, timeout: float = 40) -> str:
        """SIGTERM (if still running), wait, SIGKILL past the timeout; -> everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.output
