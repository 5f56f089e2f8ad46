"""Files and fine-tuning jobs, OpenAI-compatible (/v1/files, /v1/fine_tuning/jobs), and deleting a
fine-tuned model. These views only record: an upload is checked and stored, a job is planned and
queued; the trainer (jobs/runner.py, its own process) does the training and publishes the model."""
from __future__ import annotations

import random
import time
from pathlib import Path

from flask import jsonify, request, send_file

from jobs.plan import SCRATCH, PlanError, bounded_steps, model_name, plan
from jobs.store import FINAL, new_id
from jobs.upload import UploadError, check
from model.checkpoint import atomic_write
from service.core.errors import APIError
from service.core.tuning_schemas import (Checkpoint, CheckpointList, Deleted, Event, EventList, FileList, FileObject,
                                         Job, JobCreate, JobList)
from service.http.common import ctx, parse, sse, sse_response

PURPOSES = ("fine-tune",)


def _store():
    return ctx().store


def _bad(param: str, message: str, code: str = "invalid_value", status: int = 400) -> APIError:
    return APIError(status, code, message, [{"field": param}])


def _file_out(f: dict) -> dict:
    return FileObject(id=f["id"], bytes=f["bytes"], created_at=f["created_at"], filename=f["filename"],
                      purpose=f["purpose"], status_details=f"{f['format']}: {f['chars']} characters, "
                      f"{f['distinct_chars']} distinct").model_dump()


def _file(file_id: str, param: str = "file_id") -> dict:
    f = _store().file(file_id) if isinstance(file_id, str) else None
    if f is None:
        raise APIError(404, "file_not_found", f"no file with id '{str(file_id)[:64]}'", [{"field": param}])
    return f


# --- files ---------------------------------------------------------------------------------------
def create_file():
    s, store = ctx().settings, _store()
    upload = request.files.get("file")
    if upload is None and "file" not in request.form:
        raise _bad("file", "send the text as multipart/form-data field `file` (as client.files.create does)",
                   "missing_file")
    purpose = request.form.get("purpose")
    if purpose not in PURPOSES:
        raise _bad("purpose", f"purpose must be one of {list(PURPOSES)}; got {str(purpose)[:40]!r}")
    if upload is not None:  # a file part, as clients send it
        data, filename = upload.stream.read(s.max_file_bytes + 1), upload.filename or ""
    else:  # the text as a plain form field (curl -F file=...; the OpenAPI document's string)
        data, filename = request.form["file"].encode("utf-8", "surrogatepass"), "upload.txt"
    try:
        checked = check(data, filename, max_bytes=s.max_file_bytes, min_chars=s.min_file_chars,
                        max_distinct=s.max_file_chars)
    except UploadError as e:
        raise APIError(e.status, e.code, e.message, [{"field": e.param}]) from None
    if store.disk_bytes() + 2 * len(data) > s.max_data_bytes:
        raise APIError(413, "storage_full", f"the server's data cap ({s.max_data_bytes} bytes) would be exceeded; "
                       "delete files or wait for jobs to finish", [{"field": "file"}])
    fid = new_id("file")
    atomic_write(store.file_path(fid, "text"), lambda tmp: Path(tmp).write_text(checked.text, encoding="utf-8"))
    atomic_write(store.file_path(fid, "raw"), lambda tmp: Path(tmp).write_bytes(data))
    name = Path(filename or "upload.txt").name[:255] or "upload.txt"
    f = store.add_file({"id": fid, "filename": name, "purpose": purpose, "bytes": len(data),
                        "created_at": int(time.time()), "format": checked.format, "chars": checked.chars,
                        "distinct_chars": checked.distinct_chars, "sha256": checked.sha256})
    return jsonify(_file_out(f))


def _page(items: list[dict], out, *, default: int, most: int) -> tuple[list, bool]:
    """One page of a list in its order: the items after ?after=ID (an id no longer there: none), at most
    ?limit of them, each through `out`; -> (page, whether more follow)."""
    limit, after = _int_arg("limit", default, 1, most), request.args.get("after")
    if after:
        ids = [x["id"] for x in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return [out(x) for x in items[:limit]], len(items) > limit


def list_files():
    data, more = _page(_store().files(request.args.get("purpose")), _file_out, default=10000, most=10000)
    return jsonify(FileList(data=data, has_more=more).model_dump())


def get_file(file_id: str):
    return jsonify(_file_out(_file(file_id)))


def file_content(file_id: str):
    f = _file(file_id)
    # send_file streams the bytes and writes the client's filename as RFC 6266 asks (filename*=UTF-8''
    # for a name beyond Latin-1, quotes escaped): a hand-made header failed on such names.
    return send_file(_store().file_path(f["id"], "raw"), mimetype="application/octet-stream", as_attachment=True,
                     download_name=f["filename"])


def delete_file(file_id: str):
    f = _file(file_id)
    _store().delete_file(f["id"])  # a queued job that needs it fails when it would start, saying so
    return jsonify(Deleted(id=f["id"], object="file", deleted=True).model_dump())


# --- jobs ------------------------------------------------------------------------------------------
def _job_out(j: dict) -> dict:
    h = j["hyperparameters"]
    return Job(id=j["id"], created_at=j["created_at"], finished_at=j["finished_at"], model=j["model"],
               fine_tuned_model=j["fine_tuned_model"] if j["status"] == "succeeded" else None, status=j["status"],
               training_file=j["training_file"], validation_file=j["validation_file"], hyperparameters=h,
               trained_tokens=j["trained_tokens"], error=j["error"], seed=j["seed"],
               estimated_finish=j["estimated_finish"] if j["status"] == "running" else None, suffix=j["suffix"],
               method={"type": "supervised", "supervised": {"hyperparameters": h}},
               total_steps=bounded_steps(j),
               step=j["step"]).model_dump()


def _job(job_id: str) -> dict:
    j = _store().job(job_id)
    if j is None:
        raise APIError(404, "job_not_found", f"no fine-tuning job with id '{job_id[:64]}'", [{"field": "job_id"}])
    return j


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:  # "²".isdigit(), but int() refuses it
        raise _bad(name, f"{name} must be an integer in [{lo}, {hi}]")
    return int(raw)


def create_job():
    req = parse(JobCreate)
    c, store = ctx(), _store()
    if req.model != SCRATCH and req.model not in c.registry.names():
        raise c.registry.not_found(req.model)
    train = _file(req.training_file, "training_file")
    if train["purpose"] != "fine-tune":
        raise _bad("training_file", f"{train['id']} was uploaded with purpose {train['purpose']}, not fine-tune")
    if req.validation_file is not None:
        _file(req.validation_file, "validation_file")
    if store.disk_bytes() > c.settings.max_data_bytes:  # a job's checkpoints count too
        raise APIError(413, "storage_full", f"the server's data cap ({c.settings.max_data_bytes} bytes) is reached; "
                       "delete files or wait for jobs to finish", [{"field": "training_file"}])
    hyper = req.method.supervised.hyperparameters if req.method and req.method.supervised else req.hyperparameters
    try:
        planned, steps = plan(hyper.model_dump(exclude_none=True) if hyper else {}, scratch=req.model == SCRATCH,
                              train_chars=train["chars"])
    except PlanError as e:
        raise _bad(e.param, e.message) from None
    jid = new_id("ftjob")
    seed = req.seed if req.seed is not None else random.SystemRandom().randrange(2**31)
    store.add_job({"id": jid, "created_at": int(time.time()), "status": "validating_files", "model": req.model,
                   "suffix": req.suffix, "training_file": train["id"], "validation_file": req.validation_file,
                   "hyperparameters": planned, "seed": seed, "total_steps": steps})
    store.update_job(jid, fine_tuned_model=model_name(req.model, req.suffix, jid))
    store.add_event(jid, f"Validated training file: {train['id']} ({train['chars']} characters)")
    store.update_job(jid, only_from=("validating_files",), status="queued")
    store.add_event(jid, "Job queued" + (f" ({steps} steps)" if bounded_steps(store.job(jid)) else ""))
    return jsonify(_job_out(store.job(jid)))


def list_jobs():
    data, more = _page(_store().jobs(), _job_out, default=20, most=100)
    return jsonify(JobList(data=data, has_more=more).model_dump())


def get_job(job_id: str):
    return jsonify(_job_out(_job(job_id)))


def cancel_job(job_id: str):
    j, store = _job(job_id), _store()
    if j["status"] in FINAL:
        raise _bad("job_id", f"the job is already {j['status']}", "job_finished")
    note = "Job cancelled" + (": the trainer stops at its next step" if j["status"] == "running" else "")
    store.update_job(j["id"], only_from=("validating_files", "queued", "running"), status="cancelled",
                     cancel_requested=1, finished_at=int(time.time()), estimated_finish=None,
                     with_events=({"message": note},))
    return jsonify(_job_out(store.job(j["id"])))


def _event_out(e: dict) -> dict:
    return Event(id=e["id"], created_at=e["created_at"], level=e["level"], message=e["message"], type=e["type"],
                 data=e["data"]).model_dump()


def job_events(job_id: str):
    j, store = _job(job_id), _store()
    if request.args.get("stream") in ("true", "1"):
        return _follow(j["id"])
    if request.args.get("stream") not in (None, "false", "0"):
        raise _bad("stream", "stream is true or false")
    # newest first, as OpenAI lists them
    data, more = _page(list(reversed(store.events(j["id"]))), _event_out, default=20, most=1000)
    return jsonify(EventList(data=data, has_more=more).model_dump())


def _follow(job_id: str):
    """Server-sent events: every event so far (or after `after` / Last-Event-ID: a reconnecting client
    resumes where it was), oldest first, then each new one as it is written, until the job ends (then
    [DONE]). Each carries its id; a comment line every 15 s keeps proxies from closing a quiet stream."""
    store = _store()
    since = request.args.get("after") or request.headers.get("Last-Event-ID")
    start = next((e["seq"] for e in store.events(job_id) if e["id"] == since), 0) if since else 0

    def body():
        seq, quiet = start, time.monotonic()
        while True:
            new = store.events(job_id, after_seq=seq)
            if new:
                seq, quiet = new[-1]["seq"], time.monotonic()
                yield "".join(f"id: {e['id']}\n" + sse(_event_out(e)) for e in new)
            elif store.job(job_id)["status"] in FINAL:  # its closing event came in the same transaction
                yield sse("[DONE]")
                return
            elif time.monotonic() - quiet > 15:
                quiet = time.monotonic()
                yield ": keep-alive\n\n"
            time.sleep(0.5)

    return sse_response(body())


def job_checkpoints(job_id: str):
    j = _job(job_id)
    name = j["fine_tuned_model"]

    def out(r):
        m = r["metrics"]
        return Checkpoint(id=r["id"], created_at=r["created_at"], fine_tuned_model_checkpoint=f"{name}:step-{r['step']}",
                          fine_tuning_job_id=j["id"], step_number=r["step"],
                          metrics={"step": r["step"], "train_loss": m.get("train_loss"), "valid_loss": m.get(
                              "valid_loss"), "full_valid_loss": m.get("valid_loss")}).model_dump()
    data, more = _page(_store().checkpoints(j["id"]), out, default=10, most=1000)
    return jsonify(CheckpointList(data=data, has_more=more).model_dump())


def delete_model(model: str):
    """Only a fine-tuned model (one a job of this server made) can be deleted: its two files go, and every
    replica's registry stops serving it at its next lookup."""
    c = ctx()
    if model not in c.registry.names():
        raise c.registry.not_found(model)
    card = c.registry.describe(model)["entry"].card or {}
    if "fine_tune" not in card or model == c.registry.default:
        raise APIError(403, "not_fine_tuned", f"'{model}' is not a fine-tuned model; only those can be deleted",
                       [{"field": "model"}])
    c.registry.remove(model)
    return jsonify(Deleted(id=model, object="model", deleted=True).model_dump())
