"""The run store: one directory per audit, every file written atomically, so runs resume."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from steerlens.errors import SteerlensError


def _clean(obj):
    """JSON-safe values: NaN/inf become null so files stay strict JSON and byte-stable."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if "tmp" in locals() and os.path.exists(tmp):
            os.unlink(tmp)
        raise SteerlensError(f"cannot write {path}: {e.strerror or e}",
                             fix="choose a writable --out directory with free space") from e


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=1, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def atomic_save_tensor(save_fn, path: Path) -> None:
    """Run `save_fn(tmp_path)` (e.g. a safetensors save) and rename the result into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise SteerlensError(f"cannot write {path}: {e}", fix="choose a writable --out") from e
