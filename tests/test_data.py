import numpy as np
import pytest

from model.data import Corpus, StreamBatcher, eval_rows, load_corpus
from conftest import SHAKESPEARE


def test_split_is_first_90_percent(corpus_file):
    c = load_corpus(corpus_file)
    n = len(c.ids)
    assert c.n_train == int(n * 0.9)
    assert np.array_equal(np.concatenate([c.split("train"), c.split("val")]), c.ids)
    assert c.vocab.decode(c.ids) == corpus_file.read_text(encoding="utf-8")


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="tinyshakespeare not present")
def test_standard_split_sizes():
    c = load_corpus(SHAKESPEARE)
    assert (len(c.ids), len(c.split("train")), len(c.split("val"))) == (1_115_394, 1_003_854, 111_540)
    assert len(c.vocab) == 65


def test_cache_is_reused_memory_mapped(corpus_file):
    first = load_corpus(corpus_file)
    second = load_corpus(corpus_file)
    assert isinstance(second.ids, np.memmap)
    assert np.array_equal(first.ids, second.ids) and first.vocab.chars == second.vocab.chars
    corpus_file.write_text("different text entirely", encoding="utf-8")  # new sha -> new cache
    assert load_corpus(corpus_file).vocab.decode(load_corpus(corpus_file).ids) == "different text entirely"


def test_cache_falls_back_when_data_folder_is_not_writable(corpus_file, tmp_path, monkeypatch):
    import model.data as data

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    home = tmp_path / "cache" / "charrnn"
    # The first cache location can't be created (a file stands where its folder would be),
    # as with a read-only data folder; the second must be used.
    monkeypatch.setattr(data, "_cache_dirs", lambda path: [blocked / "sub", home])
    c = load_corpus(corpus_file)
    assert list(home.glob("*.ids.npy")) and c.vocab.decode(c.ids) == corpus_file.read_text(encoding="utf-8")
    assert isinstance(load_corpus(corpus_file).ids, np.memmap)


def test_batches_are_shifted_by_one_and_streams_contiguous():
    ids = np.arange(1000) % 251
    b = StreamBatcher(ids.astype(np.uint8), batch=4, seq_len=10)
    x1, y1, fresh1 = b.next()
    x2, y2, fresh2 = b.next()
    assert fresh1 and not fresh2
    assert np.array_equal(x1[:, 1:], y1[:, :-1])           # targets = inputs shifted by one
    assert np.array_equal(x2[:, 0], y1[:, -1])              # window k+1 continues window k
    assert np.array_equal(y1, (x1 + 1) % 251)


def test_an_epoch_covers_the_split_once():
    ids = np.arange(1001, dtype=np.uint16)
    b = StreamBatcher(ids, batch=4, seq_len=10)
    seen = [b.next()[0] for _ in range(b.windows)]
    flat = np.sort(np.concatenate([s.ravel() for s in seen]))
    assert len(np.unique(flat)) == len(flat) == 4 * b.windows * 10   # no position twice
    assert flat.max() < 1000 and len(flat) >= 1000 - 4 * 10          # only the tail < B*T is left
    _, _, fresh = b.next()
    assert fresh and b.epoch == 1 and 0 <= b.offset < 10


def test_batcher_position_round_trips():
    ids = np.arange(5000, dtype=np.uint16)
    a = StreamBatcher(ids, 8, 16, seed=3)
    for _ in range(50):
        a.next()
    b = StreamBatcher(ids, 8, 16, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(60):
        assert np.array_equal(a.next()[0], b.next()[0])


@pytest.mark.parametrize("n,streams,burn", [(1000, 7, 30), (50, 32, 256), (2, 4, 10), (111_540, 32, 256)])
def test_eval_rows_predict_every_position_once(n, streams, burn):
    rows = eval_rows(n, streams, burn)
    covered = np.concatenate([np.arange(c, b) for _, c, b in rows])
    assert np.array_equal(covered, np.arange(n - 1))
    assert all(0 <= a <= c < b <= n - 1 for a, c, b in rows)
