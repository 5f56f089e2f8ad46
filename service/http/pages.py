"""The pages: the playground at / (plain HTML, CSS and JS in service/static/, served as they are: no
build step, no CDN, so it works offline and behind any firewall), the API's OpenAPI document, and
Swagger UI at /docs (its assets from the swagger-ui-py package: Swagger UI 5, the first to render
OpenAPI 3.1)."""
from __future__ import annotations

from pathlib import Path

from flask import abort, jsonify, send_from_directory

from service.http.common import ctx

STATIC = Path(__file__).resolve().parents[1] / "static"
# The only Swagger UI files the page loads (the package also ships the editor: not served).
SWAGGER_FILES = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"}


def index():
    return send_from_directory(STATIC, "index.html")


def ui_asset(name: str):
    return send_from_directory(STATIC, name)


def openapi_json():
    return jsonify(ctx().openapi())


def docs():
    return send_from_directory(STATIC, "docs.html")


def swagger_asset(name: str):
    import swagger_ui  # swagger-ui-py: Swagger UI's release files as package data

    if name not in SWAGGER_FILES:
        abort(404)
    return send_from_directory(Path(swagger_ui.__file__).parent / "static", name)
