"""Every cell (LSTM, GRU, vanilla RNN) on every model path: training and resume, evaluation, the
decode step in fp32 and fp16 against the nn module, sampling; and the opaque State."""
import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model import CharRNN, ModelConfig, State
from model.checkpoint import load_training_state, load_weights, save_training_state, save_weights
from model.evaluate import evaluate
from model.precision import fp16_available, int8_available
from model.generate import generate
from model.cells import CELLS
from model.sampling import SamplingParams
from model.train import TrainConfig, train

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _model(cell, layers=2, hidden=12, seed=1) -> CharRNN:
    torch.manual_seed(seed)
    m = CharRNN(ModelConfig(20, embed=6, hidden=hidden, layers=layers, dropout=0.1, cell=cell)).eval()
    with torch.no_grad():  # a start state and biases away from zero, so both are exercised
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


def test_cells_are_registered_for_every_path():
    from model.fused import STEPS
    assert set(CELLS) == set(STEPS) == set(GATES)
    with pytest.raises(ValueError):
        ModelConfig(10, cell="transformer")


@pytest.mark.parametrize("cell", list(CELLS))
def test_parameters_keep_pytorchs_names_and_layouts(cell):
    m = CharRNN(ModelConfig(10, embed=4, hidden=6, layers=2, cell=cell))
    names = set(m.state_dict())
    for layer in (0, 1):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            assert f"{cell}.{kind}_l{layer}" in names
    assert {"embed.weight", "head.weight", "head.bias", "h0"} <= names
    assert ("c0" in names) == (cell == "lstm")
    assert getattr(m, cell).weight_hh_l0.shape == (GATES[cell] * 6, 6)
    assert type(m.core) is CELLS[cell].module


def test_state_interface_rows_cat_detach_move_and_size():
    m = _model("lstm")
    s = m.init_hidden(4)
    assert s.batch == 4 and s.nbytes == 2 * 2 * 4 * 12 * 4
    a, b = s.rows([3, 1]), s.rows(slice(0, 2))
    assert a.batch == b.batch == 2 and State.cat([a, b]).batch == 4
    assert torch.equal(State.cat([a, b]).parts[0][:, 0], s.parts[0][:, 3])
    assert s.to(dtype=torch.float64).nbytes == 2 * s.nbytes and s.to("cpu").batch == 4
    m.train()
    with torch.enable_grad():
        t = m.init_hidden(2)
        assert t.parts[0].requires_grad and not t.detach().parts[0].requires_grad
    c = s.rows(slice(0, 1)).clone()
    c.parts[0].add_(1)
    assert not torch.equal(c.parts[0], s.parts[0][:, :1])  # a clone owns its memory


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fused_decode_step_equals_the_nn_module(cell, layers):
    m = _model(cell, layers)
    x = torch.randint(0, 20, (5, 9))
    with torch.no_grad():
        ref, ref_state = m(x)                      # whole sequence: the nn module
        direct, _ = CharRNN.run_core(m.core, m.embed(x), m.init_hidden(5))
        assert torch.allclose(ref, m.head(direct), atol=1e-6)
        state, steps = None, []
        for t in range(9):                         # one step at a time: the fused path
            out, state = m(x[:, t:t + 1], state, infer=True)
            steps.append(out)
    assert torch.allclose(torch.cat(steps, 1), ref, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(state.parts, ref_state.parts))
    assert m.fused_step().nbytes > 0


def _rounded(m: CharRNN, names) -> CharRNN:
    r = copy.deepcopy(m)
    with torch.no_grad():
        for name, p in r.core.named_parameters():
            if name in names:
                p.copy_(p.half().float())
    return r


@pytest.mark.skipif(not fp16_available(), reason="no fbgemm fp16 GEMM in this torch build")
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("layers", [1, 2])
def test_fp16_paths_are_the_nn_module_with_half_precision_matrices(cell, layers):
    """The step keeps W_ih_l0 in its fp32 per-character table and every other matrix in fp16; the
    prompt path is PyTorch's dynamic fp16 module (all matrices fp16) for the LSTM and GRU, and
    the decode step for the RNN (no dynamic RNN in PyTorch)."""
    m = _model(cell, layers, hidden=16)
    mats = {n for n, _ in m.core.named_parameters() if n.startswith("weight")}
    x = torch.randint(0, 20, (3, 7))
    with torch.no_grad():
        exact, _ = m(x)
        step_ref, step_ref_state = _rounded(m, mats - {"weight_ih_l0"})(x)
        whole_ref, whole_ref_state = _rounded(m, mats if cell != "rnn" else mats - {"weight_ih_l0"})(x)
        m.set_precision("fp16")
        state, steps = None, []
        for t in range(7):
            out, state = m(x[:, t:t + 1], state, infer=True)
            steps.append(out)
        whole, whole_state = m(x, infer=True)
    assert torch.allclose(torch.cat(steps, 1), step_ref, atol=3e-5)
    assert all(torch.allclose(a, b, atol=3e-5) for a, b in zip(state.parts, step_ref_state.parts))
    assert torch.allclose(whole, whole_ref, atol=3e-5)
    assert all(torch.allclose(a, b, atol=3e-5) for a, b in zip(whole_state.parts, whole_ref_state.parts))
    assert not torch.allclose(whole, exact, atol=1e-6)  # the precision really changed
    assert m.fused_step().nbytes < m.set_precision("fp32").fused_step().nbytes


@pytest.mark.parametrize("cell", list(CELLS))
def test_last_only_is_the_last_position_of_every_prompt_path(cell):
    """last_only (what the engine asks when no row scores its prompt) gives exactly the last
    position's logits and the same state, in every precision's prompt path (int8: the pinned C++
    LSTM, and the layer-by-layer one for a start state past 1; the stepwise path for the GRU and
    RNN), and in training."""
    m = _model(cell, hidden=16)
    x = torch.randint(0, 20, (3, 7))
    cases = [("fp32", None)] + ([("fp16", None)] if fp16_available() else [])
    if int8_available():
        cases += [("int8", None)] + ([("int8", 1.5)] if cell == "lstm" else [])
    for precision, start in cases:
        if start is not None:  # past the pins' range: LSTMStep.prefill, not PinnedLSTM
            with torch.no_grad():
                m.h0.fill_(start)
        m.set_precision(precision)
        with torch.no_grad():
            full, state = m(x, infer=True)
            last, last_state = m(x, last_only=True, infer=True)
        # (the head over 3 rows or 21 may round differently: a different GEMM blocking)
        assert last.shape == (3, 1, 20) and torch.allclose(last, full[:, -1:], rtol=1e-5, atol=1e-6), precision
        assert all(torch.equal(a, b) for a, b in zip(state.parts, last_state.parts)), precision
    m.set_precision("fp32")
    full, _ = m(x)  # with autograd on: the training path (eval mode: no dropout draws)
    assert torch.allclose(m(x, last_only=True)[0], full[:, -1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_evaluation_protocols_and_the_stepwise_path_agree_for_every_cell(cell):
    m = _model(cell, 2)
    ids = np.random.default_rng(0).integers(0, 20, 400)
    whole, stepwise = evaluate(m, ids, "stateful"), evaluate(m, ids, "stateful", stepwise=True)
    assert whole["chars"] == stepwise["chars"] == 399
    assert whole["loss"] == pytest.approx(stepwise["loss"], rel=1e-5)
    x = torch.from_numpy(ids[:65])[None]
    with torch.no_grad():
        logits, _ = m(x[:, :-1], m.init_hidden(1), infer=True)
    direct = torch.nn.functional.cross_entropy(logits[0], x[0, 1:]).item()
    windows = evaluate(m, ids[:65], "windows", window=64)
    assert windows["loss"] == pytest.approx(direct, rel=1e-5)
    assert evaluate(m, ids, "context", context=16)["chars"] == 399 - 16


def _tiny_train(tmp_path, name, cell, **kw) -> dict:
    data = tmp_path / "periodic.txt"
    data.write_text("abcdefgh\n" * 400)
    cfg = dict(data=str(data), out=str(tmp_path / "w" / name), run_dir=str(tmp_path / f"run-{name}"), cell=cell,
               embed=8, hidden=32, layers=2, dropout=0.0, batch_size=8, seq_len=16, lr=1e-2, warmup=5,
               max_steps=120, eval_every=40, threads=1, reset_prob=0.2, weight_drop=0.1)
    return train(TrainConfig(**{**cfg, **kw}))


@pytest.mark.parametrize("cell", list(CELLS))
def test_each_cell_trains_resumes_loads_and_samples(cell, tmp_path):
    straight = _tiny_train(tmp_path, "a", cell)
    assert straight["best"]["loss"] < 0.1, straight["best"]
    # a run stopped after its first step (checkpointed) and resumed ends with the same model
    stopped = _tiny_train(tmp_path, "b", cell, max_minutes=1e-9)
    assert stopped["step"] == 1
    resumed = _tiny_train(tmp_path, "b", cell, resume=True)
    assert resumed["step"] == 120
    assert [h["val_loss"] for h in resumed["history"]] == pytest.approx([h["val_loss"] for h in straight["history"]],
                                                                       abs=1e-4)
    model, vocab, card = load_weights(tmp_path / "w" / "a")
    assert card["config"]["cell"] == cell and model.cfg.cell == cell
    assert set(load_file(tmp_path / "w" / "a.safetensors")) == set(model.state_dict())
    assert model.h0.abs().sum() > 0  # fresh starts taught the start state
    text, reason = generate(model, vocab, "abc", 18, SamplingParams(0.0), seed=0)
    assert (text, reason) == ("defgh\nabcdefgh\nabc", "length")


def test_an_lstm_checkpoint_and_card_from_before_the_cell_switch_still_resume_and_load(tmp_path):
    _tiny_train(tmp_path, "a", "lstm", layers=1)
    ref = _tiny_train(tmp_path, "b", "lstm", layers=1, max_minutes=1e-9)
    assert ref["step"] == 1
    ck_path = tmp_path / "run-b" / "checkpoint.pt"
    ck = load_training_state(ck_path)  # rewrite it as the trainer wrote it before: no cell, "lstm_state"
    ck["lstm_state"] = ck.pop("state")
    ck["model_config"].pop("cell")
    ck["train_config"].pop("cell")
    save_training_state(ck_path, ck)
    resumed = _tiny_train(tmp_path, "b", "lstm", layers=1, resume=True)
    straight = json.loads((tmp_path / "run-a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert resumed["history"][-1]["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-4)
    # and a card that names no cell is an LSTM's
    card_path = tmp_path / "w" / "a.json"
    card = json.loads(card_path.read_text())
    card["config"].pop("cell")
    card_path.write_text(json.dumps(card))
    model, _, _ = load_weights(tmp_path / "w" / "a")
    assert model.cfg.cell == "lstm" and hasattr(model, "lstm")


def test_weights_round_trip_for_every_cell(tmp_path):
    from model.vocab import Vocab
    vocab = Vocab(list("abcdefghijklmnopqrst"))
    for cell in CELLS:
        m = _model(cell)
        save_weights(m, vocab, tmp_path / cell)
        loaded, _, _ = load_weights(tmp_path / cell)
        x = torch.randint(0, 20, (2, 9))
        with torch.no_grad():
            assert torch.equal(m(x, infer=True)[0], loaded(x, infer=True)[0])
