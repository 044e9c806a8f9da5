"""User-facing errors: a message that names the problem and the fix, never a bare traceback.

Every entry point prints them one way, on stderr, and exits 2:

    steerlens: error: <problem>
      fix: <fix>

(`cli_main` for a command's body, `ArgumentParser` for its flags.) docs/errors.md lists every
kind of error by module; tests/test_errors.py checks it against the raise sites.
"""

from __future__ import annotations

import argparse
import sys

PREFIX = "steerlens: error: "


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


def cli_main(compute, show, interrupted: str | None = None) -> int:
    """A command's body: `show(compute())` printed and exit 0, or the error and exit 2; with
    `interrupted`, Ctrl-C prints that line and exits 130."""
    try:
        result = compute()
    except SteerlensError as e:
        print(f"{PREFIX}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(f"steerlens: interrupted; {interrupted}", file=sys.stderr)
        return 130
    text = show(result)
    if text is not None:
        print(text)
    return 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the one error style: a bad flag is `steerlens: error: ...`, its fix the
    command's --help, exit 2 (argparse's own code)."""

    def error(self, message: str):
        self.exit(2, f"{PREFIX}{message}\n  fix: see `{self.prog} --help`\n")
