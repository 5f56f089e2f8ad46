"""The engine: one scheduler thread per process that owns every loaded model and advances all
their sequences.

Why one thread for all models: torch work from a second thread gives that thread an OpenMP team of
its own, and libgomp, with more workers than cores, then parks every team's workers after each
parallel region (bench/threads.py). So the models share this thread's team: loading, warming up
and probing a model run here too, between turns (Engine.call).

Fairness: each pass of the loop gives every lane (model) with work one turn: one prefill chunk and
one decode step. A model with 64 streams advances them one character per pass, as a model with one
request does its one; neither waits for the other to drain.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future

import torch

from service.engine.lane import Lane
from service.engine.sequence import Sequence, shut_down

log = logging.getLogger("charrnn.engine")


class QueueFull(Exception):
    pass


class NotRunning(Exception):
    pass


class LaneRetired(NotRunning):
    """The lane was replaced (a reload) or unloaded after the caller looked it up: look it up again."""


class Engine:
    def __init__(self, *, max_queue: int = 256, threads: int = 0, on_idle=None, idle_delay: float = 1.0,
                 wide_batch: int = 16, metrics=None):
        self.max_queue = max_queue
        self.threads = threads  # torch threads of the engine thread (0: leave as is)
        # Cores something else on this machine needs now (a training job): the engine's OpenMP team
        # shrinks by as many, since a team member that shares its core with a busy process makes every
        # parallel region of a step wait for it (docs/training.md, serving while training). Set by
        # any thread; read at each turn.
        self.reserved = 0
        self.wide_batch = wide_batch  # turns over at least this many rows use all `threads`
        self.metrics = metrics
        self.on_idle = on_idle  # called (engine thread) once the engine has had no work for idle_delay s
        self.idle_delay = idle_delay
        self.lanes: list[Lane] = []  # served, and retired ones still finishing their sequences
        self._calls: deque[tuple[callable, Future]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="charrnn-engine", daemon=True)

    # --- called from other threads ------------------------------------------------------------
    def start(self) -> "Engine":
        self._thread.start()
        self._ready.wait(60)
        return self

    def stop(self, timeout: float = 5.0):
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        return self._thread.is_alive() and not self._stop

    @property
    def steps(self) -> int:
        return sum(lane.steps for lane in self.lanes)

    def queue_depth(self) -> int:
        return sum(len(lane.pending) for lane in self.lanes)

    def active(self) -> int:
        return sum(lane.active() for lane in self.lanes)

    def call(self, fn) -> Future:
        """Run fn() on the engine thread between turns (loading and warming up a model: its torch
        work belongs to this thread's OpenMP team); -> a Future of its result."""
        fut: Future = Future()
        with self._cond:
            if not self.ready:
                raise NotRunning
            self._calls.append((fn, fut))
            self._cond.notify()
        return fut

    def add(self, lane: Lane) -> None:
        """Serve a lane (a loaded, warmed-up model); its sequences are submitted with submit()."""
        with self._cond:
            if lane not in self.lanes:
                self.lanes.append(lane)

    def retire(self, lane: Lane) -> None:
        """No new sequences for this lane; it leaves the engine once its own have finished."""
        with self._cond:
            lane.retired = True
            self._cond.notify()  # an idle engine wakes to let the lane go (see _prune)

    def submit(self, lane: Lane, seqs: list[Sequence]) -> None:
        """Queue sequences atomically (all or none); QueueFull when they don't fit."""
        with self._cond:
            if not self.ready:
                raise NotRunning
            if lane.retired or lane not in self.lanes:
                raise LaneRetired
            if len(lane.pending) + len(seqs) > self.max_queue + max(0, lane.max_batch - lane.active()):
                raise QueueFull
            lane.pending.extend(seqs)
            self._cond.notify()

    # --- the scheduler thread -----------------------------------------------------------------
    def _idle(self) -> bool:
        return not self._calls and all(lane.idle() for lane in self.lanes)

    def _prune(self):
        """A retired lane with nothing left leaves: its model is freed with the last reference (under the lock)."""
        self.lanes = [lane for lane in self.lanes if not (lane.retired and lane.idle())]

    def _run(self):
        torch.set_grad_enabled(False)
        if self.threads:  # this thread's OpenMP team: the process's only one (see create_app)
            torch.set_num_threads(self.threads)
        self._ready.set()
        while True:
            if self.on_idle and self._idle():
                # Only after idle_delay with no work: a client sending one request after another
                # would otherwise meet the idle work (a heap trim, whose pages the next request
                # faults back in) before each request.
                with self._cond:
                    self._cond.wait_for(lambda: self._stop or not self._idle(), self.idle_delay)
                if self._idle() and not self._stop:
                    self.on_idle()  # outside the lock: submitters never wait for it
            with self._cond:
                self._prune()  # before waiting too: a lane that just finished its last sequence leaves now
                while not self._stop and self._idle():
                    self._cond.wait()
                    self._prune()
                if self._stop:
                    break
                calls = list(self._calls)
                self._calls.clear()
                lanes = [lane for lane in self.lanes if not lane.idle()]
                for lane in lanes:
                    lane.admit()
            for fn, fut in calls:
                self.use_threads(1)
                try:
                    fut.set_result(fn())
                except BaseException as e:  # the caller sees it; the engine goes on
                    fut.set_exception(e)
            for lane in lanes:  # one turn each: see the module's note on fairness
                lane.turn(self.use_threads)
        with self._cond:
            calls, self._calls = list(self._calls), deque()
        for _, fut in calls:
            fut.set_exception(NotRunning())
        for lane in self.lanes:
            for s in lane.sequences():
                s.emit(shut_down(s.index))

    def use_threads(self, rows: int):
        """All torch threads for a turn over at least wide_batch rows, one below that. On few
        cores the engine's second OpenMP thread competes with the HTTP threads and spin-waits on
        a core they need after each parallel region: that costs small turns more than it gains
        them, and wide batches less (docs/performance.md: /predict-next's p99 against 64
        clients' throughput, by thread count)."""
        if self.threads > 1:
            wide = max(1, self.threads - self.reserved)
            torch.set_num_threads(wide if rows >= self.wide_batch else 1)


def warm_up(lane: Lane, precisions: list[str], probed: dict, use_threads=None) -> dict:
    """On the engine thread: choose the lane's precision (measured once per model shape: `probed`
    maps a shape to its choice) and pack its weights and kernels before its first request, where
    they would add to its latency. use_threads: Engine.use_threads, so that each batch size is timed
    with the torch threads serving gives it. -> the probe's scores (us per step), {} when not measured."""
    from model.precision import probe_precision

    model, scores = lane.model, {}
    shape = (tuple(sorted(model.cfg.to_dict().items())), tuple(precisions))
    if shape in probed:
        model.set_precision(probed[shape][0])
        scores = probed[shape][1]
    elif len(precisions) > 1:  # CHARRNN_PRECISION=auto: the fastest on this machine, measured
        t0 = time.perf_counter()
        best, scores = probe_precision(model, precisions, threads_for=use_threads)
        probed[shape] = (best, scores)
        log.info("precision probe for %s (decode step, batch 1 + 16, us): %s -> %s in %.0f ms", lane.name,
                 scores, best, 1000 * (time.perf_counter() - t0))
    else:
        model.set_precision(precisions[0])
    x = torch.zeros(1, 8, dtype=torch.long, device=lane.device)
    # each path builds its kernels (packed weights; model/fused.py) on first use: here, not on a request
    _, state = model(x, infer=True)     # the prompt path
    model(x[:, :1], state, infer=True)  # the decode step
    return scores
