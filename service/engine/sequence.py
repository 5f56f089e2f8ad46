"""One completion as the engine runs it (Sequence), and what the engine tells its requester: typed
events (Text, PromptScores, Logits, Finished, Failed) on the request's queue.

A Sequence holds its own sampling settings and RNG, its text so far and the events it puts on its
request's queue; the engine (service/engine/engine.py) advances it and never reads HTTP. Stop strings,
regex constraints, logprobs and penalties act through `push`, one sampled character at a time.
"""
from __future__ import annotations

import queue
import random
import time
from dataclasses import dataclass, field

import torch

from model.sampling import SamplingParams, find_stop, holdback, token_logprobs
from model.state import State


@dataclass(frozen=True)
class Text:
    """More final text of completion `index`, with one logprob entry per character when asked for."""
    index: int
    text: str
    logprobs: list | None = None   # [(logprob, [(id, logprob), ...]), ...] or None


@dataclass(frozen=True)
class PromptScores:
    """Echo with logprobs: entries scoring the next chunk of the context read (None: unscored)."""
    index: int
    entries: list


@dataclass(frozen=True)
class Logits:
    """max_new == 0: the next-character logits after the context, a list of V floats (the answer)."""
    index: int
    logits: list


@dataclass(frozen=True)
class Finished:
    """Completion `index` ended normally; its last Text came before."""
    index: int
    reason: str                    # "stop" | "length"


@dataclass(frozen=True)
class Failed:
    """Completion `index` (None: all of the request's) ended early: an HTTP status and a code for it."""
    index: int | None
    status: int                    # 504 timeout, 503 shutting down, 500 engine failure
    code: str
    message: str


Event = Text | PromptScores | Logits | Finished | Failed


def timed_out(index: int | None = None) -> Failed:
    return Failed(index, 504, "timeout", "request not finished within its deadline")


def shut_down(index: int | None = None) -> Failed:
    return Failed(index, 503, "shutting_down", "the server is shutting down; retry (another instance)")


def failed(index: int | None = None) -> Failed:
    return Failed(index, 500, "engine_error", "internal error")


@dataclass(eq=False)
class Sequence:
    """One completion (or one next-char distribution when max_new == 0)."""
    ids: list[int]                 # context ids still to prefill
    params: SamplingParams
    seed: int
    max_new: int
    stops: list[str]
    deadline: float                # time.monotonic() by which it must be done
    events: queue.Queue = field(default_factory=queue.Queue)  # Events (above); may be shared by a request
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

    def emit(self, event) -> None:
        self.events.put(event)

    def cancel(self):
        self.cancelled = True  # read by the engine thread at its next turn

    def _emit_text(self, end: int):
        lps = self.lps[self.emitted:end] if self.logprobs is not None else None  # exactly this text's
        self.emit(Text(self.index, self.text[self.emitted:end], lps))
        self.emitted = end

    def _finish(self, reason: str):
        if self.emitted < len(self.text):
            self._emit_text(len(self.text))
        self.done = True
        self.emit(Finished(self.index, reason))

    def score(self, logits: torch.Tensor, ids: torch.Tensor):
        """Echo with logprobs: score a chunk of context ids (n,) from the logits after each (n, V);
        the logits before the chunk predicted its first id (none at the very start: None)."""
        pred = logits[:-1] if self.logits is None else torch.cat([self.logits, logits[:-1]])
        entries = [None] if self.logits is None else []
        chosen, vals, top = token_logprobs(pred, ids[len(entries):], self.score_prompt)
        entries += [(c, list(zip(t, v))) for c, t, v in zip(chosen.tolist(), top.tolist(), vals.tolist())]
        self.emit(PromptScores(self.index, entries))

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
