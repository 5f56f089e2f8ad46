"""Training throughput of a Char-RNN on this machine, against the sgemm roofline measured in the
same run.

    python bench/train_throughput.py [--hidden 512 --layers 2 --batch-size 64 --seq-len 128]
    python bench/train_throughput.py --nproc 2 [--threads 1]     # data-parallel scaling

fraction = 6 x params x chars/s / sgemm FLOP/s  (forward 2 FLOPs per weight per char, backward 4).
--nproc N: one process (plain training, as `python -m model.train`) against N processes training
one model with DistributedDataParallel (gloo on CPU, as under torchrun), the same global batch,
--threads threads each (default 1); scaling efficiency = chars/s(N) / (N x chars/s(1)).
Run it on a quiet machine: anything else on the cores changes both figures.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
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
    seconds = timed_steps(model, model, opt, x, steps)
    torch.backends.mkldnn.enabled = True
    return batch * seq * steps / seconds


def timed_steps(net, model, opt, x, steps: int, sync=lambda: None) -> float:
    """Seconds for `steps` training steps on x (B, T+1) after two untimed ones (they allocate and
    warm up). net: the model or its DDP wrapper; sync() runs before the clock starts and stops."""
    state = None
    for i in range(steps + 2):
        if i == 2:
            sync()
            t = time.perf_counter()
        logits, state = net(x[:, :-1], state)
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state = state.detach()  # keep the values, cut the graph: truncated BPTT
    sync()
    return time.perf_counter() - t


def ddp_worker(rank: int, world: int, port: int, cfg: ModelConfig, batch: int, seq: int, steps: int,
               threads: int, results) -> None:
    """One rank: its contiguous share of the global batch, DDP over gloo (world 1: plain training)."""
    import torch.distributed as dist
    from model.distributed import share

    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    lo, hi = share(batch, rank, world)
    torch.manual_seed(0)
    model = CharRNN(cfg).train()
    # as model.train without --reset-prob: the start state (h0, c0) is unused after the first window
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    opt = make_optimizer(model, TrainConfig(data="", out=""))
    x = torch.randint(0, cfg.vocab_size, (hi - lo, seq + 1))
    # all ranks start and stop the clock together
    seconds = timed_steps(net, model, opt, x, steps, sync=dist.barrier if world > 1 else lambda: None)
    if rank == 0:
        results.put(batch * seq * steps / seconds)
    if world > 1:
        dist.destroy_process_group()


def data_parallel_chars_per_s(cfg: ModelConfig, world: int, batch: int, seq: int, steps: int, threads: int) -> float:
    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(ddp_worker, args=(world, port, cfg, batch, seq, steps, threads, results),
                       nprocs=world, join=True, start_method="spawn")
    return results.get()


def scaling(args, cfg: ModelConfig, params: int) -> None:
    threads = args.threads or 1
    rows = []
    for world in (1, args.nproc):
        cps = data_parallel_chars_per_s(cfg, world, args.batch_size, args.seq_len, args.steps, threads)
        rows.append({"processes": world, "threads_each": threads, "chars_per_s": round(cps)})
    base = rows[0]["chars_per_s"]
    for r in rows:
        r["speedup"] = r["chars_per_s"] / base
        r["scaling_efficiency"] = r["chars_per_s"] / (r["processes"] * base)
    print(f"{args.layers}x{args.hidden} LSTM, {params:,} params, global batch {args.batch_size}x{args.seq_len}, "
          f"{threads} thread(s) per process, DDP over gloo; {os.cpu_count()} cores")
    print(f"{'processes':>9} {'chars/s':>9} {'speedup':>8} {'efficiency':>11}")
    for r in rows:
        print(f"{r['processes']:>9} {r['chars_per_s']:>9,} {r['speedup']:>7.2f}x {r['scaling_efficiency']:>10.0%}")
    print(json.dumps({"params": params, "batch_size": args.batch_size, "seq_len": args.seq_len,
                      "steps": args.steps, "results": rows}))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embed", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="default: torch's (all cores); 1 with --nproc")
    ap.add_argument("--nproc", type=int, default=None,
                    help="compare 1 process with N data-parallel processes (DDP, gloo)")
    args = ap.parse_args()
    cfg = ModelConfig(args.vocab, args.embed, args.hidden, args.layers, 0.25)
    params = CharRNN(cfg).num_params()
    if args.nproc:
        return scaling(args, cfg, params)
    if args.threads:
        torch.set_num_threads(args.threads)
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
