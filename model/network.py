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
        if x.shape[1] == 1 and not self.training and not torch.is_grad_enabled():
            return self._step(x[:, 0], state)          # decoding: one character per sequence
        out, state = self.lstm(self.embed(x), state)  # out: (B, T, hidden)
        return self.head(self.drop(out)), state        # (B, T, vocab)

    # --- inference fast path for one step -------------------------------------------------------
    # Generation is a loop of single-character steps, where nn.LSTM's per-call overhead (and, on
    # CPU, oneDNN's set-up) costs several times the arithmetic. The same equations with weights
    # laid out once for the step: layer 0's input term for every character is precomputed
    # (embedding @ W_ih_l0^T + biases: a (V, 4H) table, one row read per step), and upper layers
    # do one matmul over [input, h] against the stacked [W_ih; W_hh].

    def _fused_weights(self) -> list[torch.Tensor]:
        params = self.__dict__.get("_param_list") or self.__dict__.setdefault("_param_list", list(self.parameters()))
        key = tuple(p._version for p in params) + (params[0].device, params[0].dtype)  # rebuilt if weights change
        cache = self.__dict__.get("_fused")
        if cache is None or cache[0] != key:
            H, m = self.cfg.hidden, self.lstm
            # Gate rows reordered (i, f, g, o) -> (i, f, o, g): one sigmoid over the first 3H, one tanh over the last H.
            order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
            order = order.to(params[0].device)
            with torch.no_grad():
                w = [(self.embed.weight @ m.weight_ih_l0.T + m.bias_ih_l0 + m.bias_hh_l0)[:, order].contiguous(),  # (V, 4H)
                     m.weight_hh_l0[order].T.contiguous()]                                                          # (H, 4H)
                for k in range(1, self.cfg.layers):
                    wk = torch.cat([getattr(m, f"weight_ih_l{k}"), getattr(m, f"weight_hh_l{k}")], 1)[order]
                    w += [wk.T.contiguous(), (getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}"))[order]]
                w.append(self.head.weight.T.contiguous())                                                           # (H, V)
            cache = self.__dict__["_fused"] = (key, w)
        return cache[1]

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x (B,) ids -> logits (B, 1, V); state (h, c) each (layers, B, H). Same math as nn.LSTM."""
        w, H = self._fused_weights(), self.cfg.hidden
        h, c = state
        hs, cs = [], []
        gates = torch.addmm(w[0].index_select(0, x), h[0], w[1])    # (B, 4H), gates (i, f, o, g)
        for k in range(self.cfg.layers):
            if k:
                gates = torch.addmm(w[2 * k + 1], torch.cat([hs[-1], h[k]], 1), w[2 * k])
            gates[:, :3 * H].sigmoid_()
            gates[:, 3 * H:].tanh_()
            i, f, o, g = gates.split(H, 1)
            ck = torch.addcmul(f * c[k], i, g)                       # c' = f*c + i*g
            hs.append(o * ck.tanh())                                 # h' = o*tanh(c')
            cs.append(ck)
        logits = torch.addmm(self.head.bias, hs[-1], w[-1])
        return logits[:, None], (torch.stack(hs), torch.stack(cs))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state: State) -> State:
    """Cut the autograd graph between BPTT windows while keeping the values (truncated BPTT)."""
    return state[0].detach(), state[1].detach()
