"""The OpenAI-compatible API: GET /v1/models, GET /v1/models/{id}, POST /v1/completions (a character
is a token). Same completion layer as /generate: choice j of a prompt uses seed + j, so a
/v1/completions request and the equivalent /generate one give the same text. Errors take OpenAI's
shape in service/http/errors.py (the path decides)."""
from __future__ import annotations

import time
import uuid

from flask import jsonify

from service.core.completion import Run, failure
from service.core.errors import invalid
from service.core.features import floor
from service.core.openai_schemas import (CompletionChoice, CompletionChunk, CompletionRequest, CompletionResponse,
                                         CompletionUsage, LegacyLogprobs, ModelCard, ModelList, OpenAIErrorBody,
                                         StreamErrorChunk, max_prompts)
from service.engine import Failed, Finished, Logits, PromptScores, Text
from service.http.common import ctx, parse, sse, sse_response, start


def model_card(name: str) -> ModelCard:
    """What /v1/models says of one model: its card's facts, the registry's state (loaded or not, the
    sha256 of the weights served, a failed reload's error), the context window really read."""
    from service.core.registry import context_window

    c = ctx()
    d = c.registry.describe(name)
    e, lane = d["entry"], d["lane"]
    card = e.card or {}
    cfg, ev, tr = card.get("config", {}), card.get("evaluation", {}), card.get("training", {})
    stateful = ev.get("stateful") or {}
    val = ({"loss": stateful.get("loss"), "bpc": stateful.get("bpc"), "protocol": stateful.get("protocol", "stateful"),
            "split": stateful.get("split")} if "loss" in stateful else
           {"loss": tr.get("best_val_loss"), "bpc": tr.get("best_val_bpc"), "protocol": "training",
            "split": (tr.get("split") or {}).get("val")} if tr.get("best_val_loss") is not None else None)
    window = lane.max_context if lane is not None else context_window(c.settings, card) if card else 0
    return ModelCard(id=name, created=e.created, owned_by="charrnn", default=name == c.registry.default,
                     vocab_size=len(card.get("vocab", [])), vocab=list(card.get("vocab", [])), cell=cfg.get("cell"),
                     layers=cfg.get("layers"), hidden=cfg.get("hidden"), embed=cfg.get("embed"),
                     parameters=card.get("parameters"), validation=val, max_context=window or None,
                     max_tokens=c.settings.max_new_chars, sha256=e.sha256, loaded=lane is not None,
                     precision=lane.model.precision if lane is not None else None, reload_pending=d["pending_reload"],
                     unknown=card.get("unknown"), fine_tune=card.get("fine_tune"), error=e.error)


def models():
    names = ctx().registry.names()
    return jsonify(ModelList(data=[model_card(n) for n in names]).model_dump())


def model(model: str):
    return jsonify(model_card(model).model_dump())


def _legacy(vocab, chars: str, entries: list, offset: int) -> dict:
    """OpenAI's legacy logprobs for `chars` (entries: (logprob, top) or None each), offsets from `offset`."""
    def top(t, ch, lp):
        d = {vocab.chars[i]: floor(v) for i, v in t}
        d.setdefault(ch, floor(lp))  # OpenAI: the chosen token is always among them
        return d
    return LegacyLogprobs(tokens=list(chars), token_logprobs=[None if e is None else floor(e[0]) for e in entries],
                          top_logprobs=[None if e is None else top(e[1], ch, e[0]) for ch, e in zip(chars, entries)],
                          text_offset=list(range(offset, offset + len(chars)))).model_dump()


def _prompt_entries(prompt: str, scored: list) -> list:
    """Align the context's scores with the prompt (a long prompt may be read from its tail only;
    an empty one reads as a newline); the first character always has none."""
    if not prompt:
        return []
    entries = ([None] * len(prompt) + scored)[-len(prompt):]
    return [None] + entries[1:]


def completions():
    req = parse(CompletionRequest)
    c = ctx()
    if isinstance(req.prompt, list) and req.prompt and not isinstance(req.prompt[0], int) \
            and len(req.prompt) > max_prompts(c.settings):  # so that prompts x n always fits one batch
        raise invalid("prompt", f"at most {max_prompts(c.settings)} prompts per request (max_batch / max_n)", 400)
    lane, spec, run = start(req, req.model)
    c.metrics.prompt_chars.labels(lane.name).inc(sum(len(p.ids) for p in spec.prompts))
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": lane.name}
    echo, want = bool(req.echo), req.logprobs is not None

    def usage():
        prompt = sum(len(p.text) for p in spec.prompts)
        done = sum(len(ch.text) for ch in run.choices)
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)

    if spec.stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        return sse_response(_stream(run, head, echo, want, usage if include else None), spec.seed)
    out = []
    for i, ch in enumerate(run.collect()):
        lp = None
        if want:
            lp = _legacy(lane.vocab, ch.text, ch.lps, len(ch.prompt.text) if echo else 0)
            if echo:
                pre = _legacy(lane.vocab, ch.prompt.text, _prompt_entries(ch.prompt.text, ch.scored), 0)
                lp = {k: pre[k] + lp[k] for k in lp}
        out.append(CompletionChoice(text=(ch.prompt.text if echo else "") + ch.text, index=i, logprobs=lp,
                                    finish_reason=ch.reason))
    resp = jsonify(CompletionResponse(**head, choices=out, usage=usage()).model_dump())
    resp.headers["X-Seed"] = str(spec.seed)
    return resp


def _stream(run: Run, head: dict, echo: bool, want: bool, usage):
    c, lane, t0 = ctx(), run.spec.lane, time.monotonic()
    vocab = lane.vocab

    def chunk(i, text, lp, reason):
        return sse(CompletionChunk(**head, choices=[CompletionChoice(text=text, index=i, logprobs=lp,
                                                                     finish_reason=reason)]).model_dump())

    open_, started, first = set(range(len(run.seqs))), set(), True
    try:
        for events in run:
            out = []
            for ev in events:
                if isinstance(ev, Failed):  # the status line is gone: the error travels as an event the client raises
                    e = failure(ev)
                    body = OpenAIErrorBody(message=e.message, type="server_error", param=None, code=e.type)
                    out.append(sse(StreamErrorChunk(error=body).model_dump()))
                    open_.clear()
                    break
                ch = run.apply(ev)
                if isinstance(ev, PromptScores):
                    continue
                if echo and ev.index not in started:  # the prompt first, once scored
                    lp = _legacy(vocab, ch.prompt.text, _prompt_entries(ch.prompt.text, ch.scored), 0) if want else None
                    out.append(chunk(ev.index, ch.prompt.text, lp, None))
                started.add(ev.index)
                if isinstance(ev, Text):
                    if first:
                        c.metrics.ttfc.labels(lane.name).observe(time.monotonic() - t0)
                        first = False
                    offset = (len(ch.prompt.text) if echo else 0) + len(ch.text) - len(ev.text)
                    lp = _legacy(vocab, ev.text, ev.logprobs or [], offset) if want else None
                    out.append(chunk(ev.index, ev.text, lp, None))
                elif isinstance(ev, (Finished, Logits)):
                    out.append(chunk(ev.index, "", None, ev.reason if isinstance(ev, Finished) else "length"))
                    open_.discard(ev.index)
            if not open_:
                if usage is not None:
                    out.append(sse(CompletionChunk(**head, choices=[], usage=usage()).model_dump()))
                yield "".join(out + [sse("[DONE]")])
                break
            yield "".join(out)
    finally:  # also when the client disconnects: free the engine slots
        run.cancel()
        c.metrics.latency.labels("/v1/completions", lane.name).observe(time.monotonic() - t0)
