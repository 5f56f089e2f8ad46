"""The recurrent cells a Char-RNN can be built on, as char-rnn's `-model lstm|gru|rnn`.

Below both model/config.py (which checks a config's cell) and model/network.py (which builds it),
so neither imports the other for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Cell:
    module: type          # the torch.nn recurrent module
    start: tuple          # names of the learned start-state parameters = the State's parts, in order


# A fourth cell: an entry here and its decode step in model/fused.py (STEPS).
CELLS = {
    "lstm": Cell(nn.LSTM, ("h0", "c0")),
    "gru": Cell(nn.GRU, ("h0",)),
    "rnn": Cell(nn.RNN, ("h0",)),   # Elman RNN, tanh
}
