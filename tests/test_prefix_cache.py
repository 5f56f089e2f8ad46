"""Prefix cache: repeated and extended prompts reuse the LSTM state, with the same answers."""
import pytest
import torch

from model.state import State
from service.engine.prefix_cache import PrefixCache


def test_lru_longest_prefix_and_eviction():
    cache = PrefixCache(size=2, lookback=3)
    t = torch.zeros(1, 1)
    s = State([torch.zeros(2, 1, 4), torch.zeros(2, 1, 4)])  # opaque to the cache: any cell's
    cache.put([1, 2, 3], s, t + 1)
    cache.put([1, 2], s, t + 2)
    assert cache.nbytes == 2 * (s.nbytes + 4)
    n, (state, logits) = cache.get([1, 2, 3, 4, 5])
    assert n == 3 and logits.item() == 1 and state.batch == 1  # the longest cached prefix wins
    assert cache.get([1, 2, 3, 4, 5, 6, 7]) is None  # beyond the look-back
    cache.put([9], State([torch.zeros(2, 1, 4)]), t)  # evicts the least recently used: [1, 2]
    assert cache.get([1, 2]) is None
    assert cache.get([1, 2, 3])[0] == 3
    assert (cache.hits, cache.lookups) == (2, 4)
    assert cache.nbytes == s.nbytes + 4 + s.nbytes // 2 + 4
    cache.put([9], s, t)  # replacing an entry counts its bytes once
    assert cache.nbytes == 2 * (s.nbytes + 4)


def predictions(client, text):
    r = client.post("/predict-next", json={"text": text, "top_k": 10})
    assert r.status_code == 200
    return r.get_json()["predictions"]


@pytest.mark.parametrize("tiny_model", ["lstm", "gru", "rnn"], indirect=True)
def test_cached_and_uncached_answers_agree(make_app):
    cached = make_app(prefix_cache=64).test_client()
    plain = make_app(prefix_cache=0).test_client()
    lane = cached.application.extensions["charrnn"].registry.lane(None)
    texts = ["the quick brown fox", "the quick brown fox", "the quick brown fox jum", "the quick brown fox jumps."]
    for text in texts:
        a, b = predictions(cached, text), predictions(plain, text)
        assert [p["char"] for p in a] == [p["char"] for p in b]
        for p, q in zip(a, b):
            assert p["prob"] == pytest.approx(q["prob"], abs=1e-5)
    assert lane.cache.hits == 3  # the repeat, and each extension of a text seen before
    req = {"prompt": "the lazy dog", "max_new_chars": 50, "seed": 9, "temperature": 1.0}
    first = cached.post("/generate", json=req).get_json()
    assert cached.post("/generate", json=req).get_json() == first == plain.post("/generate", json=req).get_json()
    assert lane.cache.hits == 4
    metrics = cached.get("/metrics").data.decode()
    assert 'charrnn_prefix_cache_hits{model="tiny"} 4.0' in metrics
    assert f'charrnn_prefix_cache_bytes{{model="tiny"}} {float(lane.cache.nbytes)}' in metrics and lane.cache.nbytes > 0
