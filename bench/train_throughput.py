"""Training throughput of a Char-RNN on this machine, against the sgemm roofline measured in the
same run.

    python bench/train_throughput.py [--hidden 512 --layers 2 --batch-size 64 --seq-len 128]

fraction = 6 x params x chars/s / sgemm FLOP/s  (forward 2 FLOPs per weight per char, backward 4).
Run it on a quiet machine: anything else on the cores changes both figures.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from model import CharRNN, ModelConfig
from model.train import TrainConfig, make_optimizer


def sgemm_flops(n: int = 2048, repeats: int = 8) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: thread pool, caches
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t)


def train_chars_per_s(cfg: ModelConfig, batch: int, seq: int, steps: int, mkldnn: bool) -> float:
    torch.backends.mkldnn.enabled = mkldnn
    torch.manual_seed(0)
    model = CharRNN(cfg).train()
    opt = make_optimizer(model, TrainConfig(data="", out=""))
    x = torch.randint(0, cfg.vocab_size, (batch, seq + 1))
    state = None
    for i in range(steps + 2):
        if i == 2:  # first steps allocate and warm up
            t = time.perf_counter()
        logits, state = model(x[:, :-1], state)
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state = (state[0].detach(), state[1].detach())
    torch.backends.mkldnn.enabled = True
    return batch * seq * steps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embed", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="default: torch's (all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ModelConfig(args.vocab, args.embed, args.hidden, args.layers, 0.25)
    params = CharRNN(cfg).num_params()
    flops = sgemm_flops()
    rows = []
    for mkldnn in (True, False):
        cps = train_chars_per_s(cfg, args.batch_size, args.seq_len, args.steps, mkldnn)
        rows.append({"backend": "oneDNN" if mkldnn else "native", "chars_per_s": round(cps),
                     "fraction_of_sgemm": 6 * params * cps / flops})
    print(f"{args.layers}x{args.hidden} LSTM, {params:,} params, batch {args.batch_size}x{args.seq_len}, "
          f"{torch.get_num_threads()} threads; sgemm {flops / 1e9:.1f} GFLOP/s")
    print(f"{'backend':8} {'chars/s':>9} {'of sgemm roofline':>18}")
    for r in rows:
        print(f"{r['backend']:8} {r['chars_per_s']:>9,} {r['fraction_of_sgemm']:>17.1%}")
    print(json.dumps({"params": params, "threads": torch.get_num_threads(), "sgemm_flops": flops,
                      "batch_size": args.batch_size, "seq_len": args.seq_len, "results": rows}))


if __name__ == "__main__":
    main()
