"""The CIFAR-10 extension on tiny made-up images: shift builders, true ratios, target hygiene, the study."""

import numpy as np
import pytest

from helpers import class_of, fake_cifar, load_script, tiny_extension, train_study
from iwshift import cifar_extension as ext
from iwshift.checks import ConfigError
from iwshift.cifar_data import CIFAR10_CLASSES

tiny = tiny_extension


@pytest.fixture(scope="module")
def data():
    return fake_cifar(train_per_class=40, test_per_class=12)


def run_study(data, cfg, out):
    """The extension's grid through the runner, then its weights table (what the script does)."""
    study = ext.ExtensionStudy(cfg, data)
    table = train_study(study, out)
    return table, study.finish(out, table)


def test_covariate_source_counts_labels_and_exact_true_ratios(data):
    cfg = tiny()
    shift = ext.prepare_covariate(data, cfg, "cpu")
    images = shift.images.permute(0, 2, 3, 1).numpy()
    source_classes = class_of(images[shift.source])
    names = [CIFAR10_CLASSES[c] for c in source_classes]
    assert [names.count(n) for n in ext.SUBPOPULATIONS] == list(cfg.source_counts)
    labels = shift.labels.numpy()[shift.source]
    assert all(labels[i] == ext.SUBPOPULATION_LABEL[n] for i, n in enumerate(names))  # each from its own class
    n = sum(cfg.source_counts)
    for g, count in enumerate(cfg.source_counts):
        expected = (1 / 4) / (count / n)  # the target holds the four classes in equal numbers
        assert np.allclose(shift.true_weights[shift.source][shift.group[shift.source] == g], expected)
    assert shift.true_weights[shift.source].mean() == pytest.approx(1.0)


def _bytes(images):
    return {row.tobytes() for row in images}


@pytest.mark.parametrize("study", ["covariate", "label"])
def test_target_never_contains_a_training_image(data, study):
    shift = ext.prepare(data, tiny(study=study), "cpu")
    images = shift.images.permute(0, 2, 3, 1).numpy()
    target = np.concatenate([shift.target_unlabelled, shift.target_eval])
    training = np.concatenate([shift.source, shift.holdout])
    assert _bytes(images[target]).isdisjoint(_bytes(images[training]))
    assert _bytes(images[target]) <= _bytes(data.test.images)  # the target is made of test images
    assert set(shift.target_unlabelled).isdisjoint(shift.target_eval)


def test_label_shift_source_is_long_tailed_with_exact_true_weights(data):
    cfg = tiny(study="label")
    shift = ext.prepare_label(data, cfg, "cpu")
    counts = ext.long_tail_counts(cfg.per_class, cfg.imbalance)
    assert counts[0] / counts[-1] == pytest.approx(cfg.imbalance, rel=0.05)
    labels = shift.labels.numpy()
    pool = np.bincount(labels[np.concatenate([shift.source, shift.holdout])], minlength=10)
    assert pool.tolist() == counts.tolist()
    p_source = np.bincount(labels[shift.source], minlength=10) / len(shift.source)
    for c in range(10):
        assert np.allclose(shift.true_weights[shift.source][labels[shift.source] == c], 0.1 / p_source[c])
    assert np.array_equal(labels[shift.source], class_of(shift.images.permute(0, 2, 3, 1).numpy()[shift.source]))


@pytest.mark.parametrize("study", ["covariate", "label"])
def test_study_runs_end_to_end_and_reports_every_weight_source(data, tmp_path, study):
    cfg = tiny(study=study)
    out = tmp_path / "cifar_extension"
    table, weights = run_study(data, cfg, out)
    assert set(table["weight_source"]) == set(cfg.weight_sources)
    assert set(weights["weight_source"]) == set(cfg.weight_sources)
    assert (weights["ess"] > 0).all()
    estimated = weights[~weights["weight_source"].isin(["none", "true"])]
    assert len(estimated) == len(cfg.seeds) * 2 and np.isfinite(estimated["spearman"]).all()  # per seed
    true_row = weights[weights.weight_source == "true"].iloc[0]
    assert true_row["rmse"] == pytest.approx(0.0)
    column = "target_worst_group_accuracy"
    assert (table[column] <= table["target_accuracy"] + 1e-9).all()
    figures = dict(ext.figures(table, {k: v for k, v in np.load(out / f"weights_{study}.npz").items()}, study))
    assert f"{study}_final_target_accuracy" in figures and f"{study}_weights_scatter" in figures
    again, _ = run_study(data, cfg, out)  # complete: nothing retrained
    assert again.drop(columns="seconds").equals(table.drop(columns="seconds"))
    if study == "covariate":  # the report reads these runs as the extension's (claim f)
        from iwshift.report import all_claims, load

        f = next(c for c in all_claims(load(tmp_path))[0] if c.key == "f")
        assert f.verdict != "not run" and f.rows[0].label == "target accuracy"


def test_a_diverged_unweighted_run_is_named_as_why_bbse_cannot_be_estimated(data, tmp_path):
    cfg = tiny(study="label", regimes=["none"], weight_sources=["none", "bbse"], lr=1e8)
    with pytest.raises(ConfigError, match="label_none_none_s0, which diverged at epoch 1"):
        run_study(data, cfg, tmp_path)


@pytest.mark.parametrize("kw,argument", [
    (dict(study="style"), "--study"),
    (dict(source_counts=(1, 2, 3)), "--source-counts"),
    (dict(imbalance=0.5), "--imbalance"),
    (dict(holdout=1.0), "--holdout"),
    (dict(clip=0.0), "--clip"),
    (dict(kernel_dims=9, feature_dims=4), "--kernel-dims"),
    (dict(weight_sources=["bbse"]), "--covariate-weights"),  # the flag that exists
])
def test_bad_configuration_gives_one_line_error(kw, argument):
    with pytest.raises(ConfigError) as info:
        tiny_extension(**kw)
    assert str(info.value).startswith(argument)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kw, message", [
    (dict(study="covariate", source_counts=(10, 10, 10, 10_000)), "--source-counts: needs 10000 training images of truck"),
    (dict(study="label", per_class=10_000), "--per-class: needs 10000 training images of airplane"),
])
def test_too_few_training_images_is_a_one_line_error_before_anything_is_drawn(data, kw, message):
    cfg = ext.ExtensionConfig(**kw)
    for check in (ext.check_data, lambda d, c: ext.prepare(d, c, "cpu")):
        with pytest.raises(ConfigError) as info:
            check(data, cfg)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_script_bad_input_exits_2_with_one_line(tmp_path, capsys):
    script = load_script("CIFAR10_extension.py")
    with pytest.raises(SystemExit) as info:
        script.main(["--source-counts", "1", "2", "--device", "cpu", "--out", str(tmp_path / "o"),
                     "--figures", str(tmp_path / "f")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--source-counts" in err and len(err.splitlines()) == 1
