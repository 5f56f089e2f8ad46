"""Print a sample from a trained Char-RNN.

    python -m model.sample --weights weights/shakespeare --prompt "ROMEO:" --length 300 \
        --temperature 0.8 [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--precision P]

Temperature 0 means greedy (always the most likely character).
"""
from __future__ import annotations

import argparse
import random
import sys

import torch


def main(argv=None) -> str:
    from model.checkpoint import load_weights, pick_device
    from model.precision import PRECISIONS, choose_precision
    from model.generate import stream
    from model.sampling import SamplingParams

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/shakespeare")
    ap.add_argument("--prompt", default="")
    ap.add_argument("--length", type=int, default=500)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--top-p", type=float, default=None)
    ap.add_argument("--repetition-penalty", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed to stderr)")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                    help="decode step's matrices (model/fused.py); auto = as the service: the fastest here, timed (model/precision.py)")
    args = ap.parse_args(argv)

    try:
        params = SamplingParams(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    except ValueError as e:
        ap.error(str(e))
    device = pick_device(args.device)
    model, vocab, card = load_weights(args.weights, device)
    choose_precision(model, args.precision, device, card)
    unknown = vocab.unknown(args.prompt)
    if unknown:
        ap.error(f"prompt has characters outside the model's vocabulary: {unknown!r}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"seed {seed}", file=sys.stderr)
    out = [args.prompt]
    sys.stdout.write(args.prompt)
    for ch in stream(model, vocab, args.prompt, args.length, params, seed):
        sys.stdout.write(ch)
        sys.stdout.flush()
        out.append(ch)
    sys.stdout.write("\n")
    return "".join(out)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
