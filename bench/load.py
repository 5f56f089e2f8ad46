"""Bounded concurrent load over loopback against a real gunicorn server.

    python bench/load.py [--url http://127.0.0.1:8000] [--clients 1,64] [--chars 256]

Without --url it starts `gunicorn -c gunicorn.conf.py` itself on a free port (shipped weights),
measuring time-to-ready and worker RSS. Scenarios, all in one run:
  generate  N clients x R /generate requests of --chars characters: chars/s and latency
            (p50/p99) from JSON answers, time to first char from the same load streamed,
            errors; against the compute roofline
            (batch-64 GEMM FLOP/s measured here before and after the load, the higher
            / (2 x LSTM+head weights per character)), fp32 sgemm and fp16-weight GEMM.
  predict   /predict-next with 200-character contexts, 1 and 8 clients: every context new
            (full prefill), one context repeated (prefix-cache hit), and (1 client) a text
            growing by 2 characters a request (autocomplete: 2 characters prefilled); beside GET /health
            driven the same way (the client's own overhead, which the ratio cancels).
Every loop is bounded in count and time. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = ("ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
           "Arise, fair sun, and kill the envious moon,\nWho is already sick and pale with grief,\nThat thou her maid")[:200]


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


def drive(base, clients, requests, method, path, body=None, stream=False, time_limit=120.0):
    """body: a dict, or a function of the request number returning one."""
    u = urlparse(base)
    counter = iter(range(10**9))
    results, lock = [], threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        start.wait()
        for _ in range(requests):
            if time.perf_counter() > stop_at[0]:
                break
            try:
                b = body(next(counter)) if callable(body) else body
                r = one_request(conn, method, path, b, stream)
            except Exception:
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
                r = (0, 0, None, 0.0)
            with lock:
                results.append(r)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + time_limit
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(time_limit + 130)
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[0] == 200]
    lat = [r[3] for r in ok]
    ttfc = [r[2] for r in ok if r[2] is not None]
    return {"clients": clients, "requests": len(results), "errors": len(results) - len(ok), "wall_s": wall,
            "chars": sum(r[1] for r in ok), "chars_per_s": sum(r[1] for r in ok) / wall,
            "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "ttfc_p50_ms": pct(ttfc, 50) * 1e3, "ttfc_p99_ms": pct(ttfc, 99) * 1e3}


def prefill_turns(base) -> tuple[float, float] | None:
    """(turns, rows) the server's engine has read prompts in so far (its /metrics histogram), or
    None for a server without it. One worker's figures: with several, each call may read another."""
    u = urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", "/metrics")
    got = dict(re.findall(r"^charrnn_prefill_batch_size_(count|sum) (\S+)$", c.getresponse().read().decode(), re.M))
    return (float(got["count"]), float(got["sum"])) if len(got) == 2 else None


def start_server(weights):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "CHARRNN_WEIGHTS": weights}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py", "--access-logfile", "/dev/null"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    while time.perf_counter() - t0 < 60:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.02)
    return proc, base, time.perf_counter() - t0


def worker_rss_mb(master_pid: int) -> list[float]:
    out = []
    for child in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split():
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
                out[f"{T}_chars_batch_{b}"] = timeit(lambda: model(torch.randint(0, model.cfg.vocab_size, (b, T))),
                                                     min_time=1.0, warmup=2) * 1e3
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None)
    ap.add_argument("--weights", default="weights/shakespeare")
    ap.add_argument("--clients", default="1,64")
    ap.add_argument("--requests", type=int, default=4, help="generate requests per client")
    ap.add_argument("--chars", type=int, default=256)
    ap.add_argument("--predict-requests", type=int, default=200, help="per client")
    ap.add_argument("--only", choices=["generate", "predict"], default=None,
                    help="run one half of the scenarios (quick A/B runs); the targets of the other half are skipped")
    args = ap.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from model.checkpoint import load_weights
    model = load_weights(args.weights)[0]

    proc, ready_s, rss = None, None, None
    base = args.url
    roofs = [compute_rooflines(model)]  # before the server starts and after it stops: quiet
    if base is None:
        proc, base, ready_s = start_server(args.weights)
    try:
        one_request(http.client.HTTPConnection(urlparse(base).hostname, urlparse(base).port), "POST", "/generate",
                    {"prompt": "A", "max_new_chars": 20})  # warm-up
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
            # a range of its own per scenario: a context sent by an earlier one would be a cache hit
            pred[f"predict_{n}"] = drive(base, n, args.predict_requests, "POST", "/predict-next",
                                         lambda i, n=n: {"text": unique_context(n * 1_000_000 + i)})
            after = prefill_turns(base)
            turns = after[0] - before[0] if before and after else 0
            pred[f"predict_{n}"]["prompts_per_turn"] = (after[1] - before[1]) / turns if turns > 0 else None
            pred[f"predict_cached_{n}"] = drive(base, n, args.predict_requests, "POST", "/predict-next",
                                                {"text": CONTEXT})
            pred[f"health_{n}"] = drive(base, n, args.predict_requests, "GET", "/health")
        # Autocomplete: each request's text extends the previous one by 2 characters, so the prefix
        # cache holds all but the last 2 and only those are prefilled.
        typing_text = (CONTEXT * 3)[:2 * args.predict_requests + 2]
        if args.only != "generate":
            pred["predict_typing_1"] = drive(base, 1, args.predict_requests, "POST", "/predict-next",
                                             lambda i: {"text": "zz" + typing_text[:2 * i + 2]})
        if proc:
            rss = worker_rss_mb(proc.pid)
        c = http.client.HTTPConnection(urlparse(base).hostname, urlparse(base).port, timeout=10)
        c.request("GET", "/info")
        info = json.loads(c.getresponse().read())
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
    roofs.append(compute_rooflines(model))
    window = info.get("limits", {}).get("max_context") or 0
    # in-process figures for the half that ran: the decode step's products (generate), the prompt path (predict)
    ceiling = step_products_ceiling(model, info.get("precision", "fp32")) if gen else None
    floor = prefill_floor_ms(model, info.get("precision", "fp32"), window) if pred else {}
    products_floor = prompt_products_floor_ms(model, info.get("precision", "fp32"), window) if pred else {}
    # The higher of the two measurements of each: the stricter roofline.
    roofline = {k: max(r[k] for r in roofs) for k in roofs[0]}
    roof = roofline["fp32"]

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
    if ready_s is not None:
        print(f"ready after {ready_s:.2f} s; worker RSS {', '.join(f'{r:.0f}' for r in rss)} MB")
    print(json.dumps({"generate": gen, **pred, **summary}))


if __name__ == "__main__":
    main()
