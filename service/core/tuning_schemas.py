"""Bodies of the OpenAI-compatible files and fine-tuning API (/v1/files, /v1/fine_tuning/jobs), as the
official client sends and reads them. A job trains with the project's own offline module
(jobs/runner.py runs `python -m model.train`); its hyperparameters are OpenAI's three plus this
server's extensions, every one "auto" or a value."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from jobs.plan import LIMITS
from service.core.schemas import Strict

Auto = Literal["auto"]


def _bounded(name: str, kind: type):
    """A hyperparameter's value type: "auto" or a number within the bounds jobs/plan.py enforces."""
    lo, hi = LIMITS[name]
    return Auto | Annotated[kind, Field(ge=lo, le=hi)] | None


class Hyperparameters(Strict):
    n_epochs: _bounded("n_epochs", int) = Field(None, description="passes over the training text (default 3 when "
                                                "no other length is given)")
    batch_size: _bounded("batch_size", int) = Field(None, description="streams per step (default 16)")
    learning_rate_multiplier: _bounded("learning_rate_multiplier", float) = Field(
        None, description="times model.train's 2e-3 (default 0.5 for a fine-tune, 1 from scratch)")
    n_steps: _bounded("n_steps", int) = Field(None, description="extension: optimiser steps (instead of n_epochs)")
    minutes: _bounded("minutes", float) = Field(None, description="extension: a time budget; with no steps or "
                                                "epochs, the schedule follows the clock")
    seq_len: _bounded("seq_len", int) = Field(None, description="extension: characters per BPTT window (64)")
    max_vocab: _bounded("max_vocab", int) = Field(None, description="extension: keep the N most frequent "
                                                  "characters, the rest one unknown symbol generation never emits")
    hidden: _bounded("hidden", int) = Field(None, description="extension, from scratch only: units per layer")
    layers: _bounded("layers", int) = Field(None, description="extension, from scratch only: recurrent layers")
    embed: _bounded("embed", int) = Field(None, description="extension, from scratch only: embedding width")
    cell: Auto | Literal["lstm", "gru", "rnn"] | None = Field(None, description="extension, from scratch only: cell")


class Supervised(Strict):
    hyperparameters: Hyperparameters | None = Field(None, description="as the job's hyperparameters")


class Method(Strict):
    type: Literal["supervised"] = Field(description="only supervised: a char-RNN learns the text itself")
    supervised: Supervised | None = Field(None, description="its settings")


class JobCreate(Strict):
    model: str = Field(description="a served model to fine-tune (GET /v1/models), or \"scratch\" for a new network "
                       "sized by the hyperparameters")
    training_file: str = Field(description="an uploaded file's id (purpose fine-tune)")
    validation_file: str | None = Field(None, description="another file whose text validates; default: the last "
                                        "10% of the training text")
    hyperparameters: Hyperparameters | None = Field(None, description="OpenAI's (deprecated there: also under "
                                                    "method.supervised)")
    method: Method | None = Field(None, description="{\"type\": \"supervised\", \"supervised\": {\"hyperparameters\""
                                  ": {...}}}")
    suffix: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,18}$", description="in the model's name: "
                               "ft-BASE-SUFFIX-ID")
    seed: int | None = Field(None, ge=0, lt=2**31, description="random when absent")
    integrations: list | None = Field(None, max_length=0, description="not supported: null or []")
    metadata: dict[str, str] | None = Field(None, description="accepted, kept with nothing else")


def _d(text: str, default=...):
    return Field(default, description=text)


class FileObject(BaseModel):
    id: str = _d("file-...: a random id")
    object: Literal["file"] = _d("always file", "file")
    bytes: int = _d("size as uploaded")
    created_at: int = _d("Unix time of the upload")
    filename: str = _d("the name it was uploaded with (a label only: never a path here)")
    purpose: str = _d("always fine-tune")
    status: Literal["processed"] = _d("always processed: a file is checked before it is stored", "processed")
    status_details: str | None = _d("how it was read: text or jsonl, its characters and distinct characters", None)


class FileList(BaseModel):
    object: Literal["list"] = _d("always list", "list")
    data: list[FileObject] = _d("the files, newest first")
    has_more: bool = _d("more after the last one (page with after=its id)", False)


class Deleted(BaseModel):
    id: str = _d("what was deleted")
    object: str = _d("file or model")
    deleted: bool = _d("always true")


class JobError(BaseModel):
    code: str = _d("file_not_found, model_not_found, training_failed, ...")
    message: str = _d("why the job failed, for a person")
    param: str | None = _d("the request field at fault, if one is", None)


class JobHyperparameters(BaseModel):
    model_config = {"extra": "allow"}  # this server's extensions, as the job was planned
    n_epochs: int | Auto | None = _d("passes over the training text (absent: steps or minutes set the length)", None)
    batch_size: int | Auto | None = _d("streams per step", None)
    learning_rate_multiplier: float | Auto | None = _d("times model.train's 2e-3", None)


class Job(BaseModel):
    id: str = _d("ftjob-...: a random id")
    object: Literal["fine_tuning.job"] = _d("always fine_tuning.job", "fine_tuning.job")
    created_at: int = _d("Unix time the job was created")
    finished_at: int | None = _d("Unix time it ended (succeeded, failed or cancelled)")
    model: str = _d("the base: a served model, or scratch")
    fine_tuned_model: str | None = _d("the model's id once the job succeeded (served at once, by every replica)")
    organization_id: str = _d("always charrnn", "charrnn")
    result_files: list[str] = _d("always empty: the result is the model", [])
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"] = _d(
        "validating_files -> queued -> running -> succeeded | failed | cancelled")
    training_file: str = _d("the training text's file id")
    validation_file: str | None = _d("the validation text's file id (null: the last 10% of the training text)")
    hyperparameters: JobHyperparameters = _d("as planned: OpenAI's three and this server's extensions")
    trained_tokens: int | None = _d("characters trained on so far")
    error: JobError | None = _d("why the job failed; null otherwise")
    seed: int = _d("the seed of the initial weights, data order and dropout")
    estimated_finish: int | None = _d("while running: Unix time the job should end")
    integrations: list | None = _d("always null", None)
    metadata: dict | None = _d("always null", None)
    method: dict | None = _d("{type: supervised, supervised: {hyperparameters}}", None)
    suffix: str | None = _d("the suffix in the model's name", None)
    total_steps: int | None = _d("extension: optimiser steps planned (null: a time budget)", None)
    step: int = _d("extension: the last evaluated step", 0)


class JobList(BaseModel):
    object: Literal["list"] = _d("always list", "list")
    data: list[Job] = _d("the jobs, newest first")
    has_more: bool = _d("more after the last one (page with after=its id)")


class Event(BaseModel):
    id: str = _d("ftevent-...")
    object: Literal["fine_tuning.job.event"] = _d("always fine_tuning.job.event", "fine_tuning.job.event")
    created_at: int = _d("Unix time")
    level: Literal["info", "warn", "error"] = _d("info, warn (e.g. a trainer restarted) or error")
    message: str = _d("what happened, for a person")
    type: Literal["message", "metrics"] = _d("metrics: an evaluation's figures in data; message: the rest")
    data: dict[str, Any] | None = _d("metrics: step, total_steps, train_loss, valid_loss, valid_bpc, "
                                     "chars_per_second, time_left_s, learning_rate; a sample: sample, step", None)


class EventList(BaseModel):
    object: Literal["list"] = _d("always list", "list")
    data: list[Event] = _d("newest first")
    has_more: bool = _d("more after the last one (page with after=its id)")


class CheckpointMetrics(BaseModel):
    step: float = _d("the optimiser step evaluated")
    train_loss: float | None = _d("mean training loss since the previous evaluation (nats/char)", None)
    valid_loss: float | None = _d("loss on the whole validation text (nats/char)", None)
    full_valid_loss: float | None = _d("the same: every evaluation reads the whole validation text", None)


class Checkpoint(BaseModel):
    id: str = _d("ftckpt-...")
    object: Literal["fine_tuning.job.checkpoint"] = _d("always fine_tuning.job.checkpoint",
                                                       "fine_tuning.job.checkpoint")
    created_at: int = _d("Unix time of the evaluation")
    fine_tuned_model_checkpoint: str = _d("MODEL:step-N (only the job's best weights are served, as its "
                                          "fine_tuned_model)")
    fine_tuning_job_id: str = _d("the job")
    metrics: CheckpointMetrics = _d("the evaluation's figures")
    step_number: int = _d("the optimiser step")


class CheckpointList(BaseModel):
    object: Literal["list"] = _d("always list", "list")
    data: list[Checkpoint] = _d("newest first")
    has_more: bool = _d("more than limit")
