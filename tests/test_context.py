"""The prefill window (CHARRNN_MAX_CONTEXT): what is read afresh, what continues from the cache."""
import json

import pytest
import torch

from service.core.registry import context_window
from service.settings import Settings

LONG = "the quick brown fox jumps over the lazy dog. " * 3


def probs_after(app, text: str) -> torch.Tensor:
    """The model's next-char distribution after reading `text` from the start state (direct)."""
    lane = app.extensions["charrnn"].registry.lane(None)
    with torch.no_grad():
        logits, _ = lane.model(torch.tensor([lane.vocab.encode(text).tolist()]), lane.model.init_hidden(1), infer=True)
    return torch.softmax(logits[0, -1].double(), -1)


def served(client, text: str) -> dict:
    body = client.post("/predict-next", json={"text": text, "top_k": 1000}).get_json()
    return {p["char"]: p["prob"] for p in body["predictions"]}


def assert_same(app, got: dict, want: torch.Tensor):
    chars = app.extensions["charrnn"].registry.lane(None).vocab.chars
    for ch, p in got.items():
        assert p == pytest.approx(want[chars.index(ch)].item(), rel=1e-4, abs=1e-7)


def test_a_long_text_is_read_from_its_last_n_characters(make_app):
    app = make_app(max_context=3, precision="fp32", prefix_cache=0)
    client = app.test_client()
    got = served(client, LONG)
    assert_same(app, got, probs_after(app, LONG[-3:]))
    full = probs_after(app, LONG)  # the window really changes the answer of this (random) model
    assert max(abs(p - full[app.extensions["charrnn"].registry.lane(None).vocab.chars.index(ch)].item()) for ch, p in got.items()) > 1e-4
    assert client.get("/info").get_json()["limits"]["max_context"] == 3


def test_an_extension_of_a_cached_text_continues_from_the_cached_state(make_app):
    app = make_app(max_context=3, precision="fp32", prefix_cache=16)
    client = app.test_client()
    served(client, LONG)            # read as its last 3 characters; its state is cached under LONG
    got = served(client, LONG + "ab")  # 2 new characters: continue from the cached state
    assert_same(app, got, probs_after(app, LONG[-3:] + "ab"))
    far = LONG + "x" * 5           # more new text than the window: read afresh, last 3 only
    assert_same(app, served(client, far), probs_after(app, far[-3:]))


def test_zero_reads_everything(make_app):
    app = make_app(max_context=0, precision="fp32", prefix_cache=0)
    assert_same(app, served(app.test_client(), LONG), probs_after(app, LONG))


def test_the_default_window_comes_from_the_card(tiny_weights):
    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    assert context_window(Settings(), card) == 0  # no recommendation: read all
    card["inference"] = {"max_context": 96}
    assert context_window(Settings(), card) == 96
    assert context_window(Settings(max_context=0), card) == 0  # the setting wins, 0 included
    assert Settings.from_env({"CHARRNN_MAX_CONTEXT": "40"}).max_context == 40
