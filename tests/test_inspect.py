"""model/inspect.py and POST /inspect: activations as the LSTM equations give them, limits, and
--find locating a unit planted to fire on one character."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, env_with_path
from model.inspect import WHAT, activations, find_units, match_mask, separation


def with_start_state(model):
    with torch.no_grad():  # a learned start state, not zeros: the reading must start from it
        model.h0.normal_(0, 0.5)
        model.c0.normal_(0, 0.5)
    return model


def stepwise(model, ids):
    """The LSTM equations one character at a time, written out independently of model/inspect.py."""
    H, out = model.cfg.hidden, []
    x = model.embed.weight[torch.tensor(ids)]
    for k in range(model.cfg.layers):
        w_ih, w_hh = getattr(model.lstm, f"weight_ih_l{k}"), getattr(model.lstm, f"weight_hh_l{k}")
        b = getattr(model.lstm, f"bias_ih_l{k}") + getattr(model.lstm, f"bias_hh_l{k}")
        h, c, rows = model.h0[k], model.c0[k], []
        for t in range(len(ids)):
            z = w_ih @ x[t] + w_hh @ h + b
            i, f, g, o = torch.sigmoid(z[:H]), torch.sigmoid(z[H:2 * H]), torch.tanh(z[2 * H:3 * H]), torch.sigmoid(z[3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(c)
            rows.append({"h": h, "c": c, "i": i, "f": f, "g": g, "o": o})
        out.append({w: torch.stack([r[w] for r in rows]) for w in WHAT})
        x = out[-1]["h"]
    return out


@torch.no_grad()
def test_activations_are_the_lstm_equations_and_match_nn_lstm(tiny_model):
    model, vocab = tiny_model
    model = with_start_state(model)
    ids = vocab.encode("the quick brown fox, jumps.\nover the lazy dog").tolist()
    layers, logp = activations(model, ids)
    ref = stepwise(model, ids)
    for got, want in zip(layers, ref):
        for w in WHAT:
            torch.testing.assert_close(got[w], want[w], atol=1e-5, rtol=1e-4)
    # nn.LSTM from the same start state: the last layer's h at every step, every layer's final c
    out, (hn, cn) = model.lstm(model.embed(torch.tensor([ids])), (model.h0[:, None].contiguous(),
                                                                 model.c0[:, None].contiguous()))
    torch.testing.assert_close(layers[-1]["h"], out[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.stack([a["c"][-1] for a in layers]), cn[:, 0], atol=1e-5, rtol=1e-4)
    # surprise: log p(x_t | x_<t) from the head; the first character given the start state alone
    want = torch.log_softmax(model.head(torch.cat([model.h0[-1][None], out[0, :-1]])), -1)
    torch.testing.assert_close(logp, want[torch.arange(len(ids)), torch.tensor(ids)], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_gates_lie_in_their_ranges(tiny_model):
    model, vocab = tiny_model
    with torch.no_grad():
        for p in model.lstm.parameters():
            p.mul_(8)  # saturating weights: the ranges must hold at the extremes too
    layers, _ = activations(with_start_state(model), vocab.encode("abc, xyz.\n" * 20).tolist())
    for a in layers:
        for w in ("i", "f", "o"):
            assert 0 <= a[w].min() and a[w].max() <= 1
        for w in ("g", "h"):
            assert -1 <= a[w].min() and a[w].max() <= 1
        assert a["c"].abs().max() > 1  # the cell state is unbounded: it integrates over characters


def test_separation_is_the_roc_auc():
    mask = torch.tensor([True, False, True, False, False])
    values = torch.tensor([[5.0, 0.0], [1.0, 1.0], [4.0, 0.5], [2.0, 2.0], [3.0, 3.0]])
    torch.testing.assert_close(separation(values, mask), torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert match_mask("ab\"cd\"e", '"[^"]*"').tolist() == [False, False, True, True, True, True, False]


@pytest.fixture
def planted(tiny_model, tmp_path):
    """Layer 0, unit 5: its cell state jumps to ~1 on reading 'q' and forgets it at once."""
    from model.checkpoint import save_weights

    model, vocab = tiny_model
    H, u, q = model.cfg.hidden, 5, vocab.index("q")
    with torch.no_grad():
        model.embed.weight[:, 0] = 0.0
        model.embed.weight[q, 0] = 4.0
        model.lstm.weight_ih_l0[:, 0] = 0.0  # no other unit reads that dimension
        for gate in range(4):  # unit u's rows: only embedding dim 0 and a bias drive it
            row = gate * H + u
            model.lstm.weight_ih_l0[row] = 0.0
            model.lstm.weight_hh_l0[row] = 0.0
            model.lstm.bias_hh_l0[row] = 0.0
        i, f, g, o = (gate * H + u for gate in range(4))
        model.lstm.weight_ih_l0[i, 0], model.lstm.bias_ih_l0[i] = 4.0, -8.0   # input gate opens on q only
        model.lstm.weight_ih_l0[g, 0], model.lstm.bias_ih_l0[g] = 4.0, 0.0    # candidate ~1 on q
        model.lstm.bias_ih_l0[f] = -8.0                                       # forgets at once
        model.lstm.bias_ih_l0[o] = 0.0
    save_weights(model, vocab, tmp_path / "planted", {})
    return tmp_path / "planted", u


def test_find_ranks_a_planted_unit_first(planted):
    weights, unit = planted
    text = "the quick brown fox. a quiet queen quits.\nquite so, quaint.\n" * 3
    r = subprocess.run([sys.executable, "-m", "model.inspect", "--weights", str(weights), "--text", text,
                        "--layer", "0", "--find", "q", "--json"],
                       cwd=ROOT, env=env_with_path(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)["units"]
    assert found[0]["unit"] == unit and found[0]["auc"] > 0.99
    assert found[0]["mean_inside"] > 0.5 > found[0]["mean_outside"]
    # the table form prints the same ranking
    table = subprocess.run([sys.executable, "-m", "model.inspect", "--weights", str(weights), "--text", text,
                            "--layer", "0", "--find", "q"], cwd=ROOT, env=env_with_path(), capture_output=True,
                           text=True, timeout=120).stdout.splitlines()
    assert table[2].split()[0] == str(unit)


@torch.no_grad()
def test_find_units_directly(tiny_model):
    model, vocab = tiny_model
    text = "abc abc\nabc\n" * 5
    layers, _ = activations(model, vocab.encode(text).tolist())
    found = find_units(layers[1]["c"], text, r"\n", k=3)
    assert len(found) == 3 and abs(found[0]["auc"] - 0.5) >= abs(found[-1]["auc"] - 0.5)
    with pytest.raises(ValueError):
        find_units(layers[1]["c"], text, "z")  # nothing matches: no ranking to make


def test_inspect_endpoint(client):
    ctx = client.application.extensions["charrnn"]
    text = "the fox. the dog.\nthe end"
    threads = torch.get_num_threads()
    r = client.post("/inspect", json={"text": text, "layer": 0, "units": [3, 1], "top_units": 4, "what": ["c", "f"]})
    assert r.status_code == 200, r.get_json()
    assert torch.get_num_threads() == threads  # its one-thread section restores the thread count
    body = r.get_json()
    layers, logp = activations(ctx.registry.lane(None).model, ctx.registry.lane(None).vocab.encode(text).tolist())
    std = layers[0]["c"].std(0, unbiased=False)
    top = torch.topk(std, 4).indices.tolist()
    assert [t["unit"] for t in body["top_units"]] == top
    assert body["units"] == [3, 1] + [u for u in top if u not in (3, 1)]
    assert body["text"] == text and body["start"] == 0 and body["layer"] == 0 and body["cell"] == "lstm"
    assert len(body["chars"]) == len(text) and set(body["chars"][0]) == {"char", "prob", "logprob", "c", "f"}
    for t, ch in enumerate(body["chars"]):
        assert ch["char"] == text[t] and ch["logprob"] == pytest.approx(float(logp[t]), abs=1e-5)
        assert ch["c"] == pytest.approx(layers[0]["c"][t, body["units"]].tolist(), abs=1e-5)
        assert ch["f"] == pytest.approx(layers[0]["f"][t, body["units"]].tolist(), abs=1e-5)
    # defaults: the last layer, all six quantities, the 8 most varying units
    body = client.post("/inspect", json={"text": text}).get_json()
    assert body["layer"] == ctx.registry.lane(None).model.cfg.layers - 1 and len(body["units"]) == 8
    assert set(body["chars"][0]) == {"char", "prob", "logprob", *WHAT}


@pytest.mark.parametrize("body, field", [
    ({"text": ""}, "text"),
    ({"text": "x" * 101}, "text"),
    ({"text": "abc", "units": list(range(11))}, "units"),
    ({"text": "abc", "top_units": 11}, "top_units"),
    ({"text": "abc", "units": [16]}, "units"),
    ({"text": "abc", "units": [-1]}, "units"),
    ({"text": "abc", "units": [2, 2]}, "units"),
    ({"text": "abc", "layer": 2}, "layer"),
    ({"text": "abc", "what": ["c", "z"]}, "what.1"),
    ({"text": "abc", "what": []}, "what"),
    ({"text": "abc", "top_units": 0}, "top_units"),
])
def test_inspect_limits(make_app, body, field):
    client = make_app(max_inspect_chars=100, max_inspect_units=10).test_client()
    r = client.post("/inspect", json=body)
    assert r.status_code == 422, r.get_json()
    assert field in [d["field"] for d in r.get_json()["error"]["details"]]


def test_the_document_states_the_limits_and_skipping_everything_reads_nothing(make_app):
    client = make_app(max_inspect_chars=100, max_inspect_units=10).test_client()
    s = client.get("/openapi.json").get_json()["components"]["schemas"]["InspectRequest"]["properties"]
    assert s["text"]["maxLength"] == 100 and s["layer"]["anyOf"][0] == {"type": "integer", "minimum": -2, "maximum": 1}
    units = s["units"]["anyOf"][0]
    assert units["maxItems"] == 10 and units["items"] == {"type": "integer", "minimum": 0, "maximum": 15}
    r = client.post("/inspect", json={"text": "éé", "unknown_chars": "skip", "units": [3]})
    assert r.status_code == 200 and r.get_json()["chars"] == [] and r.get_json()["units"] == [3]


def test_inspect_reads_the_same_window_as_predict_next(make_app):
    client = make_app(max_context=10).test_client()
    text = "the quick brown fox jumps"
    body = client.post("/inspect", json={"text": text, "units": [0, 1, 2]}).get_json()
    assert body["start"] == len(text) - 10 and body["text"] == text[-10:] and len(body["chars"]) == 10
    alone = client.post("/inspect", json={"text": text[-10:], "units": [0, 1, 2]}).get_json()
    assert body["chars"] == alone["chars"]  # read from the start state, as if the rest were not there
    assert client.post("/inspect", json={"text": "é!", "unknown_chars": "error"}).get_json()["error"]["type"] \
        == "unknown_characters"


@pytest.mark.parametrize("tiny_model", ["gru", "rnn"], indirect=True)
def test_a_model_without_lstm_gates_gets_a_clear_422(client, tiny_model):
    r = client.post("/inspect", json={"text": "abc"})
    assert r.status_code == 422 and r.get_json()["error"]["type"] == "unsupported_cell"
    assert tiny_model[0].cfg.cell in r.get_json()["error"]["message"]
    op = client.get("/openapi.json").get_json()["paths"]["/inspect"]["post"]
    assert "200" not in op["responses"] and "422" in op["responses"]  # and the document says so
