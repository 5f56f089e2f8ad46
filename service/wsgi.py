"""gunicorn entry point: `gunicorn -c gunicorn.conf.py` (wsgi_app = service.wsgi:app).
Imported in each worker after fork (no preload), so torch's thread pools start in the child."""
import logging
import os

from service import create_app
from service.memory import limit_arenas

limit_arenas(int(os.environ.get("MALLOC_ARENA_MAX", "2")))

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper(),
                    format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
app = create_app()
