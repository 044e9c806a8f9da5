"""One rule for every option's values, on the command line and from Python: nothing is dropped
and nothing is misread.

Command line: a list option takes several values after one flag and keeps accumulating over
repeated flags (together they replace the default); a value given twice (after conversion, so
`0.15` and `.15` are one value) is an error naming it, and so is a single-valued option given
twice. Python: a list option takes a list or tuple, or one value (a string is one value, never
its characters); a value is never parsed from a string (`n_goals="30"` is an error); the only
conversions are an int where a float is asked and a path where a string is; None leaves an
optional option unset; duplicates are an error as on the command line. Any other value is a
`SteerlensError` naming the option and the type it takes, raised before any model loads.
"""

from __future__ import annotations

import argparse
import functools
import numbers
import os
import re
import typing
import weakref
from dataclasses import dataclass, fields

from steerlens.errors import SteerlensError

LIST_RULE = ("several values after one flag or over repeated flags, all kept; "
             "a value given twice is an error")
EPILOG = ("Every value counts once: a list option takes several values after one flag or over "
          "repeated flags (all are kept and replace the default), a value given twice is an "
          "error, and any other option may be given once.")


class _Counted(argparse.Action):
    """An action that knows whether it already stored into this parse's namespace."""

    def _seen(self, namespace: argparse.Namespace) -> bool:
        last = getattr(self, "_last", None)
        seen = last is not None and last() is namespace
        self._last = weakref.ref(namespace)
        return seen


def duplicates(items) -> list:
    """Values that occur more than once, in order of their second occurrence."""
    seen, dup = [], []
    for x in items:
        if x in seen and x not in dup:
            dup.append(x)
        seen.append(x)
    return dup


class ListAction(_Counted):
    """`nargs="+"` that extends across repeated flags and rejects a value given twice."""

    def __init__(self, option_strings, dest, nargs="+", **kw):
        super().__init__(option_strings, dest, nargs=nargs, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        items = (list(getattr(namespace, self.dest)) if self._seen(namespace) else []) + list(values)
        dup = duplicates(items)
        if dup:
            raise argparse.ArgumentError(self, f"{', '.join(map(str, dup))} given more than once "
                                               "(each value counts once: give it once)")
        setattr(namespace, self.dest, items)


class OnceAction(_Counted):
    """A single-valued option that may be given once (a second value would drop the first)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self._seen(namespace):
            raise argparse.ArgumentError(self, f"given more than once ({getattr(namespace, self.dest)} "
                                               f"and {values}): give it once")
        setattr(namespace, self.dest, values)


# argparse reads `-1e-1` and `-inf` as flags (its negative numbers are `-1` and `-.5` only), so
# `--dose-sweep -1e-1 0.1` failed; a parser without flags like `-1` can read every number.
_NEGATIVE_NUMBER = re.compile(r"^-(\d|\.\d|inf$|infinity$|nan$)", re.IGNORECASE)


def read_negative_numbers(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let `parser` take any negative number (`-1e-1`, `-inf`) as a value."""
    parser._negative_number_matcher = _NEGATIVE_NUMBER
    return parser


def list_option(help: str, **kw) -> dict:
    """argparse keywords of a list option under the rule, its help saying the rule."""
    kw.pop("nargs", None)
    return {**kw, "action": ListAction, "help": f"{help} ({LIST_RULE})"}


def flag_kwargs(help: str, **kw) -> dict:
    """argparse keywords for a generated flag: lists under `list_option`, other value-taking
    options given at most once, flags (`action=`) as declared."""
    if kw.get("nargs") == "+":
        return list_option(help, **kw)
    if "action" in kw:
        return {**kw, "help": help}
    return {**kw, "action": OnceAction, "help": help}


# -- Python values ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """What one option takes from Python: items of `type`, a list of them when `many`."""

    name: str
    type: type = str
    many: bool = False
    optional: bool = False
    choices: tuple = ()


_NAMES = {str: "a string", int: "an int", float: "a number", bool: "True or False"}


def _describe(spec: Spec) -> str:
    one = _NAMES[spec.type] + (f" (one of: {', '.join(map(str, spec.choices))})" if spec.choices else "")
    if spec.many:
        plural = {str: "strings", int: "ints", float: "numbers", bool: "booleans"}[spec.type]
        one = f"a list of {plural} (or {one})"
    return one + (" or None" if spec.optional else "")


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _bad(spec: Spec, value) -> SteerlensError:
    fix = (f"pass {value.strip()} (a number, not a string)" if isinstance(value, str)
           and spec.type in (int, float) and value.strip().lstrip("-").replace(".", "", 1).isdigit()
           else f"pass {_describe(spec)}")
    return SteerlensError(f"option {spec.name} takes {_describe(spec)}; got {_shown(value)}", fix=fix)


def _convert(value, typ: type):
    """`value` as `typ` by the rule (no parsing of strings), or None when it is not one."""
    if typ is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if typ is int:
        return int(value) if isinstance(value, numbers.Integral) else None
    if typ is float:
        return float(value) if isinstance(value, numbers.Real) else None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return value if isinstance(value, str) else None


def normalise_value(spec: Spec, value):
    """One value of a single-valued option by the rule."""
    if value is None and spec.optional:
        return None
    got = _convert(value, spec.type)
    if got is None or (spec.choices and got not in spec.choices):
        raise _bad(spec, value)
    return got


def normalise_list(name: str, value, item_type: type = str, choices: tuple = ()) -> tuple:
    """A list option's Python value as a tuple: one value becomes a one-item list, a list or
    tuple is checked item by item, duplicates are an error naming them."""
    spec = Spec(name, item_type, many=True, choices=choices)
    if _convert(value, item_type) is not None:
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _bad(spec, value)
    items = []
    for x in value:
        got = _convert(x, item_type)
        if got is None or (choices and got not in choices):
            raise SteerlensError(f"option {name} takes {_describe(spec)}; item {len(items)} is "
                                 f"{_shown(x)}", fix=f"pass {_describe(spec)}")
        items.append(got)
    dup = duplicates(items)
    if dup:
        raise SteerlensError(f"option {name}: {', '.join(map(str, dup))} given more than once",
                             fix="give each value once")
    return tuple(items)


def normalise(spec: Spec, value):
    """A value of the option `spec` by the rule (None stays None where the option allows it)."""
    if spec.many and not (value is None and spec.optional):
        return normalise_list(spec.name, value, spec.type, spec.choices)
    return normalise_value(spec, value)


def check_values(specs: dict[str, Spec], values: dict) -> dict:
    """`values` normalised by their specs (every key must have one)."""
    return {k: normalise(specs[k], v) for k, v in values.items()}


# -- where specs come from -------------------------------------------------------------------

def _spec_from_hint(name: str, hint, choices: tuple = ()) -> Spec:
    args = typing.get_args(hint)
    optional = type(None) in args  # `int | None`
    if optional:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return Spec(name, typing.get_args(hint)[0], True, optional, choices)
    return Spec(name, hint if hint in _NAMES else str, False, optional, choices)


@functools.cache
def specs_from_dataclass(cls) -> dict[str, Spec]:
    """Each field's spec from its annotation (`tuple[float, ...]`, `int | None`, ...) and the
    `choices` in its metadata."""
    hints = typing.get_type_hints(cls)
    return {f.name: _spec_from_hint(f.name, hints[f.name], tuple(f.metadata.get("choices", ())))
            for f in fields(cls)}


def normalise_fields(obj) -> None:
    """Normalise a frozen dataclass's fields in place (for `__post_init__`)."""
    for name, spec in specs_from_dataclass(type(obj)).items():
        value = getattr(obj, name)
        got = normalise(spec, value)
        if got is not value:
            object.__setattr__(obj, name, got)


def specs_from_parser(parser: argparse.ArgumentParser) -> dict[str, Spec]:
    """Each destination's spec from its argparse action (a flag without a value is a bool; a
    default of None makes it optional)."""
    out = {}
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        typ = bool if a.nargs == 0 else (a.type or str)
        out[a.dest] = Spec(a.dest, typ, isinstance(a, ListAction) or a.nargs in ("+", "*"),
                           a.default is None, tuple(a.choices or ()))
    return out
