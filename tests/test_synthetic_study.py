"""The synthetic study: reproducibility, the paper's qualitative claims, saved results, the script's CLI."""

import json
import subprocess
import sys
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT, load_script, tiny_synthetic, train_synthetic
from iwshift import metrics, results, synthetic
from iwshift.config import SyntheticConfig

small_config = partial(tiny_synthetic, regimes=["none", "dropout"], weightings=["equal", "up", "down"], epochs=20,
                       hidden=16, n_per_class=256, n_moons=1024)


def metrics_of(table):
    return table.drop(columns="seconds").sort_values(["run", "epoch"]).reset_index(drop=True)


def test_same_seed_gives_identical_metrics(tmp_path):
    a = train_synthetic(small_config(), tmp_path / "a")[1]
    b = train_synthetic(small_config(), tmp_path / "b")[1]
    pd.testing.assert_frame_equal(metrics_of(a), metrics_of(b))
    c = train_synthetic(small_config(seeds=[0, 2]), tmp_path / "c")[1]
    assert not metrics_of(a).equals(metrics_of(c))


def test_study_trains_the_same_through_either_engine_of_the_trainer(tmp_path):
    """The fused engine (the default on CPU) and the torch engine give the same study, remedies included; each run
    records the engine that trained it; a loss the fused engine has no version of trains through the torch engine,
    and the record says why."""
    cfg = small_config(epochs=6, remedies=["plain", "poly", "logit_adjusted", "drw"], drw_epoch=3)
    fused = train_synthetic(cfg, tmp_path / "fused")[1]
    eager = train_synthetic(replace(cfg, engine="torch"), tmp_path / "eager")[1]
    pd.testing.assert_frame_equal(metrics_of(fused), metrics_of(eager), rtol=1e-4, atol=1e-5)
    run = fused["run"].iloc[0]
    assert json.loads((tmp_path / "fused" / run / "config.json").read_text())["trained"]["engine"] == "fused"
    train_synthetic(small_config(epochs=2, remedies=["plain", "poly_wang"], datasets=["separable"], models=["lr"]),
                    tmp_path / "wang")
    record = json.loads((tmp_path / "wang" / "separable_lr_up_none_s0" / "config.json").read_text())
    assert record["trained"]["engine"].startswith("torch (the kernel has no compiled version of the loss poly_wang")


def test_grid_follows_the_paper():
    cfg = SyntheticConfig(epochs=1)
    runs = synthetic.build_runs(cfg, {d: synthetic.load_dataset(d, cfg) for d in cfg.datasets})
    assert len(runs) == 250
    assert set(runs.query("model == 'lr'")["regime"]) == {"none", "l2"}
    assert set(runs.query("dataset == 'moons_minority1'")["weighting"]) == {"equal", "up"}
    assert set(runs.query("dataset == 'moons_minority0'")["weighting"]) == {"equal", "down"}
    assert runs.query("regime == 'l2' and model == 'lr'")["l2"].eq(0.1).all()
    assert runs.query("regime == 'l2' and model == 'mlp'")["l2"].eq(0.01).all()


def test_imbalanced_moons_keep_a_tenth_of_the_minority():
    cfg = SyntheticConfig()
    moons = synthetic.load_dataset("moons", cfg)
    for minority in (0, 1):
        ds = synthetic.load_dataset(f"moons_minority{minority}", cfg)
        full, kept = moons.train.class_counts(), ds.train.class_counts()
        assert kept[minority] == round(full[minority] / 10)
        assert kept[1 - minority] == full[1 - minority]
        assert np.array_equal(ds.test.y, moons.test.y)  # the test half stays balanced
        assert len(np.unique(ds.train.x, axis=0)) == len(ds.train)


def test_separable_data_has_a_margin():
    ds = synthetic.load_dataset("separable", SyntheticConfig())
    projection = ds.train.x @ np.array([1.0, 1.0]) / np.sqrt(2)
    assert projection[ds.train.y == 1].min() >= 0.25 - 1e-6
    assert projection[ds.train.y == 0].max() <= -0.25 + 1e-6
    assert ds.train.class_counts().tolist() == [256, 256]


def test_weighting_matters_early_and_fades_on_separable_data(tmp_path):
    cfg = SyntheticConfig(datasets=["separable"], models=["lr", "mlp"], regimes=["none"],
                          weightings=["up", "down"], seeds=[0, 1, 2], epochs=2000)
    runs, t = train_synthetic(cfg, tmp_path)
    first = t[t.epoch == 1].pivot_table(index=["model", "seed"], columns="weighting",
                                         values="test_fraction_positive")
    # one epoch in, up-weighting class 1 predicts class 1 more often, for every model and seed
    gap = first["up"] - first["down"]
    assert (gap.loc["lr"] > 0.02).all() and (gap.loc["mlp"] >= 0).all()
    assert gap.loc["mlp"].mean() > 0.2
    lr_runs = runs[runs.model == "lr"]
    for seed in cfg.seeds:
        up = lr_runs[(lr_runs.seed == seed) & (lr_runs.weighting == "up")].run.item()
        down = lr_runs[(lr_runs.seed == seed) & (lr_runs.weighting == "down")].run.item()
        angle = {e: metrics.angle_degrees(synthetic.run_params(tmp_path / up, e)["w2"],
                                          synthetic.run_params(tmp_path / down, e)["w2"]) for e in (1, 2000)}
        assert angle[2000] < angle[1]
        recorded = t[t.run.isin([up, down]) & (t.epoch == 2000)][["boundary_normal_x", "boundary_normal_y"]]
        assert metrics.angle_degrees(*recorded.to_numpy()) == pytest.approx(angle[2000])  # what the report reads
    lr = t[t.model == "lr"].groupby("epoch")["angle_to_svm"].mean()
    assert lr[2000] < lr[1] / 5


def test_saved_results_reload_identically(tmp_path):
    """Each run in the one results format: it reloads as the runner returned it, with its record and its
    parameters at every evaluated epoch; nothing half-written is left."""
    runs, table = train_synthetic(small_config(), tmp_path)
    again, records = results.load_runs(tmp_path)
    pd.testing.assert_frame_equal(metrics_of(again.drop(columns="source")), metrics_of(table))
    record = records[(".", runs["run"].iloc[0])]
    assert record["study"] == "synthetic" and SyntheticConfig(**record["config"]) == small_config()
    assert {"versions", "git_revision", "device", "metrics_sha256", "trained"} <= set(record)
    params = results.read_arrays(tmp_path / runs["run"].iloc[0] / "params.npz")
    assert params["epochs"].tolist() == small_config().eval_epochs() and params["w2"].shape[0] == len(params["epochs"])
    assert not list(tmp_path.rglob(".*.tmp"))


def run_script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "synthetic_study.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_script_writes_results_and_figures(tmp_path):
    proc = run_script("--epochs", "10", "--seeds", "0", "--datasets", "separable", "--out",
                      str(tmp_path / "r"), "--figures", str(tmp_path / "f"), "--out-extreme", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "r" / "separable_lr_up_none_s0"
    assert (run / "metrics.csv").exists() and (run / "config.json").exists() and (run / "params.npz").exists()
    assert (tmp_path / "f" / "boundaries_separable_lr_none.png").exists()
    assert (tmp_path / "f" / "angle_separable.png").exists()
    assert (tmp_path / "x" / "extreme_w1000_separable_lr_up_none_s0" / "metrics.csv").exists()
    assert (tmp_path / "f" / "instability_vs_weight.png").exists()


def test_help_lists_the_constants():
    proc = run_script("--help")
    assert proc.returncode == 0
    for flag in ("--out", "--seeds", "--epochs", "--weight", "--dropout", "--batch-size"):
        assert flag in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--weight", "0"], "--weight: must be finite and > 0"),
    (["--weight", "inf"], "--weight: must be finite and > 0"),
    (["--weight", "nan"], "--weight: must be finite and > 0"),
    (["--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["--dropout", "1"], "--dropout: must be in [0, 1)"),
    (["--dropout", "-0.1"], "--dropout: must be in [0, 1)"),
    (["--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    (["--datasets", "spirals"], "--datasets: unknown value 'spirals'"),
    (["--models", "cnn"], "--models: unknown value 'cnn'"),
    (["--weightings", "sideways"], "--weightings: unknown value 'sideways'"),
    (["--epochs", "__import__('os')"], "not an integer"),
    (["--out", "/proc/forbidden"], "--out: cannot write"),
    (["--engine", "gpu"], "--engine: unknown value 'gpu'"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(args, message, tmp_path, capsys):
    script = load_script("synthetic_study.py")
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as info:
        script.main([*args, "--figures", str(tmp_path / "f"), "--out-extreme", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not any((tmp_path / name).exists() for name in ("r", "f", "x"))  # a refusal leaves no folder


def test_bad_input_exits_without_a_traceback(tmp_path):
    proc = run_script("--epochs", "0", "--out", str(tmp_path / "r"), "--figures", str(tmp_path / "f"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "synthetic_study.py: error: --epochs: must be an integer >= 1 (got 0)"


def test_synthetic_remedies_deferral_and_zero_exponent_behave_as_unweighted(tmp_path):
    cfg = SyntheticConfig(datasets=["separable"], models=["mlp"], regimes=["none"], seeds=[0],
                          weightings=["equal", "up"], epochs=20, hidden=16,
                          remedies=["plain", "drw", "exponent", "poly", "logit_adjusted"],
                          drw_epoch=6, weight_power=0.0, equal_step=True)  # every run at mean weight 1
    t = train_synthetic(cfg, tmp_path)[1].sort_values(["run", "epoch"])
    key = ["epoch", "test_fraction_positive", "train_loss"]
    unweighted = t[(t.weighting == "equal") & (t.remedy == "plain")][key].reset_index(drop=True)
    drw = t[(t.weighting == "up") & (t.remedy == "drw")][key].reset_index(drop=True)
    early = unweighted.epoch <= 5
    pd.testing.assert_frame_equal(drw[early], unweighted[early])  # unweighted before epoch 6 ...
    assert not drw[~early].equals(unweighted[~early])             # ... weighted after
    exponent0 = t[(t.weighting == "up") & (t.remedy == "exponent")][key].reset_index(drop=True)
    pd.testing.assert_frame_equal(exponent0, unweighted)  # k = 0: uniform weights
    assert set(t.remedy) == set(cfg.remedies)


def test_extreme_weights_are_measured_and_divergence_is_flagged_not_raised(tmp_path):
    base = SyntheticConfig(datasets=["separable"], models=["lr", "mlp"], seeds=[0, 1], epochs=20, hidden=16,
                           lr_scale=1e25, extreme_weights=[1.0, 1e30])  # a step far too large on purpose
    stab = synthetic.stability(train_synthetic(base, tmp_path / "wild", extreme=True)[1])
    spread = synthetic.seed_spread(stab)
    assert set(stab["weight"]) == {1.0, 1e30}
    assert set(stab.loc[stab.weight > 1, "weighting"]) == {"up", "down"}
    diverged = stab["status"] == "diverged"
    assert diverged[stab.model == "mlp"].all()  # overflowed, and said so
    assert stab.loc[diverged, "late_fluctuation"].isna().all()
    assert len(spread) == 2 * 3  # (lr, mlp) x (equal at 1; up, down at 1e30)
    calm = synthetic.stability(train_synthetic(replace(base, lr_scale=0.01, extreme_weights=[1.0]), tmp_path / "calm",
                                               extreme=True)[1])
    assert (calm["status"] == "ok").all() and calm["late_fluctuation"].notna().all()
