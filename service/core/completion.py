"""The completion layer: every API's request becomes one CompletionSpec (spec_from), and a Run
submits it to the engine and hands the engine's typed events back to the HTTP face, which only
formats them (a JSON body or server-sent events).

Where the APIs differ, the adapters below map their fields; what they mean is decided once, in
build(): a top_k at least the vocabulary means off, a temperature below 1e-30 is greedy, a bias of
-100 bans a character and banning all of them is an error, a regex is compiled against the model's
own vocabulary with those bans.
"""
from __future__ import annotations

import queue
import random
import time
from dataclasses import dataclass, field

from model.sampling import SamplingParams
from service.core.errors import APIError, invalid
from service.core.features import FeatureError, banned, bias_ids, check_bans
from service.core.inspect_schemas import InspectRequest
from service.core.openai_schemas import CompletionRequest
from service.core.schemas import GenerateRequest, PredictRequest
from service.engine import (Failed, Finished, Lane, LaneRetired, Logits, NotRunning, PromptScores, QueueFull, Text,
                            timed_out)

GRACE_S = 1.0  # past a request's deadline, the engine gets this long to say so itself


@dataclass
class Prompt:
    text: str          # as the client sent it (the echo and the usage count this)
    ids: list[int]     # what the model reads


@dataclass
class CompletionSpec:
    lane: Lane
    prompts: list[Prompt]
    params: SamplingParams
    max_new: int
    seed: int
    deadline: float                       # time.monotonic()
    n: int = 1                            # choices per prompt; choice j of a prompt uses seed + j
    stops: list[str] = field(default_factory=list)
    stream: bool = False
    logprobs: int | None = None           # per generated character: logprob and k alternatives
    score_prompt: int | None = None       # echo: score the prompt's characters too
    constraint: object | None = None      # a compiled regex


def encode(vocab, text: str, *, field: str, unknown: str | None = "error", symbol: str | None = None) -> list[int]:
    """text -> ids; characters outside the vocabulary are a 422 naming them, unless unknown='skip' (dropped)
    or the model has an unknown symbol (`symbol`: a model trained with max_vocab), which they read as, as
    in training. unknown=None: the API has no unknown_chars option (OpenAI's)."""
    missing = vocab.unknown(text)
    if missing and symbol is not None:
        text, missing = text.translate({ord(ch): symbol for ch in missing}), []
    if missing and unknown != "skip":
        hint = "; remove them or send \"unknown_chars\": \"skip\"" if unknown == "error" else ""
        raise APIError(422, "unknown_characters", f"{field} has {len(missing)} character(s) outside the model's "
                       f"vocabulary{hint}", [{"field": field, "message": "characters outside the vocabulary",
                                              "chars": missing}])
    return vocab.encode(text, unknown="skip").tolist()


def build(lane: Lane, *, prompts: list[Prompt], timeout_s: float, compiler, max_new: int, n: int = 1,
          temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
          repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
          logit_bias: dict[int, float] | None = None, regex: str | None = None, stops: list[str] | None = None,
          seed: int | None = None, stream: bool = False, logprobs: int | None = None,
          score_prompt: int | None = None) -> CompletionSpec:
    """The one place a request's settings become the engine's."""
    V = len(lane.vocab)
    never = {lane.vocab.index(lane.unknown): -100.0} if lane.unknown else {}  # read, never generated
    bias = tuple((int(i), float(b)) for i, b in {**(logit_bias or {}), **never}.items())
    try:
        check_bans(lane.vocab, bias)
        constraint = None if regex is None else compiler.compile(regex, lane.vocab.chars, banned(bias))
    except FeatureError as e:
        raise invalid(e.field, e.message) from None
    params = SamplingParams(temperature=0.0 if temperature < 1e-30 else temperature,  # below: every gap is infinite
                            top_k=top_k if top_k is not None and top_k < V else None,
                            top_p=top_p if top_p is not None and top_p < 1 else None,
                            repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                            frequency_penalty=frequency_penalty, logit_bias=bias)
    return CompletionSpec(lane=lane, prompts=prompts, params=params, max_new=max_new, n=n, stops=list(stops or []),
                          seed=seed if seed is not None else random.SystemRandom().randrange(2**31),
                          deadline=time.monotonic() + timeout_s, stream=stream, logprobs=logprobs,
                          score_prompt=score_prompt, constraint=constraint)


def spec_from(req, lane: Lane, *, settings, compiler) -> CompletionSpec:
    """Any API's validated request -> its CompletionSpec (the adapters map field names and types only)."""
    common = {"timeout_s": settings.request_timeout_s, "compiler": compiler}
    vocab = lane.vocab
    if isinstance(req, PredictRequest):
        ids = encode(vocab, req.text, field="text", unknown=req.unknown_chars, symbol=lane.unknown)
        return build(lane, prompts=[Prompt(req.text, ids)], max_new=0, seed=0, **common)
    if isinstance(req, GenerateRequest):
        ids = encode(vocab, req.prompt, field="prompt", unknown=req.unknown_chars, symbol=lane.unknown)
        try:
            bias = dict(bias_ids(vocab, req.logit_bias))
        except FeatureError as e:
            raise invalid(e.field, e.message) from None
        return build(lane, prompts=[Prompt(req.prompt, ids)], max_new=req.max_new_chars, n=req.n,
                     temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                     repetition_penalty=req.repetition_penalty, logit_bias=bias, regex=req.regex, stops=req.stop,
                     seed=req.seed, stream=req.stream, logprobs=req.logprobs, **common)
    if isinstance(req, CompletionRequest):
        bias = {}
        for k, b in (req.logit_bias or {}).items():
            if int(k) >= len(vocab):
                raise invalid("logit_bias", f"vocabulary indices are 0..{len(vocab) - 1} (GET /v1/models), not {k}")
            bias[int(k)] = b
        echo = bool(req.echo)
        return build(lane, prompts=openai_prompts(req, lane), n=req.n or 1,
                     max_new=req.max_tokens if req.max_tokens is not None else 16,
                     temperature=1.0 if req.temperature is None else req.temperature, top_k=req.top_k,
                     top_p=req.top_p, repetition_penalty=req.repetition_penalty or 1.0,
                     presence_penalty=req.presence_penalty or 0.0, frequency_penalty=req.frequency_penalty or 0.0,
                     logit_bias=bias, regex=req.regex, stops=req.stops(), seed=req.seed, stream=bool(req.stream),
                     logprobs=req.logprobs, score_prompt=req.logprobs if echo and req.logprobs is not None else None,
                     **common)
    raise TypeError(f"no completion for {type(req).__name__}")


def openai_prompts(req: CompletionRequest, lane: Lane) -> list[Prompt]:
    """A string, a list of strings, or vocabulary indices (a list, or a list of lists)."""
    vocab = lane.vocab
    p = req.prompt if req.prompt is not None else ""
    items = [p] if isinstance(p, str) or (p and isinstance(p[0], int)) else p
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(Prompt(item, encode(vocab, item, field="prompt", unknown=None, symbol=lane.unknown)))
        else:
            if any(not 0 <= i < len(vocab) for i in item):
                raise invalid("prompt", f"vocabulary indices are 0..{len(vocab) - 1} (GET /v1/models)")
            out.append(Prompt(vocab.decode(item), list(item)))
    return out


def inspect_ids(req: InspectRequest, lane: Lane) -> list[int]:
    return encode(lane.vocab, req.text, field="text", unknown=req.unknown_chars, symbol=lane.unknown)


@dataclass
class Choice:
    """One choice's result so far: prompt p, choice j is choice p * n + j."""
    prompt: Prompt
    text: str = ""
    lps: list = field(default_factory=list)      # per generated character: (logprob, [(id, logprob)])
    scored: list = field(default_factory=list)   # echo: entries scoring the context read
    logits: list | None = None                   # max_new == 0: the next-character logits
    reason: str | None = None


def failure(ev: Failed) -> APIError:
    headers = {"Retry-After": "1"} if ev.status == 503 else None
    return APIError(ev.status, ev.code, ev.message, None, headers)


class Run:
    """A submitted spec: its sequences in the engine and their events on one queue.
    Iterate it for lists of events (consecutive texts of one choice merged), or collect() them."""

    def __init__(self, engine, spec: CompletionSpec):
        self.spec, self.events = spec, queue.Queue()
        lane = spec.lane
        self.choices = [Choice(p) for p in spec.prompts for _ in range(spec.n)]
        self.seqs = [lane.new_sequence(p.ids, params=spec.params, seed=spec.seed + j, max_new=spec.max_new,
                                       stops=spec.stops, deadline=spec.deadline, events=self.events,
                                       index=i * spec.n + j, stream=spec.stream, logprobs=spec.logprobs,
                                       score_prompt=spec.score_prompt, constraint=spec.constraint)
                     for i, p in enumerate(spec.prompts) for j in range(spec.n)]
        try:
            engine.submit(lane, self.seqs)
        except LaneRetired:
            raise  # the caller looks the model up again (service/http/common.py start)
        except QueueFull:
            raise APIError(429, "queue_full", "the server is at capacity; retry shortly",
                           headers={"Retry-After": "1"}) from None
        except NotRunning:
            raise APIError(503, "not_ready", "the engine is not running", headers={"Retry-After": "5"}) from None

    def cancel(self) -> None:
        for s in self.seqs:
            s.cancel()

    def __iter__(self):
        """Lists of events until the deadline (plus GRACE_S for the engine to say so: then a Failed)."""
        while True:
            try:
                first = self.events.get(timeout=max(0.0, self.spec.deadline - time.monotonic()) + GRACE_S)
            except queue.Empty:
                yield [timed_out()]
                continue
            out = [first]
            while True:  # whatever is waiting too: a stream behind the engine catches up in one write
                try:
                    ev = self.events.get_nowait()
                except queue.Empty:
                    break
                last = out[-1]
                if isinstance(ev, Text) and isinstance(last, Text) and last.index == ev.index:
                    out[-1] = Text(ev.index, last.text + ev.text,
                                   None if ev.logprobs is None else last.logprobs + ev.logprobs)
                else:
                    out.append(ev)
            yield out

    def collect(self) -> list[Choice]:
        """Every choice whole (a non-streamed answer); a Failed event raises its APIError."""
        try:
            for events in self:
                for ev in events:
                    self.apply(ev)
                if all(c.reason for c in self.choices):
                    return self.choices
        finally:
            self.cancel()

    def apply(self, ev) -> Choice | None:
        """Fold one event into its choice; -> that choice. A Failed event raises its APIError."""
        if isinstance(ev, Failed):
            raise failure(ev)
        c = self.choices[ev.index]
        if isinstance(ev, Text):
            c.text += ev.text
            c.lps += ev.logprobs or []
        elif isinstance(ev, PromptScores):
            c.scored += ev.entries
        elif isinstance(ev, Logits):
            c.logits, c.reason = ev.logits, "length"
        elif isinstance(ev, Finished):
            c.reason = ev.reason
        return c
