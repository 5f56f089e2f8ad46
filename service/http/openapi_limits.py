"""What the static OpenAPI document cannot know: the limits of this configuration and the
model's vocabulary, the stream's events, and who may call. complete() fills them in once, in
create_app, so /openapi.json describes exactly what this server accepts (a generated client, or
schemathesis' positive and negative cases, then meet no surprise)."""
from __future__ import annotations

from pydantic.json_schema import models_json_schema

from service.core.openai_schemas import CompletionChunk, StreamErrorChunk, max_prompts
from service.core.schemas import StreamError, StreamFinal, StreamText


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


def complete_native(spec: dict, settings, vocab, auth: bool) -> dict:
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


def _alts(schema: dict) -> dict:
    return {(a.get("type"), a.get("items", {}).get("type"), a.get("items", {}).get("items", {}).get("type")): a
            for a in schema.get("anyOf", [schema])}


def complete_openai(spec: dict, settings, vocab, ids: list[str]) -> dict:
    """What the static document cannot know about /v1: this configuration's limits, the model's
    id and vocabulary, the stream's events (as service/openapi_limits.py does for /generate)."""
    schemas = spec["components"]["schemas"]
    props = schemas["CompletionRequest"]["properties"]
    props["model"]["enum"] = ids
    chars = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in vocab.chars)
    text = {"type": "string", "maxLength": settings.max_prompt_chars, "pattern": f"^[{chars}]*$"}
    ids = {"type": "integer", "minimum": 0, "maximum": len(vocab) - 1}
    p = _alts(props["prompt"])
    p[("string", None, None)].update(text)
    p[("array", "string", None)].update({"items": text, "minItems": 1, "maxItems": max_prompts(settings)})
    p[("array", "integer", None)].update({"items": ids, "minItems": 1, "maxItems": settings.max_prompt_chars})
    p[("array", "array", "integer")].update({"minItems": 1, "maxItems": max_prompts(settings), "items": {
        "type": "array", "items": ids, "maxItems": settings.max_prompt_chars}})
    _alts(props["max_tokens"])[("integer", None, None)]["maximum"] = settings.max_new_chars
    _alts(props["n"])[("integer", None, None)]["maximum"] = settings.max_n
    stop = {"type": "string", "minLength": 1, "maxLength": settings.max_stop_chars}
    s = _alts(props["stop"])
    s[("string", None, None)].update(stop)
    s[("array", "string", None)].update({"items": stop, "maxItems": min(4, settings.max_stop)})
    bias = _alts(props["logit_bias"])[("object", None, None)]
    bias["propertyNames"] = {"pattern": "^(" + "|".join(str(i) for i in range(len(vocab))) + ")$"}
    bias["additionalProperties"] = {"type": "number", "minimum": -100, "maximum": 100}
    _alts(props["top_k"])[("integer", None, None)]["maximum"] = settings.max_top_k

    refs, defs = models_json_schema([(m, "serialization") for m in (CompletionChunk, StreamErrorChunk)],
                                    ref_template="#/components/schemas/{model}")
    schemas.update(defs["$defs"])
    stream = spec["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    # One event as parsed (data, event, id, retry): the convention service/openapi_limits.py explains.
    stream["schema"] = {"type": "object", "required": ["data"], "description": stream["schema"]["description"],
                        "properties": {"data": {"anyOf": [
                            {"type": "string", "contentMediaType": "application/json",
                             "contentSchema": {"oneOf": list(refs.values())}}, {"const": "[DONE]"}]}}}
    return spec


def complete_inspect(spec: dict, settings, vocab, model) -> dict:
    """/inspect's limits in the document, as service/openapi_limits.py does for the others: they
    depend on the settings and on the model's shape. A model without LSTM gates answers every
    /inspect with 422 unsupported_cell, and its document says so (no 200)."""
    from model.inspect import cell_of

    if cell_of(model) != "lstm":
        op = spec["paths"]["/inspect"]["post"]
        op["description"] = (f"This model's cell ({cell_of(model)}) has no LSTM gates: every request answers 422 "
                             "unsupported_cell.")
        op["responses"].pop("200", None)
        return spec
    s = spec["components"]["schemas"]["InspectRequest"]
    _prop(s, "text")["maxLength"] = settings.max_inspect_chars
    s["if"] = {"properties": {"unknown_chars": {"const": "skip"}}, "required": ["unknown_chars"]}
    s["then"] = {}
    s["else"] = {"properties": {"text": {"pattern": f"^[{_char_class(vocab.chars)}]*$"}}}
    layers, hidden = model.cfg.layers, model.cfg.hidden
    _prop(s, "layer").update(minimum=-layers, maximum=layers - 1)
    units = _prop(s, "units")
    units.update(maxItems=settings.max_inspect_units, uniqueItems=True)
    units["items"] = {"type": "integer", "minimum": 0, "maximum": hidden - 1}
    _prop(s, "top_units")["maximum"] = settings.max_inspect_units
    s["properties"]["what"]["uniqueItems"] = True
    return spec


def complete(spec: dict, *, settings, lane, ids: list[str], auth: bool) -> dict:
    """The whole document for what is served now: the settings' limits, the models' ids, and the
    default model's vocabulary and shape."""
    spec = complete_native(spec, settings, lane.vocab, auth)
    spec = complete_openai(spec, settings, lane.vocab, ids)
    return complete_inspect(spec, settings, lane.vocab, lane.model)
