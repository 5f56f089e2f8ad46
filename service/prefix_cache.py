"""LRU of LSTM states after a context, for the engine's prefill (see PrefixCache)."""
from __future__ import annotations

from array import array
from collections import OrderedDict


class PrefixCache:
    """LRU of LSTM states after a context. A repeated prompt skips its prefill; a text that
    extends a cached one (autocomplete: the user typed a few more characters) reads only the
    new characters. Entries are small: (h, c) is 2 x layers x hidden floats."""

    def __init__(self, size: int, lookback: int = 64):
        self.size, self.lookback = size, lookback
        self._d: OrderedDict[bytes, tuple] = OrderedDict()
        self.hits = self.lookups = 0

    @staticmethod
    def _key(ids: list[int]) -> bytes:
        return array("i", ids).tobytes()

    def get(self, ids: list[int]):
        """-> (number of leading ids covered, (h, c, logits)) for the longest cached prefix
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

    def put(self, ids: list[int], h, c, logits):
        self._d[self._key(ids)] = (h.clone(), c.clone(), logits.clone())
        self._d.move_to_end(self._key(ids))
        while len(self._d) > self.size:
            self._d.popitem(last=False)
