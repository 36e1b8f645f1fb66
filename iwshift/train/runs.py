"""What differs between the K runs of a stack, and what an epoch reports of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..losses import LossSpec, class_weight_matrix


@dataclass
class StackedRuns:
    """What differs between the K runs of a stack (each array has one entry per run)."""

    seeds: Sequence[int]              # model initialisation and batch order
    train_index: np.ndarray           # (K, n) indices into the device image tensor: each run's training set
    example_weights: np.ndarray       # (K, n) importance weight of each of those training examples (as given)
    l2: Sequence[float]               # weight decay per run
    dropout: Sequence[float]          # dropout probability per run
    loss: Sequence[LossSpec] | None = None  # per run (default: cross-entropy for all)
    defer_until: Sequence[int] | None = None  # deferred re-weighting: unweighted before this epoch (0: never)

    def __post_init__(self) -> None:
        self.train_index = np.asarray(self.train_index, np.int64)
        self.example_weights = np.asarray(self.example_weights, np.float64)
        K = len(self.seeds)
        if self.train_index.shape[0] != K or self.example_weights.shape != self.train_index.shape:
            raise ValueError("train_index and example_weights must be (K, n) with one row per seed")
        if len(self.l2) != K or len(self.dropout) != K:
            raise ValueError("l2 and dropout need one value per run")
        self.loss = list(self.loss) if self.loss is not None else [LossSpec()] * K
        self.defer_until = list(self.defer_until) if self.defer_until is not None else [0] * K
        if len(self.loss) != K or len(self.defer_until) != K:
            raise ValueError("loss and defer_until need one value per run")

    @property
    def n_models(self) -> int:
        return len(self.seeds)

    @property
    def sgd_weights(self) -> np.ndarray:
        """(K, n) the weights in SGD's precision, float32 (the class weights are computed from the weights as
        given)."""
        with np.errstate(over="ignore"):  # a weight beyond float32 becomes inf: the run diverges, flagged
            return self.example_weights.astype(np.float32)

    def class_weights(self, labels: np.ndarray, n_classes: int) -> np.ndarray:
        """(K, C) each run's class weight w_c: the mean importance weight of its class-c training examples (1 for
        a class it has no example of; :func:`iwshift.losses.class_weight_matrix`), from the weights as given."""
        return class_weight_matrix(np.asarray(labels)[self.train_index], self.example_weights, n_classes)

    def select(self, runs: Sequence[int]) -> StackedRuns:
        """The runs at these positions, in this order, as a stack of their own."""
        runs = list(runs)
        return StackedRuns(seeds=[self.seeds[k] for k in runs], train_index=self.train_index[runs],
                           example_weights=self.example_weights[runs], l2=[self.l2[k] for k in runs],
                           dropout=[self.dropout[k] for k in runs], loss=[self.loss[k] for k in runs],
                           defer_until=[self.defer_until[k] for k in runs])


@dataclass
class EpochStats:
    """Running means over one epoch's mini-batches (training mode), per run."""

    loss_weighted: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    nonfinite: np.ndarray | None = None  # a non-finite training loss this epoch, or parameters at its end
