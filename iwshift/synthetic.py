"""The 2-D synthetic study (the paper's Section on synthetic data), composed from the package's rooms.

Grid: data set x model x weighting x regime x seed, where
  * data sets: ``separable``, ``moons``, ``moons_minority0`` and ``moons_minority1`` (moons whose
    training half keeps one tenth of class 0, resp. class 1, drawn without replacement; the test half
    stays balanced);
  * models: ``lr`` (logistic regression), ``mlp`` (2 -> 64 -> 1);
  * weightings: ``equal``, ``up`` (weight ``weight`` on class 1), ``down`` (on class 0); on an
    imbalanced data set only ``equal`` and the one that up-weights its minority class;
  * regimes: ``none``, ``l2`` (weight decay ``l2_lr`` / ``l2_mlp``), ``dropout`` (MLP only).

Protocol: plain SGD, learning rate ``lr_scale / sigma_max(X_train)``, batch 8, 10,000 epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd
import torch

from . import config as cfgmod
from . import data as datamod
from . import losses, metrics, models, results, shifts, sweep
from .config import ConfigError
from .train import ENGINES, LossSpec, StackedRuns, Trainer

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

from .choices import SYNTHETIC_DATASETS as DATASETS  # noqa: E402
from .choices import SYNTHETIC_REGIMES as REGIMES  # noqa: E402
IDENTITY_COLUMNS = ["dataset", "model", "weighting", "regime", "remedy", "seed"]  # a run's, in its metrics rows
RUN_COLUMNS = ["run", *IDENTITY_COLUMNS, "data_seed", "weight_class0", "weight_class1", "l2", "dropout", "lr"]
# plain weighted cross-entropy, and the remedies that apply to the 2-D study (early stopping needs a
# validation split that the paper's 2-D protocol does not have)
from .choices import SYNTHETIC_REMEDIES as REMEDIES  # noqa: E402
BOUNDARY_EPOCHS = (1, 10, 100, 1000, 10000)


@dataclass
class SyntheticConfig:
    datasets: Sequence[str] = DATASETS
    models: Sequence[str] = models.MODELS_2D
    weightings: Sequence[str] = shifts.WEIGHTINGS
    regimes: Sequence[str] = REGIMES
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    data_seed: int = 0
    weight: float = 10.0
    l2_lr: float = 0.1
    l2_mlp: float = 0.01
    dropout: float = 0.5
    hidden: int = 64
    epochs: int = 10_000
    batch_size: int = 8
    lr_scale: float = 0.01
    normalization: str = "mean"
    n_per_class: int = 256
    n_moons: int = 1024
    minority_fraction: float = 0.1
    evals_per_decade: int = 3
    remedies: Sequence[str] = ("plain",)  # remedies beyond plain run in the `none` regime
    poly_alpha: float = 1.0
    poly_beta: float = 0.0
    tau: float = 1.0
    drw_epoch: int = 0                # deferred re-weighting: weights from this epoch on (0: half the epochs)
    weight_power: float = 0.5
    equal_step: bool = False          # rescale each run's weights to mean 1 over its training set (see build_runs)
    engine: str = "auto"              # the trainer's engine: auto (fused on CPU), fused, or torch (step by step)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in the manifest

    def __post_init__(self) -> None:
        v = cfgmod
        self.datasets = v.all_of("datasets", self.datasets, DATASETS)
        self.models = v.all_of("models", self.models, models.MODELS_2D)
        self.weightings = v.all_of("weightings", self.weightings, shifts.WEIGHTINGS)
        self.regimes = v.all_of("regimes", self.regimes, REGIMES)
        self.seeds = v.seeds_list("seeds", self.seeds)
        self.data_seed = v.at_least("data_seed", self.data_seed, 0)
        self.weight = v.positive_finite("weight", self.weight)
        self.l2_lr = v.non_negative_finite("l2_lr", self.l2_lr)
        self.l2_mlp = v.non_negative_finite("l2_mlp", self.l2_mlp)
        self.dropout = v.probability_below_one("dropout", self.dropout)
        self.hidden = v.at_least("hidden", self.hidden, 1)
        self.epochs = v.at_least("epochs", self.epochs, 1)
        self.batch_size = v.at_least("batch_size", self.batch_size, 1)
        self.lr_scale = v.positive_finite("lr_scale", self.lr_scale)
        self.normalization = v.one_of("normalization", self.normalization, ("mean", "weight_sum"))
        self.n_per_class = v.at_least("n_per_class", self.n_per_class, 2)
        self.n_moons = v.at_least("n_moons", self.n_moons, 8)
        if not 0 < self.minority_fraction <= 1:
            raise ConfigError("minority_fraction", f"must be in (0, 1] (got {self.minority_fraction:g})")
        self.evals_per_decade = v.at_least("evals_per_decade", self.evals_per_decade, 1)
        self.remedies = v.all_of("remedies", self.remedies, REMEDIES)
        self.engine = v.one_of("engine", self.engine, ENGINES)
        losses.check_remedy_parameters(self.poly_alpha, self.poly_beta, self.tau, self.drw_epoch,
                                       self.weight_power)

    def drw_start(self) -> int:
        """First (1-based) epoch of deferred re-weighting that uses the weights."""
        return self.drw_epoch or max(1, self.epochs // 2)

    def eval_epochs(self) -> list[int]:
        """Epochs after which metrics and parameters are recorded: log-spaced (1, 2, 5, 10, ... for 3
        per decade), the paper's snapshot epochs, and the last epoch."""
        if self.evals_per_decade == 3:  # the familiar 1-2-5 series rather than 1-2.2-4.6
            epochs = {int(m * 10 ** d) for d in range(7) for m in (1, 2, 5)}
        else:
            epochs = {int(round(10 ** (i / self.evals_per_decade)))
                      for i in range(int(np.log10(self.epochs) * self.evals_per_decade) + 1)}
        epochs |= set(BOUNDARY_EPOCHS) | {self.epochs}
        return sorted(e for e in epochs if 1 <= e <= self.epochs)


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
                        if remedy == "exponent":  # w**k at the plain weights' mean: the same effective step
                            w0, w1 = losses.weight_exponent(np.array([w0, w1]), cfg.weight_power, counts,
                                                             keep_mean=True)
                        for seed in cfg.seeds:
                            rows.append({
                                "dataset": dataset, "model": model, "weighting": weighting,
                                "regime": regime, "remedy": remedy, "seed": seed, "data_seed": cfg.data_seed,
                                "weight_class0": w0, "weight_class1": w1,
                                "l2": (cfg.l2_lr if model == "lr" else cfg.l2_mlp) if regime == "l2" else 0.0,
                                "dropout": cfg.dropout if regime == "dropout" else 0.0, "lr": lr})
    runs = pd.DataFrame(rows)
    runs.insert(0, "run", np.arange(len(runs)))
    return runs[RUN_COLUMNS]


@dataclass
class SyntheticResult:
    config: SyntheticConfig
    runs: pd.DataFrame      # one row per run
    table: pd.DataFrame     # one row per run x evaluated epoch
    params: dict[str, np.ndarray]  # stacked parameters per (dataset, model) group and epoch
    datasets: dict[str, datamod.Dataset]
    train_seconds: float
    total_seconds: float

    def run_params(self, run: int, epoch: int) -> dict[str, np.ndarray]:
        return run_params(self.params, run, epoch)


def run_params(params: dict[str, np.ndarray], run: int, epoch: int) -> dict[str, np.ndarray]:
    """Parameters of ``run`` after ``epoch`` from the saved stacked snapshots (``params.npz``)."""
    epochs = list(params["epochs"])
    if epoch not in epochs:
        raise KeyError(f"epoch {epoch} was not recorded; recorded: {epochs}")
    t = epochs.index(epoch)
    for key in params:
        if key.endswith("__run"):
            hits = np.flatnonzero(params[key] == run)
            if len(hits):
                group = key[: -len("__run")]
                return {name: params[f"{group}__{name}"][hits[0], t] for name in ("W1", "b1", "w2", "b2")}
    raise KeyError(f"run {run} not found")


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
    if svm_normal is not None:
        out["angle_to_svm"] = metrics.angle_degrees(metrics.boundary_normals(tp, x_tr), svm_normal)
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
    remedy = group["remedy"].to_numpy()
    specs = {"poly": LossSpec("poly", cfg.poly_alpha, cfg.poly_beta),
             "logit_adjusted": LossSpec("logit_adjusted", tau=cfg.tau)}
    class_w = group[["weight_class0", "weight_class1"]].to_numpy()
    n = len(ds.train)
    runs = StackedRuns(
        seeds=group["seed"].tolist(), train_index=np.tile(np.arange(n), (len(group), 1)),
        example_weights=class_w[:, ds.train.y], l2=group["l2"].tolist(), dropout=group["dropout"].tolist(),
        loss=[specs.get(r, LossSpec()) for r in remedy],
        defer_until=np.where(remedy == "drw", cfg.drw_start(), 0).tolist())
    stack = models.Stacked2D(model, runs.seeds, cfg.hidden, dropout=runs.dropout)
    return Trainer(stack, runs, torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y), lr=float(lr[0]),
                   momentum=0.0, batch_size=cfg.batch_size, normalization=cfg.normalization,
                   batch_order="counter", engine=cfg.engine)


def run_study(cfg: SyntheticConfig, progress: bool = True) -> SyntheticResult:
    """Train every run of the grid (all runs of one data set and model at once) and measure them."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    datasets = {name: load_dataset(name, cfg) for name in cfg.datasets}
    runs = build_runs(cfg, datasets)
    eval_epochs = cfg.eval_epochs()
    groups = list(runs.groupby(["dataset", "model"], sort=False))
    rows: list[pd.DataFrame] = []
    params_out: dict[str, np.ndarray] = {"epochs": np.array(eval_epochs)}
    train_seconds = 0.0
    torch.set_grad_enabled(True)
    bar = tqdm(total=len(groups) * cfg.epochs, unit="epoch", desc="synthetic study", disable=not progress,
               unit_scale=True)
    for (dataset, model), group in groups:
        ds = datasets[dataset]
        svm_normal = metrics.max_margin_normal(ds.train.x, ds.train.y) if dataset == "separable" else None
        trainer = make_trainer(group, model, ds, cfg)
        p = {k: v.numpy() for k, v in trainer.model.stacked_params().items()}  # views: follow training
        snapshots: dict[str, list[np.ndarray]] = {k: [] for k in p}
        done = 0
        diverged = np.zeros(len(group), bool)
        for epoch in eval_epochs:
            if diverged.all():  # every run of the group diverged: nothing left to train (NaN snapshots)
                for k, v in p.items():
                    snapshots[k].append(np.full_like(v, np.nan))
                continue
            t0 = time.perf_counter()
            trainer.train_epochs(epoch - done)
            train_seconds += time.perf_counter() - t0
            bar.update(epoch - done)
            done = epoch
            measured = _group_metrics(group, p, ds, svm_normal, cfg.normalization)
            with np.errstate(invalid="ignore"):
                diverged |= trainer.diverged | ~np.isfinite(measured["train_loss_weighted"]) \
                    | ~np.isfinite(measured["train_loss"])
            frame = group[["run", *IDENTITY_COLUMNS]].copy()
            frame.insert(len(frame.columns), "epoch", epoch)
            for name, values in measured.items():
                frame[name] = values
            frame["diverged"] = diverged.copy()
            rows.append(frame)
            for k, v in p.items():
                snapshots[k].append(v.copy())
        key = f"{dataset}__{model}"
        params_out[f"{key}__run"] = group["run"].to_numpy()
        for k, v in snapshots.items():
            params_out[f"{key}__{k}"] = np.stack(v, 1)  # (runs, epochs, ...)
    bar.close()
    table = pd.concat(rows, ignore_index=True).sort_values(["run", "epoch"], ignore_index=True)
    table = sweep.with_status(table)  # a diverged run is not measured further
    if "angle_to_svm" not in table:
        table["angle_to_svm"] = np.nan
    return SyntheticResult(cfg, runs, table, params_out, datasets, train_seconds,
                           time.perf_counter() - start)


def diverged_runs(table: pd.DataFrame) -> list[int]:
    """The runs of a study table whose status is diverged (none for tables from before the column)."""
    if "status" not in table:
        return []
    return sorted(table.loc[table["status"] == "diverged", "run"].unique().tolist())


def save(result: SyntheticResult, out: str | Path) -> dict[str, Path]:
    """Write ``metrics.csv``, ``runs.csv``, ``params.npz`` and ``manifest.json`` atomically.

    ``metrics.csv`` holds what is measured per run and epoch; what a run is (``runs.csv``) and its status
    (derived from ``diverged``) are not repeated on every row, and measures that are float32 values are
    written as the shortest text that reads back as the same float32 (the manifest names them). So the
    table stays small and :func:`load` gives back the table the study made, value for value."""
    out = Path(out)
    table = result.table.drop(columns=[*IDENTITY_COLUMNS, "status"])
    float32_columns = [c for c in table.columns if _is_float32(table[c])]
    for column in float32_columns:
        table[column] = _float32_text(table[column])
    paths = {
        "metrics": results.write_table(out / "metrics.csv", table),
        "runs": results.write_table(out / "runs.csv", result.runs),
        "params": results.write_arrays(out / "params.npz", result.params),
    }
    manifest = {
        "study": "synthetic",
        "config": asdict(result.config),
        "seeds": list(result.config.seeds),
        "data_seed": result.config.data_seed,
        "eval_epochs": result.config.eval_epochs(),
        "n_runs": len(result.runs),
        "train_seconds": round(result.train_seconds, 3),
        "total_seconds": round(result.total_seconds, 3),
        "dataset_sizes": {name: {"train": np.bincount(d.train.y, minlength=2).tolist(),
                                 "test": np.bincount(d.test.y, minlength=2).tolist()}
                          for name, d in result.datasets.items()},
        "files": {k: v.name for k, v in paths.items()},
        "float32_columns": float32_columns,
        **results.environment("cpu"),
    }
    paths["manifest"] = results.write_json(out / "manifest.json", manifest)
    return paths


def _is_float32(values: pd.Series) -> bool:
    """A float column whose every value is a float32 (the trainers' and measures' precision)."""
    if not pd.api.types.is_float_dtype(values):
        return False
    x = values.to_numpy(np.float64)
    return bool(np.array_equal(x.astype(np.float32).astype(np.float64), x, equal_nan=True))


def _float32_text(values: pd.Series) -> list[str]:
    return ["" if np.isnan(v) else np.format_float_positional(v, unique=True, trim="-")
            for v in values.to_numpy(np.float32)]


def read_metrics(out: str | Path, read: Callable[[Path], pd.DataFrame] = results.read_table,
                 manifest: dict[str, Any] | None = None) -> pd.DataFrame:
    """The metrics table of a study folder as the study made it: each row with its run's columns
    (``runs.csv``) and ``status``, float32 measures exact. ``read`` reads a CSV file (e.g.
    :func:`iwshift.results.load_table`, which validates). Folders written before the table was slimmed
    (every column in ``metrics.csv``) read as they are."""
    out = Path(out)
    table = read(out / "metrics.csv")
    manifest = results.read_json(out / "manifest.json") if manifest is None else manifest
    for column in manifest.get("float32_columns", ()):
        table[column] = table[column].to_numpy(np.float32).astype(np.float64)
    if "dataset" in table:
        return table
    table = sweep.with_status(table)
    runs = read(out / "runs.csv")
    extra = [c for c in runs.columns if c not in ("run", *IDENTITY_COLUMNS)]
    merged = table.merge(runs, on="run", how="left")
    return merged[["run", *IDENTITY_COLUMNS, *(c for c in table.columns if c != "run"), *extra]]


def load(out: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray] | None, dict[str, Any]]:
    """The saved metrics table (:func:`read_metrics`), stacked parameters (None where they were not kept:
    the committed results leave the large ``params.npz`` out) and manifest of a study folder."""
    out = Path(out)
    params = results.read_arrays(out / "params.npz") if (out / "params.npz").exists() else None
    manifest = results.read_json(out / "manifest.json")
    return read_metrics(out, manifest=manifest), params, manifest


def config_from_manifest(manifest: dict[str, Any]) -> SyntheticConfig:
    return SyntheticConfig(**manifest["config"])


def _numpy_logits(p: dict[str, np.ndarray], grid: np.ndarray) -> np.ndarray:
    stacked = {k: torch.from_numpy(np.asarray(v, np.float32)[None]) for k, v in p.items()}
    with torch.no_grad():
        return models.stacked_logits(stacked, torch.from_numpy(grid))[0].numpy()


def figures(table: pd.DataFrame, params: dict[str, np.ndarray] | None, cfg: SyntheticConfig,
            boundary_seed: int | None = None) -> Iterator[tuple[str, "plt.Figure"]]:
    """Yield every figure of the study with its file stem (one at a time, so that a caller can save
    and close each before the next is drawn): decision-boundary grids (one per data set x model x
    regime, for one seed) and predicted-positive fraction / boundary angle against epoch (mean +- 95 %
    interval over seeds). Without ``params`` the boundary grids are left out."""
    from . import plots

    seed = cfg.seeds[0] if boundary_seed is None else boundary_seed
    recorded = set(params["epochs"].tolist()) if params is not None else set()
    if "remedy" not in table:
        table = table.assign(remedy="plain")
    everything, table = table, table[table["remedy"] == "plain"]
    snapshot_epochs = [e for e in BOUNDARY_EPOCHS if e in recorded] or sorted(recorded)[-1:]
    for dataset in table["dataset"].unique():
        ds = load_dataset(dataset, cfg)
        normal = metrics.max_margin_normal(ds.train.x, ds.train.y) if dataset == "separable" else None
        part = table[table["dataset"] == dataset]
        for (model, regime), runs in part.groupby(["model", "regime"], sort=False):
            if params is None:
                break
            chosen = runs[(runs["seed"] == seed)].drop_duplicates("run")
            weightings = [w for w in shifts.WEIGHTINGS if w in set(chosen["weighting"])]
            grid_params = {(r.weighting, e): run_params(params, int(r.run), e)
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


EXTREME_WEIGHTS = (1.0, 10.0, 100.0, 1000.0)


def _normals_over_time(params: dict[str, np.ndarray], group_key: str, x_train: np.ndarray) -> np.ndarray:
    """Boundary normals (runs, epochs, 2) of one saved (dataset, model) group."""
    names = ("W1", "b1", "w2", "b2")
    stacked = {k: params[f"{group_key}__{k}"] for k in names}
    runs, epochs = stacked["w2"].shape[:2]
    out = np.empty((runs, epochs, 2))
    x = torch.from_numpy(x_train)
    for t in range(epochs):
        at_t = {k: torch.from_numpy(np.ascontiguousarray(v[:, t], np.float32)) for k, v in stacked.items()}
        out[:, t] = metrics.boundary_normals(at_t, x)
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def stability(result: SyntheticResult) -> pd.DataFrame:
    """One row per run: how much the boundary moves and whether training misbehaved.

    ``late_fluctuation``: how far the boundary wanders late in training, the mean angle (degrees) between
    the boundary normals of the evaluated epochs in the last decade (epoch >= last / 10) and their mean
    direction; ``boundary_movement``: mean angle between the normals of consecutive evaluated epochs
    (1, 2, 5, 10, ...: mostly how fast the boundary converges, which grows with the step size);
    ``late_movement``: the same over the last decade; ``loss_spikes``: snapshots whose weighted train loss is
    more than twice the previous one; ``diverged``: a non-finite parameter or loss at any snapshot (flagged,
    never raised), ``status`` "diverged" or "ok"."""
    params, table = result.params, result.table
    epochs = params["epochs"]
    losses_by_run = {run: part.sort_values("epoch")["train_loss_weighted"].to_numpy()
                     for run, part in table.groupby("run")}
    rows = []
    for key in [k[: -len("__run")] for k in params if k.endswith("__run")]:
        dataset = key.split("__")[0]
        run_ids = params[f"{key}__run"]
        with np.errstate(invalid="ignore"):
            normals = _normals_over_time(params, key, result.datasets[dataset].train.x)
            turn = metrics.angle_degrees(normals[:, 1:], normals[:, :-1])  # (runs, epochs - 1)
            window = _unit(normals[:, epochs >= epochs[-1] / 10])          # (runs, late epochs, 2)
            wander = metrics.angle_degrees(window, _unit(window.mean(1, keepdims=True)))
        late = epochs[1:] > epochs[-1] / 10
        finite = np.isfinite(np.stack([params[f"{key}__{k}"].reshape(len(run_ids), len(epochs), -1).sum(-1)
                                       for k in ("W1", "b1", "w2", "b2")])).all(0)  # (runs, epochs)
        for i, run in enumerate(run_ids):
            loss = losses_by_run[run]
            with np.errstate(invalid="ignore", divide="ignore"):
                spikes = int(np.sum(loss[1:] > 2 * loss[:-1]))
            diverged = not finite[i].all() or not np.isfinite(loss).all()
            mean_of = lambda a: float(np.nanmean(a)) if np.isfinite(a).any() and not diverged else np.nan  # noqa: E731
            rows.append({"run": int(run), "late_fluctuation": mean_of(wander[i]),
                         "boundary_movement": mean_of(turn[i]), "late_movement": mean_of(turn[i, late]),
                         "final_normal_x": normals[i, -1, 0], "final_normal_y": normals[i, -1, 1],
                         "loss_spikes": spikes, "diverged": int(diverged),
                         "status": "diverged" if diverged else "ok"})
    out = result.runs.merge(pd.DataFrame(rows), on="run")
    final = table[table["epoch"] == table["epoch"].max()][["run", "angle_to_svm", "test_accuracy"]]
    return out.merge(final, on="run", how="left")


SPREAD_KEYS = ["dataset", "model", "weighting", "weight"]


def seed_deviation(stab: pd.DataFrame) -> pd.Series:
    """Per run: the angle (degrees) between its final boundary normal and the mean final direction of the
    seeds of its configuration (data set, model, weighting, weight): the across-seed spread, one value per
    seed, so that it can be paired with the seed's run at weight 1."""
    out = pd.Series(np.nan, index=stab.index)
    for _, part in stab.groupby(SPREAD_KEYS, sort=True):
        ok = part[part["diverged"] == 0]
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
                     "n_seeds": len(part), "diverged_runs": int(part["diverged"].sum())})
    return pd.DataFrame(rows)


def run_extreme_study(base: SyntheticConfig, weights: Sequence[float] = EXTREME_WEIGHTS,
                      progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Weights 1, 10, 100, 1,000 on either class (separable and moons; LR and MLP; regime none): per-run
    stability rows, the per-configuration seed spread, and the training seconds.

    Every run's weights are rescaled to mean 1 over its training set (``equal_step``), so that the weights
    are compared at the unweighted run's effective step: without it, under the ``mean`` normalisation a
    weight of 1,000 takes steps about 500 times larger, and the boundary then converges sooner and moves
    less, which says nothing about the weights."""
    frames, seconds = [], 0.0
    for w in cfgmod.distinct("extreme_weights", [float(w) for w in weights]):
        cfg = replace(base, weight=float(w), regimes=["none"], remedies=["plain"], equal_step=True,
                      weightings=["equal"] if w == 1 else ["up", "down"])
        result = run_study(cfg, progress=progress)
        seconds += result.train_seconds
        stab = stability(result)
        stab.insert(1, "weight", float(w))
        stab["weighted_class"] = stab["weighting"].map({"up": 1, "down": 0, "equal": -1})
        frames.append(stab)
    stab = pd.concat(frames, ignore_index=True)
    stab["run"] = np.arange(len(stab))
    stab["seed_deviation"] = seed_deviation(stab)
    return stab, seed_spread(stab), seconds


def instability_figure(stab: pd.DataFrame) -> "plt.Figure":
    """Late-training fluctuation of the boundary and its across-seed spread against the weight (weights at
    equal effective step; up and down averaged within each seed; mean ± 95 % interval over seeds; diverged
    runs left out and drawn apart)."""
    import matplotlib.pyplot as plt

    from . import plots

    if "seed_deviation" not in stab:
        stab = stab.assign(seed_deviation=seed_deviation(stab))
    data = stab.assign(config=stab["dataset"] + " / " + stab["model"])
    ok = data[data["diverged"] == 0]
    per_seed = ok.groupby(["config", "weight", "seed"], as_index=False)[["late_fluctuation", "seed_deviation"]].mean()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric, label in ((axes[0], "late_fluctuation", "late fluctuation of the boundary (deg)"),
                              (axes[1], "seed_deviation", "across-seed spread of the final boundary (deg)")):
        plots.curves_by_panel(per_seed.assign(panel=metric.replace("_", " ")), metric, ["panel"], "config",
                              x="weight", axes=[ax], ylabel=label, value_ticks=True)
    diverged = int(data["diverged"].sum())
    fig.suptitle("extreme weighting at equal effective step: instability of the decision boundary (regime none)"
                 + (f"; {diverged} diverged runs left out" if diverged else ""), fontsize=9)
    fig.tight_layout()
    return fig
