"""Wang et al. (2022) replication: their loss, the grid end to end on made-up images, the comparison's
statistics and verdicts."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fake_cifar

from iwshift import losses, sweep
from iwshift import wang2022 as study
from iwshift.checks import ConfigError
from iwshift.models import StackedCNN
from iwshift.train import LossSpec, StackedRuns, Trainer

# ----------------------------------------------------------------------------------- their loss


def test_poly_wang_matches_hand_computed_values():
    # v <= 1: log(1 + e^-v) / log(1 + e^-1); v > 1: v^-alpha
    margin = torch.tensor([-2.0, 0.0, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    expected = [6.789620613657859, 2.2126777968008744, 1.5133576912514364, 1.0, 0.5, 0.25]
    assert losses.poly_wang(margin, 1.0).tolist() == pytest.approx(expected, rel=1e-12)
    assert losses.poly_wang(torch.tensor([4.0]), 2.0).item() == pytest.approx(1 / 16)


def test_poly_wang_uses_their_binary_margin_and_stays_finite_at_zero():
    logits = torch.tensor([[0.0, 2.0], [0.0, 2.0], [1.0, 1.0]], requires_grad=True)  # logit_1 - logit_0 = 2, 2, 0
    labels = torch.tensor([1, 0, 1])  # margins v = (l1 - l0)(2y - 1) = 2, -2, 0
    values = losses.per_example_loss(logits, labels, "poly_wang", alpha=1.0)
    assert values.tolist() == pytest.approx([0.5, 6.789620613657859, 2.2126777968008744], rel=1e-6)
    values.sum().backward()
    assert torch.isfinite(logits.grad).all()  # their indicator products give 0 * inf = NaN at v = 0
    # it is not our poly: ours is the plain logistic below its switch point
    assert losses.per_example_loss(logits, labels, "poly")[2].item() == pytest.approx(math.log(2), rel=1e-6)


def test_trainer_gives_each_run_its_own_loss_in_a_mixed_stack():
    runs = StackedRuns(seeds=[0, 1], train_index=np.zeros((2, 4), int), example_weights=np.ones((2, 4)),
                       l2=[0.0, 0.0], dropout=[0.0, 0.0], loss=[LossSpec(), LossSpec("poly_wang", poly_alpha=2.0)])
    model = StackedCNN(2, 0.125, n_classes=2, seeds=[0, 1])
    images = torch.zeros((4, 3, 32, 32), dtype=torch.uint8)
    trainer = Trainer(model, runs, images, torch.tensor([0, 1, 0, 1]), image_normalization="cifar10")
    logits = torch.tensor([[[0.0, 3.0], [1.0, 0.0]]] * 2)
    labels = torch.tensor([[1, 1]] * 2)
    got = trainer.example_losses(logits, labels)
    assert got[0].tolist() == pytest.approx(losses.per_example_loss(logits[0], labels[0], "ce").tolist())
    assert got[1].tolist() == pytest.approx([3.0 ** -2, math.log1p(math.e) / math.log1p(math.exp(-1))])


# ----------------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.01, 0.015, "replicated"),      # inside +-0.02
    (0.03, 0.05, "differs"),           # entirely above +0.02
    (-0.06, -0.021, "differs"),        # entirely below -0.02
    (0.01, 0.03, "inconclusive"),      # excludes 0 but not the band
    (-0.03, 0.03, "inconclusive"),     # wider than the band
    (-0.02, 0.01, "inconclusive"),     # touching the band's edge is not inside it
    (float("nan"), float("nan"), "inconclusive"),
])
def test_verdict_rule(lo, hi, expected):
    assert study.verdict(lo, hi) == expected


def test_welch_interval_matches_scipy():
    a, b = [0.60, 0.62, 0.61, 0.65], [0.58, 0.59, 0.57]
    diff, lo, hi = study.welch_interval(a, b)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (lo, hi) == pytest.approx((0.007228106076604332, 0.07277189392339574))
    assert math.isnan(study.welch_interval([0.6], b)[1])  # one seed: no interval


def test_compare_gives_verdicts_from_the_difference_interval():
    theirs = pd.DataFrame({"loss": "ce", "cell": "IW", "selection": "last", "seed": range(10),
                           "acc": 0.60 + 0.01 * np.tile([-1, 1], 5)})
    same = theirs.assign(acc=theirs["acc"] + 0.001)
    far = theirs.assign(acc=theirs["acc"] + 0.10)
    for ours, expected in ((same, "replicated"), (far, "differs")):
        row = study.compare(ours, theirs).set_index(["loss", "cell", "selection"]).loc[("ce", "IW", "last")]
        assert row["verdict"] == expected
    assert study.compare(pd.DataFrame(), theirs).query("loss == 'ce' and cell == 'IW'")["verdict"].item() == "not run"


def test_early_stopping_rules_pick_their_checkpoints():
    table = pd.DataFrame({"run": "r", "preset": "cpu", "comparable": False, "loss": "ce", "weighting": "iw",
                          "seed": 0, "epoch": [1, 2, 3, 4],
                          "test_accuracy": [0.50, 0.70, 0.60, 0.55],
                          "val_accuracy_weighted": [0.4, 0.5, 0.9, 0.9],   # theirs: first max -> epoch 3
                          "val_loss_weighted": [0.9, 0.3, 0.5, 0.8]})      # ours: min -> epoch 2
    cells = study.our_cells(table).set_index(["cell", "selection"])["acc"]
    assert cells[("IW", "last")] == 0.55
    assert cells[("IW-ES", "theirs")] == 0.60
    assert cells[("IW-ES", "ours")] == 0.70
    assert cells[("IW-ES", "test")] == 0.70


def test_their_results_file_holds_the_issue_table():
    theirs = study.their_cells()
    means = theirs.groupby(["loss", "cell"])["acc"].mean().round(3)
    assert len(theirs) == 100 and theirs.groupby(["loss", "cell"])["seed"].nunique().eq(10).all()
    assert means[("poly_wang", "IW")] == 0.604 and means[("poly_wang", "No IW")] == 0.564
    assert means[("ce", "IW")] == 0.578 and means[("ce", "No IW")] == 0.605


# ----------------------------------------------------------------------------------- the grid


def tiny_config(**overrides) -> study.Wang2022Config:
    return study.make_config("cpu", per_class=40, width=0.125, epochs=2, eval_every=1, batch_size=16,
                             seeds=(0,), **overrides)


def test_training_sets_follow_their_weights_and_share_data_within_a_seed():
    cfg = tiny_config()
    pair = study.prepare(fake_cifar(train_per_class=40, test_per_class=4), cfg, "cpu")
    labels = pair.labels.numpy()
    sets = {w: study.training_set(pd.Series({"seed": 0, "weighting": w}), pair, cfg) for w in study.WEIGHTINGS}
    assert len({tuple(s.index) for s in sets.values()}) == 1  # same images for every weighting of a seed
    index = sets["none"].index
    assert len(index) == cfg.n_train() == 35 and len(sets["none"].val_index) == 44 - 35
    n_cat, n_dog = np.bincount(labels[index], minlength=2)
    assert n_cat + n_dog == 35 and labels[np.concatenate([index, sets["none"].val_index])].sum() == 4
    for weighting, power in (("none", 0.0), ("iw", 1.0), ("iw_exp", 1.5)):
        w = sets[weighting].weights
        assert w.mean() == pytest.approx(1.0)
        ratio = w[labels[index] == 1][0] / w[labels[index] == 0][0]
        assert ratio == pytest.approx((n_cat / n_dog) ** power)
    other_seed = study.training_set(pd.Series({"seed": 1, "weighting": "iw"}), pair, cfg)
    assert not np.array_equal(other_seed.index, index)


def test_tiny_grid_end_to_end(tmp_path):
    cfg = tiny_config()
    data = fake_cifar(train_per_class=40, test_per_class=4)
    table = study.run_grid(data, cfg, tmp_path / "wang2022_cpu", "cpu", progress=False)
    assert table["run"].nunique() == 6 and set(table["epoch"]) == {1, 2}
    assert {"test_accuracy", "val_accuracy_weighted", "val_loss_weighted"} <= set(table.columns)
    # rerun: every run is complete, nothing is trained or rewritten
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "wang2022_cpu").glob("*/metrics.csv")}
    again = study.run_grid(data, cfg, tmp_path / "wang2022_cpu", "cpu", progress=False)
    assert again.shape == table.shape
    assert written == {p: p.stat().st_mtime_ns for p in (tmp_path / "wang2022_cpu").glob("*/metrics.csv")}
    comparison, headlines = study.summarise(table)
    assert len(comparison) == 2 * (3 + 2 * len(study.SELECTIONS)) and len(headlines) == len(study.HEADLINES)
    assert (comparison["n_ours"] == 1).all() and (comparison["verdict"] == "inconclusive").all()  # one seed
    text = study.section(tmp_path)
    assert "NOT COMPARABLE" in text and "wang2022_cpu" in text
    assert text.count("| cross-entropy |") == 3 + 2 * len(study.SELECTIONS)


class _FixedLogits:
    """Stands in for a trainer: the same hand-made logits (K, M, 2) for any M inputs (evaluation)."""

    def __init__(self, logits):
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def predict_logits(self, inputs):
        assert len(inputs) == self.logits.shape[1]
        return self.logits


def test_validation_metrics_are_weighted_means_over_each_runs_own_split():
    labels = torch.tensor([0, 1, 1, 0, 9])   # the last example is in no split
    images = torch.zeros(5, 3, 2, 2, dtype=torch.uint8)
    # union of the splits: examples 0..3; run 0 right on 0, 1, 3; run 1 right on 2 only
    logits = np.array([[[2, 0], [0, 2], [2, 0], [2, 0]], [[0, 2], [2, 0], [0, 2], [0, 2]], [[0, 0]] * 4])
    sets = [sweep.TrainingSet(np.arange(2), np.ones(2), np.array([0, 1, 2]), np.array([1.0, 1.0, 2.0])),
            sweep.TrainingSet(np.arange(2), np.ones(2), np.array([2, 3]), np.array([3.0, 1.0])),
            sweep.TrainingSet(np.arange(2), np.ones(2))]
    got = sweep.validation_metrics(_FixedLogits(logits), sets, images, labels)
    good, bad = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))  # cross-entropy of a margin of +-2
    np.testing.assert_allclose(got["val_accuracy_weighted"][:2], [2 / 4, 3 / 4])
    np.testing.assert_allclose(got["val_loss_weighted"][:2], [(2 * good + 2 * bad) / 4, (3 * good + bad) / 4],
                               rtol=1e-6)
    assert np.isnan(got["val_loss_weighted"][2]) and np.isnan(got["val_accuracy_weighted"][2])  # no split


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="--imbalance"):
        study.make_config("cpu", per_class=10, imbalance=10)
    with pytest.raises(ConfigError, match="--losses"):
        study.make_config("cpu", losses=("hinge",))
    assert study.make_config("paper").comparable() and not study.make_config("cpu").comparable()


def test_script_dry_run_prints_the_projected_cost(capsys):
    import replicate_wang2022 as script

    assert script.main(["--preset", "paper", "--device", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "60 runs" in out and "their protocol" in out and "H200" in out
    with pytest.raises(SystemExit) as err:
        script.main(["--preset", "paper", "--device", "cpu", "--dry-run", "--train-fraction", "1.5"])
    assert err.value.code == 2


def test_headline_readings_follow_the_claims_reports_rule():
    """An effect is positive only when its interval lies at or beyond +δ, as in iwshift.report."""
    assert study.effect_reading(0.01, 0.05) == "unclear"  # above 0 but crossing δ
    assert study.effect_reading(0.03, 0.05) == "positive"
    assert study.effect_reading(-0.05, -0.02) == "negative"
    assert study.effect_reading(-0.01, 0.01) == "negligible"
    assert study.effect_reading(float("nan"), float("nan")) == "unclear"
