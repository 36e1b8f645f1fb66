"""The CIFAR-10 extension: covariate shift (animal / vehicle) and multiclass label shift, with importance
weights that are known (``true``) or estimated, trained and recorded exactly like the binary study.

Covariate shift (``study="covariate"``)
    The task is animal (cat + dog, label 0) vs vehicle (automobile + truck, label 1). The source (training)
    set has skewed sub-populations, default 500 cats, 5,000 dogs, 500 automobiles, 5,000 trucks, so the
    class prior is unchanged and only p(x) shifts. The target is the CIFAR-10 *test* images of those four
    classes in their natural, balanced proportions, split in two halves under the data seed: the
    *unlabelled* half is all that the weight estimators see of the target, the *evaluation* half gives
    every reported target accuracy. No training image is ever in the target.
    Weights: ``none``; ``true`` (exact ratio p_t(g) / p_s(g) of the example's sub-population g);
    ``domain`` (a calibrated logistic-regression domain classifier); ``kliep`` (KLIEP; our implementation,
    since skada 0.6's KLIEP does not ascend its objective, see :class:`iwshift.weights.KLIEPWeights`);
    ``kmm`` (kernel mean matching, opt-in: it needs an n x n kernel). The estimators see the same low-dimensional
    features (``estimator_features``): by default the penultimate layer of the seed's unweighted network
    (weight source ``none``, regime ``none``), trained on the source -- what the sub-population shift (cats
    against dogs inside "animal") is visible in; or, as before, every image average-pooled to 8 x 8 x 3
    (``pixels``). Either is standardised and projected on its first ``feature_dims`` principal components
    (fitted on source + unlabelled target); the kernel estimators use the first ``kernel_dims`` of them. With
    the penultimate features the estimated runs train after the unweighted ones (a second phase), each seed
    from its own network.

Label shift (``study="label"``)
    All 10 classes. The source has a long-tailed prior: class c keeps ``per_class * imbalance**(-c/9)``
    training images (drawn without replacement); a held-out ``holdout`` fraction of it is kept apart for
    black-box estimation. The target is the CIFAR-10 test set (balanced), again split into an unlabelled
    half and an evaluation half. Weights: ``none``; ``true`` (p_t(y) / p_s(y)); ``bbse`` (black-box shift
    estimation with the confusion matrix of the seed's unweighted, unregularised model on the held-out
    source split); ``mlls`` (EM of Saerens et al. on that model's temperature-calibrated probabilities on
    the unlabelled target). Estimated weights are computed after the ``none`` runs finish, from their saved
    final logits.

Every estimated run's record holds its weights' quality against the true weights (error, rank correlation,
effective sample size); :meth:`ExtensionStudy.finish` gathers them into ``weights_<study>.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd
import torch

from . import health, metrics, results
from . import weights as iw
from .checks import ConfigError
from .cifar_data import Cifar10, require_training_images
from .cnn import CnnStudy, TrainingSet, cnn_trainer
from .config import CIFAR10_CLASSES, ExtensionConfig
from .sweep import StackPlan
from .train import Trainer, to_device_images

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

SUBPOPULATIONS = ("cat", "dog", "automobile", "truck")  # animal, animal, vehicle, vehicle
SUBPOPULATION_LABEL = {"cat": 0, "dog": 0, "automobile": 1, "truck": 1}
ESTIMATED = ("domain", "kliep", "kmm", "bbse", "mlls")
LABEL_ESTIMATED = ("bbse", "mlls")
BLACK_BOX = "the estimated weights are computed from the unweighted runs: add none to the weight sources and to --regimes"


# ------------------------------------------------------------------------------------------ data


@dataclass
class ShiftData:
    """Images on the device with task labels, the source pool and the target halves."""

    images: torch.Tensor        # uint8 (N, 3, 32, 32)
    labels: torch.Tensor        # task label of every image
    group: np.ndarray           # covariate: sub-population index 0..3 (-1 none); label: CIFAR class
    source: np.ndarray          # indices of the training (source) set
    holdout: np.ndarray         # indices of the held-out source split (label shift; empty otherwise)
    target_unlabelled: np.ndarray
    target_eval: np.ndarray
    probe: np.ndarray           # gradient-norm probe (source images)
    true_weights: np.ndarray    # exact importance weight of every image (1 outside the source)
    n_classes: int


def _split_target(index: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shuffled = rng.permutation(index)
    half = len(shuffled) // 2
    return np.sort(shuffled[:half]), np.sort(shuffled[half:])


def _probe(labels: np.ndarray, source: np.ndarray, per_class: int, n_classes: int,
           rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(source[labels[source] == c], min(per_class, int((labels[source] == c).sum())),
                        replace=False) for c in range(n_classes) if (labels[source] == c).any()]
    return np.sort(np.concatenate(picks))


def prepare_covariate(data: Cifar10, cfg: ExtensionConfig, device: torch.device | str) -> ShiftData:
    """Source with skewed sub-populations, target = the four classes' test images (see module doc)."""
    check_data(data, cfg)
    rng = np.random.default_rng(cfg.data_seed)
    classes = [CIFAR10_CLASSES.index(c) for c in SUBPOPULATIONS]
    chosen = [np.sort(rng.choice(np.flatnonzero(data.train.labels == c), count, replace=False))
              for c, count in zip(classes, cfg.source_counts)]
    train_idx = np.concatenate(chosen)
    test_idx = np.flatnonzero(np.isin(data.test.labels, classes))
    images = np.concatenate([data.train.images[train_idx], data.test.images[test_idx]])
    cifar = np.concatenate([data.train.labels[train_idx], data.test.labels[test_idx]])
    group = np.array([classes.index(c) for c in cifar])
    labels = np.array([SUBPOPULATION_LABEL[SUBPOPULATIONS[g]] for g in group])
    n_source = len(train_idx)
    source = np.arange(n_source)
    target = np.arange(n_source, len(images))
    unlabelled, evaluation = _split_target(target, rng)
    # exact ratio p_t(g) / p_s(g): the target has the sub-populations in natural (equal) proportions
    p_target = np.bincount(group[target], minlength=4) / len(target)
    p_source = np.bincount(group[source], minlength=4) / n_source
    true = np.ones(len(images))
    true[source] = (p_target / p_source)[group[source]]
    return ShiftData(to_device_images(images, device), torch.as_tensor(labels, device=device), group, source,
                     np.array([], np.int64), unlabelled, evaluation,
                     _probe(labels, source, cfg.probe_per_class, 2, rng), true, 2)


def long_tail_counts(per_class: int, imbalance: float, n_classes: int = 10) -> np.ndarray:
    """Images of class c: per_class * imbalance**(-c / (n_classes - 1)) (largest / smallest = imbalance)."""
    return np.maximum(1, np.round(per_class * imbalance ** (-np.arange(n_classes) / (n_classes - 1)))).astype(int)


def prepare_label(data: Cifar10, cfg: ExtensionConfig, device: torch.device | str) -> ShiftData:
    """Long-tailed source (minus a held-out split), balanced target (see module doc)."""
    check_data(data, cfg)
    rng = np.random.default_rng(cfg.data_seed)
    counts = long_tail_counts(cfg.per_class, cfg.imbalance)
    chosen = [rng.choice(np.flatnonzero(data.train.labels == c), count, replace=False) for c, count in enumerate(counts)]
    pool = np.sort(np.concatenate(chosen))
    images = np.concatenate([data.train.images[pool], data.test.images])
    labels = np.concatenate([data.train.labels[pool], data.test.labels])
    n_pool = len(pool)
    held = np.zeros(n_pool, bool)
    for c in range(10):  # a stratified held-out split, so every class is in both parts
        members = np.flatnonzero(labels[:n_pool] == c)
        held[rng.choice(members, max(1, int(round(cfg.holdout * len(members)))), replace=False)] = True
    source, holdout = np.flatnonzero(~held), np.flatnonzero(held)
    unlabelled, evaluation = _split_target(np.arange(n_pool, len(images)), rng)
    p_source = np.bincount(labels[source], minlength=10) / len(source)
    p_target = np.bincount(labels[n_pool:], minlength=10) / (len(images) - n_pool)
    true = np.ones(len(images))
    true[source] = (p_target / p_source)[labels[source]]
    return ShiftData(to_device_images(images, device), torch.as_tensor(labels, device=device), labels.copy(),
                     source, holdout, unlabelled, evaluation,
                     _probe(labels, source, cfg.probe_per_class, 10, rng), true, 10)


def check_data(data: Cifar10, cfg: ExtensionConfig) -> None:
    """The checks that need the data (enough training images per class), before anything is trained."""
    if cfg.study == "covariate":
        require_training_images(data, dict(zip(SUBPOPULATIONS, cfg.source_counts)), "source_counts")
    else:
        require_training_images(data, dict(zip(CIFAR10_CLASSES, long_tail_counts(cfg.per_class, cfg.imbalance))),
                                "per_class")


def prepare(data: Cifar10, cfg: ExtensionConfig, device: torch.device | str) -> ShiftData:
    return (prepare_covariate if cfg.study == "covariate" else prepare_label)(data, cfg, device)


# -------------------------------------------------------------------------------------- weights


def pooled_pixel_features(images: torch.Tensor, index: np.ndarray, dims: int) -> np.ndarray:
    """Images average-pooled to 8 x 8 x 3, flattened (192 numbers each); the caller projects them."""
    x = images[torch.as_tensor(index, device=images.device)].float() / 255.0
    return torch.nn.functional.avg_pool2d(x, 4).flatten(1).cpu().numpy().astype(np.float64)


def covariate_features(shift: ShiftData, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(source, unlabelled target) pooled pixels, standardised and projected (:func:`projected`)."""
    return projected(pooled_pixel_features(shift.images, shift.source, dims),
                     pooled_pixel_features(shift.images, shift.target_unlabelled, dims), dims)


def penultimate_features(logits_run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(source, unlabelled target) penultimate-layer features of a seed's unweighted run, as it saved them."""
    saved = results.read_arrays(logits_run / "features.npz")
    return saved["source"].astype(np.float64), saved["target_unlabelled"].astype(np.float64)


def projected(src: np.ndarray, tgt: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Features standardised and projected on their first ``dims`` principal components (fitted on source +
    unlabelled target)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    both = np.concatenate([src, tgt])
    scaler = StandardScaler().fit(both)
    pca = PCA(min(dims, both.shape[1]), random_state=0).fit(scaler.transform(both))
    return pca.transform(scaler.transform(src)), pca.transform(scaler.transform(tgt))


def finish_weights(raw: np.ndarray, cfg: ExtensionConfig) -> np.ndarray:
    """Clip, then (optionally) self-normalise estimated weights over the training set."""
    out = np.asarray(raw, np.float64)
    if np.isfinite(cfg.clip):
        out = iw.clip_weights(out, cfg.clip)
    return iw.self_normalize(out) if cfg.self_normalize else out


def estimate_covariate(src: np.ndarray, tgt: np.ndarray, cfg: ExtensionConfig, source_name: str) -> np.ndarray:
    """Estimated weights of the source images (aligned with ``shift.source``) from features of the source and the
    unlabelled target (already projected)."""
    if source_name == "domain":
        estimator = iw.DomainClassifierWeights(seed=cfg.data_seed).fit(src, tgt)
    elif source_name in ("kliep", "kmm"):  # kernel estimators: the first few components only
        k = cfg.kernel_dims
        src, tgt = src[:, :k], tgt[:, :k]
        estimator = (iw.KLIEPWeights(seed=cfg.data_seed) if source_name == "kliep" else iw.KMMWeights()).fit(src, tgt)
    else:
        raise ValueError(source_name)
    return finish_weights(estimator.weights(src), cfg)


def weight_report(name: str, estimated: np.ndarray, true: np.ndarray, **extra: Any) -> dict[str, Any]:
    """Error against the true weights and the effective sample size, for the weights table."""
    error = iw.weight_error(estimated, true)
    return {"weight_source": name, **{k: float(val) for k, val in error.items()},
            "ess": float(iw.effective_sample_size(estimated)),
            "ess_fraction": float(iw.effective_sample_size(estimated) / len(estimated)), **extra}


# -------------------------------------------------------------------------------------- the study


ID_COLUMNS = ["run", "study", "weight_source", "regime", "seed", "data_seed"]


def build_runs(cfg: ExtensionConfig) -> pd.DataFrame:
    rows = [dict(run=f"{cfg.study}_{source}_{regime}_s{seed}", study=cfg.study, weight_source=source,
                 regime=regime, seed=seed, data_seed=cfg.data_seed)
            for seed in cfg.seeds for regime in cfg.regimes for source in cfg.weight_sources]
    return pd.DataFrame(rows)


def black_box_run(cfg: ExtensionConfig, seed: int) -> str:
    """The seed's unweighted, unregularised run: what the estimators learn their features or logits from."""
    return f"{cfg.study}_none_none_s{seed}"


def from_network(cfg: ExtensionConfig, source: str) -> bool:
    """Whether a weight source is estimated from the seed's unweighted network (so it trains after it)."""
    return source in LABEL_ESTIMATED or (source in ESTIMATED and cfg.estimator_features == "penultimate")


def _evaluate(trainer: Trainer, shift: ShiftData, final: bool,
              keep: dict[str, np.ndarray], train_subsets: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    idx = torch.as_tensor(shift.target_eval, device=shift.images.device)
    logits = trainer.predict_logits(shift.images[idx])
    pred, y = logits.argmax(-1), shift.labels[idx]
    out.update(health.health_columns(trainer, train_subsets, shift.images, shift.labels, pred, shift.n_classes))
    out["target_accuracy"] = metrics.accuracy(pred, y).cpu().numpy()
    out["target_balanced_accuracy"] = metrics.balanced_accuracy(pred, y, shift.n_classes).cpu().numpy()
    groups = shift.group[shift.target_eval]
    names = SUBPOPULATIONS if shift.n_classes == 2 else CIFAR10_CLASSES
    per_group = []
    for g, name in enumerate(names):
        member = torch.as_tensor(groups == g, device=pred.device)
        acc = metrics.accuracy(pred[:, member], y[member]).cpu().numpy()
        out[f"target_accuracy_{name}"] = acc
        per_group.append(acc)
    out["target_worst_group_accuracy"] = np.min(per_group, axis=0)
    weighted, plain = trainer.class_gradient_norms(
        shift.images[torch.as_tensor(shift.probe, device=idx.device)],
        shift.labels[torch.as_tensor(shift.probe, device=idx.device)], shift.n_classes)
    out["grad_norm_mean_weighted"], out["grad_norm_mean"] = weighted.mean(1), plain.mean(1)
    if final:  # the black box of BBSE / MLLS: logits on the held-out source and the unlabelled target
        for name, index in (("holdout", shift.holdout), ("target_unlabelled", shift.target_unlabelled)):
            if len(index):
                keep[name] = trainer.predict_logits(shift.images[torch.as_tensor(index, device=idx.device)]).cpu().numpy()
    return out


def estimate_label(shift: ShiftData, logits: dict[str, np.ndarray], source_name: str) -> np.ndarray:
    """Class weights (10,) from the black-box model's saved logits."""
    holdout_labels = shift.labels.cpu().numpy()[shift.holdout]
    if source_name == "bbse":
        return iw.bbse_weights(logits["holdout"].argmax(1), holdout_labels,
                               logits["target_unlabelled"].argmax(1), shift.n_classes)
    temperature = iw.fit_temperature(logits["holdout"], holdout_labels)
    z = logits["target_unlabelled"] / temperature
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    prior = np.bincount(shift.labels.cpu().numpy()[shift.source], minlength=shift.n_classes) / len(shift.source)
    return iw.mlls_weights(probs, prior)


class ExtensionStudy(CnnStudy):
    """The study, declared for the runner: the grid of :func:`build_runs`; batch-norm runs and the others in
    stacks of their own; the runs whose weights come from the seed's unweighted network train in a second
    phase, reading what that run saved (its final logits and penultimate features)."""

    name = "cifar_extension"
    id_columns = ID_COLUMNS

    @property
    def label(self) -> str:
        return f"cifar {self.config.study} shift"

    def runs(self) -> pd.DataFrame:
        return build_runs(self.config)

    def stack_key(self, run: dict[str, Any]) -> Any:
        return run["regime"] == "batchnorm"

    def phase(self, run: dict[str, Any]) -> int:
        return int(from_network(self.config, run["weight_source"]))

    def check_data(self, data: Cifar10) -> None:
        check_data(data, self.config)

    def check_phases(self, out: Path) -> None:
        """The estimated weights need each seed's unweighted ``none`` run, trained here or before (no data needed)."""
        cfg = self.config
        needed = any(from_network(cfg, s) for s in cfg.weight_sources) and not (
            "none" in cfg.regimes and "none" in cfg.weight_sources)
        if needed and any(not (out / black_box_run(cfg, s) / "logits.npz").exists() for s in cfg.seeds):
            raise ConfigError(f"{cfg.study}_weights", BLACK_BOX)

    def check(self, out: Path) -> None:
        self.check_phases(out)
        super().check(out)

    def shift(self, device: str) -> ShiftData:
        return self.prepared(device, lambda data: prepare(data, self.config, torch.device(device)))

    def source_weights(self, name: str, seed: int, device: str, out: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """A run's weights of the source images (aligned with ``shift.source``) and, for an estimated source,
        their quality against the true weights."""
        cfg, shift = self.config, self.shift(device)
        true = shift.true_weights[shift.source]
        if name == "none":
            return np.ones(len(shift.source)), {}
        if name == "true":
            return true, {}
        labels = shift.labels.cpu().numpy()
        black_box = out / black_box_run(cfg, seed)
        if name in LABEL_ESTIMATED:
            if not (black_box / "logits.npz").exists():  # checked before training: the run diverged, or was deleted
                raise ConfigError("label_weights", _missing_black_box(out, black_box.name))
            class_w = estimate_label(shift, results.read_arrays(black_box / "logits.npz"), name)
            true_class = np.ones(shift.n_classes)
            present = np.unique(labels[shift.source])
            true_class[present] = [true[labels[shift.source] == c][0] for c in present]
            errors = iw.class_weight_error(class_w, true_class)
            weights = finish_weights(class_w[labels[shift.source]], cfg)
            return weights, weight_report(name, weights, true, seed=seed,
                                          class_weight_max_error=float(errors["max_abs_error"]),
                                          class_weights=" ".join(f"{w:.3f}" for w in class_w))
        if cfg.estimator_features == "pixels":  # the same for every seed: estimated once
            cache = self.__dict__.setdefault("_pixel_weights", {})
            if name not in cache:
                src, tgt = covariate_features(shift, cfg.feature_dims)
                cache[name] = estimate_covariate(src, tgt, cfg, name)
            weights = cache[name]
        else:
            if not (black_box / "features.npz").exists():
                raise ConfigError("covariate_weights", _missing_black_box(out, black_box.name))
            src, tgt = projected(*penultimate_features(black_box), cfg.feature_dims)
            weights = estimate_covariate(src, tgt, cfg, name)
        return weights, weight_report(name, weights, true, seed=seed, features=cfg.estimator_features)

    def build(self, group: pd.DataFrame, device: str, out: Path) -> StackPlan:
        cfg, shift = self.config, self.shift(device)
        rows = group.to_dict("records")
        weighted = [self.source_weights(r["weight_source"], r["seed"], device, out) for r in rows]
        sets = [TrainingSet(shift.source, w) for w, _ in weighted]
        reports = {r["run"]: report for r, (_, report) in zip(rows, weighted)}
        trainer = cnn_trainer(group, sets, shift.images, shift.labels, shift.n_classes, cfg)
        train_subsets = health.train_eval_subsets([(s.index, s.weights) for s in sets], len(shift.images),
                                                  seed=cfg.data_seed)
        kept: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        names = list(group["run"])
        # the seed's unweighted run keeps its penultimate features for the estimators
        features = [k for k, r in enumerate(rows) if r["weight_source"] == "none" and r["regime"] == "none"
                    and cfg.study == "covariate" and cfg.estimator_features == "penultimate"]

        def evaluate(trainer: Trainer) -> dict[str, np.ndarray]:
            keep: dict[str, np.ndarray] = {}
            measured = _evaluate(trainer, shift, trainer.epoch == cfg.epochs, keep, train_subsets)
            for name, array in keep.items():
                for k, run in enumerate(names):
                    kept.setdefault(run, {}).setdefault("logits.npz", {})[name] = array[k]
            if trainer.epoch == cfg.epochs and features:
                for name, index in (("source", shift.source), ("target_unlabelled", shift.target_unlabelled)):
                    values = predict_features(trainer, shift.images[torch.as_tensor(index, device=shift.images.device)])
                    for k in features:
                        kept.setdefault(names[k], {}).setdefault("features.npz", {})[name] = values[k]
            return measured

        return StackPlan(trainer, evaluate, arrays=lambda run: kept.get(run, {}),
                         record=lambda run: {"weights": reports[run]} if reports[run] else {})

    def finish(self, out: Path, table: pd.DataFrame) -> pd.DataFrame:
        """The weights table ``weights_<study>.csv``: each weight source's quality against the true weights (per
        seed for the estimated ones), from the runs' records."""
        cfg, shift = self.config, self.shift("cpu")
        true = shift.true_weights[shift.source]
        rows = [weight_report(source, np.ones(len(true)) if source == "none" else true, true)
                for source in cfg.weight_sources if source in ("none", "true")]
        for run in build_runs(cfg).itertuples():
            loaded = results.load_run(out, run.run)
            if loaded is not None and "weights" in loaded[1] and run.regime == cfg.regimes[0]:
                rows.append(loaded[1]["weights"])
        weights_table = pd.DataFrame(rows)
        weights_table.insert(0, "study", cfg.study)
        results.write_table(out / f"weights_{cfg.study}.csv", weights_table)
        seed = cfg.seeds[0]  # the estimated weights of one seed against the true ones, for the scatter figure
        scatter = {"true": true, "group": shift.group[shift.source],
                   **{name: self.source_weights(name, seed, "cpu", out)[0] for name in cfg.weight_sources
                      if name in ESTIMATED}}
        results.write_arrays(out / f"weights_{cfg.study}.npz", scatter)
        return weights_table


@torch.no_grad()
def predict_features(trainer: Any, inputs: torch.Tensor) -> np.ndarray:
    """(K, M, F) the penultimate layer of every run on the same inputs, evaluation mode (float32)."""
    parts = trainer.trainers if hasattr(trainer, "trainers") else [trainer]
    out = []
    for part in parts:
        part.model.eval()
        K = part.runs.n_models
        chunks = []
        for start in range(0, len(inputs), max(16, 2048 // K)):
            x = part._prepare(inputs[start:start + max(16, 2048 // K)])
            with part.autocast():
                chunks.append(part.model.penultimate(x.unsqueeze(0).expand(K, *x.shape)).float())
        out.append(torch.cat(chunks, 1))
    return torch.cat(out).cpu().numpy()


def _missing_black_box(out: Path, run: str) -> str:
    """Why the estimators have nothing to estimate from: the unweighted run ``run`` diverged, or its files are gone."""
    saved = results.load_run(out, run) if (out / run / "config.json").exists() else None
    if saved is not None and "diverged" in saved[0] and saved[0]["diverged"].astype(bool).any():
        epoch = int(saved[0].loc[saved[0]["diverged"].astype(bool), "epoch"].min())
        return (f"the estimated weights come from the final state of the unweighted run {run}, which diverged at "
                f"epoch {epoch} (its training loss became non-finite): lower --lr, or leave the estimators out")
    return (f"the estimated weights need {out / run}/ (logits.npz, features.npz), from the unweighted run; delete "
            f"that run's folder to retrain it")


# --------------------------------------------------------------------------------------- figures


CHANCE = {"covariate": 1 / 2, "label": 1 / 10}  # accuracy of guessing uniformly at random


def final_metrics_figure(table: pd.DataFrame, study: str) -> "plt.Figure":
    """Final target accuracy, worst-group (covariate: sub-population; label: class) and balanced accuracy
    per regime and weight source, mean ± 95 % interval over seeds (clipped to [0, 1]), with the chance
    level; runs that collapsed or diverged are left out and counted."""
    import matplotlib.pyplot as plt

    from . import plots

    part = table[table["study"] == study]
    last = part[part["epoch"] == part.groupby("run")["epoch"].transform("max")]
    metrics_shown = ["target_accuracy", "target_worst_group_accuracy", "target_balanced_accuracy"]
    fig, axes = plt.subplots(1, len(metrics_shown), figsize=(3.6 * len(metrics_shown), 3.0), sharey=True)
    for ax, metric in zip(axes, metrics_shown):
        plots.bars(last, metric, "regime", "weight_source", ax, chance=CHANCE[study])
        ax.set_title(metric.replace("target_", "target ").replace("_", " "), fontsize=9)
    axes[0].set_ylabel("final value")
    plots.legend_outside(fig, list(axes), title="weights")
    fig.suptitle(f"{study} shift: final target metrics (mean ± 95 % CI over seeds)")
    fig.tight_layout()
    return fig


def figures(table: pd.DataFrame, scatter: dict[str, np.ndarray] | None = None,
            study: str = "covariate") -> Iterator[tuple[str, "plt.Figure"]]:
    """Final target accuracy (overall, worst group) per weight source and regime, estimated vs true
    weights, and target accuracy against epoch (mean +- 95 % interval over seeds)."""
    import matplotlib.pyplot as plt

    from . import plots

    part = table[table["study"] == study]
    if len(part):
        yield f"{study}_final_target_accuracy", final_metrics_figure(part, study)
        yield f"{study}_accuracy_vs_epoch", plots.curves_by_panel(
            part, "target_accuracy", ["regime"], "weight_source", ylabel="target accuracy",
            chance=CHANCE[study], title=f"{study} shift: target accuracy against epoch")
    if scatter is not None and any(k in scatter for k in ESTIMATED):
        estimated = [k for k in ESTIMATED if k in scatter]
        fig, axes = plt.subplots(1, len(estimated), figsize=(3.6 * len(estimated), 3.2), squeeze=False)
        for ax, name in zip(axes[0], estimated):
            ax.scatter(scatter["true"], scatter[name], c=scatter["group"], s=4, alpha=0.4, cmap="tab10")
            hi = max(scatter["true"].max(), scatter[name].max())
            ax.plot([0, hi], [0, hi], "k:", lw=0.8)
            ax.set_xlabel("true weight")
            ax.set_ylabel(f"{name} estimate")
            ax.set_title(name, fontsize=9)
        fig.suptitle(f"{study} shift: estimated against true importance weights (training images)")
        fig.tight_layout()
        yield f"{study}_weights_scatter", fig
