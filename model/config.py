"""The one dataclass that describes a Char-RNN's shape; saved in every model card."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from model.cells import CELLS


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    embed: int = 128      # character embedding width
    hidden: int = 512     # recurrent width per layer (the LSTM's hidden and cell state)
    layers: int = 2       # stacked recurrent layers
    dropout: float = 0.25 # between recurrent layers and on their output (training only)
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden matrices (AWD-LSTM; training only)
    cell: str = "lstm"    # recurrent cell: lstm | gru | rnn (model/cells.py CELLS); absent in old cards = lstm

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, not {self.cell!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
