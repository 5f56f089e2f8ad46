"""The model we ship: its card, its size, and (with the corpus present) its validation loss."""
import pytest
import torch

from conftest import SHAKESPEARE, SHIPPED
from model.checkpoint import load_weights

pytestmark = pytest.mark.skipif(not SHIPPED.with_suffix(".safetensors").exists(), reason="no shipped weights")


def test_card_and_size():
    model, vocab, card = load_weights(SHIPPED)
    assert SHIPPED.with_suffix(".safetensors").stat().st_size <= 25e6
    assert len(vocab) == 65 and card["config"]["vocab_size"] == 65
    t = card["training"]
    assert t["data"] == "tinyshakespeare.txt" and t["data_chars"] == 1_115_394
    assert t["best_val_loss"] <= 1.47
    assert t["command"].startswith("python -m model.train ") and "--out weights/shakespeare" in t["command"]
    assert SHIPPED.with_suffix(".png").exists()


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="tinyshakespeare not present")
def test_validation_loss_is_at_most_1_47():
    from model.data import load_corpus
    from model.evaluate import evaluate_ids

    model, vocab, card = load_weights(SHIPPED)
    corpus = load_corpus(SHAKESPEARE)
    assert corpus.vocab.chars == vocab.chars
    torch.set_num_threads(2)
    nll, n = evaluate_ids(model, corpus.split("val"))
    assert n == 111_539
    assert nll / n <= 1.47
    assert nll / n == pytest.approx(card["training"]["best_val_loss"], abs=1e-4)
