"""Train a Char-RNN on a UTF-8 text file with truncated backprop-through-time.

    python -m model.train --data input.txt --out weights/NAME [options]

Writes the best-by-validation model to weights/NAME.safetensors + NAME.json (model card) and
its loss curve to NAME.png; the training state (checkpoint.pt, metrics.jsonl) goes to
runs/NAME/. Interrupt at any moment and rerun the same command with --resume: training
continues from the latest checkpoint and ends with the same model as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import (atomic_write_text, load_training_state, pick_device, save_training_state,
                              save_weights, weights_prefix)
from model.config import ModelConfig
from model.data import StreamBatcher, load_corpus
from model.evaluate import evaluate_ids, report
from model.network import CharRNN, detach_state


@dataclass
class TrainConfig:
    data: str
    out: str
    run_dir: str | None = None   # default: runs/<NAME>
    embed: int = 128
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.25
    weight_drop: float = 0.0     # DropConnect on the LSTM's hidden-to-hidden weights
    reset_prob: float = 0.0      # chance per stream and window of restarting from the start state
    batch_size: int = 64
    seq_len: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-4         # cosine decay ends here at max_steps
    warmup: int = 100            # linear warm-up steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int = 2000        # defines the whole LR schedule
    max_minutes: float | None = None  # stop (with a checkpoint) after this long; --resume continues
    eval_every: int = 100
    seed: int = 1337
    device: str = "auto"
    threads: int | None = None
    resume: bool = False


def lr_at(step: int, c: TrainConfig) -> float:
    """Linear warm-up to c.lr, then cosine decay to c.min_lr at c.max_steps."""
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    t = min(1.0, (step - c.warmup) / max(1, c.max_steps - c.warmup))
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * t))


def make_optimizer(model: CharRNN, c: TrainConfig) -> torch.optim.Optimizer:
    # Decay matrices only: biases, the embedding table and the start state are not "weights"
    # worth shrinking.
    def decays(n, p):
        return p.dim() >= 2 and not n.startswith("embed") and n not in ("h0", "c0")
    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    rest = [p for n, p in model.named_parameters() if not decays(n, p)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=c.lr, betas=(0.9, 0.99))


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary (then it checkpoints)."""

    def __init__(self):
        self.set = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.set:  # second Ctrl-C: leave now; the last checkpoint is intact (atomic writes)
            raise KeyboardInterrupt
        self.set = True


def train(c: TrainConfig, command: str = "") -> dict:
    if c.threads:
        torch.set_num_threads(c.threads)
    device = pick_device(c.device)
    torch.manual_seed(c.seed)
    out = weights_prefix(c.out)
    run_dir = Path(c.run_dir or Path("runs") / out.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"

    corpus = load_corpus(c.data)
    train_ids, val_ids = corpus.split("train"), corpus.split("val")
    cfg = ModelConfig(len(corpus.vocab), c.embed, c.hidden, c.layers, c.dropout, c.weight_drop)
    model = CharRNN(cfg).to(device)
    opt = make_optimizer(model, c)
    batcher = StreamBatcher(train_ids, c.batch_size, c.seq_len, c.seed)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    step, best, state, wall_before, history, resumed = 0, None, None, 0.0, [], 0
    if c.resume and ckpt_path.exists():
        ck = load_training_state(ckpt_path)
        if ck["model_config"] != cfg.to_dict() or ck["data_sha256"] != corpus.sha256:
            raise SystemExit(f"{ckpt_path} belongs to another model or corpus; not resuming")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        batcher.load_state_dict(ck["batcher"])
        step, best, wall_before, resumed = ck["step"], ck["best"], ck["wall_time"], ck["resumed"] + 1
        state = tuple(s.to(device) for s in ck["lstm_state"]) if ck["lstm_state"] else None
        torch.set_rng_state(ck["rng_cpu"])
        if device.type == "cuda" and ck.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ck["rng_cuda"])
        if metrics_path.exists():  # drop log lines written after the checkpoint we resume from
            history = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()]
            history = [h for h in history if h["step"] <= step]
        print(f"resuming from {ckpt_path} at step {step}/{c.max_steps}", file=sys.stderr)
    atomic_write_text(metrics_path, "".join(json.dumps(h) + "\n" for h in history))

    def checkpoint():
        save_training_state(ckpt_path, {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "batcher": batcher.state_dict(),
            "step": step, "best": best, "wall_time": wall_before + time.time() - t0, "resumed": resumed,
            "lstm_state": [s.cpu() for s in state] if state is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "model_config": cfg.to_dict(), "data_sha256": corpus.sha256, "train_config": asdict(c)})

    def card(val: dict) -> dict:
        return {"training": {
            "data": Path(c.data).name, "data_chars": len(corpus.ids), "data_bytes": corpus.path.stat().st_size,
            "data_sha256": corpus.sha256,
            "split": {"train": "first 90% of characters", "val": "last 10% of characters",
                      "train_chars": len(train_ids), "val_chars": len(val_ids)},
            "step": step, "max_steps": c.max_steps, "chars_seen": step * c.batch_size * c.seq_len,
            "best_val_loss": val["loss"], "best_val_bpc": val["bpc"],
            "wall_time_s": round(wall_before + time.time() - t0, 1), "device": str(device),
            "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "command": command, "resumed": resumed, "config": asdict(c)}}

    from tqdm import tqdm
    stop, t0, t_last, loss_acc, n_acc = StopFlag(), time.time(), time.time(), 0.0, 0
    bar = tqdm(total=c.max_steps, initial=step, dynamic_ncols=True, mininterval=2.0)
    model.train()
    while step < c.max_steps:
        if stop.set or (c.max_minutes and time.time() - t0 > 60 * c.max_minutes):
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, c)
        xb, yb, fresh = batcher.next()
        x, y = torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)
        if fresh or state is None:  # a new epoch re-lays the streams: start from the start state
            state = model.init_hidden(c.batch_size, device)
        elif c.reset_prob:
            # Fresh starts: some streams forget their past and read this window from the start
            # state, as a prompt with nothing before it is read; h0/c0 learn from these rows.
            # Drawn from (seed, step) so a resumed run draws the same rows.
            rows = np.random.default_rng([c.seed, step]).random(c.batch_size) < c.reset_prob
            state = model.restart_rows(state, torch.from_numpy(rows).to(device))
        with amp:
            logits, state = model(x, state)  # logits: (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # LSTM gradients can spike on an unusual window; clipping the global norm keeps one
        # such step from throwing the weights far off (the classic exploding-gradient guard).
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        opt.step()
        state = detach_state(state)  # keep the values, cut the graph: truncated BPTT
        step += 1
        loss_acc, n_acc = loss_acc + loss.item(), n_acc + 1
        bar.update(1)
        if step % c.eval_every == 0 or step == c.max_steps:
            val = report(*evaluate_ids(model, val_ids, device))
            now = time.time()
            rec = {"step": step, "chars": step * c.batch_size * c.seq_len, "lr": lr_at(step - 1, c),
                   "train_loss": loss_acc / n_acc, "val_loss": val["loss"], "val_bpc": val["bpc"],
                   "chars_per_s": n_acc * c.batch_size * c.seq_len / (now - t_last),
                   "wall_time_s": round(wall_before + now - t0, 1)}
            history.append(rec)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if best is None or val["loss"] < best["loss"]:
                best = {**val, "step": step}
                save_weights(model, corpus.vocab, out, card(val))
            bar.set_postfix(train=f"{rec['train_loss']:.3f}", val=f"{val['loss']:.3f}",
                            best=f"{best['loss']:.3f}", cps=f"{rec['chars_per_s']:.0f}")
            checkpoint()
            loss_acc, n_acc, t_last = 0.0, 0, time.time()
    bar.close()
    if step < c.max_steps:
        checkpoint()
        print(f"stopped at step {step}/{c.max_steps}; rerun with --resume to continue", file=sys.stderr)
    if history:
        try:
            from model.plot import plot_history
            plot_history(history, out.with_suffix(".png"), title=f"{out.name}: {cfg.layers}x{cfg.hidden} LSTM")
        except ImportError:  # matplotlib is the optional [train] extra
            print("matplotlib not installed: no loss-curve PNG (pip install '.[train]')", file=sys.stderr)
    if best:
        print(f"best val loss {best['loss']:.4f} nats/char ({best['bpc']:.4f} bpc) at step {best['step']} -> {out}.safetensors")
    return {"step": step, "best": best, "history": history}


def parse_args(argv=None) -> TrainConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in TrainConfig.__dataclass_fields__.items():
        flag = "--" + name.replace("_", "-")
        if name in ("data", "out"):
            ap.add_argument(flag, required=True)
        elif name == "resume":
            ap.add_argument(flag, action="store_true", help="continue from the run's latest checkpoint")
        elif name == "device":
            ap.add_argument(flag, default="auto", choices=["auto", "cpu", "cuda"])
        else:
            d = default.default
            typ = {int: int, float: float}.get(type(d), str if name == "run_dir" else float if name == "max_minutes" else int)
            ap.add_argument(flag, type=typ, default=d, help=f"default: {d}")
    return TrainConfig(**vars(ap.parse_args(argv)))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    c = parse_args(argv)
    command = shlex.join(["python", "-m", "model.train", *[a for a in argv if a != "--resume"]])
    return train(c, command)


if __name__ == "__main__":
    main()
