"""The model registry: every NAME.safetensors + NAME.json of the models directory is model NAME.

- Names are checked against NAME_RE and never reach the file system otherwise; a file is read only
  when it is a regular file inside the directory (no symlink out of it) within its size cap, and
  only through JSON and safetensors (nothing is unpickled).
- A model loads on first use (or at start: Settings.preload); at most max_loaded are in memory, and
  the least recently used one with no work in flight makes room (never the default).
- Hot reload: each lookup compares the files' identity (inode, size, mtime) with the loaded one's. A
  rename over them (model.train writes a temp file and renames it) loads the new pair for that
  request; sequences already running finish on the old lane, which then leaves the engine. A pair
  that fails to load (half-written, corrupt, mismatched) never replaces a working model: the old one
  keeps serving and the error shows on the model's /v1/models entry until the files change again.

The files are read and hashed on the caller's thread (I/O, no torch); the model is built, warmed up
and probed on the engine thread (Engine.call), whose OpenMP team is the process's only one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from model.checkpoint import weights_prefix
from service.core.errors import APIError
from service.engine import Engine, Lane, warm_up

log = logging.getLogger("charrnn.registry")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class LoadError(Exception):
    pass


@dataclass
class Files:
    """What a model's two files are now: their identity, and the bytes once read."""
    ident: tuple            # (inode, size, mtime_ns) of both files: changes with every rename over them
    mtime: float
    card: dict | None = None
    weights: bytes | None = None
    sha256: str | None = None


@dataclass
class Entry:
    name: str
    prefix: Path
    lane: Lane | None = None      # loaded: the lane serving it
    ident: tuple | None = None    # the files the lane was loaded from
    card: dict | None = None      # of the loaded files, else of the last files read
    card_ident: tuple | None = None
    sha256: str | None = None
    created: int = 0
    error: str | None = None      # the last load's failure, until the files change
    failed_ident: tuple | None = None
    last_used: float = 0.0
    precision_probe: dict = field(default_factory=dict)
    pending: tuple[Files, Future] | None = None  # a build still running on the engine thread
    lock: threading.Lock = field(default_factory=threading.Lock)  # one load at a time per model


class Registry:
    def __init__(self, *, engine: Engine, settings, device, metrics=None):
        self.engine, self.settings, self.device, self.metrics = engine, settings, device, metrics
        self.dir = Path(settings.models_dir)
        default = weights_prefix(settings.weights)
        if not NAME_RE.fullmatch(default.name):
            raise ValueError(f"the default model's name {default.name!r} is not a valid model id")
        self.default = default.name
        self._default_prefix = default
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._probed: dict = {}  # model shape -> (precision, probe scores): the probe runs once per shape

    # --- names and files --------------------------------------------------------------------
    def names(self) -> list[str]:
        """The ids served now: the default, and every complete pair of the models directory."""
        found = {self.default}
        try:
            for p in self.dir.iterdir():
                if p.suffix == ".safetensors" and NAME_RE.fullmatch(p.stem) and self._prefix(p.stem):
                    found.add(p.stem)
        except OSError:
            pass
        return sorted(found)

    def _prefix(self, name: str) -> Path | None:
        """NAME's prefix, when both its files are regular files inside their directory; else None."""
        if not NAME_RE.fullmatch(name):
            return None
        prefix = self._default_prefix if name == self.default else self.dir / name
        try:
            root = prefix.parent.resolve(strict=True)
            for suffix in (".safetensors", ".json"):
                p = Path(f"{prefix}{suffix}")  # not with_suffix: a name may hold dots
                if p.resolve(strict=True).parent != root or not stat.S_ISREG(p.stat().st_mode):
                    return None
        except OSError:
            return None
        return prefix

    def _ident(self, prefix: Path) -> tuple[tuple, float]:
        sts = [os.stat(f"{prefix}{s}") for s in (".safetensors", ".json")]
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in sts), sts[0].st_mtime

    def _read(self, prefix: Path) -> Files:
        """Read the card and the weights with their caps; the identity is taken before and after, so a
        rename in between is never mistaken for the files it replaced."""
        ident, mtime = self._ident(prefix)
        caps = {".json": self.settings.max_card_bytes, ".safetensors": self.settings.max_model_bytes}
        for suffix, (_, size, _) in zip((".safetensors", ".json"), ident):
            if size > caps[suffix]:
                raise LoadError(f"{prefix.name}{suffix} is {size} bytes; the limit is {caps[suffix]}")
        try:
            card = json.loads(Path(f"{prefix}.json").read_bytes())
        except ValueError as e:
            raise LoadError(f"{prefix.name}.json is not valid JSON: {e}") from None
        if not isinstance(card, dict) or not isinstance(card.get("vocab"), list) or "config" not in card:
            raise LoadError(f"{prefix.name}.json is not a model card (no vocab or config)")
        weights = Path(f"{prefix}.safetensors").read_bytes()
        files = Files(ident, mtime, card, weights, hashlib.sha256(weights).hexdigest())
        if self._ident(prefix)[0] != ident:
            raise LoadError("the files changed while being read")
        named = card.get("weights_sha256")
        if named and named != files.sha256:
            raise LoadError(f"{prefix.name}.json names other weights (sha256 {named[:12]}, these are "
                            f"{files.sha256[:12]}): a pair being replaced, or mismatched")
        return files

    # --- lookups ------------------------------------------------------------------------------
    def _entry(self, name: str) -> Entry:
        prefix = self._prefix(name)
        if prefix is None:
            with self._lock:
                gone = self._entries.pop(name, None) if NAME_RE.fullmatch(name) else None
            if gone is not None and gone.lane is not None:  # its files were deleted: unload it
                self.engine.retire(gone.lane)
                log.info("model %s: files gone, unloaded", name)
                if self.metrics:
                    self.metrics.model_event(name, "unloaded")
            raise self.not_found(name)
        with self._lock:
            e = self._entries.get(name)
            if e is None or e.prefix != prefix:
                e = self._entries[name] = Entry(name, prefix)
            return e

    def not_found(self, name: str) -> APIError:
        shown = name if NAME_RE.fullmatch(name) else name[:64].encode("unicode_escape").decode()
        ids = self.names()
        return APIError(404, "model_not_found", f"the model '{shown}' does not exist; the models here are: "
                        f"{', '.join(ids)}", [{"field": "model", "models": ids}])

    def lane(self, name: str | None, timeout: float = 60.0) -> Lane:
        """The lane serving `name` (None: the default), loading or reloading it first when its files
        are new: the request that finds them waits for the load (a failure answers 503 unless an
        older version can serve)."""
        name = self.default if name is None else name
        e = self._entries.get(name)
        if e is not None and e.lane is not None:
            # The common case, two stat calls: the files a loaded model came from are still there, unchanged
            # (a rename over them, a symlink put in their place, or their removal changes their identity).
            try:
                ident, _ = self._ident(e.prefix)
            except OSError:
                ident = None
            if ident is not None and ident in (e.ident, e.failed_ident):
                e.last_used = time.monotonic()
                return e.lane
        e = self._entry(name)  # checks the name and the files' place in the directory
        try:
            ident, _ = self._ident(e.prefix)
        except OSError:
            raise self.not_found(e.name) from None
        serving = e.lane
        # One load per model at a time; the others wait for it and take its result, unless the model
        # is serving already: then its current weights answer them while one request loads the new.
        if not e.lock.acquire(blocking=serving is None):
            e.last_used = time.monotonic()
            return serving
        try:
            if ident not in (e.ident, e.failed_ident):  # new files (or unloaded: e.ident is None)
                self._load(e, ident, timeout)
            if e.lane is None:
                raise APIError(503, "model_unavailable", f"the model '{e.name}' cannot be loaded: {e.error}",
                               [{"field": "model"}], {"Retry-After": "5"})
            e.last_used = time.monotonic()
            return e.lane
        finally:
            e.lock.release()

    def _load(self, e: Entry, ident: tuple, timeout: float) -> None:
        t0 = time.perf_counter()
        try:
            if e.pending is None or e.pending[0].ident != ident:  # else: wait on the build already running
                files = self._read(e.prefix)
                self._make_room(keep=e)
                e.pending = files, self.engine.call(lambda: self._build(e.name, files))
            files, build = e.pending
            lane, scores = build.result(timeout)
        except FutureTimeout:
            # A slow build (a busy engine, a large model) is not a broken one: it goes on, and the
            # next request for these files takes its result instead of recording a failure. Meanwhile
            # the weights already loaded (a reload) keep serving.
            if e.lane is not None:
                return
            raise APIError(503, "model_loading", f"the model '{e.name}' is still loading; retry shortly",
                           [{"field": "model"}], {"Retry-After": "2"}) from None
        except Exception as exc:  # the old lane (if any) keeps serving; the error is shown on the model
            e.pending = None
            e.error = str(exc) or type(exc).__name__
            # The files that were tried: a rename landing meanwhile (the card after the weights) is new
            # files, to be loaded by the next request, not the failure's.
            e.failed_ident = ident
            log.error("loading model %s failed: %s", e.name, e.error)
            if self.metrics:
                self.metrics.model_event(e.name, "error")
            return
        e.pending = None
        if self._entries.get(e.name) is not e:  # deleted, or its files gone, while it loaded: never served
            raise self.not_found(e.name)
        self.engine.add(lane)
        old, e.lane = e.lane, lane
        e.ident, e.card, e.card_ident, e.sha256 = files.ident, files.card, files.ident, files.sha256
        e.created, e.error, e.failed_ident, e.precision_probe = int(files.mtime), None, None, scores
        if old is not None:
            self.engine.retire(old)  # its sequences finish on the weights they started with
        log.info("%s model %s (sha256 %s, %s) in %.2f s", "reloaded" if old else "loaded", e.name,
                 files.sha256[:12], lane.model.precision, time.perf_counter() - t0)
        if self.metrics:
            self.metrics.model_event(e.name, "reloaded" if old else "loaded")

    def _build(self, name: str, files: Files):
        """On the engine thread: the model from the bytes read, warmed up in its precision."""
        from safetensors.torch import load as load_safetensors

        from model.config import ModelConfig
        from model.network import CharRNN
        from model.precision import candidate_precisions
        from model.vocab import Vocab

        card = files.card
        try:
            vocab = Vocab(card["vocab"])
            cfg = ModelConfig.from_dict({**card["config"], "vocab_size": len(vocab)})
            model = CharRNN(cfg)
            tensors = load_safetensors(files.weights)
            model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
        except Exception as exc:
            raise LoadError(f"cannot load the weights with their card: {str(exc)[:300]}") from None
        model = model.to(self.device).eval()
        s = self.settings
        precisions = candidate_precisions(self.device, card, s.precision)  # warm_up times them when several
        lane = Lane(model, vocab, name=name, max_batch=s.max_batch, prefill_chunk=s.prefill_chunk,
                    prefix_cache=s.prefix_cache, max_context=context_window(s, card),
                    stream_interval=s.stream_interval_ms / 1000, metrics=self.metrics,
                    unknown=card.get("unknown"))
        return lane, warm_up(lane, precisions, self._probed, use_threads=self.engine.use_threads)

    def _make_room(self, keep: Entry) -> None:
        """Unload least recently used models until one more fits; never the default, the one about to
        load, or one with work in flight (then the limit is exceeded until such a model is idle)."""
        with self._lock:
            loaded = [x for x in self._entries.values() if x.lane is not None and x is not keep]
        excess = len(loaded) + 1 - self.settings.max_loaded
        for x in sorted(loaded, key=lambda x: x.last_used):
            if excess <= 0:
                break
            if x.name == self.default or not x.lane.idle():
                continue
            lane, x.lane, x.ident = x.lane, None, None
            self.engine.retire(lane)
            excess -= 1
            log.info("unloaded model %s (least recently used; max_loaded %d)", x.name, self.settings.max_loaded)
            if self.metrics:
                self.metrics.model_event(x.name, "unloaded")
        if excess > 0:
            log.warning("%d model(s) over max_loaded: the others have work in flight", excess)

    def remove(self, name: str) -> None:
        """Delete a model's files (the card first: it is then no longer listed) and unload it."""
        e = self._entry(name)
        for suffix in (".json", ".safetensors"):
            Path(f"{e.prefix}{suffix}").unlink(missing_ok=True)
        with self._lock:
            self._entries.pop(name, None)
        if e.lane is not None:
            self.engine.retire(e.lane)
            if self.metrics:
                self.metrics.model_event(name, "unloaded")
        log.info("model %s deleted", name)

    def preload(self) -> None:
        """The default (which must load: the server is not ready without it) and Settings.preload."""
        try:
            self.lane(self.default)
        except APIError as exc:
            raise RuntimeError(f"the default model {self.default} cannot be loaded: {exc.message}") from None
        want = self.names() if self.settings.preload.strip() == "all" else [
            n.strip() for n in self.settings.preload.split(",") if n.strip()]
        for name in [n for n in want if n != self.default][:self.settings.max_loaded - 1]:
            try:
                self.lane(name)
            except APIError as exc:
                log.error("preload of %s failed: %s", name, exc.message)

    # --- what /v1/models and /info show -------------------------------------------------------
    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(n for n, e in self._entries.items() if e.lane is not None)

    def describe(self, name: str) -> dict:
        """One model as its card and the registry know it, without loading it (404 if unknown)."""
        e = self._entry(name)
        try:
            ident, mtime = self._ident(e.prefix)
        except OSError:
            raise self.not_found(name) from None
        if e.card_ident != ident and ident != e.failed_ident:
            try:  # a model not loaded (or changed since): its card and hash, read once per version of its files
                files = self._read(e.prefix)
                e.card, e.card_ident, e.created = files.card, files.ident, int(files.mtime)
                if e.lane is None:  # (a loaded model shows what it serves until these files load)
                    e.sha256, e.error = files.sha256, None
            except (OSError, LoadError) as exc:
                e.error = str(exc)
        return {"entry": e, "lane": e.lane, "pending_reload": e.lane is not None and ident not in (e.ident,
                                                                                                  e.failed_ident)}


def context_window(settings, card: dict) -> int:
    """CHARRNN_MAX_CONTEXT, else the window bench/context.py measured for these weights, else 0 (all)."""
    if settings.max_context is not None:
        return settings.max_context
    return int((card.get("inference") or {}).get("max_context", 0) or 0)
