"""Several models in one server (service/core/registry.py): the models directory, `model` on every
endpoint, load on first use and LRU unloading, hot reload without dropping a request, and ids and
files that must never reach the file system."""
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from model import CharRNN, ModelConfig, Vocab
from model.checkpoint import save_weights

GREEK = Vocab(sorted(set("αβγδεζηθικλμνξοπρστυφχψω \n")))
LATIN = Vocab(sorted(set("abcdefghijklmnopqrstuvwxyz .,\n")))


def write_model(folder: Path, name: str, vocab: Vocab = GREEK, seed: int = 0, hidden: int = 16, layers: int = 1):
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(len(vocab), embed=8, hidden=hidden, layers=layers, dropout=0.0)).eval()
    save_weights(model, vocab, folder / name, {"training": {"best_val_loss": 2.5, "best_val_bpc": 3.6}})
    return model


@pytest.fixture
def models(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    write_model(d, "tiny", LATIN, layers=2)
    write_model(d, "greek", GREEK)
    return d


@pytest.fixture
def app_of(models):
    from service import create_app
    from service.settings import Settings

    apps = []

    def make(**overrides):
        app = create_app(Settings(**{"weights": str(models / "tiny"), "models_dir": str(models), "device": "cpu",
                                     "data_dir": str(models.parent / "data"),
                                     **overrides}))
        apps.append(app)
        return app
    yield make
    for app in apps:
        app.extensions["charrnn"].engine.stop()


def cards(client) -> dict:
    r = client.get("/v1/models")
    assert r.status_code == 200
    return {m["id"]: m for m in r.get_json()["data"]}


def complete(client, model, prompt="αβ", **kw):
    return client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 12, "seed": 3, **kw})


def test_every_pair_of_the_directory_is_a_model_with_its_card(app_of, models):
    client = app_of().test_client()
    got = cards(client)
    assert set(got) == {"tiny", "greek"}
    g = got["greek"]
    assert g["vocab"] == GREEK.chars and g["vocab_size"] == len(GREEK) and g["cell"] == "lstm"
    assert (g["layers"], g["hidden"]) == (1, 16) and g["parameters"] > 0
    assert g["validation"] == {"loss": 2.5, "bpc": 3.6, "protocol": "training", "split": None}
    import hashlib
    assert g["sha256"] == hashlib.sha256((models / "greek.safetensors").read_bytes()).hexdigest()
    assert g["loaded"] is False and got["tiny"]["loaded"] is True and got["tiny"]["default"] is True
    assert client.get("/v1/models/greek").get_json() == g
    # a stray file without its pair, or a name that is not an id, is no model
    (models / "half.safetensors").write_bytes(b"x")
    (models / "bad name.safetensors").write_bytes(b"x")
    (models / "bad name.json").write_text("{}")
    assert set(cards(client)) == {"tiny", "greek"}


def test_model_on_every_endpoint_follows_that_models_vocabulary(app_of):
    client = app_of().test_client()
    r = client.post("/predict-next", json={"text": "αβγ", "model": "greek", "top_k": 5})
    assert r.status_code == 200 and r.get_json()["model"] == "greek"
    assert {p["char"] for p in r.get_json()["predictions"]} <= set(GREEK.chars)
    r = client.post("/generate", json={"prompt": "αβ", "model": "greek", "max_new_chars": 20, "seed": 1})
    assert r.status_code == 200 and set(r.get_json()["completions"][0]["text"]) <= set(GREEK.chars)
    r = client.post("/inspect", json={"text": "αβγ", "model": "greek"})
    assert r.status_code == 200 and len(r.get_json()["chars"]) == 3
    # absent: the default model, whose vocabulary has no Greek
    r = client.post("/predict-next", json={"text": "αβγ"})
    assert r.status_code == 422 and r.get_json()["error"]["type"] == "unknown_characters"
    r = complete(client, "greek")
    assert r.status_code == 200 and r.get_json()["model"] == "greek"
    # the same seed gives the same text through both APIs, for a model that is not the default too
    a = client.post("/generate", json={"prompt": "αβ", "model": "greek", "max_new_chars": 12, "seed": 3,
                                       "temperature": 1.0}).get_json()["completions"][0]["text"]
    assert a == r.get_json()["choices"][0]["text"]


@pytest.mark.parametrize("name", ["nope", "../tiny", "tiny/../tiny", ".tiny", "tiny.json", "x" * 65, "ti\x00ny",
                                  "tiny.safetensors", "%2e%2e", "ünï", " tiny", ""])
def test_unknown_and_hostile_ids_are_a_404_listing_the_ids_in_each_apis_shape(app_of, name):
    client = app_of().test_client()
    r = client.post("/generate", json={"model": name, "prompt": "ab"})
    assert r.status_code == 404, r.get_json()
    e = r.get_json()["error"]
    assert e["type"] == "model_not_found" and e["details"][0]["models"] == ["greek", "tiny"]
    r = complete(client, name, prompt="ab")
    assert r.status_code == 404
    assert r.get_json()["error"] == {"message": e["message"], "type": "invalid_request_error", "param": "model",
                                     "code": "model_not_found"}
    if name and "\x00" not in name:
        r = client.get(f"/v1/models/{name}")
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "model_not_found"


def test_a_symlink_out_of_the_directory_is_never_read(app_of, models, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    write_model(outside, "secret")
    for suffix in (".safetensors", ".json"):
        os.symlink(outside / f"secret{suffix}", models / f"secret{suffix}")
    client = app_of().test_client()
    assert "secret" not in cards(client)
    assert complete(client, "secret").status_code == 404


def test_lru_unloads_the_least_recently_used_idle_model_never_the_default(app_of, models):
    write_model(models, "third", GREEK, seed=1)
    client = app_of(max_loaded=2).test_client()
    assert complete(client, "greek").status_code == 200
    assert [m for m, c in cards(client).items() if c["loaded"]] == ["greek", "tiny"]
    assert complete(client, "third").status_code == 200  # greek is least recently used: it makes room
    assert sorted(m for m, c in cards(client).items() if c["loaded"]) == ["third", "tiny"]
    assert complete(client, "greek").status_code == 200  # and loads again on its next request
    assert sorted(m for m, c in cards(client).items() if c["loaded"]) == ["greek", "tiny"]
    info = client.get("/info").get_json()["models"]
    assert info["loaded"] == ["greek", "tiny"] and info["max_loaded"] == 2
    metrics = client.get("/metrics").data.decode()
    assert 'charrnn_model_loads_total{model="greek",result="unloaded"} 1.0' in metrics
    assert 'charrnn_model_loaded{model="third"} 0.0' in metrics


def test_a_model_with_work_in_flight_is_not_unloaded(app_of, models):
    write_model(models, "third", GREEK, seed=1)
    app = app_of(max_loaded=2, stream_interval_ms=0)
    client = app.test_client()
    resp = client.post("/generate", json={"model": "greek", "prompt": "α", "max_new_chars": 2000, "stream": True},
                       buffered=False)
    chunks = resp.response  # the stream is open: greek has work in flight
    next(iter(chunks))
    assert complete(client, "third").status_code == 200
    assert sorted(m for m, c in cards(client).items() if c["loaded"]) == ["greek", "third", "tiny"]
    body = b"".join(chunks).decode()
    assert '"finish_reason": "length"' in body and body.rstrip().endswith("data: [DONE]")
    resp.close()


def test_hot_reload_serves_new_weights_from_the_next_request(app_of, models):
    client = app_of().test_client()
    before = complete(client, "greek").get_json()["choices"][0]["text"]
    old_sha = cards(client)["greek"]["sha256"]
    write_model(models, "greek", GREEK, seed=7)  # model.train's way: temp files renamed over the pair
    card = cards(client)["greek"]
    assert card["reload_pending"] is True and card["sha256"] == old_sha  # still what is served
    after = complete(client, "greek").get_json()["choices"][0]["text"]
    assert after != before
    card = cards(client)["greek"]
    assert card["sha256"] != old_sha and card["reload_pending"] is False and card["error"] is None
    write_model(models, "added", LATIN, seed=2)  # a new pair: served without a restart
    assert complete(client, "added", prompt="ab").status_code == 200


def test_a_reload_in_progress_does_not_hold_up_the_models_other_requests(app_of, models):
    """While one request reads and loads a model's new files, the others are answered by the weights
    already serving instead of queueing behind that load."""
    app = app_of()
    client = app.test_client()
    before = complete(client, "greek").get_json()["choices"][0]["text"]
    registry = app.extensions["charrnn"].registry
    read, reading = registry._read, threading.Event()

    def slow_read(prefix):  # the new files' read and hash, made slow
        reading.set()
        time.sleep(3)
        return read(prefix)
    registry._read = slow_read
    write_model(models, "greek", GREEK, seed=7)
    loader = threading.Thread(target=lambda: complete(app.test_client(), "greek"))
    loader.start()
    assert reading.wait(10)
    t0 = time.monotonic()
    during = complete(client, "greek").get_json()["choices"][0]["text"]
    assert time.monotonic() - t0 < 2.5 and during == before  # the old weights, without waiting
    loader.join()
    registry._read = read
    assert complete(client, "greek").get_json()["choices"][0]["text"] != before


def test_a_stream_in_flight_finishes_on_the_weights_it_started_with(app_of, models):
    """The reload happens mid-stream; the stream's text is exactly the old weights' text."""
    client = app_of(stream_interval_ms=0).test_client()
    body = {"model": "greek", "prompt": "α", "max_new_chars": 300, "seed": 5, "temperature": 1.0}
    reference = client.post("/generate", json=body).get_json()["completions"][0]["text"]
    resp = client.post("/generate", json={**body, "stream": True}, buffered=False)
    it = iter(resp.response)
    first = next(it)
    write_model(models, "greek", GREEK, seed=9)
    assert complete(client, "greek").status_code == 200  # the reload: new requests get the new weights
    events = [json.loads(line[6:]) for line in (first + b"".join(it)).decode().splitlines()
              if line.startswith("data: {")]
    assert "".join(e["text"] for e in events) == reference
    assert client.post("/generate", json=body).get_json()["completions"][0]["text"] != reference


@pytest.mark.parametrize("breakage", ["garbage", "truncated", "mismatched", "bad json"])
def test_a_broken_pair_never_replaces_a_working_model(app_of, models, breakage):
    client = app_of().test_client()
    good = complete(client, "greek").get_json()["choices"][0]["text"]
    sha = cards(client)["greek"]["sha256"]
    w, j = models / "greek.safetensors", models / "greek.json"
    if breakage == "garbage":
        w.write_bytes(os.urandom(4096))
    elif breakage == "truncated":
        w.write_bytes(w.read_bytes()[:-100])
    elif breakage == "mismatched":  # a card of another shape beside these weights
        card = json.loads(j.read_text())
        card["config"]["hidden"] = 32
        j.write_text(json.dumps(card))
    else:
        j.write_text("{not json")
    r = complete(client, "greek")
    assert r.status_code == 200 and r.get_json()["choices"][0]["text"] == good  # the old one keeps serving
    card = cards(client)["greek"]
    assert card["error"] and card["sha256"] == sha and card["loaded"]
    write_model(models, "greek", GREEK, seed=4)  # fixed: served by the next request
    assert complete(client, "greek").get_json()["choices"][0]["text"] != good
    assert cards(client)["greek"]["error"] is None


def test_a_broken_model_never_loaded_is_a_503_that_says_why(app_of, models):
    (models / "broken.safetensors").write_bytes(b"\x00" * 64)
    (models / "broken.json").write_text(json.dumps({"vocab": ["a", "b"], "config": {"embed": 4, "hidden": 4,
                                                                                     "layers": 1}}))
    client = app_of().test_client()
    r = client.post("/generate", json={"model": "broken", "prompt": "ab"})
    assert r.status_code == 503 and r.get_json()["error"]["type"] == "model_unavailable"
    assert "cannot load" in r.get_json()["error"]["message"]
    assert cards(client)["broken"]["error"]


def test_a_load_slower_than_the_request_is_not_a_broken_model(app_of):
    """A load that outlives its request's deadline (here: the engine thread held busy) answers 503
    model_loading, keeps going, and the model serves once it is done: never 'cannot be loaded'."""
    app = app_of(request_timeout_s=0.5)
    client = app.test_client()
    gate = threading.Event()
    app.extensions["charrnn"].engine.call(lambda: gate.wait(10))  # the engine is busy: the load queues
    r = client.post("/generate", json={"model": "greek", "prompt": "αβ", "max_new_chars": 4})
    assert r.status_code == 503 and r.get_json()["error"]["type"] == "model_loading", r.data
    assert r.headers["Retry-After"]
    gate.set()
    for _ in range(100):  # each retry waits up to 0.5 s on the same build, which never restarts
        r = client.post("/generate", json={"model": "greek", "prompt": "αβ", "max_new_chars": 4})
        if r.status_code == 200:
            break
        assert r.get_json()["error"]["type"] == "model_loading", r.data
    assert r.status_code == 200
    assert cards(client)["greek"]["error"] is None
    text = client.get("/metrics").data.decode()
    assert 'charrnn_model_loads_total{model="greek",result="loaded"} 1.0' in text
    assert 'result="error"' not in text


def test_files_over_the_size_cap_are_not_read(app_of, models):
    write_model(models, "big", GREEK, hidden=64)
    client = app_of(max_model_bytes=25_000).test_client()  # tiny, the default, fits
    r = complete(client, "big")
    assert r.status_code == 503 and "limit" in r.get_json()["error"]["message"]


def test_deleted_files_unload_the_model(app_of, models):
    client = app_of().test_client()
    assert complete(client, "greek").status_code == 200
    (models / "greek.safetensors").unlink()
    assert complete(client, "greek").status_code == 404
    assert "greek" not in cards(client)


def test_concurrent_first_requests_load_a_model_once(app_of):
    app = app_of()
    results = []

    def ask():
        results.append(complete(app.test_client(), "greek").status_code)
    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6
    text = app.test_client().get("/metrics").data.decode()
    assert 'charrnn_model_loads_total{model="greek",result="loaded"} 1.0' in text
    # the first request waited for the load and is counted as a success, under its model
    assert 'charrnn_requests_total{endpoint="/v1/completions",model="greek",status="200"} 6.0' in text


def test_preload_loads_at_start(app_of):
    client = app_of(preload="all").test_client()
    assert all(c["loaded"] for c in cards(client).values())


def test_the_drain_answers_v1_in_openais_shape(app_of):
    app = app_of()
    client = app.test_client()
    app.extensions["charrnn_drain"].begin(60)
    r = complete(client, "greek")
    assert r.status_code == 503
    assert r.get_json()["error"]["code"] == "shutting_down" and set(r.get_json()["error"]) == {
        "message", "type", "param", "code"}
    r = client.post("/generate", json={"prompt": "ab"})
    assert r.status_code == 503 and r.get_json()["error"]["type"] == "shutting_down"


def test_models_endpoints_are_behind_the_key(app_of):
    client = app_of(api_key="k1").test_client()
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models/greek").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_new_weights_beside_the_old_card_wait_for_their_own_card(app_of, models, tmp_path):
    """Between save_weights' two renames the new weights sit beside the old card; the card names its
    weights' sha256, so that half-replaced pair is never served, even when the shapes match."""
    client = app_of().test_client()
    old = complete(client, "greek").get_json()["choices"][0]["text"]
    staging = tmp_path / "staging"
    staging.mkdir()
    write_model(staging, "greek", GREEK, seed=11)
    os.replace(staging / "greek.safetensors", models / "greek.safetensors")  # the first rename only
    assert complete(client, "greek").get_json()["choices"][0]["text"] == old
    assert "names other weights" in cards(client)["greek"]["error"]
    os.replace(staging / "greek.json", models / "greek.json")  # the second
    assert complete(client, "greek").get_json()["choices"][0]["text"] != old
    assert cards(client)["greek"]["error"] is None
