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
