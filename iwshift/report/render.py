"""The claims report as text: ``REPORT.md``, the README's claims table, and the checks that both are what the
results give now."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .. import results
from ..health import excluded_note
from ..stats import CONTRADICTED, INCONCLUSIVE, NOT_RUN, SUPPORTED
from .claims import RULES, Claim, all_claims, markdown_table, source_of
from .figures import write_figures
from .load import Results, load, n_seeds

RERUN = "_rerun"  # a folder <name>_rerun/ holds a rerun of <name>/: the report compares their verdicts


def claims_table(claims: Sequence[Claim]) -> str:
    rows = []
    for claim in claims:
        for row in claim.rows:
            name = f"({claim.key})" + (f" {row.label}" if row.label else "")
            rows.append([name, claim.quantity if row is claim.rows[0] else "″", row.value,
                         row.n_seeds if row.n_seeds is not None else "—", row.source.data, row.source.preset,
                         row.source.device, f"**{row.verdict}**"])
    return markdown_table(["claim", "quantity", "value [95 % CI]", "n seeds", "data", "preset", "device",
                           "verdict"], rows)


def sources_table(res: Results) -> str:
    if res.table.empty:
        return "No results."
    rows = []
    for (source, study), t in res.table.groupby(["source", "_study"], sort=True):
        records = [r for (s, _), r in res.records.items() if s == source]
        s = source_of(t)
        rows.append([f"`{source}/`", study, t["run"].nunique(), n_seeds(t), excluded_note(t) or "none", s.data,
                     s.preset, s.device,
                     ", ".join(sorted({str(r.get("git_revision", "unknown"))[:12] for r in records})),
                     max((str(r.get("created", "")) for r in records), default="") or "unknown"])
    return markdown_table(["results", "study", "runs", "seeds", "left out of verdicts (collapsed, diverged)", "data",
                           "preset", "device", "git revision", "newest result"], rows)


def training_path(record: dict) -> str:
    """How a run's stack trained, in words (its record's ``trained``): engine, capture, update, weight copies and
    convolutions per layer."""
    trained = record.get("trained")
    if not trained:
        return "not recorded"
    parts = [str(trained.get("engine", "?"))]
    for key in ("capture", "update"):
        if key in trained:
            parts.append(f"{key} {trained[key]}")
    if "weight_copies" in trained:
        parts.append("bf16 weight copies" if trained["weight_copies"] else "no weight copies")
    layers = trained.get("convolutions_per_layer")
    if layers:
        kinds = sorted(set(layers))
        parts.append("convolutions " + (kinds[0] if len(kinds) == 1 else "/".join(map(str, layers))))
    return ", ".join(parts)


def paths_section(res: Results) -> list[str]:
    """The runs counted per training path in each results folder, and every run whose path differs from the one
    most of its folder's runs took (a fallback: a failed capture, an update or a convolution that fell back)."""
    rows, odd = [], []
    for source in sorted({s for s, _ in res.records}):
        paths = pd.Series({run: training_path(r) for (s, run), r in res.records.items() if s == source})
        usual = paths.value_counts().index[0]
        for path, count in paths.value_counts().items():
            rows.append([f"`{source}/`", path, count])
        odd += [f"`{source}/{run}`: {path} (its folder's runs: {usual})" for run, path in paths.items()
                if path != usual]
    if not rows:
        return []
    return ["## How the runs were trained", "",
            "Each run's `config.json` says which path trained its stack (`trained`).", "",
            markdown_table(["results", "path", "runs"], rows), "",
            ("**Runs whose path differs from their folder's:** " + "; ".join(odd) + ".") if odd
            else "Every run took its folder's path.", ""]


def rerun_section(res: Results, claims: Sequence[Claim]) -> list[str]:
    """For each folder ``<name>_rerun/``: the claims' rows computed on it in place of ``<name>/``, beside the
    original verdicts; a row that flips is named."""
    parts = []
    for source in sorted({s for s in res.table["source"].unique() if s.endswith(RERUN)} if len(res.table) else []):
        original = source[: -len(RERUN)]
        rerun_claims, _ = all_claims(res.substitute(original, source))
        rows, flips = [], 0
        for claim, again in zip(claims, rerun_claims):
            for row, other in zip(claim.rows, again.rows):
                if row.verdict == NOT_RUN and other.verdict == NOT_RUN:
                    continue
                if row.value == other.value and row.source == other.source:
                    continue  # a row the rerun does not touch
                flips += row.verdict != other.verdict
                rows.append([f"({claim.key}) {row.label}", row.value, f"**{row.verdict}**", other.value,
                             f"**{other.verdict}**" + (" (flips)" if row.verdict != other.verdict else "")])
        records = [r for (s, _), r in res.records.items() if s == source]
        stacks = sorted({r.get("stack_size") for r in records if r.get("stack_size") is not None})
        parts += [f"### `{source}/`: a rerun of `{original}/`", "",
                  f"The same command, split into other stacks (stack sizes {', '.join(map(str, stacks))}). "
                  + (f"**{flips} row(s) flip.**" if flips else "No verdict flips."), "",
                  markdown_table(["row", f"`{original}/`", "verdict", f"`{source}/`", "verdict"], rows) if rows
                  else "No row of the claims reads these results.", ""]
    return parts


def render(res: Results, claims: Sequence[Claim], remedies: Sequence[Claim], figures: dict[str, str],
           figure_folder: str) -> str:
    records = list(res.records.values())
    newest = max((str(r.get("created", "")) for r in records), default="") or "no results"
    revisions = ", ".join(sorted({str(r.get("git_revision", "unknown")) for r in records})) or "—"
    counts = pd.Series([c.verdict for c in [*claims, *remedies]]).value_counts()
    parts = [
        "# Claims report", "",
        f"Made by `python -m iwshift.report` from the results alone (it changes only when they do). "
        f"Newest result: {newest}. Git revision(s) of the results: {revisions}.", "",
        "Verdicts: " + ", ".join(f"{counts.get(x, 0)} {x}" for x in (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN))
        + ".", "",
        "## Results read", "", sources_table(res), "",
        *paths_section(res),
        "## Verdict rules", "", RULES,
        "## Claims", "",
        *[f"* **({c.key})** {c.statement} — **{c.verdict}**" for c in claims], "",
        claims_table(claims), "",
        "## Remedies: do they bring the weighting effect back?", "",
        *[f"* **({c.key})** {c.statement} — **{c.verdict}**" for c in remedies], "",
        claims_table(remedies), "",
    ]
    rerun = rerun_section(res, claims)
    if rerun:
        parts += ["## Verdicts on a rerun", "", *rerun]
    parts += ["## Details"]
    for claim in [*claims, *remedies]:
        parts += ["", f"### ({claim.key}) {claim.verdict}", "", claim.statement, "",
                  f"*Quantity:* {claim.measure}. *Rule:* {claim.rule}.", ""]
        parts += [block + "\n" for block in claim.details]
    parts += ["## Figures", ""]
    parts += [f"![{name}]({figure_folder}/{name}.png)\n\n*{caption}.*\n" for name, caption in figures.items()] \
        or ["No figures: no study has been run.\n"]
    return "\n".join(parts).rstrip() + "\n"


README_BLOCK = "claims-table"


def readme_table(claims: Sequence[Claim]) -> str:
    """The README's claims table: each claim once in a plain sentence, then a line per measured part with its
    value, seeds, data, preset, device and verdict (the README block :func:`check_readme` compares)."""
    rows = []
    for claim in claims:
        for row in claim.rows:
            rows.append([f"({claim.key})" + (f" {row.label}" if row.label else ""),
                         claim.statement if row is claim.rows[0] else "″", row.value,
                         row.n_seeds if row.n_seeds is not None else "—",
                         " · ".join((row.source.data, row.source.preset, row.source.device)), f"**{row.verdict}**"])
    return markdown_table(["claim", "in one sentence", "value [95 % interval over seeds]", "seeds",
                           "data · preset · device", "verdict"], rows)


def readme_block(results_root: str | Path, res: Results | None = None) -> str:
    """The claims table the README must show for the results under ``results_root`` (``res``: them, loaded)."""
    claims, _ = all_claims(res if res is not None else load(results_root))
    return readme_table(claims)


def write_readme(results_root: str | Path, readme_path: str | Path) -> None:
    from .. import readme

    path = Path(readme_path)
    results.write_text(path, readme.replace_block(path.read_text(), README_BLOCK, readme_block(results_root)))


def check_readme(results_root: str | Path, readme_path: str | Path, res: Results | None = None) -> str | None:
    """None when the README's claims table is the one the results give; else one line saying how it differs.
    ``res``: the results, when already loaded (loading them is most of a check's time)."""
    from .. import readme

    difference = readme.check_block(Path(readme_path).read_text(), README_BLOCK, readme_block(results_root, res))
    return None if difference is None else f"{readme_path}: the claims table is not the results' ({results_root}): " \
        f"{difference}; rebuild it with python -m iwshift.report --results {results_root} --readme {readme_path}"


def check_report(results_root: str | Path, report_path: str | Path | None = None,
                 res: Results | None = None) -> str | None:
    """None when the report file (default ``<results_root>/REPORT.md``) is the text the results give now
    (built afresh in a temporary folder; ``res``: the results, when already loaded); else one line naming its
    first differing line."""
    import tempfile
    from itertools import zip_longest

    path = Path(report_path) if report_path is not None else Path(results_root) / "REPORT.md"
    with tempfile.TemporaryDirectory() as tmp:
        expected = make_report(results_root, Path(tmp) / path.name, res=res)[0].read_text().splitlines()
    actual = path.read_text().splitlines()
    differing = [i for i, (a, b) in enumerate(zip_longest(actual, expected)) if a != b]
    if not differing:
        return None
    return (f"{path}: {len(differing)} lines differ from the report the results ({results_root}) give, first line "
            f"{differing[0] + 1}; rebuild it with python -m iwshift.report --results {results_root}"
            + (f" --out {path}" if report_path is not None else ""))


def make_report(results_root: str | Path, out: str | Path, docs: str | Path | None = None,
                res: Results | None = None) -> tuple[Path, list[Claim]]:
    """Read every run under ``results_root``, write the report to ``out`` and its figures to ``report_figures/``
    beside it (and copies to ``docs``). Returns the report's path and its claims."""
    from .. import wang2022

    out = Path(out)
    res = res if res is not None else load(results_root)
    claims, remedies = all_claims(res)
    figure_folder = out.parent / "report_figures"
    figures = write_figures(res, figure_folder)
    text = render(res, claims, remedies, figures, figure_folder.name)
    results.write_text(out, text + "\n" + wang2022.section(results_root))
    if docs is not None:
        Path(docs).mkdir(parents=True, exist_ok=True)
        for name in figures:
            shutil.copyfile(figure_folder / f"{name}.png", Path(docs) / f"{name}.png")
    return out, [*claims, *remedies]
