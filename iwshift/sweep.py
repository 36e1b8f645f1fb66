"""Sweeps of CNN runs: the shared configuration, training a stack of runs, and the per-run results format.

Every CIFAR study (binary, extension) describes its grid as a table of runs and says, for a group of
runs, which images each trains on with which weights and what to measure; this module does the rest, the
same way for all: stacks of K runs through the one :class:`~iwshift.train.Trainer`, ``<out>/<run>/
metrics.csv`` then ``config.json`` (atomically; a run with both is complete and skipped on rerun), and
:func:`merge` into one tidy table.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import config as v
from . import results
from .config import ConfigError
from .losses import class_weight_matrix
from .models import StackedCNN
from .results import BadResultFile
from .train import (Checkpoint, LossSpec, SideBySide, StackedRuns, Trainer, checkpoint_now, fit_table,
                    read_checkpoint)

from .choices import CNN_REGIMES as REGIMES  # noqa: E402
from .choices import CONVOLUTIONS  # noqa: E402
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
    convolutions: str = "torch"      # torch (cuDNN / oneDNN) | triton (iwshift.triton_conv, CUDA) | auto (per layer)
    probe_per_class: int = 64        # training images per class for the gradient norms
    eval_every: int = 0              # 0: dense early then sparser (see eval_epochs); k: 1, 2, 3, 5, 7, k, 2k, ...
    max_stack: int = 84              # runs trained together in one stack at most (a GPU wants many)
    side_by_side: int = 1            # each stack trained as this many smaller stacks at once (CUDA: a stream each)
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
        self.convolutions = v.one_of("convolutions", self.convolutions, CONVOLUTIONS)
        self.probe_per_class = v.at_least("probe_per_class", self.probe_per_class, 1)
        self.eval_every = v.at_least("eval_every", self.eval_every, 0)
        self.max_stack = v.at_least("max_stack", self.max_stack, 1)
        self.side_by_side = v.at_least("side_by_side", self.side_by_side, 1)

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


def validation_metrics(trainer: Trainer, sets: Sequence[TrainingSet], images: torch.Tensor,
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


def train_stack(
    group: pd.DataFrame,
    sets: Sequence[TrainingSet | tuple[np.ndarray, np.ndarray]],
    images: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    cfg: CnnConfig,
    evaluate: Callable[[Trainer | SideBySide, torch.Tensor], dict[str, np.ndarray]],
    id_columns: Sequence[str],
    progress: Callable[[int], None] | None = None,
    losses: Sequence[LossSpec] | None = None,
    defer_until: Sequence[int] | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, pd.DataFrame]:
    """Train the runs of ``group`` together (run k on ``sets[k]`` = (image indices, weights)) and return
    each run's tidy metrics table (:func:`iwshift.train.fit_table`): ``id_columns`` of the group, the epoch,
    the epoch's running train loss (weighted and not) and accuracy, and whatever
    ``evaluate(trainer, class_weights)`` measures. ``progress(epoch)`` is called after every epoch. With
    ``cfg.side_by_side`` S > 1 the group trains as S smaller stacks side by side (:class:`iwshift.train.SideBySide`:
    ``evaluate`` sees one trainer of all the group's runs, in order)."""
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
    precision = resolve_precision(cfg.precision, images.device)
    parts = np.array_split(np.arange(K), min(cfg.side_by_side, K))
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
    trainer = trainers[0] if len(trainers) == 1 else SideBySide(trainers)
    # the evaluation's class weights from the sets' own (float64) weights; 0 for a class a run never sees
    train_labels = labels.cpu().numpy()[runs.train_index]
    class_weights = torch.tensor(class_weight_matrix(train_labels, np.stack([s.weights for s in sets]), n_classes,
                                                     absent=0.0), dtype=torch.float32, device=images.device)
    announced = False

    def on_epoch(epoch: int) -> None:
        nonlocal announced
        if trainers[0].model.tuned and not announced:  # convolutions="auto": its choice (tuned before step 1)
            for part, t in zip(parts, trainers):
                print(f"convolutions auto, stack of {len(part)}: {t.model.tuning_summary()}", file=sys.stderr,
                      flush=True)
            announced = True
        if progress is not None:
            progress(epoch)

    table = fit_table(trainer, group[list(id_columns)], cfg.epochs, cfg.eval_epochs(),
                      lambda t: evaluate(t, class_weights), checkpoint, on_epoch)
    tables = {name: with_status(part.reset_index(drop=True)) for name, part in table.groupby("run", sort=False)}
    for part, t in zip(parts, trainers):
        if t.model.tuned:  # each run's config.json records which kernels ran its convolutions
            for name in group["run"].iloc[part]:
                tables[name].attrs["record"] = {"convolutions_per_layer": list(t.model.layer_convolutions)}
    return tables


# ------------------------------------------------------------------------------------------ run health
# Columns of every run's metrics.csv that say whether its numbers can be trusted: did it fit its training
# set (eval mode), did its loss become non-finite (diverged: its rows end there), did it collapse to a
# constant predictor. Consumers read missing columns as train_accuracy_eval = train_accuracy,
# diverged = collapsed = False, status = "ok".

TRAIN_EVAL_SIZE = 2000      # training examples per run for the eval-mode training accuracy (all when fewer)
COLLAPSE_FRACTION = 0.999   # a run predicting one class for this fraction of the test images has collapsed
DIVERGED_EXIT_STATUS = 3    # a study script's exit status when a run diverged (2: bad input, 1: missing results)


def train_eval_subsets(sets: Sequence[tuple[np.ndarray, np.ndarray]], n_examples: int,
                       size: int = TRAIN_EVAL_SIZE, seed: int = 0) -> list[np.ndarray]:
    """Each run's fixed evaluation subset of its training set: its ``size`` examples with the smallest
    seeded random key (all of them when fewer), so that runs sharing training examples share the subset
    and one forward pass over the union serves the stack."""
    key = np.random.default_rng(seed).random(n_examples)
    out = []
    for index, _ in sets:
        index = np.asarray(index)
        out.append(np.sort(index[np.argsort(key[index], kind="stable")[:size]]) if len(index) > size else index)
    return out


def train_accuracy_eval(trainer: Trainer, subsets: Sequence[np.ndarray], inputs: torch.Tensor,
                        labels: torch.Tensor) -> np.ndarray:
    """(K,) evaluation-mode accuracy (dropout off, batch-norm running statistics) of each run on its own
    training subset: did the network fit its data?"""
    union = np.unique(np.concatenate(subsets))
    union_t = torch.as_tensor(union, device=inputs.device)
    correct = (trainer.predict_logits(inputs[union_t]).argmax(-1) == labels[union_t]).cpu().numpy()
    return np.array([correct[k, np.searchsorted(union, s)].mean() for k, s in enumerate(subsets)])


def constant_predictor(pred: torch.Tensor, n_classes: int, fraction: float = COLLAPSE_FRACTION) -> np.ndarray:
    """(K,) whether each run predicts a single class for at least ``fraction`` of its (K, M) predictions."""
    counts = torch.nn.functional.one_hot(pred.clamp(0, n_classes - 1), n_classes).sum(1)  # (K, C)
    return (counts.max(1).values >= fraction * pred.shape[1]).cpu().numpy()


def health_columns(trainer: Trainer, subsets: Sequence[np.ndarray], inputs: torch.Tensor, labels: torch.Tensor,
                   test_pred: torch.Tensor, n_classes: int) -> dict[str, np.ndarray]:
    """The run-health columns of an evaluated epoch (the ``evaluate`` callbacks add them): eval-mode
    training accuracy, divergence so far, collapse to a constant predictor on the task's test images."""
    return {"train_accuracy_eval": train_accuracy_eval(trainer, subsets, inputs, labels),
            "diverged": trainer.diverged.copy(), "collapsed": constant_predictor(test_pred, n_classes)}


def with_status(table: pd.DataFrame) -> pd.DataFrame:
    """Each run's metrics (rows of ``run`` and ``epoch``, one run or many) with its rows after its first
    diverged evaluation dropped, and its ``status``: the state at its last kept evaluation, the same in every
    row of the run (diverged wins over collapsed)."""
    if "diverged" not in table:
        return table
    first = table[table["diverged"].astype(bool)].groupby("run")["epoch"].min()
    cut = table["run"].map(first)
    table = table[cut.isna() | (table["epoch"] <= cut)].reset_index(drop=True)
    last = table.groupby("run", sort=False).tail(1).set_index("run")
    collapsed = last["collapsed"].astype(bool) if "collapsed" in last else False
    status = pd.Series(np.where(last["diverged"].astype(bool), "diverged", np.where(collapsed, "collapsed", "ok")),
                       index=last.index)
    return table.assign(status=table["run"].map(status))


def divergence_summary(table: pd.DataFrame, prog: str) -> str | None:
    """The line a script ends with when runs of ``table`` diverged (None when none did)."""
    if "status" not in table or not len(table):
        return None
    status = table.groupby("run", sort=False)["status"].last()
    diverged = status.index[status == "diverged"].tolist()
    if not diverged:
        return None
    shown = ", ".join(diverged[:5]) + (f" and {len(diverged) - 5} more" if len(diverged) > 5 else "")
    return (f"{prog}: {len(diverged)} of {len(status)} runs diverged (non-finite training loss; stopped, "
            f"status=diverged in their metrics.csv): {shown}")


# ------------------------------------------------------------------------ results on disk, resume

# Config fields that list the grid (each run's own row says which of their values it has) or say how a
# run is computed, not what (precision: the one used is compared): a run trained in another grid, stack
# or job is the same run.
GRID_FIELDS = ("regimes", "seeds", "weights", "ratios", "remedies", "weight_sources", "setting", "classes", "study")
HOW_FIELDS = ("max_stack", "side_by_side", "compile", "precision", "convolutions")
FLAG_OF = {"data": "data_dir", "precision_used": "precision"}  # record fields named by their flag
CHECKPOINT_EVERY = 10            # epochs between a stack's checkpoints (and on SIGTERM / SIGUSR1)
CHECKPOINTS = ".checkpoints"     # <out>/.checkpoints/<stack>.pt, removed once the stack's results are written
PROGRESS_EVERY_S = 30.0          # a progress line this often when stderr is not a terminal


def load_run(out: str | Path, run: str) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """A run's (metrics table, config record) when both files exist; None when either is missing;
    :class:`~iwshift.results.BadResultFile` (one line) when they do not parse or validate: JSON with this
    run's record, the metrics file the record's digest names, the run's columns, numbers where numbers
    belong, its own rows, epochs increasing from 1."""
    folder = Path(out) / run
    config_path, metrics_path = folder / "config.json", folder / "metrics.csv"
    if not (config_path.is_file() and metrics_path.is_file()):
        return None
    record = results.load_json(config_path)
    if not (isinstance(record, dict) and isinstance(record.get("run"), dict) and record["run"].get("run") == run
            and isinstance(record.get("config"), dict)):
        raise BadResultFile(config_path, "is not this run's record (its run and config fields are missing or wrong)")
    digest = record.get("metrics_sha256")  # absent in results saved before it was recorded
    if digest is not None and digest != results.file_digest(metrics_path):
        raise BadResultFile(metrics_path, "is not the file its config.json recorded (truncated or changed)")
    row = record["run"]
    text = [k for k, value in row.items() if isinstance(value, str)] + ["status"]
    table = results.load_table(metrics_path, required=[*row, "epoch"], text=text)
    if not (table["run"] == run).all():
        raise BadResultFile(metrics_path, "holds rows of another run")
    epoch = table["epoch"]
    if not (pd.api.types.is_integer_dtype(epoch) and epoch.is_monotonic_increasing and epoch.is_unique
            and epoch.min() >= 1):
        raise BadResultFile(metrics_path, "its epochs are not whole numbers increasing from 1")
    return table, record


def is_complete(out: str | Path, run: str) -> bool:
    """The run has results that parse and validate (:func:`load_run`)."""
    try:
        return load_run(out, run) is not None
    except BadResultFile:
        return False


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples are lists, numpy numbers are Python's), as saved in config.json."""
    return json.loads(json.dumps(value, default=results._jsonable))


def run_identity(row: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What a run's results depend on: its row, the data source, every config field but the grid's lists
    and how it is computed, and the precision used."""
    config = {k: val for k, val in record.get("config", {}).items() if k not in GRID_FIELDS + HOW_FIELDS}
    return _plain({**row, "data": record.get("data"), **config, "precision_used": record.get("precision_used")})


def _same(a: Any, b: Any) -> bool:
    """Equal as saved values: NaN equals NaN, 1 equals 1.0, True does not equal 1."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def first_difference(saved: dict[str, Any], wanted: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """(field, saved value, wanted value) of the first field that differs, or None."""
    for key in [*wanted, *(k for k in saved if k not in wanted)]:
        if not _same(saved.get(key), wanted.get(key)):
            return key, saved.get(key), wanted.get(key)
    return None


def todo_runs(runs: pd.DataFrame, out: str | Path, record: dict[str, Any], overwrite: bool = False,
              desc: str | None = "sweep") -> pd.DataFrame:
    """The runs to train: those without results, those whose result files are bad (each named in one line
    on stderr), and, with ``overwrite``, those saved with another configuration. Without ``overwrite`` a
    saved run whose configuration (or data source) differs from ``record`` is a one-line ConfigError
    naming the first differing field (before anything is trained)."""
    out = Path(out)
    todo = []
    for row in runs.to_dict("records"):
        try:
            loaded = load_run(out, row["run"])
        except BadResultFile as err:
            if desc is not None:
                print(f"{desc}: {err}; run {row['run']} is not complete: training it again", file=sys.stderr)
            todo.append(True)
            continue
        if loaded is None:
            todo.append(True)
            continue
        saved = loaded[1]
        difference = first_difference(run_identity(saved["run"], saved), run_identity(row, record))
        if difference is not None and not overwrite:
            name, old, new = difference
            raise ConfigError(FLAG_OF.get(name, name),
                              f"run {row['run']} in {out}/ was trained with {name} = {_short(old)}, not "
                              f"{_short(new)}; rerun with --overwrite to retrain such runs, or use another --out")
        todo.append(difference is not None)
    return runs[todo]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def stack_checkpoint(out: Path, group: pd.DataFrame, record: dict[str, Any], every: int) -> Checkpoint:
    """A stack's checkpoint: named after its runs, resumed only by the same runs with the same configuration."""
    names = list(group["run"])
    key = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    identity = {row["run"]: run_identity(row, record) for row in group.to_dict("records")}
    meta = {"runs": names, "identity": identity}
    side_by_side = record.get("config", {}).get("side_by_side", 1)
    if side_by_side > 1:  # its state is the smaller stacks' (the key only then: older checkpoints still resume)
        meta["side_by_side"] = side_by_side
    return Checkpoint(out / CHECKPOINTS / f"stack-{key}.pt", every, meta)


def remove_finished_checkpoints(out: Path) -> None:
    """Delete the checkpoints whose runs all have complete results (and the folder when empty)."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return
    for path in folder.glob("stack-*.pt"):
        saved = read_checkpoint(path)
        if saved is None or all(is_complete(out, run) for run in saved["meta"].get("runs", [])):
            path.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


@contextmanager
def checkpoint_on_signals() -> Iterator[None]:
    """While a sweep trains in this process's main thread: SIGTERM or SIGUSR1 (a batch system's time limit
    or preemption) saves the running stack's last finished epoch, then exits (status 128 + signal). Signals
    someone else handles already (submitit's job environment) are left to them."""
    import signal
    import threading

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in wanted}

    def handler(signum: int, frame: Any) -> None:
        saved = checkpoint_now()
        print(f"signal {signum}: saved {saved} checkpoint(s); rerun the same command to continue", file=sys.stderr,
              flush=True)
        raise SystemExit(128 + signum)

    for sig, before in previous.items():
        if before in (signal.SIG_DFL, None):
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            if before in (signal.SIG_DFL, None):
                signal.signal(sig, before if before is not None else signal.SIG_DFL)


class Progress:
    """Progress of a sweep in run-epochs: a bar on a terminal, else a line on stderr about every
    :data:`PROGRESS_EVERY_S` seconds (runs, epoch, elapsed, projected remaining)."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="run-epoch", desc=desc, unit_scale=True)
        self.position = self.first = 0
        self.start = self.last_line = time.perf_counter()
        self.stack = (0, 0, 0, 0)

    def begin_stack(self, number: int, count: int, runs: int, epochs: int) -> Callable[[int], None]:
        """The per-epoch callback of stack ``number`` of ``count`` (``runs`` runs x ``epochs`` epochs)."""
        base = self.position
        self.stack = (number, count, runs, epochs)

        def on_epoch(epoch: int) -> None:
            if self.position == self.first == base and epoch > 1:  # a resumed stack: its past is no work done here
                self.first = base + (epoch - 1) * runs
            self.update(base + epoch * runs, epoch)

        return on_epoch

    def update(self, position: int, epoch: int) -> None:
        if self.bar is not None:
            self.bar.update(position - self.position)
        self.position = position
        now = time.perf_counter()
        if self.bar is None and self.enabled and now - self.last_line >= PROGRESS_EVERY_S:
            self.last_line = now
            elapsed = now - self.start
            done = position - self.first
            left = elapsed / done * (self.total - position) if done > 0 else float("nan")
            number, count, runs, epochs = self.stack
            print(f"{self.desc}: stack {number}/{count} ({runs} runs), epoch {epoch}/{epochs}; "
                  f"{position}/{self.total} run-epochs; elapsed {_duration(elapsed)}, about {_duration(left)} left",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_stacks(
    runs: pd.DataFrame, out: str | Path, groups: Callable[[pd.DataFrame], Iterable[pd.DataFrame]],
    train_group: Callable[[pd.DataFrame, Callable[[int], None], Checkpoint], dict[str, pd.DataFrame]],
    record: dict[str, Any], epochs: int, progress: bool = True, desc: str = "sweep", overwrite: bool = False,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> pd.DataFrame:
    """Train, stack by stack, the runs without complete results in ``out`` (:func:`todo_runs`: a run saved
    with another configuration is an error unless ``overwrite``); write each run's ``metrics.csv`` then
    ``config.json`` (its row of ``runs`` + ``record`` + the metrics file's digest); return the merged table.
    ``train_group(group, on_epoch, checkpoint)`` trains a stack, saving to and resuming from ``checkpoint``."""
    out = Path(out)
    todo = todo_runs(runs, out, record, overwrite, desc)
    if len(todo):
        stacks = list(groups(todo))
        meter = Progress(len(todo) * epochs, desc, progress)
        with checkpoint_on_signals():
            for number, group in enumerate(stacks, 1):
                t0 = time.perf_counter()
                checkpoint = stack_checkpoint(out, group, record, checkpoint_every)
                tables = train_group(group, meter.begin_stack(number, len(stacks), len(group), epochs), checkpoint)
                for row in group.to_dict("records"):
                    folder = out / row["run"]
                    (folder / "config.json").unlink(missing_ok=True)  # incomplete until both files are new
                    results.write_table(folder / "metrics.csv", tables[row["run"]])
                    results.write_json(folder / "config.json",
                                       {"run": row, "stack_size": len(group), **record,
                                        **tables[row["run"]].attrs.get("record", {}),  # what the stack chose
                                        "metrics_sha256": results.file_digest(folder / "metrics.csv")})
                checkpoint.path.unlink(missing_ok=True)
                if progress and meter.bar is None:  # a line per stack where there is no progress bar (logs)
                    print(f"{desc}: stack {number}/{len(stacks)}: {len(group)} runs x {epochs} epochs in "
                          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        meter.close()
    remove_finished_checkpoints(out)
    return merge(out, runs["run"])


def merge(out: str | Path, names: Sequence[str] | None = None, strict: bool = False) -> pd.DataFrame:
    """One tidy table of the complete runs in ``out`` (all of them, or those named). A run whose files do
    not validate is left out, or with ``strict`` raises :class:`~iwshift.results.BadResultFile`."""
    out = Path(out)
    if names is None:
        names = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != CHECKPOINTS) if out.is_dir() else []
    tables = []
    for name in names:
        try:
            loaded = load_run(out, name)
        except BadResultFile:
            if strict:
                raise
            continue
        if loaded is not None:
            tables.append(loaded[0])
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
    if chosen.get("convolutions") in ("triton", "auto") and not device.startswith("cuda"):  # before any write
        raise ConfigError("convolutions", f"{chosen['convolutions']} runs on CUDA only (the device is {device})")
    return preset, chosen
