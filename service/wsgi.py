"""gunicorn entry point: `gunicorn -c gunicorn.conf.py` (wsgi_app = service.wsgi:app).
Imported in each worker after fork (no preload), so torch's thread pools start in the child."""
import logging
import os

from service import create_app


def _limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena; with 128 request threads
    that is a lot of resident memory for nothing. mallopt(M_ARENA_MAX) caps it (Linux/glibc only)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-8, n)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        pass


_limit_malloc_arenas(int(os.environ.get("MALLOC_ARENA_MAX", "2")))

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper(),
                    format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
app = create_app()
