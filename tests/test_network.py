import copy

import pytest
import torch

from model import CharRNN, ModelConfig
from model.checkpoint import load_weights, save_weights
from model.precision import candidate_precisions, choose_precision, fp16_available, resolve_precision
from model.vocab import Vocab


def test_shapes_and_state(tiny_model):
    model, vocab = tiny_model
    x = torch.randint(0, len(vocab), (3, 11))
    logits, state = model(x)
    assert logits.shape == (3, 11, len(vocab))
    h, c = state.parts
    assert h.shape == c.shape == (2, 3, 16) and state.batch == 3
    assert state.nbytes == 2 * 2 * 3 * 16 * 4


def test_chunked_with_carried_state_equals_whole_sequence(tiny_model):
    model, vocab = tiny_model
    x = torch.randint(0, len(vocab), (2, 40))
    whole, _ = model(x)
    state, parts = None, []
    for chunk in x.split([1, 7, 13, 19], dim=1):
        out, state = model(chunk, state)
        parts.append(out)
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-6)
    # and the carried state matters: restarting from zeros gives something else
    restarted, _ = model(x[:, 20:])
    assert not torch.allclose(restarted, whole[:, 20:], atol=1e-4)


def test_pytorch_parameter_names_and_gate_layout():
    m = CharRNN(ModelConfig(10, embed=4, hidden=6, layers=2))
    names = set(m.state_dict())
    for layer in (0, 1):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            assert f"lstm.{kind}_l{layer}" in names
    assert {"embed.weight", "head.weight", "head.bias"} <= names
    assert m.lstm.weight_hh_l0.shape == (4 * 6, 6)  # i, f, g, o stacked as in nn.LSTM


def test_weights_round_trip_is_exact(tiny_model, tmp_path):
    model, vocab = tiny_model
    save_weights(model, vocab, tmp_path / "m", {"note": "x"})
    loaded, vocab2, card = load_weights(tmp_path / "m.safetensors")
    assert vocab2.chars == vocab.chars and card["note"] == "x" and card["config"]["hidden"] == 16
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.randint(0, len(vocab), (1, 9))
    assert torch.equal(model(x)[0], loaded(x)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    # readable by others (e.g. a container's non-root user), like any file written with open()
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in tmp_path.iterdir())


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fused_decode_step_equals_nn_lstm(layers):
    torch.manual_seed(1)
    m = CharRNN(ModelConfig(20, embed=6, hidden=12, layers=layers, dropout=0.1)).eval()
    x = torch.randint(0, 20, (5, 9))
    with torch.no_grad():
        ref, ref_state = m(x)                      # whole sequence: nn.LSTM
        state, steps = None, []
        for t in range(9):                         # one step at a time: the fused path
            out, state = m(x[:, t:t + 1], state, infer=True)
            steps.append(out)
    assert torch.allclose(torch.cat(steps, 1), ref, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(state.parts, ref_state.parts))
    # weights changed after the first call: the step must see the new ones
    with torch.no_grad():
        m.head.bias.add_(1.0)
        assert torch.allclose(m(x[:, :1], infer=True)[0], m.head(m.lstm(m.embed(x[:, :1]))[0]), atol=1e-5)


def _rounded(m: CharRNN, names) -> CharRNN:
    """A copy whose named LSTM matrices are rounded to fp16 (and run in fp32 by nn.LSTM)."""
    r = copy.deepcopy(m)
    with torch.no_grad():
        for name, p in r.lstm.named_parameters():
            if name in names:
                p.copy_(p.half().float())
    return r


@pytest.mark.skipif(not fp16_available(), reason="no fbgemm fp16 GEMM in this torch build")
@pytest.mark.parametrize("layers", [1, 2])
def test_fp16_inference_is_nn_lstm_with_half_precision_matrices(layers):
    """fp16 stores exactly the LSTM matrices in half precision and does the same math: the step
    and the whole-sequence path each equal nn.LSTM run with those matrices rounded to fp16."""
    torch.manual_seed(2)
    m = CharRNN(ModelConfig(20, embed=6, hidden=16, layers=layers)).eval()
    mats = [n for n, _ in m.lstm.named_parameters() if n.startswith("weight")]
    x = torch.randint(0, 20, (3, 7))
    with torch.no_grad():
        exact, _ = m(x)                                    # fp32 nn.LSTM
        # the step: W_ih_l0 lives in the fp32 per-character table, every other matrix is fp16
        step_ref, step_ref_state = _rounded(m, set(mats) - {"weight_ih_l0"})(x)
        whole_ref, whole_ref_state = _rounded(m, set(mats))(x)  # the whole-sequence path: all fp16
        m.set_precision("fp16")
        state, steps = None, []
        for t in range(7):
            out, state = m(x[:, t:t + 1], state, infer=True)
            steps.append(out)
        whole, whole_state = m(x, infer=True)
    steps = torch.cat(steps, 1)
    assert torch.allclose(steps, step_ref, atol=2e-5)
    assert all(torch.allclose(a, b, atol=2e-5) for a, b in zip(state.parts, step_ref_state.parts))
    assert torch.allclose(whole, whole_ref, atol=2e-5)
    assert all(torch.allclose(a, b, atol=2e-5) for a, b in zip(whole_state.parts, whole_ref_state.parts))
    assert not torch.allclose(whole, exact, atol=1e-6)  # the precision really changed
    assert m.fused_step().precision == "fp16"
    with pytest.raises(ValueError):
        m.set_precision("int4")


def test_precisions_resolve_by_device(tiny_model):
    model, _ = tiny_model
    assert choose_precision(model, "auto", "cuda") == "fp32" == model.precision  # nothing else on a GPU
    best = choose_precision(model, "auto", "cpu")  # timed: one of what this CPU offers, and left set
    assert best in candidate_precisions("cpu") and model.precision == best
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("auto", "cpu")  # a guess would contradict the probe: only choose_precision resolves it
    with pytest.raises(ValueError):
        resolve_precision("fp16", "cuda")
    with pytest.raises(ValueError):
        resolve_precision("bf8", "cpu")
