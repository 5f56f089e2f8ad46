import os
from pathlib import Path

import pytest
import torch

from model import CharRNN, ModelConfig, Vocab

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SHIPPED = ROOT / "weights" / "shakespeare"

# Tiny models: one thread is fastest and leaves the other core free.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Corpus caches go to a per-test folder, never ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_corpus(folder: Path) -> Path:
    """A small corpus with structure (so a model can learn) and non-ASCII characters."""
    lines = ["the quick brown fox jumps over the lazy dog.", "Café au lait — twice.", "ROMEO: hello!"]
    p = folder / "corpus.txt"
    p.write_text("\n".join(lines * 60) + "\n", encoding="utf-8")
    return p


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    return write_corpus(tmp_path)


@pytest.fixture
def tiny_model(request) -> tuple[CharRNN, Vocab]:
    """An LSTM; a module runs its tests with other cells too by parametrizing this fixture
    indirectly (pytest.mark.parametrize("tiny_model", ["lstm", "gru"], indirect=True))."""
    torch.manual_seed(0)
    vocab = Vocab(sorted(set("abcdefghijklmnopqrstuvwxyz .,\n")))
    cell = getattr(request, "param", "lstm")
    return CharRNN(ModelConfig(len(vocab), embed=8, hidden=16, layers=2, dropout=0.0, cell=cell)).eval(), vocab


def env_with_path() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def tiny_weights(tiny_model, tmp_path) -> Path:
    from model.checkpoint import save_weights

    model, vocab = tiny_model
    save_weights(model, vocab, tmp_path / "tiny", {"training": {"best_val_loss": 3.0, "best_val_bpc": 4.3}})
    return tmp_path / "tiny"


@pytest.fixture
def make_app(tiny_weights):
    """Build apps with injected settings (flaskr-style); their engines are stopped afterwards."""
    from service import create_app
    from service.settings import Settings

    apps = []

    def make(**overrides):
        app = create_app(Settings(**{"weights": str(tiny_weights), "models_dir": str(tiny_weights.parent),
                                     "data_dir": str(tiny_weights.parent / "data"),
                                     "device": "cpu", **overrides}))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["charrnn"].engine.stop()


@pytest.fixture
def client(make_app):
    return make_app().test_client()


def serve(model, vocab, engine=None, *, max_queue: int = 256, threads: int = 0, on_idle=None,
          idle_delay: float = 1.0, wide_batch: int = 16, **lane_kw):
    """An engine (started here unless one is given) serving `model` as one more lane; -> (engine, lane).
    lane_kw: Lane's (name, max_batch, prefill_chunk, prefix_cache, ...); the caller stops the engine."""
    from service.engine import Engine, Lane

    if engine is None:
        engine = Engine(max_queue=max_queue, threads=threads, on_idle=on_idle, idle_delay=idle_delay,
                        wide_batch=wide_batch).start()
    lane = Lane(model, vocab, **lane_kw)
    engine.add(lane)
    return engine, lane


def drain(events, timeout: float = 30.0) -> tuple[str, object]:
    """Read a one-sequence queue to its end: -> (all its text, its last event: Finished or Failed)."""
    from service.engine import Failed, Finished, Text

    text = ""
    while True:
        ev = events.get(timeout=timeout)
        if isinstance(ev, Text):
            text += ev.text
        elif isinstance(ev, (Finished, Failed)):
            return text, ev
