"""Decode-step time per batch size: the engine's fused step (fp32 and fp16 matrices) vs the
naive step through the nn module (nn.LSTM, nn.GRU or nn.RNN), against the cell's memory roofline
(the fp32 bytes its step reads / best fp32 gemv bandwidth) and compute roofline (2 FLOPs x its
recurrent and head weights x batch / best fp32 sgemm FLOP/s at that batch), measured in the same
run in interleaved rounds; then prompt prefill (whole-sequence module: fp32 oneDNN, fp32 native,
fp16). Per cell, a step reads W_hh of layer 0 (gates x H x H: LSTM 4, GRU 3, RNN 1), all of an
upper layer's W_ih and W_hh, and the head; layer 0's input term is one row of a table.

    python bench/decode.py [--weights weights/shakespeare | --cells lstm,gru,rnn]
                           [--batches 1,8,64,128] [--threads N]

Run it on a quiet machine. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def timeit(fn, min_time: float = 0.4, warmup: int = 5) -> float:
    """Median seconds per call over repeated blocks."""
    for _ in range(warmup):
        fn()
    n, t = 1, 0.0
    while t < 0.05:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        n *= 2
    reps = max(3, int(min_time / t))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n // 2 or 1):
            fn()
        samples.append((time.perf_counter() - t0) / (n // 2 or 1))
    return sorted(samples)[len(samples) // 2]


def best_gemv_seconds(nbytes: int) -> float:
    """Seconds of the fastest fp32 matrix-vector product over a matrix of `nbytes` (the weights'
    size), over both layouts torch's linear can be handed: the memory floor of one step."""
    cols = 2048
    W = torch.randn(max(1, nbytes // 4 // cols), cols)
    v, u = torch.randn(1, W.shape[0]), torch.randn(1, cols)
    return min(timeit(lambda: v @ W, min_time=0.15), timeit(lambda: torch.nn.functional.linear(u, W), min_time=0.15))


def best_gemm_flops(batch: int, k: int = 1024, n: int = 2048) -> float:
    """fp32 FLOP/s of the faster layout of a (batch, k) x (k, n) product: the compute floor."""
    a, b, bt = torch.randn(batch, k), torch.randn(k, n), torch.randn(n, k)
    return 2 * batch * k * n / min(timeit(lambda: a @ b, min_time=0.15), timeit(lambda: a @ bt.T, min_time=0.15))


def interleaved(fns: dict, rounds: int) -> dict:
    """Median of each measurement over `rounds` rounds that take turns: a machine that drifts
    (this VM's speed moves by up to 2x in half an hour) moves every figure in a ratio together."""
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k].append(fn())
    return {k: sorted(v)[len(v) // 2] for k, v in samples.items()}


SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def cpu_per_call(fn, calls: int = 200) -> float:
    """CPU seconds of this thread per call: on a shared machine, time spent preempted is not
    counted (the ops here are too small for torch to hand to other threads)."""
    for _ in range(5):
        fn()
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - t0) / calls


def feature_costs(model, vocab, batches: list[int], rounds: int) -> list[dict]:
    """Host-side sampling time per decode step (the engine's own Lane._sample, plus the regex
    state advance its push does) with one row, or every row, using a per-row feature, against
    the same batch with none: what a constrained (or scored, or biased) row costs the others.
    Each figure is the best of `rounds` interleaved rounds of this thread's CPU time per call."""
    import math
    import queue

    from model.constraints import RegexConstraint
    from model.sampling import SamplingParams
    from service.engine import Lane

    lane = Lane(model, vocab, prefix_cache=0)  # served by no engine: only its sampling is timed
    regex = RegexConstraint.compile(r"[A-Z][a-z]+ (of|the) [A-Z][a-z]+\.", vocab.chars)
    e = vocab.chars.index("e") if "e" in vocab.chars else 0
    variants = {  # name -> (rows using it: "one" | "all", Sequence features, extra SamplingParams)
        "none": ("one", {}, {}),
        "regex, 1 row": ("one", {"constraint": regex}, {}),
        "regex, all rows": ("all", {"constraint": regex}, {}),
        "logprobs 5, 1 row": ("one", {"logprobs": 5}, {}),
        "bias+penalties, 1 row": ("one", {}, {"logit_bias": ((e, -100.0),), "presence_penalty": 0.5,
                                              "frequency_penalty": 0.5}),
    }
    out = []
    for B in batches:
        raw = torch.randn(B, len(vocab)) * 3
        fns = {}
        for name, (rows, feats, extra) in variants.items():
            mine = rows == "all"
            batch = [lane.new_sequence([1, 2, 3], params=SamplingParams(temperature=0.8, **(extra if mine or i == 0 else {})),
                                         seed=i, max_new=10**9, stops=[], deadline=math.inf, events=queue.Queue(),
                                         index=i, stream=False, **(feats if mine or i == 0 else {})) for i in range(B)]
            t = lane._batch_params(batch)

            def step(batch=batch, t=t):
                nxt, _ = lane._sample(batch, t, raw)
                for s, i in zip(batch, nxt.tolist()):
                    if s.constraint is not None:  # what push does; back to the start after a match
                        s.fsm = s.constraint.next[s.fsm][i]
                        if s.constraint.closed[s.fsm]:
                            s.fsm = 0
                    if s.counts is not None:
                        s.counts[i] += 1
            fns[name] = lambda f=step: cpu_per_call(f)
        # The best of interleaved rounds: these are tens of µs, and other processes only ever add.
        samples = {k: [] for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                samples[k].append(fn())
        out.append({"batch": B, **{k + "_us": min(v) * 1e6 for k, v in samples.items()}})
    return out


def main():
    from model.checkpoint import load_weights
    from model.config import ModelConfig
    from model.precision import fp16_available, int8_available
    from model.network import CharRNN
    from model.vocab import Vocab

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", default=None, help="default: random 2x512 models (the shipped shape), one per --cells")
    ap.add_argument("--cells", default="lstm", help="without --weights: the cells to measure, e.g. lstm,gru,rnn")
    ap.add_argument("--batches", default="1,8,64,128")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size (median taken)")
    ap.add_argument("--features-only", action="store_true", help="only the per-row sampling features' cost")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.weights:
        loaded, vocab, _ = load_weights(args.weights)
        models = [loaded]
    else:
        vocab = Vocab(list(SHAKESPEARE_CHARS))
        models = [CharRNN(ModelConfig(65, 128, 512, 2, cell=c)).eval() for c in args.cells.split(",")]
    model = models[0]
    batches = [int(b) for b in args.batches.split(",")]
    features = feature_costs(model, vocab, batches, args.rounds)
    print("sampling per decode step (host side, Lane._sample), CPU µs; + = over the same batch without features:")
    names = [k[:-3] for k in features[0] if k.endswith("_us")]
    print(f"{'batch':>5} " + " ".join(f"{n:>22}" for n in names))
    for r in features:
        base = r["none_us"]
        print(f"{r['batch']:>5} " + " ".join(
            f"{r[n + '_us']:>22.0f}" if n == "none" else f"{r[n + '_us']:>10.0f} ({r[n + '_us'] - base:+5.0f})"
            + " " * 4 for n in names))
    if args.features_only:
        print(json.dumps({"threads": torch.get_num_threads(), "features": features}))
        return
    # int8 rounds activations too: measured here for speed; what it costs a model is model.evaluate's figure
    precisions = ["fp32"] + (["fp16"] if fp16_available() else []) + (["int8"] if int8_available() else [])
    cells = [step_and_prefill(m, batches, precisions, args.rounds) for m in models]
    print(json.dumps({"threads": torch.get_num_threads(), "cells": cells, "features": features}))


def step_and_prefill(model, batches: list[int], precisions: list[str], rounds: int) -> dict:
    """The decode-step table and the prefill lines of one model (one cell); -> its JSON figures."""
    from model.network import CharRNN

    cfg = model.cfg
    steps = {p: model.set_precision(p).fused_step() for p in precisions}
    # Bytes an fp32 step must read: W_hh_l0, W_ih and W_hh of upper layers, the head (the layer-0
    # input term is one row of a precomputed table). The roofline is in these fp32 bytes.
    step_bytes = steps["fp32"].nbytes
    core_head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embed"))

    rows = []
    for B in batches:
        x = torch.randint(0, cfg.vocab_size, (B, 1))
        state = model.init_hidden(B)

        def naive(mkldnn):
            def run():
                torch.backends.mkldnn.enabled = mkldnn
                try:
                    return timeit(lambda: model.head(CharRNN.run_core(model.core, model.embed(x), state)[0]),
                                  min_time=0.15)
                finally:
                    torch.backends.mkldnn.enabled = True
            return run

        fns = {p: (lambda f=f: timeit(lambda: f(x[:, 0], state), min_time=0.15)) for p, f in steps.items()}
        fns.update({"naive_onednn": naive(True), "naive_native": naive(False),
                    "mem_floor": lambda: best_gemv_seconds(step_bytes), "flops": lambda: best_gemm_flops(B)})
        m = interleaved(fns, rounds)
        compute_floor = 2 * core_head * B / m["flops"]
        floor = max(m["mem_floor"], compute_floor)
        r = {"batch": B, "naive_onednn_us": m["naive_onednn"] * 1e6, "naive_native_us": m["naive_native"] * 1e6,
             "memory_floor_us": m["mem_floor"] * 1e6, "compute_floor_us": compute_floor * 1e6}
        for p in precisions:
            r[f"{p}_us"], r[f"{p}_of_roofline"], r[f"{p}_chars_per_s"] = m[p] * 1e6, floor / m[p], B / m[p]
        rows.append(r)
    name = cfg.cell.upper()
    print(f"\n{cfg.layers}x{cfg.hidden} {name}, {torch.get_num_threads()} threads; an fp32 step reads "
          f"{step_bytes / 1e6:.1f} MB (gemv at {step_bytes / rows[0]['memory_floor_us'] / 1e3:.1f} GB/s); "
          f"medians of {rounds} interleaved rounds")
    cols = "".join(f" {p + ' µs':>8} {'of roof':>7}" for p in precisions)
    print(f"{'batch':>5}{cols} {'nn.' + name + ' µs':>10} {'(no oneDNN)':>11} {'mem floor':>9} {'compute floor':>13} "
          f"{'best chars/s':>12}")
    for r in rows:
        cols = "".join(f" {r[p + '_us']:>8.0f} {r[p + '_of_roofline']:>7.0%}" for p in precisions)
        best = max(r[p + "_chars_per_s"] for p in precisions)
        print(f"{r['batch']:>5}{cols} {r['naive_onednn_us']:>10.0f} {r['naive_native_us']:>11.0f} "
              f"{r['memory_floor_us']:>9.0f} {r['compute_floor_us']:>13.0f} {best:>12.0f}")
    # Prompt prefill: the whole-sequence module, fp32 (oneDNN and native) and fp16; int8's own
    # layer-by-layer path. 32 characters: the shipped model's window (CHARRNN_MAX_CONTEXT).
    prefill = []
    for B, T in ((1, 4), (1, 16), (1, 32), (8, 32), (1, 200), (8, 200)):  # (1 character: the decode step)
        x = torch.randint(0, cfg.vocab_size, (B, T))

        def run(precision, mkldnn=True):
            def f():
                model.set_precision(precision)
                torch.backends.mkldnn.enabled = mkldnn
                try:
                    return timeit(lambda: model(x, infer=True), min_time=0.3, warmup=2) * 1e3
                finally:
                    torch.backends.mkldnn.enabled = True
            return f
        fns = {"onednn_ms": run("fp32"), "native_ms": run("fp32", False)}
        for p in ("fp16", "int8"):
            if p in precisions:
                fns[f"{p}_ms"] = run(p)
        prefill.append({"batch": B, "chars": T, **interleaved(fns, 3)})
    print(f"prompt prefill (whole-sequence {name}), medians of 3 interleaved rounds:")
    for r in prefill:
        print(f"  batch {r['batch']}, {r['chars']:>3} chars: fp32 oneDNN {r['onednn_ms']:6.1f} ms, "
              f"native {r['native_ms']:6.1f} ms" + "".join(f", {p} {r[p + '_ms']:6.1f} ms" for p in ("fp16", "int8")
                                                          if p + "_ms" in r))
    model.set_precision("fp32")
    return {"cell": cfg.cell, "step_weight_bytes_fp32": step_bytes, "rows": rows, "prefill": prefill}


if __name__ == "__main__":
    main()
