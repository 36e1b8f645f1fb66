"""Importance-weighted losses.

Two normalisations of a mini-batch's weighted loss, given per-example losses l_i and weights w_i:

``"mean"``        sum_i w_i l_i / n          -- the importance-weighted empirical risk (unbiased IW-ERM);
                                             a weight w scales the step size by w as well.
``"weight_sum"``  sum_i w_i l_i / sum_i w_i  -- what ``torch.nn.CrossEntropyLoss(weight=...)`` computes
                                             (and the Byrd & Lipton code uses): a weighted *average*, so the
                                             overall step size does not grow with the weights.

With every w_i = 1 both equal the plain mean loss. All functions reduce over the last dimension, so a
stack of K runs (shape ``(K, n)``) gives K losses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .choices import NORMALIZATIONS  # noqa: E402


def reduce_weighted(per_example: torch.Tensor, weights: torch.Tensor, normalization: str) -> torch.Tensor:
    """Weighted reduction over the last dimension (see module docstring)."""
    total = (weights * per_example).sum(-1)
    if normalization == "mean":
        return total / per_example.shape[-1]
    if normalization == "weight_sum":
        return total / weights.sum(-1)
    raise ValueError(f"unknown normalization {normalization!r}; choose from {', '.join(NORMALIZATIONS)}")


def weighted_bce_with_logits(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, normalization: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy on logits (label 1 = positive class), importance weighted."""
    per_example = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return reduce_weighted(per_example, weights.to(logits.dtype), normalization)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, normalization: str = "weight_sum"
) -> torch.Tensor:
    """Multi-class cross-entropy, importance weighted; ``logits`` is ``(..., n, C)``."""
    per_example = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none")
    per_example = per_example.view(labels.shape)
    return reduce_weighted(per_example, weights.to(logits.dtype), normalization)


# ------------------------------------------------------------------------------------ remedies
#
# Later work proposed ways to make importance weights matter again for networks that fit their
# training data. Each is a per-example loss (or a transformation of the weights) usable by every study.

LOSSES = ("ce", "poly", "logit_adjusted", "poly_wang")


def check_loss_parameters(loss: str, alpha: float = 1.0, beta: float = 0.0, tau: float = 1.0) -> None:
    """One-line errors for bad remedy parameters (raised as ConfigError naming the flag)."""
    import math

    from .config import ConfigError, one_of

    one_of("loss", loss, LOSSES)
    if loss == "poly":
        if not (math.isfinite(alpha) and alpha > 0):
            raise ConfigError("poly_alpha", f"must be finite and > 0 (got {alpha:g})")
        if not math.isfinite(beta):
            raise ConfigError("poly_beta", f"must be finite (got {beta:g})")
    if loss == "poly_wang" and not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError("poly_alpha", f"must be finite and > 0 (got {alpha:g})")
    if loss == "logit_adjusted" and not math.isfinite(tau):
        raise ConfigError("tau", f"must be finite (got {tau:g})")


def check_remedy_parameters(poly_alpha: float, poly_beta: float, tau: float, drw_epoch: int,
                            weight_power: float) -> None:
    """Every remedy parameter of a study's configuration, each with a one-line error naming its flag."""
    from .config import ConfigError, non_negative_finite

    check_loss_parameters("poly", poly_alpha, poly_beta)
    check_loss_parameters("logit_adjusted", tau=tau)
    if isinstance(drw_epoch, bool) or int(drw_epoch) != drw_epoch or drw_epoch < 0:
        raise ConfigError("drw_epoch", f"must be an integer >= 0 (got {drw_epoch})")
    non_negative_finite("weight_power", weight_power)


def poly_tail_constants(alpha: float, beta: float) -> tuple[float, float]:
    """(A, s) of the polynomial tail A (z - beta + s)^(-alpha), chosen so that the loss and its derivative
    are continuous at the switch point beta: A s^-alpha = log(1 + e^-beta) and
    alpha A s^(-alpha-1) = sigmoid(-beta)."""
    import math

    value = math.log1p(math.exp(-beta)) if beta > -30 else -beta
    slope = 1.0 / (1.0 + math.exp(beta))  # -d/dz log(1 + e^-z) at beta
    s = alpha * value / slope
    return value * s ** alpha, s


def poly_tailed(margin: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Polynomially-tailed loss of a margin z (Wang, Chatterji, Haque & Hashimoto, ICLR 2022):

        l(z) = log(1 + e^-z)                for z < beta  (logistic)
        l(z) = A (z - beta + s)^(-alpha)    for z >= beta (polynomial tail)

    with (A, s) from :func:`poly_tail_constants`, so l and l' are continuous at beta. The tail decays
    polynomially rather than exponentially, which keeps the weights' influence after interpolation.
    """
    A, s = poly_tail_constants(alpha, beta)
    logistic = torch.nn.functional.softplus(-margin)
    tail = A * (torch.clamp(margin, min=beta) - beta + s).pow(-alpha)
    return torch.where(margin < beta, logistic, tail)


def class_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z = logit_y - logsumexp_{j != y} logit_j; cross-entropy is exactly log(1 + e^-z). ``(..., C)``."""
    true = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, labels.unsqueeze(-1), float("-inf"))
    return true - torch.logsumexp(others, -1)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str = "ce", alpha: float = 1.0,
                     beta: float = 0.0, tau: float = 1.0, log_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example loss of ``(..., C)`` logits: ``ce``; ``poly`` (polynomially tailed, on the class
    margin); ``poly_wang`` (Wang et al.'s released variant, :func:`poly_wang`); ``logit_adjusted``
    (Menon et al., ICLR 2021: cross-entropy of logits + tau * log pi, with pi the training set's class
    prior ``exp(log_prior)``; tau = 0 is cross-entropy)."""
    if loss == "ce":
        return torch.nn.functional.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)
    if loss == "poly":
        return poly_tailed(class_margin(logits, labels), alpha, beta)
    if loss == "poly_wang":  # for two classes the class margin is their (logit_1 - logit_0)(2y - 1)
        return poly_wang(class_margin(logits, labels), alpha)
    if loss == "logit_adjusted":
        if log_prior is None:
            raise ValueError("logit adjustment needs the training set's log class prior")
        return per_example_loss(logits + tau * log_prior, labels, "ce")
    raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")


def class_weight_matrix(labels: np.ndarray, weights: np.ndarray, n_classes: int, absent: float = 1.0) -> np.ndarray:
    """(K, C): each run's class weight w_c, the mean importance weight of its class-c training examples, from
    each run's training labels and weights (both (K, n)); ``absent`` for a class a run has no example of."""
    out = np.full((len(labels), n_classes), absent, dtype=np.float64)
    for c in range(n_classes):
        member = labels == c
        counts = member.sum(1)
        total = np.where(member, weights, 0.0).sum(1)
        out[:, c] = np.where(counts > 0, total / np.maximum(counts, 1), absent)
    return out


def weight_exponent(weights: np.ndarray, k: float, counts: np.ndarray | None = None,
                    keep_mean: bool = False) -> np.ndarray:
    """Weights raised to the power k and rescaled to mean 1 along the last axis, or with ``keep_mean`` to the
    mean of ``weights`` (each weight counted ``counts`` times when given, e.g. class weights with their class
    sizes). Keeping the mean keeps the effective step of the plain weights under either normalisation, so
    that the remedy is compared with plain weighting at an equal step: k = 1 then returns the weights
    exactly. k = 0 makes them uniform; 0 < k < 1 tempers them."""
    weights = np.asarray(weights, np.float64)
    counts = np.ones(weights.shape[-1]) if counts is None else np.asarray(counts, np.float64)
    powered = weights ** k
    mean = lambda w: (w * counts).sum(-1, keepdims=True) / counts.sum()  # noqa: E731
    return powered * ((mean(weights) if keep_mean else 1.0) / mean(powered))


def deferred_weights(weights: np.ndarray, epoch: int, start_epoch: int) -> np.ndarray:
    """Deferred re-weighting (Cao et al., NeurIPS 2019): uniform weights for epochs before
    ``start_epoch`` (1-based epochs), the importance weights from then on."""
    return np.ones_like(weights) if epoch < start_epoch else weights


# ----------------------------------------------------------- Wang et al. (ICLR 2022), as released
#
# Their released code's polynomially-tailed loss (``PolynomialLoss(type="logit")`` in their
# src/loss_fns.py), re-implemented for the side-by-side replication (:mod:`iwshift.wang2022`). It is
# not our ``poly``:
#   * ours: logistic log(1 + e^-z) below beta, then A (z - beta + s)^-alpha with (A, s) chosen so that
#     value *and slope* are continuous at beta (C^1; default beta = 0);
#   * theirs: the logistic *scaled* by 1 / log(1 + e^-1) up to v = 1 (so f(1) = 1), then the unshifted
#     v^-alpha; continuous at 1 but with a kink (slope -sigmoid(-1) / log(1 + e^-1) = -0.858 on the left,
#     -alpha on the right), and about 3.19 times the plain logistic below the switch.
# Their code multiplies both branches by indicators, so a margin of exactly 0 gives 0 * inf = NaN (and
# NaN gradients near 0); here the tail is evaluated on the clamped margin, which keeps every value finite.


def poly_wang(margin: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Wang et al.'s released poly-tailed loss of a margin v (binary: v = (logit_1 - logit_0)(2y - 1)):

        f(v) = log(1 + e^-v) / log(1 + e^-1)   for v <= 1
        f(v) = v^(-alpha)                      for v > 1
    """
    import math

    logistic = torch.nn.functional.softplus(-margin) / math.log1p(math.exp(-1.0))
    tail = torch.clamp(margin, min=1.0).pow(-alpha)
    return torch.where(margin <= 1.0, logistic, tail)
