"""The code's layers, read from its imports: model/ knows no service; service/engine/ knows no HTTP, no
registry and no request schemas; service/core/ knows no HTTP; jobs/ never imports the service; and no
module takes another module's private (underscored) names."""
import ast
from pathlib import Path

import pytest

from conftest import ROOT

# package -> packages it must never import (prefix match on the imported module's dotted name)
FORBIDDEN = {
    "model": ("service", "jobs", "flask", "gunicorn"),
    "service/engine": ("service.core", "service.http", "jobs", "flask"),
    "service/core": ("service.http", "flask"),
    "jobs": ("service", "flask"),
}


def imports(path: Path):
    """-> [(module, [names])] of every import in the file, lazy ones inside functions included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
    return out


def files(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_it(package):
    bad = [(str(f.relative_to(ROOT)), mod) for f in files(package) for mod, _ in imports(f)
           if any(mod == p or mod.startswith(p + ".") for p in FORBIDDEN[package])]
    assert not bad


def test_no_module_imports_another_modules_private_names():
    ours = ("model", "service", "jobs")
    bad = [(str(f.relative_to(ROOT)), mod, name) for pkg in ours for f in files(pkg) for mod, names in imports(f)
           if mod.split(".")[0] in ours for name in names if name.startswith("_") and not name.startswith("__")]
    assert not bad


def test_endpoint_modules_share_helpers_from_below_never_each_other():
    faces = {"native", "openai", "inspect", "tuning", "pages"}
    bad = [(f.name, mod) for f in files("service/http") if f.stem in faces for mod, _ in imports(f)
           if mod.startswith("service.http.") and mod.rsplit(".", 1)[-1] in faces]
    assert not bad
