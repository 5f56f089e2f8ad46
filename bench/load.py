"""Bounded concurrent load over loopback against a real gunicorn server.

    python bench/load.py [--url http://127.0.0.1:8000] [--clients 1,64] [--chars 256]
    python bench/load.py --two-models      # two models served at once, each beside itself alone
    python bench/load.py --with-training   # the scenarios below without a fine-tuning job, then with one

Without --url it starts `gunicorn -c gunicorn.conf.py` itself on a free port, serving the --weights
model (the shipped one) from a temporary models directory (CHARRNN_MODELS_DIR; CHARRNN_DATA_DIR a
temporary folder too; CHARRNN_TRAINER=off unless --with-training), measuring time-to-ready and worker
RSS. Scenarios, all in one run:
  generate  N clients x R /generate requests of --chars characters: chars/s and latency
            (p50/p99) from JSON answers, time to first char from the same load streamed,
            errors; against the compute roofline
            (batch-64 GEMM FLOP/s measured here before and after the load, the higher
            / (2 x LSTM+head weights per character)), fp32 sgemm and fp16-weight GEMM.
  predict   /predict-next with 200-character contexts, 1 and 8 clients: every context new
            (full prefill), one context repeated (prefix-cache hit), and (1 client) a text
            growing by 2 characters a request (autocomplete: 2 characters prefilled); beside GET /health
            driven the same way (the client's own overhead, which the ratio cancels).
--two-models (instead of those): the server also serves a copy of the weights under another name
  (--model-b, default NAME-b: same shape, a lane of its own in the one engine thread), and the
  /generate load of the largest --clients count runs (a) on model A alone, (b) on model B alone,
  (c) on both at once, half the clients each: each model's chars/s in each case and (c)/(a) per
  model, all measured in this run (plus the server's own per-model counters over the time both ran,
  and each lane's mean decode batch). Then fairness: /predict-next p99 on model B, 1 client, while A
  carries that load, beside the same with A idle (new contexts and a prefix-cache hit, and /health).
  --only generate / predict runs one of the two halves.
--with-training: the server starts its trainer (CHARRNN_TRAINER=local; --train-threads and
  --train-nice, else CHARRNN_TRAIN_THREADS / CHARRNN_TRAIN_NICE, else the server's defaults). The
  generate and predict scenarios run once with no job; then a text is uploaded (the first
  --train-chars characters of shared/data/tinyshakespeare.txt when present, else generated
  English-like text), a fine-tuning job of the --weights model with a time budget longer than the
  measurement is created, and once it is running and has reported its first step, the same
  scenarios run again; the job is then cancelled. Both columns side by side with their ratio, and
  the trainer's own progress during the measurement (steps, chars/s from its metrics events).
Every loop is bounded in count and time. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = ("ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
           "Arise, fair sun, and kill the envious moon,\nWho is already sick and pale with grief,\nThat thou her maid")[:200]
FRESH = itertools.count()  # numbers for unique_context: no scenario (or pass) meets another's context in the cache


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def one_request(conn, method, path, body=None, stream=False):
    """-> (status, chars, ttfc, latency)."""
    t0 = time.perf_counter()
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"} if body is not None else {})
    resp = conn.getresponse()
    ttfc, chars = None, 0
    if stream and resp.status == 200:
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data: {"):
                ev = json.loads(line[6:])
                if ev.get("text"):
                    ttfc = ttfc or time.perf_counter() - t0
                    chars += len(ev["text"])
            elif line.startswith(b"data: [DONE]"):
                resp.read()
                break
    else:
        data = resp.read()
        if resp.status == 200 and path == "/generate":
            chars = json.loads(data)["usage"]["generated_chars"]
    return resp.status, chars, ttfc, time.perf_counter() - t0


def unique_context(i: int) -> str:
    """A 200-character context whose first and last characters are unique to request i: no
    prefix-cache hit, and no two windows (the last max_context characters, all the server reads
    of a new context) alike either, so nothing keyed by what is read could answer it from memory."""
    tag = ""
    for _ in range(5):
        i, r = divmod(i, 26)
        tag += chr(ord("a") + r)
    return tag + " " + CONTEXT[:200 - 2 * len(tag) - 2] + " " + tag


def drive(base, clients, requests, method, path, body=None, stream=False, time_limit=120.0, stop=None):
    """body: a dict, or a function of the request number returning one. stop: a threading.Event
    after which no client starts another request."""
    return drive_together(base, [dict(clients=clients, requests=requests, method=method, path=path, body=body,
                                      stream=stream, stop=stop)], time_limit)[0][0]


def drive_together(base, groups, time_limit=120.0, on_first_done=None):
    """Several loads (dicts of drive's arguments) released at one barrier, each measured on its own:
    its wall time runs from the common start to its own last answer. on_first_done() is called the
    moment the first group has finished (while the others may still run). -> (stats per group,
    {"first_done_s": seconds from the start to then, "first_done": what on_first_done returned})."""
    u = urlparse(base)
    start = threading.Barrier(sum(g["clients"] for g in groups) + 1)
    stop_at = [0.0]
    runs = []

    def client(g, counter, results, ends, lock):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        start.wait()
        stop, body = g.get("stop"), g.get("body")
        for _ in range(g["requests"]):
            if time.perf_counter() > stop_at[0] or (stop is not None and stop.is_set()):
                break
            try:
                b = body(next(counter)) if callable(body) else body
                r = one_request(conn, g["method"], g["path"], b, g.get("stream", False))
            except Exception:
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
                r = (0, 0, None, 0.0)
            with lock:
                results.append(r)
        with lock:
            ends.append(time.perf_counter())
        conn.close()

    for g in groups:
        run = {"results": [], "ends": [], "lock": threading.Lock()}
        counter = iter(range(10**9))
        run["threads"] = [threading.Thread(target=client, args=(g, counter, run["results"], run["ends"], run["lock"]),
                                           daemon=True) for _ in range(g["clients"])]
        runs.append(run)
    for run in runs:
        for t in run["threads"]:
            t.start()
    stop_at[0] = time.perf_counter() + time_limit
    start.wait()
    t0 = time.perf_counter()
    meta = {"first_done_s": None, "first_done": None}
    deadline = t0 + time_limit + 130
    if len(runs) == 1 and on_first_done is None:
        for t in runs[0]["threads"]:
            t.join(max(0.0, deadline - time.perf_counter()))
    else:  # watch for the first group to finish (its callback then runs while the others go on)
        pending = list(runs)
        while pending and time.perf_counter() < deadline:
            done = [run for run in pending if not any(t.is_alive() for t in run["threads"])]
            if done and meta["first_done_s"] is None:
                meta["first_done_s"] = time.perf_counter() - t0
                if on_first_done is not None:
                    meta["first_done"] = on_first_done()
            pending = [run for run in pending if run not in done]
            time.sleep(0.01)
    out = []
    for run in runs:
        with run["lock"]:
            results, ends = list(run["results"]), list(run["ends"])
        wall = (max(ends) if len(ends) == len(run["threads"]) else time.perf_counter()) - t0
        ok = [r for r in results if r[0] == 200]
        lat = [r[3] for r in ok]
        ttfc = [r[2] for r in ok if r[2] is not None]
        out.append({"clients": len(run["threads"]), "requests": len(results), "errors": len(results) - len(ok),
                    "wall_s": wall, "chars": sum(r[1] for r in ok), "chars_per_s": sum(r[1] for r in ok) / wall,
                    "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
                    "ttfc_p50_ms": pct(ttfc, 50) * 1e3, "ttfc_p99_ms": pct(ttfc, 99) * 1e3})
    return out, meta


def scrape(base) -> str:
    u = urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", "/metrics")
    return c.getresponse().read().decode()


def series(text: str, name: str, model: str | None = None) -> float | None:
    """The sum of a /metrics series over its label sets (only model=`model`'s when given); None when absent."""
    total, found = 0.0, False
    for labels, value in re.findall(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        if model is not None and f'model="{model}"' not in labels:
            continue
        total, found = total + float(value), True
    return total if found else None


def prefill_turns(base, model: str | None = None) -> tuple[float, float] | None:
    """(turns, rows) the server's engine has read prompts in so far (its /metrics histogram: all
    models', or `model`'s), or None for a server without it. One worker's figures: with several,
    each call may read another."""
    text = scrape(base)
    got = [series(text, f"charrnn_prefill_batch_size_{k}", model) for k in ("count", "sum")]
    return (got[0], got[1]) if None not in got else None


def model_counters(base, models) -> dict:
    """Per model: characters generated and the decode-batch histogram's count and sum, now."""
    text = scrape(base)
    return {m: {"chars": series(text, "charrnn_generated_chars_total", m) or 0.0,
                "steps": series(text, "charrnn_batch_size_count", m) or 0.0,
                "rows": series(text, "charrnn_batch_size_sum", m) or 0.0} for m in models}


def mean_batch(before: dict, after: dict, model: str) -> float | None:
    steps = after[model]["steps"] - before[model]["steps"]
    return (after[model]["rows"] - before[model]["rows"]) / steps if steps > 0 else None


def weights_prefix(weights: str) -> Path:
    p = Path(weights)
    p = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    if not Path(f"{p}.safetensors").exists() and not p.is_absolute() and Path(f"{ROOT / p}.safetensors").exists():
        p = ROOT / p
    return p


class Server:
    """`gunicorn -c gunicorn.conf.py` on a free port, serving `models` ({name: weights prefix}, the
    first the default), copied into a temporary models directory, with a temporary data directory;
    its log goes to a file there (shown when it fails to start)."""

    def __init__(self, models: dict, trainer: str = "off", env: dict | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmp = Path(tempfile.mkdtemp(prefix="charrnn-bench-"))
        models_dir, data_dir = self.tmp / "models", self.tmp / "data"
        models_dir.mkdir()
        data_dir.mkdir()
        for name, prefix in models.items():
            for suffix in (".safetensors", ".json"):
                shutil.copyfile(f"{prefix}{suffix}", models_dir / f"{name}{suffix}")
        self.names = list(models)
        full = {k: v for k, v in os.environ.items() if k not in ("CHARRNN_API_KEY", "CHARRNN_API_KEY_FILE")}
        full.update({"PORT": str(self.port), "HOST": "127.0.0.1", "CHARRNN_WEIGHTS": str(models_dir / self.names[0]),
                     "CHARRNN_MODELS_DIR": str(models_dir), "CHARRNN_DATA_DIR": str(data_dir),
                     "CHARRNN_TRAINER": trainer, **(env or {})})
        if len(self.names) > 1:  # loaded (built, probed, warmed up) before the server is ready, not in a measurement
            full["CHARRNN_PRELOAD"] = ",".join(self.names[1:])
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.log_path = self.tmp / "server.log"
        self._log = open(self.log_path, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py", "--access-logfile", "/dev/null"],
                                     cwd=ROOT, env=full, stdout=self._log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.perf_counter() - t0 > 120:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"the server did not become ready:\n{tail}")
            time.sleep(0.02)
        self.ready_s = time.perf_counter() - t0

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self):
        """SIGTERM, then SIGKILL past a minute (the trainer's own shutdown takes up to 35 s); the folder goes."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def worker_rss_mb(master_pid: int) -> list[float]:
    out = []
    for child in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split():
        try:
            if b"jobs.runner" in Path(f"/proc/{child}/cmdline").read_bytes():
                continue  # the trainer (CHARRNN_TRAINER=local), not a serving worker
        except OSError:
            continue
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out.append(int(line.split()[1]) / 1024)
    return out


def compute_rooflines(model) -> dict:
    """Characters/s a batch-64 step could reach at this machine's GEMM FLOP/s: best of the fp32
    layouts, and fbgemm's fp16-weight and int8 (dynamic, per-channel) GEMMs, the CPU decode
    step's kernels in those precisions. A 64 x 1024 @ 1024 x 2048 product: the shipped model's
    upper layer."""
    import torch
    from decode import best_gemm_flops, timeit
    from model.int8 import int8_prepack
    from model.precision import fp16_available, int8_available
    per_char = 2 * sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embed"))
    # Best of 3: a roofline measured on a moment this VM is slow would flatter the service.
    out = {"fp32": max(best_gemm_flops(64) for _ in range(3)) / per_char}
    a, w = torch.rand(64, 1024) * 2 - 1, torch.randn(2048, 1024) * 0.05
    kernels = {}
    if fp16_available():
        packed16 = torch.ops.quantized.linear_prepack_fp16(w, None)
        kernels["fp16_weights"] = lambda: torch.ops.quantized.linear_dynamic_fp16(a, packed16)
    if int8_available():
        packed8 = int8_prepack(w, None)
        kernels["int8"] = lambda: torch.ops.quantized.linear_dynamic(a, packed8)
    for name, f in kernels.items():
        t = min(timeit(f, min_time=0.15) for _ in range(3))
        out[name] = 2 * 64 * 1024 * 2048 / t / per_char
    return out


def step_products_ceiling(model, precision: str) -> float:
    """Characters/s of the decode step's matrix products alone, at batch 64 with the step's own
    shapes and packed weights (in int8 with its anchor row; the fp32 head): what a step could reach
    with no elementwise, sampling or HTTP cost. The roofline above is one well-shaped GEMM."""
    import torch
    from decode import timeit
    from model.fused import fused_step
    step, H = fused_step(model, precision), model.cfg.hidden
    if hasattr(step, "mats"):  # LSTM, RNN: layer 0 reads h (B, H), an upper layer [input, h] (B, 2H)
        pairs = [(m, torch.rand(64, H if k == 0 else 2 * H) * 2 - 1) for k, m in enumerate(step.mats)]
    else:                      # GRU: input and hidden products apart, each reading (B, H)
        pairs = [(m, torch.rand(64, H) * 2 - 1) for m in step.inp[1:] + step.hid]
    h = torch.rand(64, H) * 2 - 1

    def products():
        for m, x in pairs:
            m(x)
        step.head(h)
    with torch.no_grad():
        t = min(timeit(products, min_time=0.15) for _ in range(3))
    return 64 / t


def prefill_floor_ms(model, precision: str, window: int) -> dict:
    """The model alone, in this process: the prompt path over a whole 200-character context and
    over the server's window (its last `window` characters, what the server reads), for 1 and 8
    contexts at once: the floor under /predict-next's latency with new contexts."""
    import torch
    from decode import timeit
    model.set_precision(precision)  # the server's (from /info), so the floor is the server's own
    out = {"precision": model.precision}
    with torch.no_grad():
        for T in sorted({200, window or 200}):
            for b in (1, 8):
                out[f"{T}_chars_batch_{b}"] = timeit(
                    lambda: model(torch.randint(0, model.cfg.vocab_size, (b, T)), infer=True), min_time=1.0, warmup=2) * 1e3
    return out


def prompt_products_floor_ms(model, precision: str, window: int) -> dict:
    """The int8 prompt path's (PinnedLSTM's) own matrix products alone over `window` characters,
    for 1 and 8 contexts at once: per layer, one input product over all T positions and T
    recurrent (W_hh) products one after another, each waiting for the last; its own packed
    weights (pinned units included), timed one call at a time from Python (a few us of dispatch
    each). What that path pays before its gate math. {} for other paths."""
    import torch
    from decode import timeit
    from model.int8 import PIN, PinnedLSTM, reduce_range
    if precision != "int8" or model.cfg.cell != "lstm" or not window or not PinnedLSTM.fits(model):
        return {}
    rr, pinned, out = reduce_range(), PinnedLSTM(model), {}
    with torch.no_grad():
        for b in (1, 8):
            t = 0.0
            for k, (ih, hh) in enumerate(pinned.packed):
                x = torch.rand(window * b, (model.cfg.embed if k == 0 else model.cfg.hidden) + PIN) * 2 - 1
                h = torch.rand(b, model.cfg.hidden + PIN) * 2 - 1
                t += timeit(lambda: torch.ops.quantized.linear_dynamic(x, ih, rr), min_time=0.1)
                t += window * timeit(lambda: torch.ops.quantized.linear_dynamic(h, hh, rr), min_time=0.1)
            out[f"batch_{b}"] = t * 1e3
    return out


def run_scenarios(base, args, pass_no: int = 0) -> tuple[list, dict]:
    """The generate and predict scenarios (those --only leaves) -> (generate rows, predict rows).
    pass_no: a later pass over the same server (--with-training) reads texts no earlier pass sent."""
    gen = []
    for n in [int(c) for c in args.clients.split(",")] if args.only != "predict" else []:
        # chars/s and latency from plain JSON answers; time to first char from the same load streamed
        body = {"prompt": "ROMEO:", "max_new_chars": args.chars, "temperature": 0.8}
        g = drive(base, n, args.requests, "POST", "/generate", body)
        s = drive(base, n, args.requests, "POST", "/generate", {**body, "stream": True}, stream=True)
        g.update(ttfc_p50_ms=s["ttfc_p50_ms"], ttfc_p99_ms=s["ttfc_p99_ms"], stream_chars_per_s=s["chars_per_s"],
                 errors=g["errors"] + s["errors"])
        gen.append(g)
    pred = {}
    for n in (1, 8) if args.only != "generate" else ():
        before = prefill_turns(base)
        # every context new: numbers no other scenario, pass or client used (else a prefix-cache hit)
        pred[f"predict_{n}"] = drive(base, n, args.predict_requests, "POST", "/predict-next",
                                     lambda i: {"text": unique_context(next(FRESH))})
        after = prefill_turns(base)
        turns = after[0] - before[0] if before and after else 0
        pred[f"predict_{n}"]["prompts_per_turn"] = (after[1] - before[1]) / turns if turns > 0 else None
        pred[f"predict_cached_{n}"] = drive(base, n, args.predict_requests, "POST", "/predict-next",
                                            {"text": CONTEXT})
        pred[f"health_{n}"] = drive(base, n, args.predict_requests, "GET", "/health")
    # Autocomplete: each request's text extends the previous one by 2 characters, so the prefix
    # cache holds all but the last 2 and only those are prefilled. Its own first 2 characters per pass.
    typing_text = (CONTEXT * 3)[:2 * args.predict_requests + 2]
    lead = "z" + "zyxwvutsrq"[pass_no % 10]
    if args.only != "generate":
        pred["predict_typing_1"] = drive(base, 1, args.predict_requests, "POST", "/predict-next",
                                         lambda i: {"text": lead + typing_text[:2 * i + 2]})
    return gen, pred


def wait_active(base, n: int, timeout: float = 10.0) -> float:
    """Wait until the engine holds at least 3/4 of n sequences (a load in its steady state), at most
    `timeout` s; -> the number it held last."""
    t0, active = time.perf_counter(), 0.0
    while time.perf_counter() - t0 < timeout:
        active = series(scrape(base), "charrnn_active_sequences") or 0.0
        if active >= 0.75 * n:
            break
        time.sleep(0.05)
    return active


def two_models(base, args, a: str, b: str) -> dict:
    """--two-models: model A alone, model B alone, both at once (half the clients each), then /predict-next
    on B with A idle and with A under the load. Every figure and ratio from this run."""
    n = max(int(c) for c in args.clients.split(","))
    half = max(1, n // 2)
    out = {"model_a": a, "model_b": b, "clients": n, "chars": args.chars}

    def gen_body(m):
        return {"prompt": "ROMEO:", "max_new_chars": args.chars, "temperature": 0.8, "model": m}

    def gen_group(m, clients, requests=args.requests, stop=None):
        return dict(clients=clients, requests=requests, method="POST", path="/generate", body=gen_body(m), stop=stop)

    if args.only != "predict":
        for key, m in (("a_alone", a), ("b_alone", b)):
            c0 = model_counters(base, (a, b))
            out[key] = drive_together(base, [gen_group(m, n)], args.time_limit)[0][0]
            out[key]["mean_batch"] = mean_batch(c0, model_counters(base, (a, b)), m)
        # Both at once: n/2 clients on each, released together. Each model's chars/s over its own wall time
        # (as alone); the server's counters over the time both ran (to the first group's end) cross-check it.
        c0 = model_counters(base, (a, b))
        both, meta = drive_together(base, [gen_group(a, half), gen_group(b, n - half)], args.time_limit,
                                    on_first_done=lambda: model_counters(base, (a, b)))
        c1 = model_counters(base, (a, b))
        overlap, c_mid = meta["first_done_s"], meta["first_done"]
        out["both"] = {"a": both[0], "b": both[1], "overlap_s": overlap}
        for key, m in (("a", a), ("b", b)):
            out["both"][key]["mean_batch"] = mean_batch(c0, c1, m)
            out["both"][key]["server_chars_per_s_while_both_ran"] = (
                (c_mid[m]["chars"] - c0[m]["chars"]) / overlap if c_mid and overlap else None)
        ra, rb = (out["both"]["a"]["chars_per_s"] / out["a_alone"]["chars_per_s"],
                  out["both"]["b"]["chars_per_s"] / out["b_alone"]["chars_per_s"])
        out.update(ratio_both_over_alone_a=ra, ratio_both_over_alone_b=rb,
                   ratio_total_both_over_alone_mean=(out["both"]["a"]["chars_per_s"] + out["both"]["b"]["chars_per_s"])
                   / ((out["a_alone"]["chars_per_s"] + out["b_alone"]["chars_per_s"]) / 2),
                   ratio_b_alone_over_a_alone=out["b_alone"]["chars_per_s"] / out["a_alone"]["chars_per_s"])
    if args.only != "generate":
        # Fairness: B's single requests with A idle, then while A carries the n-client load.
        def b_predicts(suffix):
            out[f"predict_b_{suffix}"] = drive(base, 1, args.predict_requests, "POST", "/predict-next",
                                               lambda i: {"text": unique_context(next(FRESH)), "model": b})
            out[f"predict_b_cached_{suffix}"] = drive(base, 1, args.predict_requests, "POST", "/predict-next",
                                                      {"text": CONTEXT, "model": b})
            out[f"health_{suffix}"] = drive(base, 1, args.predict_requests, "GET", "/health")
        b_predicts("idle")
        stop, bg = threading.Event(), {}

        def a_load():  # until stopped (or past --time-limit + 60 s: then the predicts were not all under it)
            bg["r"] = drive_together(base, [gen_group(a, n, 10**6, stop)], args.time_limit + 60)[0][0]
            bg["covered"] = stop.is_set()
        load = threading.Thread(target=a_load, daemon=True)
        c0 = model_counters(base, (a, b))
        load.start()
        out["a_active_when_measured"] = wait_active(base, n)
        try:
            b_predicts("under_a_load")
        finally:
            stop.set()
            load.join(args.time_limit + 200)
        out["a_load_during_predict"] = bg.get("r")
        out["load_covered_predicts"] = bool(bg.get("covered"))
        if out["a_load_during_predict"]:
            out["a_load_during_predict"]["mean_batch"] = mean_batch(c0, model_counters(base, (a, b)), a)
        out["predict_b_p99_under_load_over_idle"] = (out["predict_b_under_a_load"]["p99_ms"]
                                                     / out["predict_b_idle"]["p99_ms"])
        out["predict_b_cached_p99_under_load_over_idle"] = (out["predict_b_cached_under_a_load"]["p99_ms"]
                                                            / out["predict_b_cached_idle"]["p99_ms"])
        out["health_p99_under_load_over_idle"] = out["health_under_a_load"]["p99_ms"] / out["health_idle"]["p99_ms"]
    return out


def print_two_models(t: dict, roof: float):
    a, b = t["model_a"], t["model_b"]
    if "a_alone" in t:
        print(f"\ntwo models served at once ({a} and {b}, same shape, a lane each in one engine thread); "
              f"/generate of {t['chars']} characters")
        print(f"{'case':18} {'model':>24} {'clients':>7} {'reqs':>5} {'err':>4} {'chars/s':>9} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'mean batch':>10} {'(c)/alone':>9}")
        rows = [("(a) A alone", a, t["a_alone"], None), ("(b) B alone", b, t["b_alone"], None),
                ("(c) both at once", a, t["both"]["a"], t["ratio_both_over_alone_a"]),
                ("(c) both at once", b, t["both"]["b"], t["ratio_both_over_alone_b"])]
        for case, m, r, ratio in rows:
            mb = r.get("mean_batch")
            print(f"{case:18} {m:>24} {r['clients']:>7} {r['requests']:>5} {r['errors']:>4} {r['chars_per_s']:>9.0f} "
                  f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {mb if mb is not None else float('nan'):>10.1f} "
                  f"{'' if ratio is None else f'{ratio:.2f}':>9}")
        both = t["both"]["a"]["chars_per_s"] + t["both"]["b"]["chars_per_s"]
        srv = [t["both"][k]["server_chars_per_s_while_both_ran"] for k in ("a", "b")]
        print(f"(c) both together {both:.0f} chars/s = {t['ratio_total_both_over_alone_mean']:.2f}x one model alone "
              f"(mean of (a), (b)) = {both / roof:.0%} of the decode kernel's roofline; B alone / A alone "
              f"{t['ratio_b_alone_over_a_alone']:.2f} (same weights: the run's own noise)")
        if None not in srv:
            print(f"(c) server counters while both ran ({t['both']['overlap_s']:.1f} s): {a} {srv[0]:.0f}, "
                  f"{b} {srv[1]:.0f} chars/s")
    if "predict_b_idle" in t:
        print(f"\nfairness: /predict-next on {b}, 1 client, with {a} idle and with {a} under {t['clients']} clients' "
              f"/generate load ({t.get('a_active_when_measured', 0):.0f} sequences active when it began)")
        print(f"{'scenario':44} {'idle p50':>9} {'idle p99':>9} {'load p50':>9} {'load p99':>9} {'p99 load/idle':>13}")
        for label, k in ((f"predict-next {b}, new contexts", "predict_b"),
                         (f"predict-next {b}, cache hit", "predict_b_cached"), ("GET /health", "health")):
            i, l = t[f"{k}_idle"], t[f"{k}_under_a_load"]
            print(f"{label:44} {i['p50_ms']:>9.2f} {i['p99_ms']:>9.2f} {l['p50_ms']:>9.2f} {l['p99_ms']:>9.2f} "
                  f"{l['p99_ms'] / i['p99_ms']:>13.2f}")
        bg = t.get("a_load_during_predict")
        if bg and not t.get("load_covered_predicts", True):
            print(f"WARNING: {a}'s load ended before the predicts under it did (--time-limit): raise it")
        if bg:
            ref = f" ({bg['chars_per_s'] / t['a_alone']['chars_per_s']:.2f}x A alone)" if "a_alone" in t else ""
            mb = bg.get("mean_batch")
            print(f"{a} meanwhile: {bg['chars_per_s']:.0f} chars/s{ref}, mean batch "
                  f"{mb if mb is not None else float('nan'):.1f}, {bg['errors']} errors")


# --- fine-tuning jobs (--with-training) --------------------------------------------------------------
def api(base, method, path, body=None, raw: bytes | None = None, content_type: str | None = None, timeout=60):
    """-> (status, decoded JSON or None)."""
    u = urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    headers = {}
    if body is not None:
        raw, content_type = json.dumps(body).encode(), "application/json"
    if content_type:
        headers["Content-Type"] = content_type
    c.request(method, path, body=raw, headers=headers)
    r = c.getresponse()
    data = r.read()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, None


def training_text(args) -> tuple[bytes, str]:
    """The upload: the first --train-chars characters of tinyshakespeare when found, else English-like
    text made here (seeded, so every run trains on the same)."""
    for p in [Path(args.train_file)] if args.train_file else [ROOT.parent / "shared/data/tinyshakespeare.txt",
                                                              ROOT / "shared/data/tinyshakespeare.txt"]:
        if p.is_file():
            return p.read_text(encoding="utf-8", errors="replace")[:args.train_chars].encode(), str(p)
    rng = random.Random(0)
    words = ("the and of to a in that is was he for it with as his on be at by i this had not are but from or have "
             "an they which one you were her all she there would their we him been has when who will more no if out "
             "so said what up its about into than them can only other new some could time these two may then do "
             "first any my now such like our over man me even most made after also did many before must through "
             "back years where much your way well down should because each just those people how too little state "
             "good very make world still own see men work long get here between both life being under never day "
             "same another know while last might us great old year off come since against go came right used take "
             "three king lord love night heart hand death house word eyes face light sweet fair honour crown").split()
    out, n = [], 0
    while n < args.train_chars:
        sent = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        sent = sent[0].upper() + sent[1:] + rng.choice([".", ".", ".", ",", "?", "!", ";"])
        if rng.random() < 0.2:
            sent = rng.choice(["KING", "LORD", "ROMEO", "JULIET", "FIRST CITIZEN"]) + ":\n" + sent
        out.append(sent + ("\n\n" if rng.random() < 0.15 else "\n" if rng.random() < 0.5 else " "))
        n += len(out[-1])
    return "".join(out)[:args.train_chars].encode(), "generated English-like text"


def upload(base, data: bytes, filename: str) -> str:
    boundary = "charrnn-bench-" + secrets.token_hex(8)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: text/plain\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, f = api(base, "POST", "/v1/files", raw=body, content_type=f"multipart/form-data; boundary={boundary}")
    if status != 200:
        raise RuntimeError(f"upload refused ({status}): {f}")
    return f["id"]


def job_events(base, job_id: str) -> list[dict]:
    """Every event of the job, oldest first."""
    status, r = api(base, "GET", f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000")
    return list(reversed(r["data"])) if status == 200 else []


def wait_first_step(base, job_id: str, timeout: float) -> dict:
    """Until the job runs and has reported a step; -> the job. RuntimeError when it ends or time runs out."""
    t0, j = time.perf_counter(), {}
    while time.perf_counter() - t0 < timeout:
        _, j = api(base, "GET", f"/v1/fine_tuning/jobs/{job_id}")
        if j["status"] == "running" and j.get("step", 0) > 0:
            return j
        if j["status"] in ("succeeded", "failed", "cancelled"):
            raise RuntimeError(f"the fine-tuning job ended ({j['status']}) before its first step: {j.get('error')}")
        time.sleep(1.0)
    _, info = api(base, "GET", "/info")
    raise RuntimeError(f"no step reported within {timeout:.0f} s (job status {j.get('status')}, trainer "
                       f"{(info or {}).get('trainer')})")


def trainer_log_step(server, job_id: str) -> int | None:
    """The step the trainer's progress bar (tqdm, redrawn every 2 s into its log) shows now; only for a server
    started here (its data directory is ours). Finer than the metrics events, which come every 25 steps."""
    if server is None:
        return None
    try:
        with open(server.tmp / "data" / "jobs" / job_id / "trainer.log", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    found = re.findall(r"(\d+)/\d+ \[", tail)
    return int(found[-1]) if found else None


def trainer_progress(events: list[dict], t_start: float, t_end: float, j0: dict, j1: dict) -> dict:
    """The trainer's metrics events after the step it had reported when the measurement began (j0) up to its
    end (t_end, Unix s; whole seconds on the events), and those before (the server idle meanwhile)."""
    metrics = [e for e in events if e["type"] == "metrics" and e.get("data")]
    start_step = j0.get("step") or 0
    during = [e["data"] for e in metrics if e["data"]["step"] > start_step and e["created_at"] <= math.ceil(t_end)]
    before = [e["data"] for e in metrics if e["data"]["step"] <= start_step]
    cps = [d["chars_per_second"] for d in during if d.get("chars_per_second")]
    cps_before = [d["chars_per_second"] for d in before if d.get("chars_per_second")]
    return {"step_at_start": j0.get("step"), "step_at_end": j1.get("step"),
            "steps_during": (j1.get("step") or 0) - (j0.get("step") or 0),
            "trained_chars_during": (j1.get("trained_tokens") or 0) - (j0.get("trained_tokens") or 0),
            "measurement_s": t_end - t_start, "metrics_events_during": len(during),
            "chars_per_s_during": sum(cps) / len(cps) if cps else None,
            "chars_per_s_before": sum(cps_before) / len(cps_before) if cps_before else None,
            "steps_reported_during": [d["step"] for d in during],
            "status_at_end": j1.get("status"), "ran_throughout": j1.get("status") == "running"}


def flat(gen: list, pred: dict) -> dict:
    """The figures compared with and without a job, by name."""
    out = {}
    for g in gen:
        n = g["clients"]
        out.update({f"generate_{n}_chars_per_s": g["chars_per_s"], f"generate_{n}_p99_ms": g["p99_ms"],
                    f"generate_{n}_ttfc_p99_ms": g["ttfc_p99_ms"],
                    f"generate_{n}_streamed_chars_per_s": g["stream_chars_per_s"], f"generate_{n}_errors": g["errors"]})
    for k, r in pred.items():
        out.update({f"{k}_p50_ms": r["p50_ms"], f"{k}_p99_ms": r["p99_ms"], f"{k}_errors": r["errors"]})
    return out


def print_with_training(t: dict):
    w, j = t["without_job"], t["with_job"]
    p = t["trainer"]
    sched = "SCHED_IDLE" if t.get("train_sched") == "idle" else f"nice {t['train_nice']}"
    print(f"\nwith a fine-tuning job training beside the server ({t['job']['model']}, trainer threads "
          f"{t['train_threads']}, {sched}, shares cores: {t.get('train_shares_cores')}) and without, same server, "
          f"same run")
    print(f"{'figure':40} {'without job':>12} {'with job':>12} {'with/without':>12}")
    for k in w:
        if k.endswith("_errors"):
            continue
        r = t["ratio"].get(k)
        print(f"{k:40} {w[k]:>12.2f} {j.get(k, float('nan')):>12.2f} {'' if r is None else f'{r:.2f}':>12}")
    errs = {k: (w[k], j.get(k)) for k in w if k.endswith("_errors") and (w[k] or j.get(k))}
    if errs:
        print("errors (without, with): " + ", ".join(f"{k[:-7]} {a}/{b}" for k, (a, b) in errs.items()))
    cps = p["chars_per_s_during"]
    print(f"trainer during the measurement ({p['measurement_s']:.0f} s): steps {p['step_at_start']} -> "
          f"{p['step_at_end']} (+{p['steps_during']}, reported every evaluation), {p['metrics_events_during']} "
          f"metrics events, {cps if cps is not None else float('nan'):.0f} chars/s (its own figure; before the "
          f"measurement, with the server idle: {p['chars_per_s_before'] or float('nan'):.0f})"
          + ("" if p["ran_throughout"] else f"; WARNING: the job was {p['status_at_end']} at the end"))
    if p.get("log_steps_during") is not None:
        print(f"trainer's progress bar (its log, redrawn every 2 s): +{p['log_steps_during']} steps during the "
              f"measurement = {p['log_chars_per_s_during']:.0f} chars/s")


def measure_with_training(base, args, model_name: str, pass_s: float, server) -> dict:
    """--with-training, after the pass without a job: upload, create the job, wait for its first step, the
    same scenarios again, the trainer's progress meanwhile, cancel. -> the comparison."""
    def say(msg):
        print(f"[with-training] {msg}", file=sys.stderr, flush=True)

    data, source = training_text(args)
    file_id = upload(base, data, "bench-train.txt")
    minutes = max(args.train_minutes, (3 * pass_s + args.train_wait) / 60)
    status, job = api(base, "POST", "/v1/fine_tuning/jobs", {"model": model_name, "training_file": file_id,
                                                            "hyperparameters": {"minutes": round(minutes, 2)},
                                                            "suffix": "bench", "seed": 0})
    if status != 200:
        raise RuntimeError(f"job refused ({status}): {job}")
    say(f"job {job['id']} ({minutes:.1f} min budget, {len(data)} bytes of {source}); waiting for its first step")
    t_wait = time.perf_counter()
    try:
        j0 = wait_first_step(base, job["id"], args.train_wait)
        waited = time.perf_counter() - t_wait
        say(f"running, step {j0['step']} after {waited:.0f} s; measuring with the job")
        bar0, t_start = trainer_log_step(server, job["id"]), time.time()
        gen1, pred1 = run_scenarios(base, args, pass_no=1)
        bar1, t_end = trainer_log_step(server, job["id"]), time.time()
        _, j1 = api(base, "GET", f"/v1/fine_tuning/jobs/{job['id']}")
        progress = trainer_progress(job_events(base, job["id"]), t_start, t_end, j0, j1)
        h = j0.get("hyperparameters") or {}
        if bar0 is not None and bar1 is not None:
            progress.update(log_steps_during=bar1 - bar0, log_chars_per_s_during=(bar1 - bar0) * h.get(
                "batch_size", 16) * h.get("seq_len", 64) / (t_end - t_start))
    finally:
        api(base, "POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    for _ in range(60):  # the trainer stops at its next step (checkpoint) before the server stops
        if any("trainer stopped" in e["message"] for e in job_events(base, job["id"])):
            break
        time.sleep(0.5)
    _, info = api(base, "GET", "/info")
    trainer = (info or {}).get("trainer") or {}
    return {"job": {"id": job["id"], "model": model_name, "minutes": minutes, "training_file_bytes": len(data),
                    "training_text": source, "first_step_after_s": waited, "step_at_first": j0["step"]},
            "train_threads": trainer.get("threads", args.train_threads),
            "train_nice": args.train_nice if args.train_nice is not None else int(os.environ.get(
                "CHARRNN_TRAIN_NICE", "10")) if server else None,
            # the niceness applies only under CHARRNN_TRAIN_SCHED=normal; the default is SCHED_IDLE
            "train_sched": os.environ.get("CHARRNN_TRAIN_SCHED", "idle") if server else None,
            "train_shares_cores": os.environ.get("CHARRNN_TRAIN_SHARES_CORES", "true") if server else None,
            "with_job_raw": {"generate": gen1, **pred1}, "trainer": progress}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="a running server instead of one started here")
    ap.add_argument("--weights", default="weights/shakespeare", help="the model served (its name: the file's stem)")
    ap.add_argument("--clients", default="1,64")
    ap.add_argument("--requests", type=int, default=4, help="generate requests per client")
    ap.add_argument("--chars", type=int, default=256)
    ap.add_argument("--predict-requests", type=int, default=200, help="per client")
    ap.add_argument("--only", choices=["generate", "predict"], default=None,
                    help="run one half of the scenarios (quick A/B runs); the targets of the other half are skipped")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds each load may run at most")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--two-models", action="store_true", help="two models at once, each beside itself alone "
                      "(see above); instead of the usual scenarios")
    mode.add_argument("--with-training", action="store_true", help="the usual scenarios without, then with, a "
                      "fine-tuning job running (see above)")
    ap.add_argument("--model-b", default=None, help="--two-models: the second model's name (default NAME-b, a copy "
                    "of --weights written into the temporary models directory; with --url, a model it serves)")
    ap.add_argument("--train-threads", type=int, default=None, help="--with-training: CHARRNN_TRAIN_THREADS")
    ap.add_argument("--train-nice", type=int, default=None, help="--with-training: CHARRNN_TRAIN_NICE")
    ap.add_argument("--train-minutes", type=float, default=10.0, help="--with-training: the job's time budget (raised "
                    "to cover the measurement: 3x the pass without a job, plus the wait for its first step)")
    ap.add_argument("--train-wait", type=float, default=600.0, help="--with-training: most seconds to wait for the "
                    "job's first reported step")
    ap.add_argument("--train-file", default=None, help="--with-training: the text to upload (default: "
                    "../shared/data/tinyshakespeare.txt, else generated)")
    ap.add_argument("--train-chars", type=int, default=200_000, help="--with-training: characters uploaded")
    args = ap.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from model.checkpoint import load_weights
    prefix = weights_prefix(args.weights)
    model = load_weights(str(prefix))[0]
    name_a = prefix.name
    name_b = args.model_b or f"{name_a}-b"

    server, ready_s, rss = None, None, None
    base = args.url
    gen, pred, two, training = [], {}, None, None
    roofs = [compute_rooflines(model)]  # before the server starts and after it stops: quiet
    if base is None:
        env = {}
        if args.train_threads is not None:
            env["CHARRNN_TRAIN_THREADS"] = str(args.train_threads)
        if args.train_nice is not None:
            env["CHARRNN_TRAIN_NICE"] = str(args.train_nice)
        models = {name_a: prefix, **({name_b: prefix} if args.two_models else {})}
        server = Server(models, trainer="local" if args.with_training else "off", env=env)
        base, ready_s = server.base, server.ready_s
    try:
        warm = [None, name_b] if args.two_models else [None]
        for m in warm:  # warm-up (each model's lane)
            one_request(http.client.HTTPConnection(urlparse(base).hostname, urlparse(base).port, timeout=120), "POST",
                        "/generate", {"prompt": "A", "max_new_chars": 20, **({"model": m} if m else {})})
        if args.two_models:
            _, models_now = api(base, "GET", "/v1/models")
            ids = [m["id"] for m in (models_now or {}).get("data", [])]
            if name_b not in ids or name_a not in ids:
                raise SystemExit(f"--two-models: the server serves {ids}, not both {name_a} and {name_b} (--model-b)")
            two = two_models(base, args, name_a, name_b)
        else:
            t0 = time.perf_counter()
            gen, pred = run_scenarios(base, args)
            pass_s = time.perf_counter() - t0
        if args.with_training:
            training = measure_with_training(base, args, name_a, pass_s, server)
        if server:
            rss = worker_rss_mb(server.proc.pid)
        c = http.client.HTTPConnection(urlparse(base).hostname, urlparse(base).port, timeout=10)
        c.request("GET", "/info")
        info = json.loads(c.getresponse().read())
    except BaseException:
        if server:
            print(f"server log (tail):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        if server:
            server.stop()
    roofs.append(compute_rooflines(model))
    window = info.get("limits", {}).get("max_context") or 0
    # in-process figures for the half that ran: the decode step's products (generate), the prompt path (predict)
    ceiling = step_products_ceiling(model, info.get("precision", "fp32")) if gen else None
    floor = prefill_floor_ms(model, info.get("precision", "fp32"), window) if pred else {}
    products_floor = prompt_products_floor_ms(model, info.get("precision", "fp32"), window) if pred else {}
    # The higher of the two measurements of each: the stricter roofline.
    roofline = {k: max(r[k] for r in roofs) for k in roofs[0]}
    roof = roofline["fp32"]

    if gen or pred:
        print(f"{'scenario':24} {'clients':>7} {'reqs':>5} {'err':>4} {'chars/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'TTFC p50':>9} {'TTFC p99':>9} {'streamed chars/s':>17}")
    for g in gen:
        print(f"{'generate ' + str(args.chars):24} {g['clients']:>7} {g['requests']:>5} {g['errors']:>4} "
              f"{g['chars_per_s']:>9.0f} {g['p50_ms']:>8.1f} {g['p99_ms']:>8.1f} {g['ttfc_p50_ms']:>9.1f} "
              f"{g['ttfc_p99_ms']:>9.1f} {g['stream_chars_per_s']:>17.0f}")
    for k, r in pred.items():
        print(f"{k:24} {r['clients']:>7} {r['requests']:>5} {r['errors']:>4} {'':>9} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    kernel = {"fp16": "fp16_weights", "int8": "int8"}.get(info.get("precision"), "fp32")
    summary = {"compute_roofline_chars_per_s": roof, "rooflines_chars_per_s": roofline, "prefill_floor_ms": floor,
               "ready_s": ready_s, "worker_rss_mb": rss, "server_precision": info.get("precision"),
               "max_context": info.get("limits", {}).get("max_context"), "decode_kernel": kernel,
               "step_products_chars_per_s": ceiling}
    # Issue 13's targets, each as measured in this run. The decode step's own kernel sets the roofline:
    # fbgemm's fp16-weight GEMM when the server chose fp16, its int8 GEMM for int8, sgemm for fp32.
    targets = {}
    if gen:
        g, kernel_roof = gen[-1], roofline[kernel]
        summary.update(generate_fraction_of_roofline=g["chars_per_s"] / roof,
                       generate_fraction_of_fp16_roofline=g["chars_per_s"] / roofline.get("fp16_weights", float("nan")),
                       speedup_vs_one_client=g["chars_per_s"] / gen[0]["chars_per_s"],
                       generate_fraction_of_kernel_roofline=g["chars_per_s"] / kernel_roof)
        targets[f"generate, {g['clients']} clients / decode kernel roofline >= 0.70"] = (g["chars_per_s"] / kernel_roof, 0.70)
        targets[f"streamed / plain chars/s, {g['clients']} clients >= 0.70"] = (g["stream_chars_per_s"] / g["chars_per_s"], 0.70)
        print(f"compute roofline {roof:.0f} chars/s (fp32 sgemm); {g['clients']} clients reach "
              f"{summary['generate_fraction_of_roofline']:.0%} of it, {summary['speedup_vs_one_client']:.1f}x one client")
        for k, label in (("fp16_weights", "fbgemm's fp16-weight GEMM"), ("int8", "fbgemm's int8 GEMM")):
            if k in roofline:
                mark = " (the server's decode-step kernel)" if k == kernel else ""
                print(f"roofline at {label}{mark}: {roofline[k]:.0f} chars/s; {g['clients']} clients reach "
                      f"{g['chars_per_s'] / roofline[k]:.0%} of it")
        print(f"the decode step's own products alone ({info.get('precision')}, its shapes, batch 64): {ceiling:.0f} "
              f"chars/s = {ceiling / kernel_roof:.0%} of the kernel's roofline; {g['clients']} clients reach "
              f"{g['chars_per_s'] / ceiling:.0%} of it")
    if pred:
        summary.update(predict_p99_ms_1_client=pred["predict_1"]["p99_ms"],
                       predict_p99_over_health_p99_8_clients=pred["predict_8"]["p99_ms"] / pred["health_8"]["p99_ms"],
                       cached_p99_over_health_p99_8_clients=pred["predict_cached_8"]["p99_ms"] / pred["health_8"]["p99_ms"],
                       prompt_products_floor_ms=products_floor)
        targets["predict-next p99, new 200-char contexts, 1 client <= 20 ms"] = (pred["predict_1"]["p99_ms"], 20.0)
        targets["predict-next p99 / health p99, 8 clients <= 2.5"] = (summary["predict_p99_over_health_p99_8_clients"], 2.5)
        print(f"predict-next p99 {summary['predict_p99_ms_1_client']:.1f} ms (1 client); at 8 clients p99 = "
              f"{summary['predict_p99_over_health_p99_8_clients']:.2f}x that of /health; a prefix-cache hit "
              f"(no model work, the HTTP path and the engine's hand-offs alone): "
              f"{summary['cached_p99_over_health_p99_8_clients']:.2f}x; new contexts were read "
              f"{pred['predict_8']['prompts_per_turn'] or float('nan'):.1f} per prefill turn at 8 clients")
        for T in sorted({200, window or 200}):
            print(f"floor: the prompt path over {T} chars ({floor['precision']}) alone takes "
                  f"{floor[f'{T}_chars_batch_1']:.1f} ms for one context, {floor[f'{T}_chars_batch_8']:.1f} ms for 8 at "
                  f"once (in-process, same run){' - the window the server reads' if T == window else ''}")
        if products_floor:
            print(f"floor: that path's matrix products alone over {window} chars (per layer one input product and T "
                  f"recurrent ones in sequence): {products_floor['batch_1']:.1f} ms for one context, "
                  f"{products_floor['batch_8']:.1f} ms for 8 at once")
    summary["targets"] = {k: {"measured": round(v, 4), "target": t, "met": (v <= t) if "<=" in k else (v >= t)}
                          for k, (v, t) in targets.items()}
    print(f"server: precision {summary['server_precision']} (probe {info.get('precision_probe')}), "
          f"max_context {summary['max_context']}")
    for k, t in summary["targets"].items():
        print(f"target {k}: {t['measured']:.3g} -> {'met' if t['met'] else 'NOT met'}")
    if two is not None:
        if "both" in two:
            for k, r in (("a_alone", two["a_alone"]), ("b_alone", two["b_alone"])):
                two[f"{k}_fraction_of_kernel_roofline"] = r["chars_per_s"] / roofline[kernel]
            two["both_total_fraction_of_kernel_roofline"] = (two["both"]["a"]["chars_per_s"] +
                                                             two["both"]["b"]["chars_per_s"]) / roofline[kernel]
        print_two_models(two, roofline[kernel])
        summary["two_models"] = two
    if training is not None:
        without, with_job = flat(gen, pred), flat(training["with_job_raw"]["generate"],
                                                  {k: v for k, v in training["with_job_raw"].items() if k != "generate"})
        training.update(without_job=without, with_job=with_job,
                        ratio={k: with_job[k] / v for k, v in without.items()
                               if not k.endswith("_errors") and k in with_job and v})
        print_with_training(training)
        summary["with_training"] = training
    if ready_s is not None:
        print(f"ready after {ready_s:.2f} s; worker RSS {', '.join(f'{r:.0f}' for r in rss)} MB")
    print(json.dumps({"generate": gen, **pred, **summary}))


if __name__ == "__main__":
    main()
