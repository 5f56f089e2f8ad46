"""Char-RNN: a character-level recurrent language model, LSTM, GRU or RNN (training, evaluation,
sampling).

Nothing here imports Flask or reads configuration at import time.
"""
from model.config import ModelConfig
from model.network import CharRNN
from model.state import State
from model.vocab import Vocab

__all__ = ["ModelConfig", "CharRNN", "State", "Vocab"]
