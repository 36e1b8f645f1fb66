"""Checks of user input: :class:`ConfigError` (one line naming the flag) and the validators every
configuration uses, with the number syntax of the command line (``1/32``, ``1e-3``).

The lowest room of the package: it imports nothing of it, so that the remedies' registry and the studies'
configurations can both check their values with it.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad user-supplied value. ``str(err)`` is a one-line message naming the argument."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"{flag_name(argument)}: {message}")


def flag_name(name: str) -> str:
    """``EPOCHS`` or ``epochs`` -> ``--epochs``."""
    return "--" + name.lower().replace("_", "-")


def finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(name, f"must be finite (got {value:g})")
    return value


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


def integer_at_least(minimum: int):
    """A validator ``(name, value) -> int`` of :func:`at_least` with this ``minimum``."""
    def check(name: str, value: int) -> int:
        return at_least(name, value, minimum)

    check.__name__ = f"integer_at_least_{minimum}"
    return check


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
    return distinct(name, values)


def seeds_list(name: str, values: Sequence[int]) -> list[int]:
    values = [at_least(name, v, 0) for v in values]
    if not values:
        raise ConfigError(name, "needs at least one seed")
    return distinct(name, values)


def positive_values(name: str, values: Sequence[float]) -> list[float]:
    """A grid of positive numbers (weights, ratios): at least one, none repeated."""
    values = distinct(name, [positive_finite(name, x) for x in values])
    if not values:
        raise ConfigError(name, "needs at least one value")
    return values


def distinct(name: str, values: Sequence[Any]) -> list[Any]:
    """``values`` when no value repeats (``0.125`` and ``1/8`` are the same number); a grid with a repeated
    value would train and write every run of it twice."""
    values = list(values)
    seen: list[Any] = []
    for value in values:
        if value in seen:
            shown = format_number(value) if isinstance(value, float) else str(value)
            raise ConfigError(name, f"repeated value {shown} in {' '.join(map(str, values))}")
        seen.append(value)
    return values


def writable_folder(name: str, path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that a file can be written inside it ("" is no folder). Call it last,
    after every other check: a refused command leaves no folder behind."""
    if not str(path).strip():
        raise ConfigError(name, "needs a folder (got an empty path)")
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(name, f"cannot write to {str(path)!r} ({err.strerror or err})") from None
    return path


def creatable_folder(name: str, path: str | os.PathLike) -> Path:
    """Check, without leaving anything behind, that :func:`writable_folder` will be able to make ``path`` and write
    in it: so that a command can refuse a bad output folder before its slow checks, and create its folders only
    when every check has passed."""
    if not str(path).strip():
        raise ConfigError(name, "needs a folder (got an empty path)")
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        Path(tempfile.mkdtemp(dir=existing, prefix=".write-test-")).rmdir()
    except OSError as err:
        raise ConfigError(name, f"cannot write to {str(path)!r} ({getattr(err, 'strerror', None) or err})") from None
    return path


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
