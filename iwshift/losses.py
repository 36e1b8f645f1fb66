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

NORMALIZATIONS = ("mean", "weight_sum")


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

LOSSES = ("ce", "poly", "logit_adjusted")


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
    margin); ``logit_adjusted`` (Menon et al., ICLR 2021: cross-entropy of logits + tau * log pi, with
    pi the training set's class prior ``exp(log_prior)``; tau = 0 is cross-entropy)."""
    if loss == "ce":
        return torch.nn.functional.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)
    if loss == "poly":
        return poly_tailed(class_margin(logits, labels), alpha, beta)
    if loss == "logit_adjusted":
        if log_prior is None:
            raise ValueError("logit adjustment needs the training set's log class prior")
        return per_example_loss(logits + tau * log_prior, labels, "ce")
    raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")


def weight_exponent(weights: np.ndarray, k: float) -> np.ndarray:
    """Weights raised to the power k and renormalised to mean 1 along the last axis: k = 1 leaves
    mean-1 weights unchanged (and any weights unchanged up to a scale, which the ``weight_sum``
    normalisation ignores); k = 0 makes them uniform; 0 < k < 1 tempers them."""
    powered = np.asarray(weights, np.float64) ** k
    return powered / powered.mean(-1, keepdims=True)


def deferred_weights(weights: np.ndarray, epoch: int, start_epoch: int) -> np.ndarray:
    """Deferred re-weighting (Cao et al., NeurIPS 2019): uniform weights for epochs before
    ``start_epoch`` (1-based epochs), the importance weights from then on."""
    return np.ones_like(weights) if epoch < start_epoch else weights
