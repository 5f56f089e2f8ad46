"""The playground and docs pages as files: served, self-contained (nothing from another host),
and an OpenAPI document where every field says what it means. tests/test_browser.py runs them."""
import re

from service.http.pages import SWAGGER_FILES


def local_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/[^"]*)"', html)


def test_pages_and_every_asset_they_load_are_served(client):
    for page in ("/", "/docs"):
        r = client.get(page)
        assert r.status_code == 200 and r.mimetype == "text/html"
        html = r.data.decode()
        assert not re.search(r'(?:src|href)="(?:https?:)?//', html)  # no CDN: works offline
        assets = [a for a in local_assets(html) if a.startswith(("/ui/", "/docs/static/"))]
        assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
        for a in assets:
            got = client.get(a)
            assert got.status_code == 200 and len(got.data) > 100, a
    js = client.get("/ui/playground.js").data.decode()
    assert not re.search(r"https?://", js)  # the script calls this server only
    assert {"/info", "/v1/models", "/predict-next", "/generate", "/inspect", "/v1/files"} <= set(
        re.findall(r'(?:fetch|call)\("(/[\w/-]+)"', js))
    assert 'const JOBS = "/v1/fine_tuning/jobs"' in js  # the Train view: jobs, their events, cancel
    assert "new EventSource" not in js  # it cannot send the API key: streams are read with fetch()


def test_every_control_of_the_playground_has_a_label(client):
    """Each input, select and textarea: inside a <label>, named by one (for=), or given aria-label."""
    from html.parser import HTMLParser

    class Controls(HTMLParser):
        def __init__(self):
            super().__init__()
            self.depth, self.fors, self.controls = 0, set(), []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "label":
                self.depth += 1
                self.fors.add(a.get("for"))
            elif tag in ("input", "select", "textarea"):
                self.controls.append((a.get("id"), self.depth > 0 or "aria-label" in a))

        def handle_endtag(self, tag):
            if tag == "label":
                self.depth -= 1

    page = Controls()
    page.feed(client.get("/").data.decode())
    assert {"tr-file", "tr-base", "tr-length", "tr-unit", "tr-suffix", "tr-hidden", "tr-layers"} <= {
        c for c, _ in page.controls}
    unlabelled = [c for c, ok in page.controls if not ok and c not in page.fors]
    assert not unlabelled


def test_only_the_swagger_ui_files_the_page_needs_are_served(client):
    assert "swagger-ui-bundle.js" in SWAGGER_FILES
    for name in ("swagger-editor-bundle.js", "LICENSE", "..%2Fcore.py", "%2E%2E/core.py"):
        assert client.get(f"/docs/static/{name}").status_code == 404


def test_every_field_in_the_openapi_document_is_described(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    missing = [f"{name}.{field}" for name, s in schemas.items() for field, p in s.get("properties", {}).items()
               if not p.get("description")]
    assert not missing
    gen = schemas["GenerateRequest"]
    assert not gen.get("required")  # every field is optional (the old page called stop "required")
