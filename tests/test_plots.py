"""Figures that do not mislead: bands in the valid range, unhealthy runs apart, no pooling across presets,
chance levels, legends off the data, and grids that are valid input but small."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from iwshift import cifar_binary, cifar_extension, plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def fraction_table(status=None, presets=None):
    """Three seeds at two weights; the fraction is near 1, with a spread that takes mean + CI above 1."""
    rows = []
    for seed, value in enumerate((1.0, 0.9, 1.0)):
        for w in (1.0, 4.0):
            rows.append(dict(run=f"w{w}_s{seed}", seed=seed, weight=w, regime="none", panel="p",
                             fraction_positive_pair=value, status="ok"))
    table = pd.DataFrame(rows)
    if status:
        table.loc[table.run == "w4.0_s0", ["status", "fraction_positive_pair"]] = [status, 0.0]
    if presets:
        table["_preset"] = np.where(table.seed == 0, presets[0], presets[1])
    return table


def band_tops(ax):
    return [poly.get_paths()[0].vertices[:, 1].max() for poly in ax.collections]


def test_bands_of_fractions_are_clipped_to_the_valid_range():
    summary = plots.summarize(fraction_table(), ["weight"], "fraction_positive_pair")
    assert (summary["mean"] + summary["ci95"] > 1).all()  # the unclipped band would leave [0, 1]
    low, high = plots.band(summary, (0.0, 1.0))
    assert high.max() == 1.0 and low.min() >= 0.0
    fig = plots.curves_by_panel(fraction_table(), "fraction_positive_pair", ["panel"], "regime", x="weight")
    assert max(band_tops(fig.axes[0])) <= 1.0
    gap = fraction_table().assign(gap=lambda t: t.fraction_positive_pair + 0.5)  # not a fraction: not clipped
    fig = plots.curves_by_panel(gap, "gap", ["panel"], "regime", x="weight")
    assert max(band_tops(fig.axes[0])) > 1.5


def test_collapsed_runs_are_drawn_apart_and_left_out_of_the_mean():
    fig = plots.curves_by_panel(fraction_table(status="collapsed"), "fraction_positive_pair", ["panel"], "regime",
                                x="weight")
    ax = fig.axes[0]
    mean_line = next(line for line in ax.lines if line.get_label() == "none")
    healthy = fraction_table().query("weight == 4 and seed != 0")["fraction_positive_pair"].mean()
    assert mean_line.get_ydata()[-1] == pytest.approx(healthy)
    grey = [line for line in ax.lines if "left out" in line.get_label()]
    assert len(grey) == 1 and grey[0].get_linestyle() == "--" and "1 collapsed" in grey[0].get_label()


def test_runs_of_different_presets_are_never_pooled_into_one_line():
    fig = plots.curves_by_panel(fraction_table(presets=("cpu", "paper")), "fraction_positive_pair", ["panel"],
                                "regime", x="weight")
    labels = sorted(line.get_label() for line in fig.axes[0].lines)
    assert labels == ["none [cpu]", "none [paper]"]
    fig, ax = plt.subplots()
    plots.bars(fraction_table(presets=("cpu", "paper")), "fraction_positive_pair", "regime", "weight", ax)
    assert len(ax.patches) == 4  # 2 weights x 2 presets


def test_accuracy_plots_have_a_chance_line_and_the_legend_is_off_the_data():
    table = fraction_table().rename(columns={"fraction_positive_pair": "test_balanced_accuracy"})
    fig = plots.curves_by_panel(table, "test_balanced_accuracy", ["panel"], "regime", x="weight", chance=0.5)
    ax = fig.axes[0]
    assert any(line.get_label().startswith("chance") and set(line.get_ydata()) == {0.5} for line in ax.lines)
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # to the right of the axes, not on the data


def binary_table(weights):
    rows = []
    for w in weights:
        for seed in (0, 1):
            for epoch in (1, 2):
                rows.append(dict(run=f"w{w}_s{seed}", setting="weighting", weight=w, ratio=1.0, variant="weighted",
                                 regime="none", remedy="plain", seed=seed, epoch=epoch, train_accuracy=0.9,
                                 **{f"fraction_positive_{k}": 0.5 for k in ("pair", "other", "noise")},
                                 **{f"grad_norm_{c}{s}": 1.0 for c in ("negative", "positive")
                                    for s in ("", "_weighted")}))
    return pd.DataFrame(rows)


def test_a_grid_of_the_weight_one_alone_draws_its_figures():
    names = [name for name, _ in cifar_binary.figures(binary_table([1.0]))]
    assert "gradient_norms" not in names and "final_fraction_vs_weight" in names
    names = [name for name, _ in cifar_binary.figures(binary_table([1.0, 4.0]))]
    assert "gradient_norms" in names


@pytest.mark.parametrize("study, chance", [("covariate", 0.5), ("label", 0.1)])
def test_extension_final_metrics_are_plotted_for_both_studies(study, chance):
    rows = [dict(run=f"{study}_{source}_{regime}_s{seed}", study=study, weight_source=source, regime=regime,
                 seed=seed, epoch=2, target_accuracy=0.95 + 0.05 * seed, target_worst_group_accuracy=0.9,
                 target_balanced_accuracy=0.9, status="diverged" if (source, seed) == ("true", 2) else "ok")
            for source in ("none", "true") for regime in ("none", "l2") for seed in (0, 1, 2)]
    fig = cifar_extension.final_metrics_figure(pd.DataFrame(rows), study)
    for ax in fig.axes:
        assert any(set(line.get_ydata()) == {chance} for line in ax.lines)
        for line in ax.lines:  # error bars: within [0, 1]
            assert np.nanmax(line.get_ydata()) <= 1.0
    assert "2 diverged" in fig.axes[0].get_xlabel()  # seed 2 of "true", in both regimes
    names = [name for name, _ in cifar_extension.figures(pd.DataFrame(rows), None, study)]
    assert names == [f"{study}_final_target_accuracy", f"{study}_accuracy_vs_epoch"]
