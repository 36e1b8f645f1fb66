"""Metrics: accuracies, predicted fractions, boundary angles and per-class gradient norms.

Functions take stacked quantities of K runs (leading dimension K) and return one value per run.
"""

from __future__ import annotations

import numpy as np
import torch

from . import losses
from .models import stacked_logits


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of correct predictions along the last dimension."""
    return (predictions == labels).float().mean(-1)


def fraction_predicted(predictions: torch.Tensor, label: int = 1) -> torch.Tensor:
    """Fraction of examples predicted as ``label`` along the last dimension."""
    return (predictions == label).float().mean(-1)


def balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Mean over the classes present in ``labels`` (n,) of the per-class recall, along the last dimension
    of ``predictions`` (..., n). The classes are those found in ``labels`` (as scikit-learn's
    ``balanced_accuracy_score``); ``n_classes``, when given, is checked: a label outside 0..n_classes-1
    is an error, never silently left out."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.numel() == 0 or predictions.shape[-1] != labels.shape[0]:
        raise ValueError(f"labels must be non-empty (n,) matching predictions' last dimension "
                         f"(got {tuple(labels.shape)} and {tuple(predictions.shape)})")
    classes = torch.unique(labels)
    if n_classes is not None and (int(classes[0]) < 0 or int(classes[-1]) >= n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1} for n_classes={n_classes} "
                         f"(got {int(classes[0])}..{int(classes[-1])})")
    recalls = [accuracy(predictions[..., labels == c], labels[labels == c]) for c in classes.tolist()]
    return torch.stack(recalls).mean(0)


def angle_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees in [0, 180] between vectors along the last axis (oriented normals)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-300)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def max_margin_normal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unit normal (pointing to class 1) of the hard-margin linear SVM on separable data."""
    from sklearn.svm import SVC

    svm = SVC(kernel="linear", C=1e6).fit(x, y)
    normal = svm.coef_[0]
    return normal / np.linalg.norm(normal)


def boundary_normals(params: dict[str, torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """Direction of each run's decision boundary as an oriented normal, (K, 2).

    For logistic regression this is the weight vector. For the MLP, whose boundary is piecewise
    linear, it is the mean over the points ``x`` of the unit input-gradient of the logit,
    mean_i grad_x f(x_i) / |grad_x f(x_i)|: the average direction in which the logit grows, which
    equals the weight vector's direction for a linear model.
    """
    if params["W1"].shape[-1] == 0:
        return params["w2"].detach().cpu().numpy().astype(np.float64)
    inputs = x.expand(params["w2"].shape[0], -1, -1).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(stacked_logits(params, inputs).sum(), inputs)
    unit = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit.mean(1).detach().cpu().numpy().astype(np.float64)


def class_gradient_norms(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    example_weights: torch.Tensor,
    n_classes: int = 2,
) -> np.ndarray:
    """Norm of the gradient contributed by each class's examples to the full-batch loss, (K, C).

    The loss is sum_i w_i l_i / n over all n examples (dropout off); class c's contribution keeps only
    its own examples in the sum. Pass ``example_weights`` of ones for the unweighted norms.
    """
    names = list(params)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    logits = stacked_logits(leaves, x)
    per_example = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y.to(logits.dtype).expand_as(logits), reduction="none") * example_weights
    norms = []
    for c in range(n_classes):
        loss = (per_example * (y == c)).sum(-1) / y.shape[-1]
        # runs are independent, so the gradient of the sum over runs is each run's own gradient
        grads = torch.autograd.grad(loss.sum(), [leaves[k] for k in names], retain_graph=True,
                                    allow_unused=True)  # logistic regression has no hidden layer
        squared = sum(g.reshape(len(g), -1).pow(2).sum(1) for g in grads if g is not None)
        norms.append(squared.sqrt())
    return torch.stack(norms, 1).detach().cpu().numpy()


def binary_losses(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, example_weights: torch.Tensor,
    normalization: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted and unweighted full-batch training loss of each run (dropout off)."""
    with torch.no_grad():
        logits = stacked_logits(params, x)
        labels = y.expand_as(logits)
        weighted = losses.weighted_bce_with_logits(logits, labels, example_weights, normalization)
        plain = losses.weighted_bce_with_logits(logits, labels, torch.ones_like(logits), "mean")
    return weighted.cpu().numpy(), plain.cpu().numpy()
