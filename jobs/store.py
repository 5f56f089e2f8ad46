"""What must survive a restart: uploaded files, fine-tuning jobs and their events, in one embedded
SQLite database (DATA_DIR/jobs.db) beside the files on disk (DATA_DIR/files/). The web workers and
the trainer (jobs/runner.py) are separate processes sharing it: WAL mode lets readers go on while
one writes, and a busy timeout makes concurrent writers wait instead of failing.

Ids are random (secrets.token_hex), never paths; a file's bytes live under DATA_DIR/files/<id> only.
"""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, format TEXT NOT NULL, chars INTEGER NOT NULL, distinct_chars INTEGER NOT NULL,
    sha256 TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,
    status TEXT NOT NULL, model TEXT NOT NULL, suffix TEXT, training_file TEXT NOT NULL, validation_file TEXT,
    hyperparameters TEXT NOT NULL, seed INTEGER NOT NULL, fine_tuned_model TEXT, trained_tokens INTEGER,
    error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER, estimated_finish INTEGER, total_steps INTEGER, step INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, type TEXT NOT NULL, message TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, created_at INTEGER NOT NULL, step INTEGER NOT NULL,
    metrics TEXT NOT NULL, UNIQUE (job_id, step));
"""
FINAL = ("succeeded", "failed", "cancelled")
JSON_COLUMNS = ("hyperparameters", "error", "data", "metrics")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class Store:
    def __init__(self, data_dir: str | Path, journal: str = "wal"):
        """journal: "wal" (readers never wait for the writer: every process on one machine) or "delete"
        (SQLite's rollback journal: the only mode for processes on several machines sharing a network
        filesystem, whose locks must work)."""
        self.dir, self.journal = Path(data_dir), journal
        self.files_dir = self.dir / "files"
        self.jobs_dir = self.dir / "jobs"
        for d in (self.dir, self.files_dir, self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "jobs.db"
        self._local = threading.local()
        self._db().executescript(SCHEMA)  # (executescript commits on its own)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():  # never a connection across fork
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA journal_mode={'WAL' if self.journal == 'wal' else 'DELETE'}")
            db.execute(f"PRAGMA synchronous={'NORMAL' if self.journal == 'wal' else 'FULL'}")  # WAL: never corrupt
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db, self._local.pid = db, os.getpid()
        return db

    @contextmanager
    def _tx(self):
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _row(row) -> dict | None:
        if row is None:
            return None
        d = dict(row)
        for k in JSON_COLUMNS:
            if k in d and isinstance(d[k], str):
                d[k] = json.loads(d[k])
        return d

    # --- files -----------------------------------------------------------------------------------
    def file_path(self, file_id: str, kind: str = "raw") -> Path:
        """kind raw: the bytes as uploaded; text: the text the trainer reads (JSONL records joined)."""
        return self.files_dir / f"{file_id}.{'bin' if kind == 'raw' else 'txt'}"

    def add_file(self, record: dict) -> dict:
        with self._tx() as db:
            db.execute("INSERT INTO files (id, filename, purpose, bytes, created_at, format, chars, distinct_chars, "
                       "sha256) VALUES (:id, :filename, :purpose, :bytes, :created_at, :format, :chars, "
                       ":distinct_chars, :sha256)", record)
        return self.file(record["id"])

    def file(self, file_id: str) -> dict | None:
        return self._row(self._db().execute("SELECT * FROM files WHERE id = ? AND deleted = 0", (file_id,)).fetchone())

    def files(self, purpose: str | None = None) -> list[dict]:
        """Newest first (the web API pages through them)."""
        q, args = "SELECT * FROM files WHERE deleted = 0", []
        if purpose:
            q, args = q + " AND purpose = ?", [purpose]
        rows = self._db().execute(q + " ORDER BY created_at DESC, rowid DESC", args).fetchall()
        return [self._row(r) for r in rows]

    def delete_file(self, file_id: str) -> bool:
        with self._tx() as db:
            n = db.execute("UPDATE files SET deleted = 1 WHERE id = ? AND deleted = 0", (file_id,)).rowcount
        for kind in ("raw", "text"):
            self.file_path(file_id, kind).unlink(missing_ok=True)
        return bool(n)

    # --- jobs ------------------------------------------------------------------------------------
    def add_job(self, record: dict) -> dict:
        record = {**record, "hyperparameters": json.dumps(record["hyperparameters"])}
        with self._tx() as db:
            db.execute("INSERT INTO jobs (id, created_at, status, model, suffix, training_file, validation_file, "
                       "hyperparameters, seed, total_steps) VALUES (:id, :created_at, :status, :model, :suffix, "
                       ":training_file, :validation_file, :hyperparameters, :seed, :total_steps)", record)
        return self.job(record["id"])

    def job(self, job_id: str) -> dict | None:
        return self._row(self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def jobs(self, status: tuple[str, ...] | None = None) -> list[dict]:
        q, args = "SELECT * FROM jobs", []
        if status:
            q += f" WHERE status IN ({','.join('?' * len(status))})"
            args = list(status)
        return [self._row(r) for r in self._db().execute(q + " ORDER BY created_at DESC, rowid DESC", args)]

    def update_job(self, job_id: str, *, only_from: tuple[str, ...] | None = None,
                   with_events: tuple[dict, ...] = (), **fields) -> bool:
        """Set fields; with only_from, only while the job's status is one of those (-> whether it was).
        with_events: events (add_event's arguments) added in the same transaction, only if the job was
        updated: a job's closing events are there as soon as its final status is, and never on a job
        whose status another process changed meanwhile."""
        if "error" in fields and fields["error"] is not None:
            fields["error"] = json.dumps(fields["error"])
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        q = f"UPDATE jobs SET {sets} WHERE id = :_id"
        args = {**fields, "_id": job_id}
        if only_from:
            q += f" AND status IN ({','.join(f':_s{i}' for i in range(len(only_from)))})"
            args.update({f"_s{i}": s for i, s in enumerate(only_from)})
        with self._tx() as db:
            updated = db.execute(q, args).rowcount > 0
            for e in with_events if updated else ():
                self._insert_event(db, job_id, **e)
        return updated

    # --- events and checkpoints ---------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, *, type: str = "message", level: str = "info",
                  data: dict | None = None) -> dict:
        with self._tx() as db:
            return {"id": self._insert_event(db, job_id, message, type=type, level=level, data=data)}

    @staticmethod
    def _insert_event(db, job_id: str, message: str, *, type: str = "message", level: str = "info",
                      data: dict | None = None) -> str:
        eid = new_id("ftevent")
        db.execute("INSERT INTO events (id, job_id, created_at, level, type, message, data) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?)", (eid, job_id, int(time.time()), level, type, message,
                                             json.dumps(data) if data is not None else None))
        return eid

    def events(self, job_id: str, *, after_seq: int = 0) -> list[dict]:
        """Oldest first, from after the event numbered after_seq (SSE followers keep their place by seq)."""
        rows = self._db().execute("SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq",
                                  (job_id, after_seq)).fetchall()
        return [self._row(r) for r in rows]

    def add_checkpoint(self, job_id: str, step: int, metrics: dict) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO checkpoints (id, job_id, created_at, step, metrics) VALUES "
                       "(?, ?, ?, ?, ?)", (new_id("ftckpt"), job_id, int(time.time()), step, json.dumps(metrics)))

    def checkpoints(self, job_id: str) -> list[dict]:
        rows = self._db().execute("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step DESC", (job_id,))
        return [self._row(r) for r in rows]

    def disk_bytes(self) -> int:
        """Bytes of the uploaded files and the jobs' working folders (the cap's measure)."""
        total = 0
        for root in (self.files_dir, self.jobs_dir):
            for dirpath, _, names in os.walk(root):
                for n in names:
                    try:
                        total += os.lstat(os.path.join(dirpath, n)).st_size
                    except OSError:
                        pass
        return total
