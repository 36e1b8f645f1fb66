"""The claims report: statistics, verdict rules, "not run" studies, and byte-identical regeneration, on small
results folders made here."""

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iwshift import cifar_binary, cifar_extension, report, results
from iwshift.report import CONTRADICTED, INCONCLUSIVE, NOT_RUN, SUPPORTED, Interval
from iwshift.config import SyntheticConfig

RNG = np.random.default_rng(0)
SEEDS = (0, 1, 2)


def noise(scale=0.005):
    return float(RNG.normal(0, scale))


# ------------------------------------------------------------------------------- statistics and rules


def test_mean_interval_matches_scipy_t_interval():
    values = np.array([0.31, 0.27, 0.35, 0.29, 0.33])
    got = report.mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (got.mean, got.low, got.high, got.n) == pytest.approx((values.mean(), low, high, 5))
    single = report.mean_interval([0.4, np.nan])  # NaNs dropped; one value: no interval
    assert single.mean == 0.4 and single.n == 1 and not single.defined
    assert report.effect_verdict(single) == INCONCLUSIVE


def test_ols_slope_interval_matches_scipy_linregress():
    x = np.log2([1 / 8, 1 / 4, 1, 4, 8] * 2)
    y = 0.5 + 0.03 * x + np.array([0.01, -0.02, 0.0, 0.015, -0.01, -0.01, 0.02, 0.005, -0.015, 0.01])
    fit = stats.linregress(x, y)
    half = fit.stderr * stats.t.ppf(0.975, len(x) - 2)
    got = report.ols_slope(x, y)
    assert (got.mean, got.low, got.high, got.n) == pytest.approx((fit.slope, fit.slope - half, fit.slope + half, 10))
    assert not report.ols_slope([1, 2], [0.1, 0.2]).defined           # two points: no interval
    assert np.isnan(report.ols_slope([1, 1, 1], [0.1, 0.2, 0.3]).mean)  # one weight: no slope
    exact = report.ols_slope([0, 1, 2], [0.5, 0.5, 0.5])               # a perfect fit: zero width
    assert (exact.mean, exact.low, exact.high) == (0, 0, 0)


@pytest.mark.parametrize("interval, reading", [
    (Interval(0.10, 0.05, 0.15, 5), "positive"),
    (Interval(-0.10, -0.15, -0.05, 5), "negative"),
    (Interval(0.0, -0.01, 0.01, 5), "negligible"),
    (Interval(0.015, 0.011, 0.019, 5), "negligible"),    # significant but below the threshold
    (Interval(0.0, -0.02, 0.01, 5), "unclear"),          # lower bound exactly at -delta: not inside the band
    (Interval(0.0, -0.0199, 0.0199, 5), "negligible"),
    (Interval(0.05, 0.0, 0.10, 5), "unclear"),           # crosses +delta
    (Interval(0.05, 1e-12, 0.10, 5), "unclear"),         # above 0, but an effect below delta is not excluded
    (Interval(0.05, 0.02, 0.10, 5), "positive"),         # at or above +delta
    (Interval(0.1, np.nan, np.nan, 1), "undefined"),
])
def test_interval_reading(interval, reading):
    assert report.classify(interval, delta=0.02) == reading


@pytest.mark.parametrize("interval, effect, no_effect", [
    (Interval(0.10, 0.05, 0.15, 5), SUPPORTED, CONTRADICTED),        # clear effect
    (Interval(0.0, -0.01, 0.01, 5), CONTRADICTED, SUPPORTED),        # clearly none
    (Interval(0.0, -0.2, 0.2, 5), INCONCLUSIVE, INCONCLUSIVE),       # too wide to say
    (Interval(-0.10, -0.15, -0.05, 5), CONTRADICTED, CONTRADICTED),  # the other way
    (Interval(0.05, 0.0, 0.10, 5), INCONCLUSIVE, INCONCLUSIVE),      # touches 0
    (Interval(0.05, 1e-9, 0.10, 5), INCONCLUSIVE, INCONCLUSIVE),     # just above 0, crosses +delta
    (Interval(0.05, np.nan, np.nan, 1), INCONCLUSIVE, INCONCLUSIVE),
])
def test_verdict_rules_on_clear_and_borderline_cases(interval, effect, no_effect):
    assert report.effect_verdict(interval) == effect
    assert report.no_effect_verdict(interval) == no_effect


def test_no_gain_is_supported_only_inside_the_band():
    """One rule family: "no gain" needs the whole interval inside ±delta; one crossing delta supports nothing
    (the README's claim (f) worst-group row, -0.026 [-0.122, +0.071], allows gains of 7 points)."""
    assert report.no_effect_verdict(Interval(-0.026, -0.122, 0.071, 3)) == INCONCLUSIVE
    assert report.no_effect_verdict(Interval(-0.2, -0.4, 0.0, 3)) == INCONCLUSIVE  # lower end <= 0 is not enough
    assert report.no_effect_verdict(Interval(0.002, -0.008, 0.012, 3)) == SUPPORTED
    assert not hasattr(report, "no_gain_verdict")  # no second, weaker rule


def test_combining_rows():
    assert report.combine([]) == NOT_RUN
    assert report.combine([NOT_RUN, NOT_RUN]) == NOT_RUN
    assert report.combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert report.combine([SUPPORTED, NOT_RUN]) == INCONCLUSIVE
    assert report.combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert report.combine([SUPPORTED, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED


def test_preset_is_inferred_from_the_config():
    presets = {name: asdict(cifar_binary.with_preset(cifar_binary.BinaryConfig(), name))
               for name in cifar_binary.PRESETS}
    keys = ("width", "per_class", "epochs")
    cpu = asdict(cifar_binary.with_preset(cifar_binary.BinaryConfig(), "cpu"))
    assert report.preset_label(cpu, presets, keys) == "cpu"
    assert report.preset_label({**cpu, "epochs": 2}, presets, keys) == "custom (cpu with epochs=2)"
    assert report.data_label("torchvision CIFAR-10 (official) in data") == "official CIFAR-10 (torchvision)"
    assert report.data_label("image folder /x").startswith("other copy")


# ------------------------------------------------------------------------------- small results folders

RECORD = {"device": "cuda", "device_name": "Fake GPU", "git_revision": "0123456789abcdef",
          "created": "2026-01-02T03:04:05+00:00", "data": "torchvision CIFAR-10 (official) in data"}


def write_synthetic(root: Path) -> None:
    """2-D results in which the early gap is large and fades, and up-weighting the minority helps."""
    rows = []
    for dataset in ("separable", "moons", "moons_minority0", "moons_minority1"):
        for model in ("lr", "mlp"):
            for weighting in ("equal", "up", "down"):
                for seed in SEEDS:
                    for epoch, gap in ((1, 0.4), (100, 0.0)):
                        shift = {"equal": 0, "up": gap / 2, "down": -gap / 2}[weighting]
                        helps = weighting == ("down" if dataset.endswith("0") else "up")
                        rows.append(dict(run=f"{dataset}_{model}_{weighting}_{seed}", dataset=dataset, model=model,
                                         weighting=weighting, regime="none", remedy="plain", seed=seed, epoch=epoch,
                                         test_fraction_positive=0.5 + shift + noise(),
                                         test_balanced_accuracy=0.8 + 0.1 * helps + noise(),
                                         angle_to_svm=np.nan))
    results.write_table(root / "synthetic" / "metrics.csv", pd.DataFrame(rows))
    results.write_json(root / "synthetic" / "manifest.json",
                       {"config": asdict(SyntheticConfig(epochs=100)), **RECORD, "device": "cpu"})
    write_extreme(root, SEEDS)


def write_extreme(root: Path, seeds, equal_step: bool = True) -> None:
    """Stability rows in which the boundary fluctuates more at weight 1,000 than at 1."""
    stab = [dict(run=i, weight=w, dataset="separable", model="lr", weighting=wc, seed=seed,
                 weighted_class={"equal": -1, "up": 1, "down": 0}[wc],
                 late_fluctuation=(2 if w == 1 else 9) + noise(0.5), seed_deviation=3 + noise(0.5),
                 boundary_movement=5.0, loss_spikes=0, diverged=0, status="ok")
            for i, (w, wc, seed) in enumerate((w, wc, s) for w in (1.0, 1000.0) for s in seeds
                                              for wc in (["equal"] if w == 1 else ["up", "down"]))]
    results.write_table(root / "synthetic_extreme" / "stability.csv", pd.DataFrame(stab))
    results.write_json(root / "synthetic_extreme" / "manifest.json",
                       {"config": asdict(SyntheticConfig(epochs=100, equal_step=equal_step)), **RECORD,
                        "device": "cpu"})


def write_run(folder: Path, run: dict, metrics: list[dict], config) -> None:
    table = pd.DataFrame([{**run, **m} for m in metrics])
    results.write_table(folder / run["run"] / "metrics.csv", table)
    results.write_json(folder / run["run"] / "config.json", {"run": run, "config": asdict(config), **RECORD})


def write_cifar(root: Path, none_fit: float = 1.0, seeds=SEEDS, regimes=(("none", 0.0), ("l2", 0.08)),
                ratios=(1 / 4, 1.0, 4.0), extra=None, folder: str = "cifar_binary", preset: str = "cpu") -> None:
    """Weighting: flat fraction without regularisation, log-linear with L2. Imbalance: no gain.
    ``extra(run) -> dict`` adds or overrides a run's metric columns."""
    cfg = cifar_binary.with_preset(cifar_binary.BinaryConfig(), preset)
    for seed in seeds:
        for regime, slope in regimes:
            for w in (1 / 4, 1.0, 4.0):
                run = dict(run=f"weighting_w{cifar_binary.fmt(w)}_{regime}_s{seed}", setting="weighting", weight=w,
                           ratio=1.0, variant="weighted", regime=regime, remedy="plain", seed=seed)
                metrics = [{**dict(epoch=e, fraction_positive_pair=0.5 + slope * np.log2(w) * e / 2 + noise(),
                                   test_balanced_accuracy=0.7, train_accuracy=none_fit if regime == "none" else 1.0),
                            **(extra(run) if extra else {})}
                           for e in (1, 2)]
                write_run(root / folder, run, metrics, cfg)
        for ratio in ratios:
            for variant in ("unweighted", "weighted"):
                run = dict(run=f"imbalance_r{cifar_binary.fmt(ratio)}_{variant}_s{seed}", setting="imbalance",
                           weight=np.nan, ratio=ratio, variant=variant, regime="none", remedy="plain", seed=seed)
                metrics = [{**dict(epoch=2, fraction_positive_pair=0.5, test_balanced_accuracy=0.7 + noise(0.002),
                                   train_accuracy=1.0), **(extra(run) if extra else {})}]
                write_run(root / folder, run, metrics, cfg)


def write_extension(root: Path) -> None:
    cfg = cifar_extension.with_preset(cifar_extension.ExtensionConfig(), "cpu")
    folder = root / "cifar_extension"
    for seed in SEEDS:
        for source in ("none", "true", "domain"):
            run = dict(run=f"covariate_{source}_none_s{seed}", study="covariate", weight_source=source, regime="none",
                       seed=seed, data_seed=0)
            write_run(folder, run, [dict(epoch=e, target_accuracy=0.8 + noise(0.002),
                                         target_worst_group_accuracy=0.6 + noise(0.002),
                                         target_balanced_accuracy=0.8) for e in (1, 2)], replace(cfg, epochs=2))
    results.write_table(folder / "weights_covariate.csv", pd.DataFrame(
        [dict(study="covariate", weight_source=s, rmse=e, mae=e, spearman=1 - e, ess=10.0, ess_fraction=0.5)
         for s, e in (("none", 1.0), ("true", 0.0), ("domain", 0.4))]))


@pytest.fixture
def full_results(tmp_path):
    root = tmp_path / "results"
    write_synthetic(root)
    write_cifar(root)
    write_extension(root)
    return root


def verdicts(claims):
    return {c.key: c.verdict for c in claims}


def test_every_claim_is_not_run_on_an_empty_results_folder(tmp_path):
    (tmp_path / "results").mkdir()
    path, claims = report.make_report(tmp_path / "results", tmp_path / "results" / "REPORT.md")
    assert set(verdicts(claims)) == {"a", "b", "c", "d", "e", "f", "g", "R"}
    assert set(verdicts(claims).values()) == {NOT_RUN}
    text = path.read_text()
    for key in "abcdefg":
        assert f"| ({key}) " in text and f"({key})** " in text
    assert text.count("**not run**") >= 8 and "No figures" in text
    for study in report.STUDIES:
        assert f"| `{study}/` | not run |" in text


def test_verdicts_on_made_up_results(full_results):
    _, claims = report.make_report(full_results, full_results / "REPORT.md")
    assert verdicts(claims) == {"a": SUPPORTED, "b": SUPPORTED, "c": SUPPORTED, "d": NOT_RUN, "e": SUPPORTED,
                                "f": SUPPORTED, "g": SUPPORTED, "R": NOT_RUN}
    b = next(c for c in claims if c.key == "b").rows[0]
    assert (b.n_seeds, b.source.preset, b.source.device) == (3, "cpu", "cuda (Fake GPU)")
    assert b.source.data == "official CIFAR-10 (torchvision)"
    f = next(c for c in claims if c.key == "f").rows[0]
    assert f.source.preset == "custom (cpu with epochs=2)"
    text = (full_results / "REPORT.md").read_text()
    assert "| `cifar_binary/` | 36 | 3 |" in text and "2026-01-02T03:04:05+00:00" in text
    assert sorted(p.name for p in (full_results / "report_figures").iterdir()) == [
        "cifar_fraction_vs_weight.png", "cifar_imbalance.png", "covariate_accuracy.png", "synthetic_gap.png"]


def test_another_binary_folder_gives_rows_and_figures_of_its_own_never_pooled(full_results):
    """A ``cifar_binary_<name>/`` folder (say, the paper preset on a GPU) adds its own row to a claim it has
    results for, none to one it has not, and its own figure; the ``cifar_binary/`` rows stay as they were.
    Where ``cifar_binary/`` has not run a regime (dropout here) and the other folder has, the claim rests on
    the other folder's row alone."""
    before, _ = report.all_claims(report.load(full_results))
    write_cifar(full_results, regimes=(("none", 0.08), ("dropout", 0.0)), ratios=(), folder="cifar_binary_paper_gpu",
                preset="paper")
    claims, _ = report.all_claims(report.load(full_results))
    b = next(c for c in claims if c.key == "b")
    assert [r.label for r in b.rows] == ["regime none", "regime none (`cifar_binary_paper_gpu/`)"]
    assert b.rows[0].value == row_of(before, "b").value  # cifar_binary/'s row: not pooled with the other
    assert (b.rows[1].source.preset, b.rows[1].n_seeds, b.rows[1].verdict) == ("paper", 3, CONTRADICTED)
    assert b.verdict == CONTRADICTED  # a slope of 0.08 per doubling in the other folder
    d = next(c for c in claims if c.key == "d")
    assert [(r.label, r.verdict) for r in d.rows] == [("regime dropout (`cifar_binary_paper_gpu/`)", SUPPORTED)]
    assert len(next(c for c in claims if c.key == "c").rows) == 1  # no l2 runs there: no row from it
    assert [r.label for r in next(c for c in claims if c.key == "e").rows] == [
        "simple: 2-D imbalanced moons, lr", "deep: CIFAR-10 imbalance, CNN"]  # no imbalance runs there
    assert "| (b) regime none (`cifar_binary_paper_gpu/`) |" in report.readme_table(claims)
    path, _ = report.make_report(full_results, full_results / "REPORT.md")
    assert "| `cifar_binary_paper_gpu/` | 18 | 3 |" in path.read_text()
    assert (full_results / "report_figures" / "cifar_fraction_vs_weight_cifar_binary_paper_gpu.png").is_file()


def test_rows_from_several_binary_folders_follow_one_rule(full_results, tmp_path):
    """Only another folder (none regime): the claims it has no results for keep a not-run row. A folder whose
    imbalance runs all diverged adds a detail, not an inconclusive row. A remedy run only in another folder
    rests on that folder's row."""
    write_cifar(tmp_path, regimes=(("none", 0.0),), ratios=(), folder="cifar_binary_paper_gpu", preset="paper")
    claims, _ = report.all_claims(report.load(tmp_path))
    for key, label in (("c", "regime l2"), ("d", "regime dropout")):
        c = next(c for c in claims if c.key == key)
        assert [(r.label, r.verdict) for r in c.rows] == [(label, NOT_RUN)]
    assert "| (c) regime l2 |" in report.readme_table(claims)

    before, _ = report.all_claims(report.load(full_results))
    write_cifar(full_results, regimes=(), folder="cifar_binary_diverged",
                extra=lambda run: dict(status="diverged"))
    claims, _ = report.all_claims(report.load(full_results))
    e = next(c for c in claims if c.key == "e")
    assert [r.label for r in e.rows] == [r.label for r in next(c for c in before if c.key == "e").rows]
    assert e.verdict == SUPPORTED and any("no healthy runs" in d for d in e.details)

    def poly(run):
        return dict(remedy="poly") if run["regime"] == "none" else {}

    write_cifar(tmp_path / "remedy", ratios=())
    write_cifar(tmp_path / "remedy", regimes=(("none", 0.08),), ratios=(), folder="cifar_binary_poly", extra=poly)
    _, remedies = report.all_claims(report.load(tmp_path / "remedy"))
    r = next(c for c in remedies if c.key == "R: poly")
    # cifar_binary/'s not-run row is gone (the verdict is inconclusive only because that folder has no plain
    # runs to judge the fit by)
    assert [row.label for row in r.rows] == ["CIFAR-10 weighting (`cifar_binary_poly/`)"]
    assert r.rows[0].n_seeds == 3 and r.rows[0].verdict == INCONCLUSIVE


def test_a_network_that_did_not_fit_gives_inconclusive_cifar_verdicts(tmp_path):
    write_cifar(tmp_path, none_fit=0.9)
    claims, _ = report.all_claims(report.load(tmp_path))
    assert verdicts(claims)["b"] == verdicts(claims)["c"] == INCONCLUSIVE
    assert "did not fit" in " ".join(next(c for c in claims if c.key == "b").details)


def test_report_regenerates_identically_and_copies_figures(full_results, tmp_path):
    out = full_results / "REPORT.md"
    report.main(["--results", str(full_results), "--out", str(out), "--docs", str(tmp_path / "docs")])
    first = {p.name: p.read_bytes() for p in [out, *sorted((full_results / "report_figures").iterdir())]}
    report.main(["--results", str(full_results), "--out", str(out)])
    second = {p.name: p.read_bytes() for p in [out, *sorted((full_results / "report_figures").iterdir())]}
    assert first == second
    assert {p.name for p in (tmp_path / "docs").iterdir()} == set(first) - {"REPORT.md"}


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report.main(["--results", str(tmp_path / "missing")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m iwshift.report: error: --results") and "\n" not in err
    with pytest.raises(SystemExit) as exit_:
        report.main(["--help"])
    assert exit_.value.code == 0 and "--docs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        report.main(["--bogus"])
    assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_table_without_a_needed_column_gives_an_inconclusive_row(tmp_path):
    write_synthetic(tmp_path)
    table = results.read_table(tmp_path / "synthetic_extreme" / "stability.csv")
    results.write_table(tmp_path / "synthetic_extreme" / "stability.csv", table.drop(columns="late_fluctuation"))
    claims, _ = report.all_claims(report.load(tmp_path))
    g = next(c for c in claims if c.key == "g")
    assert g.verdict == INCONCLUSIVE and "late_fluctuation" in g.rows[0].value
    assert verdicts(claims)["a"] == SUPPORTED  # the other claims are unaffected


# ------------------------------------------------------------------------------- seeds, health, fit


def row_of(claims, key, index=0):
    return next(c for c in claims if c.key == key).rows[index]


def test_one_seed_gives_no_interval_and_an_inconclusive_row(tmp_path):
    """Intervals are over seeds only: one seed with 3 weights (c, d) or 8 ratios (e, deep) is one value."""
    write_cifar(tmp_path, seeds=(0,), regimes=(("none", 0.0), ("l2", 0.08), ("dropout", 0.0)),
                ratios=(1 / 16, 1 / 8, 1 / 4, 1 / 2, 2.0, 4.0, 8.0, 16.0))
    write_extreme(tmp_path, seeds=(0,))
    claims, _ = report.all_claims(report.load(tmp_path))
    for key, index in (("b", 0), ("c", 0), ("d", 0), ("e", 1), ("g", 0)):
        row = row_of(claims, key, index)
        assert row.verdict == INCONCLUSIVE, key
        assert row.n_seeds == 1 and not row.estimate.defined, key
        assert "no interval: 1 seed" in row.value, key


def test_replicates_are_seeds_not_ratios_nor_weightings(full_results):
    """e (deep): the ratios of a seed are averaged first; g: up and down are paired within a seed."""
    claims, _ = report.all_claims(report.load(full_results))
    deep, g = row_of(claims, "e", 1), row_of(claims, "g")
    assert deep.estimate.n == deep.n_seeds == 3
    assert g.estimate.n == g.n_seeds == 3
    assert g.verdict == SUPPORTED


def test_extreme_weights_without_equal_step_are_inconclusive(tmp_path):
    write_extreme(tmp_path, SEEDS, equal_step=False)
    claims, _ = report.all_claims(report.load(tmp_path))
    g = next(c for c in claims if c.key == "g")
    assert g.verdict == INCONCLUSIVE and "equal effective step" in " ".join(g.details)


def test_collapsed_and_diverged_runs_are_left_out_of_verdicts_and_counted(tmp_path):
    def extra(run):
        status = {"weighting_w4_none_s0": "collapsed", "weighting_w4_none_s1": "diverged"}.get(run["run"], "ok")
        return dict(status=status, **({"fraction_positive_pair": 1.0} if status != "ok" else {}))

    write_cifar(tmp_path, extra=extra)
    claims, _ = report.all_claims(report.load(tmp_path))
    b = row_of(claims, "b")
    assert abs(b.estimate.mean) < 0.01  # the constant predictors' fraction 1.0 at w = 4 would make a slope
    assert b.verdict != CONTRADICTED
    assert "excluded: 1 collapsed, 1 diverged" in b.value
    assert "excluded" not in row_of(claims, "c").value
    text = report.studies_table(report.load(tmp_path))
    assert "1 collapsed, 1 diverged" in text


def test_fit_rules_use_the_evaluation_mode_train_accuracy(tmp_path):
    """Training-mode accuracy 0.9 (dropout on, parameters moving) but 1.0 in evaluation mode: it fit."""
    write_cifar(tmp_path, none_fit=0.9, extra=lambda run: dict(train_accuracy_eval=1.0))
    claims, _ = report.all_claims(report.load(tmp_path))
    assert row_of(claims, "b").verdict == SUPPORTED
    other = tmp_path / "other"
    write_cifar(other, none_fit=1.0, extra=lambda run: dict(train_accuracy_eval=0.9))
    claims, _ = report.all_claims(report.load(other))
    assert row_of(claims, "b").verdict == INCONCLUSIVE


def test_readme_claims_table_is_written_then_checked_and_an_edited_number_fails(full_results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n\n<!-- claims-table:begin -->\n<!-- claims-table:end -->\n\nmore\n")
    assert report.main(["--results", str(full_results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| (b) regime none | On CIFAR-10 without regularisation" in text and text.endswith("\n\nmore\n")
    capsys.readouterr()
    assert report.main(["--results", str(full_results), "--check", str(readme)]) == 0
    b_value = next(c for c in report.all_claims(report.load(full_results))[0] if c.key == "b").rows[0].value
    readme.write_text(text.replace(b_value, b_value.replace("0", "9", 1)))
    assert report.main(["--results", str(full_results), "--check", str(readme)]) == 1
    message = capsys.readouterr().out.strip().splitlines()[2:]  # after the passing check's two lines
    assert len(message) == 2 and "1 of" in message[0] and "lines differ" in message[0]
    assert message[1].endswith("REPORT.md: the report is the results' (" + str(full_results) + ")")


def test_the_readme_and_the_report_are_the_committed_results():
    root = Path(__file__).resolve().parents[1]
    assert report.check_readme(root / "paper-results", root / "README.md") is None
    assert report.check_report(root / "paper-results") is None


@pytest.mark.parametrize("folder, merged, prefix", [
    ("cifar_binary", "merged.csv", ""), ("cifar_extension", "merged_covariate.csv", "covariate_"),
    *((p.name, "merged.csv", "") for p in sorted((Path(__file__).resolve().parents[1] / "paper-results")
                                                 .glob("cifar_binary_*")) if p.is_dir())])  # e.g. a GPU run
def test_the_committed_merged_tables_are_the_merge_of_their_run_folders(folder, merged, prefix):
    """The notebooks read the merged tables, the report the run folders: they must say the same."""
    from iwshift import sweep

    root = Path(__file__).resolve().parents[1] / "paper-results" / folder
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))
    expected = sweep.merge(root, names, strict=True).sort_values(["run", "epoch"], ignore_index=True)
    committed = pd.read_csv(root / merged).sort_values(["run", "epoch"], ignore_index=True)
    pd.testing.assert_frame_equal(committed, expected, check_dtype=False)


def test_a_stale_report_is_named_with_its_first_differing_line(full_results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- claims-table:begin -->\n<!-- claims-table:end -->\n")
    assert report.main(["--results", str(full_results), "--readme", str(readme)]) == 0
    assert report.check_report(full_results) is None
    path = full_results / "REPORT.md"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4] + ["an edited line\n"] + lines[5:]))
    capsys.readouterr()
    assert report.main(["--results", str(full_results), "--check", str(readme)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert "the claims table is the results'" in out[0]
    assert out[-1].startswith(f"{path}: 1 lines differ") and "first line 5" in out[-1]
