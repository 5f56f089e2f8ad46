"""LRU of recurrent states after a context, for the engine's prefill (see PrefixCache)."""
from __future__ import annotations

from array import array
from collections import OrderedDict

import torch

from model.state import State


class PrefixCache:
    """LRU of the model's states after a context. A repeated prompt skips its prefill; a text that
    extends a cached one (autocomplete: the user typed a few more characters) reads only the
    new characters. Entries are small (a State of one row, e.g. 2 x layers x hidden floats for an
    LSTM, and the next character's logits); `nbytes` says how much they hold in all."""

    def __init__(self, size: int, lookback: int = 64):
        self.size, self.lookback = size, lookback
        self._d: OrderedDict[bytes, tuple] = OrderedDict()
        self.hits = self.lookups = 0
        self.nbytes = 0  # tensor bytes held by the entries

    @staticmethod
    def _key(ids: list[int]) -> bytes:
        return array("i", ids).tobytes()

    def get(self, ids: list[int]):
        """-> (number of leading ids covered, (State, logits (1, V))) for the longest cached prefix
        among the last `lookback` lengths, or None."""
        self.lookups += 1
        key = self._key(ids)
        for n in range(len(ids), max(0, len(ids) - self.lookback), -1):
            hit = self._d.get(key[:4 * n])
            if hit is not None:
                self._d.move_to_end(key[:4 * n])
                self.hits += 1
                return n, hit
        return None

    def put(self, ids: list[int], state: State, logits: torch.Tensor):
        """Remember the state (one row) and next-character logits (1, V) after reading `ids`.
        Copies: the engine's row would otherwise keep its whole prefill batch alive."""
        key = self._key(ids)
        if key in self._d:
            self.nbytes -= self._bytes(self._d.pop(key))
        entry = self._d[key] = (state.clone(), logits.clone())
        self.nbytes += self._bytes(entry)
        while len(self._d) > self.size:
            self.nbytes -= self._bytes(self._d.popitem(last=False)[1])

    @staticmethod
    def _bytes(entry) -> int:
        state, logits = entry
        return state.nbytes + logits.numel() * logits.element_size()
