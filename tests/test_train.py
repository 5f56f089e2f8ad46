import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import load_weights
from model.evaluate import evaluate_ids
from model.train import StopFlag, TrainConfig, lr_at, train
from conftest import ROOT, env_with_path, write_corpus

TINY = ["--embed", "8", "--hidden", "32", "--layers", "1", "--dropout", "0", "--batch-size", "4",
        "--seq-len", "16", "--warmup", "5", "--threads", "1"]


def test_learns_a_periodic_text_to_near_zero_loss(tmp_path):
    data = tmp_path / "periodic.txt"
    data.write_text("abcdefgh\n" * 400)
    res = train(TrainConfig(data=str(data), out=str(tmp_path / "w" / "p"), run_dir=str(tmp_path / "run"),
                            embed=8, hidden=32, layers=1, dropout=0.0, batch_size=8, seq_len=16,
                            lr=1e-2, warmup=5, max_steps=150, eval_every=50, threads=1))
    assert res["best"]["loss"] < 0.05, res["best"]
    model, vocab, card = load_weights(tmp_path / "w" / "p")
    assert card["training"]["best_val_loss"] == pytest.approx(res["best"]["loss"])
    assert card["training"]["data_sha256"] and card["training"]["split"]["val_chars"] == 360
    assert (tmp_path / "w" / "p.png").stat().st_size > 1000
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [50, 100, 150]


def test_lr_schedule_warms_up_then_decays():
    c = TrainConfig(data="x", out="y", lr=1e-3, min_lr=1e-4, warmup=10, max_steps=110)
    lrs = [lr_at(s, c) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lr_at(110, c) == pytest.approx(1e-4)


def _budget_run(data, tmp_path, name, minutes, **kw):
    return TrainConfig(data=str(data), out=str(tmp_path / "w" / name), run_dir=str(tmp_path / name), embed=8,
                       hidden=32, layers=1, dropout=0.0, batch_size=4, seq_len=16, warmup=0, max_steps=100_000,
                       eval_every=100_000, sample_chars=0, threads=1, time_budget=minutes, **kw)


def test_metrics_log_the_learning_rate_applied_under_a_time_budget(corpus_file, tmp_path):
    """With --time-budget the rate follows the time: the log shows the rate the optimiser applied
    (the checkpoint's, saved with that line), not the step-count schedule's."""
    c = _budget_run(corpus_file, tmp_path, "lr", 0.02)
    res = train(c)
    assert res["finished"]
    (line,) = [json.loads(l) for l in (tmp_path / "lr" / "metrics.jsonl").read_text().splitlines()]
    ck = torch.load(tmp_path / "lr" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == line["step"] and line["lr"] == ck["optimizer"]["param_groups"][0]["lr"]
    assert line["lr"] < 0.5 * c.lr < lr_at(line["step"] - 1, c)  # decayed by the time, not the steps


class _Signalled(StopFlag):
    """As if SIGTERM came during the first step."""
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.set = True


def test_a_signal_in_the_step_that_spends_the_budget_checkpoints_that_step(corpus_file, tmp_path, monkeypatch):
    """The run stops (no evaluation: it was asked to leave) and says so; its checkpoint is the
    step it stopped at, so --resume loses nothing, and then finishes on the spent budget."""
    with monkeypatch.context() as m:
        m.setattr("model.train.StopFlag", _Signalled)
        res = train(_budget_run(corpus_file, tmp_path, "s", 1e-6))
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    assert (res["finished"], result["reason"], result["step"]) == (False, "stopped", 1)
    assert torch.load(tmp_path / "s" / "checkpoint.pt", weights_only=True)["step"] == 1
    res = train(_budget_run(corpus_file, tmp_path, "s", 1e-6, resume=True))
    assert res["finished"] and res["step"] == 2 and [h["step"] for h in res["history"]] == [2]


def _train_cmd(data, tmp_path, name, *extra):
    return [sys.executable, "-m", "model.train", "--data", str(data), "--out", str(tmp_path / "w" / name),
            "--run-dir", str(tmp_path / name), *TINY, "--max-steps", "120", "--eval-every", "30", *extra]


def _interrupt_after_first_checkpoint(cmd, run_dir, sig):
    p = subprocess.Popen(cmd, cwd=ROOT, env=env_with_path(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    return p.returncode, err.decode()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted reference run, shared by the interruption tests."""
    folder = tmp_path_factory.mktemp("straight")
    data = write_corpus(folder)
    r = subprocess.run(_train_cmd(data, folder, "a"), cwd=ROOT, env=env_with_path(), capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return data, folder


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(uninterrupted, tmp_path, sig):
    corpus_file, ref = uninterrupted

    rc, err = _interrupt_after_first_checkpoint(_train_cmd(corpus_file, tmp_path, "b"), tmp_path / "b", sig)
    if sig == signal.SIGINT:  # graceful: checkpoints at the current step and says how to continue
        assert rc == 0 and "--resume" in err, err[-2000:]
    resumed = subprocess.run(_train_cmd(corpus_file, tmp_path, "b", "--resume"), cwd=ROOT, env=env_with_path(),
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr.decode(), resumed.stderr.decode()[-2000:]

    def log(name):
        return [json.loads(l) for l in (name / "metrics.jsonl").read_text().splitlines()]
    a, b = log(ref / "a"), log(tmp_path / "b")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(30, 121, 30))
    for ra, rb in zip(a, b):
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=1e-4)
    wa, _, ca = load_weights(ref / "w" / "a")
    wb, _, cb = load_weights(tmp_path / "w" / "b")
    for k, v in wa.state_dict().items():
        assert torch.allclose(v, wb.state_dict()[k], atol=1e-5), k
    assert cb["training"]["resumed"] == 1 and "--resume" not in cb["training"]["command"]


def test_resume_with_nothing_to_resume_starts_fresh(corpus_file, tmp_path):
    r = subprocess.run(_train_cmd(corpus_file, tmp_path, "c", "--resume", "--max-steps", "20"), cwd=ROOT,
                       env=env_with_path(), capture_output=True, timeout=300)
    assert r.returncode == 0 and "resuming" not in r.stderr.decode()
    assert (tmp_path / "w" / "c.safetensors").exists()


def _direct_nll(model, ids):
    x = torch.from_numpy(np.asarray(ids, dtype=np.int64))[None]
    with torch.no_grad():
        logits, _ = model(x[:, :-1], infer=True)
    return F.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()


def test_evaluate_matches_a_direct_computation(tiny_model):
    model, vocab = tiny_model
    ids = vocab.encode("the quick brown fox jumps over the lazy dog.\n" * 30)
    direct = _direct_nll(model, ids)
    nll, count = evaluate_ids(model, ids, streams=1, chunk=37)
    assert count == len(ids) - 1 and nll == pytest.approx(direct, rel=1e-5)
    nll8, count8 = evaluate_ids(model, ids, streams=8, burn_in=100)  # rows with burn-in: ~ the same
    assert count8 == count and nll8 == pytest.approx(direct, rel=1e-3)


def test_clis_end_to_end(corpus_file, tmp_path):
    env = env_with_path()
    t = subprocess.run(_train_cmd(corpus_file, tmp_path, "e", "--max-steps", "60", "--eval-every", "30"),
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert t.returncode == 0, t.stderr[-2000:]
    weights = tmp_path / "w" / "e"
    # evaluate on a file with characters the model never saw: counted, reported, skipped
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text(encoding="utf-8") + "ZZZ 🙂\n", encoding="utf-8")
    ev = subprocess.run([sys.executable, "-m", "model.evaluate", "--weights", f"{weights}.safetensors",
                         "--data", str(other), "--split", "all"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
    assert ev.returncode == 0, ev.stderr[-2000:]
    out = json.loads(ev.stdout.strip().splitlines()[-1])
    assert out["unknown_chars"] == 4 and out["unknown_set"] == ["Z", "🙂"]
    assert out["bpc"] == pytest.approx(out["loss"] / math.log(2))
    model, vocab, _ = load_weights(weights)
    ids = vocab.encode(other.read_text(encoding="utf-8"), unknown="skip")
    assert out["chars"] == len(ids) - 1
    assert out["loss"] == pytest.approx(evaluate_ids(model, ids)[0] / (len(ids) - 1), rel=1e-6)

    def sample(*args):
        r = subprocess.run([sys.executable, "-m", "model.sample", "--weights", str(weights), *args], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout
    s1 = sample("--prompt", "ROMEO:", "--length", "80", "--seed", "3", "--top-k", "5")
    assert s1.startswith("ROMEO:") and len(s1) == len("ROMEO:") + 80 + 1
    assert s1 == sample("--prompt", "ROMEO:", "--length", "80", "--seed", "3", "--top-k", "5")
    assert sample("--length", "40", "--temperature", "0", "--seed", "1") == sample("--length", "40", "--temperature", "0", "--seed", "2")
    bad = subprocess.run([sys.executable, "-m", "model.sample", "--weights", str(weights), "--prompt", "🙂"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "vocabulary" in bad.stderr


def test_fine_tuning_starts_from_the_init_weights_character_by_character(tmp_path):
    """--init: a new text whose vocabulary differs ('h' gone, 'z' new) starts from the trained
    weights: shared characters keep their rows, the core its weights, so the first validation
    already knows the old transitions; the card names the weights it started from."""
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("abcdefgh\n" * 400)
    second.write_text("abcdefgz\n" * 400)
    shape = dict(embed=8, hidden=32, layers=1, dropout=0.0, batch_size=8, seq_len=16, warmup=5, threads=1)
    train(TrainConfig(data=str(first), out=str(tmp_path / "a"), run_dir=str(tmp_path / "ra"), lr=1e-2,
                      max_steps=150, eval_every=150, **shape))
    # lr 0: the run only evaluates where it starts from
    runs = {name: train(TrainConfig(data=str(second), out=str(tmp_path / name), run_dir=str(tmp_path / ("r" + name)),
                                    lr=0.0, min_lr=0.0, max_steps=1, eval_every=1, init=init, **shape))
            for name, init in (("tuned", str(tmp_path / "a")), ("fresh", None))}
    assert runs["tuned"]["best"]["loss"] < 0.5 * runs["fresh"]["best"]["loss"]
    a, va, _ = load_weights(tmp_path / "a")
    b, vb, card = load_weights(tmp_path / "tuned")
    assert "z" in vb.chars and "h" not in vb.chars
    for ch in "abcdefg\n":
        assert torch.equal(b.embed.weight[vb.index(ch)], a.embed.weight[va.index(ch)])
        assert torch.equal(b.head.weight[vb.index(ch)], a.head.weight[va.index(ch)])
    assert torch.equal(b.lstm.weight_hh_l0, a.lstm.weight_hh_l0)
    init, first_card = card["training"]["init"], load_weights(tmp_path / "a")[2]["training"]
    assert init["weights"] == str(tmp_path / "a") and len(init["sha256"]) == 64
    # the characters both runs saw: the init's 150 steps and this one's 1 (8 rows x 16 characters each)
    assert init["chars_seen"] == first_card["chars_seen"] == 150 * 8 * 16
    assert card["training"]["chars_seen_total"] == 151 * 8 * 16
