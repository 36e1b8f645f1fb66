"""The report's figures, drawn from the same results as its claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .claims import boundary_angles, cifar_weighting, dependence_curves, source_of, usable
from .load import Results, final_rows


def _where(rows: pd.DataFrame) -> str:
    s = source_of(rows)
    return f"preset {s.preset}; {s.data}; {s.device}; mean ± 95 % CI over seeds"


def synthetic_angle(res: Results):
    from .. import plots

    t = res.study("synthetic")
    if t.empty:
        return None
    t = t[(t["regime"] == "none") & (t["remedy"] == "plain") & t["dataset"].isin(["separable", "moons"])]
    t, note = usable(t)
    parts = []
    for (dataset, model), part in t.groupby(["dataset", "model"], sort=True):
        angles = boundary_angles(part)
        if len(angles):
            parts.append(angles.rename("angle").reset_index().assign(dataset=dataset, model=model))
    if not parts:
        return None
    fig = plots.curves_by_panel(pd.concat(parts), "angle", ["dataset"], "model", reference=1.0,
                                ylabel="angle up vs down (°)", bounds=(0.0, 180.0))
    for ax in fig.axes[:2]:
        ax.set_yscale("log")
    fig.set_size_inches(6, 2.4)
    return fig, (f"(a) 2-D data: angle between the up- and down-weighted boundaries against epoch (dotted: δ = 1°; "
                 f"{_where(t)}{note})")


def cifar_weight(res: Results):
    from .. import plots

    final = cifar_weighting(res)
    if final.empty:
        return None
    rows = final[(final["remedy"] == "plain") & (final["_preset"] == "cpu")]
    if rows.empty:
        return None
    label = rows["regime"] + np.where(rows["regime"] == "l2", " " + rows["_l2"].map("{:g}".format),
                                      np.where(rows["regime"] == "dropout", " " + rows["_dropout"].map("{:g}".format), ""))
    rows = rows.assign(setting=label, panel="final fraction predicted positive")
    fig = plots.curves_by_panel(rows, "fraction_positive_pair", ["panel"], "setting", x="weight", reference=0.5,
                                value_ticks=True, ylabel="fraction positive")
    fig.set_size_inches(5.6, 3.0)
    return fig, (f"(b–d) CIFAR-10 weighting: final fraction predicted positive against the weight, per regime and "
                 f"strength ({_where(rows)}; grey: collapsed or diverged runs, left out of the means)")


def imbalance(res: Results):
    from .. import plots

    binary = res.study("cifar_binary")
    if binary.empty or not (binary["setting"] == "imbalance").any():
        return None
    rows = final_rows(binary[binary["setting"] == "imbalance"])
    rows = rows[(rows["remedy"] == "plain") & (rows["_preset"] == "cpu")]
    fig = plots.curves_by_panel(rows, "test_balanced_accuracy", ["classes"], "variant", x="ratio", value_ticks=True,
                                ylabel="balanced accuracy", chance=0.5)
    fig.set_size_inches(3.2 * rows["classes"].nunique() + 1.6, 2.8)
    return fig, f"(e) CIFAR-10 imbalance: final balanced accuracy against the positive:negative ratio ({_where(rows)})"


def covariate(res: Results):
    from ..cifar_extension import final_metrics_figure

    rows = res.study("cifar_extension", "cifar_extension")
    if rows.empty:
        return None
    rows = rows[rows["run"].str.startswith("covariate_")]
    if rows.empty:
        return None
    return final_metrics_figure(rows.assign(study="covariate"), "covariate"), (
        f"(f) CIFAR-10 covariate shift: final target accuracy, worst sub-population and balanced accuracy per "
        f"weight source and regime ({_where(rows)})")


def weight_dependence(res: Results):
    """The weight's effect against interpolation: per-seed slopes against the runs' train accuracy, for the L2
    strengths, the dropout rates and the epochs of training (mean and 95 % interval over seeds)."""
    import matplotlib.pyplot as plt

    from .. import stats

    curves = dependence_curves(res)
    if curves.empty:
        return None
    names = [c for c in ("L2 strength", "dropout rate", "epoch") if (curves["curve"] == c).any()]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        part = curves[curves["curve"] == name]
        points = []
        for setting, group in part.groupby("setting", sort=True):
            slope = stats.mean_interval(group["slope"])
            points.append((group["train_accuracy"].mean(), slope.mean,
                           slope.half_width if slope.defined else 0.0, setting))
        x, y, err, settings = map(np.array, zip(*points))
        ax.errorbar(x, y, yerr=err, fmt="o-", ms=3, capsize=2, lw=0.8)
        labels: dict[tuple[float, float], list[str]] = {}  # settings at the same point share one label
        for xi, yi, s in zip(x, y, settings):
            if name != "epoch" or s in (1, 10, 50, 150) or s == settings.max():
                labels.setdefault((round(xi, 3), round(yi, 3)), []).append(f"{s:g}")
        for (xi, yi), texts in labels.items():
            ax.annotate(", ".join(texts), (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axhspan(-0.01, 0.01, color="0.85", zorder=0)
        ax.set_title(f"against {name}", fontsize=9)
        ax.set_xlabel("final eval-mode train accuracy" if name != "epoch" else "eval-mode train accuracy at the epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("slope of fraction positive per doubling of w")
    fig.suptitle("weight dependence against interpolation (CIFAR-10 cat/dog, cpu preset; grey: ±δ)", fontsize=9)
    fig.tight_layout()
    return fig, ("Weight dependence against interpolation: per seed, the slope of the final fraction predicted "
                 "positive against log2 w, for each L2 strength (0: regime none), each dropout rate, and each epoch of "
                 "the unregularised runs, against the runs' eval-mode train accuracy (mean ± 95 % CI over seeds; "
                 "grey band: ±δ)")


FIGURES = {"synthetic_angle": synthetic_angle, "cifar_fraction_vs_weight": cifar_weight, "cifar_imbalance": imbalance,
           "covariate_accuracy": covariate, "weight_dependence": weight_dependence}


def write_figures(res: Results, folder: Path, dpi: int = 80) -> dict[str, str]:
    """Draw each figure whose study was run into ``folder`` (stale ones removed); name -> caption."""
    import matplotlib

    matplotlib.use("Agg")
    from .. import plots

    made = {}
    for name, draw in FIGURES.items():
        drawn = draw(res)
        if drawn is not None:
            plots.save_figure(drawn[0], folder / f"{name}.png", dpi=dpi)
            made[name] = drawn[1]
    for stale in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        if stale.stem not in made:
            stale.unlink()
    return made
