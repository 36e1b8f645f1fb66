"""The CIFAR-10 binary label-shift study (Byrd & Lipton 2019; Vo & Truong 2025), composed from the package.

Two settings on a pair of classes (default cat vs dog; the second class is the *positive* one):
  * ``weighting``: the balanced training set, importance weight w on the positive class, w in a grid;
  * ``imbalance``: the positive:negative ratio r in a grid (one class subsampled without replacement
    under the data seed), each trained ``unweighted``, ``weighted`` (weights that correct to a balanced
    target: w_c = 0.5 / p_c) and ``weighted+l2``.
Regimes: ``none``, ``l2`` (weight decay), ``dropout`` (p on the two hidden FC layers), ``batchnorm``.

Each run writes ``<out>/<run>/metrics.csv`` then ``config.json`` (atomically; a run with both is
complete and skipped on rerun), and :func:`merge` builds one tidy table of all runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd
import torch

from . import checks as v
from . import health, metrics
from .cifar_data import Cifar10, require_training_images
from .cnn import CnnStudy, TrainingSet, cnn_trainer, split_validation, validation_metrics, validation_size
from .config import BINARY_PRESETS as PRESETS
from .config import CIFAR10_CLASSES, BinaryConfig
from .losses import REMEDIES
from .sweep import StackPlan
from .train import Trainer, to_device_images

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

VARIANTS = ("unweighted", "weighted", "weighted+l2")


def fmt(x: float) -> str:
    """A short exact name for a weight or ratio in a run's name: 0.03125 -> '1_32', 8.0 -> '8'."""
    return v.format_number(x).replace("/", "_")


# ------------------------------------------------------------------------------------ the runs


def build_runs(cfg: BinaryConfig) -> pd.DataFrame:
    """One row per run: its name and everything that distinguishes it."""
    rows = []
    suffix = lambda remedy: "" if remedy == "plain" else f"_{remedy}"  # noqa: E731
    for seed in cfg.seeds:
        if cfg.setting == "weighting":
            for regime in cfg.regimes:
                for w in cfg.weights:
                    for remedy in cfg.remedies:
                        rows.append(dict(run=f"weighting_w{fmt(w)}_{regime}{suffix(remedy)}_s{seed}",
                                         setting="weighting", weight=w, ratio=1.0,
                                         variant="weighted" if w != 1 else "unweighted", regime=regime,
                                         remedy=remedy, seed=seed))
        else:
            for r in cfg.ratios:
                for variant in VARIANTS:
                    if "plain" not in cfg.remedies and variant != "weighted":
                        continue
                    for remedy in cfg.remedies if variant == "weighted" else ["plain"]:
                        regime = "l2" if variant == "weighted+l2" else "none"
                        rows.append(dict(run=f"imbalance_r{fmt(r)}_{variant.replace('+', '_')}{suffix(remedy)}_s{seed}",
                                         setting="imbalance", weight=float("nan"), ratio=r, variant=variant,
                                         regime=regime, remedy=remedy, seed=seed))
    runs = pd.DataFrame(rows)
    runs.insert(1, "classes", "/".join(cfg.classes))
    runs["data_seed"] = cfg.data_seed
    return runs


def class_counts(ratio: float, per_class: int) -> tuple[int, int]:
    """(negatives, positives) with positives:negatives = ratio, the larger class kept whole."""
    if ratio >= 1:
        return max(1, round(per_class / ratio)), per_class
    return per_class, max(1, round(per_class * ratio))


@dataclass
class PairData:
    """The pair's images on the device, with the pools each run's training set is drawn from."""

    images: torch.Tensor       # uint8 (N, 3, 32, 32): the pair's training pool, then evaluation images
    labels: torch.Tensor       # 0 = negative, 1 = positive, -1 = not of the pair
    pool: dict[int, np.ndarray]  # class -> indices (into images) of its training pool
    test: torch.Tensor         # indices of the pair's test images
    other: torch.Tensor        # indices of other-class test images
    noise: torch.Tensor        # indices of noise images
    probe: torch.Tensor        # indices of the gradient-norm probe
    source_labels: np.ndarray  # original CIFAR-10 label of every image (-1 for noise)


def prepare_pair(data: Cifar10, cfg: BinaryConfig, device: torch.device | str) -> PairData:
    """Select the pair, label each image from its *own* class, subsample the pools (data seed), and move
    everything to the device once."""
    check_data(data, cfg)
    rng = np.random.default_rng(cfg.data_seed)
    neg, pos = (CIFAR10_CLASSES.index(c) for c in cfg.classes)
    pools = [np.sort(rng.choice(np.flatnonzero(data.train.labels == c), cfg.per_class, replace=False))
             for c in (neg, pos)]
    test_idx = np.flatnonzero(np.isin(data.test.labels, (neg, pos)))
    other_all = np.flatnonzero(~np.isin(data.test.labels, (neg, pos)))
    other_idx = np.sort(rng.choice(other_all, min(cfg.other_eval, len(other_all)), replace=False))
    noise = np.random.default_rng(cfg.data_seed + 1).integers(0, 256, (cfg.noise_eval, 32, 32, 3), dtype=np.uint8)
    images = np.concatenate([data.train.images[pools[0]], data.train.images[pools[1]],
                             data.test.images[test_idx], data.test.images[other_idx], noise])
    source = np.concatenate([data.train.labels[pools[0]], data.train.labels[pools[1]],
                             data.test.labels[test_idx], data.test.labels[other_idx],
                             np.full(len(noise), -1)])
    labels = np.where(source == pos, 1, np.where(source == neg, 0, -1))
    P = cfg.per_class
    offsets = np.cumsum([0, P, P, len(test_idx), len(other_idx), len(noise)])
    span = lambda i: torch.arange(offsets[i], offsets[i + 1], device=device)  # noqa: E731
    probe = np.concatenate([rng.choice(P, min(cfg.probe_per_class, P), replace=False),
                            P + rng.choice(P, min(cfg.probe_per_class, P), replace=False)])
    return PairData(images=to_device_images(images, device), labels=torch.as_tensor(labels, device=device),
                    pool={0: np.arange(0, P), 1: np.arange(P, 2 * P)}, test=span(2), other=span(3),
                    noise=span(4), probe=torch.as_tensor(np.sort(probe), device=device), source_labels=source)


def training_set(run: dict[str, Any], pair: PairData, cfg: BinaryConfig) -> TrainingSet:
    """Indices (into ``pair.images``) and importance weights of a run's training examples, after its
    remedy's changes to them (weight exponent; early stopping's held-out validation split)."""
    if run["setting"] == "weighting":
        index = np.concatenate([pair.pool[0], pair.pool[1]])
        weights = np.where(index >= cfg.per_class, run["weight"], 1.0)
        key = 0
    else:
        n_neg, n_pos = class_counts(run["ratio"], cfg.per_class)
        key = int(round(math.log2(run["ratio"]) * 1000)) % 2**31
        rng = np.random.default_rng([cfg.data_seed, key])
        index = np.sort(np.concatenate([rng.choice(pair.pool[0], n_neg, replace=False),
                                        rng.choice(pair.pool[1], n_pos, replace=False)]))
        n = n_neg + n_pos
        correcting = {0: 0.5 * n / n_neg, 1: 0.5 * n / n_pos}  # w_c = target prior / source prior
        if run["variant"] == "unweighted":
            weights = np.ones(n)
        else:
            weights = np.where(index >= cfg.per_class, correcting[1], correcting[0])
    remedy = REMEDIES[run.get("remedy", "plain")]
    weights = remedy.transform(weights, cfg)  # e.g. the weight exponent, at the plain weights' step
    if remedy.holdout:  # early stopping's held-out validation split
        return split_validation(index, weights, cfg.val_fraction, seed=[cfg.data_seed, key, 1])
    return TrainingSet(index, np.asarray(weights, np.float64))


def train_size(run: dict[str, Any], cfg: BinaryConfig) -> int:
    n = sum(class_counts(run["ratio"], cfg.per_class)) if run["setting"] == "imbalance" else 2 * cfg.per_class
    return n - (validation_size(n, cfg.val_fraction) if REMEDIES[run.get("remedy", "plain")].holdout else 0)


# --------------------------------------------------------------------------------- training


def _evaluate(trainer: Trainer, pair: PairData, train_subsets: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    logits = trainer.predict_logits(pair.images[pair.test])
    pred, y = logits.argmax(-1), pair.labels[pair.test]
    out.update(health.health_columns(trainer, train_subsets, pair.images, pair.labels, pred, 2))
    out["test_accuracy"] = metrics.accuracy(pred, y).cpu().numpy()
    out["test_balanced_accuracy"] = metrics.balanced_accuracy(pred, y).cpu().numpy()
    out["test_accuracy_negative"] = metrics.accuracy(pred[:, y == 0], y[y == 0]).cpu().numpy()
    out["test_accuracy_positive"] = metrics.accuracy(pred[:, y == 1], y[y == 1]).cpu().numpy()
    out["fraction_positive_pair"] = metrics.fraction_predicted(pred, 1).cpu().numpy()
    for name, idx in (("other", pair.other), ("noise", pair.noise)):
        if len(idx):
            out[f"fraction_positive_{name}"] = metrics.fraction_predicted(
                trainer.predict_logits(pair.images[idx]).argmax(-1), 1).cpu().numpy()
        else:
            out[f"fraction_positive_{name}"] = np.full(len(pred), np.nan)
    weighted, plain = trainer.class_gradient_norms(pair.images[pair.probe], pair.labels[pair.probe])
    for c, name in enumerate(("negative", "positive")):
        out[f"grad_norm_{name}_weighted"], out[f"grad_norm_{name}"] = weighted[:, c], plain[:, c]
    return out


ID_COLUMNS = ["run", "setting", "classes", "weight", "ratio", "variant", "regime", "remedy", "seed", "data_seed"]


def final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Each run's reported row: the last evaluated epoch, or for early stopping the evaluated epoch with
    the lowest importance-weighted validation loss (the best checkpoint)."""
    last = table["epoch"] == table.groupby("run")["epoch"].transform("max")
    if "remedy" not in table or "val_loss_weighted" not in table:
        return table[last]
    stopping = table["remedy"] == "early_stop"
    best = table[stopping].loc[lambda t: t.groupby("run")["val_loss_weighted"].idxmin()] if stopping.any() else table[stopping]
    return pd.concat([table[last & ~stopping], best]).sort_index()


def check_data(data: Cifar10, cfg: BinaryConfig) -> None:
    """The checks that need the data (enough images per class), before anything is trained or written."""
    require_training_images(data, {name: cfg.per_class for name in cfg.classes}, "per_class")


class BinaryStudy(CnnStudy):
    """The study, declared for the runner (:class:`iwshift.sweep.Runner`): the grid of :func:`build_runs`; runs of
    one architecture and training-set size share a stack (seeds, weights, regularisation and losses may differ
    within it); each evaluated epoch measures :func:`_evaluate`, the held-out loss of early stopping, and run
    health."""

    name = "cifar_binary"
    id_columns = ID_COLUMNS

    def __init__(self, config: BinaryConfig, data: Cifar10 | None = None, data_dir: str | None = None):
        super().__init__(config, data, data_dir)

    def runs(self) -> pd.DataFrame:
        return build_runs(self.config)

    @property
    def chunk_by(self) -> tuple[str, ...]:  # type: ignore[override]
        if self.config.setting == "weighting":
            return "regimes", "seeds", "weights", "remedies"
        return "ratios", "seeds", "remedies"

    def stack_key(self, run: dict[str, Any]) -> Any:
        return run["regime"] == "batchnorm", train_size(run, self.config)

    def train_size(self, run: dict[str, Any]) -> int:
        return train_size(run, self.config)

    def check_data(self, data: Cifar10) -> None:
        check_data(data, self.config)

    def build(self, group: pd.DataFrame, device: str, out: Path) -> StackPlan:
        cfg = self.config
        pair = self.prepared(device, lambda data: prepare_pair(data, cfg, torch.device(device)))
        rows = group.to_dict("records")
        sets = [training_set(run, pair, cfg) for run in rows]
        remedies = [REMEDIES[run["remedy"]] for run in rows]
        trainer = cnn_trainer(group, sets, pair.images, pair.labels, 2, cfg,
                              losses=[r.loss_spec(cfg) for r in remedies],
                              defer_until=[r.defer_until(cfg.epochs, cfg) for r in remedies])
        train_subsets = health.train_eval_subsets([(s.index, s.weights) for s in sets], len(pair.images),
                                                  seed=cfg.data_seed)

        def evaluate(trainer: Trainer) -> dict[str, np.ndarray]:
            out = _evaluate(trainer, pair, train_subsets)
            out["val_loss_weighted"] = validation_metrics(trainer, sets, pair.images, pair.labels)["val_loss_weighted"]
            return out

        return StackPlan(trainer, evaluate)


# ------------------------------------------------------------------------------------ figures


def figures(table: pd.DataFrame) -> Iterator[tuple[str, "plt.Figure"]]:
    """Yield each figure of the study with its file stem (mean +- 95 % interval over seeds)."""
    import matplotlib.pyplot as plt

    from . import plots

    plain = table[table["remedy"] == "plain"]
    weighting = plain[plain["setting"] == "weighting"]
    if len(weighting):
        order = [v.format_number(w) for w in sorted(weighting["weight"].unique())]
        labels = pd.Categorical(weighting["weight"].map(v.format_number), categories=order, ordered=True)
        weighting = weighting.assign(w=labels)  # categorical: panels and legends in numeric order
        cmap = plt.get_cmap("coolwarm", len(order))
        colors = {w: cmap(i) for i, w in enumerate(order)}
        for regime, part in weighting.groupby("regime", sort=False):
            fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
            for ax, where in zip(axes, ("pair", "other", "noise")):
                plots.curves_by_panel(part.assign(panel=where), f"fraction_positive_{where}", ["panel"], "w",
                                      colors=colors, axes=[ax], ylabel="fraction predicted positive")
            fig.suptitle(f"{regime}: fraction predicted positive against epoch, per weight on the positive class")
            fig.tight_layout()
            yield f"fraction_vs_epoch_{regime}", fig
        yield "final_fraction_vs_weight", plots.curves_by_panel(
            final_rows(weighting), "fraction_positive_pair", ["regime"], "setting", x="weight",
            ylabel="final fraction predicted positive", reference=0.5, value_ticks=True,
            title="final fraction of pair test images predicted positive against weight")
        grad = part_melt(weighting[weighting["weight"] != 1])
        if isinstance(grad["w"].dtype, pd.CategoricalDtype):  # no empty panel for the weight 1
            grad = grad.assign(w=grad["w"].cat.remove_unused_categories())
        regimes, columns = list(dict.fromkeys(grad["regime"])), grad["w"].nunique()
        if len(grad):  # a grid of the weight 1 alone has no weighted gradient to show
            fig, axes = plt.subplots(len(regimes), columns, figsize=(2.4 * columns, 2.2 * len(regimes)),
                                     squeeze=False, sharex=True)
            for row, regime in zip(axes, regimes):  # rows: regime; columns: weight
                plots.curves_by_panel(grad[grad["regime"] == regime], "norm", ["regime", "w"], "class", axes=row,
                                      ylabel="gradient norm")
                for ax in row:
                    ax.set_yscale("log")
            fig.suptitle("norm of the weighted loss gradient from each class's probe images")
            fig.tight_layout()
            yield "gradient_norms", fig
    imbalance = plain[plain["setting"] == "imbalance"]
    if len(imbalance):
        last = final_rows(imbalance)
        fig, axes = plt.subplots(1, 2, figsize=(8, 3))
        plots.curves_by_panel(last.assign(panel="fraction"), "fraction_positive_pair", ["panel"], "variant",
                              x="ratio", axes=[axes[0]], ylabel="final fraction predicted positive", reference=0.5,
                              value_ticks=True)
        plots.curves_by_panel(last.assign(panel="balanced accuracy"), "test_balanced_accuracy", ["panel"],
                              "variant", x="ratio", axes=[axes[1]], ylabel="final balanced accuracy",
                              value_ticks=True, chance=0.5)
        fig.suptitle("imbalance: positive:negative training ratio")
        fig.tight_layout()
        yield "imbalance", fig
    if table["remedy"].nunique() > 1:  # remedies against plain weighted cross-entropy
        final = final_rows(table)
        for setting, x, metric, label in (("weighting", "weight", "fraction_positive_pair", "final fraction predicted positive"),
                                           ("imbalance", "ratio", "test_balanced_accuracy", "final balanced accuracy")):
            part = final[(final["setting"] == setting) & (final["variant"] != "weighted+l2")]
            if setting == "imbalance":
                part = part[part["variant"] == "weighted"]
            if part["remedy"].nunique() > 1:
                yield f"remedies_{setting}", plots.curves_by_panel(
                    part.assign(panel=setting), metric, ["panel"], "remedy", x=x, ylabel=label,
                    reference=0.5 if setting == "weighting" else None, value_ticks=True,
                    chance=0.5 if setting == "imbalance" else None,
                    title=f"remedies, {setting} setting (early_stop: best validation checkpoint)")


def part_melt(table: pd.DataFrame) -> pd.DataFrame:
    ids = ["regime", "w", "seed", "epoch"] + [c for c in ("run", "status") if c in table]
    return table.melt(id_vars=ids,
                      value_vars=["grad_norm_negative_weighted", "grad_norm_positive_weighted"],
                      var_name="class", value_name="norm").replace(
        {"grad_norm_negative_weighted": "negative", "grad_norm_positive_weighted": "positive"})
