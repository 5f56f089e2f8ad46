"""One poisoned sequence in a shared batch fails alone: its batch-mates finish with exactly the
text they would have had without it (engine level, so a poison can be crafted past the API)."""
import queue
import time

import pytest

from model.sampling import SamplingParams
from service.engine import Engine


@pytest.fixture
def engine(tiny_model):
    model, vocab = tiny_model
    eng = Engine(model, vocab, max_batch=16, max_queue=16, prefill_chunk=8, prefix_cache=0).start()
    yield eng
    eng.stop()


def innocents(engine):
    return [engine.new_sequence([1 + i, 2, 3], params=SamplingParams(temperature=1.0, top_p=0.95 if i % 2 else None,
                                                                       repetition_penalty=1.3 if i % 3 == 0 else 1.0),
                                seed=100 + i, max_new=40 + 5 * i, stops=[], deadline=time.monotonic() + 60,
                                events=queue.Queue()) for i in range(7)]


def run(engine, seqs) -> list[tuple[str, str]]:
    """Submit all at once (so they are admitted, prefilled and decoded together); -> (text, ending)."""
    engine.submit(seqs)
    out = []
    for s in seqs:
        text = ""
        while True:
            _, kind, value = s.events.get(timeout=30)
            if kind == "text":
                text += value
            else:
                out.append((text, kind if kind != "done" else "done"))
                break
    return out


def poison_sampler(engine):  # an integer no tensor can hold: batch_params raises for the whole batch
    return engine.new_sequence([1, 2], params=SamplingParams(temperature=1.0, top_k=10**30), seed=7, max_new=50,
                               stops=[], deadline=time.monotonic() + 60, events=queue.Queue())


def poison_prefill(engine):  # an id outside the embedding: the batched prefill raises
    return engine.new_sequence([1, len(engine.vocab) + 3, 2], params=SamplingParams(), seed=7, max_new=50,
                               stops=[], deadline=time.monotonic() + 60, events=queue.Queue())


def poison_push(engine):  # a stop "string" that is not one: this row's own push raises
    return engine.new_sequence([1, 2], params=SamplingParams(temperature=1.0), seed=7, max_new=50,
                               stops=[None], deadline=time.monotonic() + 60, events=queue.Queue())


@pytest.mark.parametrize("poison", [poison_sampler, poison_prefill, poison_push])
def test_a_poisoned_sequence_fails_alone_and_the_others_texts_are_unchanged(engine, poison):
    clean = run(engine, innocents(engine))
    assert all(ending == "done" and text for text, ending in clean)

    seqs = innocents(engine)
    bad = poison(engine)
    mixed = run(engine, seqs[:3] + [bad] + seqs[3:])
    assert mixed[3] == ("", "error")
    assert mixed[:3] + mixed[4:] == clean  # same seeded texts, character for character
    assert engine.ready
    assert run(engine, innocents(engine)) == clean  # and the engine carries on as before


def test_a_fault_that_is_nobodys_in_particular_still_fails_the_batch(engine):
    forward, calls = engine.model.forward, []

    def broken_decode(x, state=None, **kw):
        if x.shape[1] == 1:  # every decode step: no row alone can be blamed
            raise RuntimeError("injected fault")
        return forward(x, state, **kw)
    engine.model.forward = broken_decode
    try:
        out = run(engine, innocents(engine)[:3])
    finally:
        engine.model.forward = forward
    assert [ending for _, ending in out] == ["error"] * 3
    assert run(engine, innocents(engine)[:1])[0][1] == "done"


def test_a_stopped_engine_says_shutdown_and_the_api_answers_503_not_500(tiny_model):
    """The HTTP status follows the event's kind, never the wording of its message."""
    from service.api import _engine_error
    from service.engine import Event

    model, vocab = tiny_model
    eng = Engine(model, vocab, max_batch=4, max_queue=4, prefix_cache=0).start()
    seq = eng.new_sequence([1, 2], params=SamplingParams(temperature=1.0), seed=1, max_new=10**6, stops=[],
                           deadline=time.monotonic() + 60, events=queue.Queue())
    eng.submit([seq])
    while seq.events.empty():  # running: its first text is out
        time.sleep(0.01)
    eng.stop()
    kinds = []
    while not seq.events.empty():
        kinds.append(seq.events.get_nowait()[1])
    assert kinds[-1] is Event.SHUTDOWN
    assert _engine_error(Event.SHUTDOWN, "server shutting down").status == 503
    assert _engine_error(Event.ERROR, "server shutting down").status == 500
