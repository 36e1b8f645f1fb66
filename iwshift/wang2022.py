"""Replication of Wang, Chatterji, Haque & Hashimoto (ICLR 2022), imbalanced binary CIFAR-10, side by side
with their released per-seed results (``paper-results/wang2022/their_results.csv``).

Their protocol, as read in their released code (KeAWang/importance-weighting-interpolating-classifiers):

* data: CIFAR-10 cat (their class 0) vs dog (class 1); a "step" imbalance of 10 keeps all 5,000 cats and
  500 of the 5,000 dogs; that set is split 80 / 20 at random into training (4,400 images, about 4,000 +
  400) and validation (1,100); no augmentation; ``acc`` is the accuracy on the balanced test set
  (1,000 + 1,000). As in their code (``src/datasets/utils.py`` draws the dogs from a generator seeded 0;
  ``split_dataset(..., seed=0)``), the dogs and the split are drawn once, from the data seed, and shared by
  every seed (``fixed_data``; ``--no-fixed-data`` redraws them per seed, adding data variance to the seeds);
* model: the Byrd & Lipton CNN (their ``ConvNet``: our :class:`~iwshift.models.StackedCNN`, width 1);
* SGD, batch 64, lr 0.001, momentum 0.9, 400 epochs; the IW-Exp variant: lr 0.008, momentum 0;
* importance weights: ``compute_weights`` gives each training example 1 / (its class's count); IW-Exp
  raises them to the power 1.5. Their model multiplies each per-example loss by its weight and averages
  over the batch; their ``ReweightedDataset`` (at their HEAD) rescales ``w ** exponent`` to mean 1 over the
  training set, as we do (``normalization`` "mean": sum w l / batch);
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
difference ours - theirs with its Welch 95 % interval; the verdict (:func:`compare`): *replicated* when that
interval lies within ± the equivalence margin, *differs* when it lies beyond it, *inconclusive* otherwise. The
margin is chosen from their own between-seed spread (:func:`equivalence_margin`), and each cell states its
minimal detectable difference (the half-width a Welch interval of the two seed counts would have).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import losses, metrics, results, stats
from .cifar_binary import PairData, prepare_pair
from .cifar_data import Cifar10
from .cnn import CnnStudy, TrainingSet, cnn_trainer, resolve_precision, validation_metrics
from .config import (WANG_LOSSES, WANG_PRESETS, WANG_PROTOCOL_FIELDS, WANG_WEIGHTINGS, BinaryConfig, Wang2022Config,
                     defaults, with_preset)
from .losses import LossSpec
from .sweep import StackPlan
from .train import Trainer

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

LOSSES = tuple(WANG_LOSSES)  # their loss names
WEIGHTINGS = WANG_WEIGHTINGS
PRESETS = WANG_PRESETS
THEIR_RESULTS = Path(__file__).resolve().parents[1] / "paper-results" / "wang2022" / "their_results.csv"
LOSS_LABELS = {"ce": "cross-entropy", "poly_wang": "poly-tailed (α = 1)"}
THEIR_LOSSES = {"Cross Entropy": "ce", "Poly-tailed Loss": "poly_wang"}
CELLS = ("No IW", "IW", "IW-Exp", "IW-ES", "IW-Exp-ES")
SELECTIONS = ("theirs", "ours", "test")  # early-stopping checkpoint rules (see the module docstring)
SELECTION_LABELS = {"last": "last epoch", "theirs": "their rule: max IW val. accuracy",
                    "ours": "our rule: min IW val. loss", "test": "test as validation (oracle)"}
COMMAND = "python replicate_wang2022.py --preset paper --device cuda"
ID_COLUMNS = ["run", "preset", "comparable", "loss", "remedy", "weighting", "regime", "seed", "data_seed"]
OFFICIAL_DATA = "official CIFAR-10"  # what the data source of a comparable run must say (iwshift.cifar_data)
DELTA = 0.02  # the claims report's practical threshold for accuracies: the margin never exceeds it


def make_config(preset: str, **overrides: Any) -> Wang2022Config:
    return with_preset(Wang2022Config, preset, PRESETS, preset=preset, **overrides)


def comparable(cfg: Wang2022Config, data_source: str, precision_used: str) -> tuple[bool, list[str]]:
    """Whether runs of ``cfg`` on ``data_source`` in ``precision_used`` follow their protocol, and what differs:
    every protocol field at their value, the official CIFAR-10 files (not a copy), fp32 (as their runs)."""
    theirs = defaults(Wang2022Config)
    why = [f"{f} = {getattr(cfg, f)} (theirs: {theirs[f]})" for f in WANG_PROTOCOL_FIELDS
           if getattr(cfg, f) != theirs[f]]
    if OFFICIAL_DATA not in data_source:
        why.append(f"data: {data_source} (theirs: the official CIFAR-10 files)")
    if precision_used != "fp32":
        why.append(f"precision {precision_used} (theirs: fp32)")
    return not why, why


# ------------------------------------------------------------------------------------ the runs


def build_runs(cfg: Wang2022Config, is_comparable: bool = False) -> pd.DataFrame:
    """One row per run: loss x weighting x seed (ES cells are checkpoints of the IW runs)."""
    rows = [dict(run=f"wang2022_{cfg.preset}_{loss}_{w}_s{seed}", preset=cfg.preset, comparable=is_comparable,
                 loss=loss, remedy=WANG_LOSSES[loss], weighting=w, regime="none", seed=seed, data_seed=cfg.data_seed)
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


def training_set(run: dict[str, Any], pair: PairData, cfg: Wang2022Config) -> TrainingSet:
    """The run's imbalanced training split with its weights, and the held-out validation split weighted
    by 1 / class count (their validation weights; our IW validation loss uses the same). The dogs and the split
    come from the data seed alone (``fixed_data``, as their code) or from (data seed, seed)."""
    rng = np.random.default_rng(cfg.data_seed if cfg.fixed_data else [cfg.data_seed, int(run["seed"])])
    dogs = rng.choice(pair.pool[1], cfg.per_class // cfg.imbalance, replace=False)
    images = np.concatenate([pair.pool[0], dogs])
    order = rng.permutation(len(images))
    train, val = np.sort(images[order[:cfg.n_train()]]), np.sort(images[order[cfg.n_train():]])
    labels = pair.labels.cpu().numpy()
    raw = class_count_weights(labels[train])
    power = {"none": 0.0, "iw": 1.0, "iw_exp": cfg.weight_exponent}[run["weighting"]]
    weights = losses.weight_exponent(raw, power)  # raw ** power, rescaled to mean 1
    return TrainingSet(train, weights, val, class_count_weights(labels[val]))


class Wang2022Study(CnnStudy):
    """The grid, declared for the runner: runs that share an optimiser (IW-Exp has its own) train together."""

    name = "wang2022"
    id_columns = ID_COLUMNS

    def runs(self) -> pd.DataFrame:
        return build_runs(self.config, self.comparable()[0])

    def comparable(self) -> tuple[bool, list[str]]:
        """(``auto`` precision is bf16 on either device: never theirs.)"""
        return comparable(self.config, self.data_source, resolve_precision(self.config.precision, "cpu"))

    chunk_by = ("seeds", "weightings", "losses")

    def stack_key(self, run: dict[str, Any]) -> Any:
        return run["weighting"] == "iw_exp"

    def train_size(self, run: dict[str, Any]) -> int:
        return self.config.n_train()

    def build(self, group: pd.DataFrame, device: str, out: Path) -> StackPlan:
        cfg = self.config
        pair = self.prepared(device, lambda data: prepare(data, cfg, torch.device(device)))
        rows = group.to_dict("records")
        sets = [training_set(run, pair, cfg) for run in rows]
        exp = {run["weighting"] == "iw_exp" for run in rows}
        if len(exp) != 1:
            raise ValueError("a stack mixes IW-Exp runs (their own optimiser) with others")
        stack_cfg = replace(cfg, lr=cfg.exp_lr, momentum=cfg.exp_momentum) if exp.pop() else cfg
        trainer = cnn_trainer(group, sets, pair.images, pair.labels, 2, stack_cfg,
                              losses=[LossSpec(r["remedy"], **({"poly_alpha": cfg.poly_alpha}
                                                               if r["remedy"] == "poly_wang" else {})) for r in rows])

        def evaluate(trainer: Trainer) -> dict[str, np.ndarray]:
            pred = trainer.predict_logits(pair.images[pair.test]).argmax(-1)
            y = pair.labels[pair.test]
            return {"test_accuracy": metrics.accuracy(pred, y).cpu().numpy(),
                    "test_balanced_accuracy": metrics.balanced_accuracy(pred, y).cpu().numpy(),
                    "fraction_positive_pair": metrics.fraction_predicted(pred, 1).cpu().numpy(),
                    "diverged": trainer.diverged.copy(),
                    **validation_metrics(trainer, sets, pair.images, pair.labels)}  # their ES monitor: the accuracy

        return StackPlan(trainer, evaluate)

    def record(self, device: str) -> dict[str, Any]:
        record = super().record(device)
        ok, why = comparable(self.config, self.data_source, record["precision_used"])
        return {**record, "comparable": ok, "not_comparable_because": why}


def projected_cost(cfg: Wang2022Config) -> dict[str, float]:
    """What the grid trains and evaluates, in model-images (one image through one run counts one)."""
    study = Wang2022Study(cfg)
    runs = study.runs()
    n_eval = len(cfg.eval_epochs())
    test = 2000  # CIFAR-10's cat and dog test images
    return {"runs": len(runs), "stacks": sum(1 for _ in study.stacks(runs)),
            "train_images": len(runs) * cfg.epochs * cfg.n_train(),
            "eval_images": len(runs) * n_eval * (test + cfg.n_images() - cfg.n_train()),
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


POWER = 0.8  # the chance that a true difference of zero is called replicated, with their seed count on both sides


def equivalence_margin(theirs: pd.DataFrame, power: float = POWER) -> float:
    """The replication's equivalence margin, from their own between-seed spread: the smallest margin m such that,
    for a cell with their pooled between-seed standard deviation s and their seed count n on both sides, a true
    difference of zero is called *replicated* with probability ``power``: the difference of means d ~ N(0, se),
    se = s sqrt(2/n), its Welch interval d ± t se must lie within ±m, so m = (t + z) se with z the normal
    quantile of (1 + power) / 2."""
    from scipy import stats as scipy_stats

    last = theirs[theirs["selection"] == "last"] if "selection" in theirs else theirs
    spreads = last.groupby(["loss", "cell"])["acc"].agg(["std", "count"])
    s = float(np.sqrt((spreads["std"] ** 2).mean()))
    n = int(spreads["count"].median())
    se = s * math.sqrt(2 / n)
    t = float(scipy_stats.t.ppf(0.975, 2 * n - 2))
    return (t + float(scipy_stats.norm.ppf((1 + power) / 2))) * se


def compare(ours: pd.DataFrame, theirs: pd.DataFrame, margin: float | None = None) -> pd.DataFrame:
    """One row per (loss, cell, our selection): our and their means with intervals, the difference with its Welch
    interval, the minimal detectable difference (the Welch half-width our and their seed counts give with their
    spread), and the verdict against the equivalence ``margin`` (default :func:`equivalence_margin`). ES cells are
    compared for each of our selections against their (single) ES numbers."""
    margin = equivalence_margin(theirs) if margin is None else margin
    rows = []
    for loss in LOSSES:
        for cell in CELLS:
            them = theirs[(theirs["loss"] == loss) & (theirs["cell"] == cell)]["acc"]
            selections = SELECTIONS if cell.endswith("-ES") else ("last",)
            for selection in selections:
                mine = pd.Series(dtype=float) if ours.empty else \
                    ours[(ours["loss"] == loss) & (ours["cell"] == cell) & (ours["selection"] == selection)]["acc"]
                m, t, d = stats.mean_interval(mine), stats.mean_interval(them), stats.welch_interval(mine, them)
                sd = float(np.std(them, ddof=1)) if len(them) > 1 else float("nan")
                mdd = stats.welch_half_width(sd, max(len(mine), len(them)), sd, len(them)) if len(them) > 1 else \
                    float("nan")
                rows.append(dict(loss=loss, cell=cell, selection=selection, n_ours=len(mine), ours=m.mean,
                                 ours_lo=m.low, ours_hi=m.high, n_theirs=len(them), theirs=t.mean, theirs_lo=t.low,
                                 theirs_hi=t.high, diff=d.mean, diff_lo=d.low, diff_hi=d.high, margin=margin,
                                 detectable=mdd,
                                 verdict=stats.equivalence_verdict(d, margin) if len(mine) else "not run"))
    return pd.DataFrame(rows)


HEADLINES = (("poly_wang", "IW", "No IW"), ("ce", "IW", "No IW"), ("poly_wang", "IW-Exp", "No IW"),
             ("ce", "IW-Exp", "No IW"))


def headline(ours: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Their headline comparisons (e.g. poly IW - poly No IW), each for us and for them (Welch intervals)."""
    rows = []
    for loss, a, b in HEADLINES:
        row: dict[str, Any] = dict(comparison=f"{LOSS_LABELS[loss]}: {a} − {b}")
        for who, cells in (("ours", ours), ("theirs", theirs)):
            d = stats.welch_interval(_last(cells, loss, a), _last(cells, loss, b))
            reading = stats.classify(d, DELTA) if math.isfinite(d.mean) else "not run"
            row.update({who: d.mean, f"{who}_lo": d.low, f"{who}_hi": d.high,
                        f"{who}_reading": "unclear" if reading == stats.UNDEFINED else reading})
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
    lines += ["| loss | cell | our checkpoint | ours (n) | theirs (n) | ours − theirs | detectable | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for r in comparison.itertuples():
        lines.append(f"| {LOSS_LABELS[r.loss]} | {r.cell} | {SELECTION_LABELS[r.selection]} | "
                     f"{_fmt(r.ours, r.ours_lo, r.ours_hi)} ({r.n_ours}) | "
                     f"{_fmt(r.theirs, r.theirs_lo, r.theirs_hi)} ({r.n_theirs}) | "
                     f"{_fmt(r.diff, r.diff_lo, r.diff_hi, signed=True)} | ±{r.detectable:.3f} | {r.verdict} |")
    margin = float(comparison["margin"].iloc[0]) if len(comparison) else float("nan")
    lines += ["", f"Test accuracy, mean over seeds [95 % t-interval]; difference: Welch 95 % interval; "
              f"*detectable*: the smallest difference the cell's seed counts can resolve with their spread (the Welch "
              f"half-width). Verdict: *replicated* when the difference's interval lies within ±{margin:.3f}, the "
              f"equivalence margin chosen from their own between-seed spread (with their {POWER:.0%} chance of "
              f"calling a true difference of zero replicated at their seed count); *differs* when it lies beyond "
              f"it; *inconclusive* otherwise, or with fewer than 2 seeds on either side.", "",
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


def describe(table: pd.DataFrame, records: Sequence[dict[str, Any]] = ()) -> str:
    """The label of a set of our runs: comparable (their protocol, their data, fp32) or not, and why not."""
    comparable = bool(table["comparable"].astype(bool).all())
    presets = ", ".join(sorted(table["preset"].unique()))
    seeds = table["seed"].nunique()
    if comparable:
        return f"Our runs: preset {presets}, their protocol, {seeds} seeds."
    why = sorted({reason for r in records for reason in r.get("not_comparable_because", [])})
    return (f"**NOT COMPARABLE with their numbers** — our runs (preset {presets}, {seeds} seeds) differ from their "
            f"protocol: {'; '.join(why) or 'a scaled-down protocol'}. A check of the pipeline, not a replication.")


def section(results_root: str | Path) -> str:
    """The claims report's section: the comparison for the runs under ``<results_root>/wang2022`` (their
    protocol) and ``<results_root>/wang2022_cpu`` (scaled down, labelled not comparable)."""
    parts = ["## Replication: Wang et al. (ICLR 2022), imbalanced binary CIFAR-10", "",
             "Their released per-seed results (`paper-results/wang2022/their_results.csv`, from "
             "KeAWang/importance-weighting-interpolating-classifiers, `notebooks/results.csv`) beside ours, "
             "trained by `replicate_wang2022.py` through our stacked trainer.", ""]
    found = False
    for folder in ("wang2022", "wang2022_cpu"):
        table, records = results.load_runs(Path(results_root) / folder)
        if table.empty:
            continue
        found = True
        comparison, headlines = summarise(table)
        parts += [f"### `{folder}/`", "", markdown(comparison, headlines, describe(table, list(records.values())))]
    if not found:
        comparison, headlines = summarise(pd.DataFrame())
        parts += [f"Not run yet: `{COMMAND}` trains the grid ({len(build_runs(make_config('paper')))} runs, "
                  f"resumable) and writes this comparison. Their numbers alone:", "",
                  markdown(comparison, headlines)]
    return "\n".join(parts).rstrip() + "\n"

