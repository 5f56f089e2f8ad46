"""The playground: one page at / that calls the public API from the browser (/info,
/predict-next as you type, /generate streamed). Plain HTML, CSS and JS in service/static/,
served as they are: no build step, no CDN, so it works offline and behind any firewall."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("playground", __name__, static_folder="static", static_url_path="/ui")


@bp.get("/")
def index():
    return bp.send_static_file("index.html")
