"""docs/errors.md against the code: every test it names exists, and its table of raise sites
lists exactly the modules that raise SteerlensError / DataError / ModelError, with their kinds."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "errors.md").read_text()
KINDS = {"SteerlensError": "S", "DataError": "D", "ModelError": "M"}


def raise_sites() -> dict[str, set[str]]:
    """Per module, the kinds of error it raises directly (`raise SteerlensError(...)`)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / "steerlens").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                f = node.exc.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if name in KINDS:
                    out.setdefault(module, set()).add(KINDS[name])
    return out


def documented() -> dict[str, set[str]]:
    rows = re.findall(r"^\| `(steerlens[\w.]*)` \| ([SDM, ]+) \|", DOC, flags=re.M)
    return {m: {k.strip() for k in kinds.split(",")} for m, kinds in rows}


def test_every_raising_module_is_documented_with_its_kinds():
    assert documented() == raise_sites()


def test_the_site_scan_finds_raises():
    """The scan can fail: it finds the run store's and the loaders' errors."""
    sites = raise_sites()
    assert sites["steerlens.rundir"] == {"S"} and sites["steerlens.datasets.loaders"] == {"D"}


def _test_functions() -> dict[str, set[str]]:
    """Test file stem -> its test functions, wherever under tests/ the file lives."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names = {n.name for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
        out.setdefault(path.stem, set()).update(names)
    return out


def test_every_test_the_doc_names_exists():
    tests = _test_functions()
    missing = []
    for row in re.findall(r"^\|.*\| ([^|]*) \|$", DOC, flags=re.M):
        current = None
        for name in re.findall(r"`(test_[\w*]+(?:::test_[\w*]+)?)`", row):
            file, _, fn = name.partition("::")
            if fn:
                current = file
            elif file in tests:
                current, fn = file, None
            else:
                fn = file
            if current not in tests or (fn and not fnmatch.filter(tests[current], fn)):
                missing.append(name)
    assert not missing, missing
