"""Char-RNN: a character-level LSTM language model (training, evaluation, sampling).

Nothing here imports Flask or reads configuration at import time.
"""
from model.config import ModelConfig
from model.network import CharRNN
from model.vocab import Vocab

__all__ = ["ModelConfig", "CharRNN", "Vocab"]
