"""A real gunicorn server (the production config) on a free port, driven by scripts/smoke.sh."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, SHIPPED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_weights):
    # The shipped model when it is there (the smoke prompts are Shakespeare), else the tiny one.
    weights = SHIPPED if SHIPPED.with_suffix(".safetensors").exists() else tiny_weights
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "CHARRNN_WEIGHTS": str(weights), "CHARRNN_MODELS_DIR": str(weights.parent),
           "CHARRNN_DATA_DIR": str(tiny_weights.parent / "data"), "CHARRNN_TRAINER": "off",
           "WEB_CONCURRENCY": "1", "CHARRNN_HTTP_THREADS": "16"}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/ready", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    yield base, proc, weights
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_smoke_script_against_gunicorn(server):
    base, proc, weights = server
    if weights != SHIPPED:  # the tiny model's vocabulary lacks what the smoke prompts use
        pytest.skip("shipped weights absent")
    r = subprocess.run(["bash", "scripts/smoke.sh", base], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "all checks passed" in r.stdout


def test_gunicorn_shuts_down_gracefully(server):
    base, proc, _ = server
    assert urllib.request.urlopen(base + "/health", timeout=5).status == 200
    proc.terminate()
    out = proc.communicate(timeout=40)[0].decode()
    assert proc.returncode == 0, out[-2000:]
    assert "Booting worker" in out and "Shutting down" in out


def test_a_client_that_disconnects_frees_its_slot(server):
    import http.client
    import json
    import re

    base, proc, weights = server
    port = int(base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/generate", body=json.dumps({"max_new_chars": 2000, "stream": True, "n": 2}),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    conn.sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-stream
    resp.close()
    conn.close()

    def metric(name):
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))
    deadline = time.time() + 10
    while metric("charrnn_active_sequences") and time.time() < deadline:
        time.sleep(0.05)
    assert metric("charrnn_active_sequences") == 0
    assert metric(f'charrnn_generated_chars_total{{model="{weights.name}"}}') < 2 * 2000
