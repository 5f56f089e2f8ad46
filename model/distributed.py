"""Data-parallel training across processes: torch.distributed as launched by torchrun.

    torchrun --standalone --nproc_per_node=N -m model.train ...      (one machine)
    torchrun --nnodes=M --node-rank=R --rdzv-endpoint=HOST:PORT --nproc_per_node=N -m model.train ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `python -m model.train` has none of them
and runs alone (world size 1, no process group, exactly the single-process code path).

The backend follows the device: NCCL for CUDA (one GPU per process, cuda:LOCAL_RANK), gloo for
CPU. Every rank holds the whole model; each owns a contiguous share of the global batch's streams
(`share`), so 1 or N processes walk the same streams in the same order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from model.checkpoint import pick_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None      # None: not launched by torchrun (no process group)
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and prints progress."""
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.backend is not None


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (else a world of one) and pick the device."""
    if not launched_by_torchrun():
        return Dist(device=pick_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return Dist(rank, world, local, backend, dev)


def teardown(d: Dist) -> None:
    if d.on and dist.is_initialized():
        # Leave together: rank 0 still plots and prints after the last collective, and a rank that
        # tore gloo down and exited meanwhile was seen to abort ("terminate called without an
        # active exception", exit -6) and fail the whole torchrun job.
        dist.barrier()
        dist.destroy_process_group()


def share(batch: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch that `rank` owns: contiguous, sizes differing by at most one.

    Contiguous so each rank's streams are whole streams of the single-process layout (TBPTT
    carries each stream's state from window to window; a shuffling sampler would break that).
    """
    if world > batch:
        raise SystemExit(f"--batch-size {batch} is the global number of streams: it needs at least "
                         f"one per process, and there are {world} processes")
    base, extra = divmod(batch, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def all_sum(d: Dist, values: list[float]) -> list[float]:
    """Sum a few numbers over the ranks (float64); identity in a world of one."""
    if not d.on:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(d: Dist, local: torch.Tensor, lo: int, hi: int, batch: int, dim: int = 1) -> torch.Tensor:
    """The global tensor whose rows [lo, hi) along `dim` are each rank's `local`, on every rank.

    A sum of zero-padded shares: ranks may own unequal shares, which all_gather does not take.
    """
    shape = list(local.shape)
    shape[dim] = batch
    full = torch.zeros(shape, dtype=local.dtype, device=d.device)
    full.narrow(dim, lo, hi - lo).copy_(local)
    if d.on:
        dist.all_reduce(full)
    return full


def gather_bytes(d: Dist, t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of an equal-sized uint8 tensor (an RNG state), rank order, on every rank."""
    if not d.on:
        return [t]
    # NCCL moves CUDA tensors only; gloo takes either. Sent as int32 values, one per byte.
    x = t.to(d.device, torch.int32)
    out = [torch.empty_like(x) for _ in range(d.world)]
    dist.all_gather(out, x)
    return [o.to("cpu", torch.uint8) for o in out]


def broadcast(d: Dist, obj):
    """Rank 0's Python object on every rank (the resumed checkpoint, read by rank 0 only).

    It is pickled between the job's own processes: the file itself was read with
    weights_only=True on rank 0, so nothing untrusted is unpickled.
    """
    if not d.on:
        return obj
    box = [obj if d.main else None]
    dist.broadcast_object_list(box, src=0, device=d.device if d.device.type == "cuda" else None)
    return box[0]
