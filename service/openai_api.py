"""OpenAI-compatible endpoints: GET /v1/models, POST /v1/completions (a character is a token).

Same engine, batching and seeded sampling as /generate: choice j of a prompt uses seed + j, so
a /v1/completions request and the equivalent /generate one give the same text. Every error
under /v1 has OpenAI's shape {"error": {"message", "type", "param", "code"}}, so the official
client raises its own classes (BadRequestError, NotFoundError, RateLimitError, ...) and its
retry on 429 follows our Retry-After.
"""
from __future__ import annotations

import queue
import random
import time
import uuid
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from model.sampling import SamplingParams
from service.api import _ctx, _drain, _engine_error, _events, _parse, _submit, sse, sse_response
from service.engine import Event
from service.errors import APIError, log
from service.features import FeatureError, banned, check_bans, floor, regex_compiler
from service.openai_schemas import CompletionRequest, max_prompts, served_id

bp = Blueprint("openai", __name__, url_prefix="/v1")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error",
         504: "server_error"}


def openai_error(status: int, message: str, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict | None = None) -> Response:
    """An error response in OpenAI's shape; for every /v1 error, ours and other layers' (auth)."""
    resp = jsonify({"error": {"message": message, "type": type or TYPES.get(status, "server_error"),
                              "param": param, "code": code}})
    resp.status_code = status
    resp.headers.update(headers or {})
    return resp


@bp.errorhandler(APIError)
def _api_error(e: APIError):
    field = e.details[0].get("field") if e.details and isinstance(e.details[0], dict) else None
    status = 400 if e.status == 422 else e.status  # OpenAI answers every bad request with 400
    return openai_error(status, e.message, None, field, e.type, e.headers)


@bp.errorhandler(ValidationError)
def _validation(e: ValidationError):
    errs = e.errors(include_url=False, include_context=False, include_input=False)
    param = ".".join(str(p) for p in errs[0]["loc"]).encode("utf-8", "replace").decode() or None
    msg = "; ".join(f"{'.'.join(str(p) for p in x['loc']) or 'body'}: {x['msg'].removeprefix('Value error, ')}"
                    for x in errs)
    return openai_error(400, msg.encode("utf-8", "replace").decode(), None, param, errs[0]["type"])


@bp.errorhandler(HTTPException)
def _http(e: HTTPException):
    headers = {"Allow": ", ".join(e.valid_methods)} if getattr(e, "valid_methods", None) else None
    return openai_error(e.code or 500, e.description or e.name, None, None, None, headers)


@bp.errorhandler(Exception)
def _unexpected(e: Exception):
    log.exception("unhandled error")  # the traceback stays in the server log
    return openai_error(500, "internal server error", code="internal_error")


def model_id() -> str:
    return served_id(_ctx().settings)


def _card() -> dict:
    ctx = _ctx()
    weights = Path(ctx.settings.weights).with_suffix(".safetensors")
    created = int(weights.stat().st_mtime) if weights.exists() else 0
    return {"id": model_id(), "object": "model", "created": created, "owned_by": "charrnn",
            "vocab_size": len(ctx.vocab), "vocab": list(ctx.vocab.chars),
            "max_context": getattr(ctx.settings, "max_context", 0) or None, "max_tokens": ctx.settings.max_new_chars}


@bp.get("/models")
def models():
    return jsonify({"object": "list", "data": [_card()]})


@bp.get("/models/<path:model>")
def model(model: str):
    if model != model_id():
        raise APIError(404, "model_not_found", f"the model '{model}' does not exist; this server serves "
                       f"'{model_id()}'", [{"field": "model"}])
    return jsonify(_card())


def _bad(param: str, message: str) -> APIError:
    return APIError(400, "invalid_value", message, [{"field": param}])


def _prompts(req: CompletionRequest) -> list[tuple[str, list[int]]]:
    """-> (text, ids) per prompt; a list of ints is one prompt of vocabulary indices."""
    vocab = _ctx().vocab
    p = req.prompt if req.prompt is not None else ""
    items = [p] if isinstance(p, str) or (p and isinstance(p[0], int)) else p
    out = []
    for item in items:
        if isinstance(item, str):
            unknown = vocab.unknown(item)
            if unknown:
                raise _bad("prompt", f"the prompt has characters outside the model's vocabulary: {unknown[:20]}")
            out.append((item, vocab.encode(item).tolist()))
        else:
            if any(not 0 <= i < len(vocab) for i in item):
                raise _bad("prompt", f"vocabulary indices are 0..{len(vocab) - 1} (GET /v1/models)")
            out.append((vocab.decode(item), list(item)))
    return out


def _params(req: CompletionRequest) -> SamplingParams:
    V = len(_ctx().vocab)
    bias = []
    for k, b in (req.logit_bias or {}).items():
        if int(k) >= V:
            raise _bad("logit_bias", f"vocabulary indices are 0..{V - 1} (GET /v1/models), not {k}")
        bias.append((int(k), float(b)))
    try:
        check_bans(_ctx().vocab, tuple(bias))
    except FeatureError as e:
        raise _bad("logit_bias", e.message) from None
    top_k = req.top_k if req.top_k is not None and req.top_k < V else None
    return SamplingParams(temperature=1.0 if req.temperature is None else req.temperature, top_k=top_k,
                          top_p=req.top_p if req.top_p is not None and req.top_p < 1 else None,
                          repetition_penalty=req.repetition_penalty or 1.0,
                          presence_penalty=req.presence_penalty or 0.0, frequency_penalty=req.frequency_penalty or 0.0,
                          logit_bias=tuple(bias))


def _top(vocab, top: list, ch: str, lp: float) -> dict:
    d = {vocab.chars[i]: floor(v) for i, v in top}
    d.setdefault(ch, floor(lp))  # OpenAI: the chosen token is always among them
    return d


def _legacy(vocab, chars: str, entries: list, offset: int) -> dict:
    """OpenAI's legacy logprobs for `chars` (entries: (logprob, top) or None each), offsets from `offset`."""
    return {"tokens": list(chars),
            "token_logprobs": [None if e is None else floor(e[0]) for e in entries],
            "top_logprobs": [None if e is None else _top(vocab, e[1], ch, e[0]) for ch, e in zip(chars, entries)],
            "text_offset": list(range(offset, offset + len(chars)))}


def _prompt_entries(prompt: str, scored: list) -> list:
    """Align the context's scores with the prompt (a long prompt may be read from its tail only;
    an empty one reads as a newline); the first character always has none."""
    if not prompt:
        return []
    entries = ([None] * len(prompt) + scored)[-len(prompt):]
    return [None] + entries[1:]


class _Choice:
    def __init__(self, prompt: str):
        self.prompt, self.text, self.lps, self.scored, self.reason, self.started = prompt, "", [], [], None, False


@bp.post("/completions")
def completions():
    req = _parse(CompletionRequest)
    ctx = _ctx()
    if req.model != model_id():
        raise APIError(404, "model_not_found", f"the model '{req.model}' does not exist; this server serves "
                       f"'{model_id()}'", [{"field": "model"}])
    prompts, n = _prompts(req), req.n or 1
    if len(prompts) > max_prompts(ctx.settings):  # so that prompts x n always fits one batch
        raise _bad("prompt", f"at most {max_prompts(ctx.settings)} prompts per request (max_batch / max_n)")
    params = _params(req)
    try:
        constraint = (None if req.regex is None
                      else regex_compiler(current_app).compile(req.regex, banned(params.logit_bias)))
    except FeatureError as e:
        raise _bad("regex", e.message) from None
    seed = req.seed if req.seed is not None else random.SystemRandom().randrange(2**31)
    deadline = time.monotonic() + ctx.settings.request_timeout_s
    events, stream, echo = queue.Queue(), bool(req.stream), bool(req.echo)
    score = req.logprobs if echo and req.logprobs is not None else None
    seqs = [ctx.engine.new_sequence(ids, params=params, seed=seed + j,
                                    max_new=req.max_tokens if req.max_tokens is not None else 16,
                                    stops=req.stops(), deadline=deadline, events=events, index=p * n + j,
                                    stream=stream, logprobs=req.logprobs, score_prompt=score, constraint=constraint)
            for p, (_, ids) in enumerate(prompts) for j in range(n)]
    _submit(seqs)
    ctx.metrics.prompt_chars.inc(sum(len(ids) for _, ids in prompts))
    choices = [_Choice(text) for text, _ in prompts for _ in range(n)]
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model_id()}
    usage = lambda: {"prompt_tokens": sum(len(t) for t, _ in prompts),  # noqa: E731
                     "completion_tokens": sum(len(c.text) for c in choices),
                     "total_tokens": sum(len(t) for t, _ in prompts) + sum(len(c.text) for c in choices)}
    if stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        return _stream(seqs, choices, events, deadline, head, req, usage if include else None, seed)
    try:
        for i, kind, value in _events(events, deadline):
            c = choices[i] if i is not None else None
            if kind == Event.TEXT:
                c.text += value
            elif kind == Event.LOGPROBS:
                c.lps += value
            elif kind == Event.PROMPT_LOGPROBS:
                c.scored += value
            elif kind in (Event.DONE, Event.LOGITS):  # logits: max_tokens 0, nothing generated
                c.reason = value if kind == Event.DONE else "length"
                if all(x.reason for x in choices):
                    break
            else:
                raise _engine_error(kind, value)
    finally:
        for s in seqs:
            s.cancel()
    out = []
    for i, c in enumerate(choices):
        lp = None
        if req.logprobs is not None:
            lp = _legacy(ctx.vocab, c.text, c.lps, len(c.prompt) if echo else 0)
            if echo:
                pre = _legacy(ctx.vocab, c.prompt, _prompt_entries(c.prompt, c.scored), 0)
                lp = {k: pre[k] + lp[k] for k in lp}
        out.append({"text": (c.prompt if echo else "") + c.text, "index": i, "logprobs": lp, "finish_reason": c.reason})
    resp = jsonify({**head, "choices": out, "usage": usage()})
    resp.headers["X-Seed"] = str(seed)
    return resp


def _stream(seqs, choices, events, deadline, head, req, usage, seed):
    ctx, t0, echo, want = _ctx(), time.monotonic(), bool(req.echo), req.logprobs is not None

    def chunk(i, text, lp, reason):
        return sse({**head, "choices": [{"text": text, "index": i, "logprobs": lp, "finish_reason": reason}]})

    def body():
        open_, pending, first, out = set(range(len(seqs))), {}, True, []
        try:
            for ev in _events(events, deadline):
                out = []
                for i, kind, value in _drain(events, ev):
                    c = choices[i] if i is not None else None
                    if kind == Event.PROMPT_LOGPROBS:
                        c.scored += value
                        continue
                    if kind == Event.LOGPROBS:  # those of the text event that follows
                        pending[i] = value
                        continue
                    if c is not None and echo and not c.started:  # the prompt first, once scored
                        lp = _legacy(ctx.vocab, c.prompt, _prompt_entries(c.prompt, c.scored), 0) if want else None
                        out.append(chunk(i, c.prompt, lp, None))
                    if c is not None:
                        c.started = True
                    if kind == Event.TEXT:
                        if first:
                            ctx.metrics.ttfc.observe(time.monotonic() - t0)
                            first = False
                        offset = (len(c.prompt) if echo else 0) + len(c.text)
                        lp = _legacy(ctx.vocab, value, pending.pop(i, []), offset) if want else None
                        c.text += value
                        out.append(chunk(i, value, lp, None))
                    elif kind in (Event.DONE, Event.LOGITS):
                        out.append(chunk(i, "", None, value if kind == Event.DONE else "length"))
                        open_.discard(i)
                    else:  # the status line is gone: the error travels as an event the client raises
                        e = _engine_error(kind, value)
                        out.append(sse({"error": {"message": e.message, "type": "server_error", "param": None,
                                                  "code": e.type}}))
                        open_.clear()
                        break
                if not open_:
                    if usage is not None:
                        out.append(sse({**head, "choices": [], "usage": usage()}))
                    yield "".join(out + [sse("[DONE]")])
                    break
                yield "".join(out)
        finally:  # also when the client disconnects: free the engine slots
            for s in seqs:
                s.cancel()
            ctx.metrics.latency.labels("/v1/completions").observe(time.monotonic() - t0)

    return sse_response(body(), seed)
