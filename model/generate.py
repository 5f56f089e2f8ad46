"""Prompt prefill and the sampling loop for one sequence, used by the CLI (model/sample.py) and as
the reference the service's batched engine is tested against (tests/test_service.py). The engine
shares context_ids and the sampling transforms (model/sampling.py), not these loops."""
from __future__ import annotations

import random
from collections.abc import Iterator

import torch

from model.network import CharRNN
from model.state import State
from model.sampling import SamplingParams, batch_params, find_stop, sample_batch
from model.vocab import Vocab


def context_ids(vocab: Vocab, prompt_ids) -> list[int]:
    """The ids the model reads. A char-RNN has no start token: an empty prompt reads as a
    newline (where text begins in most corpora) when the vocabulary has one."""
    ids = [int(i) for i in prompt_ids]
    if not ids and "\n" in vocab.chars:
        ids = [vocab.index("\n")]
    return ids


@torch.no_grad()
def prefill(model: CharRNN, ids: list[int], state: State | None = None) -> tuple[torch.Tensor, State]:
    """Run a whole prompt through the recurrent core at once (not one step per character).
    -> logits for the next character (1, V), and the state after the prompt."""
    device = model.head.weight.device
    if not ids:  # nothing to read: the head on the start state
        state = state or model.init_hidden(1, device)
        return model.head_logits(state), state
    logits, state = model(torch.tensor([ids], dtype=torch.long, device=device), state, infer=True)
    return logits[:, -1], state


@torch.no_grad()
def stream(model: CharRNN, vocab: Vocab, prompt: str, max_new: int, params: SamplingParams,
           seed: int) -> Iterator[str]:
    """Yield generated characters one by one."""
    ids = context_ids(vocab, vocab.encode(prompt))
    logits, state = prefill(model, ids)
    rng, recent = random.Random(seed), ids[-params.penalty_window:]
    settings, penalty = batch_params([params], len(vocab)), params.repetition_penalty != 1  # built once, not per step
    device = logits.device
    for _ in range(max_new):
        rec = torch.tensor([recent or [-1]], dtype=torch.long) if penalty else None
        nxt = int(sample_batch(logits.cpu(), settings, [rng], rec)[0])
        yield vocab.chars[nxt]
        if penalty:
            recent = (recent + [nxt])[-params.penalty_window:]
        logits, state = model(torch.tensor([[nxt]], device=device), state, infer=True)
        logits = logits[:, -1]


def generate(model: CharRNN, vocab: Vocab, prompt: str, max_new: int, params: SamplingParams,
             seed: int, stops: list[str] = ()) -> tuple[str, str]:
    """-> (generated text, finish_reason 'length'|'stop'); a stop string is not included."""
    text = ""
    for ch in stream(model, vocab, prompt, max_new, params, seed):
        text += ch
        cut = find_stop(text, list(stops), len(text) - 1)
        if cut is not None:
            return text[:cut], "stop"
    return text, "length"
