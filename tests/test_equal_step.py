"""The 2-D study compares weights at an equal effective step: the weight exponent remedy against plain
weighting, and the extreme weights against weight 1 (whose instability must not be the step size's)."""

import numpy as np
import pandas as pd
import pytest

from helpers import tiny_synthetic as tiny
from helpers import train_synthetic
from iwshift import losses, synthetic


def test_weight_exponent_keeps_the_mean_of_the_weights():
    w, counts = np.array([1.0, 10.0]), np.array([90, 10])
    np.testing.assert_array_equal(losses.weight_exponent(w, 1.0, counts, keep_mean=True), w)  # exactly
    for k in (0.0, 0.5, 2.0):
        tempered = losses.weight_exponent(w, k, counts, keep_mean=True)
        assert tempered @ counts == pytest.approx(w @ counts)
        assert tempered[1] / tempered[0] == pytest.approx(10.0 ** k)


@pytest.mark.parametrize("normalization", ["mean", "weight_sum"])
def test_exponent_one_reproduces_plain_weighting_exactly(normalization, tmp_path):
    cfg = tiny(remedies=["plain", "exponent"], weight_power=1.0, normalization=normalization)
    runs, t = train_synthetic(cfg, tmp_path)
    t = t.sort_values(["dataset", "model", "weighting", "seed", "epoch"])
    plain, exponent = (runs[runs.remedy == r][["weight_class0", "weight_class1"]].to_numpy() for r in ("plain", "exponent"))
    np.testing.assert_array_equal(plain, exponent)
    columns = ["epoch", "test_fraction_positive", "train_loss", "train_accuracy"]
    key = lambda r: t[t.remedy == r][columns].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key("plain"), key("exponent"))


def test_tempered_weights_take_the_plain_weights_step():
    """Under the mean normalisation the step scales with the mean weight: an exponent run keeps plain's."""
    cfg = tiny(remedies=["plain", "exponent"], weight_power=0.5)
    datasets = {d: synthetic.load_dataset(d, cfg) for d in cfg.datasets}
    runs = synthetic.build_runs(cfg, datasets)
    for dataset, part in runs.groupby("dataset"):
        counts = datasets[dataset].train.class_counts()
        mean = {r: float(g[["weight_class0", "weight_class1"]].to_numpy()[0] @ counts / counts.sum())
                for r, g in part.groupby("remedy")}
        assert mean["exponent"] == pytest.approx(mean["plain"])
        assert mean["plain"] > 1.5  # the plain weights themselves are not rescaled


def test_extreme_weights_are_compared_at_equal_effective_step(monkeypatch, tmp_path):
    """A "weighting" that puts the weight on both classes changes nothing but the step size: the extreme
    study must give it exactly the instability of weight 1 (not a smaller one because a 1,000-times larger
    step converges sooner)."""
    base = tiny(datasets=["separable"], models=["lr"], seeds=[0, 1, 2], epochs=40, extreme_weights=[1.0, 1000.0])
    both = lambda weighting, factor: np.array([factor, factor]) if weighting != "equal" else np.ones(2)  # noqa: E731
    monkeypatch.setattr(synthetic.shifts, "class_weights", both)
    stab = synthetic.stability(train_synthetic(base, tmp_path, extreme=True)[1])
    stab["seed_deviation"] = synthetic.seed_deviation(stab)
    measures = ["late_fluctuation", "seed_deviation", "boundary_movement", "final_normal_x", "final_normal_y"]
    at_one = stab[stab.weight == 1].set_index("seed").sort_index()[measures]
    for weighting in ("up", "down"):
        scaled = stab[(stab.weight == 1000) & (stab.weighting == weighting)].set_index("seed").sort_index()[measures]
        pd.testing.assert_frame_equal(scaled, at_one)
    assert stab["late_fluctuation"].notna().all()


def test_extreme_study_weights_have_mean_one_and_up_weighting_is_measured(tmp_path):
    base = tiny(datasets=["separable"], models=["lr"], seeds=[0, 1], epochs=20, extreme_weights=[1.0, 100.0])
    stab = synthetic.stability(train_synthetic(base, tmp_path, extreme=True)[1])
    stab["seed_deviation"] = synthetic.seed_deviation(stab)
    spread = synthetic.seed_spread(stab)
    data = synthetic.load_dataset("separable", base)
    counts = data.train.class_counts()
    means = stab[["weight_class0", "weight_class1"]].to_numpy() @ counts / counts.sum()
    np.testing.assert_allclose(means, 1.0)
    high = stab[stab.weight == 100]
    ratio = np.where(high.weighting == "up", high.weight_class1 / high.weight_class0,
                     high.weight_class0 / high.weight_class1)
    np.testing.assert_allclose(ratio, 100.0)
    assert {"late_fluctuation", "seed_deviation", "status"} <= set(stab.columns)
    assert set(spread["n_seeds"]) == {2}
