"""POST /inspect: the LSTM's gates and cell states per character (model/inspect.py), over HTTP.

Where it runs. Not in the engine's decode batch: activations need the whole sequence layer by
layer (model/inspect.py), and a turn spent on them would stall every stream. So the request
thread computes them, with ONE torch thread: torch work with several threads from a second
thread gives it a second OpenMP team, and libgomp, with more workers than cores, then parks the
engine's workers after every parallel region (see create_app and bench/threads.py). The price is
a core: an inspection running back to back shares one with the engine's team.
bench/inspect_cost.py measures the decode step beside /inspect-sized work with one thread and with
the engine's count (docs/inside.md has a run); which costs streams less depends on the machine.

torch.set_num_threads sets this thread's team size but also the default that threads which have
not used torch yet will take, so it is restored afterwards, under a lock: concurrent inspections
cannot interleave their set and restore, and at most one runs at a time (each is CPU-bound: more
would only take cores from the engine).
"""
from __future__ import annotations

import math
import threading
import time

import torch
from flask import jsonify

from model.inspect import UnsupportedCell, activations, cell_spread, top_units
from service.core.completion import inspect_ids
from service.core.errors import APIError, invalid
from service.core.inspect_schemas import DEFAULT_TOP_UNITS, InspectRequest, InspectResponse
from service.http.common import ctx, lane_for, parse
_one_at_a_time = threading.Lock()


def _with_one_thread(fn, deadline: float):
    if not _one_at_a_time.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise APIError(504, "timeout", "another inspection held the server past this request's deadline")
    try:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    finally:
        _one_at_a_time.release()


def inspect():
    req = parse(InspectRequest)
    c, lane = ctx(), lane_for(req.model)
    model = lane.model
    if model.cfg.cell != "lstm":
        raise APIError(422, "unsupported_cell", f"/inspect shows LSTM gates; this model's cell is "
                       f"{model.cfg.cell!r}")
    layers, hidden = model.cfg.layers, model.cfg.hidden
    if req.layer is not None and not -layers <= req.layer < layers:
        raise invalid("layer", f"the model has {layers} layers: 0 .. {layers - 1} (or -{layers} .. -1)")
    layer = range(layers)[-1 if req.layer is None else req.layer]
    if req.units and max(req.units) >= hidden:
        raise invalid("units", f"units are 0 .. {hidden - 1}")
    ids = inspect_ids(req, lane)
    if not ids:  # every character skipped: nothing was read
        return jsonify(InspectResponse(text="", start=0, cell=model.cfg.cell, layer=layer, hidden=hidden,
                                       units=list(req.units or []), top_units=[], chars=[]).model_dump())
    window = lane.max_context  # the window /predict-next and /generate read
    start = len(ids) - window if window and len(ids) > window else 0
    ids = ids[start:]

    def compute():
        with torch.no_grad():
            acts, logp = activations(model, ids)
            acts = acts[layer]
            std = cell_spread(acts["c"])
            k = req.top_units or (0 if req.units else DEFAULT_TOP_UNITS)
            top = top_units(std, k) if k else []
            units = list(req.units or []) + [u for u in top if u not in (req.units or [])]
            idx = torch.tensor(units, dtype=torch.long)
            cols = {w: acts[w][:, idx].tolist() for w in req.what}  # (T, units) each
            return top, std, units, cols, logp.tolist()

    try:
        top, std, units, cols, logp = _with_one_thread(compute, time.monotonic() + c.settings.request_timeout_s)
    except UnsupportedCell as e:
        raise APIError(422, "unsupported_cell", str(e))
    vocab = lane.vocab
    chars = [{"char": vocab.chars[i], "prob": math.exp(lp), "logprob": lp,
              **{w: [round(v, 6) for v in cols[w][t]] for w in req.what}} for t, (i, lp) in enumerate(zip(ids, logp))]
    body = InspectResponse(text=vocab.decode(ids), start=start, cell=model.cfg.cell, layer=layer, hidden=hidden,
                           units=units, top_units=[{"unit": u, "c_std": round(float(std[u]), 6)} for u in top],
                           chars=chars)
    return jsonify(body.model_dump(exclude_none=True))
