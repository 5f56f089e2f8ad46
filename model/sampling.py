"""Sampling rules as small pure functions over logits; no model, no I/O.

All work on a batch: logits (B, V) with per-row settings as (B,) tensors, so one call serves a
single CLI sample or a server batch whose requests each have their own settings.
Conventions: temperature 0 = greedy (argmax); top_k 0 = off; top_p 1.0 = off;
repetition_penalty 1.0 = off.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    penalty_window: int = 64  # the repetition penalty looks at this many previous characters
    presence_penalty: float = 0.0   # OpenAI's: subtracted once from every character generated so far
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence in the generated text
    logit_bias: tuple[tuple[int, float], ...] = ()  # (vocabulary id, added to its logit); <= -100 bans it

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if any(not -100 <= b <= 100 for _, b in self.logit_bias):
            raise ValueError("logit_bias values must be in [-100, 100]")


def apply_repetition_penalty(logits: torch.Tensor, recent: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """CTRL-style penalty on characters seen recently.

    logits (B, V); recent (B, W) ids of each row's last W characters (-1 = none);
    penalty (B,). A seen character's logit is divided by the penalty when positive and
    multiplied by it when negative, so penalty > 1 always makes it less likely.
    """
    V = logits.shape[-1]
    # -1 (no character) scatters into a spare column V that is then dropped.
    seen = torch.zeros(logits.shape[0], V + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, torch.where(recent >= 0, recent, V).long(), True)
    seen = seen[:, :V]
    p = penalty[:, None].to(logits.dtype)
    penalised = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalised, logits)


def apply_allowed(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Only the characters allowed (B, V) bool may be chosen (regex constraints); every row must
    allow at least one."""
    return logits.masked_fill(~allowed, float("-inf"))


def apply_logit_bias(logits: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Add a per-row bias (B, V); -inf entries (bias -100) ban a character outright."""
    return logits + bias


def apply_presence_frequency(logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor,
                             frequency: torch.Tensor) -> torch.Tensor:
    """OpenAI's penalties: counts (B, V) of each character in the text generated so far;
    logit -= frequency * count + presence * (count > 0); presence, frequency (B,)."""
    return logits - counts * frequency[:, None] - (counts > 0).to(logits.dtype) * presence[:, None]


def bias_matrix(params: list["SamplingParams"], vocab_size: int) -> torch.Tensor:
    """(B, V) logit-bias rows of a batch; a bias of -100 becomes -inf (a ban, as OpenAI documents)."""
    bias = torch.zeros(len(params), vocab_size)
    for row, p in enumerate(params):
        for idx, b in p.logit_bias:
            bias[row, idx] = float("-inf") if b <= -100 else b
    return bias


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, k: int):
    """The model's own log-probabilities (before any sampling transform): logits (R, V), the
    chosen ids (R,) -> (their logprobs (R,), top-k logprobs (R, k), top-k ids (R, k))."""
    logp = logits.float().log_softmax(-1)
    top = logp.topk(min(k, logp.shape[-1]), -1)
    return logp.gather(1, ids[:, None].long())[:, 0], top.values, top.indices


def top_logprobs(logits: list[float], temperature: float, k: int) -> list[tuple[int, float]]:
    """One distribution's k most likely ids with their log-probabilities at `temperature`, most
    likely first (ties: lower id first); temperature 0 puts all the mass on the argmax. In plain
    Python on floats: for one row of a few dozen logits, a chain of torch ops costs an HTTP
    thread more (each op drops and retakes the GIL the engine thread is using). NaN logits (a
    broken model) give no prediction at all."""
    if any(v != v for v in logits):
        return []
    top = max(range(len(logits)), key=logits.__getitem__)
    if temperature == 0:
        return [(top, 0.0)]
    # max shifted to 0 first: a tiny temperature sends the rest to -inf (exp 0), not everything to NaN
    z = [(v - logits[top]) / temperature for v in logits]
    lse = math.log(math.fsum(math.exp(v) for v in z))
    best = heapq.nsmallest(k, range(len(z)), key=lambda i: (-z[i], i))
    return [(i, z[i] - lse) for i in best]


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide each row by its temperature; rows with temperature 0 are left as they are (greedy).
    Each row's maximum is shifted to 0 first (the softmax is the same): a tiny temperature such as
    1e-40 then sends the other logits to -inf, the argmax that T -> 0 means, instead of overflowing
    every logit to inf and the softmax to NaN."""
    t = torch.where(temperature > 0, temperature, 1.0)[:, None].to(logits.dtype)
    return (logits - logits.amax(-1, keepdim=True)) / t


def apply_top_k(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep each row's k largest logits (k (B,), 0 = keep all); ties at the k-th value stay."""
    V = logits.shape[-1]
    k = torch.where((k <= 0) | (k > V), torch.full_like(k, V), k)
    kth = logits.sort(dim=-1, descending=True).values.gather(1, (k - 1)[:, None].long())
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely characters whose probability reaches p (B,)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass strictly before each entry
    drop_sorted = before >= p[:, None].to(probs.dtype)
    drop_sorted[:, 0] = False  # the most likely is always kept, even when p underflows to 0 in float32
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose(logits: torch.Tensor, temperature: torch.Tensor, uniforms: torch.Tensor,
           any_greedy: bool = True) -> torch.Tensor:
    """Pick one id per row: argmax where temperature is 0, else inverse-CDF with uniforms (B,) in [0,1).
    any_greedy=False promises no row has temperature 0: the argmax is skipped."""
    cdf = logits.double().softmax(-1).cumsum(-1)  # float64: no rounding past the last non-zero
    # u < total mass strictly, so the first index with cdf > u always has probability > 0.
    u = (uniforms.double() * cdf[:, -1] * (1 - 1e-12))[:, None]
    sampled = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=logits.shape[-1] - 1)
    return torch.where(temperature > 0, sampled, logits.argmax(-1)) if any_greedy else sampled


def adjust_logits(logits: torch.Tensor, t: BatchParams, recent: torch.Tensor | None = None,
                  counts: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """What changes which character is best, so it applies to greedy rows too: the regex mask
    (allowed (B, V)), logit bias, repetition penalty (recent (B, W)), presence/frequency penalties
    (counts (B, V)). Transforms no row uses are skipped."""
    if allowed is not None:
        logits = apply_allowed(logits, allowed)
    if t.any_bias:
        logits = apply_logit_bias(logits, t.bias)
    if t.any_penalty and recent is not None:
        logits = apply_repetition_penalty(logits, recent, t.penalty)
    if t.any_counts and counts is not None:
        logits = apply_presence_frequency(logits, counts, t.presence, t.frequency)
    return logits


def shape_logits(logits: torch.Tensor, t: BatchParams) -> torch.Tensor:
    """The sampling distribution's shape (no effect on greedy rows): temperature, top-k, top-p."""
    if t.any_temperature:
        logits = apply_temperature(logits, t.temperature)
    if t.any_top_k:
        logits = apply_top_k(logits, t.top_k)
    if t.any_top_p:
        logits = apply_top_p(logits, t.top_p)
    return logits


@dataclass
class BatchParams:
    """A batch's sampling settings as per-row tensors, and which transforms any row needs (a step
    skips the others). Built by batch_params once per batch composition, not per step."""
    temperature: torch.Tensor         # (B,) float32; 0 = greedy
    top_k: torch.Tensor               # (B,) int64; 0 = off
    top_p: torch.Tensor               # (B,) float32; 1 = off
    penalty: torch.Tensor             # (B,) repetition penalty; 1 = off
    any_penalty: bool = False
    any_temperature: bool = False     # a row with a temperature other than 0 and 1
    any_top_k: bool = False
    any_top_p: bool = False
    any_greedy: bool = False
    all_greedy: bool = False
    any_bias: bool = False
    any_counts: bool = False          # presence or frequency penalties
    bias: torch.Tensor | None = None      # (B, V) when any_bias
    presence: torch.Tensor | None = None  # (B,) when any_counts
    frequency: torch.Tensor | None = None  # (B,) when any_counts


def batch_params(params: list[SamplingParams], vocab_size: int | None = None) -> BatchParams:
    """The BatchParams of a batch of requests' settings. vocab_size: needed when a row has a logit bias."""
    t = BatchParams(temperature=torch.tensor([p.temperature for p in params], dtype=torch.float32),
                    top_k=torch.tensor([p.top_k or 0 for p in params], dtype=torch.long),
                    top_p=torch.tensor([p.top_p or 1.0 for p in params], dtype=torch.float32),
                    penalty=torch.tensor([p.repetition_penalty for p in params], dtype=torch.float32),
                    any_penalty=any(p.repetition_penalty != 1 for p in params),
                    any_temperature=any(p.temperature not in (0, 1) for p in params),
                    any_top_k=any(bool(p.top_k) for p in params),
                    any_top_p=any(p.top_p is not None and p.top_p < 1 for p in params),
                    any_greedy=any(p.temperature == 0 for p in params),
                    all_greedy=all(p.temperature == 0 for p in params),
                    any_bias=any(bool(p.logit_bias) for p in params),
                    any_counts=any(bool(p.presence_penalty or p.frequency_penalty) for p in params))
    if t.any_bias:
        if vocab_size is None:
            raise ValueError("batch_params needs vocab_size when a row has a logit bias")
        t.bias = bias_matrix(params, vocab_size)
    if t.any_counts:
        t.presence = torch.tensor([p.presence_penalty for p in params], dtype=torch.float32)
        t.frequency = torch.tensor([p.frequency_penalty for p in params], dtype=torch.float32)
    return t


def sample_batch(logits: torch.Tensor, t: BatchParams, rngs: list[random.Random], recent: torch.Tensor | None = None,
                 counts: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """logits (B, V) -> next ids (B,), with t = batch_params(...) of the same rows; recent, counts,
    allowed: see adjust_logits (each only when a row of the batch needs it)."""
    logits = adjust_logits(logits.float(), t, recent, counts, allowed)
    if t.all_greedy:  # greedy rows ignore their draws: skipping them changes no output
        return logits.argmax(-1)
    logits = shape_logits(logits, t)
    uniforms = torch.tensor([r.random() for r in rngs], dtype=torch.float64)
    return choose(logits, t.temperature, uniforms, t.any_greedy)


def sample_next(logits: torch.Tensor, params: list[SamplingParams], rngs: list[random.Random],
                recent: torch.Tensor | None = None, counts: torch.Tensor | None = None,
                allowed: torch.Tensor | None = None) -> torch.Tensor:
    """logits (B, V) -> next ids (B,). Row i draws from its own rngs[i], so a seeded sequence is
    reproducible whatever else shares the batch."""
    return sample_batch(logits, batch_params(params, logits.shape[-1]), rngs, recent, counts, allowed)


def find_stop(text: str, stops: list[str], start: int = 0) -> int | None:
    """Index in `text` where the earliest stop string begins, looking only at matches that end
    after `start` (new text); None when no stop string occurs."""
    best = None
    for s in stops:
        i = text.find(s, max(0, start - len(s) + 1))
        if i != -1 and (best is None or i < best):
            best = i
    return best


def holdback(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could still be the start of a stop string: a
    stream must not emit them yet, since the stop string is never part of the output."""
    n = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), n, -1):
            if text.endswith(s[:k]):
                n = k
                break
    return n
