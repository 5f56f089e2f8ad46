#!/usr/bin/env python3
"""The settings tables of docs/serving.md, generated from the code so that they cannot drift.

    python scripts/settings_table.py           rewrite the tables in docs/serving.md
    python scripts/settings_table.py --check   exit 1, printing a diff, when docs/serving.md is stale
    python scripts/settings_table.py --print   print the generated block

The block between `<!-- settings-table:begin -->` and `<!-- settings-table:end -->` holds:

- every field of `service.settings.Settings` as its environment variable `CHARRNN_<FIELD>`, with its
  type (enum values listed), default, bounds and description, all read from
  `Settings.model_json_schema()` (so a field whose values come from a validator or a registry shows
  whatever the schema says);
- which of them the trainer (`python -m jobs.runner`) reads too: the `CHARRNN_*` names in jobs/;
- the environment variables that the server and the trainer read outside `Settings` (calls such as
  `os.environ.get("NAME", "default")` in gunicorn.conf.py, service/ and jobs/), with the default the
  code gives and a description from PROCESS_VARS below.

It fails, naming the culprit, when a Settings field has no description, when the code reads a
variable that PROCESS_VARS does not describe (or PROCESS_VARS describes one nothing reads), and
when a variable read outside Settings has two defaults, or a default other than its Settings field's.
tests/test_settings_doc.py compares docs/serving.md with render_block().
"""
from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "serving.md"
BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"
# Where the server and the trainer read environment variables outside Settings.
SOURCES = ["gunicorn.conf.py", "service", "jobs"]

# The variables read outside Settings (found in SOURCES), described for an operator. The defaults are
# not written here: they are read from the code.
PROCESS_VARS = {
    "HOST": "address gunicorn listens on (`make serve` passes `--bind 0.0.0.0:$(PORT)` itself)",
    "PORT": "port gunicorn listens on",
    "WEB_CONCURRENCY": "gunicorn worker processes; each has its own engine and its own copy of every model it "
                       "loads, and batches only its own requests",
    "CHARRNN_HTTP_THREADS": "threads per worker: requests being read or served at once (a client that sends half "
                            "a request and stalls holds one)",
    "CHARRNN_HTTP_CONNECTIONS": "open connections per worker (gunicorn's `worker_connections`)",
    "CHARRNN_GRACEFUL_TIMEOUT": "seconds that in-flight requests get after SIGTERM",
    "CHARRNN_MAX_REQUESTS": "requests after which gunicorn replaces a worker (plus a random 0 to 2,000, so workers "
                            "are not all replaced at once)",
    "LOG_LEVEL": "log level of gunicorn, the app and the trainer",
    "MALLOC_ARENA_MAX": "glibc malloc arenas per worker process (`service/memory.py`): many request threads would "
                        "otherwise each keep an arena of memory",
}


# --- what the code says ---------------------------------------------------------------------------
def _settings(model=None):
    """-> (the variables' prefix, the Settings model: `model` when given, for tests)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from service.settings import ENV_PREFIX, Settings

    return ENV_PREFIX, model or Settings


def _sources() -> list[Path]:
    out = []
    for s in SOURCES:
        p = ROOT / s
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def _is_environ(node: ast.AST) -> bool:
    """os.environ, or a name that holds it (environ, env)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id in ("environ", "env")


def _const(node: ast.AST | None):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def env_reads() -> dict[str, dict]:
    """Every environment variable SOURCES read by a constant name -> {"defaults": {default, ...} (None: none
    or computed), "files": [relative paths]}; plus the CHARRNN_* names jobs/ mentions (the trainer's)."""
    found: dict[str, dict] = {}

    def add(name: str, default, path: Path):
        e = found.setdefault(name, {"defaults": set(), "files": []})
        e["defaults"].add(default)
        rel = path.relative_to(ROOT).as_posix()
        if rel not in e["files"]:
            e["files"].append(rel)

    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if not node.args or _const(node.args[0]) is None:
                    continue
                is_get = (isinstance(f, ast.Attribute) and f.attr in ("get", "setdefault", "pop")
                          and _is_environ(f.value))
                is_getenv = (isinstance(f, ast.Attribute) and f.attr == "getenv" and isinstance(f.value, ast.Name)
                             and f.value.id == "os")
                if is_get or is_getenv:
                    add(_const(node.args[0]), _const(node.args[1]) if len(node.args) > 1 else None, path)
            elif isinstance(node, ast.Subscript) and _is_environ(node.value) and _const(node.slice) is not None:
                add(_const(node.slice), None, path)
    return found


def trainer_reads(prefix: str) -> list[str]:
    """The CHARRNN_* names the trainer's code (jobs/) mentions, in the order it mentions them."""
    names = []
    for path in sorted((ROOT / "jobs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            v = _const(node)
            if v and re.fullmatch(re.escape(prefix) + r"[A-Z0-9_]+", v) and v not in names:
                names.append(v)
    return names


# --- rendering -----------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _size(n: int) -> str:
    for unit, k in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << k and n % (1 << k) == 0:
            return f"{n >> k} {unit}"
    return ""


def _number(v, name: str, code: bool = True) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    text = f"`{v}`" if code else str(v)
    if name.endswith("_bytes") and isinstance(v, int) and _size(v):
        text += f" ({_size(v)})"
    return text


def _env_value(v) -> str:
    """A default as it would be written in the environment."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _branches(prop: dict) -> tuple[list[dict], bool]:
    """A property's schemas other than null, and whether null (unset) is allowed."""
    alts = prop.get("anyOf") or prop.get("oneOf")
    if not alts:
        return [prop], False
    return [a for a in alts if a.get("type") != "null"], any(a.get("type") == "null" for a in alts)


def _secret(prop: dict) -> bool:
    return prop.get("writeOnly") is True or prop.get("format") == "password"


def _type(prop: dict) -> str:
    branches, nullable = _branches(prop)
    kinds = []
    for b in branches:
        if "enum" in b:
            kinds.append("`" + " | ".join(_env_value(v) for v in b["enum"]) + "`")
        elif "const" in b:
            kinds.append(f"`{_env_value(b['const'])}`")
        else:
            kinds.append(b.get("type", "any"))
    text = " or ".join(kinds)
    if _secret(prop):
        text += ", secret"
    return text + (" or unset" if nullable else "")


def _bounds(prop: dict, name: str) -> str:
    branches, _ = _branches(prop)
    parts = []
    for b in branches:
        for key, sign in (("exclusiveMinimum", ">"), ("minimum", "≥"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
                          ("minLength", "length ≥"), ("maxLength", "length ≤")):
            if key in b:
                parts.append(f"{sign} {_number(b[key], name, code=False)}")
    return ", ".join(parts)


def _default(prop: dict, name: str) -> str:
    if "default" not in prop:
        return "(required)"
    v = prop["default"]
    if _secret(prop) or v == "":
        return "(empty)"
    if v is None:
        return "(unset)"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _number(v, name)
    return f"`{_env_value(v)}`"


def settings_rows(model=None) -> list[str]:
    prefix, Settings = _settings(model)
    props = Settings.model_json_schema()["properties"]
    missing = [n for n in Settings.model_fields if not (props.get(n, {}).get("description") or "").strip()]
    if missing:
        raise ValueError(f"Settings fields without a description: {', '.join(missing)} (service/settings.py)")
    rows = ["| variable | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name in Settings.model_fields:
        p = props[name]
        rows.append(f"| `{prefix}{name.upper()}` | {_cell(_type(p))} | {_cell(_default(p, name))} | "
                    f"{_cell(_bounds(p, name))} | {_cell(p['description'])} |")
    return rows


def process_rows(model=None) -> list[str]:
    prefix, Settings = _settings(model)
    fields = {prefix + n.upper(): n for n in Settings.model_fields}
    defaults = Settings.model_json_schema()["properties"]
    reads = env_reads()
    problems = []
    for var, e in reads.items():
        given = {d for d in e["defaults"] if d is not None}
        if len(given) > 1:
            problems.append(f"{var} has several defaults in {', '.join(e['files'])}: {sorted(given)}")
        if var in fields and given:
            own = _env_value(defaults[fields[var]].get("default"))
            if given != {own}:
                problems.append(f"{var}: {', '.join(e['files'])} default to {sorted(given)}, Settings to {own!r}")
    outside = [v for v in reads if v not in fields]
    problems += [f"{v} is read by {', '.join(reads[v]['files'])} but not described in PROCESS_VARS "
                 f"(scripts/settings_table.py)" for v in outside if v not in PROCESS_VARS]
    problems += [f"PROCESS_VARS describes {v}, which nothing in {', '.join(SOURCES)} reads" for v in PROCESS_VARS
                 if v not in reads]
    if problems:
        raise ValueError("; ".join(problems))
    rows = ["| variable | default | read by | meaning |", "|---|---|---|---|"]
    for var in PROCESS_VARS:
        given = sorted(d for d in reads[var]["defaults"] if d is not None)
        default = f"`{given[0]}`" if given else "(unset)"
        files = ", ".join(f"`{f}`" for f in reads[var]["files"])
        rows.append(f"| `{var}` | {default} | {files} | {_cell(PROCESS_VARS[var])} |")
    return rows


def render_block(model=None) -> str:
    """The text between the markers (without them), generated from the code (`model`: another
    Settings model, for tests)."""
    prefix, Settings = _settings(model)
    read = set(trainer_reads(prefix))
    trainer = [prefix + n.upper() for n in Settings.model_fields if prefix + n.upper() in read]  # in the table's order
    lines = [
        "<!-- generated by scripts/settings_table.py from service/settings.py and the code that reads the "
        "environment; edit those, then run it -->",
        "",
        *settings_rows(Settings),
        "",
        "The trainer (`python -m jobs.runner`) reads " + ", ".join(f"`{v}`" for v in trainer)
        + ": where it runs apart from the servers, give it the same values.",
        "",
        "Read by the processes outside `Settings` (gunicorn, the app's worker, the trainer):",
        "",
        *process_rows(Settings),
    ]
    return "\n".join(lines)


def split(text: str) -> tuple[str, str, str]:
    """-> (text up to and including BEGIN's line, the block between, END's line and the rest)."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"{DOC.relative_to(ROOT)} lacks the markers {BEGIN} ... {END}")
    head_end = text.index("\n", i) + 1
    return text[:head_end], text[head_end:j], text[j:]


def updated(text: str) -> str:
    head, _, tail = split(text)
    return head + render_block() + "\n" + tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 with a diff when the file is stale; write nothing")
    ap.add_argument("--print", action="store_true", help="print the generated block")
    ap.add_argument("--doc", type=Path, default=DOC, help="the page holding the markers (default docs/serving.md)")
    args = ap.parse_args(argv)
    if args.print:
        print(render_block())
        return 0
    text = args.doc.read_text(encoding="utf-8")
    new = updated(text)
    if args.check:
        if new == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                   f"{args.doc} (committed)", f"{args.doc} (generated)"))
        print(f"\n{args.doc} is stale: run python scripts/settings_table.py", file=sys.stderr)
        return 1
    if new != text:
        args.doc.write_text(new, encoding="utf-8")
        print(f"{args.doc}: settings tables updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
