"""Service settings: parsed and validated once, from environment variables, in create_app()."""
from __future__ import annotations

import os
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from model.precision import PRECISIONS

ENV_PREFIX = "CHARRNN_"


class Settings(BaseModel):
    """Every field can be set as CHARRNN_<FIELD> (upper case), e.g. CHARRNN_MAX_NEW_CHARS=500."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: str = Field("weights/shakespeare", description="the default model: a weights prefix (NAME.safetensors "
                         "+ NAME.json), served as NAME; it loads at start and stays loaded")
    models_dir: str = Field("weights", description="every NAME.safetensors + NAME.json here is model NAME, found, "
                            "added and reloaded while the server runs")
    max_loaded: int = Field(4, ge=1, le=1024, description="models in memory at once (the default included); the "
                            "least recently used one without work in flight is unloaded when another must load")
    preload: str = Field("", description="models loaded at start besides the default: names, comma-separated, or "
                         "'all' (up to max_loaded); others load on first use")
    max_model_bytes: int = Field(1 << 30, ge=1024, description="largest NAME.safetensors the server reads")
    max_card_bytes: int = Field(4 << 20, ge=1024, description="largest NAME.json (model card) the server reads")
    # Files and fine-tuning jobs (service/http/tuning.py; the trainer is jobs/runner.py)
    data_dir: str = Field("runs/service", description="uploaded files, the jobs database (SQLite) and the jobs' "
                          "working folders")
    max_file_bytes: int = Field(64 << 20, ge=1024, description="largest upload to /v1/files (413 beyond)")
    min_file_chars: int = Field(2000, ge=20, description="fewest characters a training file may have (its last 10% "
                                "validate)")
    max_file_chars: int = Field(20000, ge=2, description="most distinct characters a training file may have")
    max_data_bytes: int = Field(4 << 30, ge=1 << 20, description="disk cap of the uploads and the jobs' working "
                                "folders together (413 storage_full beyond)")
    trainer: Literal["local", "off"] = Field("local", description="local: gunicorn's master starts the trainer "
                                             "(jobs/runner.py) beside the workers; off: it runs elsewhere (compose)")
    max_jobs: int = Field(1, ge=1, le=64, description="fine-tuning jobs training at once (the rest queue)")
    train_threads: int = Field(1, ge=1, le=256, description="torch threads of each training process")
    train_sched: Literal["idle", "normal"] = Field("idle", description="how training processes are scheduled: idle "
                                                   "(SCHED_IDLE: only CPU time serving does not want) or normal (at "
                                                   "train_nice); docs/training.md, serving while training")
    train_nice: int = Field(10, ge=0, le=19, description="niceness of the training processes with train_sched normal")
    train_shares_cores: bool = Field(True, description="the trainer runs on this machine's cores (make serve; compose "
                                     "on one host): while jobs run, the engine's wide turns use as many threads fewer as "
                                     "the running jobs train on; false where it trains elsewhere")
    db_journal: Literal["wal", "delete"] = Field("wal", description="the jobs database's journal: wal (every process "
                                                 "on one machine), delete (replicas and trainer on several machines "
                                                 "sharing a network filesystem with working locks)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal[("auto", *PRECISIONS)] = Field(
        "auto", description="recurrent matrices at inference (prompts and decoding); auto = the fastest, timed at "
                            "start, of fp32, fp16 (CPU with fbgemm) and int8 (CPU with fbgemm, for weights whose "
                            "card records its validation cost <= 0.01 nats/char); fp32 on GPU")
    torch_threads: int = Field(0, ge=0, description="torch threads per worker; 0 = cores / workers")
    max_batch: int = Field(64, ge=1, le=4096, description="sequences decoded together per step")
    max_queue: int = Field(256, ge=0, description="sequences waiting to join the batch; beyond: 429")
    max_prompt_chars: int = Field(8192, ge=1, description="longest prompt / predict-next text")
    max_new_chars: int = Field(2000, ge=1, description="most characters one completion may ask for")
    max_n: int = Field(8, ge=1, description="most completions per /generate request")
    max_stop: int = Field(4, ge=0, description="most stop strings per request")
    max_stop_chars: int = Field(64, ge=1, description="longest stop string")
    max_top_k: int = Field(1000, ge=1, description="largest top_k for /predict-next")
    max_inspect_chars: int = Field(2000, ge=1, description="longest /inspect text (~1 ms of CPU per character "
                                   "for the shipped 2x512 model, one thread)")
    max_inspect_units: int = Field(64, ge=1, description="most units an /inspect request may name, and the largest top_units")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body (413 beyond)")
    request_timeout_s: float = Field(120.0, gt=0, description="deadline of a request, queueing included")
    max_context: int | None = Field(
        None, ge=0, description="a prompt read afresh is read from its last N characters only (from the start "
        "state); 0 = read it all; unset = the window the weights' card recommends (bench/context.py), else all")
    prefill_chunk: int = Field(256, ge=1, description="prompt characters run per scheduler turn")
    # Every text event costs the HTTP threads work (and the GIL) that the engine then waits for;
    # merged every 50 ms, 64 streams keep most of the non-streamed rate (docs/performance.md).
    stream_interval_ms: float = Field(
        50.0, ge=0, le=1000, description="streams: least time between text events after the first; 0 = every character")
    prefix_cache: int = Field(1024, ge=0, description="LSTM states kept for repeated/extended prompts; 0 = off")
    # Who may call (service/auth.py). SecretStr: a key never shows in a repr, a log line or /info.
    api_key: SecretStr = Field(SecretStr(""), description="API key(s), comma-separated; when set, every endpoint "
                               "but /health and /ready needs `Authorization: Bearer <key>`; empty = open")
    api_key_file: str = Field("", description="file with API key(s), comma- or line-separated (container secrets)")
    metrics_public: bool = Field(False, description="/metrics answers without a key even when keys are set")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {name: environ[ENV_PREFIX + name.upper()] for name in cls.model_fields
                  if ENV_PREFIX + name.upper() in environ}
        return cls.model_validate({**values, **overrides})

    def limits(self) -> dict:
        return self.model_dump(exclude={"weights", "models_dir", "preload", "device", "precision", "torch_threads",
                                        "api_key", "api_key_file", "metrics_public", "data_dir", "trainer", "db_journal", "train_sched", "train_shares_cores"})
