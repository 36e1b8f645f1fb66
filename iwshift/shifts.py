"""Shifts: subsampled (imbalanced) training sets and the importance weights that correct them."""

from __future__ import annotations

import numpy as np

from .checks import ConfigError, positive_finite

# Named class weightings of the 2-D study: (weight of class 0, weight of class 1) given a factor w.
from .config import WEIGHTINGS


def class_weights(weighting: str, factor: float) -> np.ndarray:
    """``"equal"`` -> (1, 1); ``"up"`` -> (1, factor) (class 1 up-weighted); ``"down"`` -> (factor, 1)."""
    factor = positive_finite("weight", factor)
    if weighting == "equal":
        return np.array([1.0, 1.0])
    if weighting == "up":
        return np.array([1.0, factor])
    if weighting == "down":
        return np.array([factor, 1.0])
    raise ConfigError("weighting", f"unknown value {weighting!r}; choose from {', '.join(WEIGHTINGS)}")


def subsample_class(
    labels: np.ndarray, label: int, keep: int, seed: int
) -> np.ndarray:
    """Indices of a training set that keeps ``keep`` examples of class ``label`` (drawn without
    replacement with its own ``seed``) and every example of the other classes, in original order.

    Only indices are returned, so every kept example keeps its own label.
    """
    labels = np.asarray(labels)
    members = np.flatnonzero(labels == label)
    if not 0 < keep <= len(members):
        raise ConfigError("keep", f"must be in 1..{len(members)} for class {label} (got {keep})")
    rng = np.random.default_rng(seed)
    kept = rng.choice(members, size=keep, replace=False)
    mask = labels != label
    mask[kept] = True
    return np.flatnonzero(mask)


def keep_fraction(labels: np.ndarray, label: int, fraction: float, seed: int) -> np.ndarray:
    """:func:`subsample_class` keeping ``round(fraction * count)`` examples (at least one)."""
    if not 0 < fraction <= 1:
        raise ConfigError("fraction", f"must be in (0, 1] (got {fraction:g})")
    count = int(np.sum(np.asarray(labels) == label))
    return subsample_class(labels, label, max(1, round(fraction * count)), seed)
