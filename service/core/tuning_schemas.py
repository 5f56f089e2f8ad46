"""Bodies of the OpenAI-compatible files and fine-tuning API (/v1/files, /v1/fine_tuning/jobs), as the
official client sends and reads them. A job trains with the project's own offline module
(jobs/runner.py runs `python -m model.train`); its hyperparameters are OpenAI's three plus this
server's extensions, every one "auto" or a value."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.core.schemas import Strict

Auto = Literal["auto"]


class Hyperparameters(Strict):
    n_epochs: Auto | int | None = Field(None, ge=1, le=1000, description="passes over the training text (default 3 "
                                        "when no other length is given)")
    batch_size: Auto | int | None = Field(None, ge=1, le=512, description="streams per step (default 16)")
    learning_rate_multiplier: Auto | float | None = Field(None, gt=0, le=100, description="times model.train's "
                                                          "2e-3 (default 0.5 for a fine-tune, 1 from scratch)")
    n_steps: Auto | int | None = Field(None, ge=1, le=1_000_000, description="extension: optimiser steps (instead "
                                       "of n_epochs)")
    minutes: Auto | float | None = Field(None, ge=0.05, le=10080, description="extension: a time budget; with no "
                                         "steps or epochs, the schedule follows the clock")
    seq_len: Auto | int | None = Field(None, ge=8, le=1024, description="extension: characters per BPTT window (64)")
    max_vocab: Auto | int | None = Field(None, ge=2, le=65536, description="extension: keep the N most frequent "
                                         "characters, the rest one unknown symbol generation never emits")
    hidden: Auto | int | None = Field(None, ge=8, le=2048, description="extension, from scratch: units per layer")
    layers: Auto | int | None = Field(None, ge=1, le=8, description="extension, from scratch: recurrent layers")
    embed: Auto | int | None = Field(None, ge=4, le=1024, description="extension, from scratch: embedding width")
    cell: Auto | Literal["lstm", "gru", "rnn"] | None = Field(None, description="extension, from scratch: cell")


class Supervised(Strict):
    hyperparameters: Hyperparameters | None = None


class Method(Strict):
    type: Literal["supervised"] = Field(description="only supervised: a char-RNN learns the text itself")
    supervised: Supervised | None = None


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


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int = Field(description="size as uploaded")
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = Field(None, description="how it was read: text or jsonl, characters, distinct")


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class Deleted(BaseModel):
    id: str
    object: str = Field(description="file or model")
    deleted: bool


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobHyperparameters(BaseModel):
    model_config = {"extra": "allow"}  # this server's extensions, as the job was planned
    n_epochs: int | Auto | None = None
    batch_size: int | Auto | None = None
    learning_rate_multiplier: float | Auto | None = None


class Job(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None = Field(description="the model's id once the job succeeded (served at once)")
    organization_id: str = "charrnn"
    result_files: list[str] = []
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    training_file: str
    validation_file: str | None
    hyperparameters: JobHyperparameters
    trained_tokens: int | None = Field(description="characters trained on so far")
    error: JobError | None
    seed: int
    estimated_finish: int | None
    integrations: list | None = None
    metadata: dict | None = None
    method: dict | None = None
    suffix: str | None = None
    total_steps: int | None = Field(None, description="extension: optimiser steps planned (null: a time budget)")
    step: int = Field(0, description="extension: the last evaluated step")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]
    has_more: bool


class Event(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = Field(None, description="metrics: step, total_steps, train_loss, valid_loss, "
                                        "valid_bpc, chars_per_second, time_left_s; a sample: sample, step")


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Event] = Field(description="newest first")
    has_more: bool


class CheckpointMetrics(BaseModel):
    step: float
    train_loss: float | None = None
    valid_loss: float | None = None
    full_valid_loss: float | None = None


class Checkpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str = Field(description="MODEL:step-N (only the job's best weights are served, "
                                             "as its fine_tuned_model)")
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Checkpoint]
    has_more: bool
