"""Bodies of the OpenAI-compatible API (/v1/*), as the official client sends them.

A character is a token here: max_tokens counts characters, logit_bias keys are vocabulary
indices (GET /v1/models lists them), logprobs are per character. The request derives from the
same Strict base as the native API, so the input hygiene is shared; OpenAI's optional fields
also accept null, as its clients may send them.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from service.core.schemas import REGEX_RULE, Strict, check_len, setting_limit


class StreamOptions(Strict):
    include_usage: bool | None = Field(False, description="send a last chunk with the usage (and no choices)")


class CompletionRequest(Strict):
    model: str = Field(description="a served model's id (GET /v1/models)")
    prompt: str | list[str] | list[int] | list[list[int]] | None = Field(
        "", description="a string, a list of strings (each its own group of n choices), or vocabulary indices "
        "(a list, or a list of lists); empty = the start of a text")
    max_tokens: int | None = Field(16, ge=0, description="characters to generate per choice (0 with echo: score "
                                   "the prompt)")
    temperature: float | None = Field(1.0, ge=0, le=2, description="softmax temperature; 0 = greedy")
    top_p: float | None = Field(1.0, gt=0, le=1, description="nucleus sampling: only the most likely characters "
                                "whose probabilities add up to top_p")
    n: int | None = Field(1, ge=1, description="choices per prompt; choice j of a prompt uses seed + j")
    stream: bool | None = Field(False, description="answer as text/event-stream chunks, as they are generated")
    stream_options: StreamOptions | None = Field(None, description="with stream: include_usage")
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end a choice (not included)")
    seed: int | None = Field(None, ge=-2**63, lt=2**63, description="random when absent (the X-Seed header says which)")
    logprobs: int | None = Field(None, ge=0, le=5, description="per character: its logprob and the top alternatives")
    echo: bool | None = Field(False, description="prepend the prompt; with logprobs, its characters are scored too")
    presence_penalty: float | None = Field(0.0, ge=-2, le=2, description="subtracted from the logit of every "
                                           "character generated so far")
    frequency_penalty: float | None = Field(0.0, ge=-2, le=2, description="subtracted from a character's logit "
                                            "once per time it was generated so far")
    logit_bias: dict[str, float] | None = Field(None, description="vocabulary index (as a string) -> bias in "
                                                "[-100, 100]; -100 bans the character")
    user: str | None = Field(None, max_length=256, description="accepted, unused")
    best_of: Literal[1] | None = Field(None, description="not supported: only null or 1 (sample n choices, and "
                                       "score them with logprobs)")
    suffix: Literal[""] | None = Field(None, description="not supported: only null or empty (a left-to-right "
                                       "character model cannot fill in text)")
    # Extensions (as vLLM's extra_body): the native API's settings
    top_k: int | None = Field(None, ge=1, description="extension: sample among the k most likely characters")
    repetition_penalty: float | None = Field(None, ge=0.01, le=100, description="extension: as /generate")
    regex: str | None = Field(None, min_length=1, max_length=500, description="extension: the completion must "
                              "match this regex in full (see /generate). " + REGEX_RULE)

    @field_validator("best_of", "suffix", mode="before")
    @classmethod
    def _unsupported(cls, v, info: ValidationInfo):
        if v not in (None, 1, "") or isinstance(v, bool):  # said plainly, as vLLM and llama.cpp do
            raise ValueError(f"{info.field_name} is not supported by this server")
        return v

    @field_validator("prompt", mode="before")
    @classmethod
    def _integral_ids(cls, v):
        # JSON Schema's "integer" includes 2.0 (see Strict): in prompt's lists of indices too
        def fix(x):
            return int(x) if isinstance(x, float) and x.is_integer() else x
        return [[fix(y) for y in x] if isinstance(x, list) else fix(x) for x in v] if isinstance(v, list) else v

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v, info: ValidationInfo):
        if isinstance(v, list):
            if not v:
                raise ValueError("a list of prompts must not be empty")
            for p in v:
                if isinstance(p, (str, list)):
                    check_len(p, info)
        elif isinstance(v, str):
            check_len(v, info)
        return v

    @field_validator("max_tokens", "n", "top_k")
    @classmethod
    def _max(cls, v, info: ValidationInfo):
        lim = setting_limit(info, {"max_tokens": "max_new_chars", "n": "max_n", "top_k": "max_top_k"}[info.field_name])
        if lim is not None and v is not None and v > lim:
            raise ValueError(f"must be <= {lim}")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v, info: ValidationInfo):
        stops = [v] if isinstance(v, str) else v or []
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        n, length = min(4, setting_limit(info, "max_stop") or 4), setting_limit(info, "max_stop_chars")
        if len(stops) > n:
            raise ValueError(f"at most {n} stop strings")
        if length is not None and any(len(s) > length for s in stops):
            raise ValueError(f"stop strings are at most {length} characters")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        for k, b in (v or {}).items():
            if not (k.isascii() and k.isdigit() and str(int(k)) == k):
                raise ValueError(f"keys are vocabulary indices as strings (\"12\"), not {k[:20]!r}")
            if not -100 <= b <= 100:
                raise ValueError(f"the bias of {k} must be in [-100, 100]")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class LegacyLogprobs(BaseModel):
    """OpenAI's legacy (completions) logprobs: one entry per character."""
    tokens: list[str] = Field(description="the characters")
    token_logprobs: list[float | None] = Field(description="each character's logprob; null for the first of an "
                                               "echoed prompt")
    top_logprobs: list[dict[str, float] | None] = Field(description="the most likely characters at each position "
                                                        "(and the chosen one)")
    text_offset: list[int] = Field(description="each character's offset in the choice's text")


class CompletionChoice(BaseModel):
    text: str = Field(description="the generated text (after the prompt, with echo)")
    index: int = Field(description="prompt i, choice j: i * n + j")
    logprobs: LegacyLogprobs | None = Field(description="with logprobs: per character")
    finish_reason: Literal["stop", "length"] | None = Field(
        description="length: max_tokens reached; stop: a stop string, or the regex fully matched; null in a stream "
        "until the choice's last chunk")


class CompletionUsage(BaseModel):
    prompt_tokens: int = Field(description="characters in the prompts")
    completion_tokens: int = Field(description="characters generated, all choices together")
    total_tokens: int = Field(description="prompt_tokens + completion_tokens")


class CompletionResponse(BaseModel):
    id: str = Field(description="cmpl-...")
    object: Literal["text_completion"] = Field("text_completion", description="always text_completion")
    created: int = Field(description="Unix time")
    model: str = Field(description="the served model's id")
    choices: list[CompletionChoice] = Field(description="n per prompt, in index order")
    usage: CompletionUsage | None = Field(None, description="characters read and generated")


class Validation(BaseModel):
    loss: float | None = Field(description="validation loss, nats per character")
    bpc: float | None = Field(None, description="the same in bits per character")
    protocol: str = Field(description="how it was measured: stateful (model.evaluate, the whole split read in one "
                          "pass) or training (the trainer's own periodic evaluation)")
    split: str | None = Field(None, description="which characters were scored")


class ModelCard(BaseModel):
    id: str = Field(description="the model's name (NAME of NAME.safetensors + NAME.json in the models directory)")
    object: Literal["model"] = Field("model", description="always model")
    created: int = Field(description="Unix time the weights were written")
    owned_by: str = Field(description="always charrnn")
    default: bool = Field(description="the model a request without `model` gets")
    vocab_size: int = Field(description="characters the model knows")
    vocab: list[str] = Field(description="the characters; a character's index is its logit_bias key")
    cell: str | None = Field(description="lstm, gru or rnn")
    layers: int | None = Field(description="recurrent layers")
    hidden: int | None = Field(description="units per layer")
    embed: int | None = Field(description="embedding width")
    parameters: int | None = Field(description="trainable parameters")
    validation: Validation | None = Field(description="the card's validation figure and its protocol")
    max_context: int | None = Field(description="prompts are read from their last N characters (null: all)")
    max_tokens: int = Field(description="the largest max_tokens")
    sha256: str | None = Field(description="sha256 of the weights file served (or, not loaded, on disk)")
    loaded: bool = Field(description="in memory now (else it loads on first use)")
    precision: str | None = Field(description="inference precision, when loaded")
    reload_pending: bool = Field(description="newer files are on disk; the next request loads them")
    unknown: str | None = Field(None, description="the symbol that stands for the characters left out of the "
                                "vocabulary (a model trained with max_vocab); it is read in prompts, never generated")
    fine_tune: dict | None = Field(None, description="a fine-tuned model's provenance: job, base and its sha256, "
                                   "training file and data sha256, both training commands, validation figures")
    error: str | None = Field(description="why the last load of these files failed (an older version may still "
                              "serve); null when it did not")


class ModelList(BaseModel):
    object: Literal["list"] = Field("list", description="always list")
    data: list[ModelCard] = Field(description="every model of the models directory")


class OpenAIErrorBody(BaseModel):
    message: str = Field(description="what went wrong, for a person")
    type: str = Field(description="invalid_request_error, rate_limit_error, server_error, ...")
    param: str | None = Field(description="the request field at fault, if one is")
    code: str | None = Field(description="a machine-readable reason: model_not_found, queue_full, ...")


class OpenAIError(BaseModel):
    error: OpenAIErrorBody = Field(description="OpenAI's error shape")


class CompletionChunk(BaseModel):
    """One streamed event: more text of a choice, its end (finish_reason), or the usage."""
    model_config = ConfigDict(extra="forbid")  # so each event matches exactly one schema
    id: str = Field(description="the same for every chunk of a response")
    object: Literal["text_completion"] = Field("text_completion", description="always text_completion")
    created: int = Field(description="Unix time")
    model: str = Field(description="the served model's id")
    choices: list[CompletionChoice] = Field(description="one choice's new text, or its finish_reason; empty in "
                                            "the usage chunk")
    usage: CompletionUsage | None = Field(None, description="only in the last chunk, with stream_options.include_usage")


class StreamErrorChunk(BaseModel):
    """The stream ended early; the status (200) was already sent, so this says why (the client raises it)."""
    model_config = ConfigDict(extra="forbid")
    error: OpenAIErrorBody = Field(description="OpenAI's error shape")


def max_prompts(settings) -> int:
    """Prompts per request: prompts x n always fits one batch."""
    return max(1, settings.max_batch // settings.max_n)
