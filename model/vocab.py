"""Character vocabulary: the sorted set of characters of the training text.

Encoding large texts goes through numpy on code points (UTF-32), so a 100 MB file encodes in
seconds into a compact uint8/uint16 array instead of Python lists.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _codepoints(text: str) -> np.ndarray:
    # utf-32-le has no BOM and exactly 4 bytes per character: a zero-copy view of code points.
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32)


@dataclass
class Vocab:
    chars: list[str]
    _index: dict[str, int] = field(init=False, repr=False)
    _cps: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("vocab must be distinct single characters")
        self._index = {c: i for i, c in enumerate(self.chars)}
        cps = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        # encode() looks code points up by binary search: in sorted order, mapped back to the ids, so a
        # card whose vocabulary is not sorted (written by hand) encodes correctly too
        self._order = np.argsort(cps, kind="stable")
        self._cps = cps[self._order]

    def __len__(self) -> int:
        return len(self.chars)

    @classmethod
    def from_text(cls, text: str, chunk: int = 1 << 22) -> "Vocab":
        cps = np.zeros(0, dtype=np.uint32)
        for i in range(0, len(text), chunk):  # chunked: peak memory ~4 bytes x chunk
            cps = np.union1d(cps, np.unique(_codepoints(text[i:i + chunk])))
        return cls([chr(c) for c in cps.tolist()])  # union1d is sorted: vocab order = sorted(set(text))

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` not in the vocabulary, sorted, each once."""
        return sorted(set(text) - self._index.keys())

    def encode(self, text: str, unknown: str = "error", chunk: int = 1 << 22) -> np.ndarray:
        """text -> ids. unknown='error' raises KeyError naming them; 'skip' drops them.
        Works in chunks into one preallocated array: peak extra memory ~16 bytes x chunk."""
        out, n = np.empty(len(text), dtype=id_dtype(len(self))), 0
        for i in range(0, len(text), chunk):
            cps = _codepoints(text[i:i + chunk])
            pos = np.searchsorted(self._cps, cps).clip(max=len(self._cps) - 1)
            known = self._cps[pos] == cps
            if not known.all():
                if unknown == "error":
                    raise KeyError(self.unknown(text))
                pos = pos[known]
            out[n:n + len(pos)] = self._order[pos]
            n += len(pos)
        return out[:n]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def index(self, ch: str) -> int:
        return self._index[ch]
