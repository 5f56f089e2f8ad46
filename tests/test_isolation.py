"""One poisoned sequence in a shared batch fails alone: its batch-mates finish with exactly the
text they would have had without it (engine level, so a poison can be crafted past the API)."""
import queue
import time

import pytest
from conftest import drain, serve

from model.sampling import SamplingParams
from service.engine import Failed, Finished


@pytest.fixture
def served(tiny_model):
    model, vocab = tiny_model
    engine, lane = serve(model, vocab, max_queue=16, max_batch=16, prefill_chunk=8, prefix_cache=0)
    yield engine, lane
    engine.stop()


def innocents(lane):
    return [lane.new_sequence([1 + i, 2, 3], params=SamplingParams(temperature=1.0, top_p=0.95 if i % 2 else None,
                                                                     repetition_penalty=1.3 if i % 3 == 0 else 1.0),
                              seed=100 + i, max_new=40 + 5 * i, stops=[], deadline=time.monotonic() + 60,
                              events=queue.Queue()) for i in range(7)]


def run(served, seqs) -> list[tuple[str, object]]:
    """Submit all at once (so they are admitted, prefilled and decoded together); -> (text, last event)."""
    engine, lane = served
    engine.submit(lane, seqs)
    return [drain(s.events) for s in seqs]


def is_engine_error(ev) -> bool:
    return isinstance(ev, Failed) and (ev.status, ev.code) == (500, "engine_error")


def poison_sampler(lane):  # an integer no tensor can hold: batch_params raises for the whole batch
    return lane.new_sequence([1, 2], params=SamplingParams(temperature=1.0, top_k=10**30), seed=7, max_new=50,
                             stops=[], deadline=time.monotonic() + 60, events=queue.Queue())


def poison_prefill(lane):  # an id outside the embedding: the batched prefill raises
    return lane.new_sequence([1, len(lane.vocab) + 3, 2], params=SamplingParams(), seed=7, max_new=50,
                             stops=[], deadline=time.monotonic() + 60, events=queue.Queue())


def poison_push(lane):  # a stop "string" that is not one: this row's own push raises
    return lane.new_sequence([1, 2], params=SamplingParams(temperature=1.0), seed=7, max_new=50,
                             stops=[None], deadline=time.monotonic() + 60, events=queue.Queue())


@pytest.mark.parametrize("poison", [poison_sampler, poison_prefill, poison_push])
def test_a_poisoned_sequence_fails_alone_and_the_others_texts_are_unchanged(served, poison):
    engine, lane = served
    clean = run(served, innocents(lane))
    assert all(isinstance(ending, Finished) and text for text, ending in clean)

    seqs = innocents(lane)
    bad = poison(lane)
    mixed = run(served, seqs[:3] + [bad] + seqs[3:])
    assert mixed[3][0] == "" and is_engine_error(mixed[3][1])
    assert mixed[:3] + mixed[4:] == clean  # same seeded texts (and endings), character for character
    assert engine.ready
    assert run(served, innocents(lane)) == clean  # and the engine carries on as before


def test_a_fault_that_is_nobodys_in_particular_still_fails_the_batch(served):
    engine, lane = served
    forward = lane.model.forward

    def broken_decode(x, state=None, **kw):
        if x.shape[1] == 1:  # every decode step: no row alone can be blamed
            raise RuntimeError("injected fault")
        return forward(x, state, **kw)
    lane.model.forward = broken_decode
    try:
        out = run(served, innocents(lane)[:3])
    finally:
        lane.model.forward = forward
    assert all(is_engine_error(ending) for _, ending in out) and len(out) == 3
    assert isinstance(run(served, innocents(lane)[:1])[0][1], Finished)


def test_a_stopped_engine_says_shutdown_and_the_api_answers_503_not_500(tiny_model):
    """The HTTP status follows the event's status and code, never the wording of its message."""
    from service.core.completion import failure

    model, vocab = tiny_model
    eng, lane = serve(model, vocab, max_queue=4, max_batch=4, prefix_cache=0)
    seq = lane.new_sequence([1, 2], params=SamplingParams(temperature=1.0), seed=1, max_new=10**6, stops=[],
                            deadline=time.monotonic() + 60, events=queue.Queue())
    eng.submit(lane, [seq])
    while seq.events.empty():  # running: its first text is out
        time.sleep(0.01)
    eng.stop()
    events = []
    while not seq.events.empty():
        events.append(seq.events.get_nowait())
    last = events[-1]
    assert isinstance(last, Failed) and (last.status, last.code) == (503, "shutting_down")
    err = failure(last)
    assert (err.status, err.type) == (503, "shutting_down") and err.headers["Retry-After"] == "1"
    err = failure(Failed(None, 500, "engine_error", "server shutting down"))
    assert (err.status, err.type) == (500, "engine_error") and "Retry-After" not in err.headers
