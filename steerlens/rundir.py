"""The run store: one directory per audit; every file is written atomically (readable, 0644),
and each stage's artefact is computed once through `RunStore.cached`, so runs resume. A
finished run is opened one way, `open_run`: read-only, its files checked first."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from steerlens.errors import SteerlensError
from steerlens.schema import CONFIG_FILE, SUMMARY_FILE

T = TypeVar("T")
_MODE = 0o644


def _clean(obj):
    """JSON-safe values: NaN/inf become null so files stay strict JSON and byte-stable."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """Run `write(tmp)` on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise SteerlensError(f"cannot write {path}: {e.strerror or e}",
                             fix="choose a writable --out directory with free space") from e


def atomic_write_text(path: Path, text: str) -> None:
    """Write text atomically (temporary file, fsync, rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, write)


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=1, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def atomic_save_tensor(save_fn: Callable[[str], None], path: Path) -> None:
    """Run `save_fn(tmp_path)` (e.g. a safetensors save) and rename the result into place."""
    _atomic(path, save_fn)


class RunStore:
    """A run directory. Writing happens here only."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def write_json(self, name: str, obj) -> None:
        write_json(self.path(name), obj)

    def read_json(self, name: str):
        return read_json(self.path(name))

    def cached_json(self, name: str, compute: Callable[[], T]) -> T:
        """`compute()` once; later calls (and resumed runs) read the saved JSON."""
        if self.exists(name):
            return self.read_json(name)
        value = compute()
        self.write_json(name, value)
        return self.read_json(name)

    def artefact(self, name: str, kind: type[T], compute: Callable[[], T]) -> T:
        """An artefact type that saves and loads itself (`value.save(path)`,
        `kind.load(path)`): computed once, always read back from its file."""
        return self.cached(name, compute, lambda value, tmp: value.save(tmp), kind.load)

    def cached(self, name: str, compute: Callable[[], T], save: Callable[[T, str], None],
               load: Callable[[Path], T]) -> T:
        """`compute()` once and `save(value, tmp)` atomically; the value is always read back
        with `load(path)`, so a fresh run and a resumed one continue from the same bytes."""
        if not self.exists(name):
            value = compute()
            atomic_save_tensor(lambda tmp: save(value, tmp), self.path(name))
        return load(self.path(name))


class ReadOnlyStore(RunStore):
    """A finished run: every artefact is read from disk, nothing is computed or written."""

    def _missing(self, name: str) -> SteerlensError:
        return SteerlensError(f"{self.root} has no {name}", fix="finish the run (--resume)")

    def write_json(self, name: str, obj) -> None:
        raise SteerlensError(f"{self.root} is opened read-only (writing {name})",
                             fix="write into a store of its own (e.g. RUN/mitigations)")

    def cached(self, name, compute, save, load):
        if not self.exists(name):
            raise self._missing(name)
        return load(self.path(name))

    def cached_json(self, name, compute):
        if not self.exists(name):
            raise self._missing(name)
        return self.read_json(name)

    def load(self, name: str, kind: type[T]) -> T:
        """An artefact type that loads itself (`kind.load(path)`), from its file."""
        return self.cached(name, None, None, kind.load)


FINISHED = (CONFIG_FILE, SUMMARY_FILE)


def open_run(path: str | Path, need: tuple[str, ...] = FINISHED) -> ReadOnlyStore:
    """A finished audit run, read-only; the files in `need` must be there (a one-line error
    naming the missing ones, before anything is loaded)."""
    root = Path(path)
    if not root.is_dir():
        raise SteerlensError(f"run directory {root} does not exist",
                             fix="pass an audit's --out directory")
    missing = [f for f in need if not (root / f).exists()]
    if missing:
        raise SteerlensError(f"{root} is not a finished audit run (no {', '.join(missing)})",
                             fix="pass an audit's --out directory; finish a killed one with its "
                                 "command plus --resume")
    return ReadOnlyStore(root)
