"""The native API: /predict-next, /generate (JSON or server-sent events), and the probes and
facts (/health, /ready, /info, /metrics). Thin: a request becomes a completion spec
(service/core/completion.py); these views only format its results."""
from __future__ import annotations

import json
import math
import time

import torch
from flask import Response, jsonify

from model.sampling import top_logprobs
from service.core.completion import Run, failure
from service.core.errors import APIError
from service.core.features import char_logprobs
from service.core.schemas import (Completion, GenerateRequest, GenerateResponse, PredictRequest, PredictResponse,
                                  StreamError, StreamFinal, StreamText, Usage)
from service.engine import Failed, Finished, Text
from service.http.common import ctx, lane_for, parse, sse, sse_response, start


def predict_next():
    req = parse(PredictRequest)
    c = ctx()
    lane, spec, run = start(req, req.model)
    logits = run.collect()[0].logits
    vocab = lane.vocab
    preds = [{"char": vocab.chars[i], "prob": math.exp(lp), "logprob": lp}
             for i, lp in top_logprobs(logits, req.temperature, req.top_k) if lp > -math.inf]
    c.metrics.prompt_chars.labels(lane.name).inc(len(spec.prompts[0].ids))
    return jsonify(PredictResponse(model=lane.name, text=vocab.decode(spec.prompts[0].ids),
                                   predictions=preds).model_dump())


def generate():
    req = parse(GenerateRequest)
    c = ctx()
    lane, spec, run = start(req, req.model)
    c.metrics.prompt_chars.labels(lane.name).inc(len(spec.prompts[0].ids))
    if spec.stream:
        return sse_response(_stream(run, time.monotonic()), spec.seed)
    choices = run.collect()  # a plain answer gets its text in one piece: no time-to-first-char here
    comps = [Completion(text=ch.text, finish_reason=ch.reason, generated_chars=len(ch.text),
                        logprobs=None if spec.logprobs is None else char_logprobs(lane.vocab, ch.text, ch.lps))
             for ch in choices]
    usage = Usage(prompt_chars=len(req.prompt), generated_chars=sum(len(ch.text) for ch in choices))
    return jsonify(GenerateResponse(model=lane.name, completions=comps, seed=spec.seed, usage=usage)
                   .model_dump(exclude_none=True))


def _stream(run: Run, t0: float):
    c, lane = ctx(), run.spec.lane
    open_, first = set(range(len(run.seqs))), True
    try:
        for events in run:
            out = []
            for ev in events:
                if isinstance(ev, Text):
                    if first:
                        c.metrics.ttfc.labels(lane.name).observe(time.monotonic() - t0)
                        first = False
                    lps = None if ev.logprobs is None else char_logprobs(lane.vocab, ev.text, ev.logprobs)
                    run.apply(ev)
                    out.append(sse(StreamText(index=ev.index, text=ev.text, logprobs=lps).model_dump(exclude_none=True)))
                elif isinstance(ev, Finished):
                    out.append(sse(StreamFinal(index=ev.index, finish_reason=ev.reason,
                                               generated_chars=len(run.seqs[ev.index].text)).model_dump()))
                    open_.discard(ev.index)
                elif isinstance(ev, Failed):  # the status line is gone; the error travels as an event
                    e = failure(ev)
                    for j in [ev.index] if ev.index is not None else sorted(open_):
                        out.append(sse(StreamError(index=j, error={"type": e.type, "message": e.message})
                                       .model_dump()))
                        open_.discard(j)
            if not open_:
                yield "".join(out + [sse("[DONE]")])
                break
            yield "".join(out)
    finally:  # also runs when the client disconnects: free the engine slots
        run.cancel()
        c.metrics.latency.labels("/generate", lane.name).observe(time.monotonic() - t0)


def health():
    return jsonify({"status": "ok"})


def ready():
    c = ctx()
    if not c.engine.ready or c.registry.default not in c.registry.loaded():
        raise APIError(503, "not_ready", "the model is not loaded or the engine is not running")
    return jsonify({"status": "ready"})


def info():
    c = ctx()
    reg = c.registry
    lane = lane_for(None)
    entry, m = reg.describe(reg.default)["entry"], lane.model
    card = entry.card or {}
    training = card.get("training", {})
    return jsonify({
        "model": {"id": lane.name, "weights": c.settings.weights, "format": card.get("format"),
                  "vocab_size": len(lane.vocab), "vocab": "".join(lane.vocab.chars), "parameters": m.num_params(),
                  **m.cfg.to_dict(), "dtype": card.get("dtype"), "val_loss": training.get("best_val_loss"),
                  "val_bpc": training.get("best_val_bpc"), "trained_on": training.get("data"),
                  "chars_seen": training.get("chars_seen_total", training.get("chars_seen")),
                  "max_context": lane.max_context},
        "models": {"default": reg.default, "dir": str(reg.dir), "available": reg.names(), "loaded": reg.loaded(),
                   "max_loaded": c.settings.max_loaded},
        "trainer": trainer_state(),
        "device": str(c.device), "precision": m.precision,
        "precision_probe": entry.precision_probe or None,  # us per step, when measured
        "torch": torch.__version__,
        "torch_threads": c.engine.threads or torch.get_num_threads(),  # the engine thread's, not this one's
        "limits": {**c.settings.limits(), "max_context": lane.max_context}})


def trainer_state() -> dict:
    """Whether fine-tuning jobs will run: the trainer's mode, its heartbeat, the jobs waiting and training."""
    c = ctx()
    beat = c.store.dir / "runner.heartbeat"
    try:
        age = time.time() - beat.stat().st_mtime
    except OSError:
        age = None
    jobs = c.store.jobs(("queued", "running"))
    try:  # the trainer's own settings, as it wrote them at its start (it may run elsewhere: compose, k8s)
        own = json.loads(beat.read_text())
    except (OSError, ValueError):
        own = {}
    return {"mode": c.settings.trainer, "alive": age is not None and age < 10,
            "last_seen_s": None if age is None else round(age, 1),
            "max_jobs": own.get("max_jobs", c.settings.max_jobs), "threads": own.get("threads", c.settings.train_threads),
            "nice": own.get("nice", c.settings.train_nice), "sched": own.get("sched", c.settings.train_sched),
            "queued": sum(j["status"] == "queued" for j in jobs),
            "running": sum(j["status"] == "running" for j in jobs)}


def metrics():
    c = ctx()
    return Response(c.metrics.render(c.engine), mimetype="text/plain; version=0.0.4")
