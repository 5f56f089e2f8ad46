"""Files and fine-tuning jobs (service/http/tuning.py, jobs/): uploads checked and stored, jobs planned
and queued, trained by the trainer in its own process (jobs/runner.py -> python -m model.train),
resumed after a kill -9, cancelled within seconds, and the result served by name."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from model import CharRNN, ModelConfig, Vocab
from model.checkpoint import save_weights

TEXT = "the quick brown fox jumps over the lazy dog. " * 80  # 3,600 characters
LATIN = Vocab(sorted(set(TEXT)))


def base_model(folder: Path, name: str = "base", hidden: int = 32) -> Path:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(len(LATIN), embed=8, hidden=hidden, layers=1, dropout=0.0)).eval()
    save_weights(model, LATIN, folder / name, {"training": {"command": "python -m model.train --data base.txt"}})
    return folder / name


@pytest.fixture
def dirs(tmp_path):
    models, data = tmp_path / "models", tmp_path / "data"
    models.mkdir()
    base_model(models)
    return models, data


@pytest.fixture
def app(dirs):
    from service import create_app
    from service.settings import Settings

    models, data = dirs
    made = []

    def make(**kw):
        a = create_app(Settings(**{"weights": str(models / "base"), "models_dir": str(models), "data_dir": str(data),
                                   "device": "cpu", **kw}))
        made.append(a)
        return a
    yield make
    for a in made:
        a.extensions["charrnn"].engine.stop()


def upload(client, content: bytes, name="text.txt", purpose="fine-tune"):
    return client.post("/v1/files", data={"purpose": purpose, "file": (io.BytesIO(content), name)},
                       content_type="multipart/form-data")


def runner(dirs, **env):
    models, data = dirs
    log = open(data.parent / "runner.log", "ab")
    full = {**os.environ, "CHARRNN_DATA_DIR": str(data), "CHARRNN_MODELS_DIR": str(models), "PYTHONPATH": str(ROOT),
            **env}
    return subprocess.Popen([sys.executable, "-m", "jobs.runner"], cwd=ROOT, env=full, stdout=log,
                            stderr=subprocess.STDOUT)


def wait(client, jid, until, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/v1/fine_tuning/jobs/{jid}").get_json()
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {jid} still {job['status']} after {timeout}s: "
                         f"{[e['message'] for e in client.get(f'/v1/fine_tuning/jobs/{jid}/events?limit=50').get_json()['data']]}")


def events(client, jid) -> list[dict]:
    return list(reversed(client.get(f"/v1/fine_tuning/jobs/{jid}/events?limit=1000").get_json()["data"]))


def job(client, fid, **kw):
    body = {"model": "base", "training_file": fid, "hyperparameters": {"n_steps": 40, "batch_size": 8, "seq_len": 32},
            "seed": 1, **kw}
    return client.post("/v1/fine_tuning/jobs", json=body)


# --- uploads ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, name, settings, status, code, words", [
    (b"abc\xffdef" * 500, "t.txt", {}, 400, "invalid_utf8", "byte offset 3"),
    (b"too short", "t.txt", {}, 400, "file_too_small", "validation split"),
    ("".join(chr(0x4E00 + i) for i in range(60)).encode() * 50, "t.txt", {"max_file_chars": 50}, 400,
     "too_many_characters", "60 distinct"),
    (TEXT.encode() * 3, "t.txt", {"max_file_bytes": 4096}, 413, "file_too_large", "limit is 4096"),
    (b'{"text": "a"}\nnot json\n' * 200, "t.jsonl", {}, 400, "invalid_jsonl", "one JSON object per line"),
])
def test_each_bad_upload_is_a_4xx_that_says_what_and_where(app, content, name, settings, status, code, words):
    client = app(**settings).test_client()
    r = upload(client, content, name)
    err = r.get_json()["error"]
    assert r.status_code == status and err["code"] == code and words in err["message"], err
    assert err["param"] == "file" and client.get("/v1/files").get_json()["data"] == []  # nothing stored


def test_upload_requests_are_checked(app):
    client = app().test_client()
    assert upload(client, TEXT.encode(), purpose="batch").get_json()["error"]["param"] == "purpose"
    r = client.post("/v1/files", data={"purpose": "fine-tune"}, content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "missing_file"


def test_files_are_stored_listed_read_back_and_deleted(app, dirs):
    client = app().test_client()
    a = upload(client, TEXT.encode(), "../../etc/passwd").get_json()
    assert a["object"] == "file" and a["filename"] == "passwd" and a["bytes"] == len(TEXT)
    records = "".join(json.dumps({"prompt": "Q: fox?\n", "completion": "A: the quick brown fox.\n"}) + "\n"
                      for _ in range(100)).encode()
    b = upload(client, records, "qa.jsonl").get_json()
    assert "jsonl: 3200 characters" in b["status_details"]
    assert [f["id"] for f in client.get("/v1/files").get_json()["data"]] == [b["id"], a["id"]]
    page = client.get("/v1/files?limit=1").get_json()
    assert [f["id"] for f in page["data"]] == [b["id"]] and page["has_more"]
    assert client.get(f"/v1/files/{a['id']}").get_json() == a
    assert client.get(f"/v1/files/{b['id']}/content").data == records  # the bytes as uploaded
    files = dirs[1] / "files"
    assert sorted(p.name for p in files.iterdir()) == sorted(f"{i}.{k}" for i in (a["id"], b["id"]) for k in ("bin", "txt"))
    assert client.delete(f"/v1/files/{a['id']}").get_json() == {"id": a["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{a['id']}").status_code == 404
    assert client.get("/v1/files/..%2F..%2Fjobs.db").status_code == 404


def test_the_disk_cap_refuses_uploads_beyond_it(app):
    client = app(max_data_bytes=1 << 20).test_client()
    big = ("ab " * 120_000).encode()  # 360 kB, stored twice (as uploaded, and as text)
    assert upload(client, big).status_code == 200
    r = upload(client, big)
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "storage_full"


# --- jobs without a trainer ------------------------------------------------------------------------
def test_job_requests_are_checked(app):
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    r = job(client, fid, model="gpt-4")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "model_not_found"
    r = job(client, "file-nope")
    assert r.status_code == 404 and r.get_json()["error"]["param"] == "training_file"
    r = job(client, fid, hyperparameters={"hidden": 64})
    assert r.status_code == 400 and "scratch" in r.get_json()["error"]["message"]
    r = job(client, fid, hyperparameters={"batch_size": 512, "seq_len": 512})
    assert r.status_code == 400 and "too short" in r.get_json()["error"]["message"]
    for bad in ({"suffix": "no/slash"}, {"suffix": "x" * 19}, {"integrations": [{"type": "wandb"}]},
                {"hyperparameters": {"n_epochs": 0}}, {"hyperparameters": {"warp": 9}}):
        assert job(client, fid, **bad).status_code == 400, bad


def test_jobs_list_in_pages_and_a_queued_job_cancels_at_once(app):
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    ids = [job(client, fid, suffix=f"s{i}").get_json()["id"] for i in range(3)]
    first = client.get(f"/v1/fine_tuning/jobs/{ids[0]}").get_json()
    assert first["status"] == "queued" and first["fine_tuned_model"] is None and first["total_steps"] == 40
    page = client.get("/v1/fine_tuning/jobs?limit=2").get_json()
    assert [j["id"] for j in page["data"]] == ids[:0:-1] and page["has_more"]
    rest = client.get(f"/v1/fine_tuning/jobs?limit=2&after={ids[1]}").get_json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and not rest["has_more"]
    r = client.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel").get_json()
    assert r["status"] == "cancelled" and r["finished_at"]
    assert client.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel").status_code == 400
    assert [e["message"] for e in events(client, ids[0])][-1] == "Job cancelled"
    assert client.get("/v1/fine_tuning/jobs/ftjob-nope").status_code == 404


def test_a_queued_job_whose_file_was_deleted_fails_with_a_clear_error(app, dirs):
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    jid = job(client, fid).get_json()["id"]
    client.delete(f"/v1/files/{fid}")
    from jobs.runner import Runner, RunnerConfig

    Runner(RunnerConfig(data_dir=str(dirs[1]), models_dir=str(dirs[0]))).tick()
    j = client.get(f"/v1/fine_tuning/jobs/{jid}").get_json()
    assert j["status"] == "failed" and j["error"]["code"] == "file_not_found" and fid in j["error"]["message"]


@pytest.fixture
def idle_trainers(monkeypatch):
    """jobs/runner.py's trainer processes replaced by idle ones (a Runner's tick() without training):
    -> the commands it launched."""
    import types

    import jobs.runner

    launched, procs = [], []

    def popen(cmd, **kw):
        launched.append(cmd)
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        return procs[-1]
    monkeypatch.setattr(jobs.runner, "subprocess", types.SimpleNamespace(
        Popen=popen, STDOUT=subprocess.STDOUT, TimeoutExpired=subprocess.TimeoutExpired))
    yield launched
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_cancel_after_the_runner_read_the_job_wins(app, dirs):
    """The user's cancel lands between the runner's read of a job and its end (failed, or succeeded
    with its model written): the job stays cancelled, with no event of the runner's, and the model the
    runner had just published is taken back."""
    from jobs.runner import Runner, RunnerConfig
    from jobs.store import Store

    models, data = dirs
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    store, runner = Store(data), Runner(RunnerConfig(data_dir=str(data), models_dir=str(models)))
    a, b = (job(client, fid, suffix=s).get_json()["id"] for s in ("a", "b"))
    for jid in (a, b):
        store.update_job(jid, status="running")
        base_model(data / "jobs" / jid, "model")  # the trainer's output: model.safetensors, model.json
    stale = {jid: store.job(jid) for jid in (a, b)}
    for jid in (a, b):
        assert client.post(f"/v1/fine_tuning/jobs/{jid}/cancel").get_json()["status"] == "cancelled"
    before = {jid: [e["message"] for e in events(client, jid)] for jid in (a, b)}
    ended = runner._end(stale[a], "failed", "boom", {"code": "training_failed", "param": None})
    runner._publish(stale[b], {"finished": True, "best": {"loss": 1.0, "step": 40}})
    for jid in (a, b):
        j = client.get(f"/v1/fine_tuning/jobs/{jid}").get_json()
        assert j["status"] == "cancelled" and j["error"] is None and j["fine_tuned_model"] is None
        assert [e["message"] for e in events(client, jid)] == before[jid]
        assert not (data / "jobs" / jid).exists()
    name = store.job(b)["fine_tuned_model"]
    assert not list(models.glob(f"{name}*"))  # published, then withdrawn
    assert client.post("/generate", json={"model": name, "prompt": "the "}).status_code == 404
    assert ended is False


def test_one_job_the_runner_cannot_handle_fails_alone(app, dirs, idle_trainers):
    """An exception in one job's handling (a resume whose folder lost its val_chars, a trainer writing a
    metrics line without its losses) fails that job, its trainer killed; the tick goes on with the
    others: a job resumes although its upload is gone (its corpus.txt holds the text), a queued one
    starts."""
    from jobs.runner import Child, Runner, RunnerConfig
    from jobs.store import Store

    models, data = dirs
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    gone = upload(client, TEXT.encode()).get_json()["id"]
    store, runner = Store(data), Runner(RunnerConfig(data_dir=str(data), models_dir=str(models)))
    no_val, bad_line, no_upload = (job(client, f, suffix=s).get_json()["id"]
                                   for f, s in ((fid, "a"), (fid, "b"), (gone, "c")))
    queued = job(client, fid, suffix="d").get_json()["id"]
    for jid in (no_val, bad_line, no_upload):  # left running by a runner killed after it wrote corpus.txt
        store.update_job(jid, status="running")
        (data / "jobs" / jid).mkdir(parents=True)
        (data / "jobs" / jid / "corpus.txt").write_text(TEXT)
    (data / "jobs" / no_upload / "val_chars").write_text("0")
    assert client.delete(f"/v1/files/{gone}").get_json()["deleted"]
    (data / "jobs" / bad_line / "run").mkdir()
    (data / "jobs" / bad_line / "run" / "metrics.jsonl").write_text(json.dumps({"step": 25, "chars": 100}) + "\n")
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    runner.children[bad_line] = Child(trainer, log=open(data / "jobs" / bad_line / "trainer.log", "ab"))
    runner.cfg.max_jobs = 3
    try:
        runner.tick()
    finally:
        trainer.kill()
        trainer.wait()
    for jid, words in ((no_val, "FileNotFoundError"), (bad_line, "KeyError: 'train_loss'")):
        j = client.get(f"/v1/fine_tuning/jobs/{jid}").get_json()
        assert j["status"] == "failed" and j["error"]["code"] == "trainer_error", j
        msg = j["error"]["message"]
        assert msg.startswith("the trainer could not handle the job: ") and words in msg
        assert not (data / "jobs" / jid).exists() and jid not in runner.children
    assert trainer.returncode == -signal.SIGKILL  # killed by the runner, not by the finally above
    for jid in (no_upload, queued):
        assert client.get(f"/v1/fine_tuning/jobs/{jid}").get_json()["status"] == "running"
        assert jid in runner.children and store.job(jid)["pid"] == runner.children[jid].proc.pid
    assert [cmd[-1] == "--resume" for cmd in idle_trainers] == [True, False]
    assert (data / "jobs" / queued / "corpus.txt").read_text() == TEXT
    assert (data / "jobs" / queued / "val_chars").read_text() == "0"


# --- jobs with the trainer ---------------------------------------------------------------------------
def test_a_job_trains_in_its_own_process_and_its_model_is_served(app, dirs):
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    vid = upload(client, ("the lazy dog jumps over the quick brown fox. " * 50).encode()).get_json()["id"]
    jid = job(client, fid, suffix="fox", validation_file=vid).get_json()["id"]
    j = train_to_end(client, dirs, jid)
    name = j["fine_tuned_model"]
    assert name.startswith("ft-base-fox-") and j["trained_tokens"] == 40 * 8 * 32
    evs = events(client, jid)
    metrics = [e for e in evs if e["type"] == "metrics"]
    assert metrics and metrics[-1]["data"]["step"] == 40 and metrics[-1]["data"]["total_steps"] == 40
    assert {"train_loss", "valid_loss", "chars_per_second", "time_left_s"} <= set(metrics[0]["data"])
    assert any(e["message"].startswith("Sample at step") and e["data"]["sample"] for e in evs)
    ckpts = client.get(f"/v1/fine_tuning/jobs/{jid}/checkpoints?limit=100").get_json()["data"]
    assert [c["step_number"] for c in ckpts] == sorted({m["data"]["step"] for m in metrics}, reverse=True)
    card = client.get(f"/v1/models/{name}").get_json()
    ft = card["fine_tune"]
    assert ft["job"] == jid and ft["base"] == "base" and ft["training_file"] == fid and ft["data_sha256"]
    assert ft["commands"]["base"] == "python -m model.train --data base.txt" and "--init" in ft["commands"]["fine_tune"]
    assert ft["validation_file"] == vid and card["validation"]["split"] == "the validation text (after the training text)"
    assert card["validation"]["protocol"] == "training" and card["validation"]["loss"] == pytest.approx(
        min(m["data"]["valid_loss"] for m in metrics))
    r = client.post("/generate", json={"model": name, "prompt": "the ", "max_new_chars": 30, "seed": 1})
    assert r.status_code == 200 and set(r.get_json()["completions"][0]["text"]) <= set(LATIN.chars)
    assert not (dirs[1] / "jobs" / jid).exists()  # the finished job's checkpoints are gone
    assert client.delete("/v1/models/base").status_code == 403  # only fine-tuned models
    assert client.delete(f"/v1/models/{name}").get_json()["deleted"] is True
    assert client.post("/generate", json={"model": name, "prompt": "the "}).status_code == 404


def train_to_end(client, dirs, jid) -> dict:
    """Run the trainer until the job ends; -> the job, which must have succeeded."""
    proc = runner(dirs)
    try:
        j = wait(client, jid, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    finally:
        proc.terminate()
        proc.wait(30)
    assert j["status"] == "succeeded", (j["error"], _debug_events(client, jid))
    return j


def _wait_step(client, jid, step, timeout=120):
    return wait(client, jid, lambda j: j["step"] >= step or j["status"] in ("succeeded", "failed"), timeout)


def test_a_trainer_killed_with_sigkill_resumes_from_its_checkpoint(app, dirs):
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    # A time budget (18 s of training, resumed sessions included) rather than steps: however fast this
    # machine trains, both kills land while the job runs, and it still ends by itself.
    jid = job(client, fid, hyperparameters={"minutes": 0.3, "batch_size": 16, "seq_len": 64}).get_json()["id"]
    proc = runner(dirs)
    try:
        j = _wait_step(client, jid, 50)
        assert j["status"] == "running"
        from jobs.store import Store
        os.kill(Store(dirs[1]).job(jid)["pid"], signal.SIGKILL)  # the training process
        restarted = lambda: [e for e in events(client, jid) if e["message"].startswith("Trainer restarted")]  # noqa
        deadline = time.time() + 60
        while not restarted() and time.time() < deadline:
            time.sleep(0.2)
        resumed_at = Store(dirs[1]).job(jid)["step"]
        j = _wait_step(client, jid, resumed_at + 50)  # the new trainer has evaluated since
        assert j["status"] == "running" and len(restarted()) == 1
        proc.send_signal(signal.SIGKILL)  # and then the runner itself: its trainer dies with it
        proc.wait()
        proc = runner(dirs)
        j = wait(client, jid, lambda j: j["status"] in ("succeeded", "failed"))
    finally:
        proc.terminate()
        proc.wait(30)
    assert j["status"] == "succeeded", (j["error"], _debug_events(client, jid))
    restarts = [e for e in events(client, jid) if e["message"].startswith("Trainer restarted")]
    assert len(restarts) == 2, (dirs[1].parent / "runner.log").read_text()[-3000:]
    card = client.get(f"/v1/models/{j['fine_tuned_model']}").get_json()
    steps = [e["data"]["step"] for e in events(client, jid) if e["type"] == "metrics"]
    # every evaluation once, in order, none lost; the last where the time budget ran out
    assert steps[:-1] == list(range(25, 25 * len(steps), 25)) and steps[-1] > steps[-2]
    assert card["fine_tune"]["job"] == jid


def test_a_running_job_cancels_within_seconds_and_keeps_its_events(app, dirs):
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    jid = job(client, fid, hyperparameters={"n_steps": 100000, "batch_size": 8, "seq_len": 32}).get_json()["id"]
    proc = runner(dirs)
    try:
        _wait_step(client, jid, 1)
        t0 = time.time()
        assert client.post(f"/v1/fine_tuning/jobs/{jid}/cancel").get_json()["status"] == "cancelled"
        deadline = time.time() + 30
        while time.time() < deadline and not any(e["message"].startswith("The trainer stopped")
                                                 for e in events(client, jid)):
            time.sleep(0.2)
        stopped = time.time() - t0
    finally:
        proc.terminate()
        proc.wait(30)
    assert stopped < 15
    msgs = [e["message"] for e in events(client, jid)]
    assert any(m.startswith("Step ") for m in msgs) and msgs[-1].startswith("The trainer stopped")
    assert client.get(f"/v1/fine_tuning/jobs/{jid}").get_json()["status"] == "cancelled"
    assert not (dirs[1] / "jobs" / jid).exists()


def test_a_text_in_any_script_with_a_capped_vocabulary(app, dirs):
    """Thousands of distinct characters (CJK and astral ones); max_vocab keeps the most frequent, the
    rest read as one unknown symbol the server never generates, and streams never cut a character."""
    common = "".join(chr(0xAC00 + i) for i in range(40)) + " \n😀"  # Hangul syllables, space, newline, an emoji
    rare = [chr(0x4E00 + i) for i in range(3000)]                     # 3,000 CJK ideographs, once each
    text = "".join(common[i % len(common)] + rare[i % 3000] * (i < 3000) for i in range(9000))
    client = app().test_client()
    fid = upload(client, text.encode("utf-8")).get_json()["id"]
    r = client.post("/v1/fine_tuning/jobs", json={"model": "scratch", "training_file": fid, "suffix": "ko", "seed": 2,
                                                  "hyperparameters": {"n_steps": 30, "batch_size": 8, "seq_len": 32,
                                                                      "max_vocab": 43, "hidden": 32, "layers": 1}})
    jid = r.get_json()["id"]
    j = train_to_end(client, dirs, jid)
    name = j["fine_tuned_model"]
    card = client.get(f"/v1/models/{name}").get_json()
    assert card["unknown"] == "\ufffd" and card["vocab_size"] == 44
    assert set(card["vocab"]) == set(common) | {"\ufffd"} and card["vocab"] == sorted(card["vocab"])
    body = {"model": name, "prompt": common[:2], "max_new_chars": 400, "seed": 3, "temperature": 1.5}
    r = client.post("/generate", json=body)
    assert r.status_code == 200, r.get_json()
    plain = r.get_json()["completions"][0]["text"]
    assert "\ufffd" not in plain and set(plain) <= set(common)
    stream = client.post("/generate", json={**body, "stream": True}).data.decode()
    chunks = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: {")]
    assert "".join(c.get("text", "") for c in chunks) == plain  # whole characters, the emoji included
    # a rare character in a prompt reads as the unknown symbol, as in training; it is never generated
    r = client.post("/predict-next", json={"model": name, "text": common[0] + rare[5], "top_k": 44})
    assert r.status_code == 200 and r.get_json()["text"] == common[0] + "\ufffd"


def _debug_events(client, jid):
    return [(e["created_at"] % 1000, e["message"][:70]) for e in events(client, jid) if not e["message"].startswith("Sample")]


def test_events_stream_live_and_resume_after_the_last_id_seen(app):
    client = app().test_client()
    fid = upload(client, TEXT.encode()).get_json()["id"]
    jid = job(client, fid).get_json()["id"]
    client.post(f"/v1/fine_tuning/jobs/{jid}/cancel")  # ended: the stream replays and closes
    body = client.get(f"/v1/fine_tuning/jobs/{jid}/events?stream=true").data.decode()
    ids = [line[4:] for line in body.splitlines() if line.startswith("id: ")]
    data = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and [json.loads(d)["id"] for d in data[:-1]] == ids
    assert [json.loads(d)["message"] for d in data[:-1]] == [e["message"] for e in events(client, jid)]
    again = client.get(f"/v1/fine_tuning/jobs/{jid}/events?stream=true", headers={"Last-Event-ID": ids[0]}).data
    assert [line[4:] for line in again.decode().splitlines() if line.startswith("id: ")] == ids[1:]
    assert client.get(f"/v1/fine_tuning/jobs/{jid}/events?stream=maybe").status_code == 400
    info = client.get("/info").get_json()["trainer"]
    assert info["mode"] == "local" and info["alive"] is False and info["queued"] == 0


def test_make_serve_starts_the_trainer_beside_gunicorn_and_stops_it(tiny_weights):
    """gunicorn's master starts jobs/runner.py (CHARRNN_TRAINER=local, make serve's default): a process
    of its own, not a worker, alive while the server is, gone when it stops."""
    import urllib.request

    from servers import Server

    server = Server(tiny_weights, CHARRNN_TRAINER="local").wait_ready()
    try:
        deadline, trainer = time.time() + 30, {}
        while time.time() < deadline and not trainer.get("alive"):
            trainer = json.loads(urllib.request.urlopen(server.base + "/info", timeout=5).read())["trainer"]
            time.sleep(0.3)
        assert trainer["alive"] and trainer["mode"] == "local"
        runners = subprocess.run(["pgrep", "-f", "-P", str(server.proc.pid), "jobs.runner"], capture_output=True,
                                 text=True).stdout.split()
        assert len(runners) == 1  # a child of the master, beside the worker
    finally:
        out = server.stop()
    assert "trainer started" in out
    time.sleep(0.5)
    assert not Path(f"/proc/{runners[0]}").exists() or Path(f"/proc/{runners[0]}/stat").read_text().split()[2] == "Z"


def test_the_official_client_end_to_end(dirs, tmp_path):
    """A job's whole life through the official `openai` client against gunicorn with its trainer (make
    serve's set-up): upload, create, follow, list events and checkpoints, use the model, delete it."""
    openai = pytest.importorskip("openai")
    from servers import Server

    models, data = dirs
    server = Server(models / "base", CHARRNN_TRAINER="local", CHARRNN_DATA_DIR=str(data)).wait_ready()
    try:
        client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0)
        text = tmp_path / "fox.txt"
        text.write_text(TEXT, encoding="utf-8")
        f = client.files.create(file=text.open("rb"), purpose="fine-tune")
        assert f.bytes == len(TEXT) and f.purpose == "fine-tune"
        assert client.files.retrieve(f.id).filename == "fox.txt"
        assert client.files.content(f.id).read() == TEXT.encode()
        job = client.fine_tuning.jobs.create(model="base", training_file=f.id, suffix="client", seed=3,
                                             hyperparameters={"n_epochs": 1, "batch_size": 8})
        assert job.status == "queued" and job.hyperparameters.n_epochs == 1
        assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=5).data]
        deadline = time.time() + 180
        while job.status not in ("succeeded", "failed", "cancelled") and time.time() < deadline:
            time.sleep(0.5)
            job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", job.error
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        metrics = [e for e in events if e.type == "metrics"]
        assert metrics and all(e.object == "fine_tuning.job.event" for e in events)
        assert metrics[0].data["step"] == job.step  # newest first
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert checkpoints[0].step_number == job.step and checkpoints[0].metrics.valid_loss is not None
        name = job.fine_tuned_model
        assert name in [m.id for m in client.models.list().data]
        r = client.completions.create(model=name, prompt="the ", max_tokens=20, seed=1)
        assert r.model == name and set(r.choices[0].text) <= set(LATIN.chars)
        assert client.models.delete(name).deleted is True
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model=name, prompt="the ", max_tokens=5)
        with pytest.raises(openai.PermissionDeniedError):
            client.models.delete("base")
        assert client.files.delete(f.id).deleted is True
    finally:
        server.stop()


def test_a_file_named_in_any_script_downloads_and_odd_limits_are_400(app):
    client = app().test_client()
    f = upload(client, TEXT.encode(), 'данные "1".txt').get_json()
    r = client.get(f"/v1/files/{f['id']}/content")
    assert r.status_code == 200 and r.data == TEXT.encode()
    header = r.headers["Content-Disposition"]
    header.encode("latin-1")  # what a WSGI server can send: a raw Cyrillic name once made gunicorn answer 500
    assert "filename*=UTF-8''" in header and "%D0%B4" in header
    for bad in ("²", "-1", "1.5", "0"):  # "²".isdigit() is true, but int() refuses it: once a 500
        r = client.get(f"/v1/files?limit={bad}")
        assert r.status_code == 400 and r.get_json()["error"]["param"] == "limit", (bad, r.data)
