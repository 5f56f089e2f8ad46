"""Logit bias, presence/frequency penalties, the regex mask and per-character logprobs as pure
transforms over (B, V) logits, and the regex automaton against Python's own `re`; no model."""
import random
import re

import pytest
import torch

from model.constraints import RegexConstraint, RegexError
from model.sampling import (SamplingParams, apply_allowed, apply_presence_frequency, bias_matrix, sample_next,
                            token_logprobs)

CHARS = list("\n !',.:?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
LOGITS = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])


def draws(params, n=500, seed=0, **dyn):
    rng = random.Random(seed)
    return torch.stack([sample_next(LOGITS, [params], [rng], **dyn) for _ in range(n)]).flatten()


def test_logit_bias_bans_at_minus_100_and_shifts_otherwise():
    p = SamplingParams(temperature=1.0, logit_bias=((4, -100), (1, 2.5)))
    bias = bias_matrix([p, SamplingParams()], 5)
    assert bias[0].tolist() == [0, 2.5, 0, 0, float("-inf")] and bias[1].tolist() == [0] * 5
    assert 4 not in set(draws(p).tolist())
    assert sample_next(LOGITS, [SamplingParams(temperature=0, logit_bias=((4, -100),))], [random.Random()]).item() == 0
    # +100 makes a character all but certain, greedy or not
    assert set(draws(SamplingParams(temperature=1.0, logit_bias=((3, 100),))).tolist()) == {3}
    with pytest.raises(ValueError):
        SamplingParams(logit_bias=((0, 101),))


def test_presence_and_frequency_follow_openai_definitions():
    counts = torch.tensor([[0.0, 1.0, 3.0, 0.0, 0.0], [5.0, 0, 0, 0, 0]])
    out = apply_presence_frequency(LOGITS.repeat(2, 1), counts, torch.tensor([0.5, 0.0]), torch.tensor([0.25, 0.0]))
    assert out[0].tolist() == [2.0, 1.0 - 0.25 - 0.5, 0.5 - 0.75 - 0.5, -1.0, 3.0]
    assert out[1].tolist() == LOGITS[0].tolist()  # a row without penalties is untouched
    # they change the greedy choice too
    greedy = SamplingParams(temperature=0, frequency_penalty=2.0)
    c = torch.tensor([[0.0, 0, 0, 0, 1.0]])
    assert sample_next(LOGITS, [greedy], [random.Random()], counts=c).item() == 0


def test_greedy_rows_with_a_repetition_penalty_pick_the_same_alone_and_in_a_mixed_batch():
    g = SamplingParams(temperature=0, repetition_penalty=10.0)
    recent = torch.tensor([[4]])
    alone = sample_next(LOGITS, [g], [random.Random(0)], recent=recent).item()
    mixed = sample_next(LOGITS.repeat(2, 1), [g, SamplingParams(temperature=1.0)], [random.Random(0)] * 2,
                        recent=recent.repeat(2, 1))[0].item()
    assert alone == mixed == 0


def test_allowed_mask_limits_every_row_to_its_characters():
    allowed = torch.tensor([[False, True, False, True, False]])
    assert set(draws(SamplingParams(temperature=2.0), allowed=allowed).tolist()) == {1, 3}
    assert sample_next(LOGITS, [SamplingParams(temperature=0)], [random.Random()], allowed=allowed).item() == 1
    assert torch.isinf(apply_allowed(LOGITS, allowed)[0, [0, 2, 4]]).all()


def test_token_logprobs_are_the_models_own_distribution():
    ids = torch.tensor([1])
    chosen, vals, top = token_logprobs(LOGITS, ids, 2)
    logp = LOGITS.log_softmax(-1)[0]
    assert chosen.tolist() == pytest.approx([logp[1].item()])
    assert top.tolist() == [[4, 0]] and vals[0].tolist() == pytest.approx([logp[4].item(), logp[0].item()])
    assert token_logprobs(LOGITS, ids, 0)[1].shape == (1, 0)


def walk(c: RegexConstraint, rng: random.Random, stop_p=0.3, limit=60) -> tuple[str, int]:
    text, state = "", 0
    while len(text) < limit:
        opts = c.allowed[state].nonzero().flatten().tolist()
        if not opts or (c.final[state] and rng.random() < stop_p):
            break
        i = rng.choice(opts)
        text, state = text + CHARS[i], c.next[state][i]
    return text, state


@pytest.mark.parametrize("pattern", [
    r"[A-Z][a-z]+ (of|the) [A-Z][a-z]+\.", r"(?i)to be,? or not", r"\w{2,4}( \w{2,4}){0,3}[.!?]",
    r"(ab|a)*c?", r"[^a-z\n]{1,5}", r"(Yes|No|Maybe)\.",
])
def test_every_walk_of_the_automaton_is_a_viable_prefix_and_finals_are_full_matches(pattern):
    c = RegexConstraint.compile(pattern, CHARS)
    rng = random.Random(0)
    for _ in range(200):
        text, state = walk(c, rng)
        assert bool(re.fullmatch(pattern, text)) == c.final[state], text
        if not c.final[state]:  # stopped at the limit: some continuation still matches
            assert c.allowed[state].any()


def test_closed_states_are_matches_nothing_extends():
    c = RegexConstraint.compile(r"(Yes|No)\.", CHARS)
    text, state = walk(c, random.Random(1), stop_p=0.0)
    assert text in ("Yes.", "No.") and c.closed[state] and not c.allowed[state].any()
    assert not c.closed[0]


def test_banned_characters_are_never_allowed_and_can_make_a_pattern_unsatisfiable():
    c = RegexConstraint.compile(r"[ab]+", CHARS, banned=frozenset({CHARS.index("a")}))
    assert not c.allowed[:, CHARS.index("a")].any() and c.allowed[0, CHARS.index("b")]
    with pytest.raises(RegexError, match="no text"):
        RegexConstraint.compile(r"a+", CHARS, banned=frozenset({CHARS.index("a")}))


@pytest.mark.parametrize("pattern, message", [
    ("(", "invalid regex"), ("^a", "unsupported"), (r"(a)\1", "unsupported"), ("é+", "no text"),
    ("", "only the empty"), (r"(a|b)*a(a|b){7}", "too complex"),
])
def test_bad_patterns_say_why(pattern, message):
    with pytest.raises(RegexError, match=message):
        RegexConstraint.compile(pattern, CHARS, max_states=100)
