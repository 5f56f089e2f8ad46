"""What /inspect costs the engine: a batch-1 decode step in its own thread (as the engine runs
it, with the engine's torch threads), alone and while a second thread computes activations
(model/inspect.py) the way /inspect does, with one torch thread, or with the engine's count.

    python bench/inspect_cost.py [--weights weights/shakespeare] [--steps 3000] [--chars 500] [--threads 2]

Each case runs in a fresh process (an OpenMP team lives as long as its thread), the cases in
turn, twice. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("alone", "inspect 1 thread", "inspect N threads")


def child(weights: str, steps: int, chars: int, threads: int, case: str) -> dict:
    import torch
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from model.inspect import activations
    from threads import load_for_engine, time_steps
    torch.set_num_threads(1)  # create_app loads with one thread
    model = load_for_engine(weights)
    ids = torch.randint(0, model.cfg.vocab_size, (chars,)).tolist()
    out, stop, done = {}, threading.Event(), [0]

    def inspector():  # an HTTP thread serving /inspect requests back to back
        torch.set_num_threads(1 if case == "inspect 1 thread" else threads)
        while not stop.is_set():
            activations(model, ids)
            done[0] += 1

    helper = threading.Thread(target=inspector) if case != "alone" else None
    if helper:
        helper.start()
        time.sleep(0.5)  # its team (if any) exists before the engine starts stepping
    t = threading.Thread(target=lambda: out.update(time_steps(model, threads, steps)))  # the engine thread
    t0 = time.perf_counter()
    t.start()
    t.join()
    wall = time.perf_counter() - t0
    stop.set()
    if helper:
        helper.join()
    return {"case": case, **out, "inspections_per_s": done[0] / wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/shakespeare")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--chars", type=int, default=500, help="characters per inspection")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the engine thread")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.weights, args.steps, args.chars, args.threads, args.child)))
        return
    rows = []
    for case in CASES * 2:  # in turn, twice: this VM's speed drifts
        out = subprocess.run([sys.executable, __file__, "--weights", args.weights, "--steps", str(args.steps),
                              "--chars", str(args.chars), "--threads", str(args.threads), "--child", case],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"batch-1 decode step, engine thread with {args.threads} torch threads, {args.steps} steps; "
          f"beside it /inspect of {args.chars} characters back to back")
    print(f"{'case':>18} {'µs/step':>8} {'context switches':>17} {'inspections/s':>14}")
    for r in rows:
        print(f"{r['case']:>18} {r['step_us']:>8.0f} {r['switches']:>17} {r['inspections_per_s']:>14.2f}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
