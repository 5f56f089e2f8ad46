"""Which weight precision has fast kernels on this CPU? The decode step's biggest product, timed.

    python bench/gemm_precisions.py [--threads 1] [--inner 1024]

x (B, K) @ W (K -> 2048): K = 1024 is layer 1's [input, h] x [W_ih | W_hh] in model/fused.py, K = 512
layer 0's h x W_hh (and every layer's W_hh in the prompt path); with W in
fp32 (MKL sgemm), fp16 (fbgemm's fp16-weight GEMM, what CHARRNN_PRECISION=fp16 uses), int8
(fbgemm's dynamic int8 GEMM with per-channel weights, CHARRNN_PRECISION=int8's, including its
anchor row: model/int8.py) and bf16 (torch.mm on bf16 operands, oneDNN; the activations cast to
bf16 and the result back, as a bf16 step would). Best of 5 rounds of 200 calls each, interleaved. Decides whether a precision is
worth adding to the probe (model/precision.py candidate_precisions). Prints a table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from model.precision import PRECISIONS, int8_available


def best_us(fn, calls: int = 200, rounds: int = 5) -> float:
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inner", type=int, default=1024, help="K, the product's input width (512: layer 0's W_hh)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    K = args.inner
    W = torch.randn(2048, K)
    wt, wb = W.T.contiguous(), W.T.contiguous().bfloat16()
    packed = torch.ops.quantized.linear_prepack_fp16(W, None)
    int8 = PRECISIONS["int8"].linear(W, None, 1.0) if int8_available() else None
    out = {}
    print(f"x (B, {K}) @ W ({K} -> 2048), {args.threads} thread(s); microseconds per product, best of 5")
    print(f"{'batch':>5} {'fp32':>8} {'fp16':>8} {'int8':>8} {'bf16':>8} {'int8/fp16':>10} {'bf16/fp16':>10}")
    for B in (1, 8, 64):
        x = torch.rand(B, K) * 2 - 1  # the step's inputs are tanh-bounded states
        r = {"fp32": best_us(lambda: torch.mm(x, wt)),
             "fp16": best_us(lambda: torch.ops.quantized.linear_dynamic_fp16(x, packed)),
             "int8": best_us(lambda: int8(x)) if int8 else float("nan"),
             "bf16": best_us(lambda: torch.mm(x.bfloat16(), wb).float())}
        out[B] = r
        print(f"{B:>5} {r['fp32']:>8.1f} {r['fp16']:>8.1f} {r['int8']:>8.1f} {r['bf16']:>8.1f} "
              f"{r['int8'] / r['fp16']:>10.2f} {r['bf16'] / r['fp16']:>10.2f}")
    print(json.dumps({"inner": K, "threads": args.threads, **out}))


if __name__ == "__main__":
    main()
