"""The Char-RNN network: embedding -> N-layer LSTM -> linear head over the vocabulary.

One interface serves training, evaluation, sampling and serving:
    forward(x, state) -> (logits, state)
x: (B, T) int64 character ids; state: (h, c), each (layers, B, hidden), or None for the start
state; logits: (B, T, vocab).

The start state (h0, c0), each (layers, hidden), is learned: training resets some streams to it
(model/train.py, --reset-prob), so a prompt read with nothing before it starts from a state the
model knows. Weights saved before it existed have no h0/c0 tensors and load with zeros. The LSTM is torch.nn.LSTM, so its gates are the classic equations
(input, forget, cell, output, in that order in the weight rows) and parameter names are
PyTorch's (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0, ...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from model.config import ModelConfig

State = tuple[torch.Tensor, torch.Tensor]


class CharRNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        # nn.LSTM applies dropout between layers (not after the last one) ...
        self.lstm = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        # ... so the output gets its own dropout before the head.
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        # the learned start state, one vector per layer; zeros = the classic zero state
        self.h0 = nn.Parameter(torch.zeros(cfg.layers, cfg.hidden))
        self.c0 = nn.Parameter(torch.zeros(cfg.layers, cfg.hidden))

    def init_hidden(self, batch: int, device=None, dtype=None) -> State:
        """The start state for `batch` rows: (h, c), each (layers, batch, hidden).
        Differentiable in training (h0/c0 learn from the rows that start from it)."""
        def rows(p):
            s = p.unsqueeze(1).expand(-1, batch, -1)
            s = s if torch.is_grad_enabled() and self.training else s.detach()
            return s.to(device=device or p.device, dtype=dtype or p.dtype).contiguous()
        return rows(self.h0), rows(self.c0)

    def restart_rows(self, state: State, rows: torch.Tensor) -> State:
        """state with the rows where `rows` (B,) bool is True replaced by the start state."""
        start = self.init_hidden(rows.shape[0], rows.device)
        m = rows.view(1, -1, 1)
        return tuple(torch.where(m, s0, s) for s0, s in zip(start, state))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # weights from before the learned start state: zeros, i.e. exactly what they were trained with
        state_dict = dict(state_dict)
        for name in ("h0", "c0"):
            state_dict.setdefault(name, torch.zeros_like(getattr(self, name)))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _lstm_train(self, x: torch.Tensor, state: State):
        """nn.LSTM with DropConnect on W_hh (one mask per forward = per BPTT window, as AWD-LSTM)."""
        p = self.cfg.weight_drop
        if not p or not self.training:
            return self.lstm(x, state)
        weights = {n: F.dropout(w, p, True) if n.startswith("weight_hh") else w
                   for n, w in self.lstm.named_parameters()}
        return functional_call(self.lstm, weights, (x, state))

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_hidden(x.shape[0], x.device)
        if not self.training and not torch.is_grad_enabled():  # inference: weights in self.precision
            if x.shape[1] == 1:
                return self._step(x[:, 0], state)          # decoding: one character per sequence
            out, state = self.prefill_lstm()(self.embed(x), state)
            return self.head(out), state
        out, state = self._lstm_train(self.embed(x), state)  # out: (B, T, hidden)
        return self.head(self.drop(out)), state        # (B, T, vocab)

    # --- inference: precision, the one-character step, the whole-sequence LSTM (model/fused.py) ----
    def set_precision(self, precision: str) -> "CharRNN":
        """Precision of the LSTM matrices at inference (eval, no grad): "fp32" or "fp16" (CPU).
        Training always runs nn.LSTM in the parameters' own dtype."""
        from model.fused import PRECISIONS
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.__dict__["_precision"] = precision
        return self

    @property
    def precision(self) -> str:
        return self.__dict__.get("_precision", "fp32")

    def _cached(self, name: str, build):
        """build(), kept until the weights (in place, device or dtype) or the precision change."""
        params = self.__dict__.get("_param_list") or self.__dict__.setdefault("_param_list", list(self.parameters()))
        key = tuple(p._version for p in params) + (params[0].device, params[0].dtype, self.precision)
        cache = self.__dict__.get(name)
        if cache is None or cache[0] != key:
            cache = self.__dict__[name] = (key, build())
        return cache[1]

    def fused_step(self):
        """The FusedStep for the current weights and precision."""
        from model.fused import FusedStep
        return self._cached("_fused", lambda: FusedStep(self, self.precision))

    def prefill_lstm(self):
        """The whole-sequence LSTM for inference: nn.LSTM itself in fp32, its fp16 twin otherwise."""
        if self.precision == "fp32":
            return self.lstm
        from model.fused import fp16_lstm
        return self._cached("_prefill", lambda: fp16_lstm(self.lstm))

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x (B,) ids -> logits (B, 1, V); state (h, c) each (layers, B, H). Same math as nn.LSTM."""
        return self.fused_step()(x, state)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state: State) -> State:
    """Cut the autograd graph between BPTT windows while keeping the values (truncated BPTT)."""
    return state[0].detach(), state[1].detach()
