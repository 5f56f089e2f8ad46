"""One completion as the engine runs it (Sequence), and what the engine tells its requester (Event).

A Sequence holds its own sampling settings and RNG, its text so far and the events it puts on its
request's queue; the engine (service/engine.py) advances it and never reads HTTP. Stop strings,
regex constraints, logprobs and penalties act through `push`, one sampled character at a time.
"""
from __future__ import annotations

import queue
import random
import time
from dataclasses import dataclass, field
from enum import StrEnum

import torch

from model.sampling import SamplingParams, find_stop, holdback, token_logprobs
from model.state import State


class Event(StrEnum):
    """The kinds of what the engine puts on a request's queue, as (index, kind, value).
    (A StrEnum: equal to its plain string too.)"""
    TEXT = "text"                # value: the next piece of final text of completion `index`
    LOGPROBS = "logprobs"        # value: the logprob entries of the TEXT event that follows
    PROMPT_LOGPROBS = "prompt_logprobs"  # value: entries scoring a chunk of the prompt (echo)
    LOGITS = "logits"            # value: the V next-character logits, a list of floats (max_new == 0: the answer)
    DONE = "done"                # value: the finish reason ("stop" | "length")
    TIMEOUT = "timeout"          # past its deadline
    ERROR = "error"              # value: a message; the engine failed this sequence (logged)
    SHUTDOWN = "shutdown"        # value: a message; the engine stopped before the sequence finished


@dataclass(eq=False)
class Sequence:
    """One completion (or one next-char distribution when max_new == 0)."""
    ids: list[int]                 # context ids still to prefill
    params: SamplingParams
    seed: int
    max_new: int
    stops: list[str]
    deadline: float                # time.monotonic() by which it must be done
    events: queue.Queue = field(default_factory=queue.Queue)  # (index, kind, value), may be shared
    index: int = 0                 # which completion of its request
    stream: bool = True            # emit text as it is final; else only once, when done
    interval: float = 0.0          # stream: seconds between text events after the first (0 = every char)
    text: str = ""
    emitted: int = 0
    cancelled: bool = False
    done: bool = False
    recent: list[int] = field(default_factory=list)
    state: State | None = None     # the model's state (one row) while prefilling; opaque here
    context: list[int] | None = None  # the whole context, kept for the prefix cache
    logits: torch.Tensor | None = None
    last_emit: float = 0.0
    logprobs: int | None = None    # per generated character: its logprob and the top-k alternatives
    score_prompt: int | None = None  # echo: score the context's characters too (top-k alternatives)
    constraint: object | None = None  # a model.constraints.RegexConstraint the completion must match
    fsm: int = 0                   # the constraint's state after the text so far
    lps: list = field(default_factory=list)  # per generated character: (logprob, [(id, logprob), ...])
    counts: torch.Tensor | None = None  # (V,) generated characters, for presence/frequency penalties

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.recent = self.ids[-self.params.penalty_window:]

    def emit(self, kind: str, value=None):
        self.events.put((self.index, kind, value))

    def cancel(self):
        self.cancelled = True  # read by the engine thread at its next turn

    def _emit_text(self, end: int):
        if self.logprobs is not None:  # the entries of exactly the text that follows
            self.emit(Event.LOGPROBS, self.lps[self.emitted:end])
        self.emit(Event.TEXT, self.text[self.emitted:end])
        self.emitted = end

    def _finish(self, reason: str):
        if self.emitted < len(self.text):
            self._emit_text(len(self.text))
        self.done = True
        self.emit(Event.DONE, reason)

    def score(self, logits: torch.Tensor, ids: torch.Tensor):
        """Echo with logprobs: score a chunk of context ids (n,) from the logits after each (n, V);
        the logits before the chunk predicted its first id (none at the very start: None)."""
        pred = logits[:-1] if self.logits is None else torch.cat([self.logits, logits[:-1]])
        entries = [None] if self.logits is None else []
        chosen, vals, top = token_logprobs(pred, ids[len(entries):], self.score_prompt)
        entries += [(c, list(zip(t, v))) for c, t, v in zip(chosen.tolist(), top.tolist(), vals.tolist())]
        self.emit(Event.PROMPT_LOGPROBS, entries)

    def push(self, ch: str, idx: int, lp: tuple | None = None) -> bool:
        """Append a sampled character (lp: its logprob entry); emit what is final; -> True when done."""
        self.text += ch
        if self.params.repetition_penalty != 1:  # only the penalty reads `recent`
            self.recent = (self.recent + [idx])[-self.params.penalty_window:]
        if lp is not None:
            self.lps.append(lp)
        if self.counts is not None:
            self.counts[idx] += 1
        if self.constraint is not None:
            self.fsm = self.constraint.next[self.fsm][idx]
        cut = find_stop(self.text, self.stops, len(self.text) - 1) if self.stops else None
        if cut is not None:
            self.text = self.text[:cut]
            self._finish("stop")
        elif self.constraint is not None and self.constraint.closed[self.fsm]:
            self._finish("stop")  # a full match that no character can extend
        elif len(self.text) >= self.max_new:
            self._finish("length")
        elif self.stream:  # a non-streamed answer needs no per-character events (or thread wake-ups)
            now = time.monotonic() if self.interval else 0.0
            if self.emitted and now - self.last_emit < self.interval:
                return False  # the first text goes at once; later ones at most every `interval`
            ready = len(self.text) - (holdback(self.text, self.stops) if self.stops else 0)
            if ready > self.emitted:
                self._emit_text(ready)
                self.last_emit = now
        return self.done
