"""Continuous-batching engine: one scheduler thread owns the model and advances every active
sequence together.

Each turn of the loop: admit waiting sequences (bounded queue), run one chunk of prompt prefill
for the newcomers (whole-sequence recurrent core, batched), move finished prefills into the decode batch,
then one decode step for the whole batch: sample a character per row (each row with its own
settings and its own RNG), drop the rows that finished, and feed the rest back through the
model. Results travel to the HTTP threads through one queue per request.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from model.precision import probe_precision
from model.generate import context_ids
from model.network import CharRNN
from model.state import State
from model.sampling import BatchParams, SamplingParams, batch_params, sample_batch, token_logprobs
from model.vocab import Vocab
from service.prefix_cache import PrefixCache
from service.sequence import Event, Sequence

log = logging.getLogger("charrnn.engine")


class QueueFull(Exception):
    pass


class NotRunning(Exception):
    pass


@dataclass
class StepParams(BatchParams):
    """A batch's BatchParams plus the rows with per-step work, rebuilt when the rows change."""
    count_rows: torch.Tensor | None = None    # rows with presence/frequency penalties (their counts)
    constrained: list[int] = field(default_factory=list)  # rows with a regex
    allowed: torch.Tensor | None = None       # (B, V) bool, reused each step for the regex rows' masks
    logprob_rows: torch.Tensor | None = None  # rows that report logprobs
    logprob_k: int = 0                        # the most alternatives any of them asks for


class Engine:
    def __init__(self, model: CharRNN, vocab: Vocab, *, max_batch: int = 64, max_queue: int = 256,
                 prefill_chunk: int = 256, metrics=None, prefix_cache: int = 1024, on_idle=None,
                 stream_interval: float = 0.0, threads: int = 0, max_context: int = 0,
                 precisions: list[str] | None = None, idle_delay: float = 1.0, wide_batch: int = 16):
        self.model, self.vocab, self.metrics = model, vocab, metrics
        self.threads = threads  # torch threads of the engine thread (0: leave as is)
        self.wide_batch = wide_batch  # turns over at least this many rows use all `threads`
        self.stream_interval = stream_interval
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        self.max_context = max_context  # a context read afresh is read from its last N ids (0: all)
        self.precisions = precisions or [model.precision]  # several: probed on the engine thread at start
        self.precision_probe: dict = {}  # precision -> decode-step score (us), when probed
        self.device = model.head.weight.device
        self.cache = PrefixCache(prefix_cache) if prefix_cache else None
        # One row of the start state, shared by every new sequence (a copy: no State is written into
        # in place, and if one were, the model's own start state would stay as trained). The engine
        # serves the weights it was given, as the prefix cache's states assume too.
        self._start = model.init_hidden(1, self.device).map(lambda p: p.detach().clone())
        self.on_idle = on_idle  # called (engine thread) once the engine has had no work for idle_delay s
        self.idle_delay = idle_delay
        self._pending: deque[Sequence] = deque()
        self._cond = threading.Condition()
        self._prefilling: list[Sequence] = []
        self._batch: list[Sequence] = []
        self._state = self._logits = None  # the batch's State (B rows) and logits (B, V)
        self._params: StepParams | None = None  # the batch's sampling settings; rebuilt when rows change
        self._stop = False
        self.steps = 0
        self._warm = threading.Event()
        self._thread = threading.Thread(target=self._run, name="charrnn-engine", daemon=True)

    # --- called from HTTP threads -------------------------------------------------------------
    def start(self) -> "Engine":
        """Start the scheduler thread; returns once it has warmed up (see _warm_up)."""
        self._thread.start()
        self._warm.wait(60)
        return self

    def stop(self, timeout: float = 5.0):
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        return self._thread.is_alive() and not self._stop

    def queue_depth(self) -> int:
        return len(self._pending)

    def active(self) -> int:
        return len(self._batch) + len(self._prefilling)

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences atomically (all or none); QueueFull when they don't fit."""
        with self._cond:
            if not self.ready:
                raise NotRunning
            if len(self._pending) + len(seqs) > self.max_queue + max(0, self.max_batch - self.active()):
                raise QueueFull
            self._pending.extend(seqs)
            self._cond.notify()

    def new_sequence(self, prompt_ids, *, params: SamplingParams, seed: int, max_new: int,
                     stops: list[str], deadline: float, events: queue.Queue, index: int = 0,
                     stream: bool = True, **features) -> Sequence:
        """features: Sequence's logprobs, score_prompt, constraint (all off by default)."""
        return Sequence(ids=context_ids(self.vocab, prompt_ids), params=params, seed=seed, max_new=max_new,
                        stops=list(stops), deadline=deadline, events=events, index=index, stream=stream,
                        interval=self.stream_interval, **features)

    # --- the scheduler thread -----------------------------------------------------------------
    def _warm_up(self):
        """Pack the inference weights and set up the recurrent kernels (and this thread's OpenMP team)
        before the first request instead of in it, where they would add to its latency."""
        try:
            if len(self.precisions) > 1:  # CHARRNN_PRECISION=auto: the fastest on this machine, measured
                t0 = time.perf_counter()
                best, self.precision_probe = probe_precision(self.model, self.precisions)
                log.info("precision probe (decode step, batch 1 + 16, us): %s -> %s in %.0f ms",
                         self.precision_probe, best, 1000 * (time.perf_counter() - t0))
            x = torch.zeros(1, 8, dtype=torch.long, device=self.device)
            _, state = self.model(x)         # prefill path (whole-sequence LSTM)
            self.model(x[:, :1], state)      # decode step (builds the FusedStep)
        except Exception:  # a model that cannot run fails its first request, with the error logged
            log.exception("warm-up failed")
        finally:
            self._warm.set()

    def _run(self):
        torch.set_grad_enabled(False)
        if self.threads:  # this thread's OpenMP team: the process's only one (see create_app)
            torch.set_num_threads(self.threads)
        self._warm_up()
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
                while not self._stop and self._idle():
                    self._cond.wait()
                if self._stop:
                    break
                while self._pending and len(self._batch) + len(self._prefilling) < self.max_batch:
                    s = self._pending.popleft()
                    if not s.cancelled:  # a client that left while queued takes no slot
                        self._prefilling.append(s)
            # A failed turn never kills the engine, and fails only the sequences responsible.
            try:
                self._reap()
                if self._prefilling:
                    self._use_threads(len(self._prefilling))
                    self._prefill_turn()
            except Exception:
                log.exception("prefill turn failed; retrying its sequences one by one")
                self._isolate_prefill()
            try:
                if self._batch:
                    self._use_threads(len(self._batch))
                    self._decode_step()
            except Exception:
                log.exception("decode step failed; looking for the rows responsible")
                self._isolate_decode()
        for s in list(self._pending) + self._prefilling + self._batch:
            s.emit(Event.SHUTDOWN, "server shutting down")

    def _use_threads(self, rows: int):
        """All torch threads for a turn over at least wide_batch rows, one below that. On few
        cores the engine's second OpenMP thread competes with the HTTP threads and spin-waits on
        a core they need after each parallel region: that costs small turns more than it gains
        them, and wide batches less (README, Performance: /predict-next's p99 against 64
        clients' throughput, by thread count)."""
        if self.threads > 1:
            torch.set_num_threads(self.threads if rows >= self.wide_batch else 1)

    def _idle(self) -> bool:
        return not (self._pending or self._prefilling or self._batch)

    def _fail(self, s: Sequence):
        if s.done:  # already answered (or timed out): one ending per sequence
            return
        s.done = True
        s.emit(Event.ERROR, "internal error")

    def _isolate_prefill(self):
        """A batched prefill chunk failed: run each of its sequences alone and fail only those that
        fail alone. Retrying is safe: a sequence's ids and state advance only after its forward
        pass succeeded, and prefill results do not depend on batch-mates or chunk boundaries."""
        group, still = self._prefilling, []
        for s in group:
            self._prefilling = [s]
            try:
                self._prefill_turn()
                still += self._prefilling
            except Exception:
                log.exception("a sequence failed its prefill alone")
                self._fail(s)
        self._prefilling = still

    def _isolate_decode(self):
        """A decode step failed. Sample each row alone (a throwaway RNG, nothing pushed) to find
        the rows whose own settings or logits break the sampler; fail those and keep the rest. A row's
        own settings act in the parameter tensors and logit transforms, which run before any row
        draws its random number: after such a failure the survivors' next step is exactly the one
        they would have had without the culprits. When no row fails alone the fault is nobody's in particular: fail the batch."""
        V, bad = len(self.vocab), []
        for i, s in enumerate(self._batch):
            try:
                t = self._batch_params([s])  # logit bias and the rest, as the step builds them
                recent = torch.tensor([s.recent or [-1]], dtype=torch.long) if t.any_penalty else None
                ok = 0 <= int(sample_batch(self._logits[i:i + 1].float().cpu(), t, [random.Random(0)], recent)[0]) < V
            except Exception:
                ok = False
            if not ok:
                bad.append(i)
        for i in bad or range(len(self._batch)):
            self._fail(self._batch[i])
        if bad:
            self._keep([i for i, s in enumerate(self._batch) if not s.done])
        else:
            self._batch, self._state, self._logits, self._params = [], None, None, None

    def _reap(self):
        """Drop cancelled sequences and those past their deadline."""
        now = time.monotonic()
        for s in self._prefilling + self._batch:
            if not s.done and not s.cancelled and now > s.deadline:
                s.done = True
                s.emit(Event.TIMEOUT)
        self._prefilling = [s for s in self._prefilling if not (s.cancelled or s.done)]
        self._keep([i for i, s in enumerate(self._batch) if not (s.cancelled or s.done)])

    def _keep(self, rows: list[int]):
        if len(rows) == len(self._batch):
            return
        self._batch = [self._batch[i] for i in rows]
        self._params = None
        if not rows:
            self._state = self._logits = None
            return
        idx = torch.tensor(rows, device=self.device)
        self._state = self._state.rows(idx)
        self._logits = self._logits.index_select(0, idx)

    def _prefill_turn(self):
        """Advance every prefilling sequence by the same number of characters, batched."""
        group = self._prefilling
        for s in group:
            if s.state is None:
                s.context = s.ids
                # (echo scoring reads every character itself: no cache for it)
                hit = self.cache.get(s.ids) if self.cache and s.ids and s.score_prompt is None else None
                if hit and self.max_context and len(s.ids) - hit[0] > self.max_context:
                    hit = None  # more new text than the window: cheaper (and as good) read afresh
                if hit:  # the cached state carries the full context before it: continue from it
                    n, (s.state, s.logits) = hit
                    s.ids = s.ids[n:]
                else:
                    s.state = self._start
                    if self.max_context:
                        # The model uses only the last few dozen characters (bench/context.py):
                        # read the window from the start state; the cache still keys the whole context.
                        s.ids = s.ids[-self.max_context:]
                    if not s.ids:  # nothing to read at all: the head on the start state
                        s.logits = self.model.head_logits(s.state)
        todo = [s for s in group if s.ids]
        if todo:
            n = min(self.prefill_chunk, min(len(s.ids) for s in todo))
            x = torch.tensor([s.ids[:n] for s in todo], dtype=torch.long, device=self.device)
            # (G, n, V), or (G, 1, V) when no row scores its prompt: the head after the last position only
            scoring = any(s.score_prompt is not None for s in todo)
            logits, state = self.model(x, State.cat([s.state for s in todo]), last_only=not scoring)
            for i, s in enumerate(todo):
                if s.score_prompt is not None:  # before s.logits moves on: it predicted x[i, 0]
                    s.score(logits[i], x[i])
                s.ids = s.ids[n:]
                s.state = state.rows(slice(i, i + 1))
                s.logits = logits[i:i + 1, -1]
            if self.metrics:  # after the rows took their results: a turn retried row by row counts once per row
                self.metrics.prefill(len(todo))
            if self.cache:
                for s in todo:
                    if not s.ids:  # fully read: remember the state after this context
                        self.cache.put(s.context, s.state, s.logits)
        still = []
        for s in group:
            if s.ids:
                still.append(s)
            elif s.max_new == 0:  # /predict-next: the distribution is the answer
                s.done = True
                s.emit(Event.LOGITS, s.logits[0].tolist())  # floats: the HTTP thread needs no torch op
            else:
                self._join(s)
        self._prefilling = still

    def _join(self, s: Sequence):
        state, s.state = s.state, None
        if self._state is None:
            self._state, self._logits = state, s.logits
        else:
            self._state = State.cat([self._state, state])
            self._logits = torch.cat([self._logits, s.logits], 0)
        s.logits = None
        self._batch.append(s)
        self._params = None

    def _batch_params(self, batch: list[Sequence]) -> StepParams:
        """batch_params plus the rows with per-step work (presence/frequency counts, regex masks,
        logprobs); rebuilt only when the batch's rows change, so rows using none pay nothing."""
        V = len(self.vocab)
        t = StepParams(**vars(batch_params([s.params for s in batch], V)))
        counted = [i for i, s in enumerate(batch) if s.params.presence_penalty or s.params.frequency_penalty]
        for i in counted:
            if batch[i].counts is None:
                batch[i].counts = torch.zeros(V)
        t.count_rows = torch.tensor(counted, dtype=torch.long) if counted else None
        t.constrained = [i for i, s in enumerate(batch) if s.constraint is not None]
        t.allowed = torch.ones(len(batch), V, dtype=torch.bool) if t.constrained else None
        scored = [i for i, s in enumerate(batch) if s.logprobs is not None]
        t.logprob_rows = torch.tensor(scored, dtype=torch.long) if scored else None
        t.logprob_k = max((batch[i].logprobs for i in scored), default=0)
        return t

    def _sample(self, batch: list[Sequence], t: StepParams, raw: torch.Tensor) -> tuple[torch.Tensor, list]:
        """raw logits (B, V) on the CPU -> next ids (B,) and each row's logprob entry (None when off).
        Per-step features cost in proportion to the rows that use them (bench/decode.py)."""
        recent = counts = allowed = None
        if t.any_penalty:
            w = max(len(s.recent) for s in batch)
            recent = torch.tensor([s.recent + [-1] * (w - len(s.recent)) for s in batch], dtype=torch.long)
        if t.count_rows is not None:
            counts = torch.zeros(len(batch), len(self.vocab)).index_copy_(
                0, t.count_rows, torch.stack([batch[i].counts for i in t.count_rows.tolist()]))
        if t.constrained:
            allowed = t.allowed  # rows without a regex stay all True
            for i in t.constrained:
                allowed[i] = batch[i].constraint.allowed[batch[i].fsm]
        nxt = sample_batch(raw, t, [s.rng for s in batch], recent, counts, allowed)
        lps = [None] * len(batch)
        if t.logprob_rows is not None:  # the model's own distribution: before any transform
            rows = t.logprob_rows
            chosen, vals, top = token_logprobs(raw[rows], nxt[rows], t.logprob_k)
            for r, c, tv, ti in zip(rows.tolist(), chosen.tolist(), vals.tolist(), top.tolist()):
                k = batch[r].logprobs
                lps[r] = (c, list(zip(ti[:k], tv[:k])))
        return nxt, lps

    def _decode_step(self):
        batch = self._batch
        if self._params is None:
            self._params = self._batch_params(batch)
        nxt, lps = self._sample(batch, self._params, self._logits.float().cpu())
        ids = nxt.tolist()
        for s, i, lp in zip(batch, ids, lps):
            try:
                s.push(self.vocab.chars[i], i, lp)
            except Exception:  # this row's own text, stops or id broke: fail it alone
                log.exception("a sequence failed to take its character")
                self._fail(s)
        if self.metrics:
            self.metrics.step(len(batch))
        self.steps += 1
        rows = [i for i, s in enumerate(batch) if not (s.done or s.cancelled)]
        self._keep(rows)
        if rows:
            if len(rows) < len(nxt):  # the usual step keeps every row: no gather then
                nxt = nxt.index_select(0, torch.tensor(rows))
            x = nxt.to(self.device)[:, None]  # (B, 1)
            logits, self._state = self.model(x, self._state)
            self._logits = logits[:, -1]
