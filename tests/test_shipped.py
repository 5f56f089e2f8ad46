"""The model we ship: its card, its size, and (with the corpus present) its validation loss."""
import pytest
import torch

from conftest import SHAKESPEARE, SHIPPED
from model.checkpoint import load_weights
from model.precision import INT8_MAX_COST, fp16_available, int8_available, int8_cost

pytestmark = pytest.mark.skipif(not SHIPPED.with_suffix(".safetensors").exists(), reason="no shipped weights")


@pytest.fixture
def two_threads():
    """The whole validation split runs faster on two threads; the rest of the suite keeps conftest's one."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_card_and_size():
    model, vocab, card = load_weights(SHIPPED)
    assert SHIPPED.with_suffix(".safetensors").stat().st_size <= 25e6
    assert len(vocab) == 65 and card["config"]["vocab_size"] == 65
    t = card["training"]
    assert t["data"] == "tinyshakespeare.txt" and t["data_chars"] == 1_115_394
    assert t["best_val_loss"] <= 1.405
    assert t["command"].startswith("python -m model.train ") and "--out weights/shakespeare" in t["command"]
    assert SHIPPED.with_suffix(".png").exists()
    # both protocols recorded beside the model (model.evaluate --record), each with its command
    ev = card["evaluation"]
    assert ev["stateful"]["loss"] == pytest.approx(t["best_val_loss"], abs=1e-4)
    assert ev["windows_256"]["loss"] <= 1.43 and ev["windows_256"]["window"] == 256
    assert all(e["command"].startswith("python -m model.evaluate ") for e in ev.values())
    assert card["inference"]["max_context"] > 0  # the prefill window bench/context.py measured


@pytest.mark.parametrize("prompt", ["ROMEO", "First Citizen"])
def test_a_cold_prompt_reads_like_the_corpus(prompt):
    """With nothing before it, a speaker's name is followed by ':' (the corpus never has
    "First Citizens"): the learned start state, not the all-zero one, is where prompts begin."""
    from model.generate import prefill
    model, vocab, _ = load_weights(SHIPPED)
    logits, _ = prefill(model, vocab.encode(prompt).tolist())
    assert vocab.chars[int(logits[0].argmax())] == ":"


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="tinyshakespeare not present")
def test_validation_loss_is_at_most_1_40(two_threads):
    from model.data import load_corpus
    from model.evaluate import evaluate_ids

    model, vocab, card = load_weights(SHIPPED)
    corpus = load_corpus(SHAKESPEARE)
    assert corpus.vocab.chars == vocab.chars
    nll, n = evaluate_ids(model, corpus.split("val"))
    assert n == 111_539
    assert nll / n <= 1.40  # the bar the shipped model was trained to clear (docs/training.md, "How far under 1.40")
    assert nll / n == pytest.approx(card["training"]["best_val_loss"], abs=1e-4)


AVAILABLE = {"fp16": fp16_available(), "int8": int8_available()}


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="needs tinyshakespeare")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("chunk", [512, 1], ids=["whole-sequence", "decode-step"])
def test_lower_precisions_cost_less_than_0_01_nats(precision, chunk, two_threads):
    """The service's CPU candidates (CHARRNN_PRECISION=auto), through both paths they serve with,
    on the whole validation split; int8's figures are also the card's (what lets auto pick it)."""
    from model.data import load_corpus
    from model.evaluate import evaluate_ids

    if not AVAILABLE[precision]:
        pytest.skip(f"no fbgemm {precision} kernels in this torch build / on this CPU")
    model, vocab, card = load_weights(SHIPPED)
    model.set_precision(precision)
    nll, n = evaluate_ids(model, load_corpus(SHAKESPEARE).split("val"), chunk=chunk)
    assert abs(nll / n - card["training"]["best_val_loss"]) <= INT8_MAX_COST
    if precision == "int8":
        key = "stateful_int8" + ("_stepwise" if chunk == 1 else "")
        assert card["evaluation"][key]["loss"] == pytest.approx(nll / n, abs=1e-4)
        assert int8_cost(card) <= INT8_MAX_COST
