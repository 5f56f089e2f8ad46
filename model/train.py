"""Train a Char-RNN on a UTF-8 text file with truncated backprop-through-time.

    python -m model.train --data input.txt --out weights/NAME [options]
    torchrun --standalone --nproc_per_node=N -m model.train --data input.txt --out weights/NAME [options]

Writes the best-by-validation model to weights/NAME.safetensors + NAME.json (model card) and
its loss curve to NAME.png; the training state (checkpoint.pt, metrics.jsonl) goes to
runs/NAME/. Interrupt at any moment and rerun the same command with --resume: training
continues from the latest checkpoint and ends with the same model as an uninterrupted run.

Under torchrun every process trains one replica (DistributedDataParallel: gloo on CPU, NCCL on
CUDA) on its contiguous share of the --batch-size streams, which stays the global batch: 1 or N
processes follow the same schedule. Rank 0 alone writes files (model/distributed.py).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model import distributed
from model.checkpoint import (atomic_write_text, init_from, init_record, load_card, load_training_state,
                              save_training_state, save_weights, weights_prefix)
from model.cells import CELLS
from model.config import ModelConfig
from model.data import Corpus, StreamBatcher, load_corpus
from model.evaluate import evaluate_ids, report
from model.network import CharRNN
from model.state import State


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    data: str = _opt(None, "UTF-8 text file; the first 90%% of its characters train, the last 10%% validate")
    out: str = _opt(None, "weights prefix: writes OUT.safetensors, OUT.json (model card), OUT.png (loss curve)")
    run_dir: str | None = _opt(None, "checkpoint.pt and metrics.jsonl go here (default: runs/<name of --out>)")
    init: str | None = _opt(None, "start from these weights (fine-tuning): their shape (cell, embed, hidden, layers) "
                                  "replaces the options; characters new to them start fresh")
    cell: str = _opt("lstm", "recurrent cell, as char-rnn's -model: lstm, gru or rnn (tanh); recorded in the card")
    embed: int = _opt(128, "character embedding width")
    hidden: int = _opt(512, "recurrent width per layer (the LSTM's hidden and cell state)")
    layers: int = _opt(2, "stacked recurrent layers")
    dropout: float = _opt(0.25, "dropout between recurrent layers and on their output")
    weight_drop: float = _opt(0.0, "DropConnect on the hidden-to-hidden weights (AWD-LSTM), one mask per window")
    reset_prob: float = _opt(0.0, "chance per stream and window of restarting from the learned start state, "
                                  "so prompts with nothing before them read well")
    batch_size: int = _opt(64, "streams per step, GLOBAL: under torchrun each process takes a contiguous share")
    seq_len: int = _opt(128, "characters per window (truncated-BPTT length)")
    lr: float = _opt(2e-3, "peak learning rate (AdamW)")
    min_lr: float = _opt(1e-4, "learning rate at --max-steps, the end of the cosine decay")
    warmup: int = _opt(100, "linear warm-up steps")
    weight_decay: float = _opt(0.01, "AdamW weight decay on the matrices (not biases, embedding, start state)")
    grad_clip: float = _opt(1.0, "clip the global gradient norm to this")
    max_steps: int = _opt(2000, "optimiser steps; defines the whole learning-rate schedule")
    max_minutes: float | None = _opt(None, "stop (with a checkpoint) after this many minutes; --resume continues")
    time_budget: float | None = _opt(None, "minutes of training in all, --resume sessions included: the cosine "
                                           "schedule follows whichever of steps and time runs out first, and the run "
                                           "ends (finished) when the time is spent")
    max_vocab: int | None = _opt(None, "keep the N most frequent characters; every other one becomes one unknown "
                                       "symbol (named in the card; generation never emits it)")
    val_chars: int | None = _opt(None, "the last N characters of --data validate instead of the last 10%% (a "
                                       "validation text appended to the training text)")
    sample_chars: int = _opt(200, "at each evaluation, sample this many characters into metrics.jsonl (0: none)")
    eval_every: int = _opt(100, "validate (whole split), log, keep the best weights and checkpoint every N steps")
    seed: int = _opt(1337, "seed of the initial weights, the epochs' offsets, fresh starts and dropout")
    device: str = _opt("auto", "auto = CUDA when available; under torchrun each process uses cuda:LOCAL_RANK")
    threads: int | None = _opt(None, "torch CPU threads per process (default: torch's; torchrun sets 1 per process)")
    resume: bool = _opt(False, "continue from the run's latest checkpoint (also under torchrun, any process count)")


def lr_at(step: int, c: TrainConfig, time_frac: float = 0.0) -> float:
    """Linear warm-up to c.lr, then cosine decay to c.min_lr at c.max_steps (or, with a time budget,
    at whichever of the steps and the time runs out first: time_frac is the budget's spent share)."""
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    t = min(1.0, max((step - c.warmup) / max(1, c.max_steps - c.warmup), time_frac))
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * t))


def make_optimizer(model: CharRNN, c: TrainConfig) -> torch.optim.Optimizer:
    # Decay matrices only: biases, the embedding table and the start state are not "weights"
    # worth shrinking.
    def decays(n, p):
        return p.dim() >= 2 and not n.startswith("embed") and n not in model.start_names
    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    rest = [p for n, p in model.named_parameters() if not decays(n, p)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=c.lr, betas=(0.9, 0.99))


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary (then it checkpoints).

    Alone, a second Ctrl-C leaves at once. Under torchrun it does not: the launcher forwards the
    terminal's signal to every worker a moment after the terminal did, and kills them itself
    if they outstay its grace period."""

    def __init__(self, escalate: bool = True):
        self.set, self.escalate = False, escalate
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.set and self.escalate:  # the last checkpoint is intact (atomic writes)
            raise KeyboardInterrupt
        self.set = True


@dataclass
class Progress:
    """What the loop advances and a checkpoint restores (besides model, optimiser and data)."""
    step: int = 0
    best: dict | None = None
    wall_before: float = 0.0      # seconds spent in earlier (resumed) sessions
    resumed: int = 0
    history: list = field(default_factory=list)
    t0: float = field(default_factory=time.time)

    def wall(self) -> float:
        return self.wall_before + time.time() - self.t0


@dataclass
class Setup:
    """What train() sets up once: the phases below take it whole, not ten arguments each."""
    c: TrainConfig
    d: distributed.Dist
    cfg: ModelConfig
    corpus: Corpus
    model: CharRNN
    opt: torch.optim.Optimizer
    batcher: StreamBatcher
    rows: tuple[int, int]  # this rank's streams of the global batch: [lo, hi)
    out: Path              # the weights prefix
    ckpt_path: Path
    metrics_path: Path
    command: str           # the command line recorded in the card


# --- phases -------------------------------------------------------------------------------------
def restore(ck: dict, s: Setup) -> tuple[Progress, State | None]:
    """Load a checkpoint (the same one on every rank). The streams' state and model are global, so
    a checkpoint written by any number of processes resumes under any other. Checkpoints from
    before the cell switch name no cell (an LSTM) and keep the state under "lstm_state"."""
    c, d = s.c, s.d
    if ModelConfig.from_dict(ck["model_config"]) != s.cfg or ck["data_sha256"] != s.corpus.sha256:
        raise SystemExit("the checkpoint belongs to another model or corpus; not resuming")
    if (ck["train_config"]["batch_size"], ck["train_config"]["seq_len"]) != (c.batch_size, c.seq_len):
        raise SystemExit("the checkpoint was trained with another --batch-size/--seq-len; not resuming")
    s.model.load_state_dict(ck["model"])
    s.opt.load_state_dict(ck["optimizer"])
    s.batcher.load_state_dict(ck["batcher"])
    run = Progress(step=ck["step"], best=ck["best"], wall_before=ck["wall_time"], resumed=ck["resumed"] + 1)
    saved = ck["state"] if "state" in ck else ck["lstm_state"]
    state = State(saved).rows(slice(*s.rows)).to(d.device) if saved else None
    # RNG states (dropout masks): each rank's own when the world size is unchanged; otherwise rank
    # 0 continues the single stream and the others draw fresh ones from (seed, rank, step).
    same_world = len(ck.get("rng_cpu_ranks") or [ck["rng_cpu"]]) == d.world
    if same_world or d.main:
        torch.set_rng_state((ck.get("rng_cpu_ranks") or [ck["rng_cpu"]])[d.rank] if same_world else ck["rng_cpu"])
        cuda_states = ck.get("rng_cuda_ranks") or [ck.get("rng_cuda")]
        if d.device.type == "cuda" and cuda_states[0] is not None:
            torch.cuda.set_rng_state(cuda_states[d.rank] if same_world else cuda_states[0])
    else:
        torch.manual_seed(c.seed + d.rank + 1_000_003 * run.step)
    return run, state


def save_checkpoint(s: Setup, run: Progress, state: State | None) -> None:
    """Collective (every rank calls it): gathers the streams' states and RNG states; rank 0 writes."""
    c, d = s.c, s.d
    streams = state.detach().map(lambda p: distributed.gather_rows(d, p, *s.rows, c.batch_size).cpu()) if state else None
    rng = distributed.gather_bytes(d, torch.get_rng_state())
    rng_cuda = distributed.gather_bytes(d, torch.cuda.get_rng_state()) if d.device.type == "cuda" else None
    if not d.main:
        return
    save_training_state(s.ckpt_path, {
        "model": s.model.state_dict(), "optimizer": s.opt.state_dict(), "batcher": s.batcher.state_dict(),
        "step": run.step, "best": run.best, "wall_time": run.wall(), "resumed": run.resumed,
        "state": streams.tensors() if streams else None, "rng_cpu": rng[0], "rng_cuda": rng_cuda[0] if rng_cuda else None,
        "rng_cpu_ranks": rng, "rng_cuda_ranks": rng_cuda, "world_size": d.world, "backend": d.backend,
        "model_config": s.cfg.to_dict(), "data_sha256": s.corpus.sha256, "train_config": asdict(c)})


def model_card(s: Setup, run: Progress, val: dict) -> dict:
    c, d, corpus, command = s.c, s.d, s.corpus, s.command
    n_train = corpus.n_train
    capped = {"unknown": corpus.unknown} if corpus.unknown else {}  # the server never generates it
    return {**capped, "training": {
        "data": Path(c.data).name, "data_chars": len(corpus.ids), "data_bytes": corpus.path.stat().st_size,
        "data_sha256": corpus.sha256,
        "split": {**({"train": "first 90% of characters", "val": "last 10% of characters"} if not c.val_chars else
                     {"train": "the training text", "val": "the validation text (after the training text)"}),
                  "train_chars": n_train, "val_chars": len(corpus.ids) - n_train},
        "step": run.step, "max_steps": c.max_steps, "chars_seen": run.step * c.batch_size * c.seq_len,
        "best_val_loss": val["loss"], "best_val_bpc": val["bpc"], "wall_time_s": round(run.wall(), 1),
        "device": str(d.device), "device_name": torch.cuda.get_device_name() if d.device.type == "cuda" else "cpu",
        "world_size": d.world, "backend": d.backend, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "command": command, "resumed": run.resumed, "config": asdict(c),
        **({"max_vocab": c.max_vocab, "dropped_chars": corpus.dropped} if c.max_vocab else {}),
        **(init_record(c.init, run.step * c.batch_size * c.seq_len) if c.init else {})}}


def next_batch(batcher, model: CharRNN, state, c: TrainConfig, step: int, rows, device):
    """This rank's rows of the next window, and the state they start from."""
    lo, hi = rows
    xb, yb, fresh = batcher.next()  # (B, T) global: cheap to cut, and the layout stays the one of 1 process
    x, y = torch.from_numpy(xb[lo:hi]).to(device), torch.from_numpy(yb[lo:hi]).to(device)
    if fresh or state is None:  # a new epoch re-lays the streams: start from the start state
        state = model.init_hidden(hi - lo, device)
    elif c.reset_prob:
        # Fresh starts: some streams forget their past and read this window from the start
        # state, as a prompt with nothing before it is read; the start state learns from these rows.
        # Drawn over the global batch from (seed, step): any process count, and a resumed run,
        # restart the same streams.
        restart = np.random.default_rng([c.seed, step]).random(c.batch_size) < c.reset_prob
        state = model.restart_rows(state, torch.from_numpy(restart[lo:hi]).to(device))
    return x, y, state


def train_step(net, opt, x, y, state, weight: float, c: TrainConfig, amp):
    """One optimiser step on this rank's rows -> (their mean loss, the carried state).

    DDP averages gradients over ranks; weight = rows x world / batch makes that average the
    gradient of the global mean when shares are unequal (it is exactly 1 when they are equal)."""
    with amp:
        logits, state = net(x, state)  # logits: (b, T, V), b = this rank's rows
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    opt.zero_grad(set_to_none=True)
    (loss * weight if weight != 1.0 else loss).backward()
    # Recurrent gradients can spike on an unusual window; clipping the global norm keeps one
    # such step from throwing the weights far off (the classic exploding-gradient guard).
    torch.nn.utils.clip_grad_norm_(net.parameters(), c.grad_clip)
    opt.step()
    return loss.item(), state.detach()  # keep the values, cut the graph: truncated BPTT


def validate_and_log(s: Setup, run: Progress, meter: dict, bar) -> None:
    """Rank 0: loss on the whole validation split, a metrics line, the best weights so far."""
    c, model, corpus = s.c, s.model, s.corpus
    val = report(*evaluate_ids(model, corpus.split("val"), s.d.device))
    now = time.time()
    # the rate the last step applied (with --time-budget it follows the time, not the step count)
    rec = {"step": run.step, "chars": run.step * c.batch_size * c.seq_len, "lr": s.opt.param_groups[0]["lr"],
           "train_loss": meter["loss"] / meter["n"], "val_loss": val["loss"], "val_bpc": val["bpc"],
           "chars_per_s": meter["n"] * c.batch_size * c.seq_len / (now - meter["t"]),
           "wall_time_s": round(run.wall(), 1)}
    if c.sample_chars:  # as char-rnn's training log: what the model writes now
        rec["sample"] = sample_text(model, corpus, c.sample_chars, seed=run.step)
    run.history.append(rec)
    with open(s.metrics_path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if run.best is None or val["loss"] < run.best["loss"]:
        run.best = {**val, "step": run.step}
        save_weights(model, corpus.vocab, s.out, model_card(s, run, val))
    bar.set_postfix(train=f"{rec['train_loss']:.3f}", val=f"{val['loss']:.3f}",
                    best=f"{run.best['loss']:.3f}", cps=f"{rec['chars_per_s']:.0f}")


def sample_text(model: CharRNN, corpus, n: int, seed: int) -> str:
    """n characters sampled (temperature 0.8) from the training model itself, in eval mode (no
    dropout) and without gradients, its mode restored after, as evaluate_ids does. Training reads
    nothing it touches: the draws come from its own random.Random(seed) (model/generate.py), never
    torch's RNG, and the inference kernels it builds are cached beside the parameters, rebuilt
    when they change (CharRNN._cached); so a resumed run is still the same run."""
    from model.generate import generate
    from model.sampling import SamplingParams

    ban = ((corpus.vocab.index(corpus.unknown), -100.0),) if corpus.unknown else ()
    was_training = model.training
    model.eval()
    try:
        text, _ = generate(model, corpus.vocab, "", n, SamplingParams(temperature=0.8, logit_bias=ban), seed)
    finally:
        model.train(was_training)
    return text


def train(c: TrainConfig, command: str = "") -> dict:
    # -- setup: process group, seeds, data, model ---------------------------------------------
    d = distributed.setup(c.device)
    if c.threads:
        torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed)  # the same initial weights on every rank
    out = weights_prefix(c.out)
    run_dir = Path(c.run_dir or Path("runs") / out.name)
    ckpt_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    corpus = load_corpus(c.data, c.max_vocab, c.val_chars)
    train_ids = corpus.split("train")
    if c.init:  # the shape is the init weights'; the regularisation stays this run's
        shape = load_card(c.init)["config"]
        c.cell, c.embed, c.hidden, c.layers = shape.get("cell", "lstm"), shape["embed"], shape["hidden"], shape["layers"]
    cfg = ModelConfig(vocab_size=len(corpus.vocab), embed=c.embed, hidden=c.hidden, layers=c.layers,
                      dropout=c.dropout, weight_drop=c.weight_drop, cell=c.cell)
    model = CharRNN(cfg).to(d.device)
    if d.rank:  # rank 0 keeps the single-process random stream; the others draw their own dropout masks
        torch.manual_seed(c.seed + d.rank)
    opt = make_optimizer(model, c)
    batcher = StreamBatcher(train_ids, c.batch_size, c.seq_len, c.seed)
    rows = distributed.share(c.batch_size, d.rank, d.world)
    weight = (rows[1] - rows[0]) * d.world / c.batch_size
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    s = Setup(c=c, d=d, cfg=cfg, corpus=corpus, model=model, opt=opt, batcher=batcher, rows=rows, out=out,
              ckpt_path=ckpt_path, metrics_path=metrics_path, command=command)

    # -- resume: rank 0 reads the checkpoint, every rank restores it --------------------------
    run, state = Progress(), None
    ck = load_training_state(ckpt_path) if c.resume and d.main and ckpt_path.exists() else None
    ck = distributed.broadcast(d, ck) if c.resume else None
    if ck is not None:
        run, state = restore(ck, s)
        if d.main:
            print(f"resuming from {ckpt_path} at step {run.step}/{c.max_steps}", file=sys.stderr)
            if metrics_path.exists():  # drop log lines written after the checkpoint we resume from
                lines = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()]
                run.history = [h for h in lines if h["step"] <= run.step]
    elif c.init:  # a fresh run from trained weights (the same on every rank)
        init_from(model, corpus.vocab, c.init)
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(metrics_path, "".join(json.dumps(h) + "\n" for h in run.history))
    # Without --reset-prob the start state joins the graph only on an epoch's first
    # window (the same window on every rank): DDP must look for unused parameters, and then
    # leaves their grads None, as one process does. With it, the start state is in every step's graph.
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
        find_unused_parameters=not c.reset_prob) if d.on else model

    # -- the loop -------------------------------------------------------------------------------
    from tqdm import tqdm
    stop = StopFlag(escalate=not d.on)
    meter = {"loss": 0.0, "n": 0, "t": time.time()}
    bar = tqdm(total=c.max_steps, initial=run.step, dynamic_ncols=True, mininterval=2.0, disable=not d.main)
    model.train()
    budget_spent = signalled = False
    # With a time budget the learning rate follows the wall time: rank 0's, agreed on by every rank
    # (here, then at each step's all-reduce), so all replicas apply the same rate. DDP averages
    # gradients but never re-syncs weights: ranks that each read their own clock drift apart.
    wall = distributed.all_sum(d, [run.wall() if d.main else 0.0])[0] if c.time_budget else 0.0
    while run.step < c.max_steps:
        time_frac = wall / (60 * c.time_budget) if c.time_budget else 0.0
        for g in opt.param_groups:
            g["lr"] = lr_at(run.step, c, time_frac)
        x, y, state = next_batch(batcher, model, state, c, run.step, rows, d.device)
        loss, state = train_step(net, opt, x, y, state, weight, c, amp)
        run.step += 1
        # One small all-reduce per step: the global mean loss, whether any rank must stop (a
        # signal or --max-minutes) and whether any was signalled, and rank 0's wall time; so all
        # ranks leave the loop at the same step and take the same (collective) branches below.
        # torchrun signals its workers at slightly different moments: only the shared values decide.
        sig = stop.set  # read once: a signal landing in between would make the two disagree
        local_stop = sig or bool(c.max_minutes and time.time() - run.t0 > 60 * c.max_minutes)
        share_of_mean = loss * (rows[1] - rows[0]) / c.batch_size if d.on else loss  # alone: the loss as is
        loss, stops, signals, wall = distributed.all_sum(
            d, [share_of_mean, float(local_stop), float(sig), run.wall() if d.main else 0.0])
        budget_spent = bool(c.time_budget and wall > 60 * c.time_budget)
        signalled = bool(signals)
        meter["loss"], meter["n"] = meter["loss"] + loss, meter["n"] + 1
        bar.update(1)
        if run.step % c.eval_every == 0 or run.step == c.max_steps or (budget_spent and not signalled):
            if d.main:
                validate_and_log(s, run, meter, bar)
            save_checkpoint(s, run, state)
            meter = {"loss": 0.0, "n": 0, "t": time.time()}
        if stops or budget_spent:
            break

    # -- finish ---------------------------------------------------------------------------------
    bar.close()
    # A signal in the step that spent the budget stops the run (no evaluation then: it is asked to
    # leave), and a stopped run checkpoints where it stopped, so --resume loses nothing.
    finished = run.step >= c.max_steps or (budget_spent and not signalled)
    if not finished:
        if run.step % c.eval_every:  # (an evaluation step has just checkpointed)
            save_checkpoint(s, run, state)
        if d.main:
            print(f"stopped at step {run.step}/{c.max_steps}; rerun with --resume to continue", file=sys.stderr)
    if d.main and run.history:
        try:
            from model.plot import plot_history
            plot_history(run.history, out.with_suffix(".png"), title=f"{out.name}: {cfg.layers}x{cfg.hidden} {cfg.cell.upper()}")
        except ImportError:  # matplotlib is the optional [train] extra
            print("matplotlib not installed: no loss-curve PNG (pip install '.[train]')", file=sys.stderr)
    if d.main:  # whether this run is over (a supervisor such as jobs/runner.py reads it) or only paused
        atomic_write_text(run_dir / "result.json", json.dumps(
            {"finished": finished, "step": run.step, "max_steps": c.max_steps, "best": run.best,
             "reason": "max_steps" if run.step >= c.max_steps else "time_budget" if finished else "stopped"}) + "\n")
    if d.main and run.best:
        print(f"best val loss {run.best['loss']:.4f} nats/char ({run.best['bpc']:.4f} bpc) at step "
              f"{run.best['step']} -> {out}.safetensors")
    # DDP's reducer holds the process group (and gloo's work): free it while the interpreter is
    # whole, not at its exit, where a rank was seen to abort ("terminate called without an
    # active exception") after a clean run.
    del net
    gc.collect()
    distributed.teardown(d)
    return {"step": run.step, "best": run.best, "history": run.history, "world_size": d.world, "finished": finished}


def parse_args(argv=None) -> TrainConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, f in TrainConfig.__dataclass_fields__.items():
        flag, help = "--" + name.replace("_", "-"), f.metadata["help"]
        if name in ("data", "out"):
            ap.add_argument(flag, required=True, help=help)
        elif name == "resume":
            ap.add_argument(flag, action="store_true", help=help)
        elif name == "cell":
            ap.add_argument(flag, default=f.default, choices=list(CELLS), help=help)
        elif name == "device":
            ap.add_argument(flag, default="auto", choices=["auto", "cpu", "cuda"], help=help)
        else:
            typ = {"run_dir": str, "init": str, "max_minutes": float, "threads": int, "time_budget": float,
                   "max_vocab": int, "val_chars": int}.get(name) or type(f.default)
            ap.add_argument(flag, type=typ, default=f.default, help=f"{help} (default: {f.default})")
    return TrainConfig(**vars(ap.parse_args(argv)))


def launch_command(argv: list[str]) -> str:
    """The command line to record in the card (without --resume): torchrun's when launched by it."""
    args = [a for a in argv if a != "--resume"]
    if not distributed.launched_by_torchrun():
        return shlex.join(["python", "-m", "model.train", *args])
    world, local = int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    return shlex.join(["torchrun", f"--nnodes={world // max(1, local)}", f"--nproc_per_node={local}",
                       "-m", "model.train", *args])


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    return train(parse_args(argv), launch_command(argv))


if __name__ == "__main__":
    main()
