"""The HTTP API with a tiny random model: every endpoint and every error."""
import json
import math
import re

import pytest
import torch

from model.precision import fp16_available
from model.generate import context_ids, generate
from model.sampling import SamplingParams

# The service's contract holds whatever the cell: every test here runs against an LSTM and a GRU.
pytestmark = pytest.mark.parametrize("tiny_model", ["lstm", "gru"], indirect=True)


def sse_events(data: bytes) -> list:
    out = []
    for block in data.decode().split("\n\n"):
        if block.startswith("data: "):
            body = block[len("data: "):]
            out.append(body if body == "[DONE]" else json.loads(body))
    return out


def ctx(client):
    return client.application.extensions["charrnn"]


def test_predict_next_matches_the_model(client):
    r = client.post("/predict-next", json={"text": "the fox", "top_k": 4, "temperature": 0.7})
    assert r.status_code == 200
    body = r.get_json()
    assert body["text"] == "the fox" and len(body["predictions"]) == 4
    c = ctx(client)
    with torch.no_grad():
        logits, _ = c.registry.lane(None).model(torch.tensor([c.registry.lane(None).vocab.encode("the fox").tolist()]),
                                                infer=True)
    probs = torch.softmax(logits[0, -1].double() / 0.7, -1)
    top = torch.topk(probs, 4)
    assert [p["char"] for p in body["predictions"]] == [c.registry.lane(None).vocab.chars[i] for i in top.indices]
    for p, q in zip(body["predictions"], top.values.tolist()):
        assert p["prob"] == pytest.approx(q, rel=1e-4) and p["logprob"] == pytest.approx(math.log(q), abs=1e-4)


def test_predict_next_empty_text_and_greedy_temperature(client):
    body = client.post("/predict-next", json={"text": ""}).get_json()
    assert len(body["predictions"]) == 5 and sum(p["prob"] for p in body["predictions"]) <= 1 + 1e-9
    greedy = client.post("/predict-next", json={"text": "ab", "temperature": 0, "top_k": 3}).get_json()
    assert [p["prob"] for p in greedy["predictions"]] == [1.0]


def test_generate_matches_the_single_sequence_sampler(client):
    c = ctx(client)
    r = client.post("/generate", json={"prompt": "the ", "max_new_chars": 60, "seed": 11, "temperature": 1.0,
                                        "top_k": 10, "repetition_penalty": 1.3, "n": 2})
    assert r.status_code == 200
    body = r.get_json()
    assert body["seed"] == 11 and body["usage"] == {"prompt_chars": 4, "generated_chars": 120}
    for i, comp in enumerate(body["completions"]):  # completion i uses seed + i
        text, reason = generate(c.registry.lane(None).model, c.registry.lane(None).vocab, "the ", 60, SamplingParams(1.0, 10, None, 1.3), 11 + i)
        assert comp == {"text": text, "finish_reason": reason, "generated_chars": 60}
    assert body["completions"][0]["text"] != body["completions"][1]["text"]


def test_seed_is_reported_and_reproduces(client):
    a = client.post("/generate", json={"max_new_chars": 40, "temperature": 1.0}).get_json()
    b = client.post("/generate", json={"max_new_chars": 40, "temperature": 1.0, "seed": a["seed"]}).get_json()
    assert a == b


def test_stop_strings_end_and_are_excluded(client):
    full = client.post("/generate", json={"max_new_chars": 200, "seed": 5, "temperature": 1.0}).get_json()
    text = full["completions"][0]["text"]
    stop = text[30:32]
    cut = text.index(stop)
    r = client.post("/generate", json={"max_new_chars": 200, "seed": 5, "temperature": 1.0, "stop": [stop, "@@"]})
    comp = r.get_json()["completions"][0]
    assert comp == {"text": text[:cut], "finish_reason": "stop", "generated_chars": cut}


def test_stream_events_equal_the_plain_answer(client):
    req = {"prompt": "a", "max_new_chars": 50, "seed": 3, "temperature": 1.0, "n": 2}
    plain = client.post("/generate", json=req).get_json()
    full = plain["completions"][0]["text"]
    stop = full[20:23]
    plain = client.post("/generate", json={**req, "stop": [stop]}).get_json()
    r = client.post("/generate", json={**req, "stop": [stop], "stream": True})
    assert r.status_code == 200 and r.mimetype == "text/event-stream" and r.headers["X-Seed"] == "3"
    events = sse_events(r.data)
    assert events[-1] == "[DONE]"
    for i, comp in enumerate(plain["completions"]):
        mine = [e for e in events[:-1] if e["index"] == i]
        assert "".join(e["text"] for e in mine) == comp["text"]  # a stop string never leaks out
        assert mine[-1]["finish_reason"] == comp["finish_reason"] and all("finish_reason" not in e for e in mine[:-1])


@pytest.mark.parametrize("body,field", [
    ({"temperature": -0.1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.01}, "top_p"),
    ({"top_k": 0}, "top_k"), ({"max_new_chars": 501}, "max_new_chars"), ({"max_new_chars": 0}, "max_new_chars"),
    ({"n": 9}, "n"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": [""]}, "stop"),
    ({"stop": ["x" * 65]}, "stop"), ({"bogus": 1}, "bogus"), ({"temperature": "hot"}, "temperature"),
    ({"seed": -1}, "seed"), ({"prompt": "a" * 1001}, "prompt"), ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"stream": "yes"}, "stream"), ({"unknown_chars": "keep"}, "unknown_chars"),
])
def test_generate_field_errors_are_422_naming_the_field(make_app, body, field):
    client = make_app(max_new_chars=500, max_prompt_chars=1000).test_client()
    r = client.post("/generate", json=body)
    assert r.status_code == 422
    err = r.get_json()["error"]
    assert err["type"] == "validation_error" and field in err["message"]
    assert field in [d["field"] for d in err["details"]]


@pytest.mark.parametrize("body,field", [({"top_k": 0}, "top_k"), ({"top_k": 1001}, "top_k"),
                                        ({"temperature": -1}, "temperature"), ({"text": 5}, "text"),
                                        ({"txt": "a"}, "txt")])
def test_predict_field_errors(client, body, field):
    r = client.post("/predict-next", json=body)
    assert r.status_code == 422 and field in [d["field"] for d in r.get_json()["error"]["details"]]


def test_unknown_characters_listed_or_skipped(client):
    r = client.post("/generate", json={"prompt": "héllo wörld"})
    assert r.status_code == 422
    err = r.get_json()["error"]
    assert err["type"] == "unknown_characters" and err["details"][0]["chars"] == ["é", "ö"]
    ok = client.post("/predict-next", json={"text": "héllo", "unknown_chars": "skip"})
    assert ok.status_code == 200 and ok.get_json()["text"] == "hllo"


@pytest.mark.parametrize("kwargs,status", [
    ({"data": "{not json", "content_type": "application/json"}, 400),
    ({"data": "prompt=hi", "content_type": "application/x-www-form-urlencoded"}, 400),
    ({"data": "[1, 2]", "content_type": "application/json"}, 400),
    ({"data": "", "content_type": "application/json"}, 400),
])
def test_malformed_bodies_are_400(client, kwargs, status):
    for path in ("/generate", "/predict-next"):
        r = client.post(path, **kwargs)
        assert r.status_code == status and r.get_json()["error"]["type"] == "bad_request"


def test_body_too_large_is_413(make_app):
    client = make_app(max_body_bytes=2048).test_client()
    r = client.post("/generate", data=json.dumps({"prompt": "a" * 5000}), content_type="application/json")
    assert r.status_code == 413 and r.get_json()["error"]["type"] == "payload_too_large"


def test_unknown_route_and_wrong_method(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.get_json()["error"]["type"] == "not_found"
    r = client.get("/generate")
    assert r.status_code == 405 and "POST" in r.headers["Allow"] and r.get_json()["error"]["type"] == "method_not_allowed"


def test_unexpected_error_is_500_without_traceback(make_app, caplog):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    r = app.test_client().get("/boom")
    assert r.status_code == 500
    assert r.get_json() == {"error": {"type": "internal_error", "message": "internal server error", "details": []}}
    assert "secret internal detail" in caplog.text  # logged server-side


def test_health_ready_info_and_not_ready(make_app):
    app = make_app(max_n=3)
    client = app.test_client()
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    info = client.get("/info").get_json()
    assert info["model"]["vocab_size"] == len(ctx(client).registry.lane(None).vocab) and info["model"]["layers"] == 2
    assert info["model"]["parameters"] == ctx(client).registry.lane(None).model.num_params() and info["model"]["val_loss"] == 3.0
    assert info["device"] == "cpu" and info["limits"]["max_n"] == 3
    # auto on a CPU: the precision the start-up probe measured fastest (tests/test_precision.py)
    assert info["precision"] in (["fp32", "fp16"] if fp16_available() else ["fp32"])
    assert make_app(precision="fp32").test_client().get("/info").get_json()["precision"] == "fp32"
    ctx(client).engine.stop()
    r = client.get("/ready")
    assert r.status_code == 503 and r.get_json()["error"]["type"] == "not_ready"
    assert client.get("/health").status_code == 200
    r = client.post("/generate", json={"max_new_chars": 5})
    assert r.status_code == 503 and r.get_json()["error"]["type"] == "not_ready"


def test_metrics_openapi_and_docs(client):
    client.post("/generate", json={"max_new_chars": 7, "seed": 1})
    client.post("/generate", json={"temperature": -1})
    text = client.get("/metrics").data.decode()
    assert 'charrnn_requests_total{endpoint="/generate",model="tiny",status="200"} 1.0' in text
    # rejected before a model was chosen: no model label value a client could have minted
    assert 'charrnn_requests_total{endpoint="/generate",model="",status="422"} 1.0' in text
    assert 'charrnn_generated_chars_total{model="tiny"} 7.0' in text
    assert 'charrnn_model_loaded{model="tiny"} 1.0' in text
    for name in ("charrnn_request_duration_seconds_bucket", "charrnn_queue_depth", "charrnn_batch_size_bucket"):
        assert name in text
    spec = client.get("/openapi.json").get_json()
    # every API route the app serves is documented with its methods, and nothing else is (the
    # spec itself, its UI and the playground are pages, not API)
    from service.http.routes import ROUTES

    pages = {f"{r.method}:{r.path}" for r in ROUTES if not r.documented}
    routes = {}
    for r in client.application.url_map.iter_rules():
        if r.endpoint not in pages:
            routes.setdefault(re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", r.rule), set()).update(
                r.methods - {"HEAD", "OPTIONS"})
    verbs = {"get", "post", "put", "patch", "delete"}
    assert {p: {m.upper() for m in ops if m in verbs} for p, ops in spec["paths"].items()} == routes
    assert {"/predict-next", "/generate", "/v1/completions"} <= set(routes)
    props = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert {"prompt", "max_new_chars", "temperature", "top_k", "top_p", "repetition_penalty", "stop", "seed", "n",
            "stream"} <= set(props)
    docs = client.get("/docs")  # Swagger UI over /openapi.json (tests/test_playground.py, test_browser.py)
    assert docs.status_code == 200 and docs.mimetype == "text/html" and b"/docs/static/swagger-ui-bundle.js" in docs.data


def test_engine_warms_up_before_serving(make_app):
    """The decode step's packed weights are built at startup, not in the first request."""
    model = ctx(make_app().test_client()).registry.lane(None).model
    built = model.__dict__.get("_fused")
    assert built is not None and built[1].precision == model.precision
    assert model.fused_step() is built[1]  # and reused, not rebuilt
