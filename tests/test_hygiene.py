"""Hostile but well-formed-looking input: every case is a 4xx in the API's error shape naming
the field, never a 500 and never a silently wrong 200."""
import json
import math

import pytest
import torch

from model.sampling import apply_temperature, apply_top_p, sample_next, SamplingParams


def post_raw(client, path, raw: str | bytes):
    return client.post(path, data=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("raw,field", [
    ('{"prompt": "a\\ud800b"}', "prompt"),                      # a lone UTF-16 surrogate
    ('{"stop": ["\\udc00"]}', "stop"),
    ('{"temperature": Infinity}', "temperature"),               # Python's json reads these ...
    ('{"temperature": NaN}', "temperature"),
    ('{"repetition_penalty": 1e999}', "repetition_penalty"),    # ... and this is inf too
    ('{"top_p": -Infinity}', "top_p"),
    ('{"top_k": 100000000000000000000000000000}', "top_k"),   # once a 500 from the engine
    ('{"seed": 1e300}', "seed"),
    ('{"max_new_chars": 2.5}', "max_new_chars"),
    ('{"n": 99999999999999999999}', "n"),
    ('{"repetition_penalty": 1e-300}', "repetition_penalty"),  # 0 in float32: a division by zero
    ('{"\\ud800": 1}', "(body)"),                               # a key that is not text
])
def test_bad_values_are_422_naming_the_field(client, raw, field):
    r = post_raw(client, "/generate", raw)
    assert r.status_code == 422, r.data
    err = r.get_json()["error"]
    assert err["type"] == "validation_error" and field in err["message"]
    assert [d["field"] for d in err["details"]] == [field]


@pytest.mark.parametrize("raw", ['[' * 100_000 + ']' * 100_000, '{"a": ' * 50_000 + '1' + '}' * 50_000,
                                 '{"prompt": "a"', b'{"prompt": "\xff"}', '{"seed": 1' + '0' * 5000 + '}'])
def test_undecodable_bodies_are_400(client, raw):
    r = post_raw(client, "/generate", raw)
    assert r.status_code == 400 and r.get_json()["error"]["type"] == "bad_request"


def test_an_integer_written_as_a_float_is_an_integer(client):
    """OpenAPI's integer is JSON Schema's: 2.0 is one (and 2.5 is not, above)."""
    r = client.post("/generate", json={"prompt": "ab", "max_new_chars": 5.0, "n": 2.0, "seed": 3.0, "temperature": 0})
    assert r.status_code == 200
    assert [c["generated_chars"] for c in r.get_json()["completions"]] == [5, 5]


def test_top_k_beyond_the_vocabulary_means_all(client):
    body = {"prompt": "ab", "max_new_chars": 30, "seed": 5, "temperature": 1.0}
    everything = client.post("/generate", json=body).get_json()["completions"]
    assert client.post("/generate", json={**body, "top_k": 1000}).get_json()["completions"] == everything
    assert client.post("/generate", json={**body, "top_k": 1001}).status_code == 422  # max_top_k


def test_a_tiny_temperature_is_greedy_not_garbage(client):
    greedy = client.post("/generate", json={"prompt": "the ", "max_new_chars": 40, "temperature": 0}).get_json()
    for t in (1e-40, 1e-300, 5e-324):
        r = client.post("/generate", json={"prompt": "the ", "max_new_chars": 40, "temperature": t, "seed": 1})
        assert r.get_json()["completions"] == greedy["completions"], t
        p = client.post("/predict-next", json={"text": "the ", "temperature": t}).get_json()["predictions"]
        assert p[0]["prob"] == 1.0 and p[0]["char"] == greedy["completions"][0]["text"][0]
        assert all(x["prob"] == 0.0 or x is p[0] for x in p)


def test_sampler_transforms_stay_finite_at_the_extremes():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0], [0.0, 0.1, 0.2, 0.3, 0.4]])
    hot = apply_temperature(logits, torch.tensor([1e-40, 1e-45]))
    assert not hot.isnan().any() and hot.softmax(-1).argmax(-1).tolist() == [4, 4]
    kept = apply_top_p(logits, torch.tensor([1e-300, 1e-50]))  # 0 once in float32
    assert torch.isfinite(kept).sum(-1).tolist() == [1, 1]
    import random
    ids = sample_next(logits, [SamplingParams(temperature=1e-40), SamplingParams(temperature=1.0, top_p=1e-300)],
                      [random.Random(0), random.Random(1)])
    assert ids.tolist() == [4, 4]


def test_errors_never_echo_what_they_reject(client):
    r = post_raw(client, "/generate", json.dumps({"prompt": "x" * 9000}))  # over max_prompt_chars
    assert r.status_code == 422 and "xxxx" not in r.get_data(as_text=True)
    assert math.isfinite(len(r.data))
