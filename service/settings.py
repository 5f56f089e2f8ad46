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

    weights: str = Field("weights/shakespeare", description="the default model: a weights prefix (`NAME.safetensors` + "
                         "`NAME.json`, in the models directory or not), served as `NAME`; it loads before `/ready` "
                         "answers 200 (without it the server does not start) and is never unloaded to make room")
    models_dir: str = Field("weights", description="every `NAME.safetensors` + `NAME.json` in this folder is "
                            "model `NAME`: listed, loaded on first use and reloaded when its files change, while the "
                            "server runs")
    max_loaded: int = Field(4, ge=1, le=1024, description="models in memory at once, the default included; to load "
                            "another, the least recently used one without work in flight is unloaded (never the "
                            "default)")
    preload: str = Field("", description="models loaded at start besides the default: ids, comma-separated, or "
                         "`all` (at most `CHARRNN_MAX_LOADED` - 1 of them); the others load on first use")
    max_model_bytes: int = Field(1 << 30, ge=1024, description="largest `NAME.safetensors` the server reads; a "
                                "model with a larger one does not load (503 `model_unavailable`)")
    max_card_bytes: int = Field(4 << 20, ge=1024, description="largest `NAME.json` (model card) the server "
                               "reads; a model with a larger one does not load")
    # Files and fine-tuning jobs (service/http/tuning.py; the trainer is jobs/runner.py)
    data_dir: str = Field("runs/service", description="uploaded files, the jobs database (SQLite, `jobs.db`) and "
                          "the jobs' working folders; the servers and the trainer must share it")
    max_file_bytes: int = Field(64 << 20, ge=1024, description="largest upload to `/v1/files` (413 "
                                "`file_too_large` beyond)")
    min_file_chars: int = Field(2000, ge=20, description="fewest characters a training file may have (its last 10% "
                                "validate)")
    max_file_chars: int = Field(20000, ge=2, description="most distinct characters a training file may have")
    max_data_bytes: int = Field(4 << 30, ge=1 << 20, description="disk cap of the uploads and the jobs' working "
                                "folders together, checked at each upload and when a job is created (413 "
                                "`storage_full` beyond)")
    trainer: Literal["local", "off"] = Field("local", description="`local`: gunicorn's master starts the trainer "
                                             "(`python -m jobs.runner`) beside the workers and stops it with them; "
                                             "`off`: it runs elsewhere (Compose's `trainer` service, Kubernetes' "
                                             "`charrnn-trainer`)")
    max_jobs: int = Field(1, ge=1, le=64, description="fine-tuning jobs training at once; the rest queue")
    train_threads: int = Field(1, ge=1, le=256, description="torch threads of each training process; with "
                               "`CHARRNN_TRAIN_SHARES_CORES` the engine leaves that many cores per running job")
    train_sched: Literal["idle", "normal"] = Field("idle", description="how training processes are scheduled: `idle` "
                                                   "(Linux `SCHED_IDLE`: only CPU time no serving thread wants) or "
                                                   "`normal` (at `CHARRNN_TRAIN_NICE`)")
    train_nice: int = Field(10, ge=0, le=19, description="niceness of the training processes when "
                            "`CHARRNN_TRAIN_SCHED` is `normal`")
    train_shares_cores: bool = Field(True, description="jobs train on this machine's cores (`make serve`; Compose "
                                     "on one host): while they run, the engine's wide turns use as many threads fewer "
                                     "as the running jobs train on; `false` where the trainer runs on other machines")
    db_journal: Literal["wal", "delete"] = Field("wal", description="the jobs database's journal mode: `wal` (every "
                                                 "process that opens it on one machine) or `delete` (servers and "
                                                 "trainer on several machines sharing a network filesystem whose "
                                                 "POSIX locks work)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the models run: `auto` (CUDA when "
                                                    "torch sees a GPU, else the CPU), `cpu`, or `cuda` (without a GPU "
                                                    "the server does not start)")
    precision: Literal[("auto", *PRECISIONS)] = Field(
        "auto", description="recurrent matrices at inference (prompts and decoding); auto = the fastest, timed at "
                            "start, of fp32, fp16 (CPU with fbgemm) and int8 (CPU with fbgemm, for weights whose "
                            "card records its validation cost <= 0.01 nats/char); fp32 on GPU")
    torch_threads: int = Field(0, ge=0, description="torch threads of each worker's engine; `0` = torch's default "
                               "(every core); `gunicorn.conf.py` sets cores / workers when it is unset")
    max_batch: int = Field(64, ge=1, le=4096, description="sequences one model decodes together (its "
                           "batch); a newcomer joins at the next step")
    max_queue: int = Field(256, ge=0, description="sequences one model keeps waiting beyond its batch; a request "
                           "whose sequences do not fit gets 429 `queue_full` at once")
    max_prompt_chars: int = Field(8192, ge=1, description="longest prompt or `/predict-next` text, in characters")
    max_new_chars: int = Field(2000, ge=1, description="most characters one completion may ask for (`max_new_chars`, "
                                "`max_tokens`)")
    max_n: int = Field(8, ge=1, description="most completions per request (`n`); `/v1/completions` also takes at "
                        "most `CHARRNN_MAX_BATCH` / `CHARRNN_MAX_N` prompts per request")
    max_stop: int = Field(4, ge=0, description="most stop strings per request (at most 4 on `/v1/completions`, as "
                           "OpenAI's)")
    max_stop_chars: int = Field(64, ge=1, description="longest stop string, in characters")
    max_top_k: int = Field(1000, ge=1, description="largest `top_k`")
    max_inspect_chars: int = Field(2000, ge=1, description="longest `/inspect` text, in characters (it runs on the "
                                   "request's thread with one torch thread, one `/inspect` at a time per worker)")
    max_inspect_units: int = Field(64, ge=1, description="most `units` an `/inspect` request may name, and the largest "
                                   "`top_units`")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body (413 `payload_too_large` beyond); "
                                "uploads to `/v1/files` have `CHARRNN_MAX_FILE_BYTES` instead")
    request_timeout_s: float = Field(120.0, gt=0, description="a request's deadline in seconds, queueing included: "
                                  "504 `timeout` beyond (a stream: an error event, then `[DONE]`); loading its "
                                  "model may take as long again")
    max_context: int | None = Field(
        None, ge=0, description="a prompt read afresh is read from its last N characters only, from the "
        "model's start state (a prompt that extends a cached one continues from the cached state); `0` = read it "
        "all; unset = the window `bench/context.py` measured for the weights and wrote in their card "
        "(`inference.max_context`), else all")
    prefill_chunk: int = Field(256, ge=1, description="prompt characters one model reads per scheduler turn, so a "
                                  "long prompt never stalls the other sequences")
    # Every text event costs the HTTP threads work (and the GIL) that the engine then waits for;
    # merged every 50 ms, 64 streams keep most of the non-streamed rate (docs/performance.md).
    stream_interval_ms: float = Field(
        50.0, ge=0, le=1000, description="streams: the first text goes at once, later text at most "
        "this often, merged; `0` = an event per character")
    prefix_cache: int = Field(1024, ge=0, description="recurrent states kept per model (LRU) for repeated or "
                              "extended prompts; `0` = off")
    # Who may call (service/auth.py). SecretStr: a key never shows in a repr, a log line or /info.
    api_key: SecretStr = Field(SecretStr(""), description="API key(s), comma-separated; when set, every endpoint "
                               "but `/health`, `/ready` and the pages (`/`, `/ui/…`, `/docs`, `/openapi.json`) needs "
                               "`Authorization: Bearer <key>`; empty = open")
    api_key_file: str = Field("", description="a file of API keys, comma- or line-separated (a Docker or "
                              "Kubernetes secret); adds to `CHARRNN_API_KEY`")
    metrics_public: bool = Field(False, description="`/metrics` answers without a key even when keys are set")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {name: environ[ENV_PREFIX + name.upper()] for name in cls.model_fields
                  if ENV_PREFIX + name.upper() in environ}
        return cls.model_validate({**values, **overrides})

    def limits(self) -> dict:
        return self.model_dump(exclude={"weights", "models_dir", "preload", "device", "precision", "torch_threads",
                                        "api_key", "api_key_file", "metrics_public", "data_dir", "trainer", "db_journal", "train_sched", "train_shares_cores"})
