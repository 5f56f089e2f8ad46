"""Bodies of the OpenAI-compatible API (/v1/*), as the official client sends them.

A character is a token here: max_tokens counts characters, logit_bias keys are vocabulary
indices (GET /v1/models lists them), logprobs are per character. The request derives from the
same Strict base as the native API, so the input hygiene is shared; OpenAI's optional fields
also accept null, as its clients may send them.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from service.schemas import Strict, _check_len, _limit


class StreamOptions(Strict):
    include_usage: bool | None = Field(False, description="send a last chunk with the usage (and no choices)")


class CompletionRequest(Strict):
    model: str = Field(description="the served model's id (GET /v1/models)")
    prompt: str | list[str] | list[int] | list[list[int]] | None = Field(
        "", description="a string, a list of strings (each its own group of n choices), or vocabulary indices "
        "(a list, or a list of lists); empty = the start of a text")
    max_tokens: int | None = Field(16, ge=0, description="characters to generate per choice (0 with echo: score the prompt)")
    temperature: float | None = Field(1.0, ge=0, le=2, description="0 = greedy")
    top_p: float | None = Field(1.0, gt=0, le=1)
    n: int | None = Field(1, ge=1, description="choices per prompt; choice j of a prompt uses seed + j")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end a choice (not included)")
    seed: int | None = Field(None, ge=-2**63, lt=2**63, description="random when absent (the X-Seed header says which)")
    logprobs: int | None = Field(None, ge=0, le=5, description="per character: its logprob and the top alternatives")
    echo: bool | None = Field(False, description="prepend the prompt; with logprobs, its characters are scored too")
    presence_penalty: float | None = Field(0.0, ge=-2, le=2)
    frequency_penalty: float | None = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, description="vocabulary index (as a string) -> bias in "
                                                "[-100, 100]; -100 bans the character")
    user: str | None = Field(None, max_length=256, description="accepted, unused")
    best_of: int | None = Field(None, description="not supported (only null or 1)")
    suffix: str | None = Field(None, description="not supported (only null or empty)")
    # Extensions (as vLLM's extra_body): the native API's settings
    top_k: int | None = Field(None, ge=1, description="extension: sample among the k most likely characters")
    repetition_penalty: float | None = Field(None, ge=0.01, le=100, description="extension: as /generate")
    regex: str | None = Field(None, max_length=500, description="extension: the completion must match this regex "
                              "in full (see /generate)")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v, info: ValidationInfo):
        if isinstance(v, list):
            if not v:
                raise ValueError("a list of prompts must not be empty")
            for p in v:
                if isinstance(p, (str, list)):
                    _check_len(p, info)
        elif isinstance(v, str):
            _check_len(v, info)
        return v

    @field_validator("max_tokens", "n")
    @classmethod
    def _max(cls, v, info: ValidationInfo):
        lim = _limit(info, {"max_tokens": "max_new_chars", "n": "max_n"}[info.field_name])
        if lim is not None and v is not None and v > lim:
            raise ValueError(f"must be <= {lim}")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v, info: ValidationInfo):
        stops = [v] if isinstance(v, str) else v or []
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        n, length = min(4, _limit(info, "max_stop") or 4), _limit(info, "max_stop_chars")
        if len(stops) > n:
            raise ValueError(f"at most {n} stop strings")
        if length is not None and any(len(s) > length for s in stops):
            raise ValueError(f"stop strings are at most {length} characters")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        for k, b in (v or {}).items():
            if not (k.isdigit() and k.isascii()):
                raise ValueError(f"keys are vocabulary indices as strings (\"12\"), not {k[:20]!r}")
            if not -100 <= b <= 100:
                raise ValueError(f"the bias of {k} must be in [-100, 100]")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class LegacyLogprobs(BaseModel):
    tokens: list[str] = Field(description="the characters")
    token_logprobs: list[float | None] = Field(description="each character's logprob; null for the first of an echoed prompt")
    top_logprobs: list[dict[str, float] | None] = Field(description="the most likely characters at each position (and the chosen one)")
    text_offset: list[int] = Field(description="each character's offset in the choice's text")


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: LegacyLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    vocab_size: int
    vocab: list[str] = Field(description="the characters; a character's index is its logit_bias key")
    max_context: int | None = Field(description="prompts are read from their last N characters (null: all)")
    max_tokens: int = Field(description="the largest max_tokens")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody
