"""Validation of user input, and nanoGPT-style command-line overrides of a script's constants.

A script keeps its configuration as upper-case module constants. :func:`override_from_argv` turns each
constant into a flag (``EPOCHS`` -> ``--epochs``), parses the command line without ever ``eval``-ing
it, and returns the updated values. Validation raises :class:`ConfigError`, which
:func:`exit_on_config_error` turns into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator


class ConfigError(ValueError):
    """A bad user-supplied value. ``str(err)`` is a one-line message naming the argument."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"{flag_name(argument)}: {message}")


def flag_name(name: str) -> str:
    """``EPOCHS`` or ``epochs`` -> ``--epochs``."""
    return "--" + name.lower().replace("_", "-")


# ----------------------------------------------------------------------------------------- validators


def positive_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(name, f"must be finite and > 0 (got {value:g})")
    return value


def non_negative_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(name, f"must be finite and >= 0 (got {value:g})")
    return value


def at_least(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum} (got {value})")
    return int(value)


def probability_below_one(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 <= value < 1.0):
        raise ConfigError(name, f"must be in [0, 1) (got {value:g})")
    return value


def one_of(name: str, value: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(name, f"unknown value {value!r}; choose from {', '.join(choices)}")
    return value


def all_of(name: str, values: Sequence[str], choices: Iterable[str]) -> list[str]:
    values = list(values)
    if not values:
        raise ConfigError(name, "needs at least one value")
    for value in values:
        one_of(name, value, choices)
    if len(set(values)) != len(values):
        raise ConfigError(name, f"repeated value in {', '.join(values)}")
    return values


def seeds_list(name: str, values: Sequence[int]) -> list[int]:
    values = [at_least(name, v, 0) for v in values]
    if not values:
        raise ConfigError(name, "needs at least one seed")
    if len(set(values)) != len(values):
        raise ConfigError(name, "repeated seed")
    return values


def writable_folder(name: str, path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that a file can be written inside it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(name, f"cannot write to {str(path)!r} ({err.strerror or err})") from None
    return path


# ----------------------------------------------------------------------------------- command line


def parse_number(text: str) -> float:
    """A float from ``"0.5"``, ``"1e-3"`` or a fraction such as ``"1/32"``; never ``eval``."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def format_number(value: float) -> str:
    """Inverse of :func:`parse_number` for weights and ratios: 0.03125 -> '1/32', 8.0 -> '8', 0.3 -> '0.3'."""
    if value >= 1 or value <= 0:
        return f"{value:g}"
    inverse = 1 / value
    return f"1/{inverse:g}" if abs(inverse - round(inverse)) < 1e-9 else f"{value:g}"


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _element_type(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        raise TypeError("bool handled separately")
    if isinstance(default, int):
        return _parse_int
    if isinstance(default, float):
        return parse_number
    return str


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def override_from_argv(
    constants: dict[str, Any],
    description: str | None = None,
    argv: Sequence[str] | None = None,
    help_text: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return ``constants`` (upper-case names only) updated from command-line flags.

    The type of each flag is the type of its default: bool -> ``--x/--no-x``, int, float (fractions
    like ``1/32`` accepted), str, and lists or tuples -> one or more values of their first element's
    type. ``--help`` lists every constant with its default.
    """
    help_text = help_text or {}
    parser = OneLineParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [n for n in constants if n.isupper() and not n.startswith("_")]
    for name in names:
        default = constants[name]
        flag = flag_name(name)
        text = help_text.get(name, "") + f" (default: {default!r})"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=default, help=text)
        elif isinstance(default, (list, tuple)):
            kind = _element_type(default[0]) if default else str
            parser.add_argument(flag, dest=name, nargs="+", type=kind, default=default, help=text)
        elif default is None:
            parser.add_argument(flag, dest=name, type=str, default=None, help=text)
        else:
            parser.add_argument(flag, dest=name, type=_element_type(default), default=default,
                                help=text)
    args = parser.parse_args(argv)
    return {name: getattr(args, name) for name in names}


def flags_given(argv: Sequence[str] | None, names: Iterable[str]) -> set[str]:
    """The constants among ``names`` whose flag appears on the command line (so that a flag given
    explicitly wins over a preset even when its value equals the default)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    words = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {n for n in names if flag_name(n) in words or "--no-" + flag_name(n)[2:] in words}


@contextmanager
def exit_on_config_error(prog: str | None = None) -> Iterator[None]:
    """Turn a :class:`ConfigError` into one line on stderr and exit status 2 (no traceback)."""
    try:
        yield
    except ConfigError as err:
        prog = prog or Path(sys.argv[0]).name
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
