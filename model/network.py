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
        out, state = self.lstm(self.embed(x), state)  # out: (B, T, hidden)
        return self.head(self.drop(out)), state        # (B, T, vocab)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state: State) -> State:
    """Cut the autograd graph between BPTT windows while keeping the values (truncated BPTT)."""
    return state[0].detach(), state[1].detach()
