"""The docs kept honest.

1. Every fenced block of README.md and docs/api.md whose first line starts with `$ curl` is a
   transcript: each `$ ` line a command, the lines after it (up to the next `$ `) its output. The
   commands are run in order, with real curl, against one real gunicorn (gunicorn.conf.py) serving
   the shipped model, and each output is checked against the documented one:
   - JSON: the same keys in every object, the same type of every value (null stays null), lists of
     the same length, compared element by element; enumerations (`object`, `status`, `type`,
     `code`, `finish_reason`, ...) and names exactly; generated text (`text`, `char`, `tokens`)
     exactly when the request is seeded or cannot vary (`/predict-next`, `/inspect`): "a seed makes
     any answer reproducible" is what the docs promise. Other numbers and strings by type only.
   - server-sent events: the sequence of event shapes, consecutive events of one shape taken as
     one (how a stream's text is split into events depends on timing), and each completion's joined
     text exactly when seeded;
   - `curl -i`: the status, the documented headers present (Content-Type and X-Seed equal);
   - Prometheus text: every documented metric name, with its label names, present;
   - any other text (a `-w` status line, `head -c`): exactly.
   Ids an output gives (file-..., ftjob-...) stand for the real ones in later commands.
   Seeded texts are reproducible for one precision of the model's matrices: the server's start-up
   probe (CHARRNN_PRECISION=auto) picks fp32, fp16 or int8 by what is fastest on the machine, so
   the transcripts were made, and are checked, with CHARRNN_PRECISION=fp32 on the CPU (the one
   precision every machine has). Timestamps, ids, probabilities and losses are compared by type.
2. Every relative link of README.md, CHANGELOG.md and docs/*.md resolves: the file exists, and a
   #fragment names a heading of the target (GitHub's anchors).
3. docs/api.md has a section `METHOD /path` for every route of the route table.

`python tests/test_docs.py --write URL docs/api.md` runs a file's transcripts against the server
at URL and writes their real outputs in place (a server started as the file says).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRANSCRIPTS = ["README.md", "docs/api.md"]
PAGES = sorted({"README.md", "CHANGELOG.md", *(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))})
DOC_HOST = "localhost:8000"
SERVER_ENV = {"CHARRNN_PRECISION": "fp32", "CHARRNN_DEVICE": "cpu", "CHARRNN_TRAINER": "off"}

# Values compared exactly (beyond keys and types): enumerations and names ...
EXACT = {"object", "status", "type", "code", "param", "field", "finish_reason", "model", "id", "cell", "vocab",
         "purpose", "filename", "level", "owned_by", "format", "protocol", "split", "device", "precision"}
# ... and text the model wrote, when the request is seeded or cannot vary.
GENERATED = {"text", "char", "tokens", "chars"}
DETERMINISTIC = ("/predict-next", "/inspect", "/v1/files/")  # no sampling: the same answer every time
IDS = re.compile(r"\b(?:cmpl|file|ftjob|ftevent|ftckpt)-[0-9a-f]{8,}\b")
METRIC = re.compile(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})? (\S+)$")


# --- transcripts ---------------------------------------------------------------------------------
@dataclass
class Command:
    line: int            # of the `$ ` line in its file
    cmd: str
    output: list[str] = field(default_factory=list)

    @property
    def expected(self) -> str:
        lines = list(self.output)
        while lines and not lines[-1].strip():
            lines.pop()
        return "\n".join(lines)


def fenced_blocks(text: str) -> list[tuple[int, list[str]]]:
    """-> [(line of the first content line, content lines)] of every fenced code block."""
    blocks, fence, start, body = [], None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and m:
            fence, start, body = m[1], i + 1, []
        elif fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append((start, body))
            fence = None
        elif fence is not None:
            body.append(line)
    return blocks


def transcripts(path: Path) -> list[list[Command]]:
    """The `$ curl` blocks of a Markdown file, each as its commands and their documented outputs."""
    out = []
    for start, body in fenced_blocks(path.read_text(encoding="utf-8")):
        first = next((b for b in body if b.strip()), "")
        if not first.startswith("$ curl"):
            continue
        cmds: list[Command] = []
        cont = False
        for n, line in enumerate(body, start):
            if cont:  # a command continued with a trailing backslash
                cmds[-1].cmd += "\n" + line
            elif line.startswith("$ "):
                cmds.append(Command(n, line[2:]))
            else:
                cmds[-1].output.append(line)
            cont = (cont or line.startswith("$ ")) and line.endswith("\\")
        out.append(cmds)
    return out


def run(cmd: str, base: str, cwd: Path, timeout: float = 120) -> tuple[int, str, str]:
    """A documented command, aimed at the server at `base` -> (exit status, stdout, stderr)."""
    cmd = cmd.replace(DOC_HOST, base.removeprefix("http://"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def seeded(cmd: str) -> bool:
    return bool(re.search(r'"seed"\s*:\s*\d', cmd)) or any(p in cmd for p in DETERMINISTIC)


# --- comparing an output with the documented one -------------------------------------------------
class Ids(dict):
    """Documented id -> the id the server gave in its place."""

    def pair(self, doc: str, got: str, where: str, problems: list[str]) -> None:
        if doc in self and self[doc] != got:
            problems.append(f"{where}: {doc} stood for {self[doc]} before, {got} here")
        self.setdefault(doc, got)

    def apply(self, cmd: str) -> tuple[str, list[str]]:
        missing = [i for i in IDS.findall(cmd) if i not in self]
        return IDS.sub(lambda m: self.get(m[0], m[0]), cmd), missing


def kind(v) -> str:
    return "null" if v is None else type(v).__name__


def compare_json(doc, got, *, exact_text: bool, ids: Ids, where: str = "$", key: str = "") -> list[str]:
    """Differences of `got` from the documented `doc`: keys, types, lengths; see the module's docstring."""
    problems: list[str] = []
    if kind(doc) != kind(got):
        return [f"{where}: documented {kind(doc)} {_short(doc)}, got {kind(got)} {_short(got)}"]
    if isinstance(doc, dict):
        if set(doc) != set(got):
            extra, gone = sorted(set(got) - set(doc)), sorted(set(doc) - set(got))
            problems.append(f"{where}: keys differ" + (f"; not documented: {extra}" if extra else "")
                            + (f"; documented but absent: {gone}" if gone else ""))
        for k in doc:
            if k in got:
                problems += compare_json(doc[k], got[k], exact_text=exact_text, ids=ids, where=f"{where}.{k}", key=k)
    elif isinstance(doc, list):
        if len(doc) != len(got):
            problems.append(f"{where}: documented {len(doc)} items, got {len(got)}")
        for i, (d, g) in enumerate(zip(doc, got)):
            problems += compare_json(d, g, exact_text=exact_text, ids=ids, where=f"{where}[{i}]", key=key)
    elif isinstance(doc, str):
        if IDS.fullmatch(doc):
            ids.pair(doc, got, where, problems)
        elif (key in EXACT or (key in GENERATED and exact_text)) and doc != got:
            problems.append(f"{where}: documented {doc!r}, got {got!r}")
    return problems


def _short(v) -> str:
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) < 80 else s[:77] + "..."


def parse_http(text: str) -> tuple[int, dict, str]:
    """`curl -i` output -> (status, {lower-case header name: value}, body)."""
    text = text.replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, body


def sse_events(text: str) -> list | None:
    """Server-sent events' data (JSON or a bare string such as [DONE]); None when `text` is not a stream."""
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or not all(ln.startswith(("data: ", "id: ", ":")) for ln in lines):
        return None
    out = []
    for ln in lines:
        if ln.startswith("data: "):
            data = ln[6:]
            try:
                out.append(json.loads(data))
            except ValueError:
                out.append(data)
    return out


def shape(v, key: str = ""):
    """What an event looks like, without its varying values: keys, types, and its enumerations."""
    if isinstance(v, dict):
        return tuple(sorted((k, shape(x, k)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(shape(x, key) for x in v)
    if key in ("finish_reason", "object", "type", "code") or (key == "" and isinstance(v, str)):
        return v  # an enumeration, or a bare event such as [DONE]
    return kind(v)


def collapsed(events: list) -> list:
    out = []
    for e in events:
        s = shape(e)
        if not out or out[-1] != s:
            out.append(s)
    return out


def texts(events: list) -> dict:
    """Each completion's (or choice's) text, joined over the stream."""
    out: dict = {}
    for e in events:
        if not isinstance(e, dict):
            continue
        for c in e["choices"] if "choices" in e else [e]:
            if isinstance(c, dict) and "index" in c and isinstance(c.get("text"), str):
                out[c["index"]] = out.get(c["index"], "") + c["text"]
    return out


def metric_names(text: str) -> set | None:
    found = set()
    for ln in text.splitlines():
        if not ln.strip() or ln.startswith("#"):
            continue
        m = METRIC.match(ln)
        if not m:
            return None
        labels = frozenset(re.findall(r'(\w+)="', m[2] or ""))
        found.add((m[1], labels))
    return found or None


def compare_output(cmd: str, doc: str, got: str, ids: Ids) -> list[str]:
    """Differences of a command's output from the documented one."""
    exact_text = seeded(cmd)
    problems: list[str] = []
    if doc.startswith("HTTP/"):
        if not got.startswith("HTTP/"):
            return [f"documented an HTTP answer with headers, got {got[:200]!r}"]
        (ds, dh, doc), (gs, gh, got) = parse_http(doc), parse_http(got)
        if ds != gs:
            problems.append(f"status: documented {ds}, got {gs}")
        for name, value in dh.items():
            if name not in gh:
                problems.append(f"header {name}: documented, absent")
            elif name in ("content-type", "x-seed", "allow", "retry-after") and gh[name] != value:
                problems.append(f"header {name}: documented {value!r}, got {gh[name]!r}")
    doc, got = doc.strip(), got.strip()
    events = sse_events(doc)
    if events is not None:
        actual = sse_events(got)
        if actual is None:
            return problems + [f"documented a stream of events, got {got[:200]!r}"]
        if collapsed(events) != collapsed(actual):
            problems.append(f"stream: documented events shaped\n    {collapsed(events)}\n  got\n    "
                            f"{collapsed(actual)}")
        if exact_text and texts(events) != texts(actual):
            problems.append(f"stream text: documented {texts(events)!r}, got {texts(actual)!r}")
        return problems
    try:
        want = json.loads(doc)
    except ValueError:
        want = None
    if isinstance(want, (dict, list)):
        try:
            have = json.loads(got)
        except ValueError:
            return problems + [f"documented JSON, got {got[:300]!r}"]
        return problems + compare_json(want, have, exact_text=exact_text, ids=ids)
    names = metric_names(doc)
    if names is not None:
        have = metric_names(got) or set()
        return problems + [f"metric {n}{{{','.join(sorted(lb))}}}: documented, absent"
                           for n, lb in sorted(names, key=str) if (n, lb) not in have]
    doc_ids, got_ids = IDS.findall(doc), IDS.findall(got)
    if len(doc_ids) == len(got_ids):  # ids in a text: the server's stand in the documented ones' places
        for d, g in zip(doc_ids, got_ids):
            ids.pair(d, g, "text", problems)
        doc = IDS.sub(lambda m: ids.get(m[0], m[0]), doc)
    if doc != got:
        problems.append(f"documented {doc[:300]!r}\n  got {got[:300]!r}")
    return problems


def check_transcripts(path: Path, base: str, cwd: Path) -> list[str]:
    """Run every transcript of a file in order -> its problems, each naming the line of its command."""
    ids, problems = Ids(), []
    for block in transcripts(path):
        for c in block:
            cmd, missing = ids.apply(c.cmd)
            where = f"{path.relative_to(ROOT)}:{c.line}: $ {c.cmd[:120]}"
            if missing:
                problems.append(f"{where}\n  uses {missing}, which no output before it gave")
                continue
            rc, out, err = run(cmd, base, cwd)
            if rc != 0:
                problems.append(f"{where}\n  exit status {rc}: {err[-500:]}")
                continue
            problems += [f"{where}\n  {p}" for p in compare_output(cmd, c.expected, out, ids)]
    return problems


# --- the server the transcripts describe ---------------------------------------------------------
@pytest.fixture(scope="module")
def docs_server(tmp_path_factory):
    """The shipped model alone in a models directory (so /v1/models lists what the docs show), data in
    a temporary folder, the trainer off (a created job stays queued), fp32 on the CPU."""
    from servers import Server

    models = tmp_path_factory.mktemp("models")
    for suffix in (".safetensors", ".json"):
        shutil.copy(ROOT / "weights" / f"shakespeare{suffix}", models / f"shakespeare{suffix}")
    s = Server(models / "shakespeare", CHARRNN_DATA_DIR=str(tmp_path_factory.mktemp("data")), **SERVER_ENV)
    s.wait_ready(timeout=120)
    yield s
    s.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("doc", TRANSCRIPTS)
def test_curl_transcripts(doc, docs_server, tmp_path):
    path = ROOT / doc
    assert transcripts(path), f"{doc} has no `$ curl` transcript"
    problems = check_transcripts(path, docs_server.base, tmp_path)
    assert not problems, f"{len(problems)} output(s) of {doc} differ from the server's:\n\n" + "\n\n".join(problems)


# --- the comparison can fail ---------------------------------------------------------------------
GEN = ('{"model":"shakespeare","completions":[{"text":"\\nAh","finish_reason":"length","generated_chars":3}],'
       '"seed":42,"usage":{"prompt_chars":6,"generated_chars":3}}')
SEEDED = """curl -s localhost:8000/generate -d '{"prompt": "ROMEO:", "seed": 42}'"""


@pytest.mark.parametrize("got,problem", [
    (GEN.replace('"seed":42,', ""), "documented but absent: ['seed']"),
    (GEN.replace('"seed":42', '"seed":42,"extra":1'), "not documented: ['extra']"),
    (GEN.replace("\\nAh", "\\nAy"), "documented '\\nAh', got '\\nAy'"),
    (GEN.replace('"length"', '"stop"'), "documented 'length', got 'stop'"),
    (GEN.replace('"seed":42', '"seed":"42"'), "documented int"),
    (GEN.replace('"seed":42', '"seed":null'), "documented int"),
    (GEN.replace("}],", "},{\"text\":\"x\",\"finish_reason\":\"length\",\"generated_chars\":1}],"), "1 items, got 2"),
    ('{"error":{"type":"validation_error","message":"m","details":[]}}', "keys differ"),
    ("<html>", "documented JSON"),
])
def test_a_changed_answer_fails(got, problem):
    problems = compare_output(SEEDED, GEN, got, Ids())
    assert any(problem in p for p in problems), problems
    assert compare_output(SEEDED, GEN, GEN.replace('"seed":42', '"seed":42 '), Ids()) == []


def test_unseeded_text_and_numbers_compare_by_type():
    unseeded = SEEDED.replace(', "seed": 42', "")
    assert compare_output(unseeded, GEN, GEN.replace("\\nAh", "\\nOh").replace(":3}", ":4}"), Ids()) == []


STREAM = ('data: {"index": 0, "text": " "}\n\ndata: {"index": 0, "text": "RICHA"}\n\n'
          'data: {"index": 0, "text": "", "finish_reason": "length", "generated_chars": 6}\n\ndata: [DONE]')


def test_streams_compare_by_event_shapes_and_seeded_text():
    merged = STREAM.replace('"}\n\ndata: {"index": 0, "text": "RICHA', 'RICHA')  # one event instead of two
    assert compare_output(SEEDED, STREAM, merged, Ids()) == []
    assert "stream text" in " ".join(compare_output(SEEDED, STREAM, STREAM.replace("RICHA", "RICHE"), Ids()))
    assert "shaped" in " ".join(compare_output(SEEDED, STREAM, STREAM.replace("\n\ndata: [DONE]", ""), Ids()))
    assert "shaped" in " ".join(compare_output(SEEDED, STREAM, STREAM.replace('"length"', '"stop"'), Ids()))


def test_statuses_headers_metrics_and_text():
    doc = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Seed: 42\r\n\r\n" + GEN
    assert compare_output(SEEDED, doc, doc.replace("Content-Type", "Date: x\r\nContent-Type"), Ids()) == []
    assert "status" in " ".join(compare_output(SEEDED, doc, doc.replace("200 OK", "422 UNPROCESSABLE"), Ids()))
    assert "x-seed" in " ".join(compare_output(SEEDED, doc, doc.replace("X-Seed: 42", "X-Seed: 7"), Ids()))
    metrics = 'charrnn_requests_total{endpoint="/health",status="200"} 1.0'
    assert compare_output("curl", metrics, metrics.replace("1.0", "3.0") + "\nother 2", Ids()) == []
    assert compare_output("curl", metrics, metrics.replace("requests", "answers"), Ids())
    assert compare_output("curl", "200 text/html", "404 text/html", Ids())


def test_ids_stand_for_the_servers():
    ids = Ids()
    assert compare_json({"id": "file-0123456789ab"}, {"id": "file-ba9876543210"}, exact_text=True, ids=ids) == []
    assert ids.apply("curl localhost:8000/v1/files/file-0123456789ab") == (
        "curl localhost:8000/v1/files/file-ba9876543210", [])
    assert ids.apply("curl localhost:8000/v1/files/file-ffffffffffff")[1] == ["file-ffffffffffff"]
    assert compare_json({"f": "file-0123456789ab"}, {"f": "file-000000000000"}, exact_text=True, ids=ids)


def test_transcripts_are_parsed_with_continuations(tmp_path):
    p = tmp_path / "x.md"
    p.write_text("```text\n$ curl -s a \\\n  -d b\n{}\n$ curl c\n\nline\n```\n\n```text\n$ python -c 1\n```\n")
    (block,) = transcripts(p)
    assert [(c.cmd, c.expected) for c in block] == [("curl -s a \\\n  -d b", "{}"), ("curl c", "\nline")]


# --- links ---------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its rendered text, lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def outside_code(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    out, fence = [], None
    for i, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m and fence is None:
            fence = m[1]
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
        else:
            out.append((i, line))
    return out


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    lines = outside_code(path.read_text(encoding="utf-8"))
    for n, (_, line) in enumerate(lines):
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        setext = n + 1 < len(lines) and re.match(r"^ {0,3}(=+|-+)\s*$", lines[n + 1][1]) and line.strip() \
            and lines[n + 1][0] == lines[n][0] + 1 and not line.startswith(("-", "*", "|", " "))
        if m or setext:
            s = slug(m[2] if m else line)
            found.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
        found.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', line))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for n, line in outside_code(path.read_text(encoding="utf-8")):
        line = re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m[0]), line)  # not in inline code
        for m in re.finditer(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            out.append((n, m[1]))
        for m in re.finditer(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", line):
            out.append((n, m[1]))
        for m in re.finditer(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", line):
            out.append((n, m[1]))
    return out


def broken(path: Path) -> list[str]:
    problems = []
    for n, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http(s), mailto, ...: not checked here
        where = f"{path.relative_to(ROOT)}:{n}: ({target})"
        file, _, frag = target.partition("#")
        dest = (path.parent / urllib.parse.unquote(file)).resolve() if file else path
        if file.startswith("/"):
            problems.append(f"{where}: a path from the site's root does not resolve in the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: no such file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif frag and dest.suffix == ".md" and urllib.parse.unquote(frag) not in anchors(dest):
            problems.append(f"{where}: no heading #{frag} in {dest.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("page", [p for p in PAGES if (ROOT / p).exists()])
def test_relative_links_resolve(page):
    problems = broken(ROOT / page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_link_checker_sees_a_broken_link(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Top\n## Two words, and `code`\n## Top\n")
    (tmp_path / "b.md").write_text("[ok](a.md#top-1) [ok](a.md#two-words-and-code) ![i](a.md) `[no](x.md)`\n"
                                   "[bad](a.md#nope) [gone](c.md) [web](https://example.com/x.md)\n"
                                   "```\n[no](y.md)\n```\n")
    problems = broken(tmp_path / "b.md")
    assert [p.split(": (")[1].split(")")[0] for p in problems] == ["a.md#nope", "c.md"], problems


# --- every route has its section ---------------------------------------------------------------
def test_api_md_has_a_section_per_route():
    from service.http.routes import ROUTES

    headings = {ln.strip() for _, ln in outside_code((ROOT / "docs/api.md").read_text(encoding="utf-8"))
                if ln.startswith("#")}
    missing = [f"{r.method.upper()} {r.path}" for r in ROUTES
               if not any(re.fullmatch(rf"#+ `?{r.method.upper()} {re.escape(r.path)}`?", h) for h in headings)]
    assert not missing, f"docs/api.md has no section for {missing}"


# --- writing real outputs into a file ------------------------------------------------------------
def write_outputs(path: Path, base: str, cwd: Path) -> None:
    """Replace every transcript's outputs in `path` with what the server at `base` answers now, and the
    ids in its commands with the ones the server gave. A new transcript may name ids as placeholders:
    file-00000001 is the first file id an output gives, ftjob-00000002 the second job's, and so on."""
    lines = path.read_text(encoding="utf-8").split("\n")
    ids, seen, edits = Ids(), {}, []
    for block in transcripts(path):
        for c in block:
            for i in IDS.findall(c.cmd):
                prefix, _, n = i.partition("-")
                if i not in ids and re.fullmatch(r"0{4,}\d+", n):
                    ids[i] = seen[prefix][int(n) - 1]
            cmd, missing = ids.apply(c.cmd)
            if missing:
                raise SystemExit(f"{path}:{c.line}: no output before gave {missing}")
            rc, out, err = run(cmd, base, cwd)
            if rc != 0:
                raise SystemExit(f"{path}:{c.line}: exit status {rc}: {err}")
            compare_output(cmd, c.expected, out, ids)  # pairs the documented ids with the server's
            for i in IDS.findall(out):
                seen.setdefault(i.partition("-")[0], [])
                if i not in seen[i.partition("-")[0]]:
                    seen[i.partition("-")[0]].append(i)
            blank = len(c.output) - len(c.expected.split("\n")) if c.expected else len(c.output)  # kept after it
            new = out.replace("\r\n", "\n").rstrip("\n").split("\n") if out.strip() else []
            edits.append((c.line + c.cmd.count("\n"), len(c.output) - blank, new))
    for first, n, new in reversed(edits):
        lines[first:first + n] = new
    text = "\n".join(lines)
    for old, new in ids.items():
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="write real outputs into a file's `$ curl` transcripts")
    ap.add_argument("--write", metavar="URL", required=True, help="the server, e.g. http://127.0.0.1:8011")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    for f in a.files:
        with tempfile.TemporaryDirectory() as d:
            write_outputs(Path(f).resolve(), a.write, Path(d))


# --- the pages stay pages for their readers ------------------------------------------------------
def test_the_readme_reads_in_five_minutes():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the reference belongs in docs/"


# Words that only make sense inside the team: a reader outside it cannot tell which "session" or
# "issue 13" a figure belongs to. History belongs in the git log and CHANGELOG.md.
TEAM_TALK = re.compile(r"\bsessions?\b|\bissue #?\d+|\bthe team\b|\b(?:earlier|previous|latest) (?:run|change)", re.I)


@pytest.mark.parametrize("page", [p for p in PAGES if (ROOT / p).exists()])
def test_no_page_speaks_of_the_teams_history(page):
    found = [f"{page}:{n}: {line.strip()}" for n, line in enumerate((ROOT / page).read_text(encoding="utf-8")
                                                                    .splitlines(), 1) if TEAM_TALK.search(line)]
    assert not found, "\n".join(found)
