"""Wang et al. (2022) replication: their loss, the grid end to end on made-up images, the comparison's
statistics and verdicts."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fake_cifar, train_study

from iwshift import losses, stats
from iwshift import wang2022 as study
from iwshift.cnn import TrainingSet, validation_metrics
from iwshift.checks import ConfigError
from iwshift.models import StackedCNN
from iwshift.train import LossSpec, StackedRuns, Trainer

# ----------------------------------------------------------------------------------- their loss


def test_poly_wang_matches_hand_computed_values():
    # v <= 1: log(1 + e^-v) / log(1 + e^-1); v > 1: v^-alpha
    margin = torch.tensor([-2.0, 0.0, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    expected = [6.789620613657859, 2.2126777968008744, 1.5133576912514364, 1.0, 0.5, 0.25]
    assert losses.poly_wang_loss(margin, 1.0).tolist() == pytest.approx(expected, rel=1e-12)
    assert losses.poly_wang_loss(torch.tensor([4.0]), 2.0).item() == pytest.approx(1 / 16)


def test_poly_wang_uses_their_binary_margin_and_stays_finite_at_zero():
    logits = torch.tensor([[[0.0, 2.0], [0.0, 2.0], [1.0, 1.0]]], requires_grad=True)  # l1 - l0 = 2, 2, 0
    labels = torch.tensor([[1, 0, 1]])  # margins v = (l1 - l0)(2y - 1) = 2, -2, 0
    log_w = torch.zeros(1, 2, dtype=torch.float64)
    values = losses.LossSpec("poly_wang", poly_alpha=1.0)(logits, labels, log_w)[0]
    assert values.tolist() == pytest.approx([0.5, 6.789620613657859, 2.2126777968008744], rel=1e-6)
    values.sum().backward()
    assert torch.isfinite(logits.grad).all()  # their indicator products give 0 * inf = NaN at v = 0
    # it is not our poly: ours is the plain logistic below its switch point
    assert losses.LossSpec("poly")(logits, labels, log_w)[0, 2].item() == pytest.approx(math.log(2), rel=1e-6)


def test_trainer_gives_each_run_its_own_loss_in_a_mixed_stack():
    runs = StackedRuns(seeds=[0, 1], train_index=np.zeros((2, 4), int), example_weights=np.ones((2, 4)),
                       l2=[0.0, 0.0], dropout=[0.0, 0.0], loss=[LossSpec(), LossSpec("poly_wang", poly_alpha=2.0)])
    model = StackedCNN(2, 0.125, n_classes=2, seeds=[0, 1])
    images = torch.zeros((4, 3, 32, 32), dtype=torch.uint8)
    trainer = Trainer(model, runs, images, torch.tensor([0, 1, 0, 1]), image_normalization="cifar10")
    logits = torch.tensor([[[0.0, 3.0], [1.0, 0.0]]] * 2)
    labels = torch.tensor([[1, 1]] * 2)
    got = trainer.losses(logits, labels)
    assert got[0].tolist() == pytest.approx(losses.cross_entropy(logits[0], labels[0]).tolist())
    assert got[1].tolist() == pytest.approx([3.0 ** -2, math.log1p(math.e) / math.log1p(math.exp(-1))])


# ----------------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.01, 0.015, "replicated"),      # inside the margin (0.02 here)
    (0.03, 0.05, "differs"),           # entirely above it
    (-0.06, -0.021, "differs"),        # entirely below it
    (0.01, 0.03, "inconclusive"),      # excludes 0 but not the margin
    (-0.03, 0.03, "inconclusive"),     # wider than the margin
    (-0.02, 0.01, "inconclusive"),     # touching the margin's edge is not inside it
    (float("nan"), float("nan"), "inconclusive"),
])
def test_verdict_rule(lo, hi, expected):
    assert stats.equivalence_verdict(stats.Interval((lo + hi) / 2, lo, hi, 10), 0.02) == expected


def test_welch_interval_matches_scipy():
    a, b = [0.60, 0.62, 0.61, 0.65], [0.58, 0.59, 0.57]
    interval = stats.welch_interval(a, b)
    assert interval.mean == pytest.approx(np.mean(a) - np.mean(b))
    assert (interval.low, interval.high) == pytest.approx((0.007228106076604332, 0.07277189392339574))
    assert not stats.welch_interval([0.6], b).defined  # one seed: no interval


def test_a_true_difference_of_zero_is_called_replicated_with_their_seed_count():
    """Simulated: 10 seeds on each side drawn from the same normal (their pooled between-seed spread), 2,000 times:
    with the margin chosen from their spread, replicated in about the chosen share of the trials (and rarely
    *differs*); a true difference twice the margin is almost never called replicated."""
    theirs = study.their_cells()
    margin = study.equivalence_margin(theirs)
    spread = float(np.sqrt((theirs[theirs.selection == "last"].groupby(["loss", "cell"])["acc"].std() ** 2).mean()))
    assert 0.01 < spread < 0.03 and 0.02 < margin < 0.04
    rng = np.random.default_rng(0)
    calls = [stats.equivalence_verdict(stats.welch_interval(rng.normal(0.6, spread, 10), rng.normal(0.6, spread, 10)),
                                       margin) for _ in range(2000)]
    assert calls.count("replicated") / len(calls) == pytest.approx(study.POWER, abs=0.04)
    assert calls.count("differs") / len(calls) < 0.01
    shifted = [stats.equivalence_verdict(stats.welch_interval(rng.normal(0.6 + 2 * margin, spread, 10),
                                                              rng.normal(0.6, spread, 10)), margin)
               for _ in range(500)]
    assert shifted.count("replicated") / len(shifted) < 0.01


def test_compare_gives_verdicts_from_the_difference_interval():
    theirs = pd.DataFrame({"loss": "ce", "cell": "IW", "selection": "last", "seed": range(10),
                           "acc": 0.60 + 0.01 * np.tile([-1, 1], 5)})
    same = theirs.assign(acc=theirs["acc"] + 0.001)
    far = theirs.assign(acc=theirs["acc"] + 0.10)
    for ours, expected in ((same, "replicated"), (far, "differs")):
        row = study.compare(ours, theirs).set_index(["loss", "cell", "selection"]).loc[("ce", "IW", "last")]
        assert row["verdict"] == expected
        assert row["detectable"] == pytest.approx(stats.welch_half_width(theirs["acc"].std(), 10, theirs["acc"].std(), 10))
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


def test_training_sets_follow_their_weights_and_their_data_is_fixed_across_seeds_by_default():
    cfg = tiny_config(fixed_data=False)
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
    assert not np.array_equal(other_seed.index, index)  # redrawn per seed (their code does not)
    fixed = tiny_config()
    assert fixed.fixed_data  # their code draws the dogs and the split once
    sets = [study.training_set(pd.Series({"seed": seed, "weighting": "iw"}), pair, fixed) for seed in (0, 1, 5)]
    assert all(np.array_equal(s.index, sets[0].index) and np.array_equal(s.val_index, sets[0].val_index)
               for s in sets)


def test_tiny_grid_end_to_end(tmp_path):
    cfg = tiny_config()
    data = fake_cifar(train_per_class=40, test_per_class=4)
    grid = study.Wang2022Study(cfg, data)
    table = train_study(grid, tmp_path / "wang2022_cpu")
    assert table["run"].nunique() == 6 and set(table["epoch"]) == {1, 2}
    assert {"test_accuracy", "val_accuracy_weighted", "val_loss_weighted"} <= set(table.columns)
    # rerun: every run is complete, nothing is trained or rewritten
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "wang2022_cpu").glob("*/metrics.csv")}
    again = train_study(grid, tmp_path / "wang2022_cpu")
    assert again.shape == table.shape
    assert written == {p: p.stat().st_mtime_ns for p in (tmp_path / "wang2022_cpu").glob("*/metrics.csv")}
    comparison, headlines = study.summarise(table)
    assert len(comparison) == 2 * (3 + 2 * len(study.SELECTIONS)) and len(headlines) == len(study.HEADLINES)
    assert (comparison["n_ours"] == 1).all() and (comparison["verdict"] == "inconclusive").all()  # one seed
    text = study.section(tmp_path)
    assert "NOT COMPARABLE" in text and "wang2022_cpu" in text and "data: other copy" not in text
    assert "data: fake (theirs: the official CIFAR-10 files)" in text  # why: named from the runs' records
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
    sets = [TrainingSet(np.arange(2), np.ones(2), np.array([0, 1, 2]), np.array([1.0, 1.0, 2.0])),
            TrainingSet(np.arange(2), np.ones(2), np.array([2, 3]), np.array([3.0, 1.0])),
            TrainingSet(np.arange(2), np.ones(2))]
    got = validation_metrics(_FixedLogits(logits), sets, images, labels)
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


def test_comparable_needs_their_protocol_their_data_and_fp32():
    official = "official CIFAR-10 (torchvision folder 'data')"
    assert study.comparable(study.make_config("paper"), official, "fp32") == (True, [])
    ok, why = study.comparable(study.make_config("paper"), "image folder 'cifar'", "fp32")
    assert not ok and why == ["data: image folder 'cifar' (theirs: the official CIFAR-10 files)"]
    ok, why = study.comparable(study.make_config("paper"), official, "bf16")
    assert not ok and why == ["precision bf16 (theirs: fp32)"]
    ok, why = study.comparable(study.make_config("cpu"), official, "fp32")
    assert not ok and "epochs = 40 (theirs: 400)" in why
    assert not study.comparable(study.make_config("paper", fixed_data=False), official, "fp32")[0]


def test_script_dry_run_prints_the_projected_cost(capsys):
    import replicate_wang2022 as script

    assert script.main(["--preset", "paper", "--device", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "60 runs" in out and "their protocol" in out and "H200" in out
    with pytest.raises(SystemExit) as err:
        script.main(["--preset", "paper", "--device", "cpu", "--dry-run", "--train-fraction", "1.5"])
    assert err.value.code == 2


def test_headline_readings_follow_the_claims_reports_rule():
    """Their headline comparisons are read as the claims report reads an effect (iwshift.stats)."""
    theirs = study.their_cells()
    headlines = study.headline(pd.DataFrame(), theirs).set_index("comparison")
    poly = headlines.loc["poly-tailed (α = 1): IW − No IW"]
    assert poly["theirs_reading"] == stats.classify(stats.Interval(poly["theirs"], poly["theirs_lo"], poly["theirs_hi"],
                                                                   10), study.DELTA) == "positive"
    assert (headlines["ours_reading"] == "not run").all()
