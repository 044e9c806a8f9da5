"""The package's architecture as a test: every import points down the floors of
docs/architecture.md (imports inside functions included), no import cycles, no torch under
results/ (directly or through another steerlens module), short functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "steerlens"
HEAVY = ("torch", "transformers", "transformer_lens", "einops", "jaxtyping")
TORCH_FREE = ("steerlens.results", "steerlens.rundir", "steerlens.errors", "steerlens.judges.metrics",
              "steerlens.schema", "steerlens._version")

# The floors of docs/architecture.md, bottom up: a module may import its own floor and those
# below it, never one above. The leaves hold no steerlens imports but each other's.
FLOORS = [
    ("steerlens._version", "steerlens.errors", "steerlens.schema", "steerlens.rundir"),  # leaves
    ("steerlens.core",),
    ("steerlens.datasets",),
    ("steerlens.methods", "steerlens.judges"),
    ("steerlens.results",),  # torch-free; besides the leaves it imports nothing of steerlens
    ("steerlens.audit",),
    ("steerlens", "steerlens.__main__", "steerlens.cli"),  # the package face and the command
]
LEAVES = FLOORS[0]


def floor(module: str) -> int:
    """The floor of a module: its longest prefix in `FLOORS`."""
    best, level = "", None
    for i, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, level = name, i
    assert level is not None, f"{module} is on no floor of FLOORS (tests/test_layout.py)"
    return level


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(steerlens modules imported anywhere in the file, third-party top-level names)."""
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            if name.split(".")[0] == "steerlens":
                while name not in known and "." in name:
                    name = name.rpartition(".")[0]
                inner.add(name)
            else:
                outer.add(name.split(".")[0])
    return inner - {_module_name(path)}, outer


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = _modules()
    edges, third = {}, {}
    for name, path in mods.items():
        edges[name], third[name] = _imports(path, mods)
    return edges, third


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(edges.get(n, ()))
    return seen


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Every import that points up a floor, and every import of results/ beyond the leaves."""
    up = [f"{a} -> {b}" for a, deps in edges.items() for b in deps if floor(b) > floor(a)]
    up += [f"{a} -> {b} (results imports only the leaves)" for a, deps in edges.items()
           if a.startswith("steerlens.results") for b in deps
           if not b.startswith(("steerlens.results", *LEAVES))]
    return sorted(up)


def test_imports_point_down_the_floors():
    edges, _ = _graph()
    assert upward_imports(edges) == []


def test_floor_check_catches_an_upward_import():
    """The check itself can fail: a method reaching into the audit, the package face imported
    from a layer, results importing core."""
    edges = {"steerlens.methods.learned": {"steerlens.audit.evaluate"},
             "steerlens.audit.config": {"steerlens"},
             "steerlens.results.summary": {"steerlens.core.geometry"},
             "steerlens.core.models": {"steerlens.errors"}}
    assert upward_imports(edges) == [
        "steerlens.audit.config -> steerlens",
        "steerlens.methods.learned -> steerlens.audit.evaluate",
        "steerlens.results.summary -> steerlens.core.geometry (results imports only the leaves)"]


def test_no_import_cycles():
    edges, _ = _graph()
    # the package face imports lazily by name and the callable audit package imports its API
    # on call: both are entry points, not layers
    edges = {k: {m for m in v if m not in ("steerlens", "steerlens.audit")} for k, v in edges.items()}
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


def test_torch_free_layers():
    edges, third = _graph()
    for name in edges:
        if name.startswith(TORCH_FREE):
            for dep in _reachable(edges, name):
                heavy = third[dep] & set(HEAVY)
                assert not heavy, f"{name} reaches {dep}, which imports {sorted(heavy)}"


def test_results_import_without_torch():
    code = ("import sys; import steerlens, steerlens.results.summary, steerlens.results.report, "
            "steerlens.results.findings, steerlens.results.stats; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_functions_are_short():
    long = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{_module_name(path)}.{node.name}: {n} lines")
    assert not long, long
