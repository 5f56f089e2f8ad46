"""Which precision the recurrent matrices run in at inference: what this machine and these weights
allow (candidate_precisions), and which of those is fastest here, measured (probe_precision).

"fp32" runs everywhere; "fp16" and "int8" are CPU kernels of fbgemm (model/fused.py) that exist
only in some torch builds and on some CPUs, so each is probed once per process before use.
"""
from __future__ import annotations

import functools
import time

import torch

from model.int8 import int8_prepack

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MAX_COST = 0.01  # nats/char over fp32 on the validation split, measured and recorded in the card


@functools.cache  # a property of the torch build and the CPU: probe once per process
def fp16_available() -> bool:
    """fbgemm's fp16-weight linear exists in this torch build and runs on this CPU."""
    try:
        packed = torch.ops.quantized.linear_prepack_fp16(torch.ones(8, 8), None)
        return bool(torch.ops.quantized.linear_dynamic_fp16(torch.ones(1, 8), packed).sum() == 64)
    except Exception:  # no such op, or no fbgemm on this CPU (e.g. ARM builds ship qnnpack only)
        return False


@functools.cache
def int8_available() -> bool:
    """fbgemm's int8 dynamic linear (int8 weights per output channel, activations quantized per
    call, int32 accumulation) exists in this torch build and runs on this CPU."""
    try:
        packed = int8_prepack(torch.ones(8, 8), None)
        return bool(torch.ops.quantized.linear_dynamic(torch.ones(1, 8), packed).sum() == 64)
    except Exception:
        return False


def int8_cost(card: dict | None) -> float | None:
    """The most int8 has cost these weights over fp32, as model.evaluate --record measured it on the
    validation split (whole sequence and decode step; nats/char); None when not measured."""
    ev = (card or {}).get("evaluation", {})
    base = ev.get("stateful", {}).get("loss")
    costs = [ev[k]["loss"] - base for k in ("stateful_int8", "stateful_int8_stepwise") if k in ev]
    return max(costs) if base is not None and len(costs) == 2 else None


def candidate_precisions(device: torch.device | str, card: dict | None = None) -> list[str]:
    """What 'auto' may choose on this device, for the weights described by `card`: the precisions
    that cost <= 0.01 nats/char on the validation split. fp16 (fp16 weights, fp32 arithmetic)
    costs ~1e-5 (tests/test_shipped.py); int8 rounds activations too, so it is a candidate only
    for weights whose card records its measured cost (model.evaluate --precision int8 --record,
    both paths) within INT8_MAX_COST. bf16 is not among them: on an AVX-512-BF16 CPU its GEMM is
    slower than fbgemm's fp16 at batch 1 and 8 and faster only at large batches
    (bench/gemm_precisions.py, docs/performance.md); one precision per process would lose latency."""
    if torch.device(device).type != "cpu":
        return ["fp32"]
    out = ["fp32"] + (["fp16"] if fp16_available() else [])
    cost = int8_cost(card)
    if int8_available() and cost is not None and cost <= INT8_MAX_COST:
        out.append("int8")
    return out


@torch.no_grad()
def probe_precision(model, candidates: list[str], batches=(1, 16), steps: int = 3) -> tuple[str, dict]:
    """Time the decode step in each candidate precision and leave the model in the fastest.

    Call it on the thread that will serve (the engine's): its OpenMP team and caches are the ones
    measured. Per candidate: one untimed step (packs the weights), then the median of `steps`
    steps at each batch size; the score is their sum (latency at batch 1 + a busy batch), so a
    precision that only wins one regime does not take the other down with it.
    -> (chosen precision, {precision: score in microseconds}).
    """
    if len(candidates) == 1:
        model.set_precision(candidates[0])
        return candidates[0], {}
    device = model.head.weight.device
    scores = {}
    for p in candidates:
        model.set_precision(p)
        total = 0.0
        for B in batches:
            x, state = torch.zeros(B, 1, dtype=torch.long, device=device), model.init_hidden(B)
            model(x, state)
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                model(x, state)
                times.append(time.perf_counter() - t0)
            total += sorted(times)[steps // 2]
        scores[p] = round(total * 1e6, 1)
    best = min(scores, key=scores.get)
    model.set_precision(best)
    return best, scores


def choose_precision(model, precision: str, device: torch.device | str, card: dict | None = None) -> str:
    """Put `model` in `precision` as the service would: "auto" times candidate_precisions(device,
    card) on this thread (probe_precision); a named one is resolve_precision's. -> the precision."""
    if precision == "auto":
        return probe_precision(model, candidate_precisions(device, card))[0]
    model.set_precision(resolve_precision(precision, device))
    return model.precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """A named precision, checked against this device and torch build ("auto" is choose_precision's:
    it measures instead of guessing)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp16" and (device.type != "cpu" or not fp16_available()):
        raise ValueError("precision fp16 needs a CPU with fbgemm (torch.ops.quantized.linear_dynamic_fp16)")
    if precision == "int8" and (device.type != "cpu" or not int8_available()):
        raise ValueError("precision int8 needs a CPU with fbgemm (torch.ops.quantized.linear_dynamic)")
    return precision
