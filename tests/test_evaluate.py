"""Evaluation protocols against direct computations, and the learned start state (fresh starts)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import load_weights, save_weights
from model.evaluate import by_position, evaluate, protocol_rows, score_rows
from model.train import TrainConfig, train
from conftest import write_corpus

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 12


def _nll_from_start(model, ids, a, c, b):
    """Direct: read ids[a:b] from the model's start state in one call; NLL of ids[c+1..b]."""
    x = torch.from_numpy(np.asarray(ids[a:b + 1], dtype=np.int64))[None]
    with torch.no_grad():
        logits, _ = model(x[:, :-1], model.init_hidden(1), infer=True)
    return F.cross_entropy(logits[0], x[0, 1:], reduction="none")[c - a:].numpy()


@pytest.fixture
def model_ids(tiny_model):
    model, vocab = tiny_model
    with torch.no_grad():  # a start state that is not zero, so reading "from the start state" is tested
        model.h0.normal_(0, 0.5)
        model.c0.normal_(0, 0.5)
    return model, vocab.encode(TEXT)


def test_windows_protocol_is_nanogpts(model_ids):
    model, ids = model_ids
    res = evaluate(model, ids, "windows", window=64)
    direct = np.concatenate([_nll_from_start(model, ids, s, s, min(s + 64, len(ids) - 1))
                             for s in range(0, len(ids) - 1, 64)])
    assert res["protocol"] == "windows" and res["chars"] == len(ids) - 1 == len(direct)
    assert res["loss"] == pytest.approx(direct.mean(), rel=1e-5)
    assert res["by_position"]["0-8"] == pytest.approx(
        np.concatenate([direct[s:s + 8] for s in range(0, len(direct), 64)]).mean(), rel=1e-5)
    assert res["first_positions"][3] == pytest.approx(direct[3::64].mean(), rel=1e-5)


def test_context_protocol_reads_only_n_characters(model_ids):
    model, ids = model_ids
    res = evaluate(model, ids, "context", context=20)
    rows = protocol_rows(len(ids), "context", context=20)
    assert rows[0] == (0, 20, 52) and all(c - a == 20 for a, c, _ in rows)
    direct = np.concatenate([_nll_from_start(model, ids, *r) for r in rows])
    assert res["loss"] == pytest.approx(direct.mean(), rel=1e-5) and res["chars"] == len(ids) - 1 - 20
    # a different protocol really is a different figure
    assert abs(evaluate(model, ids, "stateful")["loss"] - res["loss"]) > 1e-4


def test_stateful_from_the_start_state_and_stepwise_agree(model_ids):
    model, ids = model_ids
    direct = _nll_from_start(model, ids, 0, 0, len(ids) - 1)
    whole = evaluate(model, ids, "stateful")
    assert whole["chars"] == len(direct) and whole["loss"] == pytest.approx(direct.mean(), rel=2e-3)
    one = score_rows(model, ids, [(0, 0, len(ids) - 1)])[0]
    assert one == pytest.approx(direct, rel=1e-4, abs=1e-5)
    step = score_rows(model, ids, [(0, 10, len(ids) - 1)], stepwise=True)[0]  # decode step after a prefill
    assert step == pytest.approx(direct[10:], rel=1e-4, abs=1e-5)


def test_by_position_buckets():
    rows = [np.arange(300, dtype=np.float32), np.arange(10, dtype=np.float32)]
    out = by_position(rows)
    assert out["0-8"] == pytest.approx(np.mean(list(range(8)) * 2))
    assert out["8-32"] == pytest.approx(np.mean(list(range(8, 32)) + [8, 9]))
    assert out["256-end"] == pytest.approx(np.mean(range(256, 300)))


def test_weights_without_a_start_state_load_with_zeros(tiny_model, tmp_path):
    model, vocab = tiny_model
    save_weights(model, vocab, tmp_path / "old")
    from safetensors.torch import load_file, save_file
    tensors = load_file(tmp_path / "old.safetensors")
    assert set(tensors) >= {"h0", "c0"} and tensors["h0"].shape == (model.cfg.layers, model.cfg.hidden)
    save_file({k: v for k, v in tensors.items() if k not in ("h0", "c0")}, tmp_path / "old.safetensors")
    old, _, _ = load_weights(tmp_path / "old")
    assert not old.h0.any() and not old.c0.any()
    h, c = old.init_hidden(3).parts
    assert h.shape == (model.cfg.layers, 3, model.cfg.hidden) and not h.any() and not c.any()


def _first_positions_loss(tmp_path, name, corpus, reset_prob):
    out = tmp_path / "w" / name
    train(TrainConfig(data=str(corpus), out=str(out), run_dir=str(tmp_path / f"run-{name}"), embed=16, hidden=48,
                      layers=1, dropout=0.0, batch_size=8, seq_len=32, lr=1e-2, warmup=5, max_steps=160,
                      eval_every=160, threads=1, reset_prob=reset_prob))
    model, vocab, _ = load_weights(out)
    ids = vocab.encode(corpus.read_text(encoding="utf-8"))
    return evaluate(model, ids, "windows", window=32)["by_position"]["0-8"], model


def test_fresh_starts_teach_the_model_to_start_from_its_start_state(tmp_path):
    """Stateful TBPTT alone shows the start state only at the first window of an epoch; with fresh
    starts the model learns h0/c0 and reads a cold window far better."""
    corpus = write_corpus(tmp_path)
    carried, m0 = _first_positions_loss(tmp_path, "carried", corpus, 0.0)
    fresh, m1 = _first_positions_loss(tmp_path, "fresh", corpus, 0.25)
    assert m1.h0.abs().sum() > 0 and fresh < 0.8 * carried, (fresh, carried)  # seeded: 0.26 vs 0.39


def test_record_keeps_the_figure_in_the_card(tiny_weights):
    import json
    from model import evaluate as ev
    tiny_weights.parent.joinpath("c.txt").write_text("the lazy dog.\n" * 20, encoding="utf-8")
    out = ev.main(["--weights", str(tiny_weights), "--data", str(tiny_weights.parent / "c.txt"), "--split", "all",
                   "--protocol", "windows", "--window", "32", "--record"])
    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    rec = card["evaluation"]["windows_32"]
    assert rec["loss"] == out["loss"] and rec["by_position"] == out["by_position"]
    assert rec["command"].startswith("python -m model.evaluate --weights ") and "--record" in rec["command"]
    assert card["vocab"] and card["training"]["best_val_loss"] == 3.0  # the rest of the card is kept
