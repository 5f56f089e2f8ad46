import numpy as np
import pytest

from model.vocab import Vocab


def test_round_trip_non_ascii():
    text = "Héllo wörld — ça va? 日本語 ✓\nÆsop"
    v = Vocab.from_text(text)
    assert v.chars == sorted(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.uint8
    assert v.decode(ids) == text


def test_large_vocab_uses_uint16_and_chunks():
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 3
    v = Vocab.from_text(text, chunk=97)  # chunked unique must equal the whole-text set
    assert len(v) == 300 and v.chars == sorted(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.uint16 and v.decode(ids) == text


def test_unknown_characters_reported_or_skipped():
    v = Vocab.from_text("abc ")
    assert v.unknown("a b ç d ç") == ["d", "ç"]  # sorted, each once
    with pytest.raises(KeyError) as e:
        v.encode("abd")
    assert "d" in str(e.value)
    assert v.decode(v.encode("a🙂b", unknown="skip")) == "ab"


def test_rejects_bad_vocab():
    with pytest.raises(ValueError):
        Vocab(["a", "a"])
    with pytest.raises(ValueError):
        Vocab(["ab"])
