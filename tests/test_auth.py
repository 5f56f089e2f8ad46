"""Optional API keys: Bearer keys in constant time, 401 in each API's own error shape, the
probes open, /metrics open only on request, keys never in /info or the logs."""
import logging

import pytest


@pytest.fixture
def keyed(make_app, tmp_path):
    secret = tmp_path / "keys"
    secret.write_text("from-file-key\n")
    return make_app(api_key="k-one, k-two", api_key_file=str(secret)).test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers", [{}, bearer("wrong"), {"Authorization": "k-one"}, {"Authorization": "Basic k-one"},
                                     bearer("k-one" + "x"), bearer("")])
def test_a_missing_or_wrong_key_is_401_in_our_shape(keyed, headers):
    for method, path in [("post", "/generate"), ("post", "/predict-next"), ("get", "/info"), ("get", "/metrics")]:
        r = getattr(keyed, method)(path, json={}, headers=headers)
        assert r.status_code == 401, (path, headers)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.get_json()["error"]["type"] == "unauthorized"
        assert "k-one" not in r.get_data(as_text=True)


def test_v1_paths_answer_401_in_openais_shape(keyed):
    r = keyed.post("/v1/completions", json={"prompt": "a"}, headers=bearer("nope"))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    err = r.get_json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "invalid_api_key"


@pytest.mark.parametrize("key", ["k-one", "k-two", "from-file-key"])
def test_every_configured_key_works(keyed, key):
    r = keyed.post("/generate", json={"max_new_chars": 3}, headers=bearer(key))
    assert r.status_code == 200
    assert keyed.get("/info", headers=bearer(key)).status_code == 200


def test_probes_stay_open_and_keys_stay_secret(keyed, caplog):
    assert keyed.get("/health").status_code == 200 and keyed.get("/ready").status_code == 200
    caplog.set_level(logging.DEBUG)
    info = keyed.get("/info", headers=bearer("k-two")).get_data(as_text=True)
    keyed.post("/generate", json={"max_new_chars": 2}, headers=bearer("bad-key-value"))
    for secret in ("k-one", "k-two", "from-file-key", "bad-key-value"):
        assert secret not in info and secret not in caplog.text


def test_metrics_can_be_public(make_app):
    client = make_app(api_key="k", metrics_public=True).test_client()
    assert client.get("/metrics").status_code == 200
    assert client.post("/generate", json={}).status_code == 401


def test_the_document_says_which_operations_need_the_key(keyed):
    spec = keyed.get("/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["paths"]["/generate"]["post"]["security"] == [{"bearer": []}]
    assert "401" in spec["paths"]["/info"]["get"]["responses"]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_no_key_means_open(client):
    assert client.post("/generate", json={"max_new_chars": 2}).status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").get_json()["components"]
