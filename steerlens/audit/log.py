"""The audit's progress lines, on stderr so the printed answer on stdout stays clean."""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    """One progress line, `[steerlens] msg`, flushed at once (long stages stay visible)."""
    print(f"[steerlens] {msg}", file=sys.stderr, flush=True)
