"""How much context does the model use? Loss vs the characters a prompt is read from, and the
prefill window (CHARRNN_MAX_CONTEXT) that costs nothing measurable.

    python bench/context.py --weights weights/shakespeare --data ../shared/data/tinyshakespeare.txt \
        [--positions 1000] [--tolerance 0.005] [--precision auto] [--write-card]

On the validation split (last 10%), the same --positions positions p for every K: the loss on
the 32 characters after p when only the K characters before p are read, from the model's start
state (model.evaluate's context protocol, batched), beside the same 32-character blocks scored
with the full context (the stateful protocol: everything before them). The window picked is the
smallest K whose loss is within --tolerance nats/char of the full-context loss on the same blocks.
Then the whole validation split under both protocols, stepwise as the engine runs it (the
window through the whole-sequence LSTM, the scored characters through the decode step), at the
precision the service would use: the loss the window really costs.

--write-card records the window and the curve in the weights' card ("inference"), where the
service reads its default CHARRNN_MAX_CONTEXT. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.checkpoint import atomic_write_text, load_weights, weights_prefix  # noqa: E402
from model.data import load_corpus  # noqa: E402
from model.evaluate import BLOCK, evaluate, protocol_rows, score_rows  # noqa: E402
from model.precision import choose_precision  # noqa: E402

KS = (8, 16, 32, 48, 64, 96, 128, 192, 256, 512)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/shakespeare")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    ap.add_argument("--positions", type=int, default=1000, help="blocks sampled for the curve (same for every K)")
    ap.add_argument("--tolerance", type=float, default=0.005, help="nats/char above the full-context loss allowed")
    ap.add_argument("--precision", default="auto", help="LSTM matrices' precision (auto = as the service)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--write-card", action="store_true", help="record the window in the weights' card")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    model, vocab, card = load_weights(args.weights)
    choose_precision(model, args.precision, "cpu", card)
    ids = load_corpus(args.data).split("val")
    m = len(ids) - 1

    # The full context of every position: one stateful pass, per-position NLL in text order.
    t0 = time.time()
    full = np.concatenate(score_rows(model, ids, protocol_rows(len(ids), "stateful")))  # (m,)
    rng = np.random.default_rng(args.seed)
    starts = np.sort(rng.choice(np.arange(max(KS), m - BLOCK), size=args.positions, replace=False))
    full_loss = float(np.mean([full[p:p + BLOCK].mean() for p in starts]))
    curve = {}
    for K in KS:
        nll = score_rows(model, ids, [(int(p) - K, int(p), int(p) + BLOCK) for p in starts])
        curve[K] = float(np.mean([r.mean() for r in nll]))
    window = next((K for K in KS if curve[K] - full_loss <= args.tolerance), 0)
    print(f"{args.weights}: loss on {BLOCK} characters after a context of K, {args.positions} blocks of the "
          f"validation split, precision {model.precision} ({time.time() - t0:.0f} s)")
    print("K       " + "".join(f"{K:>8}" for K in KS) + "    full")
    print("loss    " + "".join(f"{curve[K]:8.4f}" for K in KS) + f"{full_loss:8.4f}")
    print(f"window: smallest K within {args.tolerance} nats/char of the full context: {window or 'none (read all)'}")

    # What the window costs over the whole split, as the engine runs it (stepwise).
    whole = {}
    if window:
        for proto in ("stateful", "context"):
            r = evaluate(model, ids, proto, context=window, stepwise=True)
            whole[proto] = r["loss"]
        print(f"whole validation split, stepwise ({model.precision}): every block after only {window} characters "
              f"{whole['context']:.4f} vs full context {whole['stateful']:.4f} nats/char "
              f"(+{whole['context'] - whole['stateful']:.4f}; the context protocol skips the first {window} positions)")

    result = {"weights": args.weights, "precision": model.precision, "positions": args.positions, "block": BLOCK,
              "curve": {str(K): round(v, 5) for K, v in curve.items()}, "full": round(full_loss, 5),
              "tolerance": args.tolerance, "window": window,
              "whole_split_stepwise": {k: round(v, 5) for k, v in whole.items()}}
    if args.write_card and window:
        prefix = weights_prefix(args.weights)
        card["inference"] = {"max_context": window, "context_curve": result,
                             "command": "python bench/context.py --weights " + args.weights + " --write-card"}
        atomic_write_text(prefix.with_suffix(".json"), json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        print(f"recorded max_context={window} in {prefix.with_suffix('.json')}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
