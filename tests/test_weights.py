"""Importance-weight estimators and diagnostics, on small simulated data with known answers."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import special

from iwshift import weights as W
from iwshift.checks import ConfigError

HAS_SKADA = importlib.util.find_spec("skada") is not None
needs_skada = pytest.mark.skipif(not HAS_SKADA, reason="skada not installed")

ESTIMATORS = [
    pytest.param(lambda seed: W.DomainClassifierWeights(seed=seed), id="domain-classifier"),
    pytest.param(lambda seed: W.KLIEPWeights(seed=seed), id="kliep"),
    pytest.param(lambda seed: W.KMMWeights(), id="kmm", marks=needs_skada),
]

SHIFT = np.array([1.0, 0.5])  # target mean; source N(0, I), target N(SHIFT, I)


def true_ratio(x: np.ndarray) -> np.ndarray:
    """Exact N(SHIFT, I) / N(0, I) density ratio: exp(x.SHIFT - |SHIFT|^2 / 2)."""
    return np.exp(x @ SHIFT - 0.5 * SHIFT @ SHIFT)


# ------------------------------------------------------------------------------- covariate shift


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("make", ESTIMATORS)
def test_no_shift_gives_weights_near_one(make, seed):
    rng = np.random.default_rng(seed)
    source, target = rng.standard_normal((300, 2)), rng.standard_normal((300, 2))
    w = make(seed).fit(source, target).source_weights_
    assert w.shape == (300,) and np.all(w >= 0)
    assert abs(w.mean() - 1) < 0.1
    assert np.mean((w > 0.5) & (w < 2)) >= 0.9


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("make", ESTIMATORS)
def test_gaussian_shift_ratio_ranks_like_the_truth(make, seed):
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((300, 2))
    target = rng.standard_normal((300, 2)) + SHIFT
    estimator = make(seed).fit(source, target)
    assert W.weight_error(estimator.source_weights_, true_ratio(source))["spearman"] >= 0.9
    fresh = rng.standard_normal((200, 2))  # new points go through weights()
    assert W.weight_error(estimator.weights(fresh), true_ratio(fresh))["spearman"] >= 0.9
    np.testing.assert_allclose(estimator.weights(source), estimator.source_weights_, rtol=1e-10)


def test_kliep_meets_its_normalisation_and_converges():
    rng = np.random.default_rng(3)
    source, target = rng.standard_normal((200, 2)), rng.standard_normal((200, 2)) + SHIFT
    kliep = W.KLIEPWeights(n_centers=50).fit(source, target)
    assert kliep.converged_ and np.all(kliep.alpha_ >= 0)
    assert kliep.source_weights_.mean() == pytest.approx(1.0, abs=1e-8)
    # The optimum beats the feasible uniform start.
    uniform = np.full(len(kliep.alpha_), 1.0)
    scaled = kliep.scaler_.transform(target)
    kernel = np.exp(-kliep.gamma_ * W._sq_distances(scaled, kliep.centers_))
    uniform /= np.exp(-kliep.gamma_ * W._sq_distances(kliep.scaler_.transform(source),
                                                       kliep.centers_)).mean(0) @ uniform
    assert kliep.log_likelihood_ > np.mean(np.log(kernel @ uniform))


def test_projection_onto_kliep_constraint_is_feasible_and_idempotent():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.1, 1.0, 8)
    a = W._project_onto_constraint(rng.normal(size=8), b)
    assert np.all(a >= 0) and b @ a == pytest.approx(1.0)
    np.testing.assert_allclose(W._project_onto_constraint(a, b), a, atol=1e-12)


@needs_skada
def test_kmm_raw_weights_are_the_qp_solution():
    rng = np.random.default_rng(0)
    source, target = rng.standard_normal((100, 2)), rng.standard_normal((100, 2)) + SHIFT
    kmm = W.KMMWeights(smooth=False).fit(source, target)
    np.testing.assert_array_equal(kmm.source_weights_, kmm.qp_weights_)
    assert kmm.qp_weights_.shape == (100,) and np.all(kmm.qp_weights_ >= 0)


@needs_skada
@pytest.mark.parametrize("seed", [0, 1])
def test_kmm_with_a_cross_validated_width_recovers_the_weights_spread(seed):
    """The median heuristic's width flattens KMM's weights (effective sample size > 90 % where the true
    weights' is under 45 %); the likelihood cross-validated width (the default) brings the spread back."""
    rng = np.random.default_rng(seed)
    source, target = rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) + SHIFT
    truth = W.ess_fraction(true_ratio(source))
    median = W.KMMWeights(gamma=None).fit(source, target).source_weights_
    fitted = W.KMMWeights().fit(source, target)
    assert truth < 0.45 and W.ess_fraction(median) > 0.9
    assert W.ess_fraction(fitted.source_weights_) < 0.6
    assert fitted.gamma_ > min(fitted.cv_scores_) and len(fitted.cv_scores_) == 9
    assert W.weight_error(fitted.source_weights_, true_ratio(source))["spearman"] >= 0.9


def test_kmm_checks_its_kernel_width():
    with pytest.raises(ConfigError, match="gamma"):
        W.KMMWeights(gamma="median")


def test_importing_the_module_does_not_import_skada():
    code = "import sys, iwshift.weights; assert 'skada' not in sys.modules"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# ---------------------------------------------------------------------------------- label shift

SOURCE_PRIOR = np.array([0.5, 0.3, 0.2])
TARGET_PRIOR = np.array([0.2, 0.3, 0.5])
TRUE_CLASS_WEIGHTS = TARGET_PRIOR / SOURCE_PRIOR
# Row y: P(prediction | true label y) of the simulated black-box classifier.
CONFUSION = np.array([[0.80, 0.10, 0.10], [0.15, 0.75, 0.10], [0.05, 0.15, 0.80]])
MEANS = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # class-conditional N(mean, I) in 2-D


def simulate_predictions(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(labels))[:, None] > np.cumsum(CONFUSION[labels], 1)).sum(1)


def source_posteriors(x: np.ndarray) -> np.ndarray:
    """Exact Bayes posteriors under the source prior: a perfectly calibrated source classifier."""
    log_joint = -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(-1) + np.log(SOURCE_PRIOR)
    return special.softmax(log_joint, axis=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_bbse_recovers_known_label_shift(seed):
    rng = np.random.default_rng(seed)
    n = 400_000  # BBSE's error ~ 1/sqrt(n); at 20k the worst class is off by up to ~0.1
    val_labels = rng.choice(3, n, p=SOURCE_PRIOR)
    target_labels = rng.choice(3, n, p=TARGET_PRIOR)
    val_pred, target_pred = simulate_predictions(val_labels, rng), simulate_predictions(target_labels, rng)
    w = W.bbse_weights(val_pred, val_labels, target_pred, n_classes=3)
    assert W.class_weight_error(w, TRUE_CLASS_WEIGHTS)["max_abs_error"] < 0.05
    model = W.BBSE(3).fit(val_pred, val_labels, target_pred)
    np.testing.assert_array_equal(model.class_weights_, w)
    np.testing.assert_allclose(model.confusion_.sum(0), np.bincount(val_labels) / n)
    np.testing.assert_array_equal(model.weights([2, 0, 2]), w[[2, 0, 2]])


def test_bbse_clips_negative_solutions_to_zero():
    # C = [[.2, .2], [.2, .4]] and only class 0 predicted on the target: C w = (1, 0) gives w = (10, -5).
    val_pred, val_labels = np.array([0, 1, 1, 0, 1]), np.array([0, 0, 1, 1, 1])
    model = W.BBSE(2).fit(val_pred, val_labels, np.zeros(10, int))
    assert np.any(model.raw_class_weights_ < 0)
    assert np.all(model.class_weights_ >= 0)
    np.testing.assert_array_equal(model.class_weights_, np.clip(model.raw_class_weights_, 0, None))


@pytest.mark.parametrize("seed", [0, 1])
def test_mlls_recovers_known_label_shift_from_calibrated_posteriors(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, 100_000, p=TARGET_PRIOR)
    probs = source_posteriors(MEANS[labels] + rng.standard_normal((len(labels), 2)))
    w = W.mlls_weights(probs, SOURCE_PRIOR)
    assert W.class_weight_error(w, TRUE_CLASS_WEIGHTS)["max_abs_error"] < 0.05
    model = W.MLLS().fit(probs, SOURCE_PRIOR)
    assert model.converged_ and model.target_prior_.sum() == pytest.approx(1.0)


def test_mlls_without_shift_gives_weights_near_one():
    rng = np.random.default_rng(2)
    labels = rng.choice(3, 50_000, p=SOURCE_PRIOR)
    probs = source_posteriors(MEANS[labels] + rng.standard_normal((len(labels), 2)))
    np.testing.assert_allclose(W.mlls_weights(probs, SOURCE_PRIOR), 1.0, atol=0.05)


def test_mlls_warns_when_em_stops_early():
    rng = np.random.default_rng(0)
    labels = rng.choice(3, 1000, p=TARGET_PRIOR)
    probs = source_posteriors(MEANS[labels] + rng.standard_normal((len(labels), 2)))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        W.mlls_weights(probs, SOURCE_PRIOR, max_iter=2)


def test_calibration_undoes_overconfidence_and_then_mlls_recovers_the_shift():
    rng = np.random.default_rng(0)
    n = 100_000
    val_labels = rng.choice(3, n, p=SOURCE_PRIOR)
    target_labels = rng.choice(3, n, p=TARGET_PRIOR)
    val_logits = 3.0 * np.log(source_posteriors(MEANS[val_labels] + rng.standard_normal((n, 2))))
    target_logits = 3.0 * np.log(source_posteriors(MEANS[target_labels] + rng.standard_normal((n, 2))))

    temperature = W.fit_temperature(val_logits, val_labels)
    assert temperature == pytest.approx(3.0, abs=0.1)
    bcts_temperature, bias = W.calibrate_bcts(val_logits, val_labels)
    assert bcts_temperature == pytest.approx(3.0, abs=0.1) and np.abs(bias).max() < 0.1

    overconfident = W.mlls_weights(special.softmax(target_logits, axis=1), SOURCE_PRIOR)
    calibrated = W.mlls_weights(W.apply_calibration(target_logits, temperature), SOURCE_PRIOR)
    assert W.class_weight_error(overconfident, TRUE_CLASS_WEIGHTS)["max_abs_error"] > 0.2
    assert W.class_weight_error(calibrated, TRUE_CLASS_WEIGHTS)["max_abs_error"] < 0.05


def test_bcts_finds_a_class_bias():
    rng = np.random.default_rng(1)
    labels = rng.choice(3, 50_000, p=SOURCE_PRIOR)
    logits = np.log(source_posteriors(MEANS[labels] + rng.standard_normal((len(labels), 2))))
    shift = np.array([0.5, -0.25, -0.25])
    temperature, bias = W.calibrate_bcts(logits - shift, labels)
    assert temperature == pytest.approx(1.0, abs=0.05)
    np.testing.assert_allclose(bias, shift, atol=0.05)


# ----------------------------------------------------------------------------------- diagnostics


def test_effective_sample_size_on_hand_made_weights():
    assert W.effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert W.effective_sample_size([0, 0, 3.0, 0]) == pytest.approx(1)
    assert W.effective_sample_size([1.0, 3.0]) == pytest.approx(16 / 10)
    assert W.ess_fraction(np.ones(7)) == pytest.approx(1)
    assert W.ess_fraction([0, 0, 3.0, 0]) == pytest.approx(0.25)


def test_clip_and_self_normalize():
    np.testing.assert_array_equal(W.clip_weights([0.5, 2.0, 10.0], 3.0), [0.5, 2.0, 3.0])
    np.testing.assert_allclose(W.self_normalize([1.0, 2.0, 3.0]), [0.5, 1.0, 1.5])
    normalized = W.self_normalize(W.clip_weights([0.1, 0.2, 50.0], 1.0))
    assert normalized.mean() == pytest.approx(1.0) and normalized.max() == pytest.approx(3 / 1.3)


def test_weight_errors():
    errors = W.weight_error([1.0, 2.0, 4.0], [1.0, 3.0, 5.0])
    assert errors["rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert errors["mae"] == pytest.approx(2 / 3)
    assert errors["spearman"] == pytest.approx(1.0)
    assert np.isnan(W.weight_error(np.ones(3), [1.0, 2.0, 3.0])["spearman"])
    class_errors = W.class_weight_error([0.5, 1.0, 2.0], [0.4, 1.0, 2.5])
    assert class_errors["max_abs_error"] == pytest.approx(0.5)
    assert class_errors["l2_error"] == pytest.approx(np.sqrt(0.01 + 0.25))


# ---------------------------------------------------------------------------------- bad inputs

POINTS = np.zeros((10, 2))


@pytest.mark.parametrize("call, argument", [
    (lambda: W.DomainClassifierWeights(C=0), "C"),
    (lambda: W.DomainClassifierWeights(C=float("inf")), "C"),
    (lambda: W.KLIEPWeights(n_centers=0), "n_centers"),
    (lambda: W.KLIEPWeights(gamma=-1.0), "gamma"),
    (lambda: W.KMMWeights(solver="cvx"), "solver"),
    (lambda: W.KLIEPWeights().fit(POINTS, np.zeros((10, 3))), "target_features"),
    (lambda: W.KLIEPWeights().fit(np.full((10, 2), np.nan), POINTS), "source_features"),
    (lambda: W.DomainClassifierWeights().fit(POINTS, POINTS[:3]), "calibrate"),
    (lambda: W.clip_weights([1.0, 2.0], 0), "max_weight"),
    (lambda: W.clip_weights([1.0, 2.0], float("nan")), "max_weight"),
    (lambda: W.effective_sample_size([1.0, -1.0]), "weights"),
    (lambda: W.self_normalize([0.0, 0.0]), "weights"),
    (lambda: W.weight_error([1.0, 2.0], [1.0, 2.0, 3.0]), "true"),
    (lambda: W.class_weight_error([1.0, 2.0], [[1.0, 2.0]]), "true"),
    (lambda: W.bbse_weights([0, 1], [0, 1], [0, 1], n_classes=1), "n_classes"),
    (lambda: W.bbse_weights([0, 1], [0, 1, 1], [0, 1], n_classes=2), "val_labels"),
    (lambda: W.bbse_weights([0, 1], [0, 2], [0, 1], n_classes=2), "val_labels"),
    (lambda: W.bbse_weights([0, 1], [0, 1], [0, 3], n_classes=2), "target_predictions"),
    (lambda: W.mlls_weights(np.ones((4, 1)), [1.0]), "source_probs"),
    (lambda: W.mlls_weights(np.full((4, 2), 0.5), [0.2, 0.3, 0.5]), "source_prior"),
    (lambda: W.mlls_weights(np.full((4, 2), 0.5), [0.2, 0.3]), "source_prior"),
    (lambda: W.mlls_weights(np.full((4, 2), 2.0), [0.5, 0.5]), "source_probs"),
    (lambda: W.mlls_weights(np.full((4, 2), 0.5), [0.5, 0.5], max_iter=0), "max_iter"),
    (lambda: W.fit_temperature(np.zeros((3, 2)), [0, 1]), "labels"),
    (lambda: W.apply_calibration(np.zeros((3, 2)), 0.0), "temperature"),
])
def test_bad_inputs_raise_config_error_naming_the_argument(call, argument):
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.argument == argument
    flag = "--" + argument.lower().replace("_", "-")
    message = str(info.value)
    assert message.startswith(flag + ":") and "\n" not in message


def test_weights_before_fit_is_an_error():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        W.KLIEPWeights().weights(POINTS)
    with pytest.raises(ConfigError, match="--features"):
        W.KLIEPWeights(n_centers=5).fit(np.random.default_rng(0).normal(size=(20, 2)),
                                        np.random.default_rng(1).normal(size=(20, 2))).weights(
            np.zeros((3, 5)))
