"""Plots: functions from tidy tables (and saved parameters) to matplotlib figures.

Scripts save the figures as PNG with :func:`save_figure`; notebooks display them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import results
from .config import format_number
from .metrics import mean_confidence_interval

WEIGHTING_COLORS = {"equal": "tab:gray", "up": "tab:red", "down": "tab:blue"}


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return results.atomic_write(path, lambda f: f.write(buffer.getvalue()), binary=True)


def summarize(table: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Mean and 95 % Student-t half-width of ``value`` over the rows of each ``by`` group (the seeds)."""
    rows = []
    for key, group in table.groupby(list(by), sort=True):
        mean, half = mean_confidence_interval(group[value].to_numpy())
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "mean": mean, "ci95": half, "n": int(group[value].notna().sum())})
    return pd.DataFrame(rows)


def line_with_band(ax: plt.Axes, summary: pd.DataFrame, x: str, label: str | None = None,
                   color: str | None = None, marker: str | None = None) -> None:
    summary = summary.sort_values(x)
    line, = ax.plot(summary[x], summary["mean"], label=label, color=color, marker=marker, ms=3)
    ax.fill_between(summary[x], summary["mean"] - summary["ci95"], summary["mean"] + summary["ci95"],
                    color=line.get_color(), alpha=0.2, lw=0)


def curves_by_panel(
    table: pd.DataFrame, metric: str, panel: Sequence[str], hue: str, x: str = "epoch",
    ylabel: str | None = None, logx: bool = True, colors: dict[str, str] | None = None,
    title: str = "", reference: float | None = None, axes: Sequence[plt.Axes] | None = None,
    value_ticks: bool = False,
) -> plt.Figure:
    """One panel per value of the ``panel`` columns; in each, ``metric`` against ``x`` for each ``hue``
    value, mean +- 95 % interval over seeds."""
    keys = [key for key, _ in table.groupby(list(panel), sort=True)]
    if axes is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False,
                                 sharey=True)
        axes = axes[0]
    fig = axes[0].figure
    for ax, key in zip(axes, keys):
        key = key if isinstance(key, tuple) else (key,)
        sub = table[(table[list(panel)] == pd.Series(key, index=list(panel))).all(axis=1)]
        for value, part in sub.groupby(hue, sort=True):
            line_with_band(ax, summarize(part, [x], metric), x, label=str(value),
                           color=(colors or {}).get(value))
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
    axes[-1].legend(fontsize=8, title=hue, title_fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


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
