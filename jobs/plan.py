"""A fine-tuning job's plan: its hyperparameters checked and completed (plan), the name of the model it
will make (model_name), and the trainer's command line (train_args). Used by the web API when a job
is created (so a job that cannot train is refused at once) and by the runner when it starts one."""
from __future__ import annotations

import math
import re

SCRATCH = "scratch"  # the base `model` of a job that trains a new network, sized by its hyperparameters
BASE_LR = 2e-3       # model.train's --lr: learning_rate_multiplier scales it
UNBOUNDED = 1_000_000  # the steps planned for a job whose time budget alone sets its length
SUFFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,18}")
LIMITS = {"n_epochs": (1, 1000), "n_steps": (1, 1_000_000), "minutes": (0.05, 7 * 24 * 60), "batch_size": (1, 512),
          "seq_len": (8, 1024), "learning_rate_multiplier": (1e-3, 100.0), "max_vocab": (2, 65536),
          "hidden": (8, 2048), "layers": (1, 8), "embed": (4, 1024)}
DEFAULTS = {"batch_size": 16, "seq_len": 64, "hidden": 256, "layers": 2, "embed": 64, "cell": "lstm"}


class PlanError(ValueError):
    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param, self.message = param, message


def plan(hyper: dict, *, scratch: bool, train_chars: int) -> tuple[dict, int]:
    """OpenAI's hyperparameters ("auto" or a value: n_epochs, batch_size, learning_rate_multiplier) plus
    this server's (n_steps, minutes, seq_len, max_vocab; and hidden, layers, embed, cell from scratch)
    -> (the complete set, total optimiser steps). A length is n_steps, or n_epochs, or minutes (the
    time budget: steps then only bound it); without any, 3 epochs."""
    h = {k: v for k, v in (hyper or {}).items() if v is not None and v != "auto"}
    unknown = set(h) - set(LIMITS) - {"cell"}
    if unknown:
        raise PlanError(f"hyperparameters.{sorted(unknown)[0]}", f"unknown hyperparameter(s): {sorted(unknown)}")
    for k, v in h.items():
        if k == "cell":
            if scratch and v not in ("lstm", "gru", "rnn"):
                raise PlanError("hyperparameters.cell", "cell is lstm, gru or rnn")
            continue
        lo, hi = LIMITS[k]
        kind = float if k in ("minutes", "learning_rate_multiplier") else int
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)) or not lo <= v <= hi:
            raise PlanError(f"hyperparameters.{k}", f"{k} must be {'an integer' if kind is int else 'a number'} in "
                            f"[{lo}, {hi}] or \"auto\"")
        h[k] = kind(v)
    if not scratch and any(k in h for k in ("hidden", "layers", "embed", "cell")):
        raise PlanError("hyperparameters", "hidden, layers, embed and cell size a new network: only with model "
                        f"\"{SCRATCH}\"; a fine-tune keeps its base's shape")
    for k in ("batch_size", "seq_len") + (("hidden", "layers", "embed", "cell") if scratch else ()):
        h.setdefault(k, DEFAULTS[k])
    h.setdefault("learning_rate_multiplier", 1.0 if scratch else 0.5)
    from model.data import TRAIN_FRACTION  # (here: the trainer imports this module and holds no torch while idle)

    train = int(train_chars * TRAIN_FRACTION)
    need = h["batch_size"] * h["seq_len"] + h["seq_len"] + 1
    if train < need:
        raise PlanError("hyperparameters.batch_size", f"the training text (~{train} characters) is too short for "
                        f"batch_size {h['batch_size']} x seq_len {h['seq_len']} (needs {need}); lower them")
    per_epoch = max(1, train // (h["batch_size"] * h["seq_len"]))
    if "n_steps" in h:
        steps = h["n_steps"]
    elif "n_epochs" in h or "minutes" not in h:
        h.setdefault("n_epochs", 3)
        steps = math.ceil(h["n_epochs"] * per_epoch)
    else:  # a time budget alone: the steps only bound it
        steps = UNBOUNDED
    return h, int(steps)


def bounded_steps(job: dict) -> int | None:
    """The job's planned steps; None when its time budget alone sets its length."""
    return job["total_steps"] if job["total_steps"] and job["total_steps"] < UNBOUNDED else None


def model_name(base: str, suffix: str | None, job_id: str) -> str:
    """ft-BASE-SUFFIX-XXXXXXXX (a model id: letters, digits, . _ -; at most 64 characters)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", base)[:24]
    return "-".join(["ft", base] + ([suffix] if suffix else []) + [job_id.rsplit("-", 1)[-1][:8]])


def train_args(job: dict, *, data: str, out: str, run_dir: str, base_prefix: str | None, threads: int,
               val_chars: int | None) -> list[str]:
    """model.train's arguments for `job` (without --resume)."""
    h = job["hyperparameters"]
    steps = job["total_steps"]
    # about 20 evaluations a job (each a metrics event and a sample), never more often than every 10 steps;
    # with only a time budget, one every 25
    every = max(min(steps, 10), min(200, steps // 20)) if bounded_steps(job) else 25
    args = ["--data", data, "--out", out, "--run-dir", run_dir, "--device", "cpu", "--threads", str(threads),
            "--seed", str(job["seed"]), "--max-steps", str(steps), "--batch-size", str(h["batch_size"]),
            "--seq-len", str(h["seq_len"]), "--lr", repr(BASE_LR * h["learning_rate_multiplier"]),
            "--min-lr", repr(BASE_LR * h["learning_rate_multiplier"] / 20),
            "--warmup", str(min(100, max(1, steps // 10))), "--eval-every", str(every)]
    if "minutes" in h:
        args += ["--time-budget", repr(h["minutes"])]
    if base_prefix:
        args += ["--init", base_prefix, "--dropout", "0.1"]
    else:
        args += ["--cell", h["cell"], "--hidden", str(h["hidden"]), "--layers", str(h["layers"]),
                 "--embed", str(h["embed"]), "--dropout", "0.1"]
    if "max_vocab" in h:
        args += ["--max-vocab", str(h["max_vocab"])]
    if val_chars:
        args += ["--val-chars", str(val_chars)]
    return args
