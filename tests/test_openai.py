"""The official `openai` client against a real gunicorn server: /v1/models and /v1/completions
as OpenAI's own client sees them, and the same text as /generate for the same seed."""
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import ROOT

openai = pytest.importorskip("openai")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(weights: Path, **env_extra):
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "CHARRNN_WEIGHTS": str(weights), "CHARRNN_MODELS_DIR": str(weights.parent),
           "CHARRNN_DATA_DIR": str(weights.parent / "data"), "CHARRNN_TRAINER": "off",
           "WEB_CONCURRENCY": "1", "CHARRNN_HTTP_THREADS": "16", **env_extra}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(base + "/ready", timeout=1)
            return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gunicorn did not become ready")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from model import CharRNN, ModelConfig, Vocab
    from model.checkpoint import save_weights

    torch.manual_seed(0)
    vocab = Vocab(sorted(set("abcdefghijklmnopqrstuvwxyz .,\n")))
    model = CharRNN(ModelConfig(len(vocab), embed=8, hidden=16, layers=2, dropout=0.0)).eval()
    path = tmp_path_factory.mktemp("w") / "tiny"
    save_weights(model, vocab, path, {})
    return path


@pytest.fixture(scope="module")
def server(weights):
    proc, base = _serve(weights)
    yield base
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def post(base, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def test_models_lists_the_served_model_and_its_vocabulary(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"] and models[0].object == "model"
    assert models[0].model_extra["vocab"][4] == "a"
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_completion_is_the_same_text_as_generate_with_the_same_seed(client, server):
    r = client.completions.create(model="tiny", prompt="the ", max_tokens=40, seed=11, temperature=0.9, top_p=0.95)
    c = r.choices[0]
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "tiny"
    assert len(c.text) == 40 and c.finish_reason == "length" and c.index == 0 and c.logprobs is None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (4, 40, 44)
    g = post(server, "/generate", {"prompt": "the ", "max_new_chars": 40, "seed": 11, "temperature": 0.9, "top_p": 0.95})
    assert g["completions"][0]["text"] == c.text
    again = client.completions.create(model="tiny", prompt="the ", max_tokens=40, seed=11, temperature=0.9, top_p=0.95)
    other = client.completions.create(model="tiny", prompt="the ", max_tokens=40, seed=12, temperature=0.9, top_p=0.95)
    assert again.choices[0].text == c.text != other.choices[0].text


def test_default_max_tokens_is_16_as_openai(client):
    assert len(client.completions.create(model="tiny", prompt="a", seed=1).choices[0].text) == 16


def test_n_and_list_prompts_give_one_group_of_choices_per_prompt(client, server):
    r = client.completions.create(model="tiny", prompt=["the ", "a cat"], n=2, max_tokens=12, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    g = post(server, "/generate", {"prompt": "a cat", "max_new_chars": 12, "seed": 5, "n": 2, "temperature": 1.0})
    assert [c.text for c in r.choices[2:]] == [c["text"] for c in g["completions"]]
    assert r.usage.prompt_tokens == 4 + 5 and r.usage.completion_tokens == 4 * 12
    # a list of vocabulary indices is a prompt too
    ids = client.completions.create(model="tiny", prompt=[23, 11, 8, 1], max_tokens=12, seed=5)  # "the "
    assert ids.choices[0].text == r.choices[0].text


def test_streaming_sends_the_same_text_then_finish_reason_and_usage(client):
    plain = client.completions.create(model="tiny", prompt="the ", max_tokens=30, seed=3, n=2)
    chunks = list(client.completions.create(model="tiny", prompt="the ", max_tokens=30, seed=3, n=2, stream=True,
                                            stream_options={"include_usage": True}))
    for i in range(2):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == i]
        assert "".join(c.text for c in mine) == plain.choices[i].text
        assert [c.finish_reason for c in mine][-1] == "length" and all(c.finish_reason is None for c in mine[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 60


def test_stop_ends_a_choice_without_the_stop_string(client):
    r = client.completions.create(model="tiny", prompt="the ", max_tokens=300, seed=2, stop=["e", "zz"])
    c = r.choices[0]
    assert c.finish_reason == "stop" and "e" not in c.text and len(c.text) < 300
    full = client.completions.create(model="tiny", prompt="the ", max_tokens=300, seed=2).choices[0].text
    assert full.startswith(c.text + "e") or full.startswith(c.text + "zz")


def test_logprobs_are_the_models_own_and_match_predict_next(client, server):
    r = client.completions.create(model="tiny", prompt="the ", max_tokens=8, seed=4, logprobs=3, temperature=0.5)
    lp = r.choices[0].logprobs
    text = r.choices[0].text
    assert lp.tokens == list(text) and lp.text_offset == list(range(8))
    for ch, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert v <= 0 and top[ch] == pytest.approx(v) and len(top) in (3, 4)
        assert sum(math.exp(x) for x in top.values()) <= 1 + 1e-6
    nxt = post(server, "/predict-next", {"text": "the ", "top_k": 30})["predictions"]
    by_char = {p["char"]: p["logprob"] for p in nxt}
    assert lp.token_logprobs[0] == pytest.approx(by_char[text[0]], abs=1e-4)


def test_echo_scores_the_prompt_first_character_null(client, server):
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=0, echo=True, logprobs=2)
    c = r.choices[0]
    assert c.text == "the cat" and c.logprobs.tokens == list("the cat")
    assert c.logprobs.token_logprobs[0] is None and c.logprobs.top_logprobs[0] is None
    nxt = post(server, "/predict-next", {"text": "the c", "top_k": 30})["predictions"]
    assert c.logprobs.token_logprobs[5] == pytest.approx({p["char"]: p["logprob"] for p in nxt}["a"], abs=1e-4)
    gen = client.completions.create(model="tiny", prompt="the ", max_tokens=5, echo=True, seed=1)
    assert gen.choices[0].text.startswith("the ") and len(gen.choices[0].text) == 9


def test_logit_bias_bans_a_character(client):
    vocab = client.models.retrieve("tiny").model_extra["vocab"]
    args = dict(model="tiny", prompt="the ", max_tokens=300, seed=9, temperature=1.5)
    assert "e" in client.completions.create(**args).choices[0].text
    banned = client.completions.create(**args, logit_bias={str(vocab.index("e")): -100}).choices[0].text
    assert "e" not in banned and len(banned) == 300


def test_presence_and_frequency_penalties_are_accepted_and_change_the_text(client):
    args = dict(model="tiny", prompt="the ", max_tokens=60, seed=9)
    base = client.completions.create(**args).choices[0].text
    assert client.completions.create(**args, frequency_penalty=2.0, presence_penalty=1.0, user="u1").choices[0].text != base


def test_regex_extension_constrains_the_choice(client):
    pat = r"(yes|no), [a-z]{2,5}\."
    r = client.completions.create(model="tiny", prompt="the ", max_tokens=50, seed=1, extra_body={"regex": pat})
    assert re.fullmatch(pat, r.choices[0].text) and r.choices[0].finish_reason == "stop"


def test_bad_requests_raise_the_clients_error_classes(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", temperature=3)
    assert e.value.body["param"] == "temperature" and e.value.body["type"] == "invalid_request_error"
    for kw, param in ((dict(best_of=2), "best_of"), (dict(suffix="end"), "suffix"), (dict(prompt="Ω"), "prompt"),
                      (dict(logit_bias={"999": 1}), "logit_bias"), (dict(extra_body={"regex": "(a"}), "regex")):
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(**{"model": "tiny", "prompt": "x", **kw})
        assert e.value.body["param"] == param, kw
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x")
    assert e.value.body["code"] == "model_not_found"


def test_a_full_queue_is_a_rate_limit_error_with_retry_after(weights):
    # one slot, no queue, and a stream long enough to hold the slot for the whole test
    proc, base = _serve(weights, CHARRNN_MAX_BATCH="1", CHARRNN_MAX_QUEUE="0", CHARRNN_MAX_NEW_CHARS="10000000")
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        busy = client.completions.create(model="tiny", prompt="a", max_tokens=10_000_000, stream=True)
        next(iter(busy))  # the one slot is taken while this stream runs
        with pytest.raises(openai.RateLimitError) as e:
            client.completions.create(model="tiny", prompt="b", max_tokens=5)
        assert e.value.response.headers["retry-after"] == "1" and e.value.body["type"] == "rate_limit_error"
        busy.close()
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_client_chooses_models_by_name_and_sees_a_new_one_without_a_restart(client, server, weights):
    """Several models behind one base_url, as the official client addresses them; a pair written
    into the models directory while the server runs is listed and answers at once."""
    from model import CharRNN, ModelConfig, Vocab
    from model.checkpoint import save_weights

    torch.manual_seed(1)
    greek = Vocab(sorted(set("αβγδεζηθικλμνξοπρστυφχψω \n")))
    save_weights(CharRNN(ModelConfig(len(greek), embed=8, hidden=16, layers=1, dropout=0.0)).eval(), greek,
                 weights.parent / "greek", {})
    try:
        assert {m.id for m in client.models.list().data} == {"tiny", "greek"}
        card = client.models.retrieve("greek")
        assert card.id == "greek" and card.vocab == greek.chars  # the card's extra fields reach the client
        r = client.completions.create(model="greek", prompt="αβ", max_tokens=20, seed=2)
        assert r.model == "greek" and set(r.choices[0].text) <= set(greek.chars)
        # streamed: every chunk names the model, and no character is cut (each text is whole characters)
        chunks = list(client.completions.create(model="greek", prompt="αβ", max_tokens=20, seed=2, stream=True))
        assert {c.model for c in chunks} == {"greek"}
        assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
        r = client.completions.create(model="tiny", prompt="ab", max_tokens=5, seed=2)
        assert r.model == "tiny" and set(r.choices[0].text) <= set("abcdefghijklmnopqrstuvwxyz .,\n")
        with pytest.raises(openai.NotFoundError) as e:
            client.completions.create(model="gpt-4", prompt="ab", max_tokens=5)
        assert e.value.code == "model_not_found" and "greek, tiny" in e.value.message
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("../tiny")
    finally:
        for suffix in (".safetensors", ".json"):
            (weights.parent / f"greek{suffix}").unlink()
