"""Plots: functions from tidy tables (and saved parameters) to matplotlib figures.

Scripts save the figures as PNG with :func:`save_figure`; notebooks display them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import results, stats
from .checks import format_number
from .health import excluded_note, split_status

WEIGHTING_COLORS = {"equal": "tab:gray", "up": "tab:red", "down": "tab:blue"}


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return results.atomic_write(path, lambda f: f.write(buffer.getvalue()), binary=True)


PROVENANCE = ("_data", "_preset")  # columns the report adds: runs differing in them are never pooled
FLAGGED_COLOR = "0.6"              # runs excluded from the means (collapsed, diverged)


def value_bounds(metric: str) -> tuple[float, float] | None:
    """The valid range of a metric, by its name: fractions and accuracies lie in [0, 1]."""
    return (0.0, 1.0) if "fraction" in metric or "accuracy" in metric else None


def summarize(table: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Mean and 95 % Student-t half-width of ``value`` over the rows of each ``by`` group (the seeds)."""
    rows = []
    for key, group in table.groupby(list(by), sort=True):
        interval = stats.mean_interval(group[value].to_numpy())
        half = interval.half_width if interval.defined else 0.0  # one seed: a line without a band
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "mean": interval.mean, "ci95": half, "n": interval.n})
    return pd.DataFrame(rows)


def band(summary: pd.DataFrame, bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the mean +- 95 % band, clipped to ``bounds`` (a fraction's band stays in [0, 1])."""
    low, high = (summary["mean"] - summary["ci95"]).to_numpy(), (summary["mean"] + summary["ci95"]).to_numpy()
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low, high


def line_with_band(ax: plt.Axes, summary: pd.DataFrame, x: str, label: str | None = None,
                   color: str | None = None, marker: str | None = None,
                   bounds: tuple[float, float] | None = None, linestyle: str = "-") -> None:
    summary = summary.sort_values(x)
    line, = ax.plot(summary[x], summary["mean"], label=label, color=color, marker=marker, ms=3, ls=linestyle)
    low, high = band(summary, bounds)
    ax.fill_between(summary[x], low, high, color=line.get_color(), alpha=0.2, lw=0)


def provenance_columns(table: pd.DataFrame) -> list[str]:
    """The provenance columns whose values differ within ``table`` (their runs must not share a line)."""
    return [c for c in PROVENANCE if c in table and table[c].nunique() > 1]


def legend_outside(fig: plt.Figure, axes: Sequence[plt.Axes], title: str | None = None) -> None:
    """One legend for all ``axes`` (labels deduplicated), to the right of the last one, off the data."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        axes[-1].legend(handles.values(), handles.keys(), fontsize=7, title=title, title_fontsize=7,
                        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def curves_by_panel(
    table: pd.DataFrame, metric: str, panel: Sequence[str], hue: str, x: str = "epoch",
    ylabel: str | None = None, logx: bool = True, colors: dict[str, str] | None = None,
    title: str = "", reference: float | None = None, axes: Sequence[plt.Axes] | None = None,
    value_ticks: bool = False, chance: float | None = None, bounds: tuple[float, float] | None | str = "auto",
    flagged: dict[Any, str] | None = None,
) -> plt.Figure:
    """One panel per value of the ``panel`` columns; in each, ``metric`` against ``x`` for each ``hue``
    value, mean +- 95 % interval over seeds (the band clipped to ``bounds``: by default the metric's valid
    range, :func:`value_bounds`).

    Runs whose ``status`` is not "ok" (collapsed, diverged) are left out of the means and drawn one by one,
    thin, grey and dashed; runs of different data or presets (report columns ``_data``, ``_preset``) get
    separate lines; ``flagged`` hue values (e.g. a regime that did not fit) are drawn dashed, their reason
    in the legend; ``chance`` draws the chance level, ``reference`` another level. The legend is outside."""
    bounds = value_bounds(metric) if bounds == "auto" else bounds
    keys = [key for key, _ in table.groupby(list(panel), sort=True)]
    if not keys:
        raise ValueError(f"nothing to plot: the table has no rows for {metric}")
    if axes is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys) + 1.6, 2.8), squeeze=False,
                                 sharey=True)  # + room for the legend on the right
        axes = axes[0]
    fig = axes[0].figure
    styles = ["-", "--", ":", "-."]
    for ax, key in zip(axes, keys):
        key = key if isinstance(key, tuple) else (key,)
        sub = table[(table[list(panel)] == pd.Series(key, index=list(panel))).all(axis=1)]
        ok, bad = split_status(sub)
        split = provenance_columns(sub)
        for value, part in ok.groupby(hue, sort=True):
            pieces = part.groupby(split, sort=True) if split else [((), part)]
            for i, (origin, piece) in enumerate(pieces):
                origin = origin if isinstance(origin, tuple) else (origin,)
                label = str(value) + (f" [{'; '.join(map(str, origin))}]" if split else "")
                style = styles[i % len(styles)] if split else "-"
                if flagged and value in flagged:
                    label, style = f"{label} ({flagged[value]})", "--"
                line_with_band(ax, summarize(piece, [x], metric), x, label=label,
                               color=(colors or {}).get(value), bounds=bounds, linestyle=style)
        for _, run in (bad.groupby("run", sort=True) if "run" in bad else []):
            run = run.sort_values(x)
            ax.plot(run[x], run[metric], color=FLAGGED_COLOR, lw=0.7, ls="--",
                    marker="x" if len(run) == 1 else None, ms=3,
                    label=f"left out: {excluded_note(table)}")
        if chance is not None:
            ax.axhline(chance, color="k", lw=0.8, ls="--", alpha=0.6, label=f"chance ({chance:g})")
        if reference is not None:
            ax.axhline(reference, color="k", lw=0.6, ls=":")
        if logx:
            ax.set_xscale("log")
        if value_ticks:  # a grid of weights or ratios: label each value (1/32, 1, 32), no minor ticks
            values = sorted(sub[x].unique())
            ax.set_xticks(values, [format_number(v) for v in values], fontsize=7)
            ax.minorticks_off()
        ax.set_title(" / ".join(map(str, key)), fontsize=9)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel or metric)
    legend_outside(fig, list(axes), title=hue)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def bars(table: pd.DataFrame, metric: str, group: str, hue: str, ax: plt.Axes,
         chance: float | None = None, bounds: tuple[float, float] | None | str = "auto") -> None:
    """Bars of ``metric``'s mean over seeds per ``group`` (x) and ``hue`` (colour), with the 95 % interval
    clipped to ``bounds``; runs whose ``status`` is not ok are left out (their count in the x label); runs of
    different data or presets (report columns ``_data``, ``_preset``) get separate bars."""
    bounds = value_bounds(metric) if bounds == "auto" else bounds
    split = provenance_columns(table)
    if split:  # runs of different data or presets: separate bars
        table = table.assign(**{hue: table[hue].astype(str) + " [" + table[split].astype(str).agg("; ".join, axis=1)
                                + "]"})
    ok, _ = split_status(table)
    groups, hues = list(dict.fromkeys(table[group])), list(dict.fromkeys(table[hue]))
    width = 0.8 / max(1, len(hues))
    for i, value in enumerate(hues):
        summary = summarize(ok[ok[hue] == value], [group], metric)
        summary = summary.set_index(group).reindex(groups) if len(summary) else pd.DataFrame(
            {"mean": np.nan, "ci95": np.nan}, index=groups)
        low, high = band(summary.fillna({"ci95": 0.0}), bounds)
        mean = summary["mean"].to_numpy()
        ax.bar(np.arange(len(groups)) + i * width, mean, width, label=str(value),
               yerr=np.abs(np.stack([mean - low, high - mean])), capsize=2)
    ax.set_xticks(np.arange(len(groups)) + width * (len(hues) - 1) / 2, groups)
    note = excluded_note(table)
    if note:
        ax.set_xlabel(f"excluded: {note}", fontsize=7)
    if chance is not None:
        ax.axhline(chance, color="k", lw=0.8, ls="--", alpha=0.6, label=f"chance ({chance:g})")
    ax.grid(alpha=0.3, axis="y")


def boundary_grid(
    logit_fn: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray],
    params: dict[tuple[str, int], dict[str, np.ndarray]],
    rows: Sequence[str], epochs: Sequence[int], x: np.ndarray, y: np.ndarray,
    reference_normal: np.ndarray | None = None, title: str = "", resolution: int = 150,
) -> plt.Figure:
    """A grid of decision boundaries: ``params[(row, epoch)]`` drawn at row ``row``, column ``epoch``,
    over the points ``x`` coloured by label ``y``. ``logit_fn(params, grid)`` gives the logits."""
    pad = 0.5
    lo, hi = x.min(0) - pad, x.max(0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    fig, axes = plt.subplots(len(rows), len(epochs), figsize=(2.2 * len(epochs), 2.2 * len(rows)),
                             squeeze=False, sharex=True, sharey=True)
    for i, row in enumerate(rows):
        for j, epoch in enumerate(epochs):
            ax = axes[i, j]
            ax.scatter(x[:, 0], x[:, 1], c=np.where(y == 1, "tab:red", "tab:blue"), s=3, alpha=0.4, lw=0)
            if (row, epoch) in params:
                z = logit_fn(params[(row, epoch)], grid).reshape(gx.shape)
                ax.contourf(gx, gy, z > 0, levels=[-0.5, 0.5, 1.5], colors=["tab:blue", "tab:red"],
                            alpha=0.12)
                ax.contour(gx, gy, z, levels=[0.0], colors="k", linewidths=1.2)
            if reference_normal is not None:  # the max-margin direction, drawn through the origin
                d = np.array([-reference_normal[1], reference_normal[0]]) * 10
                ax.plot([-d[0], d[0]], [-d[1], d[1]], "g--", lw=0.8)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"epoch {epoch}", fontsize=9)
            if j == 0:
                ax.set_ylabel(row, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
