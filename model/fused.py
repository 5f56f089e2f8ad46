"""Inference in any precision: the one-character decode step and the whole-prompt (prefill) path,
for every cell (model/cells.py CELLS).

Generation is a loop of single-character steps, where an nn module's per-call overhead (and, on
CPU, oneDNN's set-up) costs several times the arithmetic. The decode steps below do the same
equations as nn.LSTM / nn.GRU / nn.RNN with the weights prepared for the step:
- layer 0's input term for every character is precomputed (embedding @ W_ih_l0^T + biases: a
  (V, gates x H) table, one row read per step);
- every gate of a layer comes out of one matmul: the LSTM's and the RNN's upper layers do one
  over [input, h] against the stacked [W_ih | W_hh]; the GRU keeps its input and hidden products
  apart (its candidate gate scales only the hidden one by r), one matmul each for all 3 gates;
- LSTM gate rows are reordered (i, f, g, o) -> (i, f, o, g), g's doubled: one sigmoid over 4H.
What one step reads is `nbytes`; bench/decode.py sets each cell's step against that roofline.

The recurrent and upper-layer matrices (the bytes a step reads) are stored in a precision
(model/precision.py: fp32, fp16 or int8) whose products the steps are built from; the head (H x V)
and the table stay fp32. Prompts (prefill) run through the precision's own whole-sequence path
where it has one, else through the decode step (LSTMStep.prefill: layer by layer; the GRU and RNN
one character at a time; the same math).
"""
from __future__ import annotations

import functools

import torch

from model.precision import PRECISIONS
from model.state import State


def prefill(model, precision: str = "fp32"):
    """-> fn(x (B, T) ids, State, last_only=False) -> (logits (B, T or 1, V), State): the whole-prompt
    path: the precision's own, or where it has none the decode step's (_Step.prefill)."""
    whole = PRECISIONS[precision].prompt(model)
    return whole if whole is not None else model.fused_step().prefill


class _Step:
    """x (B,) ids, State (parts each (layers, B, H)) -> logits (B, 1, V), new State.

    Subclasses build `table` (V, G*H), `mats` (per layer) and count `matrix_numel` in _build."""
    G = 1  # gate blocks per layer

    def __init__(self, model, precision: str = "fp32"):
        self.H, self.layers, self.precision = model.cfg.hidden, model.cfg.layers, precision
        self.spec = PRECISIONS[precision]
        # a bounded precision's (int8's) inputs must lie in [-bound, bound]: cell outputs are
        # tanh-bounded, the learned start state is not (model/network.py)
        start = max(float(getattr(model, n).detach().abs().max()) for n in model.start_names)
        self.bound = max(1.0, start)
        self.matrix_numel = 0
        with torch.no_grad():
            self._build(model, model.core, self.H)
            self.head = PRECISIONS["fp32"].linear(model.head.weight, model.head.bias)
        # bytes of the matrices one step reads: the recurrent/upper ones in `precision`, the head fp32
        self.nbytes = self.matrix_numel * self.spec.bytes_per_weight + model.head.weight.numel() * 4

    def _mat(self, w: torch.Tensor, b: torch.Tensor | None, count: bool = True):
        self.matrix_numel += w.numel() if count else 0
        return self.spec.linear(w, None if b is None else b.contiguous(), self.bound)

    def _build(self, model, m, H):
        raise NotImplementedError

    def prefill(self, x: torch.Tensor, state: State, last_only: bool = False) -> tuple[torch.Tensor, State]:
        """x (B, T) ids -> logits (B, T or 1, V), State: one decode step per character."""
        out = []
        for t in range(x.shape[1]):
            logits, state = self(x[:, t], state)
            out.append(logits)
        return (logits if last_only else torch.cat(out, 1)), state


class LSTMStep(_Step):
    """nn.LSTM's equations: c' = f*c + i*g, h' = o*tanh(c'), g = tanh(x_g).

    The g rows of every matrix, bias and table column are doubled (exact in any precision), so
    one sigmoid covers all four gates: tanh(x) = 2*sigmoid(2x) - 1. In this torch build tanh
    costs several times sigmoid per element on CPU (docs/performance.md)."""
    G = 4

    def _build(self, model, m, H):
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
        order = order.to(m.weight_hh_l0.device)  # (i, f, g, o) -> (i, f, o, g)
        scale = torch.ones(4 * H, device=order.device)
        scale[3 * H:] = 2.0                      # g' = 2 x_g

        def rows(t):  # (4H, ...) or (4H,) in nn's order -> reordered, g rows doubled
            return t[order] * (scale[:, None] if t.dim() == 2 else scale)
        self._rows = rows
        self.table = ((model.embed.weight @ m.weight_ih_l0.T + m.bias_ih_l0 + m.bias_hh_l0)[:, order] * scale).contiguous()
        self.mats = [self._mat(rows(m.weight_hh_l0), None)]  # (4H, H)
        for k in range(1, self.layers):
            w = torch.cat([getattr(m, f"weight_ih_l{k}"), getattr(m, f"weight_hh_l{k}")], 1)  # (4H, 2H)
            self.mats.append(self._mat(rows(w), rows(getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}"))))
        self._core = m  # for the prompt path's matrices, built on its first use

    @functools.cached_property
    def _layerwise(self) -> tuple[list, list]:
        """The prompt path reads a layer's whole input at once (one GEMM over every position) and
        only W_hh per character: upper layers' W_ih and W_hh apart (not in a step's bytes).
        -> (ih, hh) per layer; ih[0] is None (the table)."""
        m, rows = self._core, self._rows
        with torch.no_grad():
            ih = [None] + [self._mat(rows(getattr(m, f"weight_ih_l{k}")),
                                     rows(getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}")), count=False)
                           for k in range(1, self.layers)]
            hh = [self.mats[0]] + [self._mat(rows(getattr(m, f"weight_hh_l{k}")), None, count=False)
                                   for k in range(1, self.layers)]
        return ih, hh

    @staticmethod
    def _cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gates (B, 4H) pre-activation, (i, f, o, g') with g' = 2 x_g; c (B, H) -> h', c'."""
        i, f, o, s = gates.sigmoid_().chunk(4, 1)       # views; s = sigmoid(2 x_g)
        c = torch.addcmul((f * c).sub_(i), i, s, value=2)  # c' = f*c + i*(2s - 1) = f*c + i*tanh(x_g)
        return o * c.tanh(), c                          # h' = o*tanh(c')

    def prefill(self, x: torch.Tensor, state: State, last_only: bool = False) -> tuple[torch.Tensor, State]:
        """x (B, T) ids -> logits (B, T or 1, V), State, layer by layer (as cuDNN): a layer's input term
        for all T positions in one product, then T steps of W_hh alone."""
        B, T = x.shape
        h, c = state.parts
        ih, hh = self._layerwise
        inp = self.table[x.T]  # (T, B, 4H), time first (each step reads a contiguous block): layer 0's
        hs, cs = [], []        # input term, biases included
        for k in range(self.layers):
            if k:
                inp = ih[k](out.view(T * B, self.H)).view(T, B, -1)  # (T, B, 4H)
            hk, ck, outs = h[k], c[k], []
            for t in range(T):
                hk, ck = self._cell(hh[k](hk).add_(inp[t]), ck)
                outs.append(hk)
            out = torch.stack(outs)  # (T, B, H)
            hs.append(hk)
            cs.append(ck)
        if last_only:
            out, T = out[-1:], 1
        logits = self.head(out.transpose(0, 1).reshape(B * T, self.H)).view(B, T, -1)
        return logits, State((torch.stack(hs), torch.stack(cs)))

    def __call__(self, x: torch.Tensor, state: State):
        h, c = state.parts
        hs, cs = [], []
        gates = self.mats[0](h[0]).add_(self.table.index_select(0, x))  # (B, 4H): (i, f, o, g)
        for k in range(self.layers):
            if k:
                gates = self.mats[k](torch.cat([hs[-1], h[k]], 1))
            hk, ck = self._cell(gates, c[k])
            hs.append(hk)
            cs.append(ck)
        return self.head(hs[-1])[:, None], State((torch.stack(hs), torch.stack(cs)))


class GRUStep(_Step):
    """nn.GRU's equations (rows r, z, n): r, z = sigmoid(Wi x + bi + Wh h + bh),
    n = tanh(Wi_n x + bi_n + r * (Wh_n h + bh_n)), h' = (1 - z) * n + z * h.
    The r and z biases of both sides are summed into the input side; bh_n stays on the hidden
    side, inside r's product."""
    G = 3

    def _build(self, model, m, H):
        def biases(k):
            bi, bh = getattr(m, f"bias_ih_l{k}"), getattr(m, f"bias_hh_l{k}")
            zeros = torch.zeros(2 * H, dtype=bh.dtype, device=bh.device)
            return bi + torch.cat([bh[:2 * H], zeros[:H]]), torch.cat([zeros, bh[2 * H:]])
        bi0, bh0 = biases(0)
        self.table = (model.embed.weight @ m.weight_ih_l0.T + bi0).contiguous()  # (V, 3H)
        self.hid = [self._mat(m.weight_hh_l0, bh0)]  # (3H, H) per layer
        self.inp = [None]                            # layer 0's input side is the table
        for k in range(1, self.layers):
            bi, bh = biases(k)
            self.inp.append(self._mat(getattr(m, f"weight_ih_l{k}"), bi))
            self.hid.append(self._mat(getattr(m, f"weight_hh_l{k}"), bh))

    def __call__(self, x: torch.Tensor, state: State):
        H = self.H
        (h,) = state.parts
        hs = []
        for k in range(self.layers):
            gi = self.table.index_select(0, x) if k == 0 else self.inp[k](hs[-1])  # (B, 3H)
            gh = self.hid[k](h[k])                                                  # (B, 3H)
            rz = gi[:, :2 * H].add_(gh[:, :2 * H]).sigmoid_()
            r, z = rz.chunk(2, 1)
            n = torch.addcmul(gi[:, 2 * H:], r, gh[:, 2 * H:]).tanh_()
            hs.append(torch.addcmul(n, z, h[k] - n))  # (1 - z) * n + z * h
        return self.head(hs[-1])[:, None], State((torch.stack(hs),))


class RNNStep(_Step):
    """nn.RNN's equation: h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh (or relu)."""
    G = 1

    def _build(self, model, m, H):
        if self.spec.bounded and m.nonlinearity != "tanh":  # int8's anchor needs bounded states
            raise ValueError(f"{self.precision} needs a tanh RNN: relu states are unbounded")
        self.act = torch.tanh_ if m.nonlinearity == "tanh" else torch.relu_
        self.table = (model.embed.weight @ m.weight_ih_l0.T + m.bias_ih_l0 + m.bias_hh_l0).contiguous()  # (V, H)
        self.mats = [self._mat(m.weight_hh_l0, None)]  # (H, H)
        for k in range(1, self.layers):
            w = torch.cat([getattr(m, f"weight_ih_l{k}"), getattr(m, f"weight_hh_l{k}")], 1)  # (H, 2H)
            self.mats.append(self._mat(w, getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}")))

    def __call__(self, x: torch.Tensor, state: State):
        (h,) = state.parts
        hs = [self.act(self.mats[0](h[0]).add_(self.table.index_select(0, x)))]
        for k in range(1, self.layers):
            hs.append(self.act(self.mats[k](torch.cat([hs[-1], h[k]], 1))))
        return self.head(hs[-1])[:, None], State((torch.stack(hs),))


STEPS = {"lstm": LSTMStep, "gru": GRUStep, "rnn": RNNStep}


def fused_step(model, precision: str = "fp32") -> _Step:
    """The decode step of model's cell, for its current weights, in `precision`."""
    return STEPS[model.cfg.cell](model, precision)
