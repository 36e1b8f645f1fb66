"""The paper's claims, each measured on the results as the theory frames it, with a verdict by stated rules.

One rule family for every claim (:mod:`iwshift.stats`): an interval over seeds read against a practical threshold
δ. Every row also says the smallest effect its interval can exclude (its half-width) and, when it is
inconclusive, how many seeds would decide it; rows are computed with the healthy runs and again counting the
collapsed and diverged ones (with their actual values), and a row whose verdict differs between the two is
inconclusive and says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import metrics
from ..health import excluded_note, split_status
from ..stats import (CONTRADICTED, INCONCLUSIVE, NOT_RUN, SUPPORTED, Interval, classify, combine, effect_verdict,
                     mean_interval, no_effect_verdict, no_gain_verdict, ols_slope, seeds_to_decide)
from .load import Results, final_rows, last_epoch, n_seeds, provenance_groups

DELTA = 0.02         # practical threshold for differences in fractions and accuracies
DELTA_SLOPE = 0.01   # ... for slopes: fraction predicted positive per doubling of the weight
DELTA_DEGREES = 1.0  # ... for angles between boundaries and boundary instability (degrees)
FIT = 0.99           # mean final eval-mode train accuracy at or above which a network interpolates its training set
LEARNED = 0.75       # mean balanced test accuracy below which a network has barely learned its task
ESTIMATES = 0.5      # mean Spearman correlation with the true weights below which estimated weights are noise

RULES = f"""\
* **Intervals are over seeds only.** Each seed gives one value (a paired difference, a slope, an angle, or the
  mean over a seed's data sets or ratios, which are not replicates); the estimate is the mean over seeds with
  the 95 % Student-t interval mean ± t(0.975, n−1)·sd/√n. With one seed there is no interval and the verdict is
  *inconclusive*.
* **Practical thresholds** δ: {DELTA} for differences in fractions and accuracies; {DELTA_SLOPE} for slopes
  (fraction predicted positive per doubling of the weight: a 100× weight, 6.6 doublings, then moves the fraction
  by less than {6.64 * DELTA_SLOPE:.2f}); {DELTA_DEGREES:g}° for angles between boundaries and for boundary
  instability.
* **Reading an interval [lo, hi] against ±δ**: *negligible* if it lies inside (−δ < lo and hi < δ); *positive* if
  at or above +δ (lo ≥ δ); *negative* if at or below −δ (hi ≤ −δ); *unclear* if it crosses ±δ.
* **Effect rule** ("there is an effect"): *supported* if positive; *contradicted* if negligible or negative;
  *inconclusive* if unclear. **No-effect rule** ("no dependence"): *supported* only if negligible (the whole
  interval inside ±δ); *contradicted* if positive or negative; *inconclusive* if unclear. **No-gain rule** ("no
  gain", "no benefit": one-sided, as the claims are worded, since a loss is no gain): *supported* if the interval
  excludes a gain of δ or more (hi < δ); *contradicted* if it establishes one (lo ≥ δ); *inconclusive* if it
  crosses +δ.
* **Power.** Every row's interval has a half-width: the smallest effect it can exclude. An *inconclusive* row says
  how many seeds an interval of the same spread would need for its half-width to fall below δ.
* **Run health as evidence.** Each row is computed twice: with the runs whose status is ok, and counting the runs
  that collapsed to a constant predictor or diverged, with their actual last values (a weight that drives a network
  to a constant predictor is evidence of dependence). A row whose verdict differs between the two is
  *inconclusive* and says why; so is a row where every run failed (the weight then only chooses the constant
  that a network which learned nothing predicts).
* **Claims as the theory frames them.** (a) is tested where the model separates its training data, on the angle
  between the up- and down-weighted boundaries (a quantity that sees the boundary move inside the margin), its
  decay fitted against 1/log t (gradient descent on separable data converges in direction to the max-margin
  solution at that rate); where the model cannot separate the data (logistic regression on the moons) the
  theory expects the effect to persist, and that row is judged by its own expectation. (b)–(d) are about
  networks that interpolate: (b) is *inconclusive* when the unregularised networks did not fit their training
  data (mean final eval-mode train accuracy < {FIT}); (c) and (d) are judged at each stated strength, with the
  networks' train accuracy beside. (e)'s deep rows are *inconclusive* where the network barely learns its task
  (mean balanced test accuracy of the unweighted runs < {LEARNED}). (f)'s rows with estimated weights are
  *inconclusive* where the weights do not estimate the true ones (mean Spearman correlation < {ESTIMATES}).
* **Extreme weights** (g): compared at equal effective step (every run's weights rescaled to mean 1 over its
  training set; results without it are *inconclusive*); per seed, the run's own late fluctuation and late
  movement of the boundary (values of that run alone), up and down averaged, minus the seed's run at weight 1;
  *supported* if either measure is positive, *contradicted* if both are negligible or negative; also *supported*
  when a run at the largest weight diverged and none at weight 1.
* **Several rows:** a claim is supported if every row is, contradicted if any row is, *not run* if no row ran,
  and inconclusive otherwise.
"""


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

    def not_run(self, what: str) -> Claim:
        self.rows = [Row("")]
        self.details.append(f"Not run: no {what} results.")
        return self


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def fit_accuracy(rows: pd.DataFrame) -> pd.Series:
    """Train accuracy for the fit rules: evaluation-mode (``train_accuracy_eval``) where measured."""
    return rows["train_accuracy_eval"] if "train_accuracy_eval" in rows else rows["train_accuracy"]


def usable(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of runs whose status is ok, and a note on the others ("; excluded: 1 collapsed" or "")."""
    ok, _ = split_status(rows)
    note = excluded_note(rows)
    return ok, f"; excluded: {note}" if note else ""


def judged(label: str, per_seed: Callable[[pd.DataFrame], pd.Series], rows: pd.DataFrame,
           rule: Callable[[Interval, float], str], delta: float, unit: str = "", digits: int = 3,
           beside: str = "", premise: str | None = None) -> Row:
    """A row: ``per_seed(rows)`` (one value per seed) over the healthy runs, read by ``rule`` against ``delta``;
    again over every run (collapsed and diverged runs with their actual values: a verdict that changes makes the
    row inconclusive, with the reason); the half-width, and the seeds that would decide an unclear interval.
    ``premise``: why the row cannot be judged (inconclusive), if so; ``beside``: text after the value."""
    healthy, note = usable(rows)
    estimate = mean_interval(per_seed(healthy)) if len(healthy) else mean_interval([])
    verdict = rule(estimate, delta)
    reasons = []
    if note:
        everything = mean_interval(per_seed(rows))
        counted = rule(everything, delta)
        if healthy.empty:  # nothing learned: what the weight moves is a constant predictor, not a classifier
            reasons.append(f"every run failed ({excluded_note(rows)}): counted with their actual values they give "
                           f"{everything.text(digits, unit)}, {counted}, the weight choosing the constant a network "
                           f"that learned nothing predicts")
            verdict = INCONCLUSIVE
        elif counted != verdict:
            reasons.append(f"counting the {excluded_note(rows)} runs gives {everything.text(digits, unit)}, "
                           f"{counted}")
            verdict = INCONCLUSIVE
    if premise is not None:
        reasons.append(premise)
        verdict = INCONCLUSIVE
    value = estimate.text(digits, unit) + note + beside
    if estimate.defined:
        value += f"; half-width {estimate.half_width:.{digits}f}{unit}"
        if verdict == INCONCLUSIVE and not reasons:
            needed = seeds_to_decide(estimate, delta, getattr(rule, "one_sided", False))
            reasons.append(f"{needed} seeds would decide it" if needed else "more seeds would not decide it")
    elif estimate.n == 1:
        reasons.append("one seed: no interval")
    if reasons:
        value += " (inconclusive: " + "; ".join(reasons) + ")" if verdict == INCONCLUSIVE else ""
    return Row(label, value, estimate.n, source_of(rows if len(rows) else healthy), verdict, estimate)


# ------------------------------------------------------------------------------------------------- (a)


def boundary_angles(rows: pd.DataFrame) -> pd.Series:
    """The angle (degrees) between the up- and down-weighted runs' boundary directions, paired by (seed,
    epoch)."""
    wide = rows.pivot_table(index=["seed", "epoch"], columns="weighting",
                            values=["boundary_normal_x", "boundary_normal_y"], aggfunc="mean")
    if ("boundary_normal_x", "up") not in wide or ("boundary_normal_x", "down") not in wide:
        return pd.Series(dtype=float)
    up = wide[[("boundary_normal_x", "up"), ("boundary_normal_y", "up")]].to_numpy()
    down = wide[[("boundary_normal_x", "down"), ("boundary_normal_y", "down")]].to_numpy()
    return pd.Series(metrics.angle_degrees(up, down), index=wide.index).dropna()


def inverse_log_fit(angles: pd.Series) -> str:
    """The decay of the mean angle over seeds, from its peak on, fitted as a + b / ln t: the rate at which
    gradient descent approaches the max-margin direction on separable data."""
    mean = angles.groupby(level="epoch").mean()
    mean = mean[(mean.index >= max(2, mean.idxmax() if len(mean) else 2))]
    if len(mean) < 3:
        return "too few epochs to fit"
    x = 1 / np.log(mean.index.to_numpy(np.float64))
    y = mean.to_numpy(np.float64)
    b, a = np.polyfit(x, y, 1)
    r2 = 1 - np.sum((y - (a + b * x)) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300)
    return f"fit from epoch {int(mean.index[0])}: a + b/ln t, a = {a:.2f}°, b = {b:.1f}°, R² = {r2:.2f}"


SEPARATING = (("separable", "lr"), ("separable", "mlp"), ("moons", "mlp"))  # models that separate their data
NOT_SEPARATING = (("moons", "lr"),)  # logistic regression cannot separate the moons: the effect must persist
EARLY = 100  # "early in training": the first 100 epochs (1 % of the paper's 10,000)


def early_peak(rows: pd.DataFrame) -> pd.Series:
    """Per seed, the largest angle between the up- and down-weighted boundaries in the first ``EARLY`` epochs."""
    angles = boundary_angles(rows)
    if angles.empty:
        return angles
    return angles[angles.index.get_level_values("epoch") <= EARLY].groupby(level="seed").max()


def fraction_gap(rows: pd.DataFrame, epoch: int) -> pd.Series:
    """Per seed, the up-weighted run's fraction of test points predicted positive minus the down-weighted run's."""
    at = rows[rows["epoch"] == epoch].pivot_table(index="seed", columns="weighting", values="test_fraction_positive")
    if "up" not in at or "down" not in at:
        return pd.Series(dtype=float)
    return (at["up"] - at["down"]).dropna()


def claim_a(res: Results) -> Claim:
    claim = Claim("a", "Importance weighting moves the decision boundary early in training, and the effect fades "
                       "with prolonged training (2-D data).",
                  "angle between up- and down-weighted boundaries: early peak, and its decline",
                  "angle (degrees) between the boundary directions of the up- and down-weighted runs of a seed "
                  "(for a linear model its weight vector; for the MLP the mean over the training points of the "
                  f"unit input-gradient of the logit): its largest value in the first {EARLY} epochs (early), and "
                  "that minus its value at the last evaluated epoch (decline), regime none, plain loss; the decay "
                  "from the peak is fitted against 1/ln t. Where the model separates its training data the effect "
                  "is expected early and to fade. Where it cannot (logistic regression on the moons), the weighted "
                  "optima differ, mostly in their offset (their directions converge), so that control row measures "
                  "the late gap in the fraction of test points predicted positive, up- minus down-weighted, which "
                  "is expected to persist",
                  f"effect rule with δ = {DELTA_DEGREES:g}° on the early peak and on the decline (a row is supported "
                  f"if both are); for the non-separable control, the effect rule with δ = {DELTA} on the late gap")
    synthetic = res.study("synthetic")
    if synthetic.empty:
        return claim.not_run("2-D (`synthetic/`)")
    t = synthetic[(synthetic["regime"] == "none") & (synthetic["remedy"] == "plain")]
    lines = []
    for dataset, model in (*SEPARATING, *NOT_SEPARATING):
        part = t[(t["dataset"] == dataset) & (t["model"] == model)]
        label = f"{dataset}, {model}" + ("" if (dataset, model) in SEPARATING else
                                         " (cannot separate: the effect should persist)")
        if part.empty:
            claim.rows.append(Row(label))
            continue
        last = int(part["epoch"].max())
        healthy = usable(part)[0]
        fit = inverse_log_fit(boundary_angles(healthy))
        late_angle = mean_interval(_angles_at(healthy, last)).text(2, "°")
        if (dataset, model) in SEPARATING:
            early = judged(label, early_peak, part, effect_verdict, DELTA_DEGREES, "°", 2)
            decline = judged(label, lambda rows: (early_peak(rows) - _angles_at(rows, last)).dropna(), part,
                             effect_verdict, DELTA_DEGREES, "°", 2)
            verdict = combine([early.verdict, decline.verdict])
            claim.rows.append(Row(label, f"early peak: {early.value}; decline by epoch {last}: {decline.value}; "
                                         f"{fit}", decline.n_seeds, early.source, verdict, decline.estimate))
            lines.append([label, early.estimate.text(2, "°"), late_angle, decline.estimate.text(2, "°"), "—", fit])
        else:
            gap = judged(label, lambda rows: fraction_gap(rows, last), part, effect_verdict, DELTA, "", 3)
            claim.rows.append(Row(label, f"fraction positive, up − down, at epoch {last}: {gap.value} (angle "
                                         f"{late_angle}: the directions converge)", gap.n_seeds, gap.source,
                                  gap.verdict, gap.estimate))
            lines.append([label, mean_interval(early_peak(healthy)).text(2, "°"), late_angle, "—",
                          gap.estimate.text(3), fit])
    claim.details.append(markdown_table(["data, model", "early peak angle", "late angle", "decline",
                                         "late gap in fraction positive", "decay"], lines))
    return claim


def _angles_at(rows: pd.DataFrame, epoch: int) -> pd.Series:
    angles = boundary_angles(rows)
    if angles.empty:
        return angles
    return angles[angles.index.get_level_values("epoch") == epoch].droplevel("epoch")


# --------------------------------------------------------------------------------------- (b), (c), (d)


def cifar_weighting(res: Results, classes: str = "cat/dog") -> pd.DataFrame:
    """Each CIFAR weighting run's reported row (last epoch; best checkpoint for early stopping), of the pair."""
    rows = res.study("cifar_binary")
    if rows.empty:
        return rows
    rows = rows[(rows["setting"] == "weighting") & (rows["classes"] == classes)]
    return final_rows(rows) if len(rows) else rows


def seed_slopes(rows: pd.DataFrame, column: str = "fraction_positive_pair") -> pd.Series:
    """Per seed, the OLS slope of the final fraction predicted positive on log2(weight)."""
    if rows.empty:
        return pd.Series(dtype=float)
    return rows.groupby("seed").apply(lambda g: ols_slope(np.log2(g["weight"].astype(float)), g[column]).mean)


def interpolation(rows: pd.DataFrame) -> str:
    healthy = usable(rows)[0]
    if healthy.empty:
        return f"train accuracy {fit_accuracy(rows).mean():.3f} (every run)"
    return f"train accuracy {fit_accuracy(healthy).mean():.3f}"


def fit_premise(final: pd.DataFrame) -> str | None:
    """Why (b) cannot be judged: the unregularised plain networks did not fit their training data."""
    none = final[(final["regime"] == "none") & (final["remedy"] == "plain")]
    accuracy = fit_accuracy(usable(none)[0]).mean()
    return None if accuracy >= FIT else f"the none regime did not fit (train accuracy {accuracy:.3f} < {FIT})"


def claim_b(res: Results) -> Claim:
    claim = Claim("b", "On CIFAR-10 without regularisation, the final fraction predicted positive does not depend "
                       "on the importance weight.", "slope of final fraction positive vs log2 w",
                  "per seed, the slope of the final fraction of pair test images predicted positive against "
                  "log2(weight on the positive class), then the mean over seeds; CIFAR-10 weighting setting "
                  "(cat/dog), plain loss, regime none", "no-effect rule; fit")
    final = cifar_weighting(res)
    if final.empty:
        return claim.not_run("CIFAR weighting-setting (`cifar_binary/`)")
    for tag, group in provenance_groups(final[(final["regime"] == "none") & (final["remedy"] == "plain")]):
        row = judged(f"regime none{tag}", seed_slopes, group, no_effect_verdict, DELTA_SLOPE,
                     beside=f"; {interpolation(group)}", premise=fit_premise(final[final["_preset"] == group["_preset"].iloc[0]]))
        claim.rows.append(row)
    if not claim.rows:
        claim.rows = [Row("regime none")]
    return claim


def _strength_rows(claim: Claim, final: pd.DataFrame, regime: str, column: str, name: str,
                   rule: Callable[[Interval, float], str]) -> list[tuple[float, Row]]:
    out = []
    runs = final[(final["regime"] == regime) & (final["remedy"] == "plain")]
    for tag, group in provenance_groups(runs):
        for strength, part in group.groupby(column, sort=True):
            row = judged(f"{name} = {strength:g}{tag}", seed_slopes, part, rule, DELTA_SLOPE,
                         beside=f"; {interpolation(part)}")
            out.append((float(strength), row))
    return out


def claim_c(res: Results) -> Claim:
    claim = Claim("c", "With L2 regularisation (weight decay) the dependence on the weight remains.",
                  "slope of final fraction positive vs log2 w",
                  "as (b), regime l2, at each weight decay (the paper's is 1e-3); the networks' mean final eval-mode "
                  "train accuracy beside: the theory expects the dependence where the regulariser stops "
                  "interpolation", "effect rule at each stated strength")
    final = cifar_weighting(res)
    if final.empty or not (final["regime"] == "l2").any():
        return claim.not_run("CIFAR weighting-setting `l2` (`cifar_binary/`)")
    rows = _strength_rows(claim, final, "l2", "_l2", "l2", effect_verdict)
    claim.rows = [row for _, row in rows]
    appears = [s for s, row in rows if row.verdict == SUPPORTED]
    claim.details.append(f"The dependence appears at weight decay ≥ {min(appears):g}." if appears else
                         "At none of the strengths run does the dependence appear in networks that learn.")
    failed = _all_failed(final, "l2", "_l2")
    if failed:
        claim.details.append(f"At weight decay {', '.join(f'{s:g}' for s in failed)} every network collapsed to a "
                             "constant predictor, even at weight 1: the regulariser stops the networks from learning "
                             "at all, not only from interpolating, and the weight only chooses which constant.")
    return claim


def _all_failed(final: pd.DataFrame, regime: str, column: str) -> list[float]:
    """The strengths at which no plain run of ``regime`` is healthy."""
    runs = final[(final["regime"] == regime) & (final["remedy"] == "plain")]
    return [float(s) for s, part in runs.groupby(column, sort=True) if usable(part)[0].empty]


def claim_d(res: Results) -> Claim:
    claim = Claim("d", "With dropout the dependence on the weight does not remain.",
                  "slope of final fraction positive vs log2 w",
                  "as (b), regime dropout, at each dropout rate (the paper's is 0.5); the networks' mean final "
                  "eval-mode train accuracy beside", "no-effect rule at each stated rate")
    final = cifar_weighting(res)
    if final.empty or not (final["regime"] == "dropout").any():
        return claim.not_run("CIFAR weighting-setting `dropout` (`cifar_binary/`)")
    rows = _strength_rows(claim, final, "dropout", "_dropout", "dropout", no_effect_verdict)
    claim.rows = [row for _, row in rows]
    appears = [s for s, row in rows if row.estimate is not None and classify(row.estimate, DELTA_SLOPE) == "positive"]
    claim.details.append(f"A dependence on the weight appears at dropout ≥ {min(appears):g}." if appears else
                         "At none of the rates run does a dependence on the weight appear.")
    return claim


# -------------------------------------------------------------------------------------------------- (e)


def paired(rows: pd.DataFrame, index: Sequence[str], column: str, a: Any, b: Any, value: str) -> pd.Series:
    """``value`` where ``column == a`` minus where ``column == b``, matched on ``index`` (complete pairs)."""
    if rows.empty:
        return pd.Series(dtype=float)
    wide = rows.pivot_table(index=list(index), columns=column, values=value, aggfunc="mean")
    if a not in wide or b not in wide:
        return pd.Series(dtype=float)
    return (wide[a] - wide[b]).dropna()


def by_seed(values: pd.Series) -> pd.Series:
    """Per-observation values indexed by (at least) ``seed``: the mean of each seed's (its data sets or ratios
    are not replicates)."""
    return values.groupby(level="seed").mean() if len(values) else values


def claim_e(res: Results) -> Claim:
    claim = Claim("e", "Importance weighting corrects class imbalance for simple models but gives no consistent "
                       "benefit for deep networks.",
                  "Δ balanced accuracy, weighted − unweighted",
                  "test balanced accuracy at the last epoch, minority up-weighted − unweighted, paired by seed: "
                  "2-D imbalanced moons with logistic regression (mean of the two data sets per seed), and the "
                  "CIFAR-10 imbalance setting (mean over the ratios ≠ 1 per seed) of each class pair, with the "
                  "unweighted networks' balanced test accuracy beside",
                  "effect rule (simple models) and no-gain rule (deep networks, where they learn their task)")
    synthetic = res.study("synthetic")
    simple = Row("simple: 2-D imbalanced moons, lr")
    if not synthetic.empty:
        t = last_epoch(synthetic[(synthetic["regime"] == "none") & (synthetic["remedy"] == "plain")
                                 & (synthetic["model"] == "lr")])
        t = t[t["dataset"].isin(["moons_minority0", "moons_minority1"])]

        def gain(rows: pd.DataFrame) -> pd.Series:
            return by_seed(pd.concat([paired(rows[rows["dataset"] == d], ["seed"], "weighting", up, "equal",
                                             "test_balanced_accuracy")
                                      for d, up in (("moons_minority0", "down"), ("moons_minority1", "up"))]))

        if len(t):
            simple = judged(simple.label, gain, t, effect_verdict, DELTA)
    deep = []
    binary = res.study("cifar_binary")
    imbalance = final_rows(binary[binary["setting"] == "imbalance"]) if not binary.empty else binary
    for classes, rows in (imbalance.groupby("classes", sort=False) if len(imbalance) else []):
        rows = rows[(rows["remedy"] == "plain") & (rows["ratio"] != 1)]
        for tag, group in provenance_groups(rows):
            learned = usable(group[group["variant"] == "unweighted"])[0]["test_balanced_accuracy"].mean()
            premise = None if learned >= LEARNED else \
                f"the network barely learns its task (balanced test accuracy {learned:.3f} < {LEARNED})"
            deep.append(judged(f"deep: CIFAR-10 imbalance, CNN, {classes}{tag}",
                               lambda r: by_seed(paired(r, ["ratio", "seed"], "variant", "weighted", "unweighted",
                                                        "test_balanced_accuracy")),
                               group, no_gain_verdict, DELTA, beside=f"; test balanced accuracy {learned:.3f}",
                               premise=premise))
    claim.rows = [simple, *(deep or [Row("deep: CIFAR-10 imbalance, CNN")])]
    return claim


# -------------------------------------------------------------------------------------------------- (f)


def claim_f(res: Results, source: str = "cifar_extension") -> Claim:
    claim = Claim("f", "Under covariate shift, importance weighting gives no significant gain.",
                  "Δ target accuracy, weights − none",
                  "target accuracy (overall and worst sub-population) at the last epoch, each weight source − no "
                  "weights, paired by seed (CIFAR-10 animal/vehicle covariate shift, regime none); for an estimated "
                  "source, its weights' rank correlation with the true weights and effective sample size beside",
                  "no-gain rule on every row")
    extension = res.study("cifar_extension", source)
    if extension.empty:
        return claim.not_run("covariate-shift (`cifar_extension/`)")
    t = last_epoch(extension[(extension["regime"] == "none") & (extension["weight_source"].notna())])
    t = t[t["run"].str.startswith("covariate_")]
    quality = weight_quality(res, source)
    for weight_source in [s for s in ("true", "domain", "kliep", "kmm") if s in set(t["weight_source"])]:
        rows = t[t["weight_source"].isin([weight_source, "none"])]
        for metric, label in (("target_accuracy", "target accuracy"), ("target_worst_group_accuracy", "worst group")):
            if weight_source != "true" and metric != "target_accuracy":
                continue
            name = label if weight_source == "true" else f"{label}, {weight_source} weights"
            text, spearman = quality.get(weight_source, ("", None))
            premise = (f"the estimated weights do not estimate the true ones (Spearman {spearman:.3f} < {ESTIMATES}): "
                       "no gain from them says nothing about importance weighting"
                       if spearman is not None and spearman < ESTIMATES else None)
            claim.rows.append(judged(name, lambda r, m=metric, s=weight_source: paired(r, ["seed"], "weight_source",
                                                                                      s, "none", m),
                                     rows, no_gain_verdict, DELTA, beside=text, premise=premise))
    return claim


def weight_quality(res: Results, source: str) -> dict[str, tuple[str, float]]:
    """Each estimated weight source's quality against the true weights, from its runs' records: the mean over
    seeds of the Spearman correlation and of the effective sample size (fraction of the training set), as text,
    and the mean Spearman correlation."""
    found: dict[str, list[dict[str, Any]]] = {}
    for (src, run), record in res.records.items():
        weights = record.get("weights")
        if src == source and isinstance(weights, dict) and record["run"].get("regime") == "none":
            found.setdefault(weights["weight_source"], []).append(weights)
    ess = {name: float(np.mean([w["ess_fraction"] for w in rows])) for name, rows in found.items()}
    spearman = {name: float(np.mean([w["spearman"] for w in rows])) for name, rows in found.items()}
    truth = f" (true weights: {ess['true']:.1%})" if "true" in ess else ""
    return {name: (f"; weights: Spearman {spearman[name]:.3f}, effective sample size {ess[name]:.1%}{truth}"
                   if name != "true" else "", spearman[name])
            for name in found}


# -------------------------------------------------------------------------------------------------- (g)


def claim_g(res: Results) -> Claim:
    from ..synthetic import stability

    claim = Claim("g", "Decision boundaries become unstable under extreme weights.",
                  "Δ instability (late fluctuation; late movement), largest weight − weight 1",
                  "at equal effective step (each run's weights rescaled to mean 1 over its training set): late "
                  "fluctuation = mean angle of the boundary over the last decade of epochs to its mean direction; "
                  "late movement = mean angle between consecutive evaluated boundaries over the last decade; both "
                  "of the run alone; per seed, the mean of the up and down runs at the largest weight minus the run "
                  "at weight 1 (regime none)",
                  f"effect rule with δ = {DELTA_DEGREES:g}° on either measure, or a run diverged at the largest "
                  "weight and none at 1; inconclusive without equal effective step")
    extreme = res.study("synthetic_extreme")
    if extreme.empty:
        return claim.not_run("extreme-weighting (`synthetic/extreme/`)")
    records = [r for (s, _), r in res.records.items() if r.get("study") == "synthetic_extreme"]
    equal_step = all(bool(r.get("config", {}).get("equal_step", False)) for r in records)
    if not equal_step:
        claim.details.append("Inconclusive: these results were not made at equal effective step; rerun the "
                             "extreme-weighting study.")
    stab = stability(extreme)
    table = []
    for (dataset, model), part in stab.groupby(["dataset", "model"], sort=True):
        top = part["weight"].max()
        diverged = (int((part.loc[part["weight"] == top, "status"] == "diverged").sum()),
                    int((part.loc[part["weight"] == 1, "status"] == "diverged").sum()))
        rows = []
        for measure, name in (("late_fluctuation", "late fluctuation"), ("late_movement", "late movement")):
            def differences(r: pd.DataFrame, m: str = measure) -> pd.Series:
                level = r.groupby(["weight", "seed"])[m].mean()
                return (level.get(top, pd.Series(dtype=float)) - level.get(1.0, pd.Series(dtype=float))).dropna() \
                    if top in level.index.get_level_values(0) and 1.0 in level.index.get_level_values(0) else \
                    pd.Series(dtype=float)
            rows.append((name, judged(name, differences, part, effect_verdict, DELTA_DEGREES, "°", 2)))
        if not equal_step or top <= 1:
            verdict = INCONCLUSIVE
        elif diverged[0] and not diverged[1]:
            verdict = SUPPORTED
        else:
            verdicts = [row.verdict for _, row in rows]
            verdict = SUPPORTED if SUPPORTED in verdicts else CONTRADICTED if all(
                v == CONTRADICTED for v in verdicts) else INCONCLUSIVE
        note = f"; diverged: {diverged[1]} at w = 1, {diverged[0]} at w = {top:g}" if any(diverged) else ""
        value = "; ".join(f"{name} {row.value}" for name, row in rows) + f" (w = {top:g} vs 1){note}"
        claim.rows.append(Row(f"{dataset}, {model}", value, rows[0][1].n_seeds, source_of(part), verdict,
                              rows[0][1].estimate))
        from ..synthetic import seed_spread

        spread = seed_spread(part)
        at = lambda m, w: f"{part.loc[part['weight'] == w, m].mean():.2f}°"  # noqa: E731
        table.append([f"{dataset}, {model}", at("late_fluctuation", 1.0), at("late_fluctuation", top),
                      at("late_movement", 1.0), at("late_movement", top),
                      f"{spread.loc[spread['weight'] == 1.0, 'seed_spread'].mean():.2f}° / "
                      f"{spread.loc[spread['weight'] == top, 'seed_spread'].mean():.2f}°",
                      int(part.loc[part["weight"] == top, "loss_spikes"].sum())])
    claim.details.append(markdown_table(["data, model", "late fluctuation at w = 1", "at the largest w",
                                         "late movement at w = 1", "at the largest w",
                                         "seed spread at w = 1 / largest (descriptive)", "loss spikes (largest)"],
                                        table))
    return claim


# ------------------------------------------------------------------------------------------- remedies


def remedy_rows(res: Results, remedy: str) -> list[Row]:
    """A remedy's rows: CIFAR weighting slope (regime none) and the 2-D separable final angle per model."""
    rows = []
    final = cifar_weighting(res)
    if not final.empty:
        part = final[(final["remedy"] == remedy) & (final["regime"] == "none")]
        for tag, group in provenance_groups(part):
            rows.append(judged(f"CIFAR-10 weighting{tag}", seed_slopes, group, effect_verdict, DELTA_SLOPE,
                               premise=fit_premise(final)))
    synthetic = res.study("synthetic")
    if not synthetic.empty:
        t = synthetic[(synthetic["regime"] == "none") & (synthetic["dataset"] == "separable")
                      & (synthetic["remedy"] == remedy)]
        for model in ("lr", "mlp"):
            part = t[t["model"] == model]
            if len(part):
                last = int(part["epoch"].max())
                rows.append(judged(f"2-D separable, {model}", lambda r, e=last: _angles_at(r, e), part,
                                   effect_verdict, DELTA_DEGREES, "°", 2))
    return rows


def remedy_claims(res: Results) -> list[Claim]:
    """One claim per remedy: it brings back the effect of the importance weight (CIFAR slope; 2-D final angle)."""
    found = set()
    for study in ("cifar_binary", "synthetic"):
        rows = res.study(study)
        if not rows.empty:
            found |= set(rows["remedy"])
    plain = "; ".join(f"{row.label}: {row.value}" for row in remedy_rows(res, "plain"))
    claims = []
    for remedy in sorted(found - {"plain"}):
        claim = Claim(f"R: {remedy}", f"Remedy `{remedy}` brings back the effect of the importance weight that plain "
                                      "cross-entropy loses.", "CIFAR: slope vs log2 w; 2-D: final angle up − down",
                      "CIFAR-10 (cat/dog): per seed, the slope of the final fraction predicted positive against "
                      "log2(weight), regime none, then the mean over seeds; 2-D separable data: the angle between "
                      "the up- and down-weighted boundaries at the last epoch, paired by seed",
                      "effect rule; fit (CIFAR)", remedy_rows(res, remedy))
        claim.details.append(f"Plain weighted cross-entropy, for reference: {plain}.")
        claims.append(claim)
    if not claims:
        claims.append(Claim("R", "Remedies (poly loss, logit adjustment, deferred re-weighting, weight exponent, "
                                 "early stopping) bring back the effect of the importance weight.", "—",
                            "per remedy: CIFAR slope and 2-D final angle", "effect rule").not_run("remedy"))
    return claims


CLAIMS = (claim_a, claim_b, claim_c, claim_d, claim_e, claim_f, claim_g)


def all_claims(res: Results) -> tuple[list[Claim], list[Claim]]:
    """The paper's claims and the remedies' claims. Results that lack a column a claim needs give an inconclusive
    row that says so, not a failed report."""
    def safe(make: Callable[[Results], Any]) -> Any:
        try:
            return make(res)
        except KeyError as err:
            claims = make(Results(pd.DataFrame(columns=["_study", "source"]), {}))
            for claim in claims if isinstance(claims, list) else [claims]:
                claim.rows = [Row("", f"unreadable results: no column {err}", verdict=INCONCLUSIVE)]
                claim.details = [f"The results lack the column {err}."]
            return claims

    return [safe(make) for make in CLAIMS], safe(remedy_claims)


# ------------------------------------------------------------------------------------ weight dependence


def dependence_curves(res: Results) -> pd.DataFrame:
    """The weight's effect against interpolation (beyond the paper): per seed, the slope of the final fraction
    predicted positive against log2 w, with the runs' mean final eval-mode train accuracy, (i) for each L2
    strength (0: regime none), (ii) each dropout rate, (iii) each evaluated epoch of the regime none runs (the
    slope and the train accuracy at that epoch). Columns: curve, setting, seed, slope, train_accuracy."""
    rows = res.study("cifar_binary")
    if rows.empty:
        return pd.DataFrame(columns=["curve", "setting", "seed", "slope", "train_accuracy"])
    rows = rows[(rows["setting"] == "weighting") & (rows["classes"] == "cat/dog") & (rows["remedy"] == "plain")
                & (rows["_preset"] == "cpu")]
    out = []
    final = last_epoch(rows)
    for curve, regimes, column in (("L2 strength", ("none", "l2"), "_l2"), ("dropout rate", ("none", "dropout"),
                                                                             "_dropout")):
        part = final[final["regime"].isin(regimes)]
        for setting, group in part.groupby(column, sort=True):
            for seed, runs in group.groupby("seed"):
                out.append(dict(curve=curve, setting=float(setting), seed=seed, slope=seed_slopes(runs).iloc[0],
                                train_accuracy=fit_accuracy(runs).mean()))
    none = rows[rows["regime"] == "none"]
    for epoch, group in none.groupby("epoch", sort=True):
        for seed, runs in group.groupby("seed"):
            out.append(dict(curve="epoch", setting=float(epoch), seed=seed, slope=seed_slopes(runs).iloc[0],
                            train_accuracy=fit_accuracy(runs).mean()))
    return pd.DataFrame(out)
