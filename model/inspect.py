"""Inside the LSTM: per-character gate and cell activations, and units that track a pattern.

    python -m model.inspect --weights weights/shakespeare --text "ROMEO:\nWhat light" --units 3,17
    python -m model.inspect --weights weights/shakespeare --text-file FILE --chars 20000 --find '\n'

For each character read, from the model's start state, the LSTM's equations (PyTorch's gate
order in the weight rows: input, forget, cell candidate, output):

    i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(W_if x + ... )    o = σ(W_io x + ... )
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)  c' = f ⊙ c + i ⊙ g      h' = o ⊙ tanh(c')

plus the model's probability of that character given the ones before it (its surprise).
--find REGEX ranks units by how well their cell state separates the characters inside matches
of the regex from the rest (ROC AUC: 1 = higher inside every time, 0 = lower; 0.5 = no signal).
Karpathy, Johnson & Fei-Fei, "Visualizing and Understanding Recurrent Networks" (2015).
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import torch

WHAT = ("h", "c", "i", "f", "g", "o")  # hidden and cell state, then the gates in nn.LSTM's row order


class UnsupportedCell(ValueError):
    pass


@torch.no_grad()
def layer_activations(x: torch.Tensor, w_ih, w_hh, b_ih, b_hh, h0, c0) -> dict[str, torch.Tensor]:
    """One LSTM layer over a whole sequence. x (T, in); weights as nn.LSTM's (4H, in), (4H, H),
    (4H,), (4H,); h0, c0 (H,). -> {"h", "c", "i", "f", "g", "o"}: each (T, H), the gates after
    their nonlinearity.

    The only sequential part of an LSTM is the recurrent mat-vec, so torch's own LSTM kernel runs
    it (one call for the layer, ~3x faster here than a mat-vec per character from Python) and
    gives every h. With h known before every step, all the gates are one matrix product over the
    whole sequence, and c is the elementwise recurrence c_t = f_t c_(t-1) + i_t g_t."""
    H, T = w_hh.shape[1], x.shape[0]
    h, _, _ = torch.lstm(x[None], (h0[None, None], c0[None, None]), [w_ih, w_hh, b_ih, b_hh],
                         True, 1, 0.0, False, False, True)          # (1, T, H), as nn.LSTM
    h = h[0]
    h_prev = torch.cat([h0[None], h[:-1]])                            # (T, H): the state each step starts from
    z = torch.addmm(b_ih + b_hh, x, w_ih.t()).addmm_(h_prev, w_hh.t())  # (T, 4H) pre-activations, rows i, f, g, o
    i, f, g, o = z.split(H, dim=1)
    i, f, o, g = i.sigmoid(), f.sigmoid(), o.sigmoid(), g.tanh()
    ig = i * g
    c = torch.empty_like(ig)
    c_prev = c0
    for t in range(T):                                                # ~µs each: elementwise on H values
        c_prev = torch.addcmul(ig[t], f[t], c_prev, out=c[t])
    return {"h": h, "c": c, "i": i, "f": f, "g": g, "o": o}


@torch.no_grad()
def activations(model, ids) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """Read `ids` (T,) from the start state. -> per layer {"h", "c", "i", "f", "g", "o"} (T, H)
    each, and the log-probability (T,) of each character given those before it (the first one
    given the start state alone)."""
    if model.cfg.cell != "lstm":
        raise UnsupportedCell(f"activations are defined for LSTM cells; this model's cell is {model.cfg.cell!r}")
    lstm, dev = model.lstm, model.head.weight.device
    ids = torch.as_tensor(ids, dtype=torch.long, device=dev)
    x = model.embed.weight.float()[ids]                              # (T, E)
    layers = []
    for k in range(model.cfg.layers):
        p = [getattr(lstm, f"{n}_l{k}").float() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        acts = layer_activations(x, *p, model.h0[k].float(), model.c0[k].float())
        layers.append(acts)
        x = acts["h"]                                                # the next layer reads this one's h
    # what the head saw before each character: the start state's top h, then every h but the last
    before = torch.cat([model.h0[-1].float()[None], x[:-1]])        # (T, H)
    logp = torch.log_softmax(model.head(before.to(model.head.weight.dtype)).float(), -1)
    return layers, logp.gather(1, ids[:, None])[:, 0]


def cell_spread(c: torch.Tensor) -> torch.Tensor:
    """(H,) how much each unit's cell state c (T, H) varies over the text: its standard deviation
    (zeros for a single character)."""
    return c.std(0, unbiased=False) if c.shape[0] > 1 else torch.zeros(c.shape[1])


def top_units(spread: torch.Tensor, k: int) -> list[int]:
    """The k units of largest spread (H,) (cell_spread), largest first."""
    return torch.topk(spread, min(k, spread.shape[0])).indices.tolist()


def match_mask(text: str, pattern: str) -> torch.Tensor:
    """(len(text),) bool: True for every character inside a match of the regex."""
    mask = torch.zeros(len(text), dtype=torch.bool)
    for m in re.finditer(pattern, text):
        mask[m.start():m.end()] = True
    return mask


def separation(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ROC AUC per unit of values (T, H) for telling mask (T,) True from False: the chance that
    a random character inside a match has a higher value than one outside (Mann-Whitney U)."""
    n1, n0 = int(mask.sum()), int((~mask).sum())
    if not n1 or not n0:
        raise ValueError("the regex must match some characters and leave some unmatched")
    ranks = values.double().argsort(0).argsort(0).double() + 1         # (T, H), 1 = smallest
    u = ranks[mask].sum(0) - n1 * (n1 + 1) / 2
    return u / (n1 * n0)


def find_units(c: torch.Tensor, text: str, pattern: str, k: int = 10) -> list[dict]:
    """Units ranked by |AUC - 0.5| of their cell state (T, H) for characters inside matches of the
    regex; ties (e.g. several perfect separations) by the gap between the means in standard deviations."""
    mask = match_mask(text, pattern)
    auc = separation(c, mask).tolist()
    gap = ((c[mask].mean(0) - c[~mask].mean(0)).abs() / (c.std(0, unbiased=False) + 1e-12)).tolist()
    order = sorted(range(c.shape[1]), key=lambda u: (-abs(auc[u] - 0.5), -gap[u]))[:k]
    return [{"unit": u, "auc": round(auc[u], 4), "mean_inside": round(float(c[mask, u].mean()), 4),
             "mean_outside": round(float(c[~mask, u].mean()), 4)} for u in order]


def show(ch: str) -> str:
    return {"\n": "\\n", " ": "␣", "\t": "\\t"}.get(ch, ch)


def main(argv=None) -> None:
    from model.checkpoint import load_weights, pick_device

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/shakespeare")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the text to read (\\n and \\t in it are read as newline and tab)")
    src.add_argument("--text-file", help="read the text from this file")
    ap.add_argument("--offset", type=int, default=0, help="with --text-file: first character to read")
    ap.add_argument("--chars", type=int, default=None, help="with --text-file: how many characters to read")
    ap.add_argument("--layer", type=int, default=-1, help="which LSTM layer (0-based; default: the last)")
    ap.add_argument("--units", default=None, help="comma-separated unit numbers to print")
    ap.add_argument("--top-units", type=int, default=None, help="also the k units whose cell state varies most")
    ap.add_argument("--what", default="c,h", help=f"comma-separated, of {','.join(WHAT)}")
    ap.add_argument("--find", metavar="REGEX", help="rank units by how well their cell state marks matches")
    ap.add_argument("--top", type=int, default=10, help="with --find: how many units to list")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the sequential mat-vecs gain little "
                    "from more, and lose much on a busy machine: 2.7 vs 32 s of CPU for 2000 characters here)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.text is not None:
        text = args.text.replace("\\n", "\n").replace("\\t", "\t")
    else:
        with open(args.text_file, encoding="utf-8") as f:
            text = f.read()[args.offset:]
        text = text[:args.chars] if args.chars else text
    what = [w for w in args.what.split(",") if w]
    if not text or any(w not in WHAT for w in what):
        ap.error(f"need a non-empty text, and --what from {WHAT}")
    model, vocab, _ = load_weights(args.weights, pick_device(args.device))
    model.eval()
    unknown = vocab.unknown(text)
    if unknown:
        print(f"skipping {len(unknown)} character(s) outside the vocabulary: {unknown[:20]}", file=sys.stderr)
        text = "".join(ch for ch in text if ch not in set(unknown))
    layer = range(model.cfg.layers)[args.layer]
    try:
        layers, logp = activations(model, vocab.encode(text).tolist())
    except UnsupportedCell as e:
        ap.error(str(e))
    acts = layers[layer]

    if args.find is not None:
        try:
            found = find_units(acts["c"], text, args.find, args.top)
        except (re.error, ValueError) as e:
            ap.error(f"--find: {e}")
        if args.json:
            print(json.dumps({"layer": layer, "chars": len(text), "regex": args.find, "units": found}))
            return
        inside = int(match_mask(text, args.find).sum())
        print(f"layer {layer}, {len(text)} characters, {inside} inside matches of {args.find!r}")
        print(f"{'unit':>5} {'AUC':>7} {'mean c inside':>14} {'mean c outside':>15}")
        for r in found:
            print(f"{r['unit']:>5} {r['auc']:>7.4f} {r['mean_inside']:>14.4f} {r['mean_outside']:>15.4f}")
        return

    units = [int(u) for u in args.units.split(",")] if args.units else []
    spread = cell_spread(acts["c"])
    if args.top_units:
        units += [u for u in top_units(spread, args.top_units) if u not in units]
    units = units or top_units(spread, 5)
    if any(not 0 <= u < model.cfg.hidden for u in units):
        ap.error(f"units are 0 .. {model.cfg.hidden - 1}")
    if args.json:
        print(json.dumps({"layer": layer, "units": units, "chars": [
            {"char": ch, "logprob": round(float(logp[t]), 5),
             **{w: [round(float(acts[w][t, u]), 5) for u in units] for w in what}}
            for t, ch in enumerate(text)]}, ensure_ascii=False))
        return
    cols = [f"{w}[{u}]" for u in units for w in what]
    print(f"layer {layer}; p = the model's probability of the character given those before it")
    print(f"{'char':>4} {'p':>6} " + " ".join(f"{c:>8}" for c in cols))
    for t, ch in enumerate(text):
        vals = " ".join(f"{float(acts[w][t, u]):>8.3f}" for u in units for w in what)
        print(f"{show(ch):>4} {float(logp[t].exp()):>6.3f} {vals}")


if __name__ == "__main__":
    main()
