"""Loss of a model on a text, in nats/char, bits/char and perplexity, under a named protocol.

    python -m model.evaluate --weights weights/shakespeare --data FILE [--split val|all]
                             [--protocol stateful|windows|context] [--window 256] [--context 64]
                             [--precision fp32|fp16|int8] [--stepwise]

Protocols (what each prediction is allowed to see):
- stateful (default): every position sees all the text before it; the text runs as 32 contiguous
  rows, each with a 256-character burn-in, the recurrent state carried (char-rnn's figure).
- windows --window W: nanoGPT's. The text is cut into W-character windows, each read from the
  model's start state; the loss is over all positions of every window, so a position sees only the
  window before it. Also reports the loss by position inside the window.
- context --context N: each 32-character block is scored after reading only its N preceding
  characters from the start state: what a prompt cut to its last N characters
  (CHARRNN_MAX_CONTEXT) costs.

The text runs through the whole-sequence recurrent module, or with --stepwise the scored characters go one at
a time through the decode step the service generates with (model/fused.py) after the unscored
ones are read whole, as the engine does; --precision sets the recurrent matrices' precision (default
fp32, as trained): the loss a lower precision costs is the difference.

The last line printed is one JSON object (protocol, loss, bpc, perplexity, chars, ...).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys

import numpy as np
import torch
import torch.nn.functional as F

from model.data import eval_rows

PROTOCOLS = ("stateful", "windows", "context")
BLOCK = 32  # characters scored per row in the context protocol
BUCKETS = ((0, 8), (8, 32), (32, 128), (128, 256), (256, None))  # positions inside a window


@torch.no_grad()
def score_rows(model, ids: np.ndarray, rows: list[tuple[int, int, int]], device="cpu", chunk: int = 512,
               batch: int = 256, stepwise: bool = False) -> list[np.ndarray]:
    """Per-prediction NLL (nats) of every row. Row (a, c, b) reads ids[a:b] from the start state
    and scores the predictions made at positions c..b-1 (of ids[c+1..b]); ids[a:c] is context only.

    Rows run `batch` at a time, padded at the end (padding comes after a row's own positions, so it
    never changes them), in chunks of `chunk` characters with the state carried. stepwise: the
    context goes through whole, then every scored character through the one-character step.
    """
    was_training = model.training
    model.eval()
    out: list[np.ndarray | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda r: (rows[r][1] - rows[r][0], rows[r][2] - rows[r][0]))
    for g in range(0, len(order), batch):
        group = order[g:g + batch]
        ctx = min(rows[r][1] - rows[r][0] for r in group)  # read whole in every mode
        L = max(rows[r][2] - rows[r][0] for r in group)
        x = np.zeros((len(group), L), dtype=np.int64)
        y = np.full((len(group), L), -1, dtype=np.int64)  # -1: context or padding, not scored
        for i, r in enumerate(group):
            a, c, b = rows[r]
            x[i, :b - a] = ids[a:b]
            y[i, c - a:b - a] = ids[c + 1:b + 1]
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        nll = torch.zeros(len(group), L, dtype=torch.float32, device=device)
        bounds = list(range(0, ctx, chunk)) + (list(range(ctx, L)) if stepwise else list(range(ctx, L, chunk)))
        state = None
        for t, t_end in zip(bounds, bounds[1:] + [L]):
            logits, state = model(x[:, t:t_end], state, infer=True)  # (G, t_end - t, V)
            nll[:, t:t_end] = F.cross_entropy(logits.float().transpose(1, 2), y[:, t:t_end],
                                              ignore_index=-1, reduction="none")
        nll = nll.cpu().numpy()
        for i, r in enumerate(group):
            a, c, b = rows[r]
            out[r] = nll[i, c - a:b - a]
    model.train(was_training)
    return out


def protocol_rows(n: int, protocol: str, window: int = 256, context: int = 64,
                  streams: int = 32, burn_in: int = 256) -> list[tuple[int, int, int]]:
    """The rows (a, c, b) of `protocol` over a text of n ids (n - 1 predictions)."""
    m = n - 1
    if protocol == "stateful":
        return eval_rows(n, streams, burn_in)
    if protocol == "windows":
        return [(s, s, min(s + window, m)) for s in range(0, m, window)]
    if protocol == "context":
        return [(p - context, p, min(p + BLOCK, m)) for p in range(context, m, BLOCK)]
    raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")


def evaluate_ids(model, ids: np.ndarray, device="cpu", streams: int = 32, burn_in: int = 256,
                 chunk: int = 512) -> tuple[float, int]:
    """Summed next-char NLL (nats) over all n-1 predictions of `ids`, and their count (stateful)."""
    nll = score_rows(model, ids, eval_rows(len(ids), streams, burn_in), device, chunk=chunk, stepwise=chunk == 1)
    return float(sum(r.astype(np.float64).sum() for r in nll)), sum(len(r) for r in nll)


def report(nll_sum: float, count: int) -> dict:
    loss = nll_sum / max(count, 1)
    return {"loss": loss, "bpc": loss / math.log(2), "perplexity": math.exp(loss), "chars": count}


def by_position(nll: list[np.ndarray]) -> dict:
    """Mean loss by position inside the rows, in BUCKETS (windows protocol)."""
    out = {}
    for lo, hi in BUCKETS:
        parts = [r[lo:hi] for r in nll if len(r) > lo]
        if parts:
            out[f"{lo}-{hi or 'end'}"] = float(np.concatenate(parts).astype(np.float64).mean())
    return out


def evaluate(model, ids: np.ndarray, protocol: str = "stateful", device="cpu", window: int = 256,
             context: int = 64, stepwise: bool = False) -> dict:
    """-> report() of `protocol` over ids, with the protocol named (and, for windows, by position)."""
    rows = protocol_rows(len(ids), protocol, window=window, context=context)
    nll = score_rows(model, ids, rows, device, stepwise=stepwise)
    out = {"protocol": protocol, **report(float(sum(r.astype(np.float64).sum() for r in nll)),
                                          sum(len(r) for r in nll))}
    if protocol == "windows":
        first = BUCKETS[0][1]  # the first bucket's positions one by one: each reads k+1 characters
        out.update(window=window, by_position=by_position(nll),
                   first_positions=[float(np.mean([r[k] for r in nll if len(r) > k])) for k in range(first)])
    if protocol == "context":
        out.update(context=context, block=BLOCK)
    return out


def main(argv=None) -> dict:
    from model.checkpoint import load_weights, pick_device
    from model.data import TRAIN_FRACTION
    from model.precision import PRECISIONS, choose_precision

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="weights prefix (with or without .safetensors)")
    ap.add_argument("--data", required=True, help="UTF-8 text file")
    ap.add_argument("--split", choices=["val", "all"], default="val",
                    help="val: last 10%% of characters (standard split); all: the whole file")
    ap.add_argument("--protocol", choices=PROTOCOLS, default="stateful",
                    help="what each prediction may see (see above); default: stateful")
    ap.add_argument("--window", type=int, default=256, help="windows protocol: window length (nanoGPT: 256)")
    ap.add_argument("--context", type=int, default=64, help="context protocol: characters read before each block")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", choices=["auto", *PRECISIONS], default="fp32",
                    help="precision of the recurrent matrices (model/fused.py); auto = as the service (timed, model/precision.py)")
    ap.add_argument("--stepwise", action="store_true",
                    help="scored characters one at a time through the decode step (default: whole sequence)")
    ap.add_argument("--record", action="store_true",
                    help="also write the result into the weights' card, under evaluation.<protocol>")
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    model, vocab, card = load_weights(args.weights, device)
    choose_precision(model, args.precision, device, card)
    text = open(args.data, encoding="utf-8").read()
    if args.split == "val":
        text = text[int(len(text) * TRAIN_FRACTION):]
    unknown = vocab.unknown(text)
    # Unknown characters cannot be scored: they are counted and reported, then skipped.
    n_unknown = sum(text.count(c) for c in unknown)
    ids = vocab.encode(text, unknown="skip")
    res = evaluate(model, ids, args.protocol, device, window=args.window, context=args.context,
                   stepwise=args.stepwise)
    out = {**res, "split": args.split,
           "path": f"{'decode step' if args.stepwise else 'whole sequence'}, {model.precision}",
           "precision": model.precision, "stepwise": args.stepwise,
           "unknown_chars": n_unknown,
           "unknown_set": unknown, "weights": str(args.weights), "data": args.data}
    print(f"{args.data} [{args.split}]: {out['chars']:,} predicted chars, protocol {args.protocol}, {out['path']}")
    if n_unknown:
        print(f"warning: {n_unknown:,} characters outside the model's vocabulary skipped: {unknown!r}")
    print(f"loss {out['loss']:.4f} nats/char | {out['bpc']:.4f} bits/char | perplexity {out['perplexity']:.3f}")
    for k, v in out.get("by_position", {}).items():
        print(f"  positions {k}: {v:.4f}")
    if "first_positions" in out:
        print("  positions 0, 1, ...:", ", ".join(f"{v:.2f}" for v in out["first_positions"]))
    if args.record:
        record(args.weights, out, argv if argv is not None else sys.argv[1:])
    print(json.dumps(out, ensure_ascii=False))
    return out


def card_key(protocol: str, precision: str = "fp32", stepwise: bool = False, window: int | None = None,
             context: int | None = None) -> str:
    """Where --record keeps a result in the card's "evaluation": the protocol and its window or
    context length, then the path when it is not the one trained (fp32, whole sequence), so a
    lower precision's figure sits beside fp32's, not over it: stateful, windows_256, context_64,
    stateful_int8, stateful_int8_stepwise."""
    key = protocol + {"windows": f"_{window}", "context": f"_{context}"}.get(protocol, "")
    if precision != "fp32" or stepwise:
        key += f"_{precision}" + ("_stepwise" if stepwise else "")
    return key


def recorded(card: dict | None, protocol: str, precision: str = "fp32", stepwise: bool = False,
             window: int | None = None, context: int | None = None) -> dict | None:
    """The card's --record entry for that protocol and path (loss, bpc, command, ...); None when
    not measured."""
    return (card or {}).get("evaluation", {}).get(card_key(protocol, precision, stepwise, window, context))


def record(weights, out: dict, argv: list[str]) -> None:
    """Keep a figure in the card beside the model it describes, with the command that made it."""
    from model.checkpoint import atomic_write_text, load_card, weights_prefix
    card = load_card(weights)
    key = card_key(out["protocol"], out["precision"], out["stepwise"], out.get("window"), out.get("context"))
    keep = ("protocol", "loss", "bpc", "perplexity", "chars", "window", "context", "by_position", "split", "path",
            "precision")
    card.setdefault("evaluation", {})[key] = {
        **{k: out[k] for k in keep if k in out},
        "command": shlex.join(["python", "-m", "model.evaluate", *argv])}
    atomic_write_text(weights_prefix(weights).with_suffix(".json"), json.dumps(card, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
