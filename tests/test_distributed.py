"""Distributed training under torchrun (gloo on CPU): the same model as one process, and resume
after a rank is killed. Tiny models; each torchrun launch costs a few seconds of start-up."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_weights
from model.distributed import share
from conftest import ROOT, env_with_path, write_corpus

# 5 global streams: 3 + 2 over two ranks, so the unequal-share weighting is exercised too;
# --reset-prob: each rank must take its own rows of the global draw. Dropout 0: dropout masks are
# drawn per rank, so with dropout the runs agree in distribution, not number for number.
TINY = ["--embed", "8", "--hidden", "32", "--layers", "2", "--dropout", "0", "--weight-drop", "0",
        "--reset-prob", "0.3", "--batch-size", "5", "--seq-len", "16", "--warmup", "5", "--threads", "1",
        "--device", "cpu", "--max-steps", "160", "--eval-every", "20"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _cmd(launcher, data, folder, name, *extra):
    return [*launcher, "-m", "model.train", "--data", str(data), "--out", str(folder / "w" / name),
            "--run-dir", str(folder / name), *TINY, *extra]


def _run(cmd):
    r = subprocess.run(cmd, cwd=ROOT, env=env_with_path(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(ref: Path, ref_name: str, other: Path, other_name: str, resumed_at: int = 0, tol=1e-4):
    a, b = _log(ref / ref_name), _log(other / other_name)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(20, 161, 20))
    for ra, rb in zip(a, b):
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=tol), (ra, rb)
        if rb["step"] - 20 >= resumed_at:  # train_loss: the mean since the last line or the resume
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=tol), (ra, rb)
    wa, _, _ = load_weights(ref / "w" / ref_name)
    wb, _, card = load_weights(other / "w" / other_name)
    for k, v in wa.state_dict().items():
        assert torch.allclose(v, wb.state_dict()[k], atol=tol), k
    return card


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process reference run with the same global batch."""
    folder = tmp_path_factory.mktemp("single")
    data = write_corpus(folder)
    _run(_cmd([sys.executable], data, folder, "one"))
    return data, folder


def test_shares_are_contiguous_and_cover_the_batch():
    for batch in (1, 5, 64):
        for world in range(1, batch + 1):
            parts = [share(batch, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == batch
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(h - l for l, h in parts) - min(h - l for l, h in parts) <= 1
    with pytest.raises(SystemExit, match="at least one per process"):
        share(2, 0, 3)


def test_two_processes_train_the_same_model_as_one(single, tmp_path):
    data, ref = single
    r = _run(_cmd(TORCHRUN, data, tmp_path, "two"))
    assert r.stdout.count("best val loss") == 1  # rank 0 alone reports (and writes)
    card = _assert_same_run(ref, "one", tmp_path, "two")
    t = card["training"]
    assert (t["world_size"], t["backend"]) == (2, "gloo")
    assert t["command"].startswith("torchrun --nnodes=1 --nproc_per_node=2 -m model.train")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "metrics.jsonl", "result.json"]
    assert json.loads((tmp_path / "two" / "result.json").read_text())["finished"] is True  # rank 0's, once


def _workers(pid: int) -> dict[int, int]:
    """{rank: pid} of the processes torchrun (pid) started."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and "RANK" in env:
            out[int(env["RANK"])] = int(d.name)
    return out


def _alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_kill9_of_one_rank_ends_the_job_and_resume_continues(single, tmp_path):
    data, ref = single
    cmd = _cmd(TORCHRUN, data, tmp_path, "k")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env_with_path(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "k" / "checkpoint.pt").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.02)
        workers = _workers(p.pid)
        assert sorted(workers) == [0, 1], (workers, p.poll())
        os.kill(workers[1], signal.SIGKILL)
        _, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0, err[-3000:]          # the job ended, as a failure ...
    assert not any(_alive(w) for w in workers.values())  # ... and took the surviving rank with it
    steps = [r["step"] for r in _log(tmp_path / "k")]
    assert steps and steps[-1] < 160, steps        # it was stopped part-way

    r = _run(_cmd(TORCHRUN, data, tmp_path, "k", "--resume"))
    assert "resuming from" in r.stderr
    card = _assert_same_run(ref, "one", tmp_path, "k")
    assert card["training"]["resumed"] == 1 and "--resume" not in card["training"]["command"]


def test_a_single_process_checkpoint_resumes_under_torchrun(single, tmp_path):
    data, ref = single
    _run(_cmd([sys.executable], data, tmp_path, "s", "--max-minutes", "1e-6"))  # stops after one step
    assert _log(tmp_path / "s") == [] and (tmp_path / "s" / "checkpoint.pt").exists()
    r = _run(_cmd(TORCHRUN, data, tmp_path, "s", "--resume"))
    assert "resuming from" in r.stderr and "at step 1/160" in r.stderr
    _assert_same_run(ref, "one", tmp_path, "s", resumed_at=1)


# A launcher for the tests below: model.train's own main, with each rank's weights saved at every
# checkpoint (only rank 0 writes files, and weights can drift apart only between ranks), and with
# rank 1 "signalled" from its first step when asked (torchrun signals workers at different moments).
LAUNCH = """
import os, sys
import torch
import model.train as t

rank, dump, signal_rank1 = int(os.environ["RANK"]), sys.argv[1], sys.argv[2] == "1"
save = t.save_checkpoint

def save_checkpoint(s, run, state):
    torch.save(s.model.state_dict(), os.path.join(dump, f"rank{rank}.pt"))
    save(s, run, state)

class Signalled(t.StopFlag):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.set = True

t.save_checkpoint = save_checkpoint
if signal_rank1 and rank == 1:
    t.StopFlag = Signalled
t.main(sys.argv[3:])
"""


def _launch(tmp_path, data, name, signal_rank1: bool, *extra, timeout=90):
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    cmd = [*TORCHRUN, str(script), str(tmp_path), "1" if signal_rank1 else "0", "--data", str(data),
           "--out", str(tmp_path / "w" / name), "--run-dir", str(tmp_path / name), *TINY, *extra]
    # a hung job is killed whole (the launcher and its workers), not left behind
    p = subprocess.Popen(cmd, cwd=ROOT, env=env_with_path(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in _workers(p.pid).values():  # torchrun starts them in sessions of their own
            os.kill(pid, signal.SIGKILL)
        p.kill()
        p.communicate()
        pytest.fail(f"the torchrun job hung (> {timeout} s)")
    assert p.returncode == 0, err[-3000:]
    return json.loads((tmp_path / name / "result.json").read_text())


def test_ranks_keep_the_same_weights_under_a_time_budget(corpus_file, tmp_path):
    """--time-budget sets the learning rate from the wall time: every rank must use the same
    one, or DDP (which averages gradients, never weights) lets the replicas drift apart."""
    res = _launch(tmp_path, corpus_file, "t", False, "--warmup", "0", "--max-steps", "100000",
                  "--eval-every", "100000", "--time-budget", "0.04")
    assert res["finished"] and res["reason"] == "time_budget", res
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k, v in w0.items():
        assert torch.equal(v, w1[k]), k
    (line,) = _log(tmp_path / "t")
    assert line["lr"] < 0.5 * 2e-3  # the time, not the step count (a few hundred of 100000), decayed it


def test_a_signal_on_one_rank_as_the_budget_runs_out_checkpoints_and_stops(corpus_file, tmp_path):
    """Rank 1 alone is signalled in the step where the budget is spent: the ranks agree (no hang
    in a collective one of them skipped), and the job checkpoints that step and says "stopped"."""
    res = _launch(tmp_path, corpus_file, "g", True, "--time-budget", "1e-6")
    assert (res["finished"], res["reason"], res["step"]) == (False, "stopped", 1), res
    assert torch.load(tmp_path / "g" / "checkpoint.pt", weights_only=True)["step"] == 1
