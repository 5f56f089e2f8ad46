"""What the static OpenAPI document cannot know: the limits of this configuration, the models
served and what each accepts (its characters, its shape), the stream's events, and who may call.
complete() fills them in, in create_app's document() (again whenever the models change), so
/openapi.json describes exactly what this server accepts: a generated client, or schemathesis'
positive and negative cases, then meet no surprise.

What depends on the model a request names is built by one helper, per_model(), from each model's
card (nothing is loaded for it): for every served model, these constraints on these properties."""
from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic.json_schema import models_json_schema

from service.core.openai_schemas import CompletionChunk, StreamErrorChunk, max_prompts
from service.core.schemas import StreamError, StreamFinal, StreamText


STREAM_DESCRIPTION = (
    "Server-sent events, each one `data:` line (no event names or ids): a JSON object, one of "
    "StreamText, StreamFinal and StreamError; each completion ends with exactly one StreamFinal or "
    "StreamError, and after the last of them comes `data: [DONE]`.")
NOT_SKIPPED = {"unknown_chars": {"not": {"const": "skip"}}}  # the native endpoints' escape from the vocabulary


@dataclass(frozen=True)
class Served:
    """What the document needs of one served model, read from its card."""
    chars: tuple[str, ...]
    cell: str
    layers: int
    hidden: int
    unknown: str | None = None  # trained with --max-vocab: every other character reads as this one (never generated)

    @classmethod
    def from_card(cls, card: dict | None) -> Served | None:
        """None when the card cannot say (unreadable: such a model answers 503 until its files are fixed)."""
        from model.config import ModelConfig

        try:
            cfg = ModelConfig.from_dict({**card["config"], "vocab_size": len(card["vocab"])})
            unknown = card.get("unknown") if card.get("unknown") in card["vocab"] else None
            return cls(tuple(card["vocab"]), cfg.cell, cfg.layers, cfg.hidden, unknown)
        except Exception:
            return None


def _char_class(chars) -> str:
    # \uXXXX escapes mean the same in ECMA-262 (JSON Schema's regex dialect) and in Python's re.
    return "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in chars)


def _text(m: Served) -> dict:
    """A text the model reads: of its characters, unless it has an unknown symbol (then any)."""
    return {} if m.unknown else {"pattern": f"^[{_char_class(m.chars)}]*$"}


def _bans_all(size: int, unknown_key: str | None) -> dict:
    """A logit_bias that bans every character is refused: this, to `not`. Its keys being the vocabulary's
    (propertyNames), `size` keys (as many as characters) are all of them, each at -100 bans them all. The
    unknown symbol (its key: `unknown_key`) is banned anyway, so with one, all the other keys at -100
    are enough. (Spelled with `required` and a `properties` per key, the rule is beyond schemathesis'
    generator.)"""
    each = {"maximum": -100}
    if unknown_key is None:
        return {"type": "object", "minProperties": size, "additionalProperties": each}
    return {"type": "object", "anyOf": [  # (additionalProperties: the keys its `properties` does not name)
        {"properties": {unknown_key: False}, "minProperties": size - 1, "additionalProperties": each},
        {"properties": {unknown_key: True}, "required": [unknown_key], "minProperties": size,
         "additionalProperties": each}]}


def _prop(schema: dict, name: str) -> dict:
    p = schema["properties"][name]
    for alt in p.get("anyOf", []):  # `int | None`: the limit belongs on the non-null branch
        if alt.get("type") != "null":
            return alt
    return p


# The types a JSON Schema keyword constrains (any other value passes it); the rest constrain every type.
_APPLIES = {"pattern": "string", "maxLength": "string", "minimum": "integer number", "maximum": "integer number",
            "items": "array", "maxItems": "array", "propertyNames": "object", "additionalProperties": "object"}


def _merge(schema: dict, constraints: dict) -> None:
    """`constraints` into a property's schema: each keyword into the alternatives of a type it
    constrains (`items` into their items, recursively), never into the null one."""
    for alt in schema.get("anyOf", [schema]):
        kind = alt.get("type")
        if kind == "null":
            continue
        for k, v in constraints.items():
            if kind is not None and k in _APPLIES and kind not in _APPLIES[k].split():
                continue
            if k == "items" and isinstance(alt.get(k), dict):
                _merge(alt[k], v)
            else:
                alt[k] = v


def per_model(schema: dict, served: dict[str, Served | None], default: str | None, rules, *,
              when: dict | None = None) -> None:
    """What depends on the model a request names, into the request schema `schema`.

    `rules(model)` -> {property: its constraints} for one served model. `model` gets the served ids
    as its enum. The constraints go where they hold: on the properties themselves when every model
    has the same ones (one model served, say), else in one `allOf` entry per set of models sharing
    them: if the request names one of these (for the default model's: or names none, or null) then
    these constraints. `when` ({property: schema}) conditions them further (the text patterns: unless
    unknown_chars is "skip"). `default`: None where `model` is required."""
    names = list(served)
    _merge(schema["properties"]["model"], {"enum": names})
    groups: dict[str, tuple[dict, list[str]]] = {}
    for name, model in served.items():
        c = {p: v for p, v in rules(model).items() if v} if model is not None else {}
        if c:  # a model with none (or whose card cannot say) is in no group
            groups.setdefault(json.dumps(c, sort_keys=True), (c, []))[1].append(name)
    for constraints, group in groups.values():
        props, required = dict(when or {}), []
        if group != names:
            ids = group + [None] if default in group else group
            props["model"] = {"const": ids[0]} if len(ids) == 1 else {"enum": ids}
            required = [] if default in group else ["model"]
        if not props:
            for name, c in constraints.items():
                _merge(schema["properties"][name], c)
            continue
        cond = {"properties": props, **({"required": required} if required else {})}
        schema.setdefault("allOf", []).append({"if": cond, "then": {"properties": constraints}})


def _event_schema(refs: dict, description: str) -> dict:
    # Before OpenAPI 3.2's itemSchema, an event stream's `schema` describes one event (as parsed:
    # data, event, id, retry), the convention schemathesis checks every event against.
    return {"type": "object", "required": ["data"], "description": description, "properties": {
        "data": {"anyOf": [{"type": "string", "contentMediaType": "application/json",
                            "contentSchema": {"oneOf": list(refs.values())}}, {"const": "[DONE]"}]}}}


def complete_native(spec: dict, settings, served: dict[str, Served | None], default: str, auth: bool) -> dict:
    schemas = spec["components"]["schemas"]
    for name, text_field in (("PredictRequest", "text"), ("GenerateRequest", "prompt")):
        s = schemas[name]
        _prop(s, text_field)["maxLength"] = settings.max_prompt_chars
        # Characters outside the model's vocabulary are a 422 unless the request says to skip them.
        per_model(s, served, default, lambda m, f=text_field: {f: _text(m)}, when=NOT_SKIPPED)
    _prop(schemas["PredictRequest"], "top_k")["maximum"] = settings.max_top_k
    g = schemas["GenerateRequest"]
    for field, limit in (("max_new_chars", settings.max_new_chars), ("n", settings.max_n),
                         ("top_k", settings.max_top_k)):
        _prop(g, field)["maximum"] = limit
    stop = _prop(g, "stop")
    stop["maxItems"] = settings.max_stop
    stop["items"] = {"type": "string", "minLength": 1, "maxLength": settings.max_stop_chars}
    # logit_bias keys: single characters of the model's vocabulary, not all of them banned
    _prop(g, "logit_bias")["additionalProperties"] = {"type": "number", "minimum": -100, "maximum": 100}
    per_model(g, served, default, lambda m: {"logit_bias": {"propertyNames": {"pattern": f"^[{_char_class(m.chars)}]$"},
                                                            "not": _bans_all(len(m.chars), m.unknown)}})

    refs, defs = models_json_schema([(m, "serialization") for m in (StreamText, StreamFinal, StreamError)],
                                    ref_template="#/components/schemas/{model}")
    schemas.update(defs["$defs"])
    stream = spec["paths"]["/generate"]["post"]["responses"]["200"]["content"].get("text/event-stream")
    if stream is not None:
        stream["schema"] = _event_schema(refs, STREAM_DESCRIPTION)

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


def _v1_rules(m: Served) -> dict:
    """/v1/completions per model: prompts of its characters or its indices; logit_bias keys are its indices."""
    last, keys = len(m.chars) - 1, [str(i) for i in range(len(m.chars))]
    unknown = None if m.unknown is None else str(m.chars.index(m.unknown))
    # one schema for every form of prompt: `pattern` holds for strings only, `maximum` for integers only
    return {"prompt": {**_text(m), "items": {**_text(m), "maximum": last, "items": {"maximum": last}}},
            "logit_bias": {"propertyNames": {"pattern": "^(" + "|".join(keys) + ")$"},
                           "not": _bans_all(len(keys), unknown)}}


def complete_openai(spec: dict, settings, served: dict[str, Served | None]) -> dict:
    """What the static document cannot know about /v1: this configuration's limits, the models' ids
    and vocabularies, the stream's events (as complete_native does for /generate)."""
    schemas = spec["components"]["schemas"]
    s = schemas["CompletionRequest"]
    props = s["properties"]
    text = {"type": "string", "maxLength": settings.max_prompt_chars}
    ids = {"type": "integer", "minimum": 0}
    p = _alts(props["prompt"])
    p[("string", None, None)].update(text)
    p[("array", "string", None)].update({"items": dict(text), "minItems": 1, "maxItems": max_prompts(settings)})
    p[("array", "integer", None)].update({"items": dict(ids), "minItems": 1, "maxItems": settings.max_prompt_chars})
    p[("array", "array", "integer")].update({"minItems": 1, "maxItems": max_prompts(settings), "items": {
        "type": "array", "items": dict(ids), "maxItems": settings.max_prompt_chars}})
    _alts(props["max_tokens"])[("integer", None, None)]["maximum"] = settings.max_new_chars
    _alts(props["n"])[("integer", None, None)]["maximum"] = settings.max_n
    stop = {"type": "string", "minLength": 1, "maxLength": settings.max_stop_chars}
    st = _alts(props["stop"])
    st[("string", None, None)].update(stop)
    st[("array", "string", None)].update({"items": dict(stop), "maxItems": min(4, settings.max_stop)})
    _alts(props["logit_bias"])[("object", None, None)]["additionalProperties"] = {
        "type": "number", "minimum": -100, "maximum": 100}
    _alts(props["top_k"])[("integer", None, None)]["maximum"] = settings.max_top_k
    per_model(s, served, None, _v1_rules)

    refs, defs = models_json_schema([(m, "serialization") for m in (CompletionChunk, StreamErrorChunk)],
                                    ref_template="#/components/schemas/{model}")
    schemas.update(defs["$defs"])
    stream = spec["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    stream["schema"] = _event_schema(refs, stream["schema"]["description"])
    return spec


def complete_inspect(spec: dict, settings, served: dict[str, Served | None], default: str) -> dict:
    """/inspect's limits in the document, as complete_native does for the others: they depend on the
    settings and on each model's shape. A model without LSTM gates answers every /inspect with 422
    unsupported_cell, so /inspect's `model` does not list it (and is required when the default is
    such a model); with no LSTM served at all, the document says so (and has no 200)."""
    op = spec["paths"]["/inspect"]["post"]
    others = {n: m.cell for n, m in served.items() if m is not None and m.cell != "lstm"}
    lstm = {n: m for n, m in served.items() if n not in others}
    if not lstm:
        op["description"] = ("No model served has LSTM gates (" + ", ".join(f"{n}: {c}" for n, c in others.items())
                             + "): every request answers 422 unsupported_cell.")
        op["responses"].pop("200", None)
        return spec
    s = spec["components"]["schemas"]["InspectRequest"]
    if others:
        op["description"] = ("Models without LSTM gates answer 422 unsupported_cell and are not among `model`'s "
                             "values: " + ", ".join(f"{n} ({c})" for n, c in others.items()) + ".")
        if default in others:  # a request naming no model would get the default: it must name one
            model = s["properties"]["model"]
            model["anyOf"] = [a for a in model["anyOf"] if a.get("type") != "null"]
            model.pop("default", None)
            s["required"] = [*s.get("required", []), "model"]
    _prop(s, "text")["maxLength"] = settings.max_inspect_chars
    units = _prop(s, "units")
    units.update(maxItems=settings.max_inspect_units, uniqueItems=True)
    units["items"] = {"type": "integer", "minimum": 0}
    _prop(s, "top_units")["maximum"] = settings.max_inspect_units
    s["properties"]["what"]["uniqueItems"] = True
    default = default if default in lstm else None
    per_model(s, lstm, default, lambda m: {"text": _text(m)}, when=NOT_SKIPPED)
    per_model(s, lstm, default, lambda m: {"layer": {"minimum": -m.layers, "maximum": m.layers - 1},
                                           "units": {"items": {"maximum": m.hidden - 1}}})
    return spec


def complete(spec: dict, *, settings, cards: dict[str, dict | None], default: str, auth: bool) -> dict:
    """The whole document for what is served now: the settings' limits, and for each served model
    (id -> its card, None when unreadable) what a request naming it may hold."""
    served = {name: Served.from_card(card) for name, card in cards.items()}
    spec = complete_native(spec, settings, served, default, auth)
    spec = complete_openai(spec, settings, served)
    spec = complete_tuning(spec, settings, served)
    return complete_inspect(spec, settings, served, default)


def complete_tuning(spec: dict, settings, served: dict[str, Served | None]) -> dict:
    """Files and jobs: an upload's size bounds (a character is at most 4 bytes of UTF-8), the bases a job
    may name (the served models and "scratch")."""
    from jobs.plan import SCRATCH

    upload = spec["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    upload["properties"]["file"].update(minLength=settings.min_file_chars, maxLength=settings.max_file_bytes // 4)
    upload["properties"]["file"]["description"] += (
        f" ({settings.min_file_chars} characters at least, at most {settings.max_file_chars} distinct ones, "
        f"{settings.max_file_bytes} bytes at most)")
    job = spec["components"]["schemas"]["JobCreate"]["properties"]["model"]
    job["enum"] = sorted(served) + [SCRATCH]
    return spec
