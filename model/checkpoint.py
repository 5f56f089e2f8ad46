"""Files: weights (safetensors + JSON model card) and training checkpoints, all written atomically;
and trained weights as the start of a fine-tuning run (init_from, init_record).

A kill at any moment leaves either the old file or the new one, never half of one: every
write goes to a temp file in the same directory, is fsynced, then os.replace()d over the target.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from model.config import ModelConfig
from model.network import CharRNN
from model.vocab import Vocab


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    return torch.device(name)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), fsync it, then atomically rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def weights_prefix(path: str | Path) -> Path:
    """'weights/x', 'weights/x.safetensors' or 'weights/x.json' -> Path('weights/x')."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(model: CharRNN, vocab: Vocab, prefix: str | Path, card: dict | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
    """Write PREFIX.safetensors (tensors by their PyTorch names) and PREFIX.json (model card)."""
    prefix = weights_prefix(prefix)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    digest = {}

    def write_tensors(tmp: str) -> None:
        save_file(tensors, tmp)
        digest["sha256"] = sha256_file(tmp)

    atomic_write(prefix.with_suffix(".safetensors"), write_tensors)
    # The card names its weights: a reader that meets the new weights beside the old card (between
    # the two renames) can tell the pair is not one yet (service/core/registry.py).
    full = {"format": "charrnn-v1", "vocab": vocab.chars, "config": model.cfg.to_dict(),
            "dtype": str(dtype).removeprefix("torch."), "parameters": model.num_params(),
            **(card or {}), "weights_sha256": digest["sha256"]}
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(full, indent=2, ensure_ascii=False) + "\n")


def load_card(prefix: str | Path) -> dict:
    return json.loads(weights_prefix(prefix).with_suffix(".json").read_text(encoding="utf-8"))


def load_weights(prefix: str | Path, device: str | torch.device = "cpu") -> tuple[CharRNN, Vocab, dict]:
    """Load a model for inference (eval mode, fp32). Never unpickles: safetensors + JSON only."""
    prefix = weights_prefix(prefix)
    card = load_card(prefix)
    vocab = Vocab(card["vocab"])
    cfg = ModelConfig.from_dict({**card["config"], "vocab_size": len(vocab)})
    model = CharRNN(cfg)
    tensors = load_file(str(prefix.with_suffix(".safetensors")), device="cpu")
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return model.to(device).eval(), vocab, card


def save_training_state(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict:
    # weights_only=True: tensors, dicts, lists and numbers only; nothing is unpickled as code.
    return torch.load(path, map_location="cpu", weights_only=True)


# --- fine-tuning: a run that starts from trained weights (model.train --init) ----------------------
def init_record(init: str, chars_seen: int) -> dict:
    """A fine-tune's provenance: the init weights' hash and how they were trained (their card's
    command), and the characters seen by both runs together."""
    record = _init_provenance(init)
    return {"init": dict(record), "chars_seen_total": record["chars_seen"] + chars_seen}


@functools.cache  # the init weights do not change during a run: hash and read them once, not per save
def _init_provenance(init: str) -> dict:
    t = load_card(init).get("training", {})
    return {"weights": init, "sha256": sha256_file(weights_prefix(init).with_suffix(".safetensors")),
            "command": t.get("command"), "chars_seen": t.get("chars_seen_total", t.get("chars_seen")) or 0}


def init_from(model: CharRNN, vocab, prefix: str) -> None:
    """Copy trained weights into a fresh `model` of the same shape whose vocabulary may differ:
    the recurrent core and start state as they are, the embedding rows and head rows of the
    characters both vocabularies share (by character); characters new to the weights keep their
    fresh initialisation, characters the new text lacks are dropped."""
    old, old_vocab, _ = load_weights(prefix)
    shared = [ch for ch in vocab.chars if ch in old_vocab.chars]
    new_idx = torch.tensor([vocab.index(ch) for ch in shared], dtype=torch.long)
    old_idx = torch.tensor([old_vocab.index(ch) for ch in shared], dtype=torch.long)
    state = model.state_dict()
    for name, tensor in old.state_dict().items():
        if name in ("embed.weight", "head.weight", "head.bias"):  # rows by character
            state[name][new_idx.to(state[name].device)] = tensor[old_idx].to(state[name].device)
        else:
            state[name].copy_(tensor)
    model.load_state_dict(state)
