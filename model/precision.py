"""Inference precisions of the recurrent matrices: what each one is (a Precision in PRECISIONS:
its products, its prompt path, the bytes it stores per weight, whether this machine has it), what
this machine and these weights allow (candidate_precisions), and which of those is fastest here,
measured (probe_precision). model/fused.py's decode steps are built from a Precision's products.

- "fp32": torch's linear (MKL on CPU, cuBLAS on GPU); prompts through the nn module itself.
- "fp16": CPU only. fbgemm's fp16-weight / fp32-activation GEMM: weights stored in half
  precision (half the bytes), widened to fp32 in registers, fp32 accumulation. Faster than
  MKL's sgemm at the small batches of decoding (docs/performance.md: bench/decode.py); the
  validation loss it costs is measured by model.evaluate --precision. Prompts through PyTorch's
  dynamic fp16 LSTM / GRU (torch.ao.nn.quantized.dynamic: the same fbgemm GEMM), which also has
  none of oneDNN's per-call weight re-layout, the cost that dominates short prompts.
- "int8": CPU only. fbgemm's dynamic int8 GEMM (model/int8.py): int8 weights with one scale per
  output row, the input quantized to 8 bits at each call, int32 accumulation (VNNI). A
  quarter of fp32's bytes and several times fbgemm fp16's arithmetic rate at decoding batches
  (bench/decode.py). It rounds activations too, so the service picks it only for weights whose
  card records its measured validation cost (candidate_precisions). LSTM prompts through
  PyTorch's dynamic int8 LSTM with its quantization ranges pinned (model/int8.py, PinnedLSTM).
Where a precision has no prompt path of its own (PyTorch has no dynamic whole-sequence RNN; an
int8 GRU or RNN; an int8 LSTM whose learned start state lies outside [-1, 1]), the prompt runs
through the decode step's own (model/fused.py: LSTMStep.prefill layer by layer, else one
character at a time; the same math).

fp16's and int8's kernels exist only in some torch builds and on some CPUs, so each is probed once
per process before use.
"""
from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from model.evaluate import recorded
from model.int8 import PinnedLSTM, int8_linear, int8_prepack

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
    base = (recorded(card, "stateful") or {}).get("loss")
    runs = [recorded(card, "stateful", "int8", stepwise) for stepwise in (False, True)]
    if base is None or None in runs:
        return None
    return max(r["loss"] - base for r in runs)


# --- products: fn(x (B, in)) -> (B, out) for weight (out, in), bias (out,) or None ----------------
def fp32_linear(weight: torch.Tensor, bias: torch.Tensor | None, bound: float = 1.0):
    wt = weight.T.contiguous()  # (in, out): MKL's gemv at batch 1 is faster with it than with (out, in)
    if bias is None:
        return lambda x: torch.mm(x, wt)
    return lambda x: torch.addmm(bias, x, wt)


def fp16_linear(weight: torch.Tensor, bias: torch.Tensor | None, bound: float = 1.0):
    packed = torch.ops.quantized.linear_prepack_fp16(weight.float().contiguous(), bias)
    return lambda x: torch.ops.quantized.linear_dynamic_fp16(x, packed)


# --- prompt paths: model -> fn(x (B, T) ids, State, last_only=False) -> (logits (B, T or 1, V), State),
# or None where the precision has none (the decode step's then, model/fused.py prefill) -------------
def _whole(model, core):
    """The head over a torch.nn-style recurrent `core` (the model's or a twin) run on the whole prompt."""
    def whole(x, state, last_only=False):
        out, state = model.run_core(core, model.embed(x), state)
        return model.head(out[:, -1:] if last_only else out), state
    return whole


def fp32_prompt(model):
    return _whole(model, model.core)


def fp16_prompt(model):
    """The same LSTM/GRU with fp16 weight matrices (fp32 activations and accumulation), eval mode;
    None for a module PyTorch has no dynamic fp16 whole-sequence version of (nn.RNN)."""
    from torch.ao.nn.quantized import dynamic
    from torch.ao.quantization import float16_dynamic_qconfig
    twin = {torch.nn.LSTM: dynamic.LSTM, torch.nn.GRU: dynamic.GRU}.get(type(model.core))
    if twin is None:
        return None
    float_module = copy.copy(model.core)  # a shallow copy carries the qconfig; the model's stays as it is
    float_module.qconfig = float16_dynamic_qconfig
    return _whole(model, twin.from_float(float_module).eval())


def int8_prompt(model):
    """PyTorch's C++ int8 LSTM, its ranges pinned (model/int8.py); None for other cells, and for a
    start state outside the pins' range."""
    return PinnedLSTM(model) if model.cfg.cell == "lstm" and PinnedLSTM.fits(model) else None


def _cpu(device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu"


def _int8_cost_recorded_and_small(card: dict | None) -> bool:
    cost = int8_cost(card)
    return cost is not None and cost <= INT8_MAX_COST


@dataclass(frozen=True)
class Precision:
    """One way to store the recurrent matrices at inference; fused.py and the choice below ask it."""
    name: str
    bytes_per_weight: int  # what a decode step reads per recurrent-matrix element
    available: Callable[[torch.device | str], bool]  # this device, torch build and CPU run it
    linear: Callable       # (weight, bias, bound) -> the product (above)
    prompt: Callable       # model -> its prompt path, or None (above)
    requires: str = ""     # what it needs, for the error where it is missing
    bounded: bool = False  # its products need every |input| <= bound (int8's anchor row)
    # whether "auto" may choose it for the weights a card describes (its validation cost is small)
    auto_for: Callable[[dict | None], bool] = lambda card: True


# The head (H x V) and the decode step's per-character table stay fp32 in every precision.
PRECISIONS = {p.name: p for p in (
    Precision("fp32", 4, lambda device: True, fp32_linear, fp32_prompt),
    Precision("fp16", 2, lambda device: _cpu(device) and fp16_available(), fp16_linear, fp16_prompt,
              requires="a CPU with fbgemm (torch.ops.quantized.linear_dynamic_fp16)"),
    Precision("int8", 1, lambda device: _cpu(device) and int8_available(), int8_linear, int8_prompt,
              requires="a CPU with fbgemm (torch.ops.quantized.linear_dynamic)", bounded=True,
              auto_for=_int8_cost_recorded_and_small),
)}


def candidate_precisions(device: torch.device | str, card: dict | None = None, precision: str = "auto") -> list[str]:
    """What the setting `precision` leaves to choose from on this device, for the weights described
    by `card`. A named precision: itself, checked (resolve_precision). "auto": the precisions that
    cost <= 0.01 nats/char on the validation split. fp16 (fp16 weights, fp32 arithmetic) costs
    ~1e-5 (tests/test_shipped.py); int8 rounds activations too, so it is a candidate only for
    weights whose card records its measured cost (model.evaluate --precision int8 --record, both
    paths) within INT8_MAX_COST. bf16 is not among them: on an AVX-512-BF16 CPU its GEMM is
    slower than fbgemm's fp16 at batch 1 and 8 and faster only at large batches
    (bench/gemm_precisions.py, docs/performance.md); one precision per process would lose latency."""
    if precision != "auto":
        return [resolve_precision(precision, device)]
    return [p.name for p in PRECISIONS.values() if p.available(device) and p.auto_for(card)]


@torch.no_grad()
def probe_precision(model, candidates: list[str], batches=(1, 16), steps: int = 3,
                    threads_for: Callable[[int], None] | None = None) -> tuple[str, dict]:
    """Time the decode step in each candidate precision and leave the model in the fastest.

    Call it on the thread that will serve (the engine's): its OpenMP team and caches are the ones
    measured; threads_for(batch), when given, sets the torch threads serving uses at that batch
    size. Per candidate: one untimed step (packs the weights), then the median of `steps` steps at
    each batch size; the score is their sum (latency at batch 1 + a busy batch), so a
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
            if threads_for is not None:
                threads_for(B)
            x, state = torch.zeros(B, 1, dtype=torch.long, device=device), model.init_hidden(B)
            model(x, state, infer=True)
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                model(x, state, infer=True)
                times.append(time.perf_counter() - t0)
            total += sorted(times)[steps // 2]
        scores[p] = round(total * 1e6, 1)
    best = min(scores, key=scores.get)
    model.set_precision(best)
    return best, scores


def choose_precision(model, precision: str, device: torch.device | str, card: dict | None = None) -> str:
    """Put `model` in `precision` as the service would: what candidate_precisions leaves, timed on
    this thread when more than one (probe_precision). -> the precision."""
    return probe_precision(model, candidate_precisions(device, card, precision))[0]


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """A named precision, checked against this device and torch build ("auto" is choose_precision's:
    it measures instead of guessing)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, not {precision!r}")
    if not PRECISIONS[precision].available(device):
        raise ValueError(f"precision {precision} needs {PRECISIONS[precision].requires}")
    return precision
