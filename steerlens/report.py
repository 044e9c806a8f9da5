"""Self-contained HTML report of a run directory (rebuilt from its saved files)."""

from __future__ import annotations

import html
from pathlib import Path

from steerlens.report_text import format_answer
from steerlens.store import atomic_write_text, read_json


def write_report(run: str | Path) -> Path:
    run = Path(run)
    summary = read_json(run / "summary.json")
    body = html.escape(format_answer(summary))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>steerlens audit</title></head>"
            f"<body><h1>steerlens audit</h1><pre>{body}</pre></body></html>")
    path = run / "report.html"
    atomic_write_text(path, page)
    return path
