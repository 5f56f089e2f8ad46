"""The Char-RNN network: embedding -> N-layer LSTM -> linear head over the vocabulary.

One interface serves training, evaluation, sampling and serving:
    forward(x, state) -> (logits, state)
x: (B, T) int64 character ids; state: (h, c), each (layers, B, hidden), or None for zeros;
logits: (B, T, vocab). The LSTM is torch.nn.LSTM, so its gates are the classic equations
(input, forget, cell, output, in that order in the weight rows) and parameter names are
PyTorch's (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0, ...).
"""
from __future__ import annotations

import torch
from torch import nn

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

    def init_hidden(self, batch: int, device=None, dtype=None) -> State:
        p = self.head.weight
        shape = (self.cfg.layers, batch, self.cfg.hidden)
        z = torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype)
        return z, z.clone()

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_hidden(x.shape[0], x.device)
        if not self.training and not torch.is_grad_enabled():  # inference: weights in self.precision
            if x.shape[1] == 1:
                return self._step(x[:, 0], state)          # decoding: one character per sequence
            out, state = self.prefill_lstm()(self.embed(x), state)
            return self.head(out), state
        out, state = self.lstm(self.embed(x), state)  # out: (B, T, hidden)
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
