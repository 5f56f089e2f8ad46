"""Why the service loads its weights with one torch thread: a decode step run in a second thread
(as the engine runs it), after the main thread did torch work with 1 thread or with N.

    python bench/threads.py [--weights weights/shakespeare] [--steps 4000] [--threads 2]

libgomp counts the workers of every thread's OpenMP team; with more workers than cores it
throttles its spin-wait and parks workers after each parallel region, so each step pays futex
wake-ups (context switches). Each case runs in a fresh process, since a team lives as long as
its thread. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_for_engine(weights: str):
    """The model in the leanest precision its card and this CPU allow (what the service's probe
    picks when that is also the fastest). Not the probe itself: its timed choice could differ
    between the fresh processes a comparison runs in."""
    sys.path.insert(0, str(ROOT))
    from model.checkpoint import load_weights
    from model.precision import candidate_precisions
    model, _, card = load_weights(weights)
    return model.set_precision(candidate_precisions("cpu", card)[-1])


def time_steps(model, threads: int, steps: int) -> dict:
    """On the calling thread, as the engine thread runs it: `threads` torch threads, 50 untimed
    batch-1 decode steps, then `steps` timed ones -> µs per step and the process's context switches."""
    import torch
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    x, state = torch.zeros(1, 1, dtype=torch.long), model.init_hidden(1)
    for _ in range(50):
        _, state = model(x, state, infer=True)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        _, state = model(x, state, infer=True)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"step_us": (time.perf_counter() - t0) / steps * 1e6,
            "switches": (r1.ru_nvcsw + r1.ru_nivcsw) - (r0.ru_nvcsw + r0.ru_nivcsw)}


def child(weights: str, steps: int, main_threads: int, threads: int) -> dict:
    import torch
    torch.set_num_threads(main_threads)  # the main thread's torch work (loading) with this many
    model = load_for_engine(weights)
    out = {}
    # the engine's situation: a second thread that sets its own thread count
    t = threading.Thread(target=lambda: out.update(time_steps(model, threads, steps)))
    t.start()
    t.join()
    return {"main_threads": main_threads, "precision": model.precision, **out}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/shakespeare")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the stepping thread")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.weights, args.steps, args.child, args.threads)))
        return
    rows = []
    for main_threads in (1, args.threads, 1, args.threads):  # twice each, alternating: this VM drifts
        out = subprocess.run([sys.executable, __file__, "--weights", args.weights, "--steps", str(args.steps),
                              "--threads", str(args.threads), "--child", str(main_threads)],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"batch-1 decode step in a second thread with {args.threads} torch threads, {args.steps} steps")
    print(f"{'main thread loaded with':>24} {'µs/step':>8} {'context switches':>17}")
    for r in rows:
        print(f"{str(r['main_threads']) + ' thread(s)':>24} {r['step_us']:>8.0f} {r['switches']:>17}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
