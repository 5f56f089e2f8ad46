"""The Char-RNN network: embedding -> N-layer recurrent core -> linear head over the vocabulary.

The core is one of CELLS (model/cells.py), as char-rnn's `-model lstm|gru|rnn`: torch.nn.LSTM,
nn.GRU or nn.RNN (tanh), registered under the cell's name, so parameters keep PyTorch's own names
(lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, ...; gru.*; rnn.*) and gate layouts
(LSTM rows i, f, g, o; GRU rows r, z, n) and outside tools read them as they would nn's.

One interface serves training, evaluation, sampling and serving:
    forward(x, state, *, infer=False) -> (logits, state)
x: (B, T) int64 character ids; state: a State (model/state.py) or None for the start state;
logits: (B, T, vocab). Outside model/ the state is opaque. The caller picks the path: the nn
module (training, differentiable) or, with infer=True, the inference kernels (model/fused.py).

The start state is learned, one vector per layer and state part: h0 (and c0 for the LSTM), each
(layers, hidden). Training resets some streams to it (model/train.py, --reset-prob), so a prompt
read with nothing before it starts from a state the model knows. Weights saved before it existed
have no h0/c0 tensors and load with zeros, the state they were trained from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from model.cells import CELLS
from model.config import ModelConfig
from model.state import State


class CharRNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        # the recurrent modules apply dropout between layers (not after the last one) ...
        core = CELLS[cfg.cell].module(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                                      dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.add_module(cfg.cell, core)
        # ... so the output gets its own dropout before the head.
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        # the learned start state, one vector per layer; zeros = the classic zero state
        for name in self.start_names:
            self.register_parameter(name, nn.Parameter(torch.zeros(cfg.layers, cfg.hidden)))

    @property
    def core(self) -> nn.RNNBase:
        """The recurrent module (self.lstm, self.gru or self.rnn)."""
        return getattr(self, self.cfg.cell)

    @property
    def start_names(self) -> tuple[str, ...]:
        """Names of the start-state parameters (h0, c0 for the LSTM; h0 otherwise)."""
        return CELLS[self.cfg.cell].start

    def init_hidden(self, batch: int, device=None, dtype=None) -> State:
        """The start state for `batch` rows. In training mode the rows stay in the autograd graph,
        so the start state learns from the rows that start from it (under torch.no_grad there is
        no graph to keep); in eval mode they are cut from it, as inference wants."""
        def rows(p):  # (layers, hidden) -> (layers, batch, hidden)
            s = p.unsqueeze(1).expand(-1, batch, -1)
            s = s if self.training else s.detach()
            return s.to(device=device or p.device, dtype=dtype or p.dtype).contiguous()
        return State(rows(getattr(self, n)) for n in self.start_names)

    def restart_rows(self, state: State, rows: torch.Tensor) -> State:
        """state with the rows where `rows` (B,) bool is True replaced by the start state."""
        start = self.init_hidden(rows.shape[0], rows.device)
        m = rows.view(1, -1, 1)
        return State(torch.where(m, s0, s) for s0, s in zip(start.parts, state.parts))

    def head_logits(self, state: State) -> torch.Tensor:
        """(B, V) next-character logits from a state alone (nothing read yet): the head on the top
        layer's output h."""
        return self.head(state.parts[0][-1])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # weights from before the learned start state: zeros, i.e. exactly what they were trained with
        state_dict = dict(state_dict)
        for name in self.start_names:
            state_dict.setdefault(name, torch.zeros_like(getattr(self, name)))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @staticmethod
    def run_core(module: nn.Module, x: torch.Tensor, state: State, weights: dict | None = None):
        """A torch.nn-style recurrent module over x (B, T, in) from `state` -> (out (B, T, H), State).
        nn.LSTM takes and returns (h, c); nn.GRU and nn.RNN a bare h."""
        hx = state.parts if len(state.parts) > 1 else state.parts[0]
        out, hx = functional_call(module, weights, (x, hx)) if weights else module(x, hx)
        return out, State(hx if isinstance(hx, tuple) else (hx,))

    def _core_train(self, x: torch.Tensor, state: State):
        """The core with DropConnect on W_hh (one mask per forward = per BPTT window, as AWD-LSTM)."""
        p = self.cfg.weight_drop
        if not p or not self.training:
            return self.run_core(self.core, x, state)
        weights = {n: F.dropout(w, p, True) if n.startswith("weight_hh") else w
                   for n, w in self.core.named_parameters()}
        return self.run_core(self.core, x, state, weights)

    def forward(self, x: torch.Tensor, state: State | None = None, *, last_only: bool = False,
                infer: bool = False) -> tuple[torch.Tensor, State]:
        """x (B, T) ids -> logits (B, T, V) (last_only: (B, 1, V), the prediction after the last
        position only: all a prompt being read needs, without the head over every position), State.

        infer=False: the nn module, differentiable, in the parameters' own dtype (training, and the
        reference the kernels are tested against). infer=True: the inference kernels with the
        recurrent matrices in self.precision (model/fused.py): the decode step when T == 1, the
        prompt path otherwise; they build no autograd graph, so they need eval mode and no grad."""
        if infer and (self.training or torch.is_grad_enabled()):
            raise RuntimeError("infer=True needs eval mode and torch.no_grad(): the kernels are not differentiable")
        if state is None:
            state = self.init_hidden(x.shape[0], x.device)
        if infer:
            if x.shape[1] == 1:
                return self._step(x[:, 0], state)          # decoding: one character per sequence
            return self.prefill_core()(x, state, last_only=last_only)
        out, state = self._core_train(self.embed(x), state)  # out: (B, T, hidden)
        return self.head(self.drop(out[:, -1:] if last_only else out)), state  # (B, T or 1, vocab)

    # --- inference: precision, the one-character step, the whole-sequence core (model/fused.py) ----
    def set_precision(self, precision: str) -> "CharRNN":
        """Precision of the recurrent matrices on the inference path (forward(..., infer=True)): a
        name in model/precision.py PRECISIONS. The nn module (training) always runs in the
        parameters' own dtype."""
        from model.precision import PRECISIONS
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, not {precision!r}")
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
        """The decode step (model/fused.py) for the current cell, weights and precision."""
        from model.fused import fused_step
        return self._cached("_fused", lambda: fused_step(self, self.precision))

    def prefill_core(self):
        """(x (B, T) ids, State, last_only=False) -> (logits (B, T or 1, V), State) for a whole prompt
        at inference."""
        from model.fused import prefill
        return self._cached("_prefill", lambda: prefill(self, self.precision))

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x (B,) ids -> logits (B, 1, V), State. The same math as the nn module."""
        return self.fused_step()(x, state)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
