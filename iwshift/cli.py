"""The command line of a script: nanoGPT-style overrides of its upper-case constants.

A script keeps its configuration as upper-case module constants. :func:`override_from_argv` turns each
constant into a flag (``EPOCHS`` -> ``--epochs``), parses the command line without ever ``eval``-ing it, and
returns the updated values. A constant named like a field of the study's configuration (``EPOCHS`` and
``epochs``) is that knob: its choices come from the field (:func:`iwshift.config.knob`), its help from the
constant's comment, and a remedy parameter the script has no constant for still gets its flag, from the
remedies' registry. :func:`exit_on_config_error` turns a :class:`~iwshift.checks.ConfigError` into one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from . import checks as v
from .checks import (ConfigError, all_of, at_least, creatable_folder, distinct, flag_name,  # noqa: F401  (the
                     format_number, non_negative_finite, parse_number, positive_finite,  # scripts' checks of
                     writable_folder)  # their options)
from .losses import remedy_params


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


def knob_constants(config: type | None) -> dict[str, str]:
    """Constant name -> field name of every field of ``config`` (``EPOCHS`` -> ``epochs``)."""
    return {f.name.upper(): f.name for f in dataclass_fields(config)} if config is not None else {}


def override_from_argv(
    constants: dict[str, Any],
    description: str | None = None,
    argv: Sequence[str] | None = None,
    help_text: dict[str, str] | None = None,
    choices: dict[str, Iterable[str]] | None = None,
    config: type | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
    prog: str | None = None,
    repeats_allowed: Iterable[str] = (),
) -> dict[str, Any]:
    """Return ``constants`` (upper-case names only) updated from command-line flags.

    The type of each flag is the type of its default: bool -> ``--x/--no-x`` (a ``FOO_ON`` switch reads
    ``--no-foo``), int, float (fractions like ``1/32`` accepted), str, and lists or tuples -> one or more
    values of their first element's type. The constants named like a field of the study's ``config`` are its
    knobs: their allowed values are the field's choices (checked here: a value outside them is a one-line
    error, exit 2), and a remedy parameter of ``config`` without a constant gets a flag too (its default and
    help from the registry). ``choices`` gives the allowed values of the script's other constants. ``--help``
    lists every flag with its description (``help_text``, e.g. :func:`constant_comments` of the script), its
    choices, its default and the value each of ``presets`` (name -> {field: value}) gives it (only the preset
    given with ``--preset``, when one is). A list is a grid (weights, seeds, regimes...): a repeated value is a
    one-line error, except for the constants in ``repeats_allowed`` (lists whose positions mean something).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    help_text, presets = dict(help_text or {}), presets or {}
    constants = dict(constants)
    knobs = knob_constants(config)
    choices = dict(choices or {})
    if config is not None:
        from .config import knob_choices

        for name, allowed in knob_choices(config).items():
            if name.upper() in constants:
                choices.setdefault(name.upper(), allowed)
        from .losses import REMEDIES

        offered = knob_choices(config).get("remedies", ())  # the remedies this study offers
        used = {p.name for name in offered for p in REMEDIES[name].params}
        for param in remedy_params().values():  # a remedy's parameter: a flag even without a constant
            if param.name in used and param.name.upper() in knobs and param.name.upper() not in constants:
                constants[param.name.upper()] = param.default
                help_text.setdefault(param.name.upper(), param.help)
    fields = {const: name for const, name in knobs.items() if const in constants}
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
            if name not in values:
                continue
            if isinstance(values[name], (list, tuple)):
                v.all_of(name, values[name], allowed)
            else:
                v.one_of(name, values[name], allowed)
        for name in names:
            if isinstance(values[name], (list, tuple)) and name not in repeats_allowed:
                v.distinct(name, values[name])
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return values


def config_fields(values: dict[str, Any], config: type, presets: dict[str, dict[str, Any]], preset: str,
                  argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The fields of ``config`` from a script's parsed ``values``: the knobs' values, where the preset (its
    differences from the defaults) fills every knob whose flag was not given and whose constant the user did
    not change from the field's default."""
    v.one_of("preset", preset, presets)
    knobs = {const: name for const, name in knob_constants(config).items() if const in values}
    from .config import defaults

    field_defaults = defaults(config)
    given = flags_given(argv, knobs)
    explicit = {name for const, name in knobs.items() if const in given or not _equal(values[const], field_defaults[name])}
    chosen = {name: values[const] for const, name in knobs.items()}
    chosen.update({k: val for k, val in presets[preset].items() if k not in explicit})
    return chosen


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


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
