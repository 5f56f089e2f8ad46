"""Loss of a model on a text, in nats/char, bits/char and perplexity.

    python -m model.evaluate --weights weights/shakespeare --data FILE [--split val|all]
                             [--precision fp32|fp16] [--stepwise]

The text runs through the whole-sequence LSTM (as prompts do in the service), or with --stepwise
one character at a time through the decode step the service generates with (model/fused.py);
--precision sets the LSTM matrices' precision (default fp32, as trained): the loss a lower
precision costs is the difference.

The last line printed is one JSON object (loss, bpc, perplexity, chars, unknown_chars, ...).
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from model.data import eval_rows


@torch.no_grad()
def evaluate_ids(model, ids: np.ndarray, device="cpu", streams: int = 32, burn_in: int = 256,
                 chunk: int = 512) -> tuple[float, int]:
    """Summed next-char NLL (nats) over all n-1 predictions of `ids`, and their count.

    Stateful: rows of contiguous text run in chunks with the LSTM state carried (see eval_rows).
    """
    was_training = model.training
    model.eval()
    rows = eval_rows(len(ids), streams, burn_in)
    L = max(b - a for a, _, b in rows)
    x = np.zeros((len(rows), L), dtype=np.int64)
    y = np.full((len(rows), L), -1, dtype=np.int64)  # -1: burn-in or padding, not counted
    for r, (a, c, b) in enumerate(rows):
        x[r, :b - a] = ids[a:b]
        y[r, c - a:b - a] = ids[c + 1:b + 1]
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    total, state = torch.zeros((), dtype=torch.float64, device=device), None
    for t in range(0, L, chunk):  # chunk 1: every step through the one-character decode path
        logits, state = model(x[:, t:t + chunk], state)
        total += F.cross_entropy(logits.float().flatten(0, 1), y[:, t:t + chunk].flatten(),
                                 ignore_index=-1, reduction="sum")
    model.train(was_training)
    return total.item(), int((y >= 0).sum())


def report(nll_sum: float, count: int) -> dict:
    loss = nll_sum / max(count, 1)
    return {"loss": loss, "bpc": loss / math.log(2), "perplexity": math.exp(loss), "chars": count}


def main(argv=None) -> dict:
    from model.checkpoint import load_weights, pick_device
    from model.data import TRAIN_FRACTION
    from model.fused import PRECISIONS, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="weights prefix (with or without .safetensors)")
    ap.add_argument("--data", required=True, help="UTF-8 text file")
    ap.add_argument("--split", choices=["val", "all"], default="val",
                    help="val: last 10%% of characters (standard split); all: the whole file")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", choices=["auto", *PRECISIONS], default="fp32",
                    help="precision of the LSTM matrices (model/fused.py); auto = as the service")
    ap.add_argument("--stepwise", action="store_true",
                    help="one character at a time through the decode step (default: whole sequence)")
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    model, vocab, card = load_weights(args.weights, device)
    model.set_precision(resolve_precision(args.precision, device))
    text = open(args.data, encoding="utf-8").read()
    if args.split == "val":
        text = text[int(len(text) * TRAIN_FRACTION):]
    unknown = vocab.unknown(text)
    # Unknown characters cannot be scored: they are counted and reported, then skipped.
    n_unknown = sum(text.count(c) for c in unknown)
    ids = vocab.encode(text, unknown="skip")
    nll, count = evaluate_ids(model, ids, device, chunk=1 if args.stepwise else 512)
    out = {**report(nll, count), "split": args.split,
           "path": f"{'decode step' if args.stepwise else 'whole sequence'}, {model.precision}",
           "unknown_chars": n_unknown,
           "unknown_set": unknown, "weights": str(args.weights), "data": args.data}
    print(f"{args.data} [{args.split}]: {out['chars']:,} predicted chars, {out['path']}")
    if n_unknown:
        print(f"warning: {n_unknown:,} characters outside the model's vocabulary skipped: {unknown!r}")
    print(f"loss {out['loss']:.4f} nats/char | {out['bpc']:.4f} bits/char | perplexity {out['perplexity']:.3f}")
    print(json.dumps(out, ensure_ascii=False))
    return out


if __name__ == "__main__":
    main()
