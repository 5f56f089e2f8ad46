"""Corpus loading, the standard 90/10 split, and truncated-BPTT batches.

The text is encoded once into a compact integer array (uint8 for <=256 characters) and cached
as .npy (+ vocab JSON) keyed by the file's sha256, beside the data when that folder is
writable, else in ~/.cache/charrnn. Later runs memory-map it: ready in milliseconds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.checkpoint import atomic_write, atomic_write_text, sha256_file
from model.vocab import Vocab

TRAIN_FRACTION = 0.9  # first 90% of characters train, last 10% validate (as nanoGPT)


UNKNOWN = "\ufffd"      # the symbol rarer characters become under --max-vocab (U+FFFD REPLACEMENT CHARACTER)
UNKNOWN_ALT = "\ue000"  # ... or, where the text itself uses U+FFFD, this private-use character


@dataclass
class Corpus:
    path: Path
    sha256: str
    vocab: Vocab
    ids: np.ndarray  # (n,) uint8/uint16, possibly memory-mapped
    unknown: str | None = None  # with max_vocab: the symbol that stands for every character left out
    dropped: int = 0            # distinct characters left out (they read as `unknown`)
    val_chars: int | None = None  # the last N characters validate (a separate validation text); None: 10%

    @property
    def n_train(self) -> int:
        if self.val_chars:
            return max(0, len(self.ids) - self.val_chars)
        return int(len(self.ids) * TRAIN_FRACTION)

    def split(self, name: str) -> np.ndarray:
        if name == "train":
            return self.ids[:self.n_train]
        if name == "val":
            return self.ids[self.n_train:]
        if name == "all":
            return self.ids
        raise ValueError(f"unknown split {name!r}")


def _cache_dirs(path: Path) -> list[Path]:
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charrnn"
    return [path.parent, home]


def cap_vocab(text: str, max_vocab: int) -> tuple[str, str | None, int]:
    """Keep the max_vocab most frequent characters (ties: the lower code point) and write every other
    one as one unknown symbol: a text of thousands of rare characters (CJK, say) still trains a
    head of a bounded size. -> (text, the unknown symbol or None when nothing was dropped, dropped)."""
    cps, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), return_counts=True)
    if len(cps) <= max_vocab:
        return text, None, 0
    order = np.lexsort((cps, -counts))  # most frequent first
    unknown = UNKNOWN if UNKNOWN not in text else UNKNOWN_ALT
    dropped = {c: unknown for c in cps[order[max_vocab:]].tolist()}  # code point -> the symbol (str.translate)
    return text.translate(dropped), unknown, len(dropped)


def load_corpus(path: str | Path, max_vocab: int | None = None, val_chars: int | None = None) -> Corpus:
    path = Path(path)
    digest = sha256_file(path)
    stem = f".{path.name}.{digest[:16]}" + (f".v{max_vocab}" if max_vocab else "")
    for d in _cache_dirs(path):
        ids_p, voc_p = d / f"{stem}.ids.npy", d / f"{stem}.vocab.json"
        if ids_p.exists() and voc_p.exists():
            meta = json.loads(voc_p.read_text(encoding="utf-8"))
            meta = meta if isinstance(meta, dict) else {"chars": meta}
            return Corpus(path, digest, Vocab(meta["chars"]), np.load(ids_p, mmap_mode="r"), meta.get("unknown"),
                          meta.get("dropped", 0), val_chars)
    text = path.read_text(encoding="utf-8")
    unknown, dropped = None, 0
    if max_vocab:
        text, unknown, dropped = cap_vocab(text, max_vocab)
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    del text
    meta = {"chars": vocab.chars, "unknown": unknown, "dropped": dropped}
    for d in _cache_dirs(path):  # first writable cache location wins; none is fine too
        try:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write(d / f"{stem}.ids.npy", lambda tmp: np.save(open(tmp, "wb"), ids))
            atomic_write_text(d / f"{stem}.vocab.json", json.dumps(meta, ensure_ascii=False))
            break
        except OSError:
            continue
    return Corpus(path, digest, vocab, ids, unknown, dropped, val_chars)


class StreamBatcher:
    """Contiguous streams for truncated BPTT.

    The split is cut into `batch` contiguous streams; window k of an epoch is
    x = streams[:, k*T:(k+1)*T], y = the same positions shifted by one character. Row b of
    window k+1 continues row b of window k, so the LSTM state is carried across windows.
    Each epoch starts at a different offset (0..T-1, derived from seed and epoch) so window
    boundaries move between epochs. The position is (epoch, window): all resume needs.
    """

    def __init__(self, ids: np.ndarray, batch: int, seq_len: int, seed: int = 0):
        if len(ids) < batch * seq_len + seq_len + 1:
            raise ValueError(f"split of {len(ids)} chars is too short for batch {batch} x seq {seq_len}")
        self.ids, self.B, self.T, self.seed = ids, batch, seq_len, seed
        self.epoch, self.window = 0, 0
        self._layout()

    def _layout(self):
        off = int(np.random.default_rng([self.seed, self.epoch]).integers(0, self.T)) if self.epoch else 0
        self.stream_len = (len(self.ids) - 1 - off) // self.B
        self.windows = self.stream_len // self.T
        self.offset = off

    def next(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """-> x (B, T), y (B, T) as int64, and whether this window starts a new epoch (reset state)."""
        if self.window >= self.windows:
            self.epoch, self.window = self.epoch + 1, 0
            self._layout()
        fresh = self.window == 0
        starts = self.offset + np.arange(self.B) * self.stream_len + self.window * self.T
        idx = starts[:, None] + np.arange(self.T)[None, :]
        x = np.asarray(self.ids[idx], dtype=np.int64)
        y = np.asarray(self.ids[idx + 1], dtype=np.int64)
        self.window += 1
        return x, y, fresh

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "window": self.window}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.window = int(d["epoch"]), int(d["window"])
        self._layout()


def eval_rows(n: int, streams: int, burn_in: int) -> list[tuple[int, int, int]]:
    """Cut the n-1 predictions of a sequence of n ids into rows for a stateful batched pass.

    Row s predicts positions [c, b) (each predicted exactly once over all rows) from input
    ids[a:b], a = c - burn_in (>= 0): the burn-in gives each row the context a single
    stateful pass would have had, so the figure matches one long pass closely.
    Returns [(a, c, b)].
    """
    m = n - 1
    streams = max(1, min(streams, m // max(1, burn_in)))
    size = m // streams
    rows = []
    for s in range(streams):
        c, b = s * size, (m if s == streams - 1 else (s + 1) * size)
        rows.append((max(0, c - burn_in), c, b))
    return rows
