"""The recurrent state of B rows, opaque outside model/.

The trainer, evaluator, sampler, engine and prefix cache hold a State and use only this interface:
the model makes one (CharRNN.init_hidden), reads and returns it (forward), and everyone else
selects, joins, detaches, moves and sizes it without knowing which cell made it or what is inside.

Inside, it is a tuple of tensors each (layers, B, hidden): (h, c) for the LSTM, (h,) for the GRU
and the vanilla RNN. Rows are dim 1 of every part, as in torch.nn's recurrent modules.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch


class State:
    __slots__ = ("parts",)

    def __init__(self, parts: Iterable[torch.Tensor]):
        self.parts = tuple(parts)

    # --- what callers use ---------------------------------------------------------------------
    @property
    def batch(self) -> int:
        """Rows (sequences) held."""
        return self.parts[0].shape[1]

    def rows(self, idx: slice | Sequence[int] | torch.Tensor) -> "State":
        """The rows `idx` (a slice: views; a list or an index tensor: a copy, in that order)."""
        if isinstance(idx, slice):
            return State(p[:, idx] for p in self.parts)
        if not isinstance(idx, torch.Tensor):
            idx = torch.tensor(list(idx), dtype=torch.long)
        idx = idx.to(self.parts[0].device)
        return State(p.index_select(1, idx) for p in self.parts)

    @staticmethod
    def cat(states: Sequence["State"]) -> "State":
        """The rows of every state, in order, as one state."""
        if len(states) == 1:
            return states[0]
        return State(torch.cat(ps, 1) for ps in zip(*(s.parts for s in states)))

    def detach(self) -> "State":
        """The same values, cut from the autograd graph (truncated BPTT)."""
        return State(p.detach() for p in self.parts)

    def clone(self) -> "State":
        """A copy that owns its memory (a row of a batch would otherwise keep the whole batch alive)."""
        return State(p.clone() for p in self.parts)

    def to(self, device=None, dtype=None) -> "State":
        return State(p.to(device=device, dtype=dtype) for p in self.parts)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data held (what a cache entry or a batch row costs)."""
        return sum(p.numel() * p.element_size() for p in self.parts)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "State":
        """fn applied to every part; fn sees a tensor (layers, B, hidden) and must keep that layout
        (e.g. gathering rows across processes, model/distributed.py)."""
        return State(fn(p) for p in self.parts)

    def tensors(self) -> list[torch.Tensor]:
        """For a checkpoint file: plain tensors, read back by State(tensors)."""
        return list(self.parts)

    def __repr__(self) -> str:
        return f"State({len(self.parts)} x {tuple(self.parts[0].shape)}, {self.parts[0].dtype})"
