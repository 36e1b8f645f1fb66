"""Configuration: every study's knobs, declared once, and the rules that follow from them.

A knob is one field of a study's configuration (:func:`knob`): its default, its choices or check, and what
kind of field it is --

* ``what`` (the default): it changes a run's numbers, so it is part of a saved run's identity -- for the runs
  it ``applies`` to (``l2`` only to the runs of the ``l2`` regime, a remedy's parameter only to that remedy's
  runs); a saved record without the field (older than it) reads as the value the field was before it existed
  (``was``, by default its default), so adding a knob whose default keeps the old behaviour keeps the saved
  results;
* ``grid``: a list of the grid (each run's row says which of its values the run has);
* ``how``: how a run is computed, not what (the size of a stack, the kernels): a run trained either way is
  the same run.

A script's upper-case constant of the same name (``EPOCHS`` for ``epochs``) is the knob's default there and its
flag (:mod:`iwshift.cli`); presets list only what differs from the defaults. The remedies' parameters are
knobs too, one per parameter of the registry (:func:`with_remedy_knobs`). Validation is declared with the
field and run by :class:`Knobs`; a bad value is a one-line :class:`~iwshift.checks.ConfigError`.

This module imports no torch, pandas or numba: a script's ``--help`` and its argument errors answer at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from . import checks as v
from .checks import ConfigError
from .losses import REMEDIES, remedy_names, remedy_params

WHAT, GRID, HOW = "what", "grid", "how"


def knob(default: Any, help: str = "", *, choices: Iterable[str] | None = None,
         check: Callable[[str, Any], Any] | None = None, kind: str = WHAT,
         applies: Callable[[dict[str, Any]], bool] | None = None, was: Any = MISSING) -> Any:
    """A configuration field (see the module docstring). ``check(name, value)`` returns the value to keep or
    raises ConfigError; ``choices`` allows those names only (for a list: each, none repeated);
    ``applies(row)`` says whether the knob changes the run of that row; ``was`` is its value in a saved record
    made before the field existed (default: the field's default)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("a knob's default must be immutable (a tuple, not a list)")
    if kind not in (WHAT, GRID, HOW):
        raise ValueError(f"unknown kind {kind!r}")
    return field(default=default, metadata={"help": help, "choices": tuple(choices) if choices is not None else None,
                                            "check": check, "kind": kind, "applies": applies,
                                            "was": default if was is MISSING else was})


class Knobs:
    """Base of the study configurations: checks every field as its :func:`knob` declares, then
    :meth:`validate` (checks across fields)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value, choices, check = getattr(self, f.name), f.metadata.get("choices"), f.metadata.get("check")
            if choices is not None:
                value = v.all_of(f.name, value, choices) if isinstance(value, (list, tuple)) else \
                    v.one_of(f.name, value, choices)
            if check is not None:
                value = check(f.name, value)
            setattr(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields (none by default)."""


def knob_help(cls: type, name: str) -> str:
    return next((f.metadata.get("help", "") for f in fields(cls) if f.name == name), "")


def knob_choices(cls: type) -> dict[str, tuple[str, ...]]:
    """Field name -> allowed names, for the fields that have choices."""
    return {f.name: f.metadata["choices"] for f in fields(cls) if f.metadata.get("choices")}


def defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls)}


def with_remedy_knobs(cls: type) -> type:
    """Add one knob per parameter of the remedies' registry (:data:`iwshift.losses.REMEDIES`) to the class
    (before ``@dataclass`` sees it): its default, help and check from the registry; it applies to the runs whose
    ``remedy`` uses it."""
    annotations = dict(cls.__dict__.get("__annotations__", {}))
    for param in remedy_params().values():
        users = frozenset(name for name, r in REMEDIES.items() if param in r.params)
        annotations[param.name] = type(param.default).__name__
        setattr(cls, param.name, knob(param.default, param.help, check=param.check,
                                      applies=lambda row, users=users: row.get("remedy", "plain") in users))
    cls.__annotations__ = annotations
    return cls


# ----------------------------------------------------------------------------------- what a run is


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples are lists), as a saved record holds it."""
    return json.loads(json.dumps(value, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


def identity(cls: type, row: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What the numbers of the run ``row`` depend on, from a record (``config`` + ``data`` + ``precision_used``,
    as saved beside its results or about to be): its row, the data source, the precision used, and every
    ``what`` knob of ``cls`` that applies to the row -- a knob the record lacks at the value it ``was``."""
    config = record.get("config", {})
    out = {**row, "data": record.get("data"), "precision_used": record.get("precision_used")}
    for f in fields(cls):
        if f.metadata.get("kind", WHAT) != WHAT:
            continue
        applies = f.metadata.get("applies")
        if applies is not None and not applies(row):
            continue
        out[f.name] = config[f.name] if f.name in config else f.metadata.get("was", f.default)
    return _plain(out)


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


def with_preset(cls: type, name: str, presets: dict[str, dict[str, Any]], **overrides: Any) -> Any:
    """``cls`` at the preset ``name`` (its differences from the defaults), then ``overrides``."""
    v.one_of("preset", name, presets)
    return cls(**{**presets[name], **overrides})


# ----------------------------------------------------------------------------------- named values


NORMALIZATIONS = ("mean", "weight_sum")              # of the weighted loss (iwshift.losses)
PRECISIONS = ("auto", "fp32", "bf16")                # CNN training precision
CNN_REGIMES = ("none", "l2", "dropout", "batchnorm")  # of the CNN studies
ENGINES = ("auto", "torch", "fused")                 # of the trainer (iwshift.train)
CONVOLUTIONS = ("torch", "triton", "auto")           # the CNN's grouped convolutions (iwshift.models)
UPDATES = ("foreach", "triton")                     # the SGD update (iwshift.train.optimizer)
LAUNCHERS = ("local", "submitit", "submitit-local")  # where the runs train (iwshift.launch)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
BINARY_SETTINGS = ("weighting", "imbalance")
EXTENSION_STUDIES = ("covariate", "label")
COVARIATE_SOURCES = ("none", "true", "domain", "kliep", "kmm")
LABEL_SOURCES = ("none", "true", "bbse", "mlls")
SYNTHETIC_DATASETS = ("separable", "moons", "moons_minority0", "moons_minority1")
MODELS_2D = ("lr", "mlp")
WEIGHTINGS = ("equal", "up", "down")  # (weight of class 0, weight of class 1): (1, 1), (1, w), (w, 1)
SYNTHETIC_REGIMES = ("none", "l2", "dropout")
WANG_LOSSES = {"ce": "plain", "poly_wang": "poly_wang"}  # their names -> our remedies
WANG_WEIGHTINGS = ("none", "iw", "iw_exp")   # No IW, IW, IW-Exp


def _momentum(name: str, value: float) -> float:
    if not 0 <= value < 1:
        raise ConfigError(name, f"must be in [0, 1) (got {value:g})")
    return float(value)


# --------------------------------------------------------------------------------- the CNN studies


def _regime_is(regime: str) -> Callable[[dict[str, Any]], bool]:
    return lambda row: row.get("regime") == regime


@dataclass
class CnnConfig(Knobs):
    """What every CNN study shares: regimes, seeds, model, optimiser, evaluation schedule."""

    regimes: Sequence[str] = knob(CNN_REGIMES, "regularisation regimes", choices=CNN_REGIMES, kind=GRID)
    seeds: Sequence[int] = knob((0, 1, 2), "model seeds", check=v.seeds_list, kind=GRID)
    data_seed: int = knob(0, "data seed", check=v.integer_at_least(0))
    width: float = knob(1.0, "CNN width multiplier", check=v.positive_finite)
    epochs: int = knob(500, "SGD epochs", check=v.integer_at_least(1))
    lr: float = knob(0.01, "SGD learning rate", check=v.positive_finite)
    momentum: float = knob(0.9, "SGD momentum", check=_momentum)
    batch_size: int = knob(16, "mini-batch size", check=v.integer_at_least(1))
    l2: float = knob(1e-3, "weight decay of the l2 regime", check=v.non_negative_finite, applies=_regime_is("l2"))
    dropout: float = knob(0.5, "dropout on the two hidden fully connected layers, in the dropout regime",
                          check=v.probability_below_one, applies=_regime_is("dropout"))
    normalization: str = knob("weight_sum", "of the weighted loss", choices=NORMALIZATIONS)
    precision: str = knob("auto", "auto (bf16 on CUDA, the measured choice on CPU) | fp32 | bf16 (autocast)",
                          choices=PRECISIONS, kind=HOW)
    compile: bool = knob(False, "torch.compile the stacked model", kind=HOW)
    convolutions: str = knob("torch", "torch (cuDNN/oneDNN) | triton (CUDA) | auto (per layer, CUDA)",
                             choices=CONVOLUTIONS, kind=HOW)
    probe_per_class: int = knob(64, "training images per class for the gradient norms", check=v.integer_at_least(1))
    eval_every: int = knob(0, "0: dense early then sparser (see eval_epochs); k: 1, 2, 3, 5, 7, k, 2k, ...",
                           check=v.integer_at_least(0))
    max_stack: int = knob(84, "runs trained together in one stack at most", check=v.integer_at_least(1), kind=HOW)
    side_by_side: int = knob(1, "each stack trained as this many smaller stacks at once (CUDA: a stream each)",
                             check=v.integer_at_least(1), kind=HOW)

    def eval_epochs(self) -> list[int]:
        """Dense early, sparser later: every epoch up to 10, every 5th to 50, every 10th to 200, and
        every 25th (or epochs 1, 2, 3, 5, 7 and every ``eval_every``-th); always the last."""
        if self.eval_every:
            epochs = {1, 2, 3, 5, 7} | set(range(self.eval_every, self.epochs + 1, self.eval_every))
        else:
            epochs = {e for e in range(1, self.epochs + 1)
                      if e <= 10 or (e <= 50 and e % 5 == 0) or (e <= 200 and e % 10 == 0) or e % 25 == 0}
        return sorted(e for e in epochs | {self.epochs} if e <= self.epochs)


def _two_classes(name: str, classes: Sequence[str]) -> list[str]:
    classes = list(classes)
    if len(classes) != 2:
        raise ConfigError(name, f"needs exactly two class names (got {len(classes)})")
    return v.all_of(name, classes, CIFAR10_CLASSES)


@dataclass
@with_remedy_knobs
class BinaryConfig(CnnConfig):
    """The CIFAR-10 binary study (:mod:`iwshift.cifar_binary`); :data:`BINARY_PRESETS` for the ``cpu`` preset."""

    setting: str = knob("weighting", "weighting (w on the positive class) or imbalance (positive:negative ratio)",
                        choices=BINARY_SETTINGS, kind=GRID)
    classes: Sequence[str] = knob(("cat", "dog"), "negative, positive", check=_two_classes, kind=GRID)
    weights: Sequence[float] = knob((1 / 128, 1 / 32, 1 / 8, 1.0, 8.0, 32.0, 128.0),
                                    "importance weight of the positive class", check=v.positive_values, kind=GRID)
    ratios: Sequence[float] = knob((1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0, 16.0), "positive:negative",
                                   check=v.positive_values, kind=GRID)
    per_class: int = knob(5000, "training images per class (the balanced pool)", check=v.integer_at_least(2))
    other_eval: int = knob(8000, "test images of the other 8 classes for their predicted fraction",
                           check=v.integer_at_least(0))
    noise_eval: int = knob(1000, "uniform-noise images", check=v.integer_at_least(0))
    remedies: Sequence[str] = knob(("plain",), "each swept against plain weighted cross-entropy",
                                   choices=remedy_names(), kind=GRID)


BINARY_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Measured on the JPEG copy here (2 CPU cores): see docs/protocol.md, "Presets".
    "cpu": dict(per_class=500, width=0.25, epochs=150, other_eval=500, noise_eval=250, eval_every=10,
                weights=(1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0)),
}


def _study_is(study: str) -> Callable[[dict[str, Any]], bool]:
    return lambda row: row.get("study") == study


def _estimated(row: dict[str, Any]) -> bool:
    return row.get("weight_source") in ("domain", "kliep", "kmm", "bbse", "mlls")


def _covariate_estimated(row: dict[str, Any]) -> bool:
    return row.get("study") == "covariate" and _estimated(row)


def _four_counts(name: str, counts: Sequence[int]) -> list[int]:
    counts = [v.at_least(name, c, 1) for c in counts]
    if len(counts) != 4:
        raise ConfigError(name, f"needs 4 counts (cat, dog, automobile, truck), got {len(counts)}")
    return counts


def _imbalance(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 1):
        raise ConfigError(name, f"must be finite and >= 1 (got {value:g})")
    return float(value)


def _open_unit(name: str, value: float) -> float:
    if not 0 < value < 1:
        raise ConfigError(name, f"must be in (0, 1) (got {value:g})")
    return float(value)


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(name, f"must be > 0 (got {value:g})")
    return float(value)


COVARIATE_DEFAULT = ("none", "true", "domain", "kliep")  # kmm (skada) needs an n x n kernel: opt in
ESTIMATOR_FEATURES = ("penultimate", "pixels")


@dataclass
class ExtensionConfig(CnnConfig):
    """The CIFAR-10 extension (:mod:`iwshift.cifar_extension`): covariate or label shift."""

    study: str = knob("covariate", "covariate or label shift", choices=EXTENSION_STUDIES, kind=GRID)
    weight_sources: Sequence[str] = knob((), "the study's weight sources (default: all but kmm)", kind=GRID)
    source_counts: Sequence[int] = knob((500, 5000, 500, 5000), "cats, dogs, automobiles, trucks in the training set",
                                        check=_four_counts, applies=_study_is("covariate"))
    imbalance: float = knob(10.0, "label shift: largest / smallest class count of the source", check=_imbalance,
                            applies=_study_is("label"))
    per_class: int = knob(5000, "label shift: images of the largest source class", check=v.integer_at_least(10),
                          applies=_study_is("label"))
    holdout: float = knob(0.2, "label shift: held-out source fraction (BBSE, calibration)", check=_open_unit,
                          applies=_study_is("label"))
    estimator_features: str = knob("penultimate", "covariate estimators' features: penultimate (the unweighted "
                                   "network's penultimate layer, trained on the source) | pixels (principal "
                                   "components of 8x8-pooled pixels)", choices=ESTIMATOR_FEATURES,
                                   applies=_covariate_estimated, was="pixels")
    feature_dims: int = knob(16, "covariate estimators: principal components of their features",
                             check=v.integer_at_least(1), applies=_covariate_estimated)
    kernel_dims: int = knob(5, "... of which the kernel estimators use the first few", check=v.integer_at_least(1),
                            applies=_covariate_estimated)
    clip: float = knob(float("inf"), "estimated weights clipped at this value", check=_positive, applies=_estimated)
    self_normalize: bool = knob(True, "estimated weights rescaled to mean 1 on the training set", applies=_estimated)

    def validate(self) -> None:
        allowed = COVARIATE_SOURCES if self.study == "covariate" else LABEL_SOURCES
        default = COVARIATE_DEFAULT if self.study == "covariate" else LABEL_SOURCES
        flag = f"{self.study}_weights"  # the script's flag: --covariate-weights / --label-weights
        self.weight_sources = v.all_of(flag, list(self.weight_sources) or list(default), allowed)
        if self.kernel_dims > self.feature_dims:
            raise ConfigError("kernel_dims", f"must be <= --feature-dims ({self.feature_dims})")


EXTENSION_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": dict(width=0.25, epochs=60, eval_every=10, source_counts=(50, 500, 50, 500), per_class=500),
}


def _only_none(name: str, regimes: Sequence[str]) -> list[str]:
    if list(regimes) != ["none"]:
        raise ConfigError(name, "this replication has no regularisation regimes (only none)")
    return ["none"]


@dataclass
@with_remedy_knobs
class Wang2022Config(CnnConfig):
    """The replication of Wang et al. (ICLR 2022) (:mod:`iwshift.wang2022`): defaults are their protocol, as
    read in their released code; ``fixed_data`` draws the dogs and the train/validation split once, as their
    code does, rather than per seed."""

    regimes: Sequence[str] = knob(("none",), "only none", check=_only_none, kind=GRID)
    seeds: Sequence[int] = knob(tuple(range(10)), "model seeds", check=v.seeds_list, kind=GRID)
    epochs: int = knob(400, "SGD epochs", check=v.integer_at_least(1))
    lr: float = knob(0.001, "SGD learning rate (No IW, IW)", check=v.positive_finite)
    batch_size: int = knob(64, "mini-batch size", check=v.integer_at_least(1))
    normalization: str = knob("mean", "of the weighted loss", choices=NORMALIZATIONS)
    precision: str = knob("fp32", "fp32 (theirs) | bf16 | auto", choices=PRECISIONS, kind=HOW)
    probe_per_class: int = knob(1, "(no gradient norms are reported here)", check=v.integer_at_least(1))
    eval_every: int = knob(1, "their checkpoint callback looks at every epoch", check=v.integer_at_least(0))
    preset: str = knob("paper", "paper (their protocol) or cpu (scaled down)", kind=GRID)
    losses: Sequence[str] = knob(tuple(WANG_LOSSES), "ce (cross-entropy), poly_wang (their poly-tailed loss)",
                                 choices=tuple(WANG_LOSSES), kind=GRID)
    weightings: Sequence[str] = knob(WANG_WEIGHTINGS, "No IW, IW (1 / class count), IW-Exp (weights ** exponent)",
                                     choices=WANG_WEIGHTINGS, kind=GRID)
    per_class: int = knob(5000, "images of the majority class (cat); the dogs are per_class / imbalance",
                          check=v.integer_at_least(2))
    imbalance: int = knob(10, "cats per dog", check=v.integer_at_least(1))
    train_fraction: float = knob(0.8, "the rest is the held-out validation split", check=_open_unit)
    weight_exponent: float = knob(1.5, "IW-Exp: weights (1 / class count) ** exponent", check=v.non_negative_finite)
    exp_lr: float = knob(0.008, "IW-Exp's learning rate", check=v.positive_finite)
    exp_momentum: float = knob(0.0, "IW-Exp's momentum", check=_momentum)
    fixed_data: bool = knob(True, "the dogs and the split drawn once (data seed), as their code; False: per seed",
                            was=False)

    def validate(self) -> None:
        if self.per_class // self.imbalance < 2:
            raise ConfigError("imbalance", f"leaves fewer than 2 dogs of {self.per_class} (got {self.imbalance})")
        if not 2 <= (1 - self.train_fraction) * self.n_images() <= self.n_images() - 2:
            raise ConfigError("train_fraction", "leaves fewer than 2 training or validation images")

    def n_images(self) -> int:
        return self.per_class + self.per_class // self.imbalance

    def n_train(self) -> int:
        return int(self.train_fraction * self.n_images())  # as their split: int(0.8 * n)


# the fields that make a run comparable with their numbers (with the data source and the precision)
WANG_PROTOCOL_FIELDS = ("per_class", "imbalance", "train_fraction", "width", "epochs", "lr", "momentum", "exp_lr",
                        "exp_momentum", "weight_exponent", "batch_size", "poly_alpha", "eval_every", "fixed_data")
WANG_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # NOT comparable with their numbers: a first look (width 1/4, 1,100 images, 40 epochs, bf16 on CPU)
    "cpu": dict(per_class=1000, width=0.25, epochs=40, eval_every=5, seeds=(0, 1, 2), precision="auto"),
}


# ----------------------------------------------------------------------------------- the 2-D study


def _fraction(name: str, value: float) -> float:
    if not 0 < value <= 1:
        raise ConfigError(name, f"must be in (0, 1] (got {value:g})")
    return float(value)


def _model_l2(model: str) -> Callable[[dict[str, Any]], bool]:
    return lambda row: row.get("regime") == "l2" and row.get("model") == model


@dataclass
@with_remedy_knobs
class SyntheticConfig(Knobs):
    """The 2-D study (:mod:`iwshift.synthetic`)."""

    datasets: Sequence[str] = knob(SYNTHETIC_DATASETS, "2-D data sets", choices=SYNTHETIC_DATASETS, kind=GRID)
    models: Sequence[str] = knob(MODELS_2D, "logistic regression and/or an MLP", choices=MODELS_2D, kind=GRID)
    weightings: Sequence[str] = knob(WEIGHTINGS, "up: weight on class 1; down: on class 0", choices=WEIGHTINGS,
                                     kind=GRID)
    regimes: Sequence[str] = knob(SYNTHETIC_REGIMES, "dropout applies to the MLP only", choices=SYNTHETIC_REGIMES,
                                  kind=GRID)
    seeds: Sequence[int] = knob((0, 1, 2, 3, 4), "model seeds", check=v.seeds_list, kind=GRID)
    data_seed: int = knob(0, "data seed", check=v.integer_at_least(0))
    weight: float = knob(10.0, "importance weight of the up-weighted class", check=v.positive_finite)
    l2_lr: float = knob(0.1, "weight decay of logistic regression in the l2 regime", check=v.non_negative_finite,
                        applies=_model_l2("lr"))
    l2_mlp: float = knob(0.01, "weight decay of the MLP in the l2 regime", check=v.non_negative_finite,
                         applies=_model_l2("mlp"))
    dropout: float = knob(0.5, "dropout probability in the dropout regime", check=v.probability_below_one,
                          applies=_regime_is("dropout"))
    hidden: int = knob(64, "MLP hidden units", check=v.integer_at_least(1))
    epochs: int = knob(10_000, "SGD epochs", check=v.integer_at_least(1))
    batch_size: int = knob(8, "mini-batch size", check=v.integer_at_least(1))
    lr_scale: float = knob(0.01, "learning rate = lr_scale / sigma_max(X_train)", check=v.positive_finite)
    normalization: str = knob("mean", "of the weighted loss", choices=NORMALIZATIONS)
    n_per_class: int = knob(256, "separable data: points per class", check=v.integer_at_least(2))
    n_moons: int = knob(1024, "moons: points (half train, half test)", check=v.integer_at_least(8))
    minority_fraction: float = knob(0.1, "imbalanced moons: fraction of the minority class kept",
                                    check=_fraction)
    evals_per_decade: int = knob(3, "metric snapshots per decade of epochs (3: 1, 2, 5, 10, ...)",
                                 check=v.integer_at_least(1))
    remedies: Sequence[str] = knob(("plain",), "remedies beyond plain run in the none regime",
                                   choices=remedy_names(holdout=False), kind=GRID)
    equal_step: bool = knob(False, "rescale each run's weights to mean 1 over its training set")
    extreme_weights: Sequence[float] = knob((1.0, 10.0, 100.0, 1000.0), "the extreme-weighting study's weights on "
                                            "either class", check=v.positive_values, kind=GRID)
    engine: str = knob("auto", "the trainer's engine: auto (fused on CPU), fused, or torch", choices=ENGINES, kind=HOW)

    def drw_start(self) -> int:
        """First (1-based) epoch of deferred re-weighting that uses the weights."""
        return REMEDIES["drw"].defer_until(self.epochs, self)

    def eval_epochs(self) -> list[int]:
        """Epochs after which metrics and parameters are recorded: log-spaced (1, 2, 5, 10, ... for 3
        per decade), the paper's snapshot epochs, and the last epoch."""
        if self.evals_per_decade == 3:  # the familiar 1-2-5 series rather than 1-2.2-4.6
            epochs = {int(m * 10 ** d) for d in range(7) for m in (1, 2, 5)}
        else:
            epochs = {int(round(10 ** (i / self.evals_per_decade)))
                      for i in range(int(math.log10(self.epochs) * self.evals_per_decade) + 1)}
        epochs |= set(BOUNDARY_EPOCHS) | {self.epochs}
        return sorted(e for e in epochs if 1 <= e <= self.epochs)


BOUNDARY_EPOCHS = (1, 10, 100, 1000, 10000)
