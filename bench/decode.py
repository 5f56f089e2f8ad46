"""Decode-step time per batch size: the engine's fused step vs the naive nn.LSTM step, against
the memory roofline (weight bytes / gemv bandwidth) and the compute roofline (sgemm FLOP/s at
the same batch), both measured in the same run.

    python bench/decode.py [--weights weights/shakespeare] [--batches 1,8,64,128] [--threads N]

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


def gemv_bandwidth(nbytes: int) -> float:
    """Bytes/s of an fp32 matrix-vector product over a matrix of `nbytes` (same size as the weights)."""
    cols = 2048
    W = torch.randn(max(1, nbytes // 4 // cols), cols)
    v = torch.randn(1, W.shape[0])
    return W.numel() * 4 / timeit(lambda: v @ W)


def gemm_flops(batch: int, k: int = 1024, n: int = 2048) -> float:
    a, b = torch.randn(batch, k), torch.randn(k, n)
    return 2 * batch * k * n / timeit(lambda: a @ b)


def main():
    from model.checkpoint import load_weights
    from model.network import CharRNN
    from model.config import ModelConfig

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", default=None, help="default: a random 2x512 model (same shape as shipped)")
    ap.add_argument("--batches", default="1,8,64,128")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.weights:
        model = load_weights(args.weights)[0]
    else:
        model = CharRNN(ModelConfig(65, 128, 512, 2)).eval()
    cfg = model.cfg
    # Bytes the fused step must read: W_hh_l0, [W_ih; W_hh] of upper layers, the head (the layer-0
    # input term is one row of a precomputed table).
    step_weights = sum(t.numel() for t in model._fused_weights()[1:])
    bw = gemv_bandwidth(step_weights * 4)
    lstm_head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embed"))

    rows = []
    for B in [int(b) for b in args.batches.split(",")]:
        x = torch.randint(0, cfg.vocab_size, (B, 1))
        state = model.init_hidden(B)
        fused = timeit(lambda: model(x, state))
        naive = {}
        for mkldnn in (True, False):
            torch.backends.mkldnn.enabled = mkldnn
            naive[mkldnn] = timeit(lambda: model.head(model.lstm(model.embed(x), state)[0]))
        torch.backends.mkldnn.enabled = True
        mem_floor = step_weights * 4 / bw
        flops = gemm_flops(B)
        compute_floor = 2 * lstm_head * B / flops
        rows.append({"batch": B, "fused_us": fused * 1e6, "naive_onednn_us": naive[True] * 1e6,
                     "naive_native_us": naive[False] * 1e6, "memory_floor_us": mem_floor * 1e6,
                     "compute_floor_us": compute_floor * 1e6,
                     "of_roofline": max(mem_floor, compute_floor) / fused, "chars_per_s": B / fused})
    print(f"{cfg.layers}x{cfg.hidden} LSTM, {torch.get_num_threads()} threads; step reads {step_weights * 4 / 1e6:.1f} MB; "
          f"gemv {bw / 1e9:.1f} GB/s")
    print(f"{'batch':>5} {'fused µs':>9} {'nn.LSTM µs':>11} {'(no oneDNN)':>11} {'mem floor':>9} "
          f"{'compute floor':>13} {'of roofline':>11} {'chars/s':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['fused_us']:>9.0f} {r['naive_onednn_us']:>11.0f} {r['naive_native_us']:>11.0f} "
              f"{r['memory_floor_us']:>9.0f} {r['compute_floor_us']:>13.0f} {r['of_roofline']:>11.0%} {r['chars_per_s']:>9.0f}")
    # Prompt prefill: the whole-sequence nn.LSTM over 200 characters, oneDNN vs native.
    prefill = []
    for B in (1, 8):
        x = torch.randint(0, cfg.vocab_size, (B, 200))
        r = {"batch": B, "chars": 200}
        for mkldnn in (True, False):
            torch.backends.mkldnn.enabled = mkldnn
            r["onednn_ms" if mkldnn else "native_ms"] = timeit(lambda: model(x), min_time=1.0, warmup=2) * 1e3
        torch.backends.mkldnn.enabled = True
        prefill.append(r)
    print("prefill of 200 characters (nn.LSTM, whole sequence):")
    for r in prefill:
        print(f"  batch {r['batch']}: oneDNN {r['onednn_ms']:.1f} ms, native {r['native_ms']:.1f} ms")
    print(json.dumps({"threads": torch.get_num_threads(), "step_weight_bytes": step_weights * 4,
                      "gemv_bytes_per_s": bw, "rows": rows, "prefill": prefill}))


if __name__ == "__main__":
    main()
