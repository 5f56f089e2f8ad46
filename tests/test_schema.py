"""Schema truth: schemathesis (every check, every phase it has: examples, coverage, fuzzing,
stateful) against a real gunicorn server serving two models with different vocabularies and shapes
must find nothing. Positive cases must be accepted, negative ones rejected with a 4xx, every answer
(stream events one by one) must match the document, and with API keys on, a request without one
must be refused. Fixed seed, 15 cases per operation (and the coverage phase's own), so that a run
stays around a minute on a quiet machine. The one rule JSON Schema cannot state (which regexes
compile) is left to tests/st_hooks.py, which says why."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from servers import Server

pytest.importorskip("schemathesis")
KEY = "test-key-123"
GREEK = "αβγδεζηθικλμνξοπρστυφχψω \n"


def write_other_model(folder: Path) -> Path:
    """A second model beside the default: another vocabulary, one layer, 12 units."""
    from model import CharRNN, ModelConfig, Vocab
    from model.checkpoint import save_weights

    torch.manual_seed(1)
    vocab = Vocab(sorted(set(GREEK)))
    save_weights(CharRNN(ModelConfig(len(vocab), embed=8, hidden=12, layers=1, dropout=0.0)).eval(), vocab,
                 folder / "other")
    return folder / "other"


def write_capped_model(folder: Path) -> Path:
    """A model trained with --max-vocab: every character outside its vocabulary reads as its unknown symbol."""
    from model import CharRNN, ModelConfig, Vocab
    from model.checkpoint import save_weights

    torch.manual_seed(2)
    vocab = Vocab(sorted(set("abc \n\ufffd")))
    save_weights(CharRNN(ModelConfig(len(vocab), embed=8, hidden=8, layers=1, dropout=0.0)).eval(), vocab,
                 folder / "capped", {"unknown": "\ufffd"})
    return folder / "capped"


def test_the_document_states_each_models_rules(make_app, tiny_weights):
    """Per-model rules in the document, and the server agreeing with each of them."""
    from jsonschema import Draft202012Validator

    write_other_model(tiny_weights.parent)
    write_capped_model(tiny_weights.parent)
    client = make_app().test_client()
    spec = client.get("/openapi.json").get_json()

    def valid(schema: str, body: dict) -> bool:
        root = {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]}
        return Draft202012Validator(root).is_valid(body)

    cases = [  # (path, schema, body, valid?)
        ("/generate", "GenerateRequest", {"prompt": "the", "max_new_chars": 2}, True),
        ("/generate", "GenerateRequest", {"prompt": "αβ", "max_new_chars": 2}, False),
        ("/generate", "GenerateRequest", {"model": "other", "prompt": "αβ", "max_new_chars": 2}, True),
        ("/generate", "GenerateRequest", {"model": "other", "prompt": "the", "max_new_chars": 2}, False),
        ("/generate", "GenerateRequest", {"model": "other", "prompt": "thé", "max_new_chars": 2,
                                          "unknown_chars": "skip"}, True),
        ("/generate", "GenerateRequest", {"model": "other", "logit_bias": {"α": 1}, "max_new_chars": 2}, True),
        ("/generate", "GenerateRequest", {"model": "other", "logit_bias": {"a": 1}, "max_new_chars": 2}, False),
        ("/generate", "GenerateRequest", {"model": "nope", "max_new_chars": 2}, False),
        ("/generate", "GenerateRequest", {"model": "other", "max_new_chars": 2,
                                          "logit_bias": {c: -100 for c in GREEK}}, False),
        ("/predict-next", "PredictRequest", {"model": "other", "text": "αβ"}, True),
        ("/predict-next", "PredictRequest", {"model": None, "text": "αβ"}, False),
        ("/inspect", "InspectRequest", {"text": "the", "layer": 1, "units": [15]}, True),
        ("/inspect", "InspectRequest", {"model": "other", "text": "αβ", "layer": 1}, False),
        ("/inspect", "InspectRequest", {"model": "other", "text": "αβ", "layer": -1, "units": [11]}, True),
        ("/inspect", "InspectRequest", {"model": "other", "text": "αβ", "units": [12]}, False),
        ("/v1/completions", "CompletionRequest", {"model": "other", "prompt": [[0, 25]], "max_tokens": 1}, True),
        ("/v1/completions", "CompletionRequest", {"model": "other", "prompt": [26], "max_tokens": 1}, False),
        ("/v1/completions", "CompletionRequest", {"model": "tiny", "prompt": [29], "max_tokens": 1}, True),
        ("/v1/completions", "CompletionRequest", {"model": "other", "prompt": ["αβ", "a"], "max_tokens": 1}, False),
        ("/v1/completions", "CompletionRequest", {"model": "other", "logit_bias": {"25": 1}, "max_tokens": 1}, True),
        ("/v1/completions", "CompletionRequest", {"model": "other", "logit_bias": {"26": 1}, "max_tokens": 1}, False),
        # the capped model reads any character; its unknown symbol is never generated, so banning the rest is all
        ("/generate", "GenerateRequest", {"model": "capped", "prompt": "xyzé", "max_new_chars": 2}, True),
        ("/inspect", "InspectRequest", {"model": "capped", "text": "xyzé"}, True),
        ("/v1/completions", "CompletionRequest", {"model": "capped", "prompt": ["xé", "a"], "max_tokens": 1}, True),
        ("/generate", "GenerateRequest", {"model": "capped", "max_new_chars": 2,
                                          "logit_bias": {c: -100 for c in "abc \n"}}, False),
        ("/generate", "GenerateRequest", {"model": "capped", "max_new_chars": 2,
                                          "logit_bias": {**{c: -100 for c in "abc \n"}, "\ufffd": 5}}, False),
        ("/generate", "GenerateRequest", {"model": "capped", "max_new_chars": 2,
                                          "logit_bias": {c: -100 for c in "ab \n\ufffd"}}, True),
        ("/v1/completions", "CompletionRequest", {"model": "capped", "max_tokens": 1,
                                                  "logit_bias": {str(i): -100 for i in range(5)}}, False),
        ("/v1/completions", "CompletionRequest", {"model": "capped", "max_tokens": 1,
                                                  "logit_bias": {str(i): -100 for i in range(4)}}, True),
    ]
    for path, schema, body, ok in cases:
        assert valid(schema, body) is ok, (schema, body)
        status = client.post(path, json=body).status_code
        assert (status == 200) is ok, (path, body, status)


@pytest.mark.parametrize("tiny_model", ["gru"], indirect=True)
def test_inspect_offers_only_the_models_with_lstm_gates(make_app, tiny_weights):
    from jsonschema import Draft202012Validator

    write_other_model(tiny_weights.parent)  # an LSTM, beside the default GRU
    client = make_app().test_client()
    spec = client.get("/openapi.json").get_json()
    schema = {"$ref": "#/components/schemas/InspectRequest", "components": spec["components"]}
    assert "tiny (gru)" in spec["paths"]["/inspect"]["post"]["description"]
    for body, ok in (({"model": "other", "text": "αβ"}, True), ({"text": "abc"}, False),
                     ({"model": None, "text": "abc"}, False), ({"model": "tiny", "text": "abc"}, False)):
        assert Draft202012Validator(schema).is_valid(body) is ok, body
        assert (client.post("/inspect", json=body).status_code == 200) is ok, body


@pytest.mark.parametrize("keys", [False, True], ids=["open", "api-key"])
def test_schemathesis_finds_nothing(tiny_weights, tmp_path, keys):
    # Small limits keep each generated request quick; the document states whatever they are.
    write_other_model(tiny_weights.parent)
    env = {"CHARRNN_MAX_NEW_CHARS": "64", "CHARRNN_MAX_N": "4", "CHARRNN_MAX_PROMPT_CHARS": "256"}
    if keys:
        env["CHARRNN_API_KEY"] = f"other-key,{KEY}"
    server = Server(tiny_weights, **env).wait_ready()
    try:
        st = Path(sys.executable).with_name("st")
        cmd = [str(st), "run", server.base + "/openapi.json", "--checks", "all", "--seed", "1",
               "--max-examples", "15", "--generation-database", "none", "--no-color", "--workers", "2",
               "--request-timeout", "20",
               # The generator's own health checks, not the API's: for the free-form path parameter of
               # /v1/models/{model} it filters most strings it draws (URL-unsafe ones), slowly on a busy machine.
               "--suppress-health-check", "filter_too_much,too_slow"]
        if keys:
            cmd += ["--header", f"Authorization: Bearer {KEY}"]
        hooks = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "SCHEMATHESIS_HOOKS": "st_hooks",
                 "CHARRNN_MODELS_DIR": str(tiny_weights.parent), "CHARRNN_WEIGHTS": str(tiny_weights)}
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, **hooks})
    finally:
        log = server.stop()
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert KEY not in log  # the key never reaches a log line
