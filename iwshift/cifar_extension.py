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
    ``kmm`` (skada's kernel mean matching, opt-in: it needs an n x n kernel). The estimators see the same
    low-dimensional features: every image average-pooled to 8 x 8 x 3, standardised
    and projected on the first ``feature_dims`` principal components (fitted on source + unlabelled target);
    the kernel estimator uses the first ``kernel_dims`` of them.

Label shift (``study="label"``)
    All 10 classes. The source has a long-tailed prior: class c keeps ``per_class * imbalance**(-c/9)``
    training images (drawn without replacement); a held-out ``holdout`` fraction of it is kept apart for
    black-box estimation. The target is the CIFAR-10 test set (balanced), again split into an unlabelled
    half and an evaluation half. Weights: ``none``; ``true`` (p_t(y) / p_s(y)); ``bbse`` (black-box shift
    estimation with the confusion matrix of the seed's unweighted, unregularised model on the held-out
    source split); ``mlls`` (EM of Saerens et al. on that model's temperature-calibrated probabilities on
    the unlabelled target). Estimated weights are computed after the ``none`` runs finish, from their saved
    final logits, and are recorded with their error against the true weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd
import torch

from . import config as v
from . import metrics, results, sweep
from . import weights as iw
from .cifar_data import CIFAR10_CLASSES, Cifar10, require_training_images
from .config import ConfigError
from .train import Trainer, to_device_images

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

from .choices import COVARIATE_SOURCES, LABEL_SOURCES  # noqa: E402
from .choices import EXTENSION_PRESETS as PRESETS  # noqa: E402
from .choices import EXTENSION_STUDIES as STUDIES  # noqa: E402

COVARIATE_DEFAULT = ("none", "true", "domain", "kliep")  # kmm (skada) needs an n x n kernel: opt in
SUBPOPULATIONS = ("cat", "dog", "automobile", "truck")  # animal, animal, vehicle, vehicle
SUBPOPULATION_LABEL = {"cat": 0, "dog": 0, "automobile": 1, "truck": 1}
ESTIMATED = ("domain", "kliep", "kmm", "bbse", "mlls")


@dataclass
class ExtensionConfig(sweep.CnnConfig):
    study: str = "covariate"
    weight_sources: Sequence[str] = ()          # default: every source of the study
    source_counts: Sequence[int] = (500, 5000, 500, 5000)  # cats, dogs, automobiles, trucks
    imbalance: float = 10.0                      # label shift: largest / smallest class count
    per_class: int = 5000                        # label shift: images of the largest class
    holdout: float = 0.2                         # label shift: held-out source fraction (BBSE, calibration)
    feature_dims: int = 16                       # covariate estimators: principal components of pooled pixels
    kernel_dims: int = 5                         # ... of which the kernel estimator uses the first few
    clip: float = float("inf")                   # estimated weights clipped at this value
    self_normalize: bool = True                  # estimated weights rescaled to mean 1 on the training set

    def __post_init__(self) -> None:
        super().__post_init__()
        self.study = v.one_of("study", self.study, STUDIES)
        allowed = COVARIATE_SOURCES if self.study == "covariate" else LABEL_SOURCES
        default = COVARIATE_DEFAULT if self.study == "covariate" else LABEL_SOURCES
        flag = f"{self.study}_weights"  # the scripts' flag: --covariate-weights / --label-weights
        self.weight_sources = v.all_of(flag, list(self.weight_sources) or list(default), allowed)
        counts = [v.at_least("source_counts", c, 1) for c in self.source_counts]
        if len(counts) != 4:
            raise ConfigError("source_counts", f"needs 4 counts (cat, dog, automobile, truck), got {len(counts)}")
        self.source_counts = counts
        if not (np.isfinite(self.imbalance) and self.imbalance >= 1):
            raise ConfigError("imbalance", f"must be finite and >= 1 (got {self.imbalance:g})")
        self.per_class = v.at_least("per_class", self.per_class, 10)
        if not 0 < self.holdout < 1:
            raise ConfigError("holdout", f"must be in (0, 1) (got {self.holdout:g})")
        self.feature_dims = v.at_least("feature_dims", self.feature_dims, 1)
        self.kernel_dims = v.at_least("kernel_dims", self.kernel_dims, 1)
        if self.kernel_dims > self.feature_dims:
            raise ConfigError("kernel_dims", f"must be <= --feature-dims ({self.feature_dims})")
        if not self.clip > 0:
            raise ConfigError("clip", f"must be > 0 (got {self.clip:g})")


def with_preset(cfg: ExtensionConfig, preset: str) -> ExtensionConfig:
    v.one_of("preset", preset, PRESETS)
    return replace(cfg, **PRESETS[preset])


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


def covariate_features(shift: ShiftData, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, unlabelled target, all-source) features: pooled pixels, standardised, PCA(dims) fitted
    on source + unlabelled target."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    src = pooled_pixel_features(shift.images, shift.source, dims)
    tgt = pooled_pixel_features(shift.images, shift.target_unlabelled, dims)
    scaler = StandardScaler().fit(np.concatenate([src, tgt]))
    pca = PCA(dims, random_state=0).fit(scaler.transform(np.concatenate([src, tgt])))
    return pca.transform(scaler.transform(src)), pca.transform(scaler.transform(tgt)), src


def finish_weights(raw: np.ndarray, cfg: ExtensionConfig) -> np.ndarray:
    """Clip, then (optionally) self-normalise estimated weights over the training set."""
    out = np.asarray(raw, np.float64)
    if np.isfinite(cfg.clip):
        out = iw.clip_weights(out, cfg.clip)
    return iw.self_normalize(out) if cfg.self_normalize else out


def estimate_covariate(shift: ShiftData, cfg: ExtensionConfig, source_name: str) -> np.ndarray:
    """Estimated weights of the source images (aligned with ``shift.source``)."""
    src, tgt, _ = covariate_features(shift, cfg.feature_dims)
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


# -------------------------------------------------------------------------------------- training


ID_COLUMNS = ["run", "study", "weight_source", "regime", "seed", "data_seed"]


def build_runs(cfg: ExtensionConfig) -> pd.DataFrame:
    rows = [dict(run=f"{cfg.study}_{source}_{regime}_s{seed}", study=cfg.study, weight_source=source,
                 regime=regime, seed=seed, data_seed=cfg.data_seed)
            for seed in cfg.seeds for regime in cfg.regimes for source in cfg.weight_sources]
    return pd.DataFrame(rows)


def stacks(runs: pd.DataFrame, cfg: ExtensionConfig) -> Iterator[pd.DataFrame]:
    for _, group in runs.groupby(runs["regime"] == "batchnorm", sort=False):
        for start in range(0, len(group), cfg.max_stack):
            yield group.iloc[start:start + cfg.max_stack]


def _evaluate(trainer: Trainer, shift: ShiftData, class_weights: torch.Tensor, final: bool,
              keep: dict[str, np.ndarray], train_subsets: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    idx = torch.as_tensor(shift.target_eval, device=shift.images.device)
    logits = trainer.predict_logits(shift.images[idx])
    pred, y = logits.argmax(-1), shift.labels[idx]
    out.update(sweep.health_columns(trainer, train_subsets, shift.images, shift.labels, pred, shift.n_classes))
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
        shift.labels[torch.as_tensor(shift.probe, device=idx.device)], class_weights, shift.n_classes)
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


BLACK_BOX = "bbse/mlls are estimated from the unweighted runs: add none to --label-weights and to --regimes"


def _missing_black_box(out: Path, run: str) -> str:
    """Why bbse/mlls have no final logits of the unweighted run ``run`` to estimate from."""
    saved = sweep.load_run(out, run)
    if saved is not None and "diverged" in saved[0] and saved[0]["diverged"].astype(bool).any():
        epoch = int(saved[0].loc[saved[0]["diverged"].astype(bool), "epoch"].min())
        return (f"bbse/mlls are estimated from the final logits of the unweighted run {run}, which diverged at "
                f"epoch {epoch} (its training loss became non-finite): lower --lr, or leave bbse/mlls out")
    return (f"bbse/mlls need {out / run / 'logits.npz'}, the final logits of the unweighted run; delete that "
            f"run's folder to retrain it")


def check_black_box(cfg: ExtensionConfig, out: Path) -> None:
    """bbse/mlls need each seed's unweighted ``none`` run (its saved final logits), trained here or before."""
    if not any(s in ("bbse", "mlls") for s in cfg.weight_sources):
        return
    if "none" in cfg.regimes and "none" in cfg.weight_sources:
        return
    missing = [s for s in cfg.seeds if not (out / f"{cfg.study}_none_none_s{s}" / "logits.npz").exists()]
    if missing:
        raise ConfigError("label_weights", BLACK_BOX)


def run_study(data: Cifar10, cfg: ExtensionConfig, out: str | Path, device: str = "cpu",
              progress: bool = True, overwrite: bool = False,
              checkpoint_every: int = sweep.CHECKPOINT_EVERY) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train the grid (estimated label-shift weights after the ``none`` runs); return the merged metrics
    table and the weights table (error against the truth and effective sample size per weight source).
    Resume, ``overwrite``, progress and checkpoints as in :func:`iwshift.cifar_binary.run_sweep`."""
    out = Path(out)
    check_data(data, cfg)
    check_black_box(cfg, out)
    record = sweep.config_record(cfg, data.source, device)
    runs = build_runs(cfg)
    sweep.todo_runs(runs, out, record, overwrite, desc=None)  # a stale saved run: an error before anything is trained
    shift = prepare(data, cfg, torch.device(device))
    labels = shift.labels.cpu().numpy()
    source_weights: dict[str, np.ndarray] = {"none": np.ones(len(shift.source)),
                                             "true": shift.true_weights[shift.source]}
    reports = [weight_report(n, w, source_weights["true"]) for n, w in source_weights.items()
               if n in cfg.weight_sources]
    if cfg.study == "covariate":
        for name in cfg.weight_sources:
            if name in ESTIMATED:
                source_weights[name] = estimate_covariate(shift, cfg, name)
                reports.append(weight_report(name, source_weights[name], source_weights["true"]))

    def train_group(group: pd.DataFrame, on_epoch: Any, checkpoint: Any) -> dict[str, pd.DataFrame]:
        sets = [(shift.source, run_weights[(r.weight_source, r.seed)]) for r in group.itertuples()]
        final_logits: dict[str, dict[str, np.ndarray]] = {}
        last = cfg.epochs
        train_subsets = sweep.train_eval_subsets(sets, len(shift.images), seed=cfg.data_seed)

        def evaluate(trainer: Trainer, class_w: torch.Tensor) -> dict[str, np.ndarray]:
            keep: dict[str, np.ndarray] = {}
            measured = _evaluate(trainer, shift, class_w, trainer.epoch == last, keep, train_subsets)
            for name, array in keep.items():
                for k, run in enumerate(group["run"]):
                    final_logits.setdefault(run, {})[name] = array[k]
            return measured

        tables = sweep.train_stack(group, sets, shift.images, shift.labels, shift.n_classes, cfg, evaluate,
                                   ID_COLUMNS, on_epoch, checkpoint=checkpoint)
        for run, arrays in final_logits.items():
            results.write_arrays(out / run / "logits.npz", arrays)
        return tables

    run_weights = {(name, seed): source_weights[name] for name in source_weights for seed in cfg.seeds}
    first = runs[~runs["weight_source"].isin(["bbse", "mlls"])]
    options = dict(overwrite=overwrite, checkpoint_every=checkpoint_every)
    sweep.run_stacks(first, out, lambda todo: stacks(todo, cfg), train_group, record, cfg.epochs, progress,
                     desc=f"cifar {cfg.study} shift", **options)
    second = runs[runs["weight_source"].isin(["bbse", "mlls"])]
    if len(second):
        true_class = np.ones(shift.n_classes)
        true_class[np.unique(labels[shift.source])] = [shift.true_weights[shift.source][labels[shift.source] == c][0]
                                                       for c in np.unique(labels[shift.source])]
        for seed in cfg.seeds:
            black_box = out / f"{cfg.study}_none_none_s{seed}" / "logits.npz"
            if not black_box.exists():  # checked before training: the run diverged, or the file was deleted
                raise ConfigError("label_weights", _missing_black_box(out, black_box.parent.name))
            logits = results.read_arrays(black_box)
            for name in second["weight_source"].unique():
                class_w = estimate_label(shift, logits, name)
                errors = iw.class_weight_error(class_w, true_class)
                run_weights[(name, seed)] = finish_weights(class_w[labels[shift.source]], cfg)
                reports.append(weight_report(name, run_weights[(name, seed)], source_weights["true"], seed=seed,
                                             class_weight_max_error=float(errors["max_abs_error"]),
                                             class_weights=" ".join(f"{w:.3f}" for w in class_w)))
        sweep.run_stacks(second, out, lambda todo: stacks(todo, cfg), train_group, record, cfg.epochs, progress,
                         desc=f"cifar {cfg.study} shift (estimated weights)", **options)
    weights_table = pd.DataFrame(reports)
    weights_table.insert(0, "study", cfg.study)
    results.write_table(out / f"weights_{cfg.study}.csv", weights_table)
    scatter = {"true": source_weights["true"], "group": shift.group[shift.source],
               **{name: run_weights[(name, cfg.seeds[0])] for name in cfg.weight_sources if name in ESTIMATED}}
    results.write_arrays(out / f"weights_{cfg.study}.npz", scatter)
    return sweep.merge(out, runs["run"]), weights_table


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
