"""Optional API keys, as llama.cpp's and vLLM's --api-key: with CHARRNN_API_KEY (one key or a
comma-separated list) or CHARRNN_API_KEY_FILE (a container secret) set, every request needs
`Authorization: Bearer <key>` (what the official OpenAI client sends), except the probes
(/health, /ready), /metrics when CHARRNN_METRICS_PUBLIC=1, and the files of the playground and
the docs page: those are shipped code, not data, and the pages ask for the key themselves.
Unset = open: a server on loopback needs none, and gunicorn warns when an open one listens beyond
it (open_beyond_loopback)."""
from __future__ import annotations

import hmac
import logging
import re
from pathlib import Path

from flask import Flask, request

from service.http.errors import error_response

log = logging.getLogger("charrnn.service")

PROBES = {"/health", "/ready"}
PAGES = {"/", "/docs", "/openapi.json"}
PAGE_PREFIXES = ("/ui/", "/docs/static/")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="charrnn"'}


def load_keys(settings) -> list[bytes]:
    """The keys of the settings and of the key file; [] = open. Read once, in create_app."""
    raw = settings.api_key.get_secret_value()
    if settings.api_key_file:
        raw += "\n" + Path(settings.api_key_file).read_text(encoding="utf-8")
    return [k.encode() for k in re.split(r"[,\s]+", raw) if k]


def authorized(header: str, keys: list[bytes]) -> bool:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given, ok = token.strip().encode("utf-8", "replace"), False
    for k in keys:  # constant time per key, and no early exit: which key matched does not show
        ok |= hmac.compare_digest(given, k)
    return ok


def register(app: Flask, settings) -> bool:
    """Install the check when keys are set; -> whether it was installed."""
    keys = load_keys(settings)
    if not keys:
        return False
    public = PROBES | ({"/metrics"} if settings.metrics_public else set())

    @app.before_request
    def _require_key():
        path = request.path
        if path in public or path in PAGES or path.startswith(PAGE_PREFIXES):
            return None
        if authorized(request.headers.get("Authorization", ""), keys):
            return None
        message = ("missing API key: send Authorization: Bearer <key>" if "Authorization" not in request.headers
                   else "invalid API key")  # never echoes what was sent
        return error_response(401, "unauthorized", message, None, CHALLENGE)  # under /v1: AuthenticationError

    log.info("API keys required (%d key(s)); open: %s", len(keys), ", ".join(sorted(public)))
    return True


def open_beyond_loopback(binds: list[str], environ) -> list[str]:
    """The bind addresses other machines can reach, when no key is configured; [] otherwise."""
    if environ.get("CHARRNN_API_KEY", "").strip() or environ.get("CHARRNN_API_KEY_FILE", "").strip():
        return []
    exposed = []
    for b in binds:
        if b.startswith(("unix:", "fd://")):
            continue
        host = b.rsplit(":", 1)[0].strip("[]") if ":" in b else b
        if host not in ("localhost", "::1") and not host.startswith("127."):
            exposed.append(b)
    return exposed
