"""Config dataclasses as command lines: a field with `help` metadata (`opt`) is a flag, and the
values given (on the command line or as Python keywords) override the defaults. One generator
for every job's config (`AuditConfig`, `MitigateConfig`, `StudyConfig`), so `steerlens audit`,
`mitigate` and `study` read their flags, and their Python entries their keywords, one way."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import field, fields
from typing import Any

from steerlens.audit.options import flag_kwargs
from steerlens.errors import SteerlensError


def opt(default, help: str, **argparse_kw):
    """A config field and its command-line flag in one place: `help` and argparse keywords
    (`flag=` when the flag is not `--field-name`) live in the field's metadata."""
    return field(default=default, metadata={"help": help, **argparse_kw})


def flag_fields(cls) -> list:
    """The fields of `cls` that are command-line flags."""
    return [f for f in fields(cls) if "help" in f.metadata]


def flag_name(f) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def add_flags(p: argparse.ArgumentParser, cls, text: Callable[[str], str] = str) -> None:
    """One flag per field of `cls` with help metadata; every default None, so what is not
    given keeps the config's default (or a preset's); `text` fills the help's placeholders.
    Lists accumulate over repeated flags and single values are given once (`audit.options`)."""
    for f in flag_fields(cls):
        kw = {k: v for k, v in f.metadata.items() if k not in ("help", "flag")}
        p.add_argument(flag_name(f), dest=f.name, default=None, **flag_kwargs(text(f.metadata["help"]), **kw))


def given(cls, values: Mapping[str, Any]) -> dict[str, Any]:
    """The flag fields of `cls` that `values` sets (None: not given), lists as tuples."""
    names = {f.name for f in flag_fields(cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
            if k in names and v is not None}


def check_known(values: Mapping[str, Any], known: set[str], what: str) -> None:
    """Python keywords that name no option are an error naming them and the options."""
    unknown = sorted(set(values) - known)
    if unknown:
        raise SteerlensError(f"unknown {what} option(s) {', '.join(unknown)}",
                             fix=f"use the CLI's option names with _ for -: {', '.join(sorted(known))}")


def config_of(cls, values: Mapping[str, Any], what: str | None = None):
    """`cls` with the given values over its defaults; `what` set: unknown names are an error."""
    if what is not None:
        check_known(values, {f.name for f in flag_fields(cls)}, what)
    return cls(**given(cls, values))
