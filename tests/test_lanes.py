"""One engine thread serving several models (lanes): each lane with work gets one turn per pass, a
retired lane finishes its own sequences and leaves, Engine.call runs work on the engine thread, and
warm_up probes precisions once per model shape."""
import queue
import threading
import time

import pytest
import torch
from conftest import drain, serve

from model import CharRNN, ModelConfig, Vocab
from model.sampling import SamplingParams
from service.engine import Finished, Lane, NotRunning, warm_up

VOCAB = Vocab(sorted(set("abcdefghijklmnopqrstuvwxyz .,\n")))


def tiny(seed: int = 0, hidden: int = 16) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(len(VOCAB), embed=8, hidden=hidden, layers=2, dropout=0.0)).eval()


def sequences(lane, n: int, max_new: int, events=None, stream: bool = True):
    return [lane.new_sequence([1 + i % 5, 2, 3], params=SamplingParams(temperature=1.0), seed=i, max_new=max_new,
                              stops=[], deadline=time.monotonic() + 600,
                              events=queue.Queue() if events is None else events, stream=stream)
            for i in range(n)]


def gate_first_decode_step(model):
    """Hold the engine thread in this model's first decode step until `release` is set: what the test
    does meanwhile happens at a known point of the schedule, however busy the machine.
    -> (reached, release, undo)."""
    forward, reached, release = model.forward, threading.Event(), threading.Event()

    def gated(x, state=None, **kw):
        if x.shape[1] == 1 and not reached.is_set():
            reached.set()
            release.wait(30)
        return forward(x, state, **kw)
    model.forward = gated

    def undo():
        release.set()
        model.forward = forward
    return reached, release, undo


class Snapshot(queue.Queue):
    """An event queue that, on the engine thread as it takes Finished, records `look()`: the state of
    the other lane at that very step (the test thread may wake up much later)."""

    def __init__(self, look):
        super().__init__()
        self.look, self.seen = look, None

    def put(self, item, *a, **k):
        if isinstance(item, Finished) and self.seen is None:
            self.seen = self.look()
        super().put(item, *a, **k)


@pytest.fixture
def engine():
    from service.engine import Engine

    eng = Engine().start()
    yield eng
    eng.stop()


def test_a_big_batch_on_one_model_does_not_starve_a_single_request_on_another(engine):
    _, a = serve(tiny(0), VOCAB, engine, name="a", max_batch=64, prefix_cache=0)
    _, b = serve(tiny(1), VOCAB, engine, name="b", prefix_cache=0)
    assert engine.lanes == [a, b]
    reached, release, undo = gate_first_decode_step(a.model)
    try:
        big = sequences(a, 64, 400, stream=False)
        engine.submit(a, big)
        assert reached.wait(30)  # A's 64 rows are prefilled and decoding (the engine waits in their first step)
        assert a.active() == 64 and a.steps == 1 and all(len(s.text) == 1 for s in big)
        events = Snapshot(lambda: (a.steps, [len(s.text) for s in big], [s.done for s in big]))
        small = sequences(b, 1, 20, events=events)
        engine.submit(b, small)
    finally:
        undo()
    text, end = drain(events)
    assert end == Finished(0, "length") and len(text) == 20
    a_steps, a_chars, a_done = events.seen
    # B needed one prefill turn and 20 decode steps; in that time A took about as many steps (one
    # turn per lane per pass), nowhere near the 400 it needs: its batch did not run to the end first.
    assert not any(a_done)
    assert a_steps <= 1 + 2 * 20 and max(a_chars) <= 1 + 2 * 20 < 100
    for s in big:  # and A's rows go on to finish, every character of them
        text, end = drain(s.events)
        assert end == Finished(0, "length") and len(text) == 400


def test_a_retired_lane_finishes_its_sequences_then_leaves(engine):
    _, lane = serve(tiny(0), VOCAB, engine, name="old", prefix_cache=0)
    _, other = serve(tiny(1), VOCAB, engine, name="other", prefix_cache=0)
    reached, release, undo = gate_first_decode_step(lane.model)
    try:
        running = sequences(lane, 3, 200)
        engine.submit(lane, running)
        assert reached.wait(30)
        engine.retire(lane)
        with pytest.raises(NotRunning):  # no new sequences once retired...
            engine.submit(lane, sequences(lane, 1, 5))
        assert lane in engine.lanes      # ...while its own still run
    finally:
        undo()
    for s in running:
        text, end = drain(s.events)
        assert end == Finished(0, "length") and len(text) == 200  # finished, not failed
    # It leaves the engine once nothing of its own is left (the engine's next pass: a request to
    # another lane makes one).
    assert drain(_run_one(engine, other))[1] == Finished(0, "length")
    deadline = time.monotonic() + 10
    while lane in engine.lanes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.lanes == [other]
    with pytest.raises(NotRunning):
        engine.submit(lane, sequences(lane, 1, 5))


def _run_one(engine, lane) -> queue.Queue:
    (s,) = sequences(lane, 1, 5)
    engine.submit(lane, [s])
    return s.events


def test_call_runs_on_the_engine_thread_and_its_exception_reaches_the_caller(engine):
    assert engine.call(lambda: threading.current_thread().name).result(30) == "charrnn-engine"

    def broken():
        raise ValueError("injected")
    fut = engine.call(broken)
    with pytest.raises(ValueError, match="injected"):
        fut.result(30)
    assert engine.ready  # the engine goes on: calls and sequences still run
    assert engine.call(lambda: 42).result(30) == 42
    _, lane = serve(tiny(0), VOCAB, engine, prefix_cache=0)
    assert drain(_run_one(engine, lane))[1] == Finished(0, "length")
    engine.stop()
    with pytest.raises(NotRunning):
        engine.call(lambda: None)


def test_warm_up_probes_once_per_model_shape(engine, monkeypatch):
    import model.precision as mp

    if not mp.fp16_available():
        pytest.skip("no fp16 linear in this torch build or on this CPU: a single candidate is never probed")
    probe, calls = mp.probe_precision, []

    def counting(model, candidates, *a, **k):  # measures as usual, then always picks fp16 (not the default)
        calls.append(model)
        _, scores = probe(model, candidates, *a, **k)
        model.set_precision("fp16")
        return "fp16", scores
    monkeypatch.setattr(mp, "probe_precision", counting)
    probed, candidates = {}, ["fp32", "fp16"]
    first, second, wider = (Lane(tiny(seed, hidden), VOCAB, name=f"m{seed}", prefix_cache=0)
                            for seed, hidden in ((0, 16), (1, 16), (2, 24)))
    assert second.model.precision == "fp32"

    scores = engine.call(lambda: warm_up(first, candidates, probed)).result(60)
    assert calls == [first.model] and set(scores) == {"fp32", "fp16"}
    again = engine.call(lambda: warm_up(second, candidates, probed)).result(60)
    assert calls == [first.model]  # the same shape: not probed again...
    assert again == scores and second.model.precision == "fp16"  # ...but given the probe's choice
    engine.call(lambda: warm_up(wider, candidates, probed)).result(60)
    assert calls == [first.model, wider.model]  # another shape is probed for itself


def test_a_retired_lane_leaves_even_when_the_engine_has_nothing_else_to_do(engine):
    _, lane = serve(tiny(0), VOCAB, engine, name="old", prefix_cache=0)
    assert drain(_run_one(engine, lane))[1] == Finished(0, "length")
    engine.retire(lane)
    deadline = time.monotonic() + 2
    while lane in engine.lanes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lane not in engine.lanes
