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
    return distinct(name, values)


def seeds_list(name: str, values: Sequence[int]) -> list[int]:
    values = [at_least(name, v, 0) for v in values]
    if not values:
        raise ConfigError(name, "needs at least one seed")
    return distinct(name, values)


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
    """Create ``path`` if needed and check that a file can be written inside it ("" is no folder)."""
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


def constant_comments(path: str | os.PathLike) -> dict[str, str]:
    """The comment of each upper-case module-level constant of the Python file ``path``: the comment on
    its line (``EPOCHS = 500  # SGD epochs``), else the comment lines right above it. Read with
    :mod:`tokenize`, without importing the file (so a script's ``--help`` stays fast)."""
    import tokenize

    comments: dict[str, str] = {}
    above: list[str] = []
    name, depth, line_start = None, 0, True
    with open(path, "rb") as source:
        tokens = list(tokenize.tokenize(source.readline))
    for i, token in enumerate(tokens):
        kind, text = token.type, token.string
        if kind == tokenize.COMMENT:
            comment = text.lstrip("#").strip()
            if name is not None and name not in comments:
                comments[name] = comment
            elif name is None and token.start[1] == 0:
                above.append(comment)
            continue
        if kind == tokenize.NL:
            if name is None and depth == 0 and tokens[i - 1].type == tokenize.NL:
                above = []  # a blank line ends a comment block
            continue
        if kind == tokenize.NEWLINE:
            name, line_start = None, True
            continue
        if kind == tokenize.OP and text in "([{":
            depth += 1
        elif kind == tokenize.OP and text in ")]}":
            depth -= 1
        if line_start and depth == 0 and kind == tokenize.NAME and token.start[1] == 0:
            following = tokens[i + 1]
            if text.isupper() and following.type == tokenize.OP and following.string in ("=", ":"):
                name = text
                if above:
                    comments[name] = " ".join(above)
            above = []
        line_start = False
    return comments


def _show(value: Any) -> str:
    """A default as one would type it: 1/32 for a weight, words separated by spaces for a list."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):  # 0.01 as it reads, 0.0078125 as 1/128
        return format_number(value) if math.isfinite(value) and len(f"{value:g}") > 6 else f"{value:g}"
    if isinstance(value, (list, tuple)):  # weights and ratios: 1/8 1/4 1/2 1 2
        return " ".join(format_number(v) if isinstance(v, float) and math.isfinite(v) else _show(v)
                        for v in value) or "(none)"
    if value == "":
        return '""'
    return str(value)


def _chosen_preset(argv: Sequence[str]) -> str | None:
    for i, word in enumerate(argv):
        if word == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--preset="):
            return word.split("=", 1)[1]
    return None


def override_from_argv(
    constants: dict[str, Any],
    description: str | None = None,
    argv: Sequence[str] | None = None,
    help_text: dict[str, str] | None = None,
    choices: dict[str, Iterable[str]] | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
    fields: dict[str, str] | None = None,
    prog: str | None = None,
    repeats_allowed: Iterable[str] = (),
) -> dict[str, Any]:
    """Return ``constants`` (upper-case names only) updated from command-line flags.

    The type of each flag is the type of its default: bool -> ``--x/--no-x`` (a ``FOO_ON`` switch reads
    ``--no-foo``), int, float (fractions like ``1/32`` accepted), str, and lists or tuples -> one or more
    values of their first element's type. ``--help`` lists every constant with its description
    (``help_text``, e.g. :func:`constant_comments` of the script), its allowed ``choices`` (checked
    here: a value outside them is a one-line error, exit 2), its default and, for the config ``fields``
    (constant -> field) that ``presets`` (name -> {field: value}) set, the value each preset uses (only
    the preset given with ``--preset``, when one is). A list is a grid (weights, seeds, regimes...): a
    repeated value is a one-line error, except for the constants in ``repeats_allowed`` (lists whose
    positions mean something, e.g. counts per class).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    help_text, choices, presets, fields = help_text or {}, choices or {}, presets or {}, fields or {}
    parser = OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    chosen = _chosen_preset(argv)
    shown_presets = [chosen] if chosen in presets else list(presets)
    names = [n for n in constants if n.isupper() and not n.startswith("_")]
    for name in names:
        default = constants[name]
        flag = flag_name(name)
        parts = [help_text.get(name, "").replace("%", "%%")]
        if name in choices:
            parts.append("[" + " | ".join(choices[name]) + "]")
        default_text = f"default: {_show(default)}"
        preset_values = [f"{p}: {_show(presets[p][fields[name]])}" for p in shown_presets
                         if name in fields and fields[name] in presets[p]]
        if preset_values:
            default_text += "; preset " + ", ".join(preset_values)
        text = " ".join(p for p in parts if p) + f" ({default_text.replace('%', '%%')})"
        if isinstance(default, bool):
            if name.endswith("_ON"):  # FIGURES_ON: --no-figures (--figures may name something else)
                switch = ("--no-" if default else "--") + flag_name(name[:-3])[2:] + ("" if default else "-on")
                parser.add_argument(switch, dest=name, action="store_const", const=not default, default=default,
                                    help=("turn off: " if default else "turn on: ") + parts[0])
                parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=default,
                                    help=argparse.SUPPRESS)  # the former spelling, --figures-on/--no-figures-on
            else:
                parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                    default=default, help=text)
        elif isinstance(default, (list, tuple)):
            kind = _element_type(default[0]) if default else str
            parser.add_argument(flag, dest=name, nargs="+", type=kind, default=default, help=text,
                                metavar=_metavar(kind, name in choices))
        elif default is None:
            parser.add_argument(flag, dest=name, type=str, default=None, help=text, metavar="TEXT")
        else:
            kind = _element_type(default)
            parser.add_argument(flag, dest=name, type=kind, default=default, help=text,
                                metavar=_metavar(kind, name in choices))
    args = parser.parse_args(argv)
    values = {name: getattr(args, name) for name in names}
    repeats_allowed = set(repeats_allowed)
    try:
        for name, allowed in choices.items():
            if isinstance(values[name], (list, tuple)):
                all_of(name, values[name], allowed)
            else:
                one_of(name, values[name], allowed)
        for name in names:
            if isinstance(values[name], (list, tuple)) and name not in repeats_allowed:
                distinct(name, values[name])
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return values


def _metavar(kind: Callable[[str], Any], has_choices: bool) -> str:
    if has_choices:
        return "NAME"
    return {_parse_int: "N", parse_number: "X"}.get(kind, "TEXT")


def flags_given(argv: Sequence[str] | None, names: Iterable[str]) -> set[str]:
    """The constants among ``names`` whose flag appears on the command line (so that a flag given
    explicitly wins over a preset even when its value equals the default)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    words = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {n for n in names if flag_name(n) in words or "--no-" + flag_name(n)[2:] in words
            or (n.endswith("_ON") and "--no-" + flag_name(n[:-3])[2:] in words)}


@contextmanager
def exit_on_config_error(prog: str | None = None) -> Iterator[None]:
    """Turn a :class:`ConfigError` into one line on stderr and exit status 2 (no traceback)."""
    try:
        yield
    except ConfigError as err:
        prog = prog or Path(sys.argv[0]).name
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
