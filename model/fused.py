"""Inference in fp32 or fp16: the one-character decode step, and the fp16 whole-sequence LSTM.

Generation is a loop of single-character steps, where nn.LSTM's per-call overhead (and, on CPU,
oneDNN's set-up) costs several times the arithmetic. FusedStep does the same equations as
nn.LSTM with the weights prepared for the step:
- layer 0's input term for every character is precomputed (embedding @ W_ih_l0^T + biases: a
  (V, 4H) table, one row read per step);
- upper layers do one matmul over [input, h] against the stacked [W_ih | W_hh];
- gate rows are reordered (i, f, g, o) -> (i, f, o, g): one sigmoid over 3H, one tanh over H.

Precision of the recurrent and upper-layer matrices (the bytes a step reads):
- "fp32": torch's linear (MKL on CPU, cuBLAS on GPU).
- "fp16": CPU only. fbgemm's fp16-weight / fp32-activation GEMM: weights stored in half
  precision (half the bytes), widened to fp32 in registers, fp32 accumulation. On a 2-core AVX2
  machine the step is 1.7-2x faster than with MKL's sgemm at batch 1 and 3-5.7x at batch 8
  (bench/decode.py); the validation loss it costs is measured by model.evaluate --precision.
The head (H x V, ~130 kB) and the table stay fp32.

Prompts (prefill) run through a whole-sequence LSTM: nn.LSTM in fp32, and in fp16 PyTorch's
dynamic fp16 LSTM (torch.ao.nn.quantized.dynamic.LSTM: the same fbgemm GEMM, fp16 W_ih and W_hh).
It also has no per-call set-up, where oneDNN's nn.LSTM re-lays out its weights on every call
(~5 ms here): 4 characters take 1.2 ms instead of 5.8, 16 take 4.2 instead of 10.2; 200 take
about the same, 8 x 200 ~20% longer (bench/decode.py, batch 1 unless said).
"""
from __future__ import annotations

import copy
import functools
import time

import torch
import torch.nn.functional as F

PRECISIONS = ("fp32", "fp16")


@functools.cache  # a property of the torch build and the CPU: probe once per process
def fp16_available() -> bool:
    """fbgemm's fp16-weight linear exists in this torch build and runs on this CPU."""
    try:
        packed = torch.ops.quantized.linear_prepack_fp16(torch.ones(8, 8), None)
        return bool(torch.ops.quantized.linear_dynamic_fp16(torch.ones(1, 8), packed).sum() == 64)
    except Exception:  # no such op, or no fbgemm on this CPU (e.g. ARM builds ship qnnpack only)
        return False


def candidate_precisions(device: torch.device | str) -> list[str]:
    """What 'auto' may choose on this device: the precisions tested to cost <= 0.01 nats/char on the
    validation split (tests/test_shipped.py). bf16 is not among them: on an AVX-512-BF16 CPU its
    batch-1 GEMM measured slower than fbgemm's fp16 (README, Performance)."""
    return ["fp32", "fp16"] if torch.device(device).type == "cpu" and fp16_available() else ["fp32"]


@torch.no_grad()
def probe_precision(model, candidates: list[str], batches=(1, 16), steps: int = 5) -> tuple[str, dict]:
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


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' -> fp16 on a CPU whose torch has fbgemm's fp16 GEMM, else fp32."""
    device = torch.device(device)
    if precision == "auto":
        return "fp16" if device.type == "cpu" and fp16_available() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {PRECISIONS}, not {precision!r}")
    if precision == "fp16" and (device.type != "cpu" or not fp16_available()):
        raise ValueError("precision fp16 needs a CPU with fbgemm (torch.ops.quantized.linear_dynamic_fp16)")
    return precision


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, precision: str):
    """x (B, in) -> (B, out) with `weight` (out, in) stored in `precision`."""
    if precision == "fp16":
        packed = torch.ops.quantized.linear_prepack_fp16(weight.float().contiguous(), bias)
        return lambda x: torch.ops.quantized.linear_dynamic_fp16(x, packed)
    wt = weight.T.contiguous()  # (in, out): MKL's gemv at batch 1 is faster with it than with (out, in)
    if bias is None:
        return lambda x: torch.mm(x, wt)
    return lambda x: torch.addmm(bias, x, wt)


def fp16_lstm(lstm: torch.nn.LSTM) -> torch.nn.Module:
    """The same LSTM with fp16 weight matrices (fp32 activations and accumulation), eval mode."""
    from torch.ao.nn.quantized.dynamic import LSTM as DynamicLSTM
    from torch.ao.quantization import float16_dynamic_qconfig
    float_lstm = copy.copy(lstm)  # a shallow copy carries the qconfig; the model's LSTM stays as it is
    float_lstm.qconfig = float16_dynamic_qconfig
    return DynamicLSTM.from_float(float_lstm).eval()


class FusedStep:
    """x (B,) ids, state (h, c) each (layers, B, H) -> logits (B, 1, V), new state."""

    def __init__(self, model, precision: str = "fp32"):
        cfg, m = model.cfg, model.lstm
        H = self.H = cfg.hidden
        self.layers, self.precision = cfg.layers, precision
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
        order = order.to(m.weight_hh_l0.device)
        with torch.no_grad():
            self.table = (model.embed.weight @ m.weight_ih_l0.T + m.bias_ih_l0 + m.bias_hh_l0)[:, order].contiguous()
            self.mats = [_linear(m.weight_hh_l0[order], None, precision)]  # (4H, H)
            self.nbytes = m.weight_hh_l0.numel()
            for k in range(1, cfg.layers):
                w = torch.cat([getattr(m, f"weight_ih_l{k}"), getattr(m, f"weight_hh_l{k}")], 1)[order]  # (4H, 2H)
                b = (getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}"))[order]
                self.mats.append(_linear(w, b.contiguous(), precision))
                self.nbytes += w.numel()
            self.head = _linear(model.head.weight, model.head.bias, "fp32")
            self.nbytes = (self.nbytes * (2 if precision == "fp16" else 4)
                           + model.head.weight.numel() * 4)  # bytes of matrices one step reads

    def __call__(self, x: torch.Tensor, state):
        H = self.H
        h, c = state
        hs, cs = [], []
        gates = self.mats[0](h[0]).add_(self.table.index_select(0, x))  # (B, 4H): (i, f, o, g)
        for k in range(self.layers):
            if k:
                gates = self.mats[k](torch.cat([hs[-1], h[k]], 1))
            gates[:, :3 * H].sigmoid_()
            gates[:, 3 * H:].tanh_()
            i, f, o, g = gates.chunk(4, 1)  # views; chunk is cheaper to call than split
            ck = torch.addcmul(f * c[k], i, g)  # c' = f*c + i*g
            hs.append(o * ck.tanh())            # h' = o*tanh(c')
            cs.append(ck)
        return self.head(hs[-1])[:, None], (torch.stack(hs), torch.stack(cs))
