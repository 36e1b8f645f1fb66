"""Importance-weighted losses, and the remedies: one registry, :data:`REMEDIES`.

Two normalisations of a mini-batch's weighted loss, given per-example losses l_i and weights w_i:

``"mean"``        sum_i w_i l_i / n          -- the importance-weighted empirical risk (unbiased IW-ERM);
                                             a weight w scales the step size by w as well.
``"weight_sum"``  sum_i w_i l_i / sum_i w_i  -- what ``torch.nn.CrossEntropyLoss(weight=...)`` computes
                                             (and the Byrd & Lipton code uses): a weighted *average*, so the
                                             overall step size does not grow with the weights.

With every w_i = 1 both equal the plain mean loss. All functions reduce over the last dimension, so a
stack of K runs (shape ``(K, n)``) gives K losses.

**Remedies.** Later work proposed ways to make importance weights matter again for networks that fit their
training data. Each is declared once, here, as a :class:`Remedy`: its name, what it is, its parameters (each
a :class:`Param`: default, help, check) and what it changes — a per-example loss, the weights, when the
weights start, a held-out split. Everything else follows from the entry: the studies' ``--remedies``
choices, one flag and one config field per parameter, the trainer's dispatch (:class:`StackLosses`), the
resume identity (a parameter counts only for the runs of its remedy) and the docs' table
(:func:`remedies_table`). An engine without a fast version of a loss (the fused 2-D engine knows ``plain``,
``logit_adjusted`` and ``poly``) leaves such stacks to the torch engine, or refuses when forced.

torch is imported inside the functions that compute, so that the registry itself loads without it: a
script's ``--help`` lists the remedies and their flags at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .checks import ConfigError, finite, non_negative_finite, positive_finite

if TYPE_CHECKING:
    import torch

NORMALIZATIONS = ("mean", "weight_sum")


def reduce_weighted(per_example: torch.Tensor, weights: torch.Tensor, normalization: str) -> torch.Tensor:
    """Weighted reduction over the last dimension (see module docstring)."""
    total = (weights * per_example).sum(-1)
    if normalization == "mean":
        return total / per_example.shape[-1]
    if normalization == "weight_sum":
        return total / weights.sum(-1)
    raise ValueError(f"unknown normalization {normalization!r}; choose from {', '.join(NORMALIZATIONS)}")


def weighted_bce_with_logits(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, normalization: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy on logits (label 1 = positive class), importance weighted."""
    from torch.nn import functional as F

    per_example = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return reduce_weighted(per_example, weights.to(logits.dtype), normalization)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of ``(..., n, C)`` logits: ``(..., n)``."""
    from torch.nn import functional as F

    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, normalization: str = "weight_sum"
) -> torch.Tensor:
    """Multi-class cross-entropy, importance weighted; ``logits`` is ``(..., n, C)``."""
    return reduce_weighted(cross_entropy(logits, labels), weights.to(logits.dtype), normalization)


def class_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z = logit_y - logsumexp_{j != y} logit_j; cross-entropy is exactly log(1 + e^-z). ``(..., C)``."""
    import torch

    true = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, labels.unsqueeze(-1), float("-inf"))
    return true - torch.logsumexp(others, -1)


def class_weight_matrix(labels: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, C): each run's class weight w_c, the mean importance weight of its class-c training examples, from
    each run's training labels and weights (both (K, n)); 1 for a class a run has no example of (no
    evidence either way: logit adjustment then leaves that class's logit alone)."""
    out = np.ones((len(labels), n_classes), dtype=np.float64)
    for c in range(n_classes):
        member = labels == c
        counts = member.sum(1)
        total = np.where(member, weights, 0.0).sum(1)
        out[:, c] = np.where(counts > 0, total / np.maximum(counts, 1), 1.0)
    return out


def weight_exponent(weights: np.ndarray, k: float, counts: np.ndarray | None = None,
                    keep_mean: bool = False) -> np.ndarray:
    """Weights raised to the power k and rescaled to mean 1 along the last axis, or with ``keep_mean`` to the
    mean of ``weights`` (each weight counted ``counts`` times when given, e.g. class weights with their class
    sizes). Keeping the mean keeps the effective step of the plain weights under either normalisation, so
    that the remedy is compared with plain weighting at an equal step: k = 1 then returns the weights
    exactly. k = 0 makes them uniform; 0 < k < 1 tempers them."""
    weights = np.asarray(weights, np.float64)
    counts = np.ones(weights.shape[-1]) if counts is None else np.asarray(counts, np.float64)
    powered = weights ** k
    mean = lambda w: (w * counts).sum(-1, keepdims=True) / counts.sum()  # noqa: E731
    return powered * ((mean(weights) if keep_mean else 1.0) / mean(powered))


# --------------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Param:
    """A remedy's parameter: its config field and flag (``poly_alpha`` -> ``--poly-alpha``), default, help and
    check (a validator of :mod:`iwshift.config`: a bad value is a one-line error naming the flag)."""

    name: str
    default: float | int
    help: str
    check: Callable[[str, Any], Any] = finite


@dataclass(frozen=True)
class Remedy:
    """One way to make importance weights matter (or plain weighting itself). What it changes:

    ``loss(logits, labels, log_class_weights, **params)``: the per-example loss of ``(K, n, C)`` logits, with the
    log of each run's class weights at hand (``(K, C)``, float64; None: cross-entropy); ``unit_weights``: the run trains with unit weights
    (the loss corrects instead); ``weights(weights, counts, **params)``: a transformation of a run's weights
    (``counts``: how often each weight occurs, or None); ``defer(epochs, **params)``: the 1-based epoch from
    which the weights apply (uniform before); ``holdout``: the run holds out a validation split of its
    training set (a study without one, like the 2-D protocol, does not offer it)."""

    name: str
    help: str
    params: tuple[Param, ...] = ()
    loss: Callable[..., torch.Tensor] | None = None
    unit_weights: bool = False
    weights: Callable[..., np.ndarray] | None = None
    defer: Callable[..., int] | None = None
    holdout: bool = False

    def values(self, config: Any) -> dict[str, Any]:
        """This remedy's parameters as ``config`` (an object with one attribute per parameter) sets them."""
        return {p.name: getattr(config, p.name) for p in self.params}

    def loss_spec(self, config: Any) -> LossSpec:
        """The per-example loss of this remedy's runs under ``config`` (cross-entropy if it has none)."""
        return LossSpec(self.name, **self.values(config)) if self.loss is not None else LossSpec()

    def transform(self, weights: np.ndarray, config: Any, counts: np.ndarray | None = None) -> np.ndarray:
        return weights if self.weights is None else self.weights(weights, counts, **self.values(config))

    def defer_until(self, epochs: int, config: Any) -> int:
        return 0 if self.defer is None else self.defer(epochs, **self.values(config))


REMEDIES: dict[str, Remedy] = {}


def register(remedy: Remedy) -> Remedy:
    """Add ``remedy`` to :data:`REMEDIES`. A parameter shared by several remedies (the same name) must be the
    same parameter: it is one config field and one flag."""
    if remedy.name in REMEDIES:
        raise ValueError(f"remedy {remedy.name!r} is registered already")
    for param in remedy.params:
        other = remedy_params().get(param.name)
        if other is not None and other != param:
            raise ValueError(f"parameter {param.name!r} of {remedy.name!r} differs from another remedy's")
    REMEDIES[remedy.name] = remedy
    return remedy


def loss_remedy(name: str, help: str, *params: Param, unit_weights: bool = False) -> Callable[[Callable], Callable]:
    """Register the decorated per-example loss as the remedy ``name`` (see :class:`Remedy`)."""
    def decorate(function: Callable) -> Callable:
        register(Remedy(name, help, tuple(params), loss=function, unit_weights=unit_weights))
        return function

    return decorate


def remedy_params() -> dict[str, Param]:
    """Every registered remedy's parameters by name (each once)."""
    return {p.name: p for r in REMEDIES.values() for p in r.params}


def remedy_names(holdout: bool = True) -> tuple[str, ...]:
    """The registered remedies (with ``holdout=False``: those that need no held-out split)."""
    return tuple(name for name, r in REMEDIES.items() if holdout or not r.holdout)


def check_remedy_parameters(config: Any) -> None:
    """Every remedy parameter of ``config``, each with a one-line error naming its flag."""
    for param in remedy_params().values():
        if hasattr(config, param.name):
            setattr(config, param.name, param.check(param.name, getattr(config, param.name)))


def remedies_table() -> str:
    """The registry as a markdown table (name, what, parameters with defaults): the docs' table."""
    rows = ["| remedy | what | parameters |", "|---|---|---|"]
    for r in REMEDIES.values():
        params = ", ".join(f"`--{p.name.replace('_', '-')}` ({p.default:g}): {p.help}" for p in r.params) or "—"
        rows.append(f"| `{r.name}` | {r.help} | {params} |")
    return "\n".join(rows)


class LossSpec:
    """A run's per-example loss: a registered remedy's name and its loss parameters (the defaults where not
    given). Runs with equal specs share one evaluation of the loss in a stack."""

    __slots__ = ("name", "params")

    def __init__(self, name: str = "plain", **params: float):
        remedy = REMEDIES.get(name)
        if remedy is None:
            raise ValueError(f"unknown loss {name!r}; choose from {', '.join(REMEDIES)}")
        known = {p.name: p for p in remedy.params} if remedy.loss is not None else {}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"loss {name!r} takes no parameter {', '.join(unknown)}"
                             + (f" (its parameters: {', '.join(known)})" if known else ""))
        self.name = name
        self.params = tuple((p, float(params.get(p, known[p].default))) for p in known)

    @property
    def remedy(self) -> Remedy:
        return REMEDIES[self.name]

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, log_class_weights: torch.Tensor) -> torch.Tensor:
        loss = self.remedy.loss
        return cross_entropy(logits, labels) if loss is None else loss(logits, labels, log_class_weights,
                                                                      **dict(self.params))

    def _key(self) -> tuple[str, tuple[tuple[str, float], ...]]:
        return self.name if self.remedy.loss is not None else "plain", self.params

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LossSpec) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"LossSpec({', '.join([repr(self.name), *(f'{k}={v!r}' for k, v in self.params)])})"


class StackLosses:
    """The per-example training losses of a stack of K runs, each under its own :class:`LossSpec`: each distinct
    spec is evaluated once for the whole stack and its runs' rows are picked by a mask (capturable: no branch
    on tensor values). ``class_weights`` (K, C): each run's class weights (:func:`class_weight_matrix`); the
    losses see their log, in float64, a weight of 0 clamped to 1e-12 (a large but finite log)."""

    def __init__(self, specs: Sequence[LossSpec], class_weights: np.ndarray, device: Any):
        import torch

        self.specs = list(specs)
        distinct = list(dict.fromkeys(self.specs))
        self.groups = [(spec, None if len(distinct) == 1 else
                        torch.tensor([s == spec for s in self.specs], device=device)[:, None]) for spec in distinct]
        self.log_class_weights = torch.as_tensor(np.log(np.maximum(class_weights, 1e-12)), dtype=torch.float64,
                                                 device=device)
        # the weights SGD uses: unit weights for a loss that corrects by itself (logit adjustment)
        self.unit_weights = np.array([s.remedy.unit_weights for s in self.specs])

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch

        out = None
        for spec, mask in self.groups:
            values = spec(logits, labels, self.log_class_weights)
            out = values if mask is None else values if out is None else torch.where(mask, values, out)
        return out


# ------------------------------------------------------------------------------------- the remedies


register(Remedy("plain", "importance-weighted cross-entropy (what every remedy is compared with)"))


def poly_tail_constants(alpha: float, beta: float) -> tuple[float, float]:
    """(A, s) of the polynomial tail A (z - beta + s)^(-alpha), chosen so that the loss and its derivative
    are continuous at the switch point beta: A s^-alpha = log(1 + e^-beta) and
    alpha A s^(-alpha-1) = sigmoid(-beta)."""
    value = math.log1p(math.exp(-beta)) if beta > -30 else -beta
    slope = 1.0 / (1.0 + math.exp(beta))  # -d/dz log(1 + e^-z) at beta
    s = alpha * value / slope
    return value * s ** alpha, s


def poly_tailed(margin: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Polynomially-tailed loss of a margin z (Wang, Chatterji, Haque & Hashimoto, ICLR 2022):

        l(z) = log(1 + e^-z)                for z < beta  (logistic)
        l(z) = A (z - beta + s)^(-alpha)    for z >= beta (polynomial tail)

    with (A, s) from :func:`poly_tail_constants`, so l and l' are continuous at beta. The tail decays
    polynomially rather than exponentially, which keeps the weights' influence after interpolation.
    """
    import torch

    A, s = poly_tail_constants(alpha, beta)
    logistic = torch.nn.functional.softplus(-margin)
    tail = A * (torch.clamp(margin, min=beta) - beta + s).pow(-alpha)
    return torch.where(margin < beta, logistic, tail)


POLY_ALPHA = Param("poly_alpha", 1.0, "polynomially-tailed losses: tail exponent alpha > 0", positive_finite)


@loss_remedy("poly", "polynomially-tailed loss (Wang, Chatterji, Haque & Hashimoto, ICLR 2022) of the class margin "
             "z (binary: (2y−1)·logit; multiclass: logit_y − logsumexp of the others, so that cross-entropy is "
             "exactly log(1+e^−z)): log(1+e^−z) below β, A·(z − β + s)^−α above, continuous with its slope at β",
             POLY_ALPHA, Param("poly_beta", 0.0, "polynomially-tailed loss: switch point beta (logistic below)"))
def poly(logits: torch.Tensor, labels: torch.Tensor, log_class_weights: torch.Tensor, poly_alpha: float,
         poly_beta: float) -> torch.Tensor:
    return poly_tailed(class_margin(logits, labels), poly_alpha, poly_beta)


@loss_remedy("logit_adjusted", "logit adjustment (Menon et al., ICLR 2021) *instead of* weighting: unit weights and "
             "cross-entropy of logits − τ·log w_y, w_y the run's class weight (the mean importance weight of the "
             "class's training examples), i.e. logits + τ·log(p_s(y)/p_t(y)); τ = 0 is unweighted cross-entropy",
             Param("tau", 1.0, "logit adjustment strength tau"), unit_weights=True)
def logit_adjusted(logits: torch.Tensor, labels: torch.Tensor, log_class_weights: torch.Tensor,
                   tau: float) -> torch.Tensor:
    return cross_entropy(logits + logit_offset(log_class_weights, tau)[:, None, :], labels)


def logit_offset(log_class_weights: torch.Tensor, tau: float) -> torch.Tensor:
    """(K, C) float32: -tau * log w_c, computed in float64 and rounded once."""
    return (-tau * log_class_weights).float()


def poly_wang_loss(margin: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Wang et al.'s released poly-tailed loss of a margin v (binary: v = (logit_1 - logit_0)(2y - 1)):

        f(v) = log(1 + e^-v) / log(1 + e^-1)   for v <= 1
        f(v) = v^(-alpha)                      for v > 1

    Their released code (``PolynomialLoss(type="logit")`` in their src/loss_fns.py) is not our ``poly``: the
    logistic is *scaled* by 1 / log(1 + e^-1) up to v = 1 (so f(1) = 1), then the unshifted v^-alpha:
    continuous at 1 but with a kink (slope -0.858 on the left, -alpha on the right), and about 3.19 times the
    plain logistic below the switch. Their code multiplies both branches by indicators, so a margin of
    exactly 0 gives 0 * inf = NaN; here the tail is evaluated on the clamped margin, so every value is finite.
    """
    import torch

    logistic = torch.nn.functional.softplus(-margin) / math.log1p(math.exp(-1.0))
    tail = torch.clamp(margin, min=1.0).pow(-alpha)
    return torch.where(margin <= 1.0, logistic, tail)


@loss_remedy("poly_wang", "Wang et al.'s released poly-tailed loss (their code's variant, for the replication): "
             "log(1+e^−v)/log(1+e^−1) up to v = 1, then v^−α", POLY_ALPHA)
def poly_wang(logits: torch.Tensor, labels: torch.Tensor, log_class_weights: torch.Tensor,
              poly_alpha: float) -> torch.Tensor:
    return poly_wang_loss(class_margin(logits, labels), poly_alpha)


def _whole_epochs(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ConfigError(name, f"must be an integer >= 0 (got {value})")
    return int(value)


register(Remedy("drw", "deferred re-weighting (Cao et al., NeurIPS 2019): unweighted before an epoch, weighted from "
                "it on", (Param("drw_epoch", 0, "deferred re-weighting: weights from this epoch on (0: half the "
                                               "epochs)", _whole_epochs),),
                defer=lambda epochs, drw_epoch: drw_epoch or max(1, epochs // 2)))

register(Remedy("exponent", "weights raised to a power k and rescaled to the plain weights' mean, so that it runs at "
                "plain weighting's effective step (k = 1: exactly plain, k = 0: uniform)",
                (Param("weight_power", 0.5, "weight exponent k: w**k at the plain weights' mean (their step size)",
                       non_negative_finite),),
                weights=lambda w, counts, weight_power: weight_exponent(w, weight_power, counts, keep_mean=True)))


def _validation_fraction(name: str, value: Any) -> float:
    value = float(value)
    if not 0 < value <= 0.5:
        raise ConfigError(name, f"must be in (0, 0.5] (got {value:g})")
    return value


register(Remedy("early_stop", "hold out an importance-weighted validation split of the training set; report the "
                "evaluated epoch with the lowest weighted validation loss (the best checkpoint)",
                (Param("val_fraction", 0.1, "early stopping: importance-weighted validation split of the training "
                                            "set", _validation_fraction),), holdout=True))
