"""What the CNN studies share: a run's training set (with an optional held-out split), a stack of CNN runs as one
trainer, held-out validation metrics, and the precision and device a run trains in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .checks import ConfigError
from .cifar_data import Cifar10
from .config import CnnConfig
from .losses import LossSpec
from .models import StackedCNN
from .sweep import Study
from .train import SideBySide, StackedRuns, Trainer

# Measured here (2 cores, AVX-512 bf16; benchmarks/bench_cifar.py): bf16 autocast + channels_last trains the
# stacked CNN 2.4x faster than fp32 at width 1/4 (K = 21) and 1.6x at full width (K = 1). See docs/speed.md.
CPU_PRECISION = "bf16"


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto``: bf16 autocast + channels_last on CUDA; on CPU, :data:`CPU_PRECISION` (measured)."""
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cuda" else CPU_PRECISION


def check_device(cfg: CnnConfig, device: str) -> None:
    """The configuration's CUDA-only choices on another device: a one-line error before anything is written."""
    if cfg.convolutions in ("triton", "auto") and not device.startswith("cuda"):
        raise ConfigError("convolutions", f"{cfg.convolutions} runs on CUDA only (the device is {device})")


@dataclass
class TrainingSet:
    """A run's training examples (indices into the device images) and their importance weights, with an
    optional held-out validation split (early stopping)."""

    index: np.ndarray
    weights: np.ndarray
    val_index: np.ndarray | None = None
    val_weights: np.ndarray | None = None

    def __iter__(self):  # unpacks as (index, weights)
        return iter((self.index, self.weights))


def validation_size(n: int, fraction: float) -> int:
    return max(2, int(round(fraction * n)))


def split_validation(index: np.ndarray, weights: np.ndarray, fraction: float, seed: Any) -> TrainingSet:
    """Hold out a random ``fraction`` of a training set (with its weights) for early stopping."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(index), bool)
    held[rng.choice(len(index), validation_size(len(index), fraction), replace=False)] = True
    return TrainingSet(index[~held], np.asarray(weights, np.float64)[~held], index[held],
                       np.asarray(weights, np.float64)[held])


def validation_metrics(trainer: Trainer | SideBySide, sets: Sequence[TrainingSet], images: torch.Tensor,
                       labels: torch.Tensor) -> dict[str, np.ndarray]:
    """Each run on its own held-out split, evaluation mode, one forward pass over the splits' union: the
    importance-weighted accuracy ``val_accuracy_weighted`` = sum_i w_i [correct_i] / sum_i w_i and
    cross-entropy ``val_loss_weighted`` = sum_i w_i l_i / sum_i w_i (NaN for a run without a split)."""
    out = {"val_accuracy_weighted": np.full(len(sets), np.nan), "val_loss_weighted": np.full(len(sets), np.nan)}
    held = [s.val_index for s in sets if s.val_index is not None]
    if not held:
        return out
    union = np.unique(np.concatenate(held))  # sorted: a split's columns are found by searchsorted
    union_t = torch.as_tensor(union, device=images.device)
    logits = trainer.predict_logits(images[union_t])
    y = labels[union_t]
    per_example = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), y.repeat(len(sets)), reduction="none").view(len(sets), -1).cpu().numpy()
    correct = (logits.argmax(-1) == y).cpu().numpy()
    for k, s in enumerate(sets):
        if s.val_index is not None:
            cols, w = np.searchsorted(union, s.val_index), s.val_weights
            out["val_accuracy_weighted"][k] = np.sum(w * correct[k, cols]) / np.sum(w)
            out["val_loss_weighted"][k] = np.sum(w * per_example[k, cols]) / np.sum(w)
    return out


def cnn_trainer(group: pd.DataFrame, sets: Sequence[TrainingSet], images: torch.Tensor, labels: torch.Tensor,
                n_classes: int, cfg: CnnConfig, losses: Sequence[LossSpec] | None = None,
                defer_until: Sequence[int] | None = None) -> Trainer | SideBySide:
    """The runs of ``group`` (run k on ``sets[k]``; regimes from the group's ``regime`` column) as one stack of
    the Byrd & Lipton CNN, or, with ``cfg.side_by_side`` S > 1, as S smaller stacks side by side
    (:class:`~iwshift.train.SideBySide`: one trainer of all the group's runs, in order)."""
    regimes = group["regime"].tolist()
    runs = StackedRuns(seeds=group["seed"].tolist(), train_index=np.stack([s.index for s in sets]),
                       example_weights=np.stack([s.weights for s in sets]),
                       l2=[cfg.l2 if r == "l2" else 0.0 for r in regimes],
                       dropout=[cfg.dropout if r == "dropout" else 0.0 for r in regimes],
                       loss=losses, defer_until=defer_until)
    batch_norm = {r == "batchnorm" for r in regimes}
    if len(batch_norm) != 1:
        raise ValueError("a stack mixes batch-norm and plain runs")
    precision = resolve_precision(cfg.precision, images.device)
    parts = np.array_split(np.arange(len(group)), min(cfg.side_by_side, len(group)))
    trainers = []
    for part in parts:  # (one part, the whole group, unless cfg.side_by_side > 1)
        part_runs = runs.select(part)
        model = StackedCNN(len(part), cfg.width, batch_norm=next(iter(batch_norm)), n_classes=n_classes,
                           dropout=part_runs.dropout, convolutions=cfg.convolutions)
        model.reset_parameters(part_runs.seeds)
        model.to(images.device)
        trainers.append(Trainer(model, part_runs, images, labels, lr=cfg.lr, momentum=cfg.momentum,
                                batch_size=cfg.batch_size, normalization=cfg.normalization, precision=precision,
                                channels_last=precision == "bf16", compile=cfg.compile,
                                image_normalization="cifar10"))
    return trainers[0] if len(trainers) == 1 else SideBySide(trainers)


class CnnStudy(Study):
    """A CIFAR-10 study: its configuration, and its data (given, or loaded from ``data_dir`` on first use without
    downloading: a submitit job's study arrives without its data). What is prepared on a device is kept for the
    study's next stacks."""

    def __init__(self, config: CnnConfig, data: Cifar10 | None = None, data_dir: str | None = None):
        self.config, self._data = config, data
        self.data_dir = str(Path(data_dir).resolve()) if data_dir is not None else None
        self.data_source = data.source if data is not None else "unknown"
        self._prepared: dict[str, Any] = {}

    def data(self) -> Cifar10:
        if getattr(self, "_data", None) is None:
            from .cifar_data import load_cifar10

            if self.data_dir is None:
                raise ValueError(f"the {self.name} study has neither its data nor a data folder")
            self._data = load_cifar10(self.data_dir, download=False)
        return self._data

    def prepared(self, device: str, make: Callable[[Cifar10], Any]) -> Any:
        """``make(data)``'s result for ``device``, made once (the data on the device, the pools, the target)."""
        cache = self.__dict__.setdefault("_prepared", {})
        if device not in cache:
            cache[device] = make(self.data())
        return cache[device]

    def record(self, device: str) -> dict[str, Any]:
        return {**super().record(device), "precision_used": resolve_precision(self.config.precision, device)}

    def check(self, out: Path) -> None:
        self.check_data(self.data())

    def check_data(self, data: Cifar10) -> None:
        """The checks that need the data (enough images of each class), before anything is trained or written."""
