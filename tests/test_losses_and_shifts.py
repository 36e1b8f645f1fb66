"""Weighted losses and shift builders."""

import math

import numpy as np
import pytest
import torch

from iwshift import losses, shifts
from iwshift.checks import ConfigError


def test_weight_one_gives_exactly_the_unweighted_loss_and_gradients():
    torch.manual_seed(0)
    logits = torch.randn(16, requires_grad=True)
    labels = torch.randint(0, 2, (16,))
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    (g_plain,) = torch.autograd.grad(plain, logits)
    for normalization in losses.NORMALIZATIONS:
        weighted = losses.weighted_bce_with_logits(logits, labels, torch.ones(16), normalization)
        (g_weighted,) = torch.autograd.grad(weighted, logits)
        assert torch.equal(weighted, plain)
        assert torch.allclose(g_weighted, g_plain, rtol=0, atol=1e-7)


def test_weighted_bce_matches_hand_computation():
    logits = torch.tensor([0.0, 2.0, -1.0])
    labels = torch.tensor([1, 0, 0])
    weights = torch.tensor([10.0, 1.0, 2.0])
    per_example = [math.log(2.0), math.log(1 + math.exp(2.0)), math.log(1 + math.exp(-1.0))]
    weighted_sum = 10 * per_example[0] + per_example[1] + 2 * per_example[2]
    mean = losses.weighted_bce_with_logits(logits, labels, weights, "mean")
    normed = losses.weighted_bce_with_logits(logits, labels, weights, "weight_sum")
    assert mean.item() == pytest.approx(weighted_sum / 3, rel=1e-6)
    assert normed.item() == pytest.approx(weighted_sum / 13, rel=1e-6)


def test_weighted_cross_entropy_equals_torch_class_weights():
    torch.manual_seed(1)
    logits, labels = torch.randn(32, 2), torch.randint(0, 2, (32,))
    class_w = torch.tensor([1.0, 8.0])
    expected = torch.nn.CrossEntropyLoss(weight=class_w)(logits, labels)
    ours = losses.weighted_cross_entropy(logits, labels, class_w[labels], "weight_sum")
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization"):
        losses.weighted_bce_with_logits(torch.zeros(2), torch.zeros(2), torch.ones(2), "sum")


@pytest.mark.parametrize("minority", [0, 1])
def test_imbalanced_builder_gives_asked_counts_without_duplicates_and_true_labels(minority):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    keep = shifts.keep_fraction(labels, minority, 0.1, seed=3)
    counts = np.bincount(labels[keep], minlength=2)
    assert counts[minority] == round(0.1 * np.sum(labels == minority))
    assert counts[1 - minority] == np.sum(labels == 1 - minority)
    assert len(np.unique(keep)) == len(keep)
    # indices into the original arrays: every kept example carries its own label
    assert np.array_equal(labels[keep], np.asarray(labels)[keep])
    assert not np.array_equal(keep, shifts.keep_fraction(labels, minority, 0.1, seed=4))
    assert np.array_equal(keep, shifts.keep_fraction(labels, minority, 0.1, seed=3))


def test_class_weights_and_their_errors():
    assert shifts.class_weights("up", 10).tolist() == [1, 10]
    assert shifts.class_weights("down", 10).tolist() == [10, 1]
    assert shifts.class_weights("equal", 10).tolist() == [1, 1]
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="--weight"):
            shifts.class_weights("up", bad)
    with pytest.raises(ConfigError, match="--keep"):
        shifts.subsample_class(np.array([0, 1, 1]), 0, 2, seed=0)


def test_class_weight_matrix_is_each_runs_mean_weight_per_class_and_one_for_a_missing_class():
    labels = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    weights = np.array([[1.0, 3.0, 0.5, 0.5], [2.0, 4.0, 6.0, 8.0]])
    np.testing.assert_array_equal(losses.class_weight_matrix(labels, weights, 3), [[2.0, 0.5, 1.0], [1.0, 5.0, 1.0]])
    np.testing.assert_array_equal(losses.class_weight_matrix(labels, weights, 2), [[2.0, 0.5], [1.0, 5.0]])
