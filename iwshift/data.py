"""Data: synthetic 2-D data sets.

Every generator takes its own ``seed`` (the *data* seed), independent of the model seeds.

Linearly separable Gaussians (:func:`make_separable`)
    Class 0 ~ N(mu0, Sigma), class 1 ~ N(mu1, Sigma) with mu0 = (-1, -1), mu1 = (1, 1) and
    Sigma = [[1, 0.5], [0.5, 1]], truncated: a draw is kept only when it lies on its own side of the
    line x1 + x2 = 0 by at least ``margin / 2`` (default margin 0.5, measured along the unit normal
    (1, 1)/sqrt(2)). So the classes are separated by a gap of width ``margin``. Sizes: ``n_per_class``
    per class and split, default 256 + 256 for training and 256 + 256 for testing.

Moons (:func:`make_moons_split`)
    ``sklearn.datasets.make_moons(n_samples=1024, noise=0.1)``; the first half is the training set,
    the second half the test set (make_moons shuffles, so both halves are close to balanced).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEPARABLE_MEANS = np.array([[-1.0, -1.0], [1.0, 1.0]])
SEPARABLE_COVARIANCE = np.array([[1.0, 0.5], [0.5, 1.0]])
SEPARABLE_NORMAL = np.array([1.0, 1.0]) / np.sqrt(2.0)


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (n, d) float32 and labels ``y`` (n,) int64 in {0, ..., C-1}."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def class_counts(self, n_classes: int = 2) -> np.ndarray:
        return np.bincount(self.y, minlength=n_classes)

    def subset(self, index: np.ndarray) -> "Split":
        return Split(self.x[index], self.y[index])


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    name: str


def _truncated_gaussian(rng: np.random.Generator, label: int, n: int, margin: float) -> np.ndarray:
    sign = 1.0 if label == 1 else -1.0
    chol = np.linalg.cholesky(SEPARABLE_COVARIANCE)
    kept: list[np.ndarray] = []
    count = 0
    while count < n:
        draw = SEPARABLE_MEANS[label] + rng.standard_normal((2 * n, 2)) @ chol.T
        draw = draw[sign * (draw @ SEPARABLE_NORMAL) >= margin / 2]
        kept.append(draw)
        count += len(draw)
    return np.concatenate(kept)[:n]


def make_separable(n_per_class: int = 256, margin: float = 0.5, seed: int = 0) -> Dataset:
    """Two truncated Gaussians separated by a gap of width ``margin`` (see module docstring)."""
    rng = np.random.default_rng(seed)

    def split() -> Split:
        x = np.concatenate([_truncated_gaussian(rng, c, n_per_class, margin) for c in (0, 1)])
        y = np.repeat(np.arange(2), n_per_class)
        order = rng.permutation(len(y))
        return Split(x[order].astype(np.float32), y[order].astype(np.int64))

    train = split()
    return Dataset(train=train, test=split(), name="separable")


def make_moons_split(n_samples: int = 1024, noise: float = 0.1, seed: int = 0) -> Dataset:
    """Two moons; first half of the shuffled sample trains, second half tests."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    half = n_samples // 2
    x, y = x.astype(np.float32), y.astype(np.int64)
    return Dataset(train=Split(x[:half], y[:half]), test=Split(x[half:], y[half:]), name="moons")
