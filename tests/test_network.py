import torch

from model import CharRNN, ModelConfig
from model.checkpoint import load_weights, save_weights
from model.vocab import Vocab


def test_shapes_and_state(tiny_model):
    model, vocab = tiny_model
    x = torch.randint(0, len(vocab), (3, 11))
    logits, (h, c) = model(x)
    assert logits.shape == (3, 11, len(vocab))
    assert h.shape == c.shape == (2, 3, 16)


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
    assert not (tmp_path / "m.safetensors.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
