"""Validation loss of weights averaged over training checkpoints (checkpoint averaging, SWA-style).

    python bench/average_checkpoints.py --weights weights/shakespeare \
        --data ../shared/data/tinyshakespeare.txt CKPT [CKPT ...]

Each CKPT is a model.train checkpoint (RUN_DIR/checkpoint.pt, copied aside after a validation to
keep several of one run; read with weights_only=True). Their model weights are averaged
parameter by parameter, loaded into the model of --weights (its shape and vocabulary), and
scored on the validation split, stateful protocol, fp32 (model.evaluate). Prints the steps
averaged and the loss; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.checkpoint import load_training_state, load_weights  # noqa: E402
from model.data import TRAIN_FRACTION  # noqa: E402
from model.evaluate import evaluate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/shakespeare", help="a model of the checkpoints' shape")
    ap.add_argument("--data", required=True)
    ap.add_argument("checkpoints", nargs="+")
    args = ap.parse_args()
    model, vocab, _ = load_weights(args.weights)
    cks = [load_training_state(p) for p in args.checkpoints]
    model.load_state_dict({k: sum(c["model"][k].float() for c in cks) / len(cks) for k in cks[0]["model"]})
    model.eval()
    text = open(args.data, encoding="utf-8").read()
    ids = vocab.encode(text[int(len(text) * TRAIN_FRACTION):])
    with torch.no_grad():
        res = evaluate(model, ids)
    out = {"steps": [c["step"] for c in cks], "loss": res["loss"], "chars": res["chars"]}
    print(f"weights averaged over steps {out['steps']}: stateful validation loss {out['loss']:.4f} nats/char")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
