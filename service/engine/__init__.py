"""The engine layer: continuous batching of every loaded model on one thread. Knows no HTTP and no
files; the registry (service/core/registry.py) hands it loaded models as lanes."""
from service.engine.engine import Engine, LaneRetired, NotRunning, QueueFull, warm_up
from service.engine.lane import Lane
from service.engine.sequence import Failed, Finished, Logits, PromptScores, Sequence, Text, timed_out

__all__ = ["Engine", "LaneRetired", "NotRunning", "QueueFull", "warm_up", "Lane", "Sequence", "Text", "PromptScores", "Logits",
           "Finished", "Failed", "timed_out"]
