"""What the static OpenAPI document cannot know: the limits of this configuration and the
model's vocabulary, the stream's events, and who may call. complete() fills them in once, in
create_app, so /openapi.json describes exactly what this server accepts (a generated client, or
schemathesis' positive and negative cases, then meet no surprise)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema


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
    type: str = Field(description="timeout, engine_error (e.g. the server is shutting down), ...")
    message: str = Field(description="what went wrong, for people")


class StreamError(BaseModel):
    """Completion `index` ended early; the HTTP status (200) was already sent, so this says why."""
    model_config = ConfigDict(extra="forbid")  # so each event matches exactly one schema
    index: int = Field(description="which completion (0 .. n-1) ended early")
    error: StreamErrorBody = Field(description="why it ended")


STREAM_DESCRIPTION = (
    "Server-sent events, each one `data:` line (no event names or ids): a JSON object, one of "
    "StreamText, StreamFinal and StreamError; each completion ends with exactly one StreamFinal or "
    "StreamError, and after the last of them comes `data: [DONE]`.")


def _char_class(chars) -> str:
    # \uXXXX escapes mean the same in ECMA-262 (JSON Schema's regex dialect) and in Python's re.
    return "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in chars)


def _prop(schema: dict, name: str) -> dict:
    p = schema["properties"][name]
    for alt in p.get("anyOf", []):  # `int | None`: the limit belongs on the non-null branch
        if alt.get("type") != "null":
            return alt
    return p


def complete(spec: dict, settings, vocab, auth: bool) -> dict:
    schemas = spec["components"]["schemas"]
    known = f"^[{_char_class(vocab.chars)}]*$"
    for name, text_field in (("PredictRequest", "text"), ("GenerateRequest", "prompt")):
        s = schemas[name]
        _prop(s, text_field)["maxLength"] = settings.max_prompt_chars
        # Characters outside the vocabulary are a 422 unless the request says to skip them.
        s["if"] = {"properties": {"unknown_chars": {"const": "skip"}}, "required": ["unknown_chars"]}
        s["then"] = {}
        s["else"] = {"properties": {text_field: {"pattern": known}}}
    _prop(schemas["PredictRequest"], "top_k")["maximum"] = settings.max_top_k
    g = schemas["GenerateRequest"]
    for field, limit in (("max_new_chars", settings.max_new_chars), ("n", settings.max_n),
                         ("top_k", settings.max_top_k)):
        _prop(g, field)["maximum"] = limit
    stop = _prop(g, "stop")
    stop["maxItems"] = settings.max_stop
    stop["items"] = {"type": "string", "minLength": 1, "maxLength": settings.max_stop_chars}
    if "logit_bias" in g["properties"]:  # keys: single characters of the vocabulary
        _prop(g, "logit_bias")["propertyNames"] = {"pattern": f"^[{_char_class(vocab.chars)}]$"}
        _prop(g, "logit_bias")["additionalProperties"] = {"type": "number", "minimum": -100, "maximum": 100}

    refs, defs = models_json_schema([(m, "serialization") for m in (StreamText, StreamFinal, StreamError)],
                                    ref_template="#/components/schemas/{model}")
    schemas.update(defs["$defs"])
    stream = spec["paths"]["/generate"]["post"]["responses"]["200"]["content"].get("text/event-stream")
    if stream is not None:
        # Before OpenAPI 3.2's itemSchema, an event stream's `schema` describes one event (as
        # parsed: data, event, id, retry), the convention schemathesis checks every event against.
        stream["schema"] = {"type": "object", "required": ["data"], "description": STREAM_DESCRIPTION, "properties": {
            "data": {"anyOf": [{"type": "string", "contentMediaType": "application/json",
                                "contentSchema": {"oneOf": list(refs.values())}},
                               {"const": "[DONE]"}]}}}

    if auth:  # every operation but the probes needs the key
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                            "description": "CHARRNN_API_KEY"}}
        unauthorized = {"description": "missing or wrong API key", "headers": {
            "WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for path, ops in spec["paths"].items():
            if path in ("/health", "/ready") or (path == "/metrics" and settings.metrics_public):
                continue
            for op in ops.values():
                op["security"] = [{"bearer": []}]
                op["responses"].setdefault("401", unauthorized)
    return spec
