"""``python -m iwshift.report --results DIR``: the claims report (see :mod:`iwshift.report`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .. import cli
from ..checks import ConfigError
from .load import load
from .render import check_readme, check_report, make_report, write_readme


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="python -m iwshift.report", description="Claims report: every results folder -> REPORT.md with a verdict on each of the paper's claims.",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="results root holding the study folders (results)")
    parser.add_argument("--out", default=None, help="report file (default: <results>/REPORT.md)")
    parser.add_argument("--docs", default=None, help="also copy the figures into this folder (e.g. docs)")
    parser.add_argument("--readme", default=None, metavar="README",
                        help="also write the claims table into this README's claims-table block")
    parser.add_argument("--check", default=None, metavar="README",
                        help="only check that this README's claims table and the report (--out, default "
                             "<results>/REPORT.md, when it exists) are the results'; exit 1 if not")
    args = parser.parse_args(argv)
    with cli.exit_on_config_error("python -m iwshift.report"):
        if not Path(args.results).is_dir():
            raise ConfigError("results", f"no results folder {args.results!r}")
        if not any(Path(args.results).rglob("config.json")):
            raise ConfigError("results", f"no results in {args.results!r} (no run folder with a config.json): "
                                         "run a study first, or name the folder that holds them")
        for flag in ("readme", "check"):
            if getattr(args, flag) and not Path(getattr(args, flag)).is_file():
                raise ConfigError(flag, f"no file {getattr(args, flag)!r}")
        out = Path(args.out) if args.out else Path(args.results) / "REPORT.md"
        if args.check:
            res = load(args.results)  # once for both checks
            differences = [check_readme(args.results, args.check, res)]
            print(differences[0] or f"{args.check}: the claims table is the results' ({args.results})")
            if out.is_file():
                differences.append(check_report(args.results, args.out, res))
                print(differences[1] or f"{out}: the report is the results' ({args.results})")
            return 1 if any(differences) else 0
        cli.writable_folder("out", out.parent)
        if args.docs:
            cli.writable_folder("docs", args.docs)
        path, claims = make_report(args.results, out, args.docs)
        if args.readme:
            write_readme(args.results, args.readme)
    verdicts = pd.Series([c.verdict for c in claims]).value_counts()
    print(f"{path}: {len(claims)} claims (" + ", ".join(f"{n} {k}" for k, n in verdicts.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
