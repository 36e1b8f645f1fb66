"""The synthetic study: reproducibility, the paper's qualitative claims, saved results, the script's CLI."""

import subprocess
from dataclasses import replace
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iwshift import metrics, results, synthetic

ROOT = Path(__file__).resolve().parents[1]


def small_config(**kw):
    base = dict(datasets=["separable", "moons_minority1"], models=["lr", "mlp"], regimes=["none", "dropout"],
                seeds=[0, 1], epochs=20, hidden=16)
    base.update(kw)
    return synthetic.SyntheticConfig(**base)


def test_same_seed_gives_identical_metrics():
    a = synthetic.run_study(small_config(), progress=False)
    b = synthetic.run_study(small_config(), progress=False)
    pd.testing.assert_frame_equal(a.table, b.table)
    c = synthetic.run_study(small_config(seeds=[0, 2]), progress=False)
    assert not a.table.equals(c.table)


def test_study_trains_the_same_through_either_engine_of_the_trainer():
    """The fused engine (the default on CPU) and the torch engine give the same study, remedies included."""
    cfg = small_config(epochs=6, remedies=["plain", "poly", "logit_adjusted", "drw"], drw_epoch=3)
    fused = synthetic.run_study(cfg, progress=False).table
    eager = synthetic.run_study(replace(cfg, engine="torch"), progress=False).table
    pd.testing.assert_frame_equal(fused, eager, rtol=1e-4, atol=1e-5)


def test_grid_follows_the_paper():
    cfg = synthetic.SyntheticConfig(epochs=1)
    runs = synthetic.build_runs(cfg, {d: synthetic.load_dataset(d, cfg) for d in cfg.datasets})
    assert len(runs) == 250
    assert set(runs.query("model == 'lr'")["regime"]) == {"none", "l2"}
    assert set(runs.query("dataset == 'moons_minority1'")["weighting"]) == {"equal", "up"}
    assert set(runs.query("dataset == 'moons_minority0'")["weighting"]) == {"equal", "down"}
    assert runs.query("regime == 'l2' and model == 'lr'")["l2"].eq(0.1).all()
    assert runs.query("regime == 'l2' and model == 'mlp'")["l2"].eq(0.01).all()


def test_imbalanced_moons_keep_a_tenth_of_the_minority():
    cfg = synthetic.SyntheticConfig()
    moons = synthetic.load_dataset("moons", cfg)
    for minority in (0, 1):
        ds = synthetic.load_dataset(f"moons_minority{minority}", cfg)
        full, kept = moons.train.class_counts(), ds.train.class_counts()
        assert kept[minority] == round(full[minority] / 10)
        assert kept[1 - minority] == full[1 - minority]
        assert np.array_equal(ds.test.y, moons.test.y)  # the test half stays balanced
        assert len(np.unique(ds.train.x, axis=0)) == len(ds.train)


def test_separable_data_has_a_margin():
    ds = synthetic.load_dataset("separable", synthetic.SyntheticConfig())
    projection = ds.train.x @ np.array([1.0, 1.0]) / np.sqrt(2)
    assert projection[ds.train.y == 1].min() >= 0.25 - 1e-6
    assert projection[ds.train.y == 0].max() <= -0.25 + 1e-6
    assert ds.train.class_counts().tolist() == [256, 256]


def test_weighting_matters_early_and_fades_on_separable_data():
    cfg = synthetic.SyntheticConfig(datasets=["separable"], models=["lr", "mlp"], regimes=["none"],
                                    weightings=["up", "down"], seeds=[0, 1, 2], epochs=2000)
    result = synthetic.run_study(cfg, progress=False)
    t = result.table
    first = t[t.epoch == 1].pivot_table(index=["model", "seed"], columns="weighting",
                                         values="test_fraction_positive")
    # one epoch in, up-weighting class 1 predicts class 1 more often, for every model and seed
    gap = first["up"] - first["down"]
    assert (gap.loc["lr"] > 0.02).all() and (gap.loc["mlp"] >= 0).all()
    assert gap.loc["mlp"].mean() > 0.2
    lr_runs = result.runs[result.runs.model == "lr"]
    for seed in cfg.seeds:
        up = lr_runs[(lr_runs.seed == seed) & (lr_runs.weighting == "up")].run.item()
        down = lr_runs[(lr_runs.seed == seed) & (lr_runs.weighting == "down")].run.item()
        angle = {e: metrics.angle_degrees(result.run_params(up, e)["w2"], result.run_params(down, e)["w2"])
                 for e in (1, 2000)}
        assert angle[2000] < angle[1]
    lr = t[t.model == "lr"].groupby("epoch")["angle_to_svm"].mean()
    assert lr[2000] < lr[1] / 5


def test_saved_results_reload_identically(tmp_path):
    result = synthetic.run_study(small_config(), progress=False)
    synthetic.save(result, tmp_path)
    table, params, manifest = synthetic.load(tmp_path)
    pd.testing.assert_frame_equal(table[result.table.columns], result.table, check_dtype=False)
    for key, value in result.params.items():
        np.testing.assert_array_equal(params[key], value)
    assert synthetic.config_from_manifest(manifest) == result.config
    assert {"versions", "git_revision", "device", "seeds"} <= set(manifest)
    assert not list(tmp_path.glob(".*.tmp"))
    on_disk = pd.read_csv(tmp_path / "metrics.csv")  # a run's columns live in runs.csv only
    assert not {*synthetic.IDENTITY_COLUMNS, "status", "lr"} & set(on_disk.columns)
    assert "train_loss" in manifest["float32_columns"]
    # a folder written before metrics.csv was slimmed (every column in it, no float32_columns) reads as it is
    old = tmp_path / "old"
    old.mkdir()
    full = table.copy()
    results.write_table(old / "metrics.csv", full)
    results.write_json(old / "manifest.json", {k: v for k, v in manifest.items() if k != "float32_columns"})
    pd.testing.assert_frame_equal(synthetic.read_metrics(old), full, check_dtype=False)


def run_script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "synthetic_study.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_script_writes_results_and_figures(tmp_path):
    proc = run_script("--epochs", "10", "--seeds", "0", "--datasets", "separable", "--out",
                      str(tmp_path / "r"), "--figures", str(tmp_path / "f"), "--out-extreme", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r" / "metrics.csv").exists() and (tmp_path / "r" / "params.npz").exists()
    assert (tmp_path / "f" / "boundaries_separable_lr_none.png").exists()
    assert (tmp_path / "f" / "angle_separable.png").exists()
    assert (tmp_path / "x" / "stability.csv").exists() and (tmp_path / "f" / "instability_vs_weight.png").exists()


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
    import importlib.util

    spec = importlib.util.spec_from_file_location("synthetic_script", ROOT / "synthetic_study.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as info:
        script.main([*args, "--figures", str(tmp_path / "f"), "--out-extreme", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_input_exits_without_a_traceback(tmp_path):
    proc = run_script("--epochs", "0", "--out", str(tmp_path / "r"), "--figures", str(tmp_path / "f"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "synthetic_study.py: error: --epochs: must be an integer >= 1 (got 0)"


def test_synthetic_remedies_deferral_and_zero_exponent_behave_as_unweighted():
    cfg = synthetic.SyntheticConfig(datasets=["separable"], models=["mlp"], regimes=["none"], seeds=[0],
                                    weightings=["equal", "up"], epochs=20, hidden=16,
                                    remedies=["plain", "drw", "exponent", "poly", "logit_adjusted"],
                                    drw_epoch=6, weight_power=0.0, equal_step=True)  # every run at mean weight 1
    t = synthetic.run_study(cfg, progress=False).table
    key = ["epoch", "test_fraction_positive", "train_loss"]
    unweighted = t[(t.weighting == "equal") & (t.remedy == "plain")][key].reset_index(drop=True)
    drw = t[(t.weighting == "up") & (t.remedy == "drw")][key].reset_index(drop=True)
    early = unweighted.epoch <= 5
    pd.testing.assert_frame_equal(drw[early], unweighted[early])  # unweighted before epoch 6 ...
    assert not drw[~early].equals(unweighted[~early])             # ... weighted after
    exponent0 = t[(t.weighting == "up") & (t.remedy == "exponent")][key].reset_index(drop=True)
    pd.testing.assert_frame_equal(exponent0, unweighted)  # k = 0: uniform weights
    assert set(t.remedy) == set(cfg.remedies)


def test_extreme_weights_are_measured_and_divergence_is_flagged_not_raised():
    base = synthetic.SyntheticConfig(datasets=["separable"], models=["lr", "mlp"], seeds=[0, 1], epochs=20,
                                     hidden=16, lr_scale=1e25)  # a step far too large on purpose
    stab, spread, _ = synthetic.run_extreme_study(base, weights=[1.0, 1e30], progress=False)
    assert set(stab["weight"]) == {1.0, 1e30}
    assert set(stab.loc[stab.weight > 1, "weighting"]) == {"up", "down"}
    assert stab.loc[stab.model == "mlp", "diverged"].all()  # overflowed, and said so
    assert (stab.loc[stab.diverged == 1, "status"] == "diverged").all()
    assert stab.loc[stab.diverged == 1, "late_fluctuation"].isna().all()
    assert len(spread) == 2 * 3  # (lr, mlp) x (equal at 1; up, down at 1e30)
    calm = synthetic.run_extreme_study(replace(base, lr_scale=0.01), weights=[1.0], progress=False)[0]
    assert not calm["diverged"].any() and calm["late_fluctuation"].notna().all()
