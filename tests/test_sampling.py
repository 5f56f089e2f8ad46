import math
import random

import pytest
import torch

from model.sampling import (SamplingParams, apply_repetition_penalty, apply_temperature, apply_top_k,
                            apply_top_p, choose, find_stop, holdback, sample_next, top_logprobs)

LOGITS = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])


def draws(params, n=2000, seed=0, logits=LOGITS):
    rng = random.Random(seed)
    return torch.stack([sample_next(logits, [params], [rng]) for _ in range(n)]).flatten()


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
def test_top_logprobs_match_torchs_softmax_and_order(temperature):
    logits = torch.randn(65, generator=torch.Generator().manual_seed(3)) * 4
    got = top_logprobs(logits.tolist(), temperature, 7)
    want = torch.log_softmax(logits.double() / temperature, -1).topk(7)
    assert [i for i, _ in got] == want.indices.tolist()
    assert [lp for _, lp in got] == pytest.approx(want.values.tolist(), abs=1e-12)
    full = top_logprobs(logits.tolist(), temperature, 1000)  # k beyond the vocabulary: all of it
    assert len(full) == 65 and math.fsum(math.exp(lp) for _, lp in full) == pytest.approx(1.0, abs=1e-12)


def test_top_logprobs_edges():
    assert top_logprobs([0.5, 3.0, 3.0, -1.0], 0, 3) == [(1, 0.0)]    # greedy: the first argmax, all the mass
    tiny = top_logprobs([0.5, 3.0, 2.0], 1e-300, 3)                   # no NaN: the rest get probability 0
    assert tiny[0] == (1, 0.0) and [i for i, _ in tiny] == [1, 2, 0] and all(math.exp(lp) == 0 for _, lp in tiny[1:])
    assert [i for i, _ in top_logprobs([1.0, 2.0, 2.0, 2.0], 1.0, 2)] == [1, 2]  # ties: lower id first
    assert top_logprobs([1.0, math.nan, 0.5], 0, 2) == top_logprobs([1.0, math.nan, 0.5], 1.0, 2) == []


def test_greedy_is_argmax_whatever_the_seed():
    p = SamplingParams(temperature=0)
    assert set(draws(p, 50).tolist()) == {4}


def test_temperature_scales_logits_and_sharpens():
    assert torch.allclose(apply_temperature(LOGITS, torch.tensor([0.5])).softmax(-1), (LOGITS * 2).softmax(-1))
    hot = draws(SamplingParams(temperature=2.0))
    cold = draws(SamplingParams(temperature=0.3))
    assert (cold == 4).float().mean() > (hot == 4).float().mean() + 0.2


def test_sampling_follows_the_softmax():
    probs = LOGITS.softmax(-1)[0]
    d = draws(SamplingParams(temperature=1.0), n=4000)
    freq = torch.bincount(d, minlength=5).float() / len(d)
    assert torch.allclose(freq, probs, atol=0.03)


def test_top_k_keeps_exactly_k():
    out = apply_top_k(LOGITS.repeat(2, 1), torch.tensor([2, 0]))
    assert torch.isfinite(out[0]).tolist() == [True, False, False, False, True]
    assert torch.isfinite(out[1]).all()  # 0 = off
    assert set(draws(SamplingParams(temperature=5.0, top_k=2)).tolist()) == {0, 4}


def test_top_p_keeps_smallest_nucleus():
    probs = LOGITS.softmax(-1)[0]  # ~ [.23,.08,.05,.01,.63]
    out = apply_top_p(LOGITS, torch.tensor([0.5]))
    assert torch.isfinite(out[0]).tolist() == [False, False, False, False, True]
    out = apply_top_p(LOGITS, torch.tensor([float(probs[4]) + 0.01]))
    assert torch.isfinite(out[0]).tolist() == [True, False, False, False, True]
    assert torch.isfinite(apply_top_p(LOGITS, torch.tensor([1.0]))).all()


def test_choose_never_picks_a_masked_character():
    logits = torch.tensor([[0.0, float("-inf"), float("-inf")]])
    for u in (0.0, 0.5, 0.999999999999, 1 - 2**-53):
        assert choose(logits, torch.tensor([1.0]), torch.tensor([u])).item() == 0


def test_seeds_reproduce_and_rows_are_independent():
    p = SamplingParams(temperature=1.0)
    assert torch.equal(draws(p, 200, seed=7), draws(p, 200, seed=7))
    assert not torch.equal(draws(p, 200, seed=7), draws(p, 200, seed=8))
    # row 0 in a batch with other requests draws exactly what it draws alone
    batch = LOGITS.repeat(3, 1)
    rngs = [random.Random(7), random.Random(99), random.Random(5)]
    params = [p, SamplingParams(temperature=0), SamplingParams(temperature=0.5, top_k=2)]
    together = torch.stack([sample_next(batch, params, rngs) for _ in range(200)])[:, 0]
    assert torch.equal(together, draws(p, 200, seed=7))


def test_repetition_penalty_discourages_seen_characters():
    logits = torch.tensor([[2.0, -1.0, 1.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, -1]]), torch.tensor([2.0]))
    assert out.tolist() == [[1.0, -2.0, 1.0]]


def test_params_validation():
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=0), dict(top_p=1.5), dict(repetition_penalty=0)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_find_stop_and_holdback():
    assert find_stop("hello world", ["wor", "lo"]) == 3
    assert find_stop("hello world", ["xyz"]) is None
    assert find_stop("abcSTOP", ["STOP"], start=6) == 3   # match ending in new text
    assert find_stop("STOPabc", ["STOP"], start=6) is None  # old match was handled already
    assert holdback("hello ST", ["STOP"]) == 2
    assert holdback("hello", ["STOP", "lo!"]) == 2
    assert holdback("hello", ["xyz"]) == 0
