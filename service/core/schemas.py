"""Request and response bodies (pydantic). Limits that are settings are checked against the
validation context {"settings": Settings}, so one schema serves any configuration."""
from __future__ import annotations

from typing import Annotated, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class Strict(BaseModel):
    # Unknown fields are an error, not silently ignored; strict: "1" is not a number, "yes" not a bool.
    # allow_inf_nan=False: NaN, Infinity and 1e999 (which JSON parsers read as inf) are errors too.
    # Every request body (here and in openai_schemas) derives from this, so the hygiene is shared.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_floats(cls, v, info: ValidationInfo):
        # JSON Schema's (and so OpenAPI's) "integer" includes 2.0: take it where an int is expected.
        if isinstance(v, float) and v.is_integer() and _wants_int(cls, info.field_name):
            return int(v)
        return v

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, v):
        # JSON's "\ud800" escape decodes to a lone surrogate: not text, and not encodable as UTF-8.
        for s in [v] if isinstance(v, str) else v if isinstance(v, (list, tuple)) else ():
            if isinstance(s, str) and not s.isascii():
                try:
                    s.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("contains a lone UTF-16 surrogate (not valid Unicode text)") from None
        return v


def _wants_int(model: type[BaseModel], name: str) -> bool:
    ann = model.model_fields[name].annotation
    kinds = {get_args(k)[0] if get_origin(k) is Annotated else k for k in (get_args(ann) or (ann,))}
    return int in kinds and float not in kinds


def setting_limit(info: ValidationInfo, name: str):
    s = (info.context or {}).get("settings")
    return getattr(s, name) if s is not None else None


def check_len(v: str, info: ValidationInfo) -> str:
    lim = setting_limit(info, "max_prompt_chars")
    if lim is not None and len(v) > lim:
        raise ValueError(f"is {len(v)} characters; the limit is {lim}")
    return v


# The one rule of a request that JSON Schema cannot state (so the OpenAPI document says it in words).
REGEX_RULE = ("It is compiled over the chosen model's characters, less those logit_bias bans (-100) and its "
              "unknown symbol if it has one (the card's `unknown`, never generated), and refused "
              "(422 on the native API, 400 under /v1) when it is not a valid Python regex, uses a construct the "
              "matcher lacks (anchors such as ^, $, \\A, \\b; backreferences; lookbehinds), has more than 5000 "
              "automaton states or takes over 3 s to compile, or no non-empty text of those characters matches it "
              "in full")


def check_char_bias(v: dict[str, float]) -> dict[str, float]:
    """logit_bias by character (/generate): single characters, biases in [-100, 100]."""
    for ch, b in v.items():
        if len(ch) != 1:
            raise ValueError(f"keys must be single characters, not {ch[:20]!r}")
        if not -100 <= b <= 100:
            raise ValueError(f"the bias of {ch!r} must be in [-100, 100]")
    return v


class PredictRequest(Strict):
    model: str | None = Field(None, description="a served model's id (GET /v1/models); absent = the default model")
    text: str = Field("", description="the context; empty = the start of a text (read as a newline)")
    top_k: int = Field(5, ge=1, description="how many of the most likely next characters to return (at most max_top_k, see /info)")
    temperature: float = Field(1.0, ge=0, description="softmax temperature; 0 puts all mass on the argmax")
    unknown_chars: Literal["error", "skip"] = Field("error", description="characters outside the vocabulary: 422, or drop them")

    _text = field_validator("text")(check_len)

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v, info):
        lim = setting_limit(info, "max_top_k")
        if lim is not None and v > lim:
            raise ValueError(f"must be <= {lim}")
        return v


class Prediction(BaseModel):
    char: str = Field(description="a possible next character")
    prob: float = Field(description="its probability")
    logprob: float = Field(description="its natural log probability")


class PredictResponse(BaseModel):
    model: str = Field(description="the model that answered")
    text: str = Field(description="the context that was read (without skipped characters)")
    predictions: list[Prediction] = Field(description="the top_k most likely next characters, most likely first")


class GenerateRequest(Strict):
    model: str | None = Field(None, description="a served model's id (GET /v1/models); absent = the default model")
    prompt: str = Field("", description="text to continue; empty = the start of a text (read as a newline)")
    max_new_chars: int = Field(200, ge=1, description="characters to generate per completion, at most (limit: max_new_chars in /info)")
    temperature: float = Field(0.8, ge=0, description="softmax temperature; lower is more conservative, 0 = greedy (always the most likely character)")
    top_k: int | None = Field(None, ge=1, description="sample only among the k most likely characters; null = all "
                              "(a k beyond the vocabulary means all too; at most max_top_k, see /info)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling: only the most likely characters whose probabilities add up to top_p; null = all")
    # Bounded: a penalty of 1e-300 is 0 in the float32 the sampler uses, and dividing by it breaks the row.
    repetition_penalty: float = Field(1.0, ge=0.01, le=100, description="> 1 discourages characters of the last 64")
    stop: list[str] = Field(default_factory=list, description="strings that end a completion (not included in it); default none")
    seed: int | None = Field(None, ge=0, lt=2**63, description="random when absent; the answer says which was used")
    n: int = Field(1, ge=1, description="how many completions of the prompt; completion i uses seed + i")
    stream: bool = Field(False, description="answer as text/event-stream, text sent as it is generated")
    unknown_chars: Literal["error", "skip"] = Field("error", description="characters outside the vocabulary: 422, or drop them")
    logprobs: int | None = Field(None, ge=0, le=20, description="per generated character: its log-probability under "
                                 "the model (before temperature, penalties, bias or regex) and the k most likely "
                                 "alternatives; null = off")
    logit_bias: dict[str, float] = Field(default_factory=dict, description='added to a character\'s logit before '
                                         'sampling, in [-100, 100]; -100 bans it. Example: {"a": -100, "\\n": 2.5}')
    regex: str | None = Field(None, min_length=1, max_length=500, description="the completion must match this "
                              "(Python) regex in full: only characters that keep a match reachable are sampled, and "
                              "it finishes (\"stop\") once the text is a match nothing can extend. " + REGEX_RULE)

    _prompt = field_validator("prompt")(check_len)
    _bias = field_validator("logit_bias")(check_char_bias)

    @field_validator("max_new_chars", "n", "top_k")
    @classmethod
    def _max(cls, v, info):
        lim = setting_limit(info, {"max_new_chars": "max_new_chars", "n": "max_n", "top_k": "max_top_k"}[info.field_name])
        if lim is not None and v is not None and v > lim:
            raise ValueError(f"must be <= {lim}")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v, info):
        if any(s == "" for s in v):
            raise ValueError("stop strings must not be empty")
        n, length = setting_limit(info, "max_stop"), setting_limit(info, "max_stop_chars")
        if n is not None and len(v) > n:
            raise ValueError(f"at most {n} stop strings")
        if length is not None and any(len(s) > length for s in v):
            raise ValueError(f"stop strings are at most {length} characters")
        return v


class TopChar(BaseModel):
    char: str = Field(description="a character the model could have produced here")
    logprob: float = Field(description="natural log of its probability under the model")


class CharLogprob(BaseModel):
    char: str = Field(description="the generated character")
    logprob: float = Field(description="natural log of its probability under the model")
    top: list[TopChar] = Field(description="the k most likely characters at this position, most likely first")


class Completion(BaseModel):
    text: str = Field(description="the generated text (without the prompt or a stop string)")
    finish_reason: Literal["length", "stop"] = Field(description="length: max_new_chars reached; stop: a stop string "
                                                     "was generated, or the regex is fully matched")
    generated_chars: int = Field(description="characters in text")
    logprobs: list[CharLogprob] | None = Field(None, description="with \"logprobs\": k, one entry per character of text")


class Usage(BaseModel):
    prompt_chars: int = Field(description="characters in the prompt")
    generated_chars: int = Field(description="characters generated, all completions together")


class GenerateResponse(BaseModel):
    model: str = Field(description="the model that answered")
    completions: list[Completion] = Field(description="n completions, in index order")
    seed: int = Field(description="the seed used (the request's, or a random one): send it back to reproduce the answer")
    usage: Usage = Field(description="characters read and written")


class ErrorBody(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. validation_error, unknown_characters, queue_full")
    message: str = Field(description="what went wrong, for people")
    details: list[dict] = Field([], description="per field: {field, message, ...}; unknown_characters adds chars")


class ErrorResponse(BaseModel):
    error: ErrorBody = Field(description="every error answer has this one key")


class StreamText(BaseModel):
    """More text of completion `index` (consecutive texts of one completion may arrive merged)."""
    model_config = ConfigDict(extra="forbid")  # so each event matches exactly one schema
    index: int = Field(description="which completion (0 .. n-1)")
    text: str = Field(description="the next piece of its text")
    logprobs: list[dict] | None = Field(None, description="with \"logprobs\": k, one entry per character of text, "
                                        "as in a Completion's logprobs")


class StreamFinal(BaseModel):
    """Completion `index` is finished; its last text came before this event."""
    model_config = ConfigDict(extra="forbid")  # so each event matches exactly one schema
    index: int = Field(description="which completion (0 .. n-1)")
    text: Literal[""] = Field("", description="always empty: the text came in the events before")
    finish_reason: Literal["length", "stop"] = Field(description="length: max_new_chars reached; stop: a stop "
                                                     "string was generated, or the regex is fully matched")
    generated_chars: int = Field(description="characters in the whole completion")


class StreamErrorBody(BaseModel):
    type: str = Field(description="timeout, shutting_down, engine_error, ...")
    message: str = Field(description="what went wrong, for people")


class StreamError(BaseModel):
    """Completion `index` ended early; the HTTP status (200) was already sent, so this says why."""
    model_config = ConfigDict(extra="forbid")  # so each event matches exactly one schema
    index: int = Field(description="which completion (0 .. n-1) ended early")
    error: StreamErrorBody = Field(description="why it ended")
