"""Sweeps of CNN runs: the shared configuration, training a stack of runs, and the per-run results format.

Every CIFAR study (binary, extension) describes its grid as a table of runs and says, for a group of
runs, which images each trains on with which weights and what to measure; this module does the rest, the
same way for all: stacks of K runs through the one :class:`~iwshift.train.Trainer`, ``<out>/<run>/
metrics.csv`` then ``config.json`` (atomically; a run with both is complete and skipped on rerun), and
:func:`merge` into one tidy table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import config as v
from . import results
from .config import ConfigError
from .models import StackedCNN
from .train import LossSpec, StackedRuns, Trainer

from .choices import CNN_REGIMES as REGIMES  # noqa: E402
# Measured here (2 cores, AVX-512 bf16; benchmarks/bench_cifar.py): bf16 autocast + channels_last trains the
# stacked CNN 2.4x faster than fp32 at width 1/4 (K = 21) and 1.6x at full width (K = 1). See README, "Speed".
CPU_PRECISION = "bf16"


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto``: bf16 autocast + channels_last on CUDA; on CPU, :data:`CPU_PRECISION` (measured)."""
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cuda" else CPU_PRECISION


@dataclass
class CnnConfig:
    """What every CNN study shares: regimes, seeds, model, optimiser, evaluation schedule."""

    regimes: Sequence[str] = REGIMES
    seeds: Sequence[int] = (0, 1, 2)
    data_seed: int = 0
    width: float = 1.0               # CNN width multiplier
    epochs: int = 500
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 16
    l2: float = 1e-3                 # weight decay of the l2 regime
    dropout: float = 0.5             # on the two hidden fully connected layers, in the dropout regime
    normalization: str = "weight_sum"
    precision: str = "auto"          # auto (see resolve_precision) | fp32 | bf16 (autocast + channels_last)
    compile: bool = False            # torch.compile the stacked model (CUDA)
    probe_per_class: int = 64        # training images per class for the gradient norms
    eval_every: int = 0              # 0: dense early then sparser (see eval_epochs); k: 1, 2, 3, 5, 7, k, 2k, ...
    max_stack: int = 84              # runs trained together in one stack at most (a GPU wants many)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.regimes = v.all_of("regimes", self.regimes, REGIMES)
        self.seeds = v.seeds_list("seeds", self.seeds)
        self.data_seed = v.at_least("data_seed", self.data_seed, 0)
        self.width = v.positive_finite("width", self.width)
        self.epochs = v.at_least("epochs", self.epochs, 1)
        self.lr = v.positive_finite("lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ConfigError("momentum", f"must be in [0, 1) (got {self.momentum:g})")
        self.batch_size = v.at_least("batch_size", self.batch_size, 1)
        self.l2 = v.non_negative_finite("l2", self.l2)
        self.dropout = v.probability_below_one("dropout", self.dropout)
        self.normalization = v.one_of("normalization", self.normalization, ("mean", "weight_sum"))
        self.precision = v.one_of("precision", self.precision, ("auto", "fp32", "bf16"))
        self.probe_per_class = v.at_least("probe_per_class", self.probe_per_class, 1)
        self.eval_every = v.at_least("eval_every", self.eval_every, 0)
        self.max_stack = v.at_least("max_stack", self.max_stack, 1)

    def eval_epochs(self) -> list[int]:
        """Dense early, sparser later: every epoch up to 10, every 5th to 50, every 10th to 200, and
        every 25th (or epochs 1, 2, 3, 5, 7 and every ``eval_every``-th); always the last."""
        if self.eval_every:
            epochs = {1, 2, 3, 5, 7} | set(range(self.eval_every, self.epochs + 1, self.eval_every))
        else:
            epochs = {e for e in range(1, self.epochs + 1)
                      if e <= 10 or (e <= 50 and e % 5 == 0) or (e <= 200 and e % 10 == 0) or e % 25 == 0}
        return sorted(e for e in epochs | {self.epochs} if e <= self.epochs)


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


def split_validation(index: np.ndarray, weights: np.ndarray, labels: np.ndarray, fraction: float,
                     seed: Any) -> TrainingSet:
    """Hold out a random ``fraction`` of a training set (with its weights) for early stopping."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(index), bool)
    held[rng.choice(len(index), validation_size(len(index), fraction), replace=False)] = True
    return TrainingSet(index[~held], np.asarray(weights, np.float64)[~held], index[held],
                       np.asarray(weights, np.float64)[held])


def validation_losses(trainer: Trainer, sets: Sequence[TrainingSet], images: torch.Tensor,
                      labels: torch.Tensor) -> np.ndarray:
    """Importance-weighted validation loss of each run on its own held-out split (NaN without one):
    sum_i w_i l_i / sum_i w_i over the split, evaluation mode."""
    out = np.full(len(sets), np.nan)
    held = [s.val_index for s in sets if s.val_index is not None]
    if not held:
        return out
    union = np.unique(np.concatenate(held))  # sorted: a split's columns are found by searchsorted
    union_t = torch.as_tensor(union, device=images.device)
    logits = trainer.predict_logits(images[union_t])
    per_example = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), labels[union_t].repeat(len(sets)), reduction="none").view(len(sets), -1)
    per_example = per_example.cpu().numpy()
    for k, s in enumerate(sets):
        if s.val_index is not None:
            cols = np.searchsorted(union, s.val_index)
            out[k] = float(np.sum(s.val_weights * per_example[k, cols]) / np.sum(s.val_weights))
    return out


def class_weight_matrix(sets: Sequence[tuple[np.ndarray, np.ndarray]], labels: np.ndarray,
                        n_classes: int) -> np.ndarray:
    """(K, C) mean importance weight of each class's training examples in each run (the class weight
    when weights are per class)."""
    out = np.zeros((len(sets), n_classes))
    for k, (index, weights) in enumerate(sets):
        for c in range(n_classes):
            member = labels[index] == c
            out[k, c] = weights[member].mean() if member.any() else 0.0
    return out


def train_stack(
    group: pd.DataFrame,
    sets: Sequence[TrainingSet | tuple[np.ndarray, np.ndarray]],
    images: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    cfg: CnnConfig,
    evaluate: Callable[[Trainer, torch.Tensor], dict[str, np.ndarray]],
    id_columns: Sequence[str],
    progress: Any = None,
    losses: Sequence[LossSpec] | None = None,
    defer_until: Sequence[int] | None = None,
) -> dict[str, pd.DataFrame]:
    """Train the runs of ``group`` together (run k on ``sets[k]`` = (image indices, weights)) and return
    each run's tidy metrics table: ``id_columns`` of the group, the epoch, the epoch's running train
    loss (weighted and not) and accuracy, and whatever ``evaluate(trainer, class_weights)`` measures."""
    K = len(group)
    regimes = group["regime"].tolist()
    sets = [s if isinstance(s, TrainingSet) else TrainingSet(*s) for s in sets]
    runs = StackedRuns(seeds=group["seed"].tolist(), train_index=np.stack([s.index for s in sets]),
                       example_weights=np.stack([s.weights for s in sets]),
                       l2=[cfg.l2 if r == "l2" else 0.0 for r in regimes],
                       dropout=[cfg.dropout if r == "dropout" else 0.0 for r in regimes],
                       loss=losses, defer_until=defer_until)
    batch_norm = {r == "batchnorm" for r in regimes}
    if len(batch_norm) != 1:
        raise ValueError("a stack mixes batch-norm and plain runs")
    model = StackedCNN(K, cfg.width, batch_norm=batch_norm.pop(), n_classes=n_classes, dropout=runs.dropout)
    model.reset_parameters(runs.seeds)
    model.to(images.device)
    precision = resolve_precision(cfg.precision, images.device)
    trainer = Trainer(model, runs, images, labels, lr=cfg.lr, momentum=cfg.momentum, batch_size=cfg.batch_size,
                      normalization=cfg.normalization, precision=precision, channels_last=precision == "bf16",
                      compile=cfg.compile, image_normalization="cifar10")
    class_weights = torch.tensor(class_weight_matrix(sets, labels.cpu().numpy(), n_classes),
                                 dtype=torch.float32, device=images.device)
    evals = set(cfg.eval_epochs())
    frames = []
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        stats = trainer.train_epoch()
        if progress is not None:
            progress.update(K)
        if epoch not in evals:
            continue
        frame = group[list(id_columns)].copy()
        frame["epoch"] = epoch
        frame["train_loss_weighted"], frame["train_loss"] = stats.loss_weighted, stats.loss
        frame["train_accuracy"] = stats.accuracy
        for name, values in evaluate(trainer, class_weights).items():
            frame[name] = values
        frame["seconds"] = time.perf_counter() - start
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    return {name: part.reset_index(drop=True) for name, part in table.groupby("run", sort=False)}


def is_complete(out: Path, run: str) -> bool:
    return (out / run / "config.json").exists() and (out / run / "metrics.csv").exists()


def run_stacks(
    runs: pd.DataFrame, out: str | Path, groups: Callable[[pd.DataFrame], Iterable[pd.DataFrame]],
    train_group: Callable[[pd.DataFrame, Any], dict[str, pd.DataFrame]], record: dict[str, Any],
    epochs: int, progress: bool = True, desc: str = "sweep",
) -> pd.DataFrame:
    """Train, stack by stack, the runs without complete results in ``out``; write each run's
    ``metrics.csv`` then ``config.json`` (its row of ``runs`` + ``record``); return the merged table."""
    from tqdm.auto import tqdm

    out = Path(out)
    todo = runs[[not is_complete(out, r) for r in runs["run"]]]
    if len(todo):
        stacks = list(groups(todo))
        bar = tqdm(total=len(todo) * epochs, unit="run-epoch", desc=desc, disable=not progress, unit_scale=True)
        for number, group in enumerate(stacks, 1):
            t0 = time.perf_counter()
            tables = train_group(group, bar)
            for _, run in group.iterrows():
                folder = out / run["run"]
                results.write_table(folder / "metrics.csv", tables[run["run"]])
                results.write_json(folder / "config.json",
                                   {"run": run.to_dict(), "stack_size": len(group), **record})
            if not progress:  # a line per stack where there is no progress bar (logs, batch jobs)
                print(f"{desc}: stack {number}/{len(stacks)}: {len(group)} runs x {epochs} epochs in "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)
        bar.close()
    return merge(out, runs["run"])


def merge(out: str | Path, names: Sequence[str] | None = None) -> pd.DataFrame:
    """One tidy table of the complete runs in ``out`` (all of them, or those named)."""
    out = Path(out)
    if names is None:
        names = sorted(p.name for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
    tables = [results.read_table(out / n / "metrics.csv") for n in names if is_complete(out, n)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def config_record(cfg: Any, data_source: str, device: str) -> dict[str, Any]:
    """What every run's ``config.json`` holds besides its own row: config, data, environment."""
    return {"config": asdict(cfg), "data": data_source, "precision_used": resolve_precision(cfg.precision, device),
            **results.environment(str(device))}


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device without CUDA is a bad argument."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError("device", f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{name} requested but CUDA is not available")
    return name


def preset_fields(values: dict[str, Any], defaults: dict[str, Any], fields: dict[str, str],
                  presets: dict[str, dict[str, Any]], device: str,
                  argv: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
    """Config fields from a script's constants: the preset (``auto``: paper on CUDA, cpu otherwise)
    fills every field whose flag was not given explicitly. Returns (preset name, fields)."""
    preset = values["PRESET"]
    if preset == "auto":
        preset = "paper" if device.startswith("cuda") else "cpu"
    v.one_of("preset", preset, presets)
    given = v.flags_given(argv, fields)
    explicit = {field_name for const, field_name in fields.items()
                if const in given or values[const] != defaults[const]}
    chosen = {field_name: values[const] for const, field_name in fields.items()}
    chosen.update({k: val for k, val in presets[preset].items() if k not in explicit})
    return preset, chosen
