"""Concurrent requests through the engine: shared batches, isolation, back-pressure, cancel."""
import queue
import re
import threading
import time

import pytest
from conftest import serve

from model.sampling import SamplingParams
from service.engine import Finished, Text


def ctx(app):
    return app.extensions["charrnn"]


def lane(app):
    """The default model's lane."""
    return ctx(app).registry.lane(None)


def slow_model(app, delay=0.005):
    """Fault injection: every model call takes `delay` longer, so timing-dependent states last."""
    model = lane(app).model
    forward = model.forward

    def slow(*a, **k):
        time.sleep(delay)
        return forward(*a, **k)
    model.forward = slow


def parallel(client, bodies):
    out = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def run(i):
        start.wait()
        out[i] = client.post("/generate", json=bodies[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def batch_histogram(client) -> tuple[float, float]:
    text = client.get("/metrics").data.decode()
    ones = float(re.search(r'charrnn_batch_size_bucket\{le="1.0",model="tiny"\} (\S+)', text).group(1))
    total = float(re.search(r'charrnn_batch_size_count\{model="tiny"\} (\S+)', text).group(1))
    return ones, total


def test_parallel_requests_share_batches_and_stay_isolated(make_app):
    app = make_app()
    slow_model(app, 0.002)
    client = app.test_client()
    greedy = {"prompt": "the ", "max_new_chars": 80, "temperature": 0}
    seeded = {"prompt": "a", "max_new_chars": 80, "temperature": 1.0, "top_p": 0.9, "seed": 42}
    alone_greedy = client.post("/generate", json=greedy).get_json()["completions"]
    alone_seeded = client.post("/generate", json=seeded).get_json()["completions"]

    others = [{"prompt": "x" * (i + 1), "max_new_chars": 60 + 10 * i, "temperature": 1.5, "seed": i} for i in range(6)]
    rs = parallel(client, [greedy, seeded, *others])
    assert all(r.status_code == 200 for r in rs)
    assert rs[0].get_json()["completions"] == alone_greedy  # same text alone and in a batch
    assert rs[1].get_json()["completions"] == alone_seeded  # own RNG: neighbours don't matter
    ones, total = batch_histogram(client)
    assert total > ones, "no decode step ever had more than one sequence"


def test_prefill_turns_are_counted_by_their_rows(make_app):
    """charrnn_prefill_batch_size: one observation per prompt-reading turn, its rows the value, so
    an operator sees how many prompts the engine reads together."""
    app = make_app()
    slow_model(app, 0.05)
    client = app.test_client()

    def histogram():
        text = client.get("/metrics").data.decode()
        return [float(re.search(rf'charrnn_prefill_batch_size_{k}\{{model="tiny"\}} (\S+)', text).group(1))
                for k in ("count", "sum")]
    texts = ["x" * i + "t" + "x" * (5 - i) for i in range(6)]  # new (no prefix-cache hit), one length
    rs = [None] * len(texts)
    start = threading.Barrier(len(texts))

    def run(i):
        start.wait()
        rs[i] = client.post("/predict-next", json={"text": texts[i]})
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r.status_code == 200 for r in rs)
    turns, rows = histogram()
    assert rows == len(texts)   # every prompt read once (each fits one chunk; equal lengths: one turn each)
    assert turns < len(texts)   # the slow model let later arrivals share a turn
    client.post("/predict-next", json={"text": texts[0]})  # a prefix-cache hit reads nothing: no turn
    assert histogram() == [turns, rows]


def test_traffic_leaves_the_shared_start_state_as_trained(make_app):
    """Every new sequence starts from one shared copy of the start state: no path may write into
    it (an empty prompt joins an empty batch with it as the batch's state; a single-row turn hands
    it to the prompt path as it is)."""
    import torch
    app = make_app()
    client, served = app.test_client(), lane(app)
    for body in ({"max_new_chars": 5, "prompt": ""}, {"max_new_chars": 5, "prompt": "the"}):
        assert client.post("/generate", json=body).status_code == 200
    assert client.post("/predict-next", json={"text": "xt"}).status_code == 200
    want = served.model.init_hidden(1)
    assert all(torch.equal(a, b) for a, b in zip(served._start.parts, want.parts))


def test_full_queue_answers_429_right_away(make_app):
    app = make_app(max_batch=1, max_queue=0)
    client = app.test_client()
    t = time.monotonic()
    r = client.post("/generate", json={"max_new_chars": 5, "n": 2})  # 2 sequences, room for 1
    assert r.status_code == 429 and r.headers["Retry-After"] == "1" and time.monotonic() - t < 1
    assert r.get_json()["error"]["type"] == "queue_full"

    slow_model(app)
    stream = client.post("/generate", json={"max_new_chars": 2000, "stream": True}, buffered=False)
    it = iter(stream.response)
    next(it)  # the stream holds the only slot now
    r = client.post("/predict-next", json={"text": "a"})
    assert r.status_code == 429
    stream.close()


def test_cancelled_stream_frees_its_slot(make_app):
    app = make_app()
    slow_model(app)
    engine = ctx(app).engine
    client = app.test_client()
    r = client.post("/generate", json={"max_new_chars": 2000, "stream": True, "n": 2}, buffered=False)
    chunks = iter(r.response)
    next(chunks), next(chunks)
    assert engine.active() == 2
    r.close()  # what the server does when the client goes away
    deadline = time.monotonic() + 5
    while engine.active() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.active() == 0
    assert engine.steps < 1000  # stopped long before its 2000 characters


def test_deadline_gives_504_and_frees_the_slot(make_app):
    app = make_app(request_timeout_s=0.3)
    slow_model(app)
    client = app.test_client()
    r = client.post("/generate", json={"max_new_chars": 2000})
    assert r.status_code == 504 and r.get_json()["error"]["type"] == "timeout"
    time.sleep(0.1)
    assert ctx(app).engine.active() == 0
    r = client.post("/generate", json={"max_new_chars": 2000, "stream": True})
    events = r.data.decode()
    assert '"type": "timeout"' in events and events.rstrip().endswith("data: [DONE]")


def test_long_prompts_are_prefilled_in_chunks_alongside_decoding(make_app):
    app = make_app(prefill_chunk=16, max_prompt_chars=5000)
    client = app.test_client()
    rs = parallel(client, [{"prompt": "ab " * 1000, "max_new_chars": 30, "seed": 1},
                           {"prompt": "c", "max_new_chars": 30, "seed": 1}])
    assert [r.status_code for r in rs] == [200, 200]
    alone = client.post("/generate", json={"prompt": "ab " * 1000, "max_new_chars": 30, "seed": 1}).get_json()
    assert rs[0].get_json()["completions"] == alone["completions"]


def test_a_failing_model_call_fails_its_requests_not_the_engine(make_app):
    app = make_app()
    model = lane(app).model
    forward, calls = model.forward, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected fault")
        return forward(*a, **k)
    model.forward = flaky
    client = app.test_client()
    r = client.post("/generate", json={"max_new_chars": 20})
    assert r.status_code == 500 and r.get_json()["error"]["type"] == "engine_error"
    assert "injected" not in r.get_data(as_text=True)
    assert client.get("/ready").status_code == 200
    assert client.post("/generate", json={"max_new_chars": 20}).status_code == 200


@pytest.mark.parametrize("interval,expected", [(0.0, ["a", "b", "c", "d", "e"]), (60.0, ["a", "bcde"])])
def test_stream_interval_batches_text_events_but_never_loses_text(interval, expected):
    """Streams send the first text at once, later text at most every `interval` s, and all of it."""
    from service.engine import Sequence
    events = queue.Queue()
    s = Sequence([0], SamplingParams(), 0, max_new=5, stops=[], deadline=1e18, events=events, interval=interval)
    for ch in "abcde":
        s.push(ch, 0)
    got = [events.get_nowait() for _ in range(events.qsize())]
    assert [e.text for e in got if isinstance(e, Text)] == expected
    assert got[-1] == Finished(0, "length")


def test_idle_work_waits_for_a_quiet_spell_not_each_gap_between_requests(tiny_model):
    """on_idle (the heap trim) runs once the engine has had no work for idle_delay: a client
    sending one request after another never meets it between them."""
    model, vocab = tiny_model
    calls = []
    eng, served = serve(model, vocab, prefix_cache=0, idle_delay=0.3, on_idle=lambda: calls.append(time.monotonic()))
    try:
        time.sleep(0.5)
        assert len(calls) == 1  # idle since start-up
        for i in range(8):      # one request after another, 50 ms apart
            events = queue.Queue()
            eng.submit(served, [served.new_sequence([1, 2, 3], params=SamplingParams(), seed=i, max_new=4, stops=[],
                                                    deadline=time.monotonic() + 30, events=events)])
            while not isinstance(events.get(timeout=10), Finished):
                pass
            time.sleep(0.05)
        assert len(calls) == 1
        time.sleep(0.5)
        assert len(calls) == 2  # the quiet spell after them
    finally:
        eng.stop()


def _threads_per_call(model, vocab, batches, reserved=0):
    """Serve `batches` (rows of each batch, one batch after another) on an engine with 2 threads and
    wide_batch 4; -> (rows, characters per row, torch threads) of each model call on the engine thread."""
    import torch

    seen, forward = [], model.forward

    def spy(x, state=None, **kw):
        seen.append((x.shape[0], x.shape[1], torch.get_num_threads()))
        return forward(x, state, **kw)
    model.forward = spy
    eng, served = serve(model, vocab, prefix_cache=0, threads=2, wide_batch=4)
    eng.reserved = reserved
    try:
        seen.clear()
        for n in batches:
            queues = [queue.Queue() for _ in range(n)]
            eng.submit(served, [served.new_sequence([1, 2, 3, 4], params=SamplingParams(), seed=i, max_new=6,
                                                    stops=[], deadline=time.monotonic() + 30, events=q)
                                for i, q in enumerate(queues)])
            for q in queues:
                while not isinstance(q.get(timeout=10), Finished):
                    pass
    finally:
        eng.stop()
        model.forward = forward
    return seen


def test_small_turns_run_on_one_torch_thread_wide_ones_on_all(tiny_model):
    """A second OpenMP thread pays off for wide batches; on small turns it costs the HTTP threads
    more than it gains (docs/performance.md)."""
    seen = _threads_per_call(*tiny_model, (1, 6))
    prompts = [s for s in seen if s[1] > 1]
    steps = [s for s in seen if s[1] == 1]
    assert {t for b, _, t in prompts if b < 4} == {1} and {t for b, _, t in prompts if b >= 4} == {2}
    assert {t for b, _, t in steps if b < 4} == {1} and {t for b, _, t in steps if b >= 4} == {2}


def test_wide_turns_leave_the_cores_a_training_job_needs(tiny_model):
    """Engine.reserved (set while fine-tuning jobs run on this machine) shrinks the OpenMP team of wide
    turns: a team member sharing its core with a busy trainer makes every parallel region wait."""
    seen = _threads_per_call(*tiny_model, (6,), reserved=1)
    assert {t for b, _, t in seen if b >= 4} == {1}


def test_the_server_yields_cores_while_a_job_runs(make_app):
    app = make_app(torch_threads=2, train_threads=1)
    c = app.extensions["charrnn"]
    deadline = time.monotonic() + 10
    assert c.engine.reserved == 0
    c.store.add_job({"id": "ftjob-x", "created_at": 0, "status": "running", "model": "tiny", "suffix": None,
                     "training_file": "file-x", "validation_file": None, "hyperparameters": {}, "seed": 1,
                     "total_steps": 10})
    while c.engine.reserved == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.engine.reserved == 1
    c.store.update_job("ftjob-x", status="succeeded")
    while c.engine.reserved == 1 and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    assert c.engine.reserved == 0
