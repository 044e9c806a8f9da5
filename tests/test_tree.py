"""The tests mirror the package: one folder per subpackage, unique basenames, no flat strays."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
PKG = TESTS.parent / "steerlens"
# Cross-cutting tests that test no one subpackage; a top-level module's tests (test_errors.py
# for steerlens/errors.py) sit at the top level too, as the module does.
TOP = {"test_layout.py", "test_packaging.py", "test_notebooks.py", "test_devices.py",
       "test_reliability.py", "test_embedded.py", "test_tree.py", "test_entries.py"}


def test_folders_are_subpackages_and_top_level_is_cross_cutting():
    subpackages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders <= subpackages, f"test folders that are not subpackages: {folders - subpackages}"
    top = {p.name for p in TESTS.glob("test_*.py")}
    modules = {f"test_{p.stem}.py" for p in PKG.glob("*.py") if not p.stem.startswith("_")}
    assert top <= TOP | modules, f"put {sorted(top - TOP - modules)} under tests/<subpackage>/"


def test_basenames_are_unique():
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
