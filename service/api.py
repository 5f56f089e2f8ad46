"""HTTP endpoints. Thin: parse and validate, hand sequences to the engine, shape the answer."""
from __future__ import annotations

import dataclasses
import json
import math
import queue
import random
import time

import torch
from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from model.sampling import SamplingParams, top_logprobs
from service.engine import Event, NotRunning, QueueFull
from service.errors import APIError
from service.features import FeatureError, banned, bias_ids, char_logprobs, check_bans, regex_compiler
from service.schemas import (Completion, GenerateRequest, GenerateResponse, PredictRequest, PredictResponse,
                             Usage)

bp = Blueprint("api", __name__)


def _ctx():
    return current_app.extensions["charrnn"]


def _parse(schema):
    if not request.is_json:
        raise APIError(400, "bad_request", "expected a JSON body with Content-Type: application/json")
    try:  # json.loads, not get_json: its RecursionError on deeply nested input would be a 500
        data = json.loads(request.get_data())
    except RecursionError:
        raise APIError(400, "bad_request", "the body's JSON nests too deeply") from None
    except ValueError:  # malformed, not UTF-8, or an integer of more than 4300 digits
        raise APIError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise APIError(400, "bad_request", "the body must be a JSON object")
    return schema.model_validate(data, context={"settings": _ctx().settings})


def _encode(text: str, field: str, mode: str):
    vocab = _ctx().vocab
    unknown = vocab.unknown(text)
    if unknown and mode == "error":
        raise APIError(422, "unknown_characters", f"{field} has {len(unknown)} character(s) outside the model's "
                       "vocabulary; remove them or send \"unknown_chars\": \"skip\"",
                       [{"field": field, "message": "characters outside the vocabulary", "chars": unknown}])
    return vocab.encode(text, unknown="skip")


def _submit(seqs):
    try:
        _ctx().engine.submit(seqs)
    except QueueFull:
        raise APIError(429, "queue_full", "the server is at capacity; retry shortly", headers={"Retry-After": "1"})
    except NotRunning:
        raise APIError(503, "not_ready", "the engine is not running", headers={"Retry-After": "5"})


def _events(events: queue.Queue, deadline: float):
    """Yield (index, kind, value) until the deadline (plus a grace for the engine to say so)."""
    while True:
        try:
            yield events.get(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        except queue.Empty:
            yield None, Event.TIMEOUT, None


def _drain(events: queue.Queue, first):
    """The first event plus all already waiting, consecutive texts of one completion merged:
    a stream that lags behind the engine catches up in one write, not one per character."""
    out = [first]
    while True:
        try:
            ev = events.get_nowait()
        except queue.Empty:
            return out
        if ev[1] == Event.TEXT and out[-1][1] == Event.TEXT and out[-1][0] == ev[0]:
            out[-1] = (ev[0], Event.TEXT, out[-1][2] + ev[2])
        else:
            out.append(ev)


def _engine_error(kind, value):
    if kind == Event.TIMEOUT:
        return APIError(504, "timeout", f"request not finished within {_ctx().settings.request_timeout_s} s")
    return APIError(503 if kind == Event.SHUTDOWN else 500, "engine_error", value or "internal error")


@bp.post("/predict-next")
def predict_next():
    req = _parse(PredictRequest)
    ids = _encode(req.text, "text", req.unknown_chars)
    ctx, events = _ctx(), queue.Queue()
    deadline = time.monotonic() + ctx.settings.request_timeout_s
    seq = ctx.engine.new_sequence(ids, params=SamplingParams(temperature=1.0), seed=0, max_new=0, stops=[],
                                  deadline=deadline, events=events)
    _submit([seq])
    try:
        for _, kind, value in _events(events, deadline):
            if kind == Event.LOGITS:
                break
            raise _engine_error(kind, value)
    finally:
        seq.cancel()
    preds = [{"char": ctx.vocab.chars[i], "prob": math.exp(lp), "logprob": lp}
             for i, lp in top_logprobs(value, req.temperature, req.top_k) if lp > -math.inf]
    ctx.metrics.prompt_chars.inc(len(ids))
    return jsonify(PredictResponse(text=ctx.vocab.decode(ids), predictions=preds).model_dump())


@bp.post("/generate")
def generate():
    req = _parse(GenerateRequest)
    ids = _encode(req.prompt, "prompt", req.unknown_chars)
    ctx, events = _ctx(), queue.Queue()
    seed = req.seed if req.seed is not None else random.SystemRandom().randrange(2**31)
    deadline = time.monotonic() + ctx.settings.request_timeout_s
    params = req.sampling()
    if params.top_k is not None and params.top_k >= len(ctx.vocab):  # k beyond the vocabulary: all of it
        params = dataclasses.replace(params, top_k=None)
    params, features = _char_features(req.logit_bias, req.regex, params)
    seqs = [ctx.engine.new_sequence(ids, params=params, seed=seed + i, max_new=req.max_new_chars, stops=req.stop,
                                    deadline=deadline, events=events, index=i, stream=req.stream,
                                    logprobs=req.logprobs, **features) for i in range(req.n)]
    _submit(seqs)
    ctx.metrics.prompt_chars.inc(len(ids))
    t0 = time.monotonic()
    if req.stream:
        return _stream(seqs, events, deadline, seed, t0)
    texts, reasons, lps = [""] * req.n, [None] * req.n, [[] for _ in range(req.n)]
    try:
        for i, kind, value in _events(events, deadline):
            if kind == Event.TEXT:  # a plain answer gets its text in one piece: no time-to-first-char here
                texts[i] += value
            elif kind == Event.LOGPROBS:
                lps[i] += value
            elif kind == Event.DONE:
                reasons[i] = value
                if all(reasons):
                    break
            else:
                raise _engine_error(kind, value)
    finally:
        for s in seqs:
            s.cancel()
    comps = [Completion(text=t, finish_reason=r, generated_chars=len(t),
                        logprobs=None if req.logprobs is None else char_logprobs(ctx.vocab, t, lp))
             for t, r, lp in zip(texts, reasons, lps)]
    usage = Usage(prompt_chars=len(req.prompt), generated_chars=sum(len(t) for t in texts))
    return jsonify(GenerateResponse(completions=comps, seed=seed, usage=usage).model_dump(exclude_none=True))


def _char_features(logit_bias: dict[str, float], regex: str | None, params: SamplingParams):
    """Logit bias by character and a regex -> (params with the bias, the Sequence's constraint);
    422 naming the field when a character is unknown, everything is banned or the regex is bad."""
    ctx = _ctx()
    try:
        bias = bias_ids(ctx.vocab, logit_bias)
        check_bans(ctx.vocab, bias)
        constraint = None if regex is None else regex_compiler(current_app).compile(regex, banned(bias))
    except FeatureError as e:
        raise APIError(422, "validation_error", f"invalid request field(s): {e.field}",
                       [{"field": e.field, "message": e.message, "type": "value_error"}]) from None
    return dataclasses.replace(params, logit_bias=bias), {"constraint": constraint}


def sse(obj) -> str:
    """One server-sent event: a JSON object, or a bare string such as [DONE]."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


def sse_response(body, seed: int) -> Response:
    """A text/event-stream answer that proxies pass through unbuffered (X-Accel-Buffering for nginx)."""
    resp = Response(stream_with_context(body), mimetype="text/event-stream")
    resp.headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Seed": str(seed)})
    return resp


def _stream(seqs, events, deadline, seed, t0):
    ctx = _ctx()

    def body():
        open_, first, lps = set(range(len(seqs))), True, {}
        try:
            for ev in _events(events, deadline):
                out = []
                for i, kind, value in _drain(events, ev):
                    if kind == Event.LOGPROBS:  # those of the text event that follows
                        lps[i] = value
                        continue
                    if kind == Event.TEXT:
                        if first:
                            ctx.metrics.ttfc.observe(time.monotonic() - t0)
                            first = False
                        chunk = {"index": i, "text": value}
                        if i in lps:
                            chunk["logprobs"] = char_logprobs(ctx.vocab, value, lps.pop(i))
                        out.append(sse(chunk))
                        continue
                    for j in [i] if i is not None else sorted(open_):
                        if kind == Event.DONE:
                            out.append(sse({"index": j, "text": "", "finish_reason": value,
                                            "generated_chars": len(seqs[j].text)}))
                        else:  # the status line is gone; the error travels as an event
                            e = _engine_error(kind, value)
                            out.append(sse({"index": j, "error": {"type": e.type, "message": e.message}}))
                        open_.discard(j)
                if not open_:
                    yield "".join(out + [sse("[DONE]")])
                    break
                yield "".join(out)
        finally:  # also runs when the client disconnects: free the engine slots
            for s in seqs:
                s.cancel()
            ctx.metrics.latency.labels("/generate").observe(time.monotonic() - t0)

    return sse_response(body(), seed)


@bp.get("/health")
def health():
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    if not _ctx().engine.ready:
        raise APIError(503, "not_ready", "the model is not loaded or the engine is not running")
    return jsonify({"status": "ready"})


@bp.get("/info")
def info():
    ctx = _ctx()
    card, m = ctx.card, ctx.model
    training = card.get("training", {})
    return jsonify({
        "model": {"weights": ctx.settings.weights, "format": card.get("format"), "vocab_size": len(ctx.vocab),
                  "vocab": "".join(ctx.vocab.chars), "parameters": m.num_params(), **m.cfg.to_dict(),
                  "dtype": card.get("dtype"), "val_loss": training.get("best_val_loss"),
                  "val_bpc": training.get("best_val_bpc"), "trained_on": training.get("data"),
                  "chars_seen": training.get("chars_seen_total", training.get("chars_seen"))},
        "device": str(ctx.device), "precision": m.precision,
        "precision_probe": ctx.engine.precision_probe or None,  # us per decode step, when auto measured
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "limits": {**ctx.settings.limits(), "max_context": ctx.engine.max_context}})


@bp.get("/metrics")
def metrics():
    ctx = _ctx()
    return Response(ctx.metrics.render(ctx.engine), mimetype="text/plain; version=0.0.4")
