"""The trainer: `python -m jobs.runner` runs the queued fine-tuning jobs, each in its own child process
(`python -m model.train`, the offline module, at a lower priority and with its own thread count), at
most CHARRNN_MAX_JOBS at once. It is never a serving worker: `make serve` starts it beside gunicorn
(gunicorn.conf.py), Docker Compose as its own service sharing the models and data volumes.

Each tick it: resumes jobs left "running" by a crash (the trainer's exact --resume from its last
checkpoint), stops cancelled ones (SIGTERM: the trainer checkpoints and leaves at the next step), turns
new lines of each job's metrics.jsonl into events, starts queued jobs, and settles jobs whose trainer
exited: finished -> the model is published into the models directory (temp file + rename, so every
replica's registry serves it at its next request); killed or crashed -> resumed, up to a limit.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.plan import SCRATCH, bounded_steps, train_args
from jobs.store import FINAL, Store

log = logging.getLogger("charrnn.jobs")
ACTIVE = ("validating_files", "queued", "running")  # the statuses a job may end from (cancel: the same)
ROOT = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1


@dataclass
class RunnerConfig:
    data_dir: str = "runs/service"
    models_dir: str = "weights"
    weights: str = "weights/shakespeare"  # the servers' default model: a base a job may name, wherever it lives
    max_jobs: int = 1        # trainers at once
    threads: int = 1         # torch threads per trainer
    nice: int = 10           # niceness of the trainers (with sched "normal")
    # "idle": the trainers run under SCHED_IDLE, on CPU time no serving thread wants. With a mere nice
    # value the kernel still gives a trainer whole time slices on a core the engine's second OpenMP
    # thread needs, and every parallel region of a wide decode step then waits for it (bench/load.py
    # --with-training measured 64 clients' /generate at 0.03x with nice 10 and with nice 0).
    sched: str = "idle"
    max_attempts: int = 3    # unexpected trainer exits (without progress) before a job fails
    poll_s: float = 1.0
    journal: str = "wal"     # the jobs database's journal (jobs/store.py): "delete" across machines

    @classmethod
    def from_env(cls, environ=None) -> "RunnerConfig":
        env = os.environ if environ is None else environ
        names = {"data_dir": "CHARRNN_DATA_DIR", "models_dir": "CHARRNN_MODELS_DIR", "max_jobs": "CHARRNN_MAX_JOBS",
                 "threads": "CHARRNN_TRAIN_THREADS", "nice": "CHARRNN_TRAIN_NICE", "weights": "CHARRNN_WEIGHTS", "journal": "CHARRNN_DB_JOURNAL",
                 "sched": "CHARRNN_TRAIN_SCHED"}
        kinds = {"data_dir": str, "models_dir": str, "max_jobs": int, "threads": int, "nice": int, "weights": str,
                 "journal": str, "sched": str}
        return cls(**{k: kinds[k](env[v]) for k, v in names.items() if env.get(v)})


def _child_setup(niceness: int, sched: str):
    def setup():
        os.setsid()  # its own process group: a terminal's Ctrl-C goes to the runner, which stops it
        if sched == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.nice(niceness)
        try:  # die with the runner (kill -9 included): a restarted runner must not meet an orphan trainer
            ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # (checkpoints are atomic)
        except OSError:
            pass
    return setup


@dataclass
class Child:
    proc: subprocess.Popen
    metrics_pos: int = 0
    last_step: int = 0
    log: object = None
    stopping: float = 0.0           # when it was asked to stop (cancel or shutdown)


class Runner:
    def __init__(self, cfg: RunnerConfig):
        self.cfg, self.store = cfg, Store(cfg.data_dir, cfg.journal)
        self.models = Path(cfg.models_dir)
        self.children: dict[str, Child] = {}
        self._stop = False

    # --- paths ---------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.store.jobs_dir / job_id

    def _base_prefix(self, base: str) -> Path | None:
        """A base model's weights prefix, when both of its files are there: the servers' default model (as
        the registry finds it), else the models directory."""
        from model.checkpoint import weights_prefix  # (when a job starts: an idle trainer holds no torch)

        default = weights_prefix(self.cfg.weights)
        p = default if base == default.name else self.models / base
        return p if Path(f"{p}.safetensors").is_file() and Path(f"{p}.json").is_file() else None

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        lock = open(self.store.dir / "runner.lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)  # one runner per data directory: a second one waits here
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "_stop", True))
        log.info("trainer: data %s, models %s, %d job(s) at once, %d thread(s), scheduling %s", self.store.dir,
                 self.models, self.cfg.max_jobs, self.cfg.threads,
                 "SCHED_IDLE" if self.cfg.sched == "idle" else f"nice {self.cfg.nice}")
        beat = self.store.dir / "runner.heartbeat"
        # /info tells whether a trainer is alive by this file's age, and how it runs jobs by its content
        beat.write_text(json.dumps({"pid": os.getpid(), "max_jobs": self.cfg.max_jobs, "threads": self.cfg.threads,
                                    "nice": self.cfg.nice, "sched": self.cfg.sched}))
        while not self._stop:
            self.tick()
            beat.touch()
            time.sleep(self.cfg.poll_s)
        self.shutdown()

    def _sweep(self) -> None:
        """The folders of ended jobs without a trainer here (_end and _settle remove the others): a job
        cancelled while no runner ran, or between its trainer's unexpected exit and its resumption at the
        next tick, or a runner killed between a job's end and the removal of its folder. By folder, not by
        job: there are only as many folders as unfinished jobs, and ended jobs accumulate forever."""
        for d in self.store.jobs_dir.iterdir():
            if d.name not in self.children and (self.store.job(d.name) or {}).get("status") in FINAL:
                shutil.rmtree(d, ignore_errors=True)

    def tick(self) -> None:
        for job in self.store.jobs(("running",)):  # left running by a crash (or another runner's end)
            if job["id"] not in self.children:
                self._guard(job["id"], self._start, job, resume=True)
        self._sweep()
        for job_id in list(self.children):
            self._guard(job_id, self._tend, job_id)
        queued = sorted(self.store.jobs(("queued",)), key=lambda j: (j["created_at"], j["id"]))
        for job in queued[:max(0, self.cfg.max_jobs - len(self.children))]:
            self._guard(job["id"], self._start, job, resume=False)

    def _guard(self, job_id: str, work, *args, **kw) -> None:
        """Run one job's work for this tick; an exception in it fails that job only (its trainer, if
        any, killed), never the runner and the other jobs."""
        try:
            work(*args, **kw)
        except Exception as e:  # noqa: BLE001 (one bad job must not stop the trainer for good)
            log.exception("job %s: the trainer could not handle it", job_id)
            child = self.children.pop(job_id, None)
            if child is not None:
                child.proc.kill()
                child.proc.wait()
                if child.log:
                    child.log.close()
            try:
                self._end({"id": job_id}, "failed", f"the trainer could not handle the job: {type(e).__name__}: {e}",
                          {"code": "trainer_error", "param": None})
            except Exception:  # noqa: BLE001 (e.g. the database unreachable: the next tick tries again)
                log.exception("job %s: could not be failed", job_id)

    def _tend(self, job_id: str) -> None:
        """A running trainer: stop it if its job was cancelled, follow its metrics, settle its exit."""
        child, job = self.children[job_id], self.store.job(job_id)
        if job["status"] == "cancelled" and not child.stopping:
            child.stopping = time.time()
            child.proc.send_signal(signal.SIGTERM)  # checkpoints at the next step, then leaves
        elif child.stopping and time.time() - child.stopping > 20:
            child.proc.kill()
        self._follow(job, child)
        if child.proc.poll() is not None:
            self._settle(job, child)

    def shutdown(self) -> None:
        """Stop every trainer at its next step (they checkpoint); the jobs stay running, to be resumed."""
        for child in self.children.values():
            child.proc.send_signal(signal.SIGTERM)
        for job_id, child in self.children.items():
            try:
                child.proc.wait(30)
            except subprocess.TimeoutExpired:
                child.proc.kill()
            self._follow(self.store.job(job_id), child)
        log.info("trainer stopped; %d job(s) resume at the next start", len(self.children))

    # --- one job ----------------------------------------------------------------------------------
    def _reap_orphan(self, job: dict) -> None:
        """A trainer of this job still running from an earlier runner (where the death signal could not be
        set): killed before a new one resumes, so two never write the same folder."""
        pid = job.get("pid")
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except OSError:
            return
        if str(self.job_dir(job["id"])).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)

    def _start(self, job: dict, resume: bool) -> None:
        from model.checkpoint import atomic_write_text  # (as in _base_prefix: no torch in an idle trainer)

        d, store = self.job_dir(job["id"]), self.store
        if resume:
            self._reap_orphan(job)
        data = d / "corpus.txt"
        files = [job["training_file"]] + ([job["validation_file"]] if job["validation_file"] else [])
        # once corpus.txt holds the job's text, its uploads may go: a resumed job no longer needs them
        missing = [] if data.exists() else [f for f in files if store.file(f) is None
                                            or not store.file_path(f, "text").exists()]
        if missing:
            return self._end(job, "failed", f"the file {missing[0]} was deleted before the job could use it",
                             {"code": "file_not_found", "param": "training_file" if missing[0] == files[0]
                              else "validation_file"})
        base = None
        if job["model"] != SCRATCH:
            base = self._base_prefix(job["model"])
            if base is None:
                return self._end(job, "failed", f"the base model {job['model']} is no longer in the models directory",
                                 {"code": "model_not_found", "param": "model"})
        now = int(time.time())
        if not resume and not store.update_job(job["id"], only_from=("queued",), status="running", started_at=now):
            return  # cancelled meanwhile: no folder, no trainer
        d.mkdir(parents=True, exist_ok=True)
        if not data.exists():  # the training text, then the validation text (its last val_chars validate)
            text, val_chars = store.file_path(files[0], "text").read_text(encoding="utf-8"), 0
            if len(files) > 1:
                val = store.file_path(files[1], "text").read_text(encoding="utf-8")
                text, val_chars = text + val, len(val)
            # val_chars first, each file atomic: corpus.txt exists only with its val_chars beside it
            atomic_write_text(d / "val_chars", str(val_chars))
            atomic_write_text(data, text)
        val_chars = int((d / "val_chars").read_text() or 0) or None
        args = train_args(job, data=str(data), out=str(d / "model"), run_dir=str(d / "run"), threads=self.cfg.threads,
                          base_prefix=str(base) if base else None, val_chars=val_chars)
        cmd = [sys.executable, "-m", "model.train", *args] + (["--resume"] if resume else [])
        env = {**os.environ, "OMP_NUM_THREADS": str(self.cfg.threads), "PYTHONPATH": str(ROOT),
               "PYTHONUNBUFFERED": "1"}
        out = open(d / "trainer.log", "ab")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_child_setup(self.cfg.nice, self.cfg.sched))
        child = Child(proc, log=out, last_step=job["step"])
        self.children[job["id"]] = child  # (first: an exception below kills it, in _guard)
        child.metrics_pos = self._events_done(job)
        if resume:
            store.update_job(job["id"], pid=proc.pid, attempts=job["attempts"] + 1)
            store.add_event(job["id"], f"Trainer restarted: resuming from the last checkpoint (step {job['step']})",
                            level="warn")
        else:  # (a cancel since the claim: the next tick stops the trainer)
            store.update_job(job["id"], pid=proc.pid)
            store.add_event(job["id"], f"Fine-tuning job started: {job['total_steps']} steps"
                            if bounded_steps(job) else "Fine-tuning job started")
        log.info("job %s: %s", job["id"], " ".join(cmd[1:]))

    def _events_done(self, job: dict) -> int:
        """How many metrics lines of this job already became events (a restarted runner must not repeat them)."""
        return len(self.store.checkpoints(job["id"]))

    def _follow(self, job: dict, child: Child) -> None:
        """New metrics lines -> metrics events, sample messages and checkpoint records."""
        path = self.job_dir(job["id"]) / "run" / "metrics.jsonl"
        try:
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        except (OSError, ValueError):
            return
        for rec in lines[child.metrics_pos:]:
            step, total = rec["step"], bounded_steps(job)
            rate = rec["step"] / rec["wall_time_s"] if rec.get("wall_time_s") else 0
            left = (total - step) / rate if rate and total else None
            budget = job["hyperparameters"].get("minutes")
            if budget:
                spent_left = max(0.0, 60 * budget - rec.get("wall_time_s", 0))
                left = spent_left if left is None else min(left, spent_left)
            data = {"step": step, "total_steps": total,
                    "train_loss": rec["train_loss"], "valid_loss": rec["val_loss"], "valid_bpc": rec["val_bpc"],
                    "chars_per_second": rec["chars_per_s"], "time_left_s": None if left is None else round(left, 1),
                    "learning_rate": rec["lr"]}
            self.store.add_event(job["id"], f"Step {step}" + (f"/{total}" if total else "") +
                                 f": training loss={rec['train_loss']:.4f}, validation loss={rec['val_loss']:.4f}",
                                 type="metrics", data=data)
            if rec.get("sample"):
                self.store.add_event(job["id"], f"Sample at step {step}:\n{rec['sample']}", data={"sample": rec["sample"],
                                                                                                 "step": step})
            self.store.add_checkpoint(job["id"], step, data)
            eta = int(time.time() + left) if left is not None else None
            self.store.update_job(job["id"], step=step, estimated_finish=eta,
                                  trained_tokens=rec.get("chars", 0))
        child.metrics_pos = max(child.metrics_pos, len(lines))

    def _settle(self, job: dict, child: Child) -> None:
        """The trainer exited: publish, resume or fail the job."""
        del self.children[job["id"]]
        child.log.close()
        d, rc = self.job_dir(job["id"]), child.proc.returncode
        job = self.store.job(job["id"])
        try:
            result = json.loads((d / "run" / "result.json").read_text())
        except (OSError, ValueError):
            result = {}
        if job["status"] == "cancelled":
            self.store.add_event(job["id"], f"The trainer stopped at step {job['step']}")
            shutil.rmtree(d, ignore_errors=True)
            return
        if rc == 0 and result.get("finished"):
            return self._publish(job, result)
        if self._stop:
            return  # the runner is shutting down: the job resumes at its next start
        progressed = job["step"] > child.last_step
        if not progressed and job["attempts"] + 1 >= self.cfg.max_attempts:
            return self._end(job, "failed", f"the trainer failed (exit code {rc}) {self.cfg.max_attempts} times "
                             f"without progress: {last_error(d / 'trainer.log')}", {"code": "training_failed",
                                                                                     "param": None})
        if progressed:
            self.store.update_job(job["id"], attempts=0)
        self.store.add_event(job["id"], f"The trainer stopped unexpectedly (exit code {rc}); resuming", level="warn")
        # the next tick finds it running without a child and resumes it

    def _publish(self, job: dict, result: dict) -> None:
        d = self.job_dir(job["id"])
        name = job["fine_tuned_model"]
        card = json.loads((d / "model.json").read_text(encoding="utf-8"))
        tr = card.get("training", {})
        base_card = {}
        if job["model"] != SCRATCH and self._base_prefix(job["model"]):
            base_card = json.loads(Path(f"{self._base_prefix(job['model'])}.json").read_text(encoding="utf-8"))
        card["fine_tune"] = {
            "job": job["id"], "base": job["model"], "base_sha256": (tr.get("init") or {}).get("sha256"),
            "training_file": job["training_file"], "validation_file": job["validation_file"],
            "training_file_sha256": self.store.file(job["training_file"])["sha256"]
            if self.store.file(job["training_file"]) else None,
            "data_sha256": tr.get("data_sha256"), "hyperparameters": job["hyperparameters"],
            "commands": {"base": (base_card.get("training") or {}).get("command"), "fine_tune": tr.get("command")},
            "validation": {"loss": tr.get("best_val_loss"), "bpc": tr.get("best_val_bpc"), "protocol": "training",
                           "split": (tr.get("split") or {}).get("val")}}
        from model.checkpoint import atomic_write, atomic_write_text

        # The model goes out first, the status after (only from running, in _end): a cancel is one
        # conditional UPDATE by the web, and there is no status between running and succeeded to claim
        # first. A cancel landing in between wins: the files are taken back. (A replica may serve the
        # model for those moments; the other order could leave a succeeded job without its model.)
        self.models.mkdir(parents=True, exist_ok=True)
        files = [self.models / f"{name}.safetensors", self.models / f"{name}.json"]
        atomic_write(files[0], lambda tmp: shutil.copyfile(d / "model.safetensors", tmp))
        atomic_write_text(files[1], json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        best = result.get("best") or {}
        if not self._end(job, "succeeded", f"The job has successfully completed (best validation loss "
                         f"{best.get('loss', float('nan')):.4f} at step {best.get('step')})",
                         before=({"message": f"New fine-tuned model created: {name}", "data": {"model": name}},)):
            for f in files:
                f.unlink(missing_ok=True)
            log.info("job %s: cancelled before it completed; its model %s withdrawn", job["id"], name)

    def _end(self, job: dict, status: str, message: str, error: dict | None = None, before: tuple = ()) -> bool:
        """The job ends (with its events: those in `before`, then `message`), unless it has already ended
        (a user's cancel since the job was read: it stays cancelled) -> whether it ended here. Its folder
        goes either way."""
        now = int(time.time())
        fields = {"status": status, "finished_at": now, "pid": None, "estimated_finish": None}
        if error is not None:
            fields["error"] = {"message": message, **error}
        ended = self.store.update_job(job["id"], only_from=ACTIVE, with_events=(
            *before, {"message": message, "level": "error" if status == "failed" else "info"}), **fields)
        shutil.rmtree(self.job_dir(job["id"]), ignore_errors=True)  # checkpoints of a finished job: gone
        if ended:
            log.info("job %s %s: %s", job["id"], status, message)
        else:
            log.info("job %s: already %s, not %s", job["id"], (self.store.job(job["id"]) or {}).get("status"), status)
        return ended


def last_error(log_path: Path) -> str:
    """The trainer's own last words: the last line of its log that is not a progress bar."""
    try:
        tail = log_path.read_bytes()[-20000:].decode(errors="replace")
    except OSError:
        return "(no log)"
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip() and "it/s" not in ln
             and "s/it" not in ln and "%|" not in ln]
    return lines[-1][:500] if lines else "(no output)"


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--once", action="store_true", help="one tick, then exit (tests)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper(),
                        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    runner = Runner(RunnerConfig.from_env())
    if args.once:
        runner.tick()
    else:
        runner.run()


if __name__ == "__main__":
    main()
