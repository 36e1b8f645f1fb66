"""The 2-D synthetic study (the paper's Section on synthetic data), declared for the one runner.

Grid: data set x model x weighting x regime x seed, where
  * data sets: ``separable``, ``moons``, ``moons_minority0`` and ``moons_minority1`` (moons whose
    training half keeps one tenth of class 0, resp. class 1, drawn without replacement; the test half
    stays balanced);
  * models: ``lr`` (logistic regression), ``mlp`` (2 -> 64 -> 1);
  * weightings: ``equal``, ``up`` (weight ``weight`` on class 1), ``down`` (on class 0); on an
    imbalanced data set only ``equal`` and the one that up-weights its minority class;
  * regimes: ``none``, ``l2`` (weight decay ``l2_lr`` / ``l2_mlp``), ``dropout`` (MLP only).

Protocol: plain SGD, learning rate ``lr_scale / sigma_max(X_train)``, batch 8, 10,000 epochs. All runs of one
data set and model are one stack, trained by the trainer's fused engine on CPU.

The extreme-weighting study (:class:`ExtremeStudy`): weights 1, 10, 100, 1,000 on either class (separable and
moons; LR and MLP; regime none) at equal effective step. Every run, of either study, is written in the one results
format: its ``metrics.csv`` (per evaluated epoch: losses, accuracies, the fraction predicted positive, the
boundary's direction, per-class gradient norms, run health) and ``config.json``, and its parameters at every
evaluated epoch in ``params.npz`` (to redraw its boundaries). The boundary's stability (:func:`stability`) is
computed from the metrics alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd
import torch

from . import checks
from . import data as datamod
from . import metrics, models, results, shifts
from .config import BOUNDARY_EPOCHS, SyntheticConfig
from .losses import REMEDIES
from .sweep import StackPlan, Study
from .train import StackedRuns, Trainer

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

IDENTITY_COLUMNS = ["dataset", "model", "weighting", "regime", "remedy", "seed"]  # a run's, in its metrics rows
RUN_COLUMNS = ["run", *IDENTITY_COLUMNS, "data_seed", "weight", "weight_class0", "weight_class1", "l2", "dropout", "lr"]


def load_dataset(name: str, cfg: SyntheticConfig) -> datamod.Dataset:
    """The named 2-D data set under ``cfg.data_seed`` (imbalanced variants subsample its training half)."""
    if name == "separable":
        return datamod.make_separable(cfg.n_per_class, seed=cfg.data_seed)
    moons = datamod.make_moons_split(cfg.n_moons, noise=0.1, seed=cfg.data_seed)
    if name == "moons":
        return moons
    minority = int(name[-1])
    keep = shifts.keep_fraction(moons.train.y, minority, cfg.minority_fraction, seed=cfg.data_seed)
    return datamod.Dataset(train=moons.train.subset(keep), test=moons.test, name=name)


def minority_class(dataset: str) -> int | None:
    return int(dataset[-1]) if dataset.startswith("moons_minority") else None


def learning_rate(x_train: np.ndarray, scale: float) -> float:
    """``scale / sigma_max(X_train)``, the paper's step size for the 2-D data."""
    return float(scale / np.linalg.norm(x_train.astype(np.float64), ord=2))


def unit_mean(class_weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Class weights rescaled to mean 1 over a training set with ``counts`` examples per class.

    Under the ``mean`` normalisation a weight w multiplies the step of SGD by the mean weight (about w / 2
    for one up-weighted class of two), so runs with different weights differ in step size as well as in
    weighting; rescaled to mean 1 (equivalently: the learning rate divided by the mean weight), every run
    takes the unweighted run's effective step. Under ``weight_sum`` the rescaling changes nothing."""
    class_weights, counts = np.asarray(class_weights, np.float64), np.asarray(counts, np.float64)
    return class_weights * counts.sum() / (counts @ class_weights)


def run_name(row: dict[str, Any]) -> str:
    remedy = "" if row["remedy"] == "plain" else f"_{row['remedy']}"
    return f"{row['dataset']}_{row['model']}_{row['weighting']}_{row['regime']}{remedy}_s{row['seed']}"


def build_runs(cfg: SyntheticConfig, datasets: dict[str, datamod.Dataset]) -> pd.DataFrame:
    """One row per run of the study's grid (see module docstring), with its hyper-parameters."""
    rows = []
    for dataset in cfg.datasets:
        lr = learning_rate(datasets[dataset].train.x, cfg.lr_scale)
        counts = datasets[dataset].train.class_counts()
        minority = minority_class(dataset)
        weightings = list(cfg.weightings)
        if minority is not None:  # imbalanced: unweighted vs up-weighting the minority class
            weightings = [w for w in weightings if w in ("equal", ("down", "up")[minority])]
        for model in cfg.models:
            for regime in cfg.regimes:
                if regime == "dropout" and model != "mlp":
                    continue
                for weighting in weightings:
                    for remedy in cfg.remedies if regime == "none" else [r for r in cfg.remedies if r == "plain"]:
                        w0, w1 = shifts.class_weights(weighting, cfg.weight)
                        if cfg.equal_step:
                            w0, w1 = unit_mean(np.array([w0, w1]), counts)
                        # the remedy's change to the weights (the weight exponent: w**k at the plain weights' mean)
                        w0, w1 = REMEDIES[remedy].transform(np.array([w0, w1]), cfg, counts)
                        for seed in cfg.seeds:
                            row = {"dataset": dataset, "model": model, "weighting": weighting, "regime": regime,
                                   "remedy": remedy, "seed": seed, "data_seed": cfg.data_seed,
                                   "weight": cfg.weight if weighting != "equal" else 1.0,
                                   "weight_class0": float(w0), "weight_class1": float(w1),
                                   "l2": (cfg.l2_lr if model == "lr" else cfg.l2_mlp) if regime == "l2" else 0.0,
                                   "dropout": cfg.dropout if regime == "dropout" else 0.0, "lr": lr}
                            rows.append({"run": run_name(row), **row})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _group_metrics(group: pd.DataFrame, p: dict[str, np.ndarray], ds: datamod.Dataset,
                   svm_normal: np.ndarray | None, normalization: str) -> dict[str, np.ndarray]:
    tp = {k: torch.from_numpy(v) for k, v in p.items()}
    x_tr, y_tr = torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y)
    x_te, y_te = torch.from_numpy(ds.test.x), torch.from_numpy(ds.test.y)
    class_w = torch.tensor(group[["weight_class0", "weight_class1"]].to_numpy(), dtype=torch.float32)
    example_w = class_w[:, y_tr]  # (K, n)
    weighted_loss, plain_loss = metrics.binary_losses(tp, x_tr, y_tr, example_w, normalization)
    with torch.no_grad():
        train_pred = (models.stacked_logits(tp, x_tr) > 0).long()
        test_pred = (models.stacked_logits(tp, x_te) > 0).long()
    out = {
        "train_loss_weighted": weighted_loss, "train_loss": plain_loss,
        "train_accuracy": metrics.accuracy(train_pred, y_tr).numpy(),
        "test_accuracy": metrics.accuracy(test_pred, y_te).numpy(),
        "test_balanced_accuracy": metrics.balanced_accuracy(test_pred, y_te).numpy(),
        "test_fraction_positive": metrics.fraction_predicted(test_pred, 1).numpy(),
    }
    normals = metrics.boundary_normals(tp, x_tr)
    out["boundary_normal_x"], out["boundary_normal_y"] = normals[:, 0], normals[:, 1]
    out["angle_to_svm"] = metrics.angle_degrees(normals, svm_normal) if svm_normal is not None else \
        np.full(len(group), np.nan)
    for suffix, w in (("_weighted", example_w), ("", torch.ones_like(example_w))):
        norms = metrics.class_gradient_norms(tp, x_tr, y_tr, w)
        out[f"grad_norm_class0{suffix}"], out[f"grad_norm_class1{suffix}"] = norms[:, 0], norms[:, 1]
    return out


def make_trainer(group: pd.DataFrame, model: str, ds: datamod.Dataset, cfg: SyntheticConfig) -> Trainer:
    """The trainer of one (data set, model) group of runs: all on the same training set, each with its own
    seed, class weights, L2, dropout and remedy; plain SGD (the paper's protocol) with counter-based batch
    orders, so that the fused CPU engine applies (``cfg.engine="torch"`` trains the same runs step by step)."""
    lr = group["lr"].unique()
    if len(lr) != 1:
        raise ValueError("the runs of a group share one learning rate (one data set)")
    remedies = [REMEDIES[r] for r in group["remedy"]]
    class_w = group[["weight_class0", "weight_class1"]].to_numpy()
    n = len(ds.train)
    runs = StackedRuns(
        seeds=group["seed"].tolist(), train_index=np.tile(np.arange(n), (len(group), 1)),
        example_weights=class_w[:, ds.train.y], l2=group["l2"].tolist(), dropout=group["dropout"].tolist(),
        loss=[r.loss_spec(cfg) for r in remedies], defer_until=[r.defer_until(cfg.epochs, cfg) for r in remedies])
    stack = models.Stacked2D(model, runs.seeds, cfg.hidden, dropout=runs.dropout)
    return Trainer(stack, runs, torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y), lr=float(lr[0]),
                   momentum=0.0, batch_size=cfg.batch_size, normalization=cfg.normalization,
                   batch_order="counter", engine=cfg.engine)


class SyntheticStudy(Study):
    """The 2-D study, declared for the runner: all runs of one data set and model are one stack (the fused engine
    trains it from one evaluated epoch to the next); each evaluated epoch measures :func:`_group_metrics` and keeps
    the stack's parameters, which each run saves as ``params.npz``."""

    name = "synthetic"
    id_columns = RUN_COLUMNS

    def __init__(self, config: SyntheticConfig):
        self.config = config
        self.data_source = f"2-D synthetic (generated, data seed {config.data_seed})"

    def datasets(self) -> dict[str, datamod.Dataset]:
        cache = self.__dict__.setdefault("_datasets", {})
        for name in self.config.datasets:
            if name not in cache:
                cache[name] = load_dataset(name, self.config)
        return cache

    def runs(self) -> pd.DataFrame:
        return build_runs(self.config, self.datasets())

    def stack_key(self, run: dict[str, Any]) -> Any:
        return run["dataset"], run["model"]

    def build(self, group: pd.DataFrame, device: str, out: Path) -> StackPlan:
        cfg = self.config
        dataset, model = group["dataset"].iloc[0], group["model"].iloc[0]
        ds = self.datasets()[dataset]
        svm_normal = metrics.max_margin_normal(ds.train.x, ds.train.y) if dataset == "separable" else None
        trainer = make_trainer(group, model, ds, cfg)
        p = {k: v.numpy() for k, v in trainer.model.stacked_params().items()}  # views: they follow training
        snapshots: dict[str, list[np.ndarray]] = {k: [] for k in p}
        epochs: list[int] = []

        def evaluate(trainer: Trainer) -> dict[str, np.ndarray]:
            measured = _group_metrics(group, p, ds, svm_normal, cfg.normalization)
            with np.errstate(invalid="ignore"):
                measured["diverged"] = trainer.diverged | ~np.isfinite(measured["train_loss_weighted"]) \
                    | ~np.isfinite(measured["train_loss"])
            epochs.append(trainer.epoch)
            for k, v in p.items():
                snapshots[k].append(v.copy())
            return measured

        runs = list(group["run"])

        def arrays(run: str) -> dict[str, dict[str, np.ndarray]]:
            k = runs.index(run)
            return {"params.npz": {"epochs": np.array(epochs), **{name: np.stack([s[k] for s in values])
                                                                   for name, values in snapshots.items()}}}

        return StackPlan(trainer, evaluate, arrays)

    def record(self, device: str) -> dict[str, Any]:
        return {**super().record("cpu"), "eval_epochs": self.config.eval_epochs()}


class ExtremeStudy(SyntheticStudy):
    """Weights ``extreme_weights`` on either class (separable and moons; LR and MLP; regime none), every run's
    weights rescaled to mean 1 over its training set (``equal_step``), so that the weights are compared at the
    unweighted run's effective step: without it, under the ``mean`` normalisation a weight of 1,000 takes steps
    about 500 times larger, and the boundary then converges sooner and moves less, which says nothing about the
    weights. One stack per weight, data set and model."""

    name = "synthetic_extreme"

    def __init__(self, config: SyntheticConfig):
        config = replace(config, datasets=[d for d in config.datasets if d in ("separable", "moons")] or ["separable"],
                         regimes=["none"], remedies=["plain"], equal_step=True)
        super().__init__(config)

    def runs(self) -> pd.DataFrame:
        parts = []
        for w in self.config.extreme_weights:
            cfg = replace(self.config, weight=float(w), weightings=["equal"] if w == 1 else ["up", "down"])
            runs = build_runs(cfg, self.datasets())
            parts.append(runs.assign(run="extreme_w" + checks.format_number(float(w)).replace("/", "_") + "_"
                                     + runs["run"]))
        return pd.concat(parts, ignore_index=True)

    def stack_key(self, run: dict[str, Any]) -> Any:
        return run["weight"], run["dataset"], run["model"]


def run_params(folder: str | Path, epoch: int) -> dict[str, np.ndarray]:
    """A run's parameters after ``epoch``, from its ``params.npz`` (as :func:`iwshift.models.stacked_logits`
    takes them, without the run dimension)."""
    saved = results.read_arrays(Path(folder) / "params.npz")
    epochs = list(saved["epochs"])
    if epoch not in epochs:
        raise KeyError(f"epoch {epoch} was not recorded; recorded: {epochs}")
    t = epochs.index(epoch)
    return {name: saved[name][t] for name in ("W1", "b1", "w2", "b2")}


def _numpy_logits(p: dict[str, np.ndarray], grid: np.ndarray) -> np.ndarray:
    stacked = {k: torch.from_numpy(np.asarray(v, np.float32)[None]) for k, v in p.items()}
    with torch.no_grad():
        return models.stacked_logits(stacked, torch.from_numpy(grid))[0].numpy()


def figures(table: pd.DataFrame, cfg: SyntheticConfig, out: str | Path | None = None,
            boundary_seed: int | None = None) -> Iterator[tuple[str, "plt.Figure"]]:
    """Yield every figure of the study with its file stem (one at a time, so that a caller can save
    and close each before the next is drawn): decision-boundary grids (one per data set x model x
    regime, for one seed) and predicted-positive fraction / boundary angle against epoch (mean +- 95 %
    interval over seeds). The boundary grids read each run's ``params.npz`` in ``out``; without it (or ``out``) they
    are left out."""
    from . import plots

    seed = cfg.seeds[0] if boundary_seed is None else boundary_seed
    have = out is not None and len(table) and (Path(out) / str(table["run"].iloc[0]) / "params.npz").exists()
    recorded = set(table["epoch"].unique().tolist()) if have else set()
    everything, table = table, table[table["remedy"] == "plain"]
    snapshot_epochs = [e for e in BOUNDARY_EPOCHS if e in recorded] or sorted(recorded)[-1:]
    for dataset in table["dataset"].unique():
        ds = load_dataset(dataset, cfg)
        normal = metrics.max_margin_normal(ds.train.x, ds.train.y) if dataset == "separable" else None
        part = table[table["dataset"] == dataset]
        for (model, regime), runs in part.groupby(["model", "regime"], sort=False):
            if not have:
                break
            chosen = runs[(runs["seed"] == seed)].drop_duplicates("run")
            weightings = [w for w in shifts.WEIGHTINGS if w in set(chosen["weighting"])]
            grid_params = {(r.weighting, e): run_params(Path(out) / r.run, e)
                           for r in chosen.itertuples() for e in snapshot_epochs}
            yield f"boundaries_{dataset}_{model}_{regime}", plots.boundary_grid(
                _numpy_logits, grid_params, weightings, snapshot_epochs, ds.test.x, ds.test.y,
                reference_normal=normal,
                title=f"{dataset} / {model} / {regime} (seed {seed}; test points; dashed: max-margin)")
        yield f"fraction_positive_{dataset}", plots.curves_by_panel(
            part, "test_fraction_positive", ["model", "regime"], "weighting",
            ylabel="fraction predicted positive (test)", colors=plots.WEIGHTING_COLORS,
            title=f"{dataset}: fraction of test points predicted class 1",
            reference=float(np.mean(ds.test.y)))
        if dataset == "separable":
            yield f"angle_{dataset}", plots.curves_by_panel(
                part, "angle_to_svm", ["model", "regime"], "weighting",
                ylabel="angle to max-margin boundary (deg)", colors=plots.WEIGHTING_COLORS,
                title="separable: angle between the boundary and the max-margin boundary")
    for dataset, part in everything.groupby("dataset", sort=False):
        part = part[(part["regime"] == "none") & (part["weighting"] != "equal")]
        if part["remedy"].nunique() < 2:
            continue
        shown = [("test_fraction_positive", "fraction predicted positive (test)")]
        if dataset == "separable":
            shown.append(("angle_to_svm", "angle to max-margin boundary (deg)"))
        for metric, label in shown:
            yield f"remedies_{metric}_{dataset}", plots.curves_by_panel(
                part, metric, ["model", "weighting"], "remedy", ylabel=label,
                title=f"{dataset}: remedies against plain weighted cross-entropy (regime none)")


# ------------------------------------------------------------------------- extreme weighting


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def stability(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run (its last evaluated epoch's row): how much the boundary moves, from the boundary's
    direction at the evaluated epochs (``boundary_normal_x``, ``_y``). ``late_fluctuation``: how far the boundary
    wanders late in training, the mean angle (degrees) between the normals of the evaluated epochs in the last
    decade (epoch >= last / 10) and their mean direction; ``boundary_movement``: the mean angle between the normals
    of consecutive evaluated epochs (1, 2, 5, 10, ...: mostly how fast the boundary converges); ``late_movement``:
    the same over the last decade; ``loss_spikes``: evaluated epochs whose weighted training loss is more than
    twice the previous one. A run's values depend on that run alone. NaN for a run that diverged."""
    rows = []
    for run, part in table.sort_values("epoch").groupby("run", sort=False):
        epochs = part["epoch"].to_numpy()
        normals = part[["boundary_normal_x", "boundary_normal_y"]].to_numpy(np.float64)
        loss = part["train_loss_weighted"].to_numpy(np.float64)
        diverged = bool((part["status"] == "diverged").any())
        with np.errstate(invalid="ignore", divide="ignore"):
            turn = metrics.angle_degrees(normals[1:], normals[:-1])
            window = _unit(normals[epochs >= epochs[-1] / 10])
            wander = metrics.angle_degrees(window, _unit(window.mean(0, keepdims=True)))
            spikes = int(np.sum(loss[1:] > 2 * loss[:-1]))
        late = epochs[1:] > epochs[-1] / 10
        mean_of = lambda a: float(np.nanmean(a)) if np.isfinite(a).any() and not diverged else np.nan  # noqa: E731
        rows.append({**part.iloc[-1].to_dict(), "late_fluctuation": mean_of(wander), "boundary_movement": mean_of(turn),
                     "late_movement": mean_of(turn[late]), "loss_spikes": spikes,
                     "final_normal_x": normals[-1, 0], "final_normal_y": normals[-1, 1]})
    return pd.DataFrame(rows)


SPREAD_KEYS = ["dataset", "model", "weighting", "weight"]


def seed_deviation(stab: pd.DataFrame) -> pd.Series:
    """Per run: the angle (degrees) between its final boundary normal and the mean final direction of the
    seeds of its configuration (data set, model, weighting, weight): the across-seed spread, one value per
    seed, so that it can be paired with the seed's run at weight 1."""
    out = pd.Series(np.nan, index=stab.index)
    for _, part in stab.groupby(SPREAD_KEYS, sort=True):
        ok = part[part["status"] != "diverged"]
        normals = _unit(ok[["final_normal_x", "final_normal_y"]].to_numpy(np.float64))
        if len(ok):
            out[ok.index] = metrics.angle_degrees(normals, _unit(normals.mean(0)))
    return out


def seed_spread(stab: pd.DataFrame) -> pd.DataFrame:
    """Across-seed variation of the final boundary per configuration: the mean angle (degrees) between each
    (not diverged) seed's final normal and the configuration's mean normal direction."""
    if "seed_deviation" not in stab:  # run_extreme_study has it already
        stab = stab.assign(seed_deviation=seed_deviation(stab))
    rows = []
    for key, part in stab.groupby(SPREAD_KEYS, sort=True):
        rows.append({**dict(zip(SPREAD_KEYS, key)), "seed_spread": float(part["seed_deviation"].mean()),
                     "n_seeds": len(part), "diverged_runs": int((part["status"] == "diverged").sum())})
    return pd.DataFrame(rows)


def instability_figure(stab: pd.DataFrame) -> "plt.Figure":
    """Late-training fluctuation of the boundary and its across-seed spread against the weight (weights at
    equal effective step; up and down averaged within each seed; mean ± 95 % interval over seeds; diverged
    runs left out and drawn apart)."""
    import matplotlib.pyplot as plt

    from . import plots

    if "seed_deviation" not in stab:
        stab = stab.assign(seed_deviation=seed_deviation(stab))
    data = stab.assign(config=stab["dataset"] + " / " + stab["model"])
    ok = data[data["status"] != "diverged"]
    per_seed = ok.groupby(["config", "weight", "seed"], as_index=False)[["late_fluctuation", "seed_deviation"]].mean()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric, label in ((axes[0], "late_fluctuation", "late fluctuation of the boundary (deg)"),
                              (axes[1], "seed_deviation", "across-seed spread of the final boundary (deg)")):
        plots.curves_by_panel(per_seed.assign(panel=metric.replace("_", " ")), metric, ["panel"], "config",
                              x="weight", axes=[ax], ylabel=label, value_ticks=True)
    diverged = int((data["status"] == "diverged").sum())
    fig.suptitle("extreme weighting at equal effective step: instability of the decision boundary (regime none)"
                 + (f"; {diverged} diverged runs left out" if diverged else ""), fontsize=9)
    fig.tight_layout()
    return fig
