"""glibc malloc tuning for a long-lived threaded server (no-ops elsewhere).

- Each thread that allocates gets its own malloc arena; with 128 request threads that is
  resident memory for nothing: cap the arenas.
- Freed memory stays in the arenas after a burst; give it back to the OS when the engine idles.
"""
from __future__ import annotations

import ctypes
import time

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _libc = None

M_ARENA_MAX = -8


def limit_arenas(n: int = 2) -> None:
    if _libc is not None and hasattr(_libc, "mallopt"):
        _libc.mallopt(M_ARENA_MAX, n)


class IdleTrimmer:
    """Callable for the engine's idle moments: malloc_trim(0), at most once per `every` seconds."""

    def __init__(self, every: float = 5.0):
        self.every, self._last = every, 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if _libc is not None and hasattr(_libc, "malloc_trim") and now - self._last >= self.every:
            self._last = now
            _libc.malloc_trim(0)
