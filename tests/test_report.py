"""The claims report on small results folders made here (in the one results format): the claims as the theory
frames them, their rules (control rows, run health as evidence, power, fit), the rerun comparison, and the
report's byte-identical regeneration and checks."""

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iwshift import report, results
from iwshift.config import (BINARY_PRESETS, EXTENSION_PRESETS, BinaryConfig, ExtensionConfig, SyntheticConfig,
                            with_preset)
from iwshift.report.__main__ import main
from iwshift.report.render import sources_table
from iwshift.stats import CONTRADICTED, INCONCLUSIVE, NOT_RUN, SUPPORTED

RNG = np.random.default_rng(0)
SEEDS = (0, 1, 2)
RECORD = {"device": "cuda", "device_name": "Fake GPU", "git_revision": "0123456789abcdef",
          "created": "2026-01-02T03:04:05+00:00", "data": "torchvision CIFAR-10 (official) in data"}


def noise(scale=0.005):
    return float(RNG.normal(0, scale))


def fresh_noise():
    """Each results folder with its own noise, whatever the order the tests write them in."""
    global RNG
    RNG = np.random.default_rng(0)


def write_run(folder: Path, study: str, row: dict, metrics: list[dict], config, **record) -> None:
    table = pd.DataFrame([{**row, "status": "ok", **m} for m in metrics])
    results.write_run(folder / row["run"], table, {"run": row, "study": study, "config": asdict(config), **RECORD,
                                                   **record})


def direction(degrees):
    return {"boundary_normal_x": np.cos(np.radians(degrees)), "boundary_normal_y": np.sin(np.radians(degrees))}


def write_synthetic(root: Path, moons_lr_fades: bool = False) -> None:
    """2-D runs: the angle between the up- and down-weighted boundaries is large early and fades where the model
    separates its data, and persists for logistic regression on the moons (unless ``moons_lr_fades``);
    up-weighting the minority helps."""
    fresh_noise()
    cfg = SyntheticConfig(epochs=100)
    for dataset in ("separable", "moons", "moons_minority0", "moons_minority1"):
        for model in ("lr", "mlp"):
            persists = dataset == "moons" and model == "lr" and not moons_lr_fades
            for weighting in ("equal", "up", "down"):
                for seed in SEEDS:
                    row = dict(run=f"{dataset}_{model}_{weighting}_none_s{seed}", dataset=dataset, model=model,
                               weighting=weighting, regime="none", remedy="plain", seed=seed)
                    side = {"equal": 0, "up": 0.5, "down": -0.5}[weighting]
                    helps = weighting == ("down" if dataset.endswith("0") else "up")
                    metrics = [dict(epoch=e, test_fraction_positive=0.5 + side * angle / 100 + noise(),
                                    test_balanced_accuracy=0.8 + 0.1 * helps + noise(), train_loss_weighted=0.3,
                                    **direction(45 + side * (angle + noise(0.1))))
                               for e, angle in ((1, 40.0), (10, 30.0 if persists else 8.0),
                                                (50, 30.0 if persists else 1.0), (100, 30.0 if persists else 0.2))]
                    write_run(root / "synthetic", "synthetic", row, metrics, cfg)
    write_extreme(root, SEEDS)


def write_extreme(root: Path, seeds, equal_step: bool = True) -> None:
    """At weight 1,000 the boundary keeps turning late in training; at weight 1 it is still."""
    fresh_noise()
    cfg = SyntheticConfig(epochs=1000, equal_step=equal_step)
    for w in (1.0, 1000.0):
        for seed in seeds:
            for weighting in (["equal"] if w == 1 else ["up", "down"]):
                row = dict(run=f"extreme_w{w:g}_separable_lr_{weighting}_s{seed}", dataset="separable", model="lr",
                           weighting=weighting, regime="none", remedy="plain", seed=seed, weight=w)
                wobble = 0.0 if w == 1 else 8.0
                metrics = [dict(epoch=e, train_loss_weighted=0.3, **direction(45 + (-1) ** i * wobble + noise(0.2)))
                           for i, e in enumerate((1, 10, 100, 200, 500, 1000))]
                write_run(root / "synthetic" / "extreme", "synthetic_extreme", row, metrics, cfg)


def write_cifar(root: Path, folder: str = "cifar_binary", seeds=SEEDS, regimes=(("none", 0.0, 1e-3),),
                ratios=(1 / 4, 1.0, 4.0), classes="cat/dog", fit: float = 1.0, learned: float = 0.8, extra=None,
                preset: str = "cpu") -> None:
    """Weighting runs: the final fraction positive with ``slope`` per doubling of the weight, per (regime, slope,
    l2); imbalance runs with no gain. ``extra(row) -> dict`` overrides a run's metrics."""
    fresh_noise()
    for regime, slope, l2 in regimes:
        cfg = with_preset(BinaryConfig, preset, BINARY_PRESETS, l2=l2)
        for seed in seeds:
            for w in (1 / 4, 1.0, 4.0):
                row = dict(run=f"weighting_w{w:g}_{regime}_s{seed}", setting="weighting", classes=classes, weight=w,
                           ratio=1.0, variant="weighted", regime=regime, remedy="plain", seed=seed, data_seed=0)
                metrics = [{"epoch": e, "fraction_positive_pair": 0.5 + slope * np.log2(w) * e / 2 + noise(),
                            "test_balanced_accuracy": learned, "train_accuracy_eval": fit if regime == "none" else 1.0,
                            **(extra(row) if extra else {})} for e in (1, 2)]
                write_run(root / (folder if regime != "l2" or l2 == 1e-3 else f"{folder}_strength/l2_{l2:g}"),
                          "cifar_binary", row, metrics, cfg)
    cfg = with_preset(BinaryConfig, preset, BINARY_PRESETS, setting="imbalance")
    for seed in seeds:
        for ratio in ratios:
            for variant in ("unweighted", "weighted"):
                row = dict(run=f"imbalance_r{ratio:g}_{variant}_s{seed}", setting="imbalance", classes=classes,
                           weight=np.nan, ratio=ratio, variant=variant, regime="none", remedy="plain", seed=seed,
                           data_seed=0)
                metrics = [{"epoch": 2, "fraction_positive_pair": 0.5, "test_balanced_accuracy": learned + noise(0.002),
                            "train_accuracy_eval": 1.0, **(extra(row) if extra else {})}]
                write_run(root / folder, "cifar_binary", row, metrics, cfg)


def write_extension(root: Path, folder: str = "cifar_extension", gain: float = 0.0, spearman: float = 0.6) -> None:
    fresh_noise()
    cfg = with_preset(ExtensionConfig, "cpu", EXTENSION_PRESETS, epochs=2)
    for seed in SEEDS:
        for source in ("none", "true", "domain"):
            row = dict(run=f"covariate_{source}_none_s{seed}", study="covariate", weight_source=source, regime="none",
                       seed=seed, data_seed=0)
            up = gain if source == "true" else 0.0
            weights = {"weights": {"weight_source": "domain", "spearman": spearman, "ess_fraction": 0.7}} \
                if source == "domain" else {}
            write_run(root / folder, "cifar_extension", row,
                      [dict(epoch=e, target_accuracy=0.8 + up + noise(0.002),
                            target_worst_group_accuracy=0.6 + up + noise(0.002), target_balanced_accuracy=0.8)
                       for e in (1, 2)], cfg, **weights)


@pytest.fixture
def full_results(tmp_path):
    root = tmp_path / "results"
    write_synthetic(root)
    write_cifar(root, regimes=(("none", 0.0, 1e-3), ("l2", 0.0, 1e-3), ("l2", 0.08, 3e-2)))
    write_extension(root)
    return root


def claims_of(root):
    return report.all_claims(report.load(root))


def verdicts(claims):
    return {c.key: c.verdict for c in claims}


def claim(claims, key):
    return next(c for c in claims if c.key == key)


# ------------------------------------------------------------------------------------------- the claims


def test_every_claim_is_not_run_without_results(tmp_path):
    (tmp_path / "results").mkdir()
    path, claims = report.make_report(tmp_path / "results", tmp_path / "results" / "REPORT.md")
    assert set(verdicts(claims)) == {"a", "b", "c", "d", "e", "f", "g", "R"}
    assert set(verdicts(claims).values()) == {NOT_RUN}
    assert "No figures" in path.read_text()


def test_verdicts_on_made_up_results(full_results):
    _, claims = report.make_report(full_results, full_results / "REPORT.md")
    assert verdicts(claims) == {"a": SUPPORTED, "b": SUPPORTED, "c": CONTRADICTED, "d": NOT_RUN, "e": SUPPORTED,
                                "f": SUPPORTED, "g": SUPPORTED, "R": NOT_RUN}
    b = claim(claims, "b").rows[0]
    assert (b.n_seeds, b.source.preset, b.source.device) == (3, "cpu", "cuda (Fake GPU)")
    assert b.source.data == "official CIFAR-10 (torchvision)" and "half-width" in b.value
    text = (full_results / "REPORT.md").read_text()
    assert "| `cifar_binary/` | cifar_binary | 36 | 3 |" in text and "2026-01-02T03:04:05+00:00" in text
    assert sorted(p.name for p in (full_results / "report_figures").iterdir()) == [
        "cifar_fraction_vs_weight.png", "cifar_imbalance.png", "covariate_accuracy.png", "synthetic_angle.png",
        "weight_dependence.png"]


def test_claim_a_is_judged_where_the_model_separates_and_the_control_row_by_its_own_expectation(tmp_path):
    """Separable data and the moons MLP: the angle between the up- and down-weighted boundaries is large early and
    fades (each with its 1/log t fit); logistic regression cannot separate the moons, and there the theory expects
    the effect to persist, in the gap between the fractions predicted positive: a persisting gap supports the
    claim's framing, a fading one contradicts it."""
    write_synthetic(tmp_path / "persists")
    a = claim(claims_of(tmp_path / "persists")[0], "a")
    assert [r.label for r in a.rows] == ["separable, lr", "separable, mlp", "moons, mlp",
                                         "moons, lr (cannot separate: the effect should persist)"]
    assert [r.verdict for r in a.rows] == [SUPPORTED] * 4
    assert all("a + b/ln t" in r.value for r in a.rows[:3]) and "up − down" in a.rows[3].value
    assert a.rows[0].estimate.mean == pytest.approx(40 - 0.2, abs=1)  # the decline from the early peak, in degrees
    assert a.rows[3].estimate.mean == pytest.approx(0.3, abs=0.02)  # up - down: 0.5 ± 0.5 * 30 / 100
    write_synthetic(tmp_path / "fades", moons_lr_fades=True)
    a = claim(claims_of(tmp_path / "fades")[0], "a")
    assert [r.verdict for r in a.rows] == [SUPPORTED] * 3 + [CONTRADICTED]


def test_claim_c_is_judged_at_each_strength_and_says_where_the_dependence_appears(full_results):
    c = claim(claims_of(full_results)[0], "c")
    assert [(r.label, r.verdict) for r in c.rows] == [("l2 = 0.001", CONTRADICTED), ("l2 = 0.03", SUPPORTED)]
    assert "train accuracy" in c.rows[0].value
    assert "The dependence appears at weight decay ≥ 0.03." in c.details
    curves = report.dependence_curves(report.load(full_results))
    l2 = curves[curves.curve == "L2 strength"].groupby("setting")["slope"].mean()
    assert l2.index.tolist() == [0.0, 0.001, 0.03] and l2[0.03] == pytest.approx(0.08, abs=0.01)
    assert set(curves["curve"]) == {"L2 strength", "dropout rate", "epoch"}


def test_a_collapsed_run_that_changes_the_verdict_makes_the_row_inconclusive(tmp_path):
    """Left out, the collapsed runs leave no dependence; counted with their actual fraction (1.0 at w = 4) they
    make one: the row says both and is inconclusive."""
    def collapsed(row):
        return {"status": "collapsed", "fraction_positive_pair": 1.0} if row["weight"] == 4 and \
            row["regime"] == "none" else {}

    write_cifar(tmp_path, extra=collapsed)
    b = claim(claims_of(tmp_path)[0], "b").rows[0]
    assert b.verdict == INCONCLUSIVE and "excluded: 3 collapsed" in b.value
    assert "counting the 3 collapsed runs gives" in b.value and "contradicted" in b.value
    assert abs(b.estimate.mean) < 0.01  # the healthy runs' estimate
    write_cifar(tmp_path / "harmless", extra=lambda row: {"status": "collapsed"} if row["weight"] == 1 and
                row["seed"] == 0 else {})
    b = claim(claims_of(tmp_path / "harmless")[0], "b").rows[0]
    assert b.verdict == SUPPORTED and "excluded: 1 collapsed" in b.value  # the same verdict either way


def test_a_strength_at_which_every_network_collapsed_is_inconclusive_and_named(tmp_path):
    """At a strong weight decay every network predicts a constant that the weight chooses (all negative at
    w = 1/4, all positive at 4): counted, that is a dependence, but of no classifier; the row is inconclusive,
    says so with the counted value and the runs' train accuracy, and the details name the strength."""
    def constant(row):
        if row["regime"] != "l2" or row["weight"] != row["weight"]:
            return {}
        return {"status": "collapsed", "fraction_positive_pair": float(row["weight"] >= 1), "train_accuracy_eval": 0.5}

    write_cifar(tmp_path, regimes=(("none", 0.0, 1e-3), ("l2", 0.0, 1e-2)), extra=constant)
    c = claim(claims_of(tmp_path)[0], "c")
    row = next(r for r in c.rows if r.label == "l2 = 0.01")
    assert row.verdict == INCONCLUSIVE and row.n_seeds == 0
    assert "every run failed (9 collapsed)" in row.value and "supported" in row.value
    assert "train accuracy 0.500 (every run)" in row.value
    assert any("At weight decay 0.01 every network collapsed" in d for d in c.details)


def test_an_unclear_row_says_how_many_seeds_would_decide_it(tmp_path):
    write_cifar(tmp_path, regimes=(("none", 0.012, 1e-3),), seeds=(0, 1, 2))
    b = claim(claims_of(tmp_path)[0], "b").rows[0]
    if b.verdict == INCONCLUSIVE:
        assert "seeds would decide it" in b.value or "more seeds would not decide it" in b.value
    write_cifar(tmp_path / "one", seeds=(0,))
    b = claim(claims_of(tmp_path / "one")[0], "b").rows[0]
    assert b.verdict == INCONCLUSIVE and b.n_seeds == 1 and "no interval: 1 seed" in b.value


def test_deep_rows_where_the_network_barely_learns_are_inconclusive_and_say_so(tmp_path):
    write_cifar(tmp_path, learned=0.55)
    write_cifar(tmp_path, folder="cifar_binary_deer_automobile", classes="deer/automobile", regimes=(), learned=0.9)
    e = claim(claims_of(tmp_path)[0], "e")
    cat_dog, deer = e.rows[1], e.rows[2]
    assert cat_dog.verdict == INCONCLUSIVE and "barely learns" in cat_dog.value
    assert "test balanced accuracy 0.5" in cat_dog.value
    assert deer.label == "deep: CIFAR-10 imbalance, CNN, deer/automobile" and deer.verdict == SUPPORTED
    assert "test balanced accuracy 0.8" in deer.value  # 0.9, give or take the noise


def test_a_network_that_did_not_fit_gives_an_inconclusive_b(tmp_path):
    write_cifar(tmp_path, fit=0.9)
    b = claim(claims_of(tmp_path)[0], "b").rows[0]
    assert b.verdict == INCONCLUSIVE and "did not fit" in b.value


def test_extreme_weights_without_equal_step_are_inconclusive(tmp_path):
    write_extreme(tmp_path, SEEDS, equal_step=False)
    g = claim(claims_of(tmp_path)[0], "g")
    assert g.verdict == INCONCLUSIVE and "equal effective step" in " ".join(g.details)
    write_extreme(tmp_path / "equal", SEEDS)
    g = claim(claims_of(tmp_path / "equal")[0], "g")
    assert g.verdict == SUPPORTED and g.rows[0].n_seeds == 3  # per seed, of its own runs


def test_f_reads_each_estimator_with_its_weights_quality(full_results):
    f = claim(claims_of(full_results)[0], "f")
    assert [r.label for r in f.rows] == ["target accuracy", "worst group", "target accuracy, domain weights"]
    assert "Spearman 0.600" in f.rows[2].value and "70.0%" in f.rows[2].value
    assert f.rows[2].verdict == SUPPORTED


def test_f_rows_of_weights_that_do_not_estimate_are_inconclusive(tmp_path):
    write_extension(tmp_path, spearman=0.05)
    f = claim(claims_of(tmp_path)[0], "f")
    assert f.rows[2].verdict == INCONCLUSIVE and "do not estimate the true ones (Spearman 0.050 < 0.5)" in f.rows[2].value
    assert f.rows[0].verdict == SUPPORTED  # the true weights' rows are judged as before


def test_a_rerun_that_flips_a_verdict_is_reported(full_results):
    write_extension(full_results, folder="cifar_extension_rerun", gain=0.1)
    path, _ = report.make_report(full_results, full_results / "REPORT.md")
    text = path.read_text()
    assert "### `cifar_extension_rerun/`: a rerun of `cifar_extension/`" in text
    assert "row(s) flip" in text and "(flips)" in text


def test_collapsed_and_diverged_runs_are_counted_in_the_sources_table(tmp_path):
    write_cifar(tmp_path, extra=lambda row: {"status": {0: "collapsed", 1: "diverged"}[row["seed"]]}
                if row["weight"] == 4 and row["seed"] < 2 and row["regime"] == "none" else {})
    assert "1 collapsed, 1 diverged" in sources_table(report.load(tmp_path))


def test_a_table_without_a_needed_column_gives_an_inconclusive_row(tmp_path):
    write_cifar(tmp_path, extra=lambda row: {})
    loaded = report.load(tmp_path)
    loaded.table = loaded.table.drop(columns="fraction_positive_pair")
    claims, _ = report.all_claims(loaded)
    assert claim(claims, "b").verdict == INCONCLUSIVE and "fraction_positive_pair" in claim(claims, "b").rows[0].value


# --------------------------------------------------------------------------------- the report as text


def test_report_regenerates_identically_and_copies_figures(full_results, tmp_path):
    out = full_results / "REPORT.md"
    main(["--results", str(full_results), "--out", str(out), "--docs", str(tmp_path / "docs")])
    first = {p.name: p.read_bytes() for p in [out, *sorted((full_results / "report_figures").iterdir())]}
    main(["--results", str(full_results), "--out", str(out)])
    second = {p.name: p.read_bytes() for p in [out, *sorted((full_results / "report_figures").iterdir())]}
    assert first == second
    assert {p.name for p in (tmp_path / "docs").iterdir()} == set(first) - {"REPORT.md"}


def test_cli_errors_are_one_line(tmp_path, capsys):
    for folder, message in ((tmp_path / "missing", "--results: no results folder"),
                            (tmp_path, "--results: no results in")):
        with pytest.raises(SystemExit) as exit_:
            main(["--results", str(folder)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"python -m iwshift.report: error: {message}") and "\n" not in err
    assert not (tmp_path / "REPORT.md").exists() and not (tmp_path / "report_figures").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--docs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--bogus"])
    assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_readme_claims_table_is_written_then_checked_and_an_edited_number_fails(full_results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n\n<!-- claims-table:begin -->\n<!-- claims-table:end -->\n\nmore\n")
    assert main(["--results", str(full_results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| (b) regime none | On CIFAR-10 without regularisation" in text and text.endswith("\n\nmore\n")
    capsys.readouterr()
    assert main(["--results", str(full_results), "--check", str(readme)]) == 0
    b_value = claim(claims_of(full_results)[0], "b").rows[0].value
    readme.write_text(text.replace(b_value, b_value.replace("0", "9", 1)))
    assert main(["--results", str(full_results), "--check", str(readme)]) == 1
    message = capsys.readouterr().out.strip().splitlines()[2:]  # after the passing check's two lines
    assert len(message) == 2 and "lines differ" in message[0]
    assert message[1].endswith("REPORT.md: the report is the results' (" + str(full_results) + ")")


def test_a_stale_report_is_named_with_its_first_differing_line(full_results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- claims-table:begin -->\n<!-- claims-table:end -->\n")
    assert main(["--results", str(full_results), "--readme", str(readme)]) == 0
    assert report.check_report(full_results) is None
    path = full_results / "REPORT.md"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4] + ["an edited line\n"] + lines[5:]))
    capsys.readouterr()
    assert main(["--results", str(full_results), "--check", str(readme)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert "the claims table is the results'" in out[0]
    assert out[-1].startswith(f"{path}: 1 lines differ") and "first line 5" in out[-1]


# ----------------------------------------------------------------------------------- committed results

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_and_the_report_are_the_committed_results():
    res = report.load(ROOT / "paper-results")
    assert report.check_readme(ROOT / "paper-results", ROOT / "README.md", res) is None
    assert report.check_report(ROOT / "paper-results", res=res) is None


@pytest.mark.parametrize("folder, merged, prefix", [
    ("cifar_binary", "merged.csv", ""), ("cifar_extension", "merged_covariate.csv", "covariate_"),
    *((p.name, "merged.csv", "") for p in sorted((ROOT / "paper-results").glob("cifar_binary_*"))
      if (p / "merged.csv").is_file())])
def test_the_committed_merged_tables_are_the_merge_of_their_run_folders(folder, merged, prefix):
    """The notebooks may read the merged tables, the report reads the run folders: they must say the same."""
    root = ROOT / "paper-results" / folder
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))
    expected = results.merge(root, names, strict=True).sort_values(["run", "epoch"], ignore_index=True)
    committed = pd.read_csv(root / merged).sort_values(["run", "epoch"], ignore_index=True)
    pd.testing.assert_frame_equal(committed, expected, check_dtype=False)


def test_the_report_counts_runs_per_training_path_and_names_a_run_that_fell_back(tmp_path):
    root = tmp_path / "results"
    graph = {"engine": "torch", "capture": "graph", "update": "foreach", "weight_copies": False,
             "convolutions_per_layer": ["torch"] * 5}
    fresh_noise()
    cfg = with_preset(BinaryConfig, "cpu", BINARY_PRESETS)
    for seed in SEEDS:
        for w in (1 / 4, 1.0, 4.0):
            row = dict(run=f"weighting_w{w:g}_none_s{seed}", setting="weighting", classes="cat/dog", weight=w,
                       ratio=1.0, variant="weighted", regime="none", remedy="plain", seed=seed, data_seed=0)
            trained = dict(graph, capture="eager (capture failed: out of memory)") if (seed, w) == (2, 4.0) else graph
            write_run(root / "cifar_binary", "cifar_binary", row,
                      [{"epoch": 1, "fraction_positive_pair": 0.5, "train_accuracy_eval": 1.0}], cfg, trained=trained)
    text = report.render.paths_section(report.load(root))
    text = "\n".join(text)
    assert "| `cifar_binary/` | torch, capture graph, update foreach, no weight copies, convolutions torch | 8 |" in text
    assert "capture eager (capture failed: out of memory)" in text and "| 1 |" in text
    assert "`cifar_binary/weighting_w4_none_s2`" in text and "differs" in text
