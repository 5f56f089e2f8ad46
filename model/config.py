"""The one dataclass that describes a Char-RNN's shape; saved in every model card."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    embed: int = 128      # character embedding width
    hidden: int = 512     # LSTM hidden/cell width per layer
    layers: int = 2       # stacked LSTM layers
    dropout: float = 0.25 # between LSTM layers and on the LSTM output (training only)
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden matrices (AWD-LSTM; training only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
