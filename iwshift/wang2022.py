"""Replication of Wang, Chatterji, Haque & Hashimoto (ICLR 2022), imbalanced binary CIFAR-10, side by side
with their released per-seed results (``paper-results/wang2022/their_results.csv``).

Their protocol, as read in their released code (KeAWang/importance-weighting-interpolating-classifiers):

* data: CIFAR-10 cat (their class 0) vs dog (class 1); a "step" imbalance of 10 keeps all 5,000 cats and
  500 of the 5,000 dogs; that set is split 80 / 20 at random into training (4,400 images, about 4,000 +
  400) and validation (1,100); no augmentation; ``acc`` is the accuracy on the balanced test set
  (1,000 + 1,000). Here the 500 dogs and the split are drawn from (data seed, seed), so the runs of one
  seed share their data across losses and weightings;
* model: the Byrd & Lipton CNN (their ``ConvNet``: our :class:`~iwshift.models.StackedCNN`, width 1);
* SGD, batch 64, lr 0.001, momentum 0.9, 400 epochs; the IW-Exp variant: lr 0.008, momentum 0;
* importance weights: ``compute_weights`` gives each training example 1 / (its class's count); IW-Exp
  raises them to the power 1.5. Their model multiplies each per-example loss by its weight and averages
  over the batch; how the stored code scales the weights could not be confirmed, so here they are
  rescaled to mean 1 over the training set (under SGD an overall constant only rescales the learning
  rate; :data:`NORMALIZATION` is a flag);
* losses: cross-entropy and their ``PolynomialLoss(type="logit", alpha=1)``
  (:func:`iwshift.losses.poly_wang`, not our ``poly``);
* early stopping ("-ES"): their checkpoint callback keeps the epoch with the highest
  ``val/val_reweighted_acc`` (mode max, every epoch) and tests it. In the released datamodule the
  validation set is the 20 % held-out split of the (imbalanced) training set, weighted by
  ``compute_weights``; an older version used the test set as validation (its comment "Using test set as
  validation set" survives). We report three selections on the same IW runs (ES adds no training):
  ``theirs`` (highest importance-weighted accuracy on the held-out split), ``ours`` (lowest
  importance-weighted cross-entropy on the held-out split, as our binary study's ``early_stop``) and
  ``test`` (highest test accuracy: the older test-as-validation reading, an optimistic oracle).

The comparison: per cell the mean over seeds with its 95 % Student-t interval, ours and theirs; the
difference ours - theirs with its Welch 95 % interval [lo, hi]; the verdict :func:`verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import config as v
from . import losses, metrics, sweep
from .cifar_binary import BinaryConfig, PairData, prepare_pair
from .cifar_data import Cifar10
from .config import ConfigError
from .report import DELTA, Interval, classify, mean_interval  # the claims report's threshold and readings
from .train import LossSpec, Trainer

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

from .choices import WANG_LOSSES as LOSSES  # noqa: E402
from .choices import WANG_PRESETS as PRESETS  # noqa: E402
from .choices import WANG_PROTOCOL as _THEIRS  # noqa: E402
from .choices import WANG_WEIGHTINGS as WEIGHTINGS  # noqa: E402

THEIR_RESULTS = Path(__file__).resolve().parents[1] / "paper-results" / "wang2022" / "their_results.csv"
LOSS_LABELS = {"ce": "cross-entropy", "poly_wang": "poly-tailed (α = 1)"}
THEIR_LOSSES = {"Cross Entropy": "ce", "Poly-tailed Loss": "poly_wang"}
CELLS = ("No IW", "IW", "IW-Exp", "IW-ES", "IW-Exp-ES")
SELECTIONS = ("theirs", "ours", "test")  # early-stopping checkpoint rules (see the module docstring)
SELECTION_LABELS = {"last": "last epoch", "theirs": "their rule: max IW val. accuracy",
                    "ours": "our rule: min IW val. loss", "test": "test as validation (oracle)"}
RULE = (f"*replicated* when the 95 % Welch interval of ours − theirs lies within ±{DELTA} "
        f"(−{DELTA} < lo and hi < {DELTA}); *differs* when it lies entirely outside that band "
        f"(lo > {DELTA} or hi < −{DELTA}: a difference larger than {DELTA} is established); *inconclusive* "
        f"otherwise, or with fewer than 2 seeds on either side")
COMMAND = "python replicate_wang2022.py --preset paper --device cuda"
ID_COLUMNS = ["run", "preset", "comparable", "loss", "weighting", "regime", "seed", "data_seed"]
PROTOCOL_FIELDS = ("per_class", "imbalance", "train_fraction", "width", "epochs", "lr", "momentum", "exp_lr",
                   "exp_momentum", "weight_exponent", "batch_size", "poly_alpha", "eval_every")


@dataclass
class Wang2022Config(sweep.CnnConfig):
    """The grid: :data:`LOSSES` x :data:`WEIGHTINGS` x seeds; defaults are their protocol."""

    preset: str = "paper"
    losses: Sequence[str] = LOSSES
    weightings: Sequence[str] = WEIGHTINGS
    per_class: int = 5000            # images of the majority class (cat); the dogs are per_class / imbalance
    imbalance: int = 10
    train_fraction: float = 0.8      # the rest is the held-out validation split
    weight_exponent: float = 1.5     # IW-Exp: weights (1 / class count) ** exponent
    exp_lr: float = 0.008            # IW-Exp's own optimiser
    exp_momentum: float = 0.0
    poly_alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.losses = v.all_of("losses", self.losses, LOSSES)
        self.weightings = v.all_of("weightings", self.weightings, WEIGHTINGS)
        self.per_class = v.at_least("per_class", self.per_class, 2)
        self.imbalance = v.at_least("imbalance", self.imbalance, 1)
        if self.per_class // self.imbalance < 2:
            raise ConfigError("imbalance", f"leaves fewer than 2 dogs of {self.per_class} (got {self.imbalance})")
        if not 0 < self.train_fraction < 1:
            raise ConfigError("train_fraction", f"must be in (0, 1) (got {self.train_fraction:g})")
        if not 2 <= (1 - self.train_fraction) * self.n_images() <= self.n_images() - 2:
            raise ConfigError("train_fraction", "leaves fewer than 2 training or validation images")
        self.weight_exponent = v.non_negative_finite("weight_exponent", self.weight_exponent)
        self.exp_lr = v.positive_finite("exp_lr", self.exp_lr)
        if not 0 <= self.exp_momentum < 1:
            raise ConfigError("exp_momentum", f"must be in [0, 1) (got {self.exp_momentum:g})")
        losses.check_loss_parameters("poly_wang", alpha=self.poly_alpha)
        if list(self.regimes) != ["none"]:
            raise ConfigError("regimes", "this replication has no regularisation regimes (only none)")

    def n_images(self) -> int:
        return self.per_class + self.per_class // self.imbalance

    def n_train(self) -> int:
        return int(self.train_fraction * self.n_images())  # as their split: int(0.8 * n)

    def comparable(self) -> bool:
        """Whether the protocol is theirs (seeds, device, precision and stacking aside)."""
        return all(getattr(self, f) == _THEIRS[f] for f in PROTOCOL_FIELDS)


def make_config(preset: str, **overrides: Any) -> Wang2022Config:
    v.one_of("preset", preset, PRESETS)
    base = dict(regimes=("none",), normalization="mean", precision="fp32", probe_per_class=1)
    return Wang2022Config(preset=preset, **{**base, **PRESETS[preset], **overrides})


# ------------------------------------------------------------------------------------ the runs


def build_runs(cfg: Wang2022Config) -> pd.DataFrame:
    """One row per run: loss x weighting x seed (ES cells are checkpoints of the IW runs)."""
    rows = [dict(run=f"wang2022_{cfg.preset}_{loss}_{w}_s{seed}", preset=cfg.preset, comparable=cfg.comparable(),
                 loss=loss, weighting=w, regime="none", seed=seed, data_seed=cfg.data_seed)
            for seed in cfg.seeds for loss in cfg.losses for w in cfg.weightings]
    return pd.DataFrame(rows, columns=ID_COLUMNS)


def prepare(data: Cifar10, cfg: Wang2022Config, device: torch.device | str) -> PairData:
    """Cat (0) and dog (1) training pools of ``per_class`` images each and the pair's test images, on the
    device once (the binary study's pair builder; no other-class or noise images)."""
    pair_cfg = BinaryConfig(classes=("cat", "dog"), per_class=cfg.per_class, other_eval=0, noise_eval=0,
                            probe_per_class=1, data_seed=cfg.data_seed)
    return prepare_pair(data, pair_cfg, device)


def class_count_weights(labels: np.ndarray) -> np.ndarray:
    """Their ``compute_weights``: 1 / (count of the example's class in this set)."""
    counts = np.bincount(labels, minlength=2)
    return 1.0 / counts[labels]


def training_set(run: pd.Series, pair: PairData, cfg: Wang2022Config) -> sweep.TrainingSet:
    """The run's imbalanced training split with its weights, and the held-out validation split weighted
    by 1 / class count (their validation weights; our IW validation loss uses the same)."""
    rng = np.random.default_rng([cfg.data_seed, int(run["seed"])])
    dogs = rng.choice(pair.pool[1], cfg.per_class // cfg.imbalance, replace=False)
    images = np.concatenate([pair.pool[0], dogs])
    order = rng.permutation(len(images))
    train, val = np.sort(images[order[:cfg.n_train()]]), np.sort(images[order[cfg.n_train():]])
    labels = pair.labels.cpu().numpy()
    raw = class_count_weights(labels[train])
    power = {"none": 0.0, "iw": 1.0, "iw_exp": cfg.weight_exponent}[run["weighting"]]
    weights = losses.weight_exponent(raw, power)  # raw ** power, rescaled to mean 1
    return sweep.TrainingSet(train, weights, val, class_count_weights(labels[val]))


def stacks(runs: pd.DataFrame, cfg: Wang2022Config) -> Iterator[pd.DataFrame]:
    """Runs that share an optimiser (IW-Exp has its own) train together, at most ``max_stack`` at once."""
    for _, group in runs.groupby(runs["weighting"] == "iw_exp", sort=False):
        for start in range(0, len(group), cfg.max_stack):
            yield group.iloc[start:start + cfg.max_stack]


def train_stack(group: pd.DataFrame, pair: PairData, cfg: Wang2022Config, progress: Any = None,
                checkpoint: Any = None) -> dict[str, pd.DataFrame]:
    """Train the runs of ``group`` together; return each run's tidy metrics table."""
    sets = [training_set(run, pair, cfg) for _, run in group.iterrows()]
    exp = set(group["weighting"] == "iw_exp")
    if len(exp) != 1:
        raise ValueError("a stack mixes IW-Exp runs (their own optimiser) with others")
    stack_cfg = replace(cfg, lr=cfg.exp_lr, momentum=cfg.exp_momentum) if exp.pop() else cfg

    def evaluate(trainer: Trainer, class_weights: torch.Tensor) -> dict[str, np.ndarray]:
        pred = trainer.predict_logits(pair.images[pair.test]).argmax(-1)
        y = pair.labels[pair.test]
        return {"test_accuracy": metrics.accuracy(pred, y).cpu().numpy(),
                "test_balanced_accuracy": metrics.balanced_accuracy(pred, y).cpu().numpy(),
                "fraction_positive_pair": metrics.fraction_predicted(pred, 1).cpu().numpy(),
                **sweep.validation_metrics(trainer, sets, pair.images, pair.labels)}  # their ES monitor: the accuracy

    specs = [LossSpec(name, alpha=cfg.poly_alpha) for name in group["loss"]]
    return sweep.train_stack(group, sets, pair.images, pair.labels, 2, stack_cfg, evaluate, ID_COLUMNS, progress,
                             losses=specs, checkpoint=checkpoint)


def run_grid(data: Cifar10, cfg: Wang2022Config, out: str | Path, device: str = "cpu",
             progress: bool = True) -> pd.DataFrame:
    """Train every run of the grid without complete results in ``out`` (resumable); the merged table."""
    pair: list[PairData] = []  # prepared on first use: a complete grid needs no data on the device

    def train_group(group: pd.DataFrame, on_epoch: Any, checkpoint: Any) -> dict[str, pd.DataFrame]:
        if not pair:
            pair.append(prepare(data, cfg, torch.device(device)))
        return train_stack(group, pair[0], cfg, on_epoch, checkpoint)

    return sweep.run_stacks(build_runs(cfg), out, lambda todo: stacks(todo, cfg), train_group,
                            sweep.config_record(cfg, data.source, device), cfg.epochs, progress,
                            desc=f"wang2022 ({cfg.preset})")


def projected_cost(cfg: Wang2022Config) -> dict[str, float]:
    """What the grid trains and evaluates, in model-images (one image through one run counts one)."""
    runs = len(build_runs(cfg))
    n_eval = len(cfg.eval_epochs())
    test = 2000  # CIFAR-10's cat and dog test images
    return {"runs": runs, "stacks": sum(1 for _ in stacks(build_runs(cfg), cfg)),
            "train_images": runs * cfg.epochs * cfg.n_train(),
            "eval_images": runs * n_eval * (test + cfg.n_images() - cfg.n_train()),
            "evaluated_epochs": n_eval}


# ------------------------------------------------------------------------------ the comparison


def their_cells(path: str | Path = THEIR_RESULTS) -> pd.DataFrame:
    """Their per-seed test accuracies as (loss, cell, selection, seed, acc)."""
    table = pd.read_csv(path)
    return pd.DataFrame({"loss": table["loss"].map(THEIR_LOSSES), "cell": table["query"],
                         "selection": np.where(table["query"].str.endswith("-ES"), "theirs", "last"),
                         "seed": table["seed"], "acc": table["acc"]})


def our_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Our per-seed test accuracies as (loss, cell, selection, seed, acc): the last evaluated epoch of every
    run, and for the IW runs the checkpoint each early-stopping rule picks (the first best epoch)."""
    rows = []
    for run, part in table.sort_values("epoch").groupby("run", sort=False):
        first = part.iloc[0]
        cell = {"none": "No IW", "iw": "IW", "iw_exp": "IW-Exp"}[first["weighting"]]
        key = dict(loss=first["loss"], seed=int(first["seed"]), preset=first["preset"],
                   comparable=str(first["comparable"]) == "True")
        rows.append(dict(key, cell=cell, selection="last", acc=part["test_accuracy"].iloc[-1]))
        if first["weighting"] != "none":
            for selection, column, best in (("theirs", "val_accuracy_weighted", "idxmax"),
                                            ("ours", "val_loss_weighted", "idxmin"),
                                            ("test", "test_accuracy", "idxmax")):
                if part[column].isna().all():  # e.g. a run that diverged before its first evaluation
                    continue
                at = getattr(part[column], best)()
                rows.append(dict(key, cell=f"{cell}-ES", selection=selection, acc=part.loc[at, "test_accuracy"]))
    return pd.DataFrame(rows)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): :func:`iwshift.report.mean_interval` as a tuple (lo = hi = NaN with fewer than 2 values)."""
    interval = mean_interval(values)
    return interval.mean, interval.low, interval.high


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean(a) - mean(b), lo, hi): the 95 % Welch interval of the difference of means."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
        return diff, float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    diff = float(a.mean() - b.mean())
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, dof) * se)
    return diff, diff - half, diff + half


def verdict(lo: float, hi: float, delta: float = DELTA) -> str:
    """Our replication verdict from the interval [lo, hi] of ours - theirs (see :data:`RULE`)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if -delta < lo and hi < delta:
        return "replicated"
    if lo > delta or hi < -delta:
        return "differs"
    return "inconclusive"


def effect_reading(lo: float, hi: float, delta: float = DELTA) -> str:
    """The claims report's reading of an effect's interval (:func:`iwshift.report.classify`): negligible /
    positive / negative / unclear."""
    reading = classify(Interval((lo + hi) / 2, lo, hi, 2), delta)
    return "unclear" if reading == "undefined" else reading


def compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """One row per (loss, cell, our selection): our and their means with intervals, the difference, the
    verdict. ES cells are compared for each of our selections against their (single) ES numbers."""
    rows = []
    for loss in LOSSES:
        for cell in CELLS:
            them = theirs[(theirs["loss"] == loss) & (theirs["cell"] == cell)]["acc"]
            selections = SELECTIONS if cell.endswith("-ES") else ("last",)
            for selection in selections:
                mine = pd.Series(dtype=float) if ours.empty else \
                    ours[(ours["loss"] == loss) & (ours["cell"] == cell) & (ours["selection"] == selection)]["acc"]
                m, mlo, mhi = t_interval(mine)
                t, tlo, thi = t_interval(them)
                d, dlo, dhi = welch_interval(mine, them)
                rows.append(dict(loss=loss, cell=cell, selection=selection, n_ours=len(mine), ours=m, ours_lo=mlo,
                                 ours_hi=mhi, n_theirs=len(them), theirs=t, theirs_lo=tlo, theirs_hi=thi,
                                 diff=d, diff_lo=dlo, diff_hi=dhi,
                                 verdict=verdict(dlo, dhi) if len(mine) else "not run"))
    return pd.DataFrame(rows)


HEADLINES = (("poly_wang", "IW", "No IW"), ("ce", "IW", "No IW"), ("poly_wang", "IW-Exp", "No IW"),
             ("ce", "IW-Exp", "No IW"))


def headline(ours: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Their headline comparisons (e.g. poly IW - poly No IW), each for us and for them (Welch intervals)."""
    rows = []
    for loss, a, b in HEADLINES:
        row: dict[str, Any] = dict(comparison=f"{LOSS_LABELS[loss]}: {a} − {b}")
        for who, cells in (("ours", ours), ("theirs", theirs)):
            d, lo, hi = welch_interval(_last(cells, loss, a), _last(cells, loss, b))
            reading = effect_reading(lo, hi) if math.isfinite(d) else "not run"
            row.update({who: d, f"{who}_lo": lo, f"{who}_hi": hi, f"{who}_reading": reading})
        rows.append(row)
    return pd.DataFrame(rows)


def _last(cells: pd.DataFrame, loss: str, cell: str) -> pd.Series:
    """The per-seed accuracies of a cell at the last epoch (empty when nothing ran)."""
    if cells.empty:
        return pd.Series(dtype=float)
    return cells[(cells["loss"] == loss) & (cells["cell"] == cell) & (cells["selection"] == "last")]["acc"]


def _fmt(mean: float, lo: float, hi: float, signed: bool = False) -> str:
    """``mean [lo, hi]`` to 3 decimals (with a sign for differences); the mean alone without an interval."""
    if not math.isfinite(mean):
        return "—"
    spec = "+.3f" if signed else ".3f"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:{spec}}"
    return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def markdown(comparison: pd.DataFrame, headlines: pd.DataFrame, label: str = "") -> str:
    """The side-by-side table and the headline table as markdown."""
    lines = [label, ""] if label else []
    lines += ["| loss | cell | our checkpoint | ours (n) | theirs (n) | ours − theirs | verdict |",
              "|---|---|---|---|---|---|---|"]
    for r in comparison.itertuples():
        lines.append(f"| {LOSS_LABELS[r.loss]} | {r.cell} | {SELECTION_LABELS[r.selection]} | "
                     f"{_fmt(r.ours, r.ours_lo, r.ours_hi)} ({r.n_ours}) | "
                     f"{_fmt(r.theirs, r.theirs_lo, r.theirs_hi)} ({r.n_theirs}) | "
                     f"{_fmt(r.diff, r.diff_lo, r.diff_hi, signed=True)} | {r.verdict} |")
    lines += ["", f"Test accuracy, mean over seeds [95 % t-interval]; difference: Welch 95 % interval. "
              f"Verdict: {RULE}.", "",
              "| their headline comparison | ours | reading | theirs | reading |", "|---|---|---|---|---|"]
    for r in headlines.itertuples():
        lines.append(f"| {r.comparison} | {_fmt(r.ours, r.ours_lo, r.ours_hi, signed=True)} | {r.ours_reading} | "
                     f"{_fmt(r.theirs, r.theirs_lo, r.theirs_hi, signed=True)} | {r.theirs_reading} |")
    lines += ["", f"Reading (δ = {DELTA}), the claims report's: *negligible* if the interval lies within ±δ, "
              f"*positive* if it lies at or above +δ, *negative* if at or below −δ, *unclear* otherwise."]
    return "\n".join(lines) + "\n"


def figure(comparison: pd.DataFrame, title: str = "") -> "plt.Figure":
    """Ours vs theirs per cell (mean and 95 % interval), one panel per loss."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LOSSES), figsize=(11, 3.6), sharey=True, squeeze=False)
    for ax, loss in zip(axes[0], LOSSES):
        part = comparison[comparison["loss"] == loss].reset_index(drop=True)
        x = np.arange(len(part))
        for who, shift, color in (("theirs", -0.15, "tab:gray"), ("ours", 0.15, "tab:blue")):
            mean = part[who].to_numpy(float)
            lo, hi = part[f"{who}_lo"].to_numpy(float), part[f"{who}_hi"].to_numpy(float)
            err = np.vstack([mean - lo, hi - mean])
            ax.errorbar(x + shift, mean, yerr=np.where(np.isfinite(err), err, 0), fmt="o", color=color,
                        capsize=3, label=who)
        ax.set_xticks(x, [f"{c}\n{s}" if s != "last" else c for c, s in zip(part["cell"], part["selection"])],
                      fontsize=7)
        ax.set_title(LOSS_LABELS[loss])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (balanced cat/dog)")
    axes[0][0].legend()
    fig.suptitle(title or "Wang et al. (2022), imbalanced binary CIFAR-10: ours vs theirs")
    fig.tight_layout()
    return fig


def summarise(table: pd.DataFrame, theirs_path: str | Path = THEIR_RESULTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparison, headlines) of our merged run table against their results."""
    ours, theirs = our_cells(table) if len(table) else pd.DataFrame(), their_cells(theirs_path)
    return compare(ours, theirs), headline(ours, theirs)


def describe(table: pd.DataFrame) -> str:
    """The label of a set of our runs: comparable (their protocol) or not."""
    comparable = bool(table["comparable"].astype(str).eq("True").all())  # read back as text
    presets = ", ".join(sorted(table["preset"].unique()))
    seeds = table["seed"].nunique()
    if comparable:
        return f"Our runs: preset {presets}, their protocol, {seeds} seeds."
    return (f"**NOT COMPARABLE with their numbers** — our runs use preset {presets}, a scaled-down protocol "
            f"(smaller CNN, fewer images and epochs; {seeds} seeds): a check of the pipeline, not a replication.")


def section(results_root: str | Path) -> str:
    """The claims report's section: the comparison for the runs under ``<results_root>/wang2022`` (their
    protocol) and ``<results_root>/wang2022_cpu`` (scaled down, labelled not comparable)."""
    parts = ["## Replication: Wang et al. (ICLR 2022), imbalanced binary CIFAR-10", "",
             "Their released per-seed results (`paper-results/wang2022/their_results.csv`, from "
             "KeAWang/importance-weighting-interpolating-classifiers, `notebooks/results.csv`) beside ours, "
             "trained by `replicate_wang2022.py` through our stacked trainer.", ""]
    found = False
    for folder in ("wang2022", "wang2022_cpu"):
        table = sweep.merge(Path(results_root) / folder)
        if table.empty:
            continue
        found = True
        comparison, headlines = summarise(table)
        parts += [f"### `{folder}/`", "", markdown(comparison, headlines, describe(table))]
    if not found:
        comparison, headlines = summarise(pd.DataFrame())
        parts += [f"Not run yet: `{COMMAND}` trains the grid ({len(build_runs(make_config('paper')))} runs, "
                  f"resumable) and writes this comparison. Their numbers alone:", "",
                  markdown(comparison, headlines)]
    return "\n".join(parts).rstrip() + "\n"

