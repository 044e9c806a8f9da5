"""User-facing errors: a message that names the problem and the fix, never a bare traceback."""

from __future__ import annotations


class SteerlensError(Exception):
    """An error caused by the user's input or environment; the CLI prints it without a traceback."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")


class DataError(SteerlensError):
    """A dataset file or row that does not have the fields steerlens needs."""


class ModelError(SteerlensError):
    """A model that cannot be found, verified or loaded."""


def cli_main(compute, show) -> int:
    """A command's body: `show(compute())` and exit 0, or the error's one line and exit 2."""
    import sys

    try:
        result = compute()
    except SteerlensError as e:
        print(f"steerlens: error: {e}", file=sys.stderr)
        return 2
    print(show(result))
    return 0
