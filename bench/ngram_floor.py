"""How well can anything predict the first characters of a window? n-gram models as a yardstick.

    python bench/ngram_floor.py [--data ../shared/data/tinyshakespeare.txt] [--max-context 3]

Position k of a window (windows protocol, model.evaluate) predicts from only k+1 characters. For
k+1 = 1, 2, 3 the training split has enough data to estimate those conditional distributions
directly: an add-alpha (k+2)-gram fitted on the first 90% and scored on the last 10% (best alpha
of a few), i.e. about the loss a position with that little context can reach. Prints one line per
context length and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ngram_loss(train: str, val: str, k: int, alpha: float, vocab: int) -> float:
    """Mean NLL (nats/char) on val of P(next | previous k chars) = (count + alpha) / (context count + alpha V)."""
    grams = collections.Counter(train[i:i + k + 1] for i in range(len(train) - k))
    ctx = collections.Counter(train[i:i + k] for i in range(len(train) - k))
    nll = -sum(math.log((grams[val[i:i + k + 1]] + alpha) / (ctx[val[i:i + k]] + alpha * vocab))
               for i in range(len(val) - k))
    return nll / (len(val) - k)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    ap.add_argument("--max-context", type=int, default=3)
    args = ap.parse_args()
    text = Path(args.data).read_text(encoding="utf-8")
    n = int(len(text) * 0.9)  # the project's split (model/data.py)
    train, val, vocab = text[:n], text[n:], len(set(text))
    out = {}
    for k in range(1, args.max_context + 1):
        out[k] = min(ngram_loss(train, val, k, a, vocab) for a in (0.001, 0.01, 0.05, 0.2))
        print(f"context of {k} character(s): {out[k]:.4f} nats/char (add-alpha {k + 1}-gram, validation split)")
    print(json.dumps({"context_chars": out}))


if __name__ == "__main__":
    main()
