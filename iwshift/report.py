"""Claims report: every results folder -> ``REPORT.md`` with a verdict on each of the paper's claims.

``python -m iwshift.report --results results --out results/REPORT.md [--docs docs]`` reads

* ``synthetic/`` (``metrics.csv``, ``manifest.json``) and ``synthetic_extreme/`` (``stability.csv``);
* ``cifar_binary/<run>/`` and ``cifar_extension/<run>/`` (``metrics.csv``, ``config.json``; the
  extension's ``weights_covariate.csv`` / ``weights_label.csv``),
* any other ``cifar_binary_<name>/<run>/`` (e.g. ``cifar_binary_paper_gpu/``: the `paper` preset on a GPU):
  another source for the CIFAR binary claims, with rows and figures of its own (never pooled with
  ``cifar_binary/``; a claim it has no results for gets no row from it),

measures one quantity per claim with a 95 % interval over seeds, and applies the verdict rules in
:data:`RULES` (also printed in the report). A study that has not been run gives "not run" rows. The report
holds nothing that is not in the results (no current time, no absolute paths), so the same results give
the same bytes. Figures go to ``report_figures/`` beside the report, and to ``--docs`` when given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import config as v
from . import results, sweep
from .config import ConfigError
from .metrics import mean_confidence_interval

CONFIDENCE = 0.95
DELTA = 0.02        # practical threshold for differences in fractions and accuracies
DELTA_SLOPE = 0.01  # ... for slopes: fraction predicted positive per doubling of the weight
DELTA_DEGREES = 1.0  # practical threshold for boundary instability (degrees)
FIT = 0.99          # mean final train accuracy of the unregularised CIFAR runs below this: "did not fit"
TRAINED = 0.90      # ... of the regime a claim is about below this: "did not train"

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run"
STUDIES = ("synthetic", "synthetic_extreme", "cifar_binary", "cifar_extension")
BINARY = "cifar_binary"  # other folders named cifar_binary_<name> are more sources for its claims

RULES = f"""\
* **Intervals are over seeds only.** Each seed gives one value (a paired difference, a slope, or the mean
  over a seed's data sets or ratios, which are not replicates); the estimate is the mean over seeds with
  the 95 % Student-t interval mean ± t(0.975, n−1)·sd/√n, n = number of seeds. With one seed there is no
  interval and the verdict is *inconclusive* (the row says so).
* **Slopes:** per seed, the ordinary least-squares slope of the final value on log2(weight); then the
  interval over seeds as above.
* **Practical thresholds** δ: {DELTA} for differences in fractions and accuracies; {DELTA_SLOPE} for slopes
  (fraction predicted positive per doubling of the weight: a 100× weight, 6.6 doublings, then moves the
  fraction by less than {6.64 * DELTA_SLOPE:.2f}); {DELTA_DEGREES:g}° for boundary instability.
* **Reading an interval [lo, hi] against ±δ** (one rule family for every claim): *negligible* if it lies
  inside (−δ < lo and hi < δ); *positive* if it lies at or above +δ (lo ≥ δ); *negative* if at or below −δ
  (hi ≤ −δ); *unclear* if it crosses ±δ.
* **Effect rule** (a, c, e simple models, g, remedies): *supported* if positive; *contradicted* if
  negligible or negative; *inconclusive* if unclear.
* **No-effect rule** (b, d, e deep networks, f: "no dependence", "no gain"): *supported* only if negligible
  (the whole interval inside ±δ: gains or losses of δ are excluded); *contradicted* if positive or negative;
  *inconclusive* if unclear (an interval too wide to exclude an effect of δ supports nothing).
* **Run health:** runs whose `status` is not "ok" (collapsed to a constant predictor, or diverged) are left
  out of every verdict; the row says how many.
* **Fit** (b, c, d, CIFAR remedies): *inconclusive* when the unregularised plain CIFAR runs have mean
  final train accuracy < {FIT} ("did not fit": the claims are about networks that fit their training
  data); c and d also when their own regime's is < {TRAINED} ("did not train"). Train accuracy is measured
  in evaluation mode (`train_accuracy_eval`) where the results have it, else the running training-mode one.
* **Extreme weights** (g): weights compared at equal effective step (each run's weights rescaled to mean 1
  over its training set; results without it are *inconclusive*); instability = late-training fluctuation of
  the boundary and across-seed spread of the final boundary, up and down averaged within a seed, minus the
  seed's run at weight 1; *supported* if either measure is positive, *contradicted* if both are negligible or
  negative; also *supported* when a run at the largest weight diverged and none at weight 1.
* **Several rows:** a claim is supported if every row is, contradicted if any row is, *not run* if no row
  ran, and inconclusive otherwise.
"""


# ----------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95 % interval (NaN bounds: no interval) and the number of observations."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def defined(self) -> bool:
        return bool(np.isfinite([self.mean, self.low, self.high]).all())

    def text(self, digits: int = 3, unit: str = "") -> str:
        if not np.isfinite(self.mean):
            return "—"
        if not self.defined:
            return f"{number(self.mean, digits)}{unit} [no interval: {self.n} seed{'s' if self.n != 1 else ''}]"
        return f"{number(self.mean, digits)} [{number(self.low, digits)}, {number(self.high, digits)}]{unit}"


def number(x: float, digits: int = 3) -> str:
    text = f"{x:+.{digits}f}"
    return text[1:] if float(text) == 0 else text  # no "-0.000" / "+0.000"


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of the finite ``values`` with its Student-t interval (none for fewer than two)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    mean, half = mean_confidence_interval(values, confidence)
    if len(values) < 2:
        half = float("nan")
    return Interval(mean, mean - half, mean + half, len(values))


def ols_slope(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """OLS slope of ``y`` on ``x`` with its t interval (n − 2 degrees of freedom; none below 3 points)."""
    from scipy import stats

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    sxx = float(np.sum((x - x.mean()) ** 2)) if n else 0.0
    if n < 2 or sxx == 0:
        return Interval(float("nan"), float("nan"), float("nan"), n)
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    if n < 3:
        return Interval(slope, float("nan"), float("nan"), n)
    residuals = y - y.mean() - slope * (x - x.mean())
    se = float(np.sqrt(np.sum(residuals ** 2) / (n - 2) / sxx))
    half = se * float(stats.t.ppf(0.5 + confidence / 2, n - 2))
    return Interval(slope, slope - half, slope + half, n)


def classify(interval: Interval, delta: float = DELTA) -> str:
    """negligible | positive | negative | unclear | undefined: the interval against ±δ (see :data:`RULES`)."""
    if not interval.defined:
        return "undefined"
    if -delta < interval.low and interval.high < delta:
        return "negligible"
    if interval.low >= delta:
        return "positive"
    if interval.high <= -delta:
        return "negative"
    return "unclear"


def effect_verdict(interval: Interval, delta: float = DELTA) -> str:
    return {"positive": SUPPORTED, "negligible": CONTRADICTED, "negative": CONTRADICTED}.get(
        classify(interval, delta), INCONCLUSIVE)


def no_effect_verdict(interval: Interval, delta: float = DELTA) -> str:
    """"No effect", "no dependence", "no gain": supported only when the whole interval lies inside ±δ."""
    return {"negligible": SUPPORTED, "positive": CONTRADICTED, "negative": CONTRADICTED}.get(
        classify(interval, delta), INCONCLUSIVE)


def over_seeds(values: pd.Series) -> Interval:
    """The interval over seeds of per-observation ``values`` indexed by (at least) ``seed``: the values of a
    seed (e.g. over data sets or ratios, which are not replicates) are averaged first."""
    if values.empty:
        return mean_interval([])
    return mean_interval(values.groupby(level="seed").mean())


def combine(verdicts: Sequence[str]) -> str:
    if not verdicts or all(x == NOT_RUN for x in verdicts):
        return NOT_RUN
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return SUPPORTED if all(x == SUPPORTED for x in verdicts) else INCONCLUSIVE


def paired_difference(table: pd.DataFrame, index: Sequence[str], column: str, a: Any, b: Any,
                      value: str) -> pd.Series:
    """``value`` where ``column == a`` minus where ``column == b``, matched on ``index`` (complete pairs)."""
    if table.empty:
        return pd.Series(dtype=float)
    wide = table.pivot_table(index=list(index), columns=column, values=value, aggfunc="mean")
    if a not in wide or b not in wide:
        return pd.Series(dtype=float)
    return (wide[a] - wide[b]).dropna()


# ------------------------------------------------------------------------------------------ results


@dataclass
class Study:
    """One results folder: its tidy table, whose rows carry their data, preset and device (columns
    ``_data``, ``_preset``, ``_device``), and the manifests / run records it was read from."""

    table: pd.DataFrame
    records: list[dict[str, Any]]
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)


def preset_label(config: dict[str, Any], presets: dict[str, dict[str, Any]], keys: Sequence[str]) -> str:
    """The preset whose ``keys`` match ``config``; else ``custom (<closest> with k=v, ...)``."""
    def plain(x: Any) -> Any:  # JSON lists and tuples, ints and floats compare equal
        if isinstance(x, (list, tuple)):
            return [plain(y) for y in x]
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x

    differ = {name: [k for k in keys if plain(config.get(k)) != plain(preset.get(k))]
              for name, preset in presets.items()}
    best = min(differ, key=lambda name: len(differ[name]))
    if not differ[best]:
        return best
    return f"custom ({best} with " + ", ".join(f"{k}={config.get(k)}" for k in differ[best]) + ")"


def device_label(record: dict[str, Any]) -> str:
    device = str(record.get("device", "unknown"))
    return f"{device} ({record['device_name']})" if record.get("device_name") else device


def data_label(source: str) -> str:
    return "official CIFAR-10 (torchvision)" if "official" in source else f"other copy ({source})"


def _with_provenance(table: pd.DataFrame, data: Any, preset: Any, device: Any) -> pd.DataFrame:
    table = table.copy()
    if "remedy" not in table:
        table["remedy"] = "plain"
    table["remedy"] = table["remedy"].fillna("plain")
    table["_data"], table["_preset"], table["_device"] = data, preset, device
    return table


def load_synthetic(folder: Path, file: str) -> Study | None:
    from .synthetic import SyntheticConfig, read_metrics

    if not (folder / file).exists():
        return None
    manifest = _load(results.load_json, folder / "manifest.json") if (folder / "manifest.json").exists() else {}
    if not isinstance(manifest, dict):
        raise ConfigError("results", f"{folder / 'manifest.json'}: not a manifest (a JSON object)")
    config = manifest.get("config", {})
    preset = preset_label(config, {"paper": asdict(SyntheticConfig())},
                          ("epochs", "n_per_class", "n_moons", "weight", "lr_scale", "batch_size", "hidden"))
    data = f"2-D synthetic (generated, data seed {config.get('data_seed', '?')})"
    if file == "metrics.csv":  # the study's table: with runs.csv's columns and the exact float32 measures
        table = read_metrics(folder, lambda path: _load(results.load_table, path), manifest)
    else:
        table = _load(results.load_table, folder / file)
    table = _with_provenance(table, data, preset, device_label(manifest))
    return Study(table, [manifest])


def _load(read: Callable[[Path], Any], path: Path) -> Any:
    """A results file read by ``read``; a bad one is a one-line error naming it."""
    try:
        return read(path)
    except results.BadResultFile as err:
        raise ConfigError("results", f"bad results file {err}") from None


def load_runs(folder: Path, presets: dict[str, dict[str, Any]], keys: Sequence[str]) -> Study | None:
    """A per-run CIFAR results folder (:func:`iwshift.sweep.merge`) with each run's ``config.json``."""
    try:
        table = sweep.merge(folder, strict=True)
    except results.BadResultFile as err:
        raise ConfigError("results", f"bad results file {err}") from None
    if table.empty:
        return None
    records = {run: results.read_json(folder / run / "config.json") for run in sorted(table["run"].unique())}
    table = _with_provenance(
        table, table["run"].map({r: data_label(str(c.get("data", "unknown"))) for r, c in records.items()}),
        table["run"].map({r: preset_label(c.get("config", {}), presets, keys) for r, c in records.items()}),
        table["run"].map({r: device_label(c) for r, c in records.items()}))
    extra = {p.stem: _load(results.load_table, p) for p in sorted(folder.glob("weights_*.csv"))}
    return Study(table, list(records.values()), extra)


def load(root: str | Path) -> dict[str, Study | None]:
    """Every study under ``root`` (None where it has not been run)."""
    from . import cifar_binary, cifar_extension

    root = Path(root)
    binary = {name: asdict(cifar_binary.with_preset(cifar_binary.BinaryConfig(), name))
              for name in cifar_binary.PRESETS}
    extension = {name: asdict(cifar_extension.with_preset(cifar_extension.ExtensionConfig(), name))
                 for name in cifar_extension.PRESETS}
    studies = {"synthetic": load_synthetic(root / "synthetic", "metrics.csv"),
               "synthetic_extreme": load_synthetic(root / "synthetic" / "extreme", "stability.csv")
               or load_synthetic(root / "synthetic_extreme", "stability.csv"),  # the layout before synthetic/extreme
               "cifar_binary": load_runs(root / "cifar_binary", binary, ("width", "per_class", "epochs")),
               "cifar_extension": load_runs(root / "cifar_extension", extension,
                                            ("width", "per_class", "epochs", "source_counts"))}
    for folder in sorted(root.glob(f"{BINARY}_*")):  # more CIFAR binary sources, e.g. the paper preset on a GPU
        if folder.is_dir():
            studies[folder.name] = load_runs(folder, binary, ("width", "per_class", "epochs"))
    return studies


def binary_views(studies: dict[str, Study | None]) -> list[tuple[str, dict[str, Study | None]]]:
    """Each CIFAR binary results folder as (its row tag, the studies with it as ``cifar_binary``):
    ``cifar_binary/`` first, then every other ``cifar_binary_<name>/`` that holds results."""
    return [(folder_tag(folder), {**studies, BINARY: studies[folder]})
            for folder in (BINARY, *other_binary_folders(studies))]


def other_binary_folders(studies: dict[str, Study | None]) -> list[str]:
    """The ``cifar_binary_<name>/`` folders that hold results, by name."""
    return sorted(k for k in studies if k.startswith(f"{BINARY}_") and studies[k] is not None)


def folder_tag(folder: str) -> str:
    """What a row from a CIFAR binary results folder adds to its label: nothing for ``cifar_binary/``, else
    " (`<folder>/`)"."""
    return "" if folder == BINARY else f" (`{folder}/`)"


# ------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Source:
    data: str = "—"
    preset: str = "—"
    device: str = "—"


def source_of(rows: pd.DataFrame) -> Source:
    join = lambda column: ", ".join(sorted(set(map(str, rows[column])))) or "—"  # noqa: E731
    return Source(join("_data"), join("_preset"), join("_device"))


@dataclass
class Row:
    """One line of the claims table: a part of a claim, its estimate, provenance and verdict."""

    label: str
    value: str = "not run"
    n_seeds: int | None = None
    source: Source = Source()
    verdict: str = NOT_RUN
    estimate: Interval | None = None  # the interval the verdict rests on (for tests and figures)


@dataclass
class Claim:
    key: str
    statement: str
    quantity: str  # short, for the claims table
    measure: str   # in full, for the details
    rule: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown blocks

    @property
    def verdict(self) -> str:
        return combine([row.verdict for row in self.rows])

    def not_run(self, study: str, what: str = "") -> Claim:
        self.rows = [Row("")]
        self.details.append(f"Not run: no {what + ' ' if what else ''}results in `{study}/`.")
        return self


def n_seeds(rows: pd.DataFrame) -> int:
    return int(rows["seed"].nunique()) if len(rows) else 0


def usable(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs of ``rows`` that count for verdicts (``status`` "ok"), and a note on the others for the row
    ("; excluded: 1 collapsed", or "")."""
    from . import plots

    ok, _ = plots.split_status(rows)
    note = plots.excluded_note(rows)
    return ok, f"; excluded: {note}" if note else ""


def fit_accuracy(rows: pd.DataFrame) -> pd.Series:
    """Train accuracy for the fit rules: evaluation-mode (``train_accuracy_eval``) where measured, else the
    running training-mode accuracy."""
    if "train_accuracy_eval" in rows:
        return rows["train_accuracy_eval"].fillna(rows["train_accuracy"]) if "train_accuracy" in rows \
            else rows["train_accuracy_eval"]
    return rows["train_accuracy"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def last_epoch(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["epoch"] == table.groupby("run")["epoch"].transform("max")]


def claim_a(studies: dict[str, Study | None]) -> Claim:
    claim = Claim("a", "Importance weighting moves the decision boundary early in training, and the effect fades "
                       "with prolonged training (2-D data).",
                  "gap in fraction positive (up − down) early, and its decline",
                  "gap = test fraction predicted positive, up − down weighting (paired by seed), at the first "
                  "and last evaluated epoch; decline = early gap − late gap (regime none, plain loss)",
                  "effect rule on the early gap and on the decline; the row is supported if both are")
    study = studies["synthetic"]
    if study is None:
        return claim.not_run("synthetic")
    t = study.table.query("regime == 'none' and remedy == 'plain'")
    lines = []
    for dataset in ("separable", "moons"):
        for model in ("lr", "mlp"):
            part, note = usable(t[(t["dataset"] == dataset) & (t["model"] == model)])
            label = f"{dataset}, {model}"
            if part.empty:
                claim.rows.append(Row(label, "not run" + note))
                continue
            first, last = int(part["epoch"].min()), int(part["epoch"].max())
            gaps = paired_difference(part, ["seed", "epoch"], "weighting", "up", "down", "test_fraction_positive")
            at = lambda e: gaps[gaps.index.get_level_values("epoch") == e].droplevel("epoch")  # noqa: E731
            early, late = (at(e) if len(gaps) else gaps for e in (first, last))
            early_i, late_i = mean_interval(early), mean_interval(late)
            decline = mean_interval((early - late).dropna())
            verdict = combine([effect_verdict(early_i), effect_verdict(decline)])
            claim.rows.append(Row(label, f"gap at epoch {first}: {early_i.text()}; decline by epoch {last}: "
                                         f"{decline.text()}{note}", decline.n, source_of(part), verdict, decline))
            lines.append([label, early_i.text(), late_i.text(), decline.text(), early_i.n,
                          f"{classify(early_i)} / {classify(decline)}"])
    claim.details.append(markdown_table(["data, model", "early gap", "late gap", "decline", "seeds",
                                         "early gap / decline"], lines))
    return claim


def cifar_weighting(studies: dict[str, Study | None]) -> pd.DataFrame | None:
    """Each CIFAR weighting run's reported row (last epoch; best checkpoint for early stopping), runs that
    collapsed or diverged included (their ``status`` says so; :func:`usable` leaves them out)."""
    from .cifar_binary import final_rows

    study = studies["cifar_binary"]
    if study is None or "setting" not in study.table or not (study.table["setting"] == "weighting").any():
        return None
    return final_rows(study.table[study.table["setting"] == "weighting"])


def seed_slopes(rows: pd.DataFrame) -> pd.Series:
    """Per seed, the OLS slope of the final fraction predicted positive on log2(weight)."""
    return rows.groupby("seed").apply(
        lambda g: ols_slope(np.log2(g["weight"].astype(float)), g["fraction_positive_pair"]).mean)


def weight_slope(rows: pd.DataFrame) -> Interval:
    """Mean over seeds of each seed's slope, with its interval over seeds (none for one seed)."""
    return mean_interval(seed_slopes(rows)) if len(rows) else mean_interval([])


def fit_flags(final: pd.DataFrame, regime: str, own: bool) -> list[str]:
    """Why a CIFAR weighting verdict is inconclusive: the plain unregularised runs did not fit, or (``own``)
    the regime's runs did not train (healthy runs only; evaluation-mode train accuracy where measured)."""
    plain, _ = usable(final[final["remedy"] == "plain"])
    accuracy = fit_accuracy(plain)
    flags = []
    none = accuracy[plain["regime"] == "none"].mean()
    if not none >= FIT:
        flags.append(f"none regime did not fit (train accuracy {none:.3f} < {FIT})")
    mine = accuracy[plain["regime"] == regime].mean()
    if own and regime != "none" and not mine >= TRAINED:
        flags.append(f"{regime} regime did not train (train accuracy {mine:.3f} < {TRAINED})")
    return flags


def _regime_claim(key: str, regime: str, statement: str, rule: str, verdict: Callable[[Interval, float], str],
                  studies: dict[str, Study | None]) -> Claim:
    claim = Claim(key, statement, "slope of final fraction positive vs log2 w",
                  "per seed, the slope of the final fraction of pair test images predicted positive against "
                  "log2(weight on the positive class), then the mean over seeds; CIFAR-10 weighting setting, "
                  f"plain loss, regime {regime}", rule)
    views = [(tag, cifar_weighting(view)) for tag, view in binary_views(studies)]
    if all(final is None for _, final in views):
        return claim.not_run("cifar_binary", "weighting-setting")
    for tag, final in views:
        if final is not None:
            _regime_rows(claim, key, regime, verdict, final, tag)
    claim.rows = measured_rows(claim.rows, Row(f"regime {regime}"))
    return claim


def measured_rows(rows: list[Row], empty: Row) -> list[Row]:
    """A claim's rows from several CIFAR binary folders: the measured ones where any folder measured
    something (a folder that has not run it does not make the verdict inconclusive), else its not-run rows,
    else ``empty`` (a claim keeps a row)."""
    measured = [row for row in rows if row.verdict != NOT_RUN]
    return measured or rows or [empty]


def _regime_rows(claim: Claim, key: str, regime: str, verdict: Callable[[Interval, float], str],
                 final: pd.DataFrame, tag: str) -> None:
    """The claim's row (and details) for one CIFAR binary results folder (``tag``: "" for ``cifar_binary/``)."""
    where = f"{tag.strip()}: " if tag else ""
    runs = final[(final["regime"] == regime) & (final["remedy"] == "plain")]
    rows, note = usable(runs)
    if rows.empty:
        if not tag or len(runs):  # (another folder without this regime adds nothing)
            claim.rows.append(Row(f"regime {regime}{tag}", "not run" + note))
            claim.details.append(f"{where}Not run: no healthy `{regime}` runs in the CIFAR weighting results.")
        return
    slope = weight_slope(rows)
    flags = fit_flags(final, regime, own=key != "b")
    claim.rows.append(Row(f"regime {regime}{tag}", slope.text(unit=" per doubling") + note, slope.n,
                          source_of(rows), INCONCLUSIVE if flags else verdict(slope, DELTA_SLOPE), slope))
    claim.details.append(f"{where}{len(rows)} (weight, seed) runs, {slope.n} seeds; mean final train accuracy "
                         f"{fit_accuracy(rows).mean():.3f}; reading: {classify(slope, DELTA_SLOPE)}."
                         + (" Inconclusive: " + "; ".join(flags) + "." if flags else ""))
    if key == "b":  # every regime once, for comparison
        table = []
        healthy, _ = usable(final[final["remedy"] == "plain"])
        for name, part in healthy.groupby("regime", sort=True):
            s = weight_slope(part)
            table.append([name, s.text(), len(part), s.n, f"{fit_accuracy(part).mean():.3f}",
                          classify(s, DELTA_SLOPE)])
        claim.details.append(f"{where}All regimes (plain loss):\n\n" + markdown_table(
            ["regime", "slope per doubling", "runs", "seeds", "mean final train accuracy", "reading"], table))


def claim_b(studies: dict[str, Study | None]) -> Claim:
    return _regime_claim("b", "none", "On CIFAR-10 without regularisation, the final fraction predicted positive "
                         "does not depend on the importance weight.", "no-effect rule; fit",
                         no_effect_verdict, studies)


def claim_c(studies: dict[str, Study | None]) -> Claim:
    return _regime_claim("c", "l2", "With L2 regularisation (weight decay) the dependence on the weight remains.",
                         "effect rule; fit", effect_verdict, studies)


def claim_d(studies: dict[str, Study | None]) -> Claim:
    return _regime_claim("d", "dropout", "With dropout the dependence on the weight does not remain.",
                         "no-effect rule; fit", no_effect_verdict, studies)


def claim_e(studies: dict[str, Study | None]) -> Claim:
    claim = Claim("e", "Importance weighting corrects class imbalance for simple models but gives no consistent "
                       "benefit for deep networks.",
                  "Δ balanced accuracy, weighted − unweighted",
                  "test balanced accuracy at the last epoch, minority up-weighted − unweighted, paired by seed: "
                  "2-D imbalanced moons with logistic regression (mean of the two data sets per seed), and the "
                  "CIFAR-10 imbalance setting (mean over the ratios ≠ 1 per seed)",
                  "effect rule (simple models) and no-effect rule (deep networks); supported if both are")
    synthetic = studies["synthetic"]
    simple = Row("simple: 2-D imbalanced moons, lr")
    if synthetic is not None:
        t = last_epoch(synthetic.table.query("regime == 'none' and remedy == 'plain' and model == 'lr'"))
        t, note = usable(t[t["dataset"].isin(["moons_minority0", "moons_minority1"])])
        diffs = [paired_difference(t[t["dataset"] == dataset], ["seed"], "weighting", up, "equal",
                                   "test_balanced_accuracy")
                 for dataset, up in (("moons_minority0", "down"), ("moons_minority1", "up"))]
        if len(t):
            gain = over_seeds(pd.concat(diffs))
            simple = Row(simple.label, gain.text() + note, gain.n, source_of(t), effect_verdict(gain), gain)
            claim.details.append(f"Simple models: {gain.n} seeds (each the mean of its data sets); "
                                 f"reading: {classify(gain)}.")
    deep = measured_rows([row for tag, view in binary_views(studies)
                          if (row := _deep_imbalance_row(claim, view[BINARY], tag)) is not None],
                         Row("deep: CIFAR-10 imbalance, CNN"))
    claim.rows = [simple, *deep]
    for row, where in ((simple, "no imbalanced-moons results in `synthetic/`"),
                       (deep[0], "no imbalance-setting results in `cifar_binary/`")):
        if row.verdict == NOT_RUN:
            claim.details.append(f"{row.label}: not run ({where}).")
    return claim


def _deep_imbalance_row(claim: Claim, binary: Study | None, tag: str) -> Row | None:
    """Claim (e)'s deep-network row for one CIFAR binary results folder (None: it has no imbalance results)."""
    if binary is None or "setting" not in binary.table or not (binary.table["setting"] == "imbalance").any():
        return None
    from .cifar_binary import final_rows

    final = final_rows(binary.table[binary.table["setting"] == "imbalance"])
    final, note = usable(final[(final["remedy"] == "plain") & (final["ratio"] != 1)])
    if tag and final.empty:  # another folder whose runs all collapsed or diverged: a detail, not a row
        claim.details.append(f"{tag.strip()}: Deep networks: no healthy runs{note}.")
        return None
    gain = over_seeds(paired_difference(final, ["ratio", "seed"], "variant", "weighted", "unweighted",
                                        "test_balanced_accuracy"))
    l2 = over_seeds(paired_difference(final, ["ratio", "seed"], "variant", "weighted+l2", "unweighted",
                                      "test_balanced_accuracy"))
    claim.details.append(f"{tag.strip() + ': ' if tag else ''}Deep networks: {gain.n} seeds (each the mean over "
                         f"{final['ratio'].nunique()} ratios); reading: {classify(gain)}."
                         + (f" For reference, weighted+l2 − unweighted: {l2.text()}." if l2.n else ""))
    return Row(f"deep: CIFAR-10 imbalance, CNN{tag}", gain.text() + note, gain.n, source_of(final),
               no_effect_verdict(gain), gain)


def claim_f(studies: dict[str, Study | None]) -> Claim:
    claim = Claim("f", "Under covariate shift, importance weighting gives no significant gain.",
                  "Δ target accuracy, true weights − none",
                  "target accuracy (overall and worst sub-population) at the last epoch, true weights − no "
                  "weights, paired by seed (CIFAR-10 animal/vehicle covariate shift, regime none)",
                  "no-effect rule on both rows")
    study = studies["cifar_extension"]
    if study is None or not (study.table["study"] == "covariate").any():
        return claim.not_run("cifar_extension", "covariate-shift")
    t, note = usable(last_epoch(study.table.query("study == 'covariate' and regime == 'none'")))
    for metric, label in (("target_accuracy", "target accuracy"), ("target_worst_group_accuracy", "worst group")):
        rows = t[t["weight_source"].isin(["true", "none"])]
        gain = mean_interval(paired_difference(rows, ["seed"], "weight_source", "true", "none", metric))
        claim.rows.append(Row(label, gain.text() + note, gain.n, source_of(rows), no_effect_verdict(gain), gain))
    claim.details.append("Every weight source against none (regime none):\n\n" + against_none(
        t, {"target_accuracy": "Δ target accuracy", "target_worst_group_accuracy": "Δ worst group"}))
    weights = study.extra.get("weights_covariate")
    if weights is not None and len(weights):
        columns = [c for c in ("weight_source", "rmse", "mae", "spearman", "ess_fraction") if c in weights]
        claim.details.append("Estimated weights against the true ones (`weights_covariate.csv`):\n\n" + markdown_table(
            columns, [[x if isinstance(x, str) else f"{x:.3f}" for x in row] for row in weights[columns].to_numpy()]))
    label = last_epoch(study.table.query("study == 'label' and regime == 'none'")) if "study" in study.table else None
    if label is not None and len(label):
        claim.details.append("For reference, 10-class label shift, each weight source against none:\n\n" + against_none(
            usable(label)[0], {"target_accuracy": "Δ target accuracy",
                               "target_balanced_accuracy": "Δ balanced accuracy"}))
    return claim


def against_none(table: pd.DataFrame, metrics: dict[str, str]) -> str:
    """A markdown table: each weight source minus ``none``, paired by seed, for each metric (column title)."""
    rows = []
    for source in sorted(set(table["weight_source"]) - {"none"}):
        gains = [mean_interval(paired_difference(table, ["seed"], "weight_source", source, "none", m))
                 for m in metrics]
        rows.append([source, *(g.text() for g in gains), gains[0].n])
    return markdown_table(["weights", *metrics.values(), "seeds"], rows)


INSTABILITY = {"late_fluctuation": "late fluctuation", "seed_deviation": "seed spread"}


def either(verdicts: Sequence[str]) -> str:
    """Supported if any measure supports, contradicted if all contradict, else inconclusive."""
    if SUPPORTED in verdicts:
        return SUPPORTED
    return CONTRADICTED if verdicts and all(x == CONTRADICTED for x in verdicts) else INCONCLUSIVE


def claim_g(studies: dict[str, Study | None]) -> Claim:
    claim = Claim("g", "Decision boundaries become unstable under extreme weights.",
                  "Δ instability (late fluctuation; seed spread), largest weight − weight 1",
                  "at equal effective step (each run's weights rescaled to mean 1 over its training set): late "
                  "fluctuation = mean angle of the boundary over the last decade of epochs to its mean direction; "
                  "seed spread = angle of a seed's final boundary to the mean final boundary of its configuration; "
                  "per seed, the mean of the up and down runs at the largest weight minus the run at weight 1 "
                  "(regime none; diverged runs left out)",
                  f"effect rule with δ = {DELTA_DEGREES:g}° on either measure, or a run diverged at the largest "
                  "weight and none at 1; inconclusive without equal effective step")
    study = studies["synthetic_extreme"]
    if study is None:
        return claim.not_run("synthetic_extreme")
    equal_step = all(bool(r.get("config", {}).get("equal_step", False)) for r in study.records)
    if not equal_step:
        claim.details.append("Inconclusive: these results were not made at equal effective step (the manifest "
                             "lacks `equal_step`); rerun the extreme-weighting study.")
    t = study.table.assign(diverged=study.table["diverged"].astype(bool))
    table = []
    for (dataset, model), part in t.groupby(["dataset", "model"], sort=True):
        top = part["weight"].max()
        healthy, note = usable(part[~part["diverged"]])
        diffs = {}
        for measure in INSTABILITY:
            by_seed = lambda w: healthy[healthy["weight"] == w].groupby("seed")[measure].mean()  # noqa: E731
            diffs[measure] = mean_interval((by_seed(top) - by_seed(1.0)).dropna())
        diverged = int(part.loc[part["weight"] == top, "diverged"].sum()), \
            int(part.loc[part["weight"] == 1, "diverged"].sum())
        baseline = bool((part["weight"] == 1).any()) and top > 1
        if not baseline or not equal_step:
            verdict = INCONCLUSIVE
        elif diverged[0] and not diverged[1]:
            verdict = SUPPORTED
        else:
            verdict = either([effect_verdict(d, DELTA_DEGREES) for d in diffs.values()])
        label = f"{dataset}, {model}"
        value = "; ".join(f"{name} {diffs[m].text(2, '°')}" for m, name in INSTABILITY.items())
        n = max(d.n for d in diffs.values())
        note += f"; diverged: {diverged[1]} at w = 1, {diverged[0]} at w = {top:g}" if any(diverged) else ""
        claim.rows.append(Row(label, f"{value} (w = {top:g} vs 1){note}", n, source_of(part), verdict,
                              diffs["late_fluctuation"]))
        level = healthy.groupby("weight")[list(INSTABILITY)].mean()
        at = lambda m, w: f"{level[m].get(w, np.nan):.2f}°"  # noqa: E731
        table.append([label, at("late_fluctuation", 1.0), at("late_fluctuation", top),
                      at("seed_deviation", 1.0), at("seed_deviation", top),
                      f"{diverged[1]} / {diverged[0]}",
                      int(part.loc[part["weight"] == top, "loss_spikes"].sum()) if "loss_spikes" in part else "—"])
    claim.details.append(markdown_table(["data, model", "late fluctuation at w = 1", "at the largest w",
                                         "seed spread at w = 1", "at the largest w", "diverged (w = 1 / largest)",
                                         "loss spikes (largest)"], table))
    return claim


def remedy_rows(studies: dict[str, Study | None], remedy: str) -> list[Row]:
    """A remedy's rows: CIFAR weighting slope (regime none) and the 2-D separable final gap per model."""
    synthetic, cifar = studies["synthetic"], []
    for tag, view in binary_views(studies):
        final = cifar_weighting(view)
        if final is None:
            continue
        part, note = usable(final[(final["remedy"] == remedy) & (final["regime"] == "none")])
        row = Row(f"CIFAR-10 weighting{tag}")
        if len(part):
            slope, flags = weight_slope(part), fit_flags(final, "none", own=False)
            row = Row(row.label, slope.text(unit=" per doubling") + note, slope.n, source_of(part),
                      INCONCLUSIVE if flags else effect_verdict(slope, DELTA_SLOPE), slope)
        if len(part) or not tag:  # another folder without this remedy adds no row
            cifar.append(row)
    rows = measured_rows(cifar, Row("CIFAR-10 weighting")) if cifar else []
    if synthetic is not None:
        t = synthetic.table.query("regime == 'none' and dataset == 'separable'")
        for model in ("lr", "mlp"):
            part, note = usable(last_epoch(t[(t["model"] == model) & (t["remedy"] == remedy)]))
            gap = mean_interval(paired_difference(part, ["seed"], "weighting", "up", "down", "test_fraction_positive"))
            rows.append(Row(f"2-D separable, {model}", gap.text() + note, gap.n, source_of(part),
                            effect_verdict(gap), gap) if len(part) else Row(f"2-D separable, {model}"))
    return rows


def remedy_claims(studies: dict[str, Study | None]) -> list[Claim]:
    """One claim per remedy: it keeps the weighting effect (CIFAR slope; 2-D gap at the last epoch)."""
    finals = [(tag, final) for tag, view in binary_views(studies) if (final := cifar_weighting(view)) is not None]
    synthetic = studies["synthetic"]
    found = {remedy for _, final in finals for remedy in final["remedy"]} | \
        (set(synthetic.table["remedy"]) if synthetic is not None else set())
    plain = "; ".join(f"{row.label}: {row.value}" for row in remedy_rows(studies, "plain"))
    claims = []
    for remedy in sorted(found - {"plain"}):
        claim = Claim(f"R: {remedy}", f"Remedy `{remedy}` keeps the effect of the importance weight.",
                      "CIFAR: slope vs log2 w; 2-D: final gap up − down",
                      "CIFAR-10: per seed, the slope of the final fraction predicted positive against log2(weight), "
                      "regime none, then the mean over seeds; 2-D separable data: gap (up − down) in fraction "
                      "predicted positive at the last epoch, paired by seed",
                      "effect rule; fit (CIFAR)", remedy_rows(studies, remedy))
        for tag, final in finals:
            flags = fit_flags(final, "none", own=False)
            if flags and (not tag or (final["remedy"] == remedy).any()):
                claim.details.append(f"CIFAR{tag} inconclusive: " + "; ".join(flags) + ".")
        claim.details.append(f"Plain weighted cross-entropy, for reference: {plain}.")
        claims.append(claim)
    if not claims:
        claims.append(Claim("R", "Remedies (poly loss, logit adjustment, deferred re-weighting, weight exponent, "
                                 "early stopping) keep the effect of the importance weight.", "—",
                            "per remedy: CIFAR slope and 2-D final gap", "effect rule").not_run(
            "cifar_binary/` or `synthetic", "remedy (--remedies)"))
    return claims


CLAIMS = (claim_a, claim_b, claim_c, claim_d, claim_e, claim_f, claim_g)


def all_claims(studies: dict[str, Study | None]) -> tuple[list[Claim], list[Claim]]:
    """The paper's claims and the remedies' claims. A study whose tables lack a column the claim needs gives
    an inconclusive row that says so, not a failed report."""
    def safe(make: Callable[[dict[str, Study | None]], Any]) -> Any:
        try:
            return make(studies)
        except KeyError as err:
            claims = make(dict.fromkeys(STUDIES))  # the claim's text, with nothing measured
            for claim in claims if isinstance(claims, list) else [claims]:
                claim.rows = [Row("", f"unreadable results: no column {err}", verdict=INCONCLUSIVE)]
                claim.details = [f"The results lack the column {err}."]
            return claims

    return [safe(make) for make in CLAIMS], safe(remedy_claims)


# ------------------------------------------------------------------------------------------ figures


def _figure_synthetic_gap(studies: dict[str, Study | None]):
    from . import plots

    study = studies["synthetic"]
    if study is None:
        return None
    t, note = usable(study.table.query("regime == 'none' and remedy == 'plain' and dataset in ['separable', 'moons']"))
    gaps = paired_difference(t, ["dataset", "model", "seed", "epoch"], "weighting", "up", "down",
                             "test_fraction_positive")
    if gaps.empty:
        return None
    fig = plots.curves_by_panel(gaps.rename("gap").reset_index(), "gap", ["dataset"], "model", reference=0.0,
                                ylabel="fraction positive: up − down", bounds=(-1.0, 1.0))
    fig.set_size_inches(6, 2.4)
    return fig, (f"(a) 2-D data: gap in fraction predicted positive (up − down weighting) against epoch "
                 f"({_where(t)}{note})")


def _figure_cifar_weight(studies: dict[str, Study | None]):
    from . import plots

    final = cifar_weighting(studies)
    if final is None:
        return None
    rows = final[final["remedy"] == "plain"].assign(panel="final fraction predicted positive")
    unfit = {regime: "did not fit" if regime == "none" else "did not train" for regime in rows["regime"].unique()
             if any(f.startswith(f"{regime} regime") for f in fit_flags(final, regime, own=True))}
    fig = plots.curves_by_panel(rows, "fraction_positive_pair", ["panel"], "regime", x="weight", reference=0.5,
                                value_ticks=True, ylabel="fraction positive", flagged=unfit)
    fig.set_size_inches(4.8, 2.8)
    return fig, (f"(b–d) CIFAR-10 weighting: final fraction predicted positive against the weight ({_where(rows)}; "
                 "dashed: a regime that did not fit; grey: collapsed or diverged runs, left out of the means)")


def _figure_imbalance(studies: dict[str, Study | None]):
    from . import plots
    from .cifar_binary import final_rows

    study = studies["cifar_binary"]
    if study is None or "setting" not in study.table or not (study.table["setting"] == "imbalance").any():
        return None
    rows = final_rows(study.table[study.table["setting"] == "imbalance"])
    rows = rows[rows["remedy"] == "plain"].assign(panel="final balanced accuracy")
    fig = plots.curves_by_panel(rows, "test_balanced_accuracy", ["panel"], "variant", x="ratio", value_ticks=True,
                                ylabel="balanced accuracy", chance=0.5)
    fig.set_size_inches(4.8, 2.8)
    return fig, f"(e) CIFAR-10 imbalance: final balanced accuracy against the positive:negative ratio ({_where(rows)})"


def _extension_figure(studies: dict[str, Study | None], shift: str, caption: str):
    from .cifar_extension import final_metrics_figure

    study = studies["cifar_extension"]
    if study is None or "study" not in study.table or not (study.table["study"] == shift).any():
        return None
    rows = study.table[study.table["study"] == shift]
    return final_metrics_figure(rows, shift), f"{caption} ({_where(rows)})"


def _figure_covariate(studies: dict[str, Study | None]):
    return _extension_figure(studies, "covariate", "(f) CIFAR-10 covariate shift: final target accuracy, worst "
                                                   "sub-population and balanced accuracy per weight source and regime")


def _figure_label(studies: dict[str, Study | None]):
    return _extension_figure(studies, "label", "CIFAR-10 10-class label shift: final target accuracy, worst class "
                                               "and balanced accuracy per weight source and regime")


def _where(rows: pd.DataFrame) -> str:
    s = source_of(rows)
    return f"preset {s.preset}; {s.data}; {s.device}; mean ± 95 % CI over seeds"


FIGURES = {"synthetic_gap": _figure_synthetic_gap, "cifar_fraction_vs_weight": _figure_cifar_weight,
           "cifar_imbalance": _figure_imbalance, "covariate_accuracy": _figure_covariate,
           "label_accuracy": _figure_label}
BINARY_FIGURES = ("cifar_fraction_vs_weight", "cifar_imbalance")  # drawn again for each other binary folder


def write_figures(studies: dict[str, Study | None], folder: Path, dpi: int = 80) -> dict[str, str]:
    """Draw each figure whose study was run into ``folder`` (stale ones removed); name -> caption."""
    import matplotlib

    matplotlib.use("Agg")
    from . import plots

    made = {}
    for name, draw in FIGURES.items():
        drawn = draw(studies)
        if drawn is not None:
            plots.save_figure(drawn[0], folder / f"{name}.png", dpi=dpi)
            made[name] = drawn[1]
    for source in other_binary_folders(studies):
        for name in BINARY_FIGURES:  # each other CIFAR binary folder: its own figures
            drawn = FIGURES[name]({**studies, BINARY: studies[source]})
            if drawn is not None:
                plots.save_figure(drawn[0], folder / f"{name}_{source}.png", dpi=dpi)
                made[f"{name}_{source}"] = f"{folder_tag(source).strip()}: {drawn[1]}"
    for stale in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        if stale.stem not in made:
            stale.unlink()
    return made


# ------------------------------------------------------------------------------------------ renderer


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


def studies_table(studies: dict[str, Study | None]) -> str:
    from . import plots

    rows = []
    for name in [*STUDIES, *(k for k in studies if k not in STUDIES)]:  # then the other binary folders
        study = studies[name]
        if study is None:
            rows.append([f"`{name}/`", "not run", "—", "—", "—", "—", "—", "—", "—"])
            continue
        t, records = study.table, study.records
        runs = t["run"].nunique() if "run" in t else len(t)
        source = source_of(t)
        rows.append([f"`{name}/`", runs, n_seeds(t), plots.excluded_note(t) or "none", source.data, source.preset,
                     source.device, ", ".join(sorted({str(r.get("git_revision", "unknown"))[:12] for r in records})),
                     max((str(r.get("created", "")) for r in records), default="") or "unknown"])
    return markdown_table(["results", "runs", "seeds", "left out of verdicts (collapsed, diverged)", "data",
                           "preset", "device", "git revision", "newest result"], rows)


def render(studies: dict[str, Study | None], claims: Sequence[Claim], remedies: Sequence[Claim],
           figures: dict[str, str], figure_folder: str) -> str:
    records = [r for s in studies.values() if s is not None for r in s.records]
    newest = max((str(r.get("created", "")) for r in records), default="") or "no results"
    revisions = ", ".join(sorted({str(r.get("git_revision", "unknown")) for r in records})) or "—"
    counts = pd.Series([c.verdict for c in [*claims, *remedies]]).value_counts()
    parts = [
        "# Claims report",
        "",
        f"Made by `python -m iwshift.report` from the results alone (it changes only when they do). "
        f"Newest result: {newest}. Git revision(s) of the results: {revisions}.",
        "",
        "Verdicts: " + ", ".join(f"{counts.get(x, 0)} {x}"
                                 for x in (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN)) + ".",
        "",
        "## Results read",
        "",
        studies_table(studies),
        "",
        "## Verdict rules",
        "",
        RULES,
        "## Claims",
        "",
        *[f"* **({c.key})** {c.statement} — **{c.verdict}**" for c in claims],
        "",
        claims_table(claims),
        "",
        "## Remedies: do they keep the weighting effect?",
        "",
        *[f"* **({c.key})** {c.statement} — **{c.verdict}**" for c in remedies],
        "",
        claims_table(remedies),
        "",
        "## Details",
    ]
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


def readme_block(results_root: str | Path) -> str:
    """The claims table the README must show for the results under ``results_root``."""
    claims, _ = all_claims(load(results_root))
    return readme_table(claims)


def write_readme(results_root: str | Path, readme_path: str | Path) -> None:
    from . import readme

    path = Path(readme_path)
    results.write_text(path, readme.replace_block(path.read_text(), README_BLOCK, readme_block(results_root)))


def check_readme(results_root: str | Path, readme_path: str | Path) -> str | None:
    """None when the README's claims table is the one the results give; else one line saying how it differs."""
    from . import readme

    difference = readme.check_block(Path(readme_path).read_text(), README_BLOCK, readme_block(results_root))
    return None if difference is None else f"{readme_path}: the claims table is not the results' ({results_root}): " \
        f"{difference}; rebuild it with python -m iwshift.report --results {results_root} --readme {readme_path}"


def check_report(results_root: str | Path, report_path: str | Path | None = None) -> str | None:
    """None when the report file (default ``<results_root>/REPORT.md``) is the text the results give now
    (built afresh in a temporary folder); else one line naming its first differing line."""
    import tempfile
    from itertools import zip_longest

    path = Path(report_path) if report_path is not None else Path(results_root) / "REPORT.md"
    with tempfile.TemporaryDirectory() as tmp:
        expected = make_report(results_root, Path(tmp) / path.name)[0].read_text().splitlines()
    actual = path.read_text().splitlines()
    differing = [i for i, (a, b) in enumerate(zip_longest(actual, expected)) if a != b]
    if not differing:
        return None
    return (f"{path}: {len(differing)} lines differ from the report the results ({results_root}) give, first line "
            f"{differing[0] + 1}; rebuild it with python -m iwshift.report --results {results_root}"
            + (f" --out {path}" if report_path is not None else ""))


def make_report(results_root: str | Path, out: str | Path,
                docs: str | Path | None = None) -> tuple[Path, list[Claim]]:
    """Read every study under ``results_root``, write the report to ``out`` and its figures to
    ``report_figures/`` beside it (and copies to ``docs``). Returns the report's path and its claims."""
    from . import wang2022

    out = Path(out)
    studies = load(results_root)
    claims, remedies = all_claims(studies)
    figure_folder = out.parent / "report_figures"
    figures = write_figures(studies, figure_folder)
    text = render(studies, claims, remedies, figures, figure_folder.name)
    results.write_text(out, text + "\n" + wang2022.section(results_root))
    if docs is not None:
        Path(docs).mkdir(parents=True, exist_ok=True)
        for name in figures:
            shutil.copyfile(figure_folder / f"{name}.png", Path(docs) / f"{name}.png")
    return out, [*claims, *remedies]


def main(argv: Sequence[str] | None = None) -> int:
    parser = v.OneLineParser(prog="python -m iwshift.report", description=__doc__.split("\n\n")[0],
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
    with v.exit_on_config_error("python -m iwshift.report"):
        if not Path(args.results).is_dir():
            raise ConfigError("results", f"no results folder {args.results!r}")
        for flag in ("readme", "check"):
            if getattr(args, flag) and not Path(getattr(args, flag)).is_file():
                raise ConfigError(flag, f"no file {getattr(args, flag)!r}")
        out = Path(args.out) if args.out else Path(args.results) / "REPORT.md"
        if args.check:
            differences = [check_readme(args.results, args.check)]
            print(differences[0] or f"{args.check}: the claims table is the results' ({args.results})")
            if out.is_file():
                differences.append(check_report(args.results, args.out))
                print(differences[1] or f"{out}: the report is the results' ({args.results})")
            return 1 if any(differences) else 0
        v.writable_folder("out", out.parent)
        if args.docs:
            v.writable_folder("docs", args.docs)
        path, claims = make_report(args.results, out, args.docs)
        if args.readme:
            write_readme(args.results, args.readme)
    verdicts = pd.Series([c.verdict for c in claims]).value_counts()
    print(f"{path}: {len(claims)} claims (" + ", ".join(f"{n} {k}" for k, n in verdicts.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
