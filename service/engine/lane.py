"""One model's share of the engine (Lane): its weights, vocabulary, prefix cache, waiting
sequences and decode batch. The engine thread (service/engine/engine.py) runs every lane's turns;
a lane never starts a thread, takes a lock or reads HTTP.

A turn of a lane: run one chunk of prompt prefill for the newcomers (whole-sequence recurrent core,
batched), move finished prefills into the decode batch, then one decode step for the whole batch:
sample a character per row (each row with its own settings and its own RNG), drop the rows that
finished, and feed the rest back through the model. Results travel to the HTTP threads as typed
events (service/engine/sequence.py) on one queue per request.
"""
from __future__ import annotations

import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from model.generate import context_ids
from model.network import CharRNN
from model.state import State
from model.sampling import BatchParams, SamplingParams, batch_params, sample_batch, token_logprobs
from model.vocab import Vocab
from service.engine.prefix_cache import PrefixCache
from service.engine.sequence import Logits, Sequence, failed, timed_out

log = logging.getLogger("charrnn.engine")


@dataclass
class StepParams(BatchParams):
    """A batch's BatchParams plus the rows with per-step work, rebuilt when the rows change."""
    count_rows: torch.Tensor | None = None    # rows with presence/frequency penalties (their counts)
    constrained: list[int] = field(default_factory=list)  # rows with a regex
    allowed: torch.Tensor | None = None       # (B, V) bool, reused each step for the regex rows' masks
    logprob_rows: torch.Tensor | None = None  # rows that report logprobs
    logprob_k: int = 0                        # the most alternatives any of them asks for


class Lane:
    def __init__(self, model: CharRNN, vocab: Vocab, *, name: str = "model", max_batch: int = 64,
                 prefill_chunk: int = 256, prefix_cache: int = 1024, max_context: int = 0,
                 stream_interval: float = 0.0, metrics=None, unknown: str | None = None):
        self.name, self.model, self.vocab, self.metrics = name, model, vocab, metrics
        # A model trained with --max-vocab: the symbol every character outside its vocabulary reads as,
        # which generation never emits (service/core/completion.py bans it)
        self.unknown = unknown if unknown in vocab.chars else None
        self.max_batch, self.prefill_chunk = max_batch, prefill_chunk
        self.max_context = max_context  # a context read afresh is read from its last N ids (0: all)
        self.stream_interval = stream_interval
        self.device = model.head.weight.device
        self.cache = PrefixCache(prefix_cache) if prefix_cache else None
        # One row of the start state, shared by every new sequence (a copy: no State is written into
        # in place, and if one were, the model's own start state would stay as trained). The lane
        # serves the weights it was given, as the prefix cache's states assume too.
        self._start = model.init_hidden(1, self.device).map(lambda p: p.detach().clone())
        self.pending: deque[Sequence] = deque()  # appended under the engine's lock
        self._prefilling: list[Sequence] = []
        self._batch: list[Sequence] = []
        self._state = self._logits = None  # the batch's State (B rows) and logits (B, V)
        self._params: StepParams | None = None  # the batch's sampling settings; rebuilt when rows change
        self.retired = False  # replaced by a reload or unloaded: takes no new sequences, finishes its own
        self.steps = 0

    def new_sequence(self, prompt_ids, *, params: SamplingParams, seed: int, max_new: int,
                     stops: list[str], deadline: float, events, index: int = 0,
                     stream: bool = True, **features) -> Sequence:
        """features: Sequence's logprobs, score_prompt, constraint (all off by default)."""
        return Sequence(ids=context_ids(self.vocab, prompt_ids), params=params, seed=seed, max_new=max_new,
                        stops=list(stops), deadline=deadline, events=events, index=index, stream=stream,
                        interval=self.stream_interval, **features)

    def active(self) -> int:
        return len(self._batch) + len(self._prefilling)

    def idle(self) -> bool:
        return not (self.pending or self._prefilling or self._batch)

    def admit(self) -> None:
        """Waiting sequences into the prefill group, up to max_batch rows (engine thread, under its lock)."""
        while self.pending and self.active() < self.max_batch:
            s = self.pending.popleft()
            if not s.cancelled:  # a client that left while queued takes no slot
                self._prefilling.append(s)

    def turn(self, use_threads) -> None:
        """One prefill chunk and one decode step. A failed turn never kills the engine, and fails only
        the sequences responsible. use_threads(rows) sets the torch threads for a turn of that many rows."""
        try:
            self._reap()
            if self._prefilling:
                use_threads(len(self._prefilling))
                self._prefill_turn()
        except Exception:
            log.exception("prefill turn failed; retrying its sequences one by one")
            self._isolate_prefill()
        try:
            if self._batch:
                use_threads(len(self._batch))
                self._decode_step()
        except Exception:
            log.exception("decode step failed; looking for the rows responsible")
            self._isolate_decode()

    def sequences(self) -> list[Sequence]:
        return list(self.pending) + self._prefilling + self._batch

    def _fail(self, s: Sequence):
        if s.done:  # already answered (or timed out): one ending per sequence
            return
        s.done = True
        s.emit(failed(s.index))

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
                s.emit(timed_out(s.index))
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
            logits, state = self.model(x, State.cat([s.state for s in todo]), last_only=not scoring,
                                       infer=True)
            for i, s in enumerate(todo):
                if s.score_prompt is not None:  # before s.logits moves on: it predicted x[i, 0]
                    s.score(logits[i], x[i])
                s.ids = s.ids[n:]
                s.state = state.rows(slice(i, i + 1))
                s.logits = logits[i:i + 1, -1]
            if self.metrics:  # after the rows took their results: a turn retried row by row counts once per row
                self.metrics.prefill(self.name, len(todo))
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
                s.emit(Logits(s.index, s.logits[0].tolist()))  # floats: the HTTP thread needs no torch op
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
            self.metrics.step(self.name, len(batch))
        self.steps += 1
        rows = [i for i, s in enumerate(batch) if not (s.done or s.cancelled)]
        self._keep(rows)
        if rows:
            if len(rows) < len(nxt):  # the usual step keeps every row: no gather then
                nxt = nxt.index_select(0, torch.tensor(rows))
            x = nxt.to(self.device)[:, None]  # (B, 1)
            logits, self._state = self.model(x, self._state, infer=True)
            self._logits = logits[:, -1]
