"""The one trainer: K runs of one architecture trained together, data resident on the device.

Every study trains through :class:`Trainer`: the CIFAR-10 CNNs (:class:`iwshift.models.StackedCNN`) and
the 2-D logistic regressions and MLPs (:class:`iwshift.models.Stacked2D`).

Tricks, each for speed without changing what a run computes:
  * the inputs live on the device as one tensor (images as uint8, normalised on the device per batch);
  * each run draws its own batch order from its own seed (``batch_order="generator"``: a CPU
    ``torch.Generator`` per run; ``"counter"``: a counter-based hash of (seed, epoch)), so the order does
    not depend on the device or on which runs share the stack: run k sees exactly the batches it would
    see alone;
  * the K models are one module (grouped convolutions + batched matrix products), so one
    forward/backward serves all K runs; the loss is the sum of the runs' losses, whose gradients do not mix;
  * SGD with momentum and a per-run weight decay is applied to every run's parameter block at once;
  * two engines run the same loop: ``torch`` (any model, CPU or CUDA, a Python step per mini-batch) and
    ``fused`` (2-D models on CPU: :mod:`iwshift.sgd2d` runs whole epochs of every run in compiled code,
    because 10,000 epochs of batch-8 steps are 640,000 sequential steps per run, too many for a Python
    step each). The tests train the same stacks through both engines and compare;
  * the torch engine's one SGD step (:meth:`Trainer._step`: batch gather by device index tensors,
    normalisation, forward, loss, backward, update, running statistics) works in place on fixed buffers,
    with the step counter on the device and no host sync, so that on CUDA it is captured once as a CUDA
    graph and replayed for every full batch (the host only launches the graph); on CPU, and with
    ``graph=False``, the same step runs eagerly. The tests compare it with plain ``torch.optim.SGD``
    training of one ``nn.Module`` per run;
  * several stacks can train side by side (:func:`train_side_by_side`): their captured steps replayed on
    CUDA streams of their own, which the GPU may run at once.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from . import losses, sgd2d
from .choices import ENGINES, triton_available
from .models import Stacked2D

UPDATES = ("auto", "foreach", "triton")  # how StackedSGD runs its update
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def to_device_images(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> uint8 (N, 3, 32, 32) on ``device`` (moved once)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


def normalize(images_uint8: torch.Tensor, scale: torch.Tensor | None = None,
              shift: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (..., C, H, W) -> floats x * scale + shift, on their device (pass the constants from
    :func:`normalization_constants` in a hot loop: no host-to-device copy per batch; none given: CIFAR-10's)."""
    if scale is None or shift is None:
        scale, shift = normalization_constants(images_uint8.device)
    return images_uint8.float() * scale + shift


# How uint8 images become the network's inputs: "cifar10" (x / 255 standardised by CIFAR-10's channel means
# and deviations), "unit" (x / 255, any channel count), or (means, deviations) of x / 255, one per channel.
IMAGE_NORMALIZATIONS = ("cifar10", "unit")
ImageNormalization = str | tuple[Sequence[float], Sequence[float]]


def normalization_constants(device: torch.device | str, image_normalization: ImageNormalization = "cifar10",
                            channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of :func:`normalize` for an ``image_normalization`` (default CIFAR-10's); with
    ``channels``, a per-channel normalisation of another channel count is an error."""
    if isinstance(image_normalization, str):
        if image_normalization not in IMAGE_NORMALIZATIONS:
            raise ValueError(f"unknown image_normalization {image_normalization!r}; choose from "
                             f"{', '.join(IMAGE_NORMALIZATIONS)} or pass (means, deviations) per channel")
        if image_normalization == "unit":
            return torch.full((1, 1, 1), 1 / 255, device=device), torch.zeros((1, 1, 1), device=device)
        mean, std = torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD)
    else:
        mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in image_normalization)
        if mean.shape != std.shape or not bool((std > 0).all()):
            raise ValueError("image_normalization (means, deviations) needs as many of each, deviations > 0")
    if channels is not None and len(mean) != channels:
        raise ValueError(f"image_normalization {image_normalization!r} has {len(mean)} channels but the "
                         f"images have {channels}")
    return (1 / (255 * std)).view(-1, 1, 1).to(device), (-mean / std).view(-1, 1, 1).to(device)


@dataclass(frozen=True)
class LossSpec:
    """A run's per-example loss (see :func:`iwshift.losses.per_example_loss`)."""

    name: str = "ce"        # ce | poly | logit_adjusted | poly_wang
    alpha: float = 1.0      # poly, poly_wang: tail exponent
    beta: float = 0.0       # poly: switch point
    tau: float = 1.0        # logit_adjusted: strength (offset -tau * log w_y, unit weights)


@dataclass
class StackedRuns:
    """What differs between the K runs of a stack (each array has one entry per run)."""

    seeds: Sequence[int]              # model initialisation and batch order
    train_index: np.ndarray           # (K, n) indices into the device image tensor: each run's training set
    example_weights: np.ndarray       # (K, n) importance weight of each of those training examples
    l2: Sequence[float]               # weight decay per run
    dropout: Sequence[float]          # dropout probability per run
    loss: Sequence[LossSpec] | None = None  # per run (default: cross-entropy for all)
    defer_until: Sequence[int] | None = None  # deferred re-weighting: unweighted before this epoch (0: never)

    def __post_init__(self) -> None:
        self.train_index = np.asarray(self.train_index, np.int64)
        with np.errstate(over="ignore"):  # a weight beyond float32 becomes inf: the run diverges, flagged
            self.example_weights = np.asarray(self.example_weights, np.float32)
        K = len(self.seeds)
        if self.train_index.shape[0] != K or self.example_weights.shape != self.train_index.shape:
            raise ValueError("train_index and example_weights must be (K, n) with one row per seed")
        if len(self.l2) != K or len(self.dropout) != K:
            raise ValueError("l2 and dropout need one value per run")
        self.loss = list(self.loss) if self.loss is not None else [LossSpec()] * K
        self.defer_until = list(self.defer_until) if self.defer_until is not None else [0] * K
        if len(self.loss) != K or len(self.defer_until) != K:
            raise ValueError("loss and defer_until need one value per run")
        poly = {(spec.alpha, spec.beta) for spec in self.loss if spec.name == "poly"}
        if len(poly) > 1:
            raise ValueError("the runs of a stack share one (alpha, beta) of the polynomially-tailed loss")
        if len({spec.alpha for spec in self.loss if spec.name == "poly_wang"}) > 1:
            raise ValueError("the runs of a stack share one alpha of Wang et al.'s poly-tailed loss")

    @property
    def n_models(self) -> int:
        return len(self.seeds)

    def select(self, runs: Sequence[int]) -> StackedRuns:
        """The runs at these positions, in this order, as a stack of their own."""
        return StackedRuns(seeds=[self.seeds[k] for k in runs], train_index=self.train_index[list(runs)],
                           example_weights=self.example_weights[list(runs)], l2=[self.l2[k] for k in runs],
                           dropout=[self.dropout[k] for k in runs], loss=[self.loss[k] for k in runs],
                           defer_until=[self.defer_until[k] for k in runs])


class StackedSGD:
    """SGD with momentum (as ``torch.optim.SGD``: buf = m*buf + g + l2*p; p -= lr*buf) and a weight
    decay per run. Every parameter's leading dimension(s) must split into K equal contiguous blocks.
    The update is a handful of ``torch._foreach`` calls over all parameters (few kernel launches).

    ``copies`` (bf16 training): per parameter, ``None`` or a low-precision copy that the forward uses in its
    place. The copy then receives the gradient, and each update writes the new parameter into it (rounded),
    so that no cast of the weights runs in the forward and no cast of their gradients back in the backward.
    The parameters stay float32 (the master weights: the update, checkpoints, evaluation); a step computes
    exactly what autocast's casts compute (the same rounding of the same values, the gradients in the same
    dtype before the update reads them in float32).

    ``update``: ``foreach`` (the ``torch._foreach`` passes), ``triton`` (:mod:`iwshift.triton_sgd`: one pass
    per parameter, reading and writing each tensor once) or ``auto`` (``triton`` on CUDA where Triton 3.0 or
    newer is installed, :func:`iwshift.choices.triton_available`; ``foreach`` otherwise). The Triton update's
    first use is checked against the ``_foreach`` update on clones of the tensors; one that fails warns, and
    ``foreach`` takes over."""

    def __init__(self, params: Sequence[torch.Tensor], n_models: int, lr: float, momentum: float,
                 l2: Sequence[float], copies: Sequence[torch.Tensor | None] | None = None, update: str = "auto"):
        if update not in UPDATES:
            raise ValueError(f"unknown update {update!r}; choose from {', '.join(UPDATES)}")
        self.params, self.K, self.lr, self.momentum = list(params), n_models, lr, momentum
        self.l2 = [float(v) for v in l2]
        self.copies = list(copies) if copies is not None else [None] * len(self.params)
        if len(self.copies) != len(self.params):
            raise ValueError(f"{len(self.copies)} copies for {len(self.params)} parameters")
        for p, c in zip(self.params, self.copies):
            if c is not None and (c.shape != p.shape or c.stride() != p.stride() or not c.requires_grad):
                raise ValueError("a copy must have its parameter's shape and strides and require a gradient")
        # the tensors whose .grad holds each parameter's gradient: the copy where the forward uses one
        self.grad_holders = [p if c is None else c for p, c in zip(self.params, self.copies)]
        self.has_copies = any(c is not None for c in self.copies)
        device = self.params[0].device
        per_run = torch.tensor(list(l2), dtype=torch.float32, device=device)
        # per-parameter decay tensors, broadcastable against each parameter's run blocks
        self.decay = [per_run.repeat_interleave(p.shape[0] // n_models).view(-1, *[1] * (p.dim() - 1))
                      for p in self.params]
        self.buffers = [torch.zeros_like(p) for p in self.params]
        # no run decays (e.g. the `none` regime's stack): skip the pass, a kernel per parameter that a
        # profile on an H200 put at ~5 % of a full-width CNN step (benchmarks/results/nvidia-h200-profile.txt)
        self.has_decay = any(v != 0.0 for v in self.l2)
        self.run_decay = per_run if self.has_decay else None
        self.started = False
        if update == "auto":
            update = "triton" if device.type == "cuda" and triton_available() else "foreach"
        self.update = update
        self._triton_checked: set[bool] = set()  # the specialisations (first step, later ones) checked

    @torch.no_grad()
    def step(self) -> None:
        grads = [h.grad for h in self.grad_holders]
        if not (self.update == "triton" and self._triton_step(grads)):
            self._foreach_step(self.params, grads, self.buffers, self.copies)
        self.started = True

    def _foreach_step(self, params: list[torch.Tensor], grads: list[torch.Tensor], buffers: list[torch.Tensor],
                      copies: list[torch.Tensor | None]) -> None:
        """The update in ``_foreach`` passes, on the tensors given (the optimiser's own, or clones of them)."""
        if self.has_decay:
            if self.has_copies:  # bf16 gradients: g + l2_k * p in float32, as autocast's float32 gradient gives it
                grads = torch._foreach_addcmul(grads, params, self.decay)
            else:
                torch._foreach_addcmul_(grads, params, self.decay)  # g += l2_k * p
        if self.momentum:
            if self.started:
                torch._foreach_mul_(buffers, self.momentum)
                torch._foreach_add_(buffers, grads)
            else:
                torch._foreach_copy_(buffers, grads)
            grads = buffers
        torch._foreach_add_(params, grads, alpha=-self.lr)
        _round_into(params, copies)

    def _triton_step(self, grads: list[torch.Tensor]) -> bool:
        """The step through :mod:`iwshift.triton_sgd`; False (nothing done) where it does not apply, or where
        its first use (per specialisation: a first step, a later one) fails on clones of the tensors, against
        the ``_foreach`` update on other clones: then it warns, and the ``_foreach`` update takes over for good.
        So a Triton that cannot compile for this GPU, or computes something else on it, changes no run."""
        from . import triton_sgd

        tensors = (self.params, grads, self.buffers, self.copies)
        if not triton_sgd.applies(*tensors):
            return False
        if self.started not in self._triton_checked:
            fused, reference = ([[None if t is None else t.clone() for t in ts] for ts in tensors] for _ in range(2))
            try:
                triton_sgd.update(*fused, self.run_decay, self.K, self.lr, self.momentum, self.started)
                self._foreach_step(*reference)
                triton_sgd.compare(fused, reference)
            except Exception as err:  # noqa: BLE001  (a compiler error, or an AssertionError of the comparison)
                warnings.warn(f"the Triton SGD update failed ({type(err).__name__}: {str(err).strip()[:200]}); "
                              "the _foreach update takes over", stacklevel=3)
                self.update = "foreach"
                return False
            self._triton_checked.add(self.started)
        triton_sgd.update(*tensors, self.run_decay, self.K, self.lr, self.momentum, self.started)
        return True

    @torch.no_grad()
    def refresh_copies(self) -> None:
        """Round the parameters into their copies (the update does it; this is for parameters changed
        otherwise, e.g. a restored checkpoint)."""
        _round_into(self.params, self.copies)

    def zero_grad(self) -> None:
        for holder in self.grad_holders:
            holder.grad = None


def _round_into(params: list[torch.Tensor], copies: list[torch.Tensor | None]) -> None:
    """Each parameter's value into its low-precision copy, if it has one (one ``_foreach`` copy)."""
    pairs = [(p, c) for p, c in zip(params, copies) if c is not None]
    if pairs:
        torch._foreach_copy_([c for _, c in pairs], [p for p, _ in pairs])


@dataclass
class EpochStats:
    """Running means over one epoch's mini-batches (training mode), per run."""

    loss_weighted: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    nonfinite: np.ndarray | None = None  # a non-finite training loss this epoch, or parameters at its end


def _check_inputs(model: torch.nn.Module, runs: StackedRuns, inputs: torch.Tensor, labels: torch.Tensor,
                  image_normalization: ImageNormalization | None) -> int:
    """Refuse inputs the model cannot take (a one-line ValueError, before any training); the number of
    classes of the losses: the model's, else one more than the largest training label."""
    if inputs.dtype == torch.uint8:
        if image_normalization is None:
            raise ValueError("uint8 inputs are images: pass image_normalization ('cifar10', 'unit', or "
                             "(means, deviations) per channel) so that they are normalised as you mean")
        if inputs.dim() != 4:
            raise ValueError(f"uint8 images must be (N, C, H, W) (got shape {tuple(inputs.shape)})")
    elif image_normalization is not None:
        raise ValueError(f"image_normalization applies to uint8 images; {inputs.dtype} inputs are used as they are")
    if isinstance(model, Stacked2D) and (inputs.dim() != 2 or inputs.shape[1] != model.in_features):
        raise ValueError(f"inputs of shape {tuple(inputs.shape)} do not fit the model's in_features="
                         f"{model.in_features} (pass (N, {model.in_features}) float features)")
    y = labels.cpu().numpy()
    n_classes = getattr(model, "n_classes", None)
    sgd2d.check_training_labels(y, runs.train_index, len(inputs), n_classes)
    if n_classes is None:  # a model that does not say: as many classes as the training labels need
        return int(y[runs.train_index].max()) + 1 if runs.train_index.size else 1
    return int(n_classes)


BATCH_ORDERS = ("generator", "counter")
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuDNN autotuning, lazy handles)


class _EpochPlan(NamedTuple):
    """An epoch as :meth:`Trainer._begin_epoch` set it up."""

    full: int        # full batches
    last: int        # size of the last, partial batch (0: none)
    captured: bool   # the full batches are replays of the captured step


@dataclass
class _StepBuffers:
    """Device tensors the step reads and writes in place (fixed addresses for a CUDA graph)."""

    epoch_index: torch.Tensor    # (K, n) example indices in this epoch's order, per run
    epoch_weights: torch.Tensor  # (K, n) their weights this epoch (1 while re-weighting is deferred)
    columns: torch.Tensor        # (batch_size,) 0, 1, ..., batch_size - 1
    cursor: torch.Tensor         # () position of the next batch in the epoch order
    step: torch.Tensor           # () global SGD step (seeds the dropout masks)
    sums: torch.Tensor           # (4, K) running sums of the epoch statistics (as train_epoch's)


class Trainer:
    """Train a stack of K runs (one :class:`~iwshift.models.StackedCNN` or
    :class:`~iwshift.models.Stacked2D`) epoch by epoch.

    ``inputs`` are every example the runs may see, on the training device: uint8 images (N, C, H, W),
    normalised per batch as ``image_normalization`` says (required for images: ``"cifar10"``, ``"unit"``
    or (means, deviations) per channel, see :data:`IMAGE_NORMALIZATIONS`), or float features (N, d) used
    as they are; ``labels`` (N,) their classes. ``engine``: ``torch``, ``fused`` (a binary Stacked2D on
    float32 features with ``batch_order="counter"``, plain SGD, fp32, on CPU) or ``auto`` (fused where
    it applies, torch otherwise).
    ``graph`` (torch engine on CUDA): capture the SGD step as a CUDA graph, replayed for every full batch
    (``False``: run the same step eagerly, as on CPU). ``cudnn_benchmark`` (CUDA): let cuDNN time its
    algorithms for the grouped convolutions (``torch.backends.cudnn.benchmark``, set only while the trainer
    trains or evaluates, then restored; ``False``: its heuristics, e.g. for reproducible kernels). A model
    with a ``tune(batch_size, dtype, channels_last)`` method (:meth:`~iwshift.models.StackedCNN.tune`) is
    tuned before the first step. ``weight_copies`` (bf16, a model with ``autocast_parameters()``, e.g. the
    :class:`~iwshift.models.StackedCNN`; not with ``compile``): train on bf16 copies of those parameters that
    the update keeps (:class:`StackedSGD`) rather than let autocast cast them at every step; the same numbers.
    """

    def __init__(self, model: torch.nn.Module, runs: StackedRuns, inputs: torch.Tensor, labels: torch.Tensor,
                 lr: float = 0.01, momentum: float = 0.9, batch_size: int = 16, normalization: str = "weight_sum",
                 precision: str = "fp32", channels_last: bool = False, compile: bool = False,
                 batch_order: str = "generator", engine: str = "auto",
                 image_normalization: ImageNormalization | None = None, graph: bool = True,
                 cudnn_benchmark: bool = True, weight_copies: bool = True):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
        if batch_order not in BATCH_ORDERS:
            raise ValueError(f"unknown batch_order {batch_order!r}; choose from {', '.join(BATCH_ORDERS)}")
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        if not isinstance(graph, bool):
            raise ValueError(f"graph must be True or False (got {graph!r})")
        for name in ("dropout", "seeds"):  # what the model draws its dropout masks from must be the runs'
            value = getattr(model, name, None)
            if isinstance(value, torch.Tensor) and not np.allclose(value.cpu().numpy(), getattr(runs, name)):
                raise ValueError(f"the model's {name} differ from the runs' (build the model from runs.{name})")
        n_classes = _check_inputs(model, runs, inputs, labels, image_normalization)
        self.runs, self.inputs, self.labels = runs, inputs, labels
        self.channels_last = channels_last
        self.cudnn_benchmark = cudnn_benchmark
        if channels_last:  # NHWC convolutions: faster with bf16 on tensor cores and oneDNN
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(model) if compile else model
        self.step_seeded = getattr(model, "step_seeded_dropout", False)  # dropout masks from (seed, step)
        self.device = inputs.device
        self.lr, self.momentum = lr, momentum
        self.batch_size, self.normalization, self.precision = batch_size, normalization, precision
        self.batch_order = batch_order
        self.index = torch.as_tensor(runs.train_index, device=self.device)
        self.train_weights = self._training_weights()
        self.weights = torch.as_tensor(self.train_weights, device=self.device)
        params = dict(model.named_parameters())
        # bf16: the forward's weights as bf16 copies that the update keeps (no cast of them, nor of their
        # gradients, per step); what the model's forward casts to autocast's dtype, as it names it
        copied = set(model.autocast_parameters()) if (weight_copies and precision == "bf16" and not compile
                                                     and hasattr(model, "autocast_parameters")) else set()
        copies = [p.detach().to(torch.bfloat16).requires_grad_() if name in copied else None
                  for name, p in params.items()]
        self.weight_copies = {name: c for name, c in zip(params, copies) if c is not None}
        self.optimizer = StackedSGD(list(params.values()), runs.n_models, lr, momentum, runs.l2, copies)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in runs.seeds]
        self.epoch = 0
        # the epoch (1-based) in which each run's loss or parameters first became non-finite; 0: never
        self.diverged_epoch = np.zeros(runs.n_models, np.int64)
        self.scale = self.shift = None  # images only
        if inputs.dtype == torch.uint8:
            self.scale, self.shift = normalization_constants(self.device, image_normalization, inputs.shape[1])
        self._prepare_losses(n_classes)
        self.engine = self._choose_engine(engine, compile)
        self.capture = graph and self.device.type == "cuda"  # the step as a CUDA graph
        self._buffers: _StepBuffers | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_key: tuple[int, ...] = ()
        self._stream: torch.cuda.Stream | None = None  # train_side_by_side's stream for the replays

    def _choose_engine(self, engine: str, compile: bool) -> str:
        reasons = [why for why, holds in (
            ("the model is not a Stacked2D", isinstance(self.model, Stacked2D)),
            ("the model has more than 2 classes", getattr(self.model, "n_classes", 2) == 2),
            ("the inputs are not float32 features (N, d)", self.inputs.dtype == torch.float32 and self.inputs.dim() == 2),
            ("the device is not the CPU", self.device.type == "cpu"),
            ("momentum is not 0", self.momentum == 0),
            ("precision is not fp32", self.precision == "fp32"),
            ('batch_order is not "counter"', self.batch_order == "counter"),
            ("compile is on", not compile),
            ("a run uses poly_wang", not any(s.name == "poly_wang" for s in self.runs.loss))) if not holds]
        if engine == "fused" and reasons:
            raise ValueError(f"the fused engine does not apply: {'; '.join(reasons)}")
        if engine == "auto":
            return "torch" if reasons else "fused"
        return engine

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of inputs as the model takes it: uint8 images normalised, features as they are."""
        if x.dtype != torch.uint8:
            return x
        if self.scale is None:
            raise ValueError("uint8 images given to a trainer of float features (no image_normalization)")
        return normalize(x, self.scale, self.shift)

    def class_weights(self, n_classes: int) -> np.ndarray:
        """(K, C) each run's class weight w_c: the mean importance weight of its class-c training examples
        (1 for a class it has no example of; :func:`iwshift.losses.class_weight_matrix`)."""
        labels = self.labels.cpu().numpy()[self.runs.train_index]  # (K, n)
        return losses.class_weight_matrix(labels, self.runs.example_weights, n_classes)

    def _training_weights(self) -> np.ndarray:
        """(K, n) the weights SGD uses: the runs' importance weights, except unit weights for logit
        adjustment, which replaces weighting (its correction is the logit offset, not the weights)."""
        adjusted = np.array([s.name == "logit_adjusted" for s in self.runs.loss])
        return np.where(adjusted[:, None], np.float32(1.0), self.runs.example_weights).astype(np.float32)

    def _prepare_losses(self, n_classes: int) -> None:
        """Per-run loss tensors: which runs use the polynomial tail, and each run's logit offset.

        Logit adjustment (Menon et al., ICLR 2021) trains on logits + tau * log(p_s(y) / p_t(y)) for every
        class y; with importance weights w_y = p_t(y) / p_s(y), the offset is -tau * log w_y, with w_y the
        run's class weight (:meth:`class_weights`), and the run trains with unit weights. So it is a real
        alternative to weighting in every setting: not plain cross-entropy on a balanced set with weights,
        and no double correction of an imbalanced one. The other runs get a zero offset."""
        specs = self.runs.loss
        self.poly_mask = torch.tensor([s.name == "poly" for s in specs], device=self.device)
        poly = [s for s in specs if s.name == "poly"]
        self.poly_params = (poly[0].alpha, poly[0].beta) if poly else None
        adjusted = np.array([s.name == "logit_adjusted" for s in specs])
        tau = np.array([s.tau for s in specs])[:, None]
        # a class weight of 0 (a class absent from the target) is clamped: a large but finite offset
        offset = np.where(adjusted[:, None], -tau * np.log(np.maximum(self.class_weights(n_classes), 1e-12)), 0.0)
        self.logit_offset = torch.as_tensor(offset, dtype=torch.float32, device=self.device)[:, None, :]  # (K, 1, C)
        self.defer = torch.tensor(self.runs.defer_until, device=self.device)
        wang = [s for s in specs if s.name == "poly_wang"]  # Wang et al.'s released poly-tailed loss
        self.wang_mask = torch.tensor([s.name == "poly_wang" for s in specs], device=self.device)
        self.wang_alpha = wang[0].alpha if wang else None

    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(K, B) per-example training loss of every run under its own loss."""
        per_example = losses.per_example_loss(logits + self.logit_offset, labels, "ce")
        if self.poly_params is not None:
            poly = losses.per_example_loss(logits, labels, "poly", *self.poly_params)
            per_example = torch.where(self.poly_mask[:, None], poly, per_example)
        if self.wang_alpha is not None:
            wang = losses.per_example_loss(logits, labels, "poly_wang", self.wang_alpha)
            per_example = torch.where(self.wang_mask[:, None], wang, per_example)
        return per_example

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def batch_orders(self) -> torch.Tensor:
        """(K, n) positions into each run's training set for the next epoch, from each run's own seed."""
        n = self.index.shape[1]
        if self.batch_order == "counter":
            orders = torch.from_numpy(sgd2d.epoch_permutations(np.asarray(self.runs.seeds), self.epoch, n))
        else:
            orders = torch.stack([torch.randperm(n, generator=g) for g in self.generators])
        return orders.to(self.device)

    def train_epochs(self, count: int = 1, on_step: Callable[[], None] | None = None) -> EpochStats:
        """Train every run ``count`` epochs; the running statistics of the last one."""
        if count < 1:
            raise ValueError(f"count must be >= 1 (got {count})")
        if self.engine == "fused":
            if on_step is not None:
                raise ValueError("on_step needs the torch engine (the fused engine runs whole epochs)")
            return self._train_fused(count)
        for _ in range(count):
            stats = self.train_epoch(on_step)
        return stats

    def _train_fused(self, count: int) -> EpochStats:
        runs, K = self.runs, self.runs.n_models
        params = {k: v.numpy() for k, v in self.model.stacked_params().items()}  # views: trained in place
        offset = self.logit_offset[:, 0].cpu()
        stats = sgd2d.train_stacked(
            params, self.inputs.numpy(), self.labels.numpy(), runs.train_index, self.train_weights,
            [self.lr] * K, runs.l2, runs.dropout, runs.seeds, self.epoch, self.epoch + count,
            self.batch_size, self.normalization, loss_kind=self.poly_mask.long().numpy(),
            logit_offset=(offset[:, 1] - offset[:, 0]).numpy(),  # [0, z] + offset: BCE of z + difference
            poly=[self.poly_params or (1.0, 0.0)] * K, defer_until=runs.defer_until)
        self.epoch += count
        nonfinite = ~np.isfinite(stats[:, :2]).all(1) | ~self._finite_parameters().cpu().numpy()
        return self._note_divergence(EpochStats(loss_weighted=stats[:, 0], loss=stats[:, 1],
                                                accuracy=stats[:, 2], nonfinite=nonfinite))

    @property
    def diverged(self) -> np.ndarray:
        """(K,) whether each run's training loss or parameters have been non-finite at any epoch so far."""
        return self.diverged_epoch > 0

    @torch.no_grad()
    def _finite_parameters(self) -> torch.Tensor:
        """(K,) bool on the device: every parameter of run k is finite (each parameter's leading
        dimension splits into K blocks, as for the optimiser)."""
        K = self.runs.n_models
        return torch.stack([torch.isfinite(p.detach().reshape(K, -1)).all(1)
                            for p in self.model.parameters()]).all(0)

    def _note_divergence(self, stats: EpochStats) -> EpochStats:
        """Record the epoch in which each run first diverged (the check happens once per epoch)."""
        self.diverged_epoch[(self.diverged_epoch == 0) & stats.nonfinite] = self.epoch
        return stats

    @contextmanager
    def _cudnn_setting(self) -> Iterator[None]:
        """``torch.backends.cudnn.benchmark`` as the trainer was told, restored after (no global change)."""
        saved = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = saved

    def train_epoch(self, on_step: Callable[[], None] | None = None) -> EpochStats:
        """Train every run one epoch: the host sets the epoch's batch orders (one transfer), then launches
        the captured :meth:`_step` (CUDA) or runs it once per full batch; a last partial batch runs the same
        step eagerly; one host sync at the end, for the statistics. ``on_step`` is called after each step."""
        if self.engine == "fused":
            return self.train_epochs(1, on_step)
        with self._cudnn_setting():
            return self._train_epoch(on_step)

    def _train_epoch(self, on_step: Callable[[], None] | None) -> EpochStats:
        plan = self._begin_epoch()
        for _ in range(plan.full):
            if plan.captured:
                self._graph.replay()
            else:
                self._step(self.batch_size)
            if on_step is not None:
                on_step()
        return self._finish_epoch(plan, on_step)

    def _begin_epoch(self) -> _EpochPlan:
        """The epoch's set-up on the host: tuning and capture the first time, then the batch orders (one
        transfer) into the step's buffers. Its full batches are then the captured step's replays, or the
        same step run eagerly (``captured`` False), and :meth:`_finish_epoch` runs what is left."""
        self.model.train()  # every epoch: evaluation switches dropout and batch norm off
        self.optimizer.refresh_copies()  # the parameters may have changed since (a checkpoint restored...)
        n = self.index.shape[1]
        full, last = divmod(n, self.batch_size)
        if self._buffers is None:  # the first epoch
            tune = getattr(self.model, "tune", None)  # e.g. StackedCNN(convolutions="auto") times its layers
            if tune is not None:
                tune(self.batch_size, torch.bfloat16 if self.precision == "bf16" else torch.float32, self.channels_last)
            self._buffers = self._step_buffers()
        if full > 0 and self.capture and self._graph_key != self._state_addresses():
            self._capture_graph()  # (where capture fails, self.capture turns False: the step runs eagerly)
        buffers = self._buffers
        orders = self.batch_orders()
        deferred = (self.epoch + 1 < self.defer)[:, None]  # deferred re-weighting: uniform weights until then
        buffers.epoch_index.copy_(self.index.gather(1, orders))
        buffers.epoch_weights.copy_(torch.where(deferred, 1.0, self.weights.gather(1, orders)))
        buffers.cursor.zero_()
        buffers.step.fill_(self.epoch * (full + (last > 0)))
        buffers.sums.zero_()
        return _EpochPlan(full, last, full > 0 and self.capture)

    def _finish_epoch(self, plan: _EpochPlan, on_step: Callable[[], None] | None = None) -> EpochStats:
        """After the epoch's full batches: the last partial batch (eager), then the statistics (the one
        host sync of the epoch)."""
        if plan.last:
            with self._own_gradients() if plan.captured else nullcontext():
                self._step(plan.last)
            if on_step is not None:
                on_step()
        self.epoch += 1
        buffers = self._buffers
        buffers.sums[3] += ~self._finite_parameters()
        stats = (buffers.sums / self.index.shape[1]).cpu().numpy()  # the one host sync of the epoch
        return self._note_divergence(EpochStats(loss_weighted=stats[0], loss=stats[1], accuracy=stats[2],
                                                nonfinite=stats[3] > 0))

    def state_dict(self) -> dict[str, Any]:
        """Everything the next epoch depends on, copied: parameters and buffers, momentum, the epoch, each
        run's batch-order generator and the global RNG (the studies' models draw nothing from it since dropout
        masks are counter-based; kept so that a model which does still resumes exactly)."""
        state = {"epoch": self.epoch,
                 "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                 "momentum": [b.clone() for b in self.optimizer.buffers],
                 "momentum_started": self.optimizer.started,
                 "generators": [g.get_state() for g in self.generators],
                 "diverged_epoch": self.diverged_epoch.copy(),
                 "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if hasattr(self.model, "tuning_state"):  # e.g. convolutions="auto": which kernels each layer runs
            state["tuning"] = self.model.tuning_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (of a trainer built the same way)."""
        self.model.load_state_dict(state["model"])
        if "tuning" in state and hasattr(self.model, "load_tuning_state"):
            self.model.load_tuning_state(state["tuning"])
        with torch.no_grad():
            for buffer, saved in zip(self.optimizer.buffers, state["momentum"], strict=True):
                buffer.copy_(saved)
        self.optimizer.started = state["momentum_started"]
        self.diverged_epoch = np.array(state.get("diverged_epoch", np.zeros_like(self.diverged_epoch)))
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved)
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch = int(state["epoch"])

    # ------------------------------------------------------------------ the step (and its CUDA graph)

    def _step_buffers(self) -> _StepBuffers:
        K, n = self.index.shape
        long = dict(dtype=torch.int64, device=self.device)
        return _StepBuffers(
            epoch_index=torch.zeros(K, n, **long), epoch_weights=torch.ones(K, n, device=self.device),
            columns=torch.arange(self.batch_size, **long), cursor=torch.zeros((), **long),
            step=torch.zeros((), **long), sums=torch.zeros(4, K, device=self.device))

    def _step(self, batch: int) -> None:
        """One SGD step of every run on the next ``batch`` columns of the epoch order, from device
        tensors only and in place: no host sync and no Python branch on tensor values (capturable)."""
        buffers = self._buffers
        columns = buffers.cursor + buffers.columns[:batch]
        idx = buffers.epoch_index.index_select(1, columns)           # (K, B) example indices
        w = buffers.epoch_weights.index_select(1, columns)
        x = self._prepare(self.inputs.index_select(0, idx.flatten()).view(*idx.shape, *self.inputs.shape[1:]))
        y = self.labels.index_select(0, idx.flatten()).view(idx.shape)
        # autocast's weight-cast cache must be off under graph capture (the casts are recomputed: same values)
        cast = (torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
                if self.precision == "bf16" else nullcontext())
        kwargs = {"step": buffers.step} if self.step_seeded else {}
        with cast:
            if self.weight_copies:  # the bf16 copies in place of the parameters
                logits = torch.func.functional_call(self.model, self.weight_copies, (x,), kwargs)
            else:
                logits = self.forward(x, **kwargs)
        logits = logits.float()
        loss = losses.reduce_weighted(self.example_losses(logits, y), w, self.normalization)  # (K,)
        self.optimizer.zero_grad()
        loss.sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            buffers.sums[0] += loss.detach() * batch
            buffers.sums[1] += losses.weighted_cross_entropy(logits, y, torch.ones_like(w), "mean") * batch
            buffers.sums[2] += (logits.argmax(-1) == y).float().sum(1)
            buffers.sums[3] += ~torch.isfinite(loss.detach())
            buffers.cursor += batch
            buffers.step += 1

    def _state_tensors(self) -> list[torch.Tensor]:
        """Everything a step reads or updates in place besides the step buffers."""
        return [*self.model.parameters(), *self.model.buffers(), *self.optimizer.buffers,
                *self.weight_copies.values()]

    def _state_addresses(self) -> tuple[int, ...]:
        """Where the captured graph reads and writes: a change (a tensor replaced rather than updated in
        place, e.g. by restoring a checkpoint) means capturing again."""
        return tuple(t.data_ptr() for t in (*self._state_tensors(), *self.optimizer.decay, self.inputs, self.labels))

    def _capture_graph(self) -> None:
        """Capture :meth:`_step` on a full batch as a CUDA graph (after a few eager warm-up steps
        on a side stream, as the PyTorch docs prescribe), leaving the runs' state as it was before. Where
        capture fails, a warning says why and the trainer runs the same step eagerly (slower, same numbers)."""
        saved = [t.detach().clone() for t in self._state_tensors()]
        started = self.optimizer.started
        # the momentum buffers start at zero, so buf = m * buf + g equals the first step's copy of g:
        # one captured update serves every step
        self.optimizer.started = True
        self._buffers.epoch_index.copy_(self.index)  # warm up on the runs' own examples (valid labels)
        self._buffers.epoch_weights.copy_(self.weights)
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.random.fork_rng(devices=[]):  # no trace on the host generator either
                with torch.cuda.stream(stream):  # the capture's stream (cuBLAS/cuDNN handles are per stream)
                    for _ in range(GRAPH_WARMUP_STEPS):
                        self._buffers.cursor.zero_()
                        self._step(self.batch_size)
                torch.cuda.current_stream(self.device).wait_stream(stream)
                self._graph = torch.cuda.CUDAGraph()
                self.optimizer.zero_grad()  # the captured backward allocates the gradients in the graph's pool
                with torch.cuda.graph(self._graph, stream=stream):
                    self._step(self.batch_size)
        except Exception as err:  # noqa: BLE001  (an op this CUDA build cannot capture: train, uncaptured)
            warnings.warn(f"capturing the training step as a CUDA graph failed ({type(err).__name__}: "
                          f"{str(err).strip()[:200]}); the step runs eagerly from now on", stacklevel=3)
            self.capture, self._graph, self.optimizer.started = False, None, started
            self.optimizer.zero_grad()
        finally:
            with torch.no_grad():
                for tensor, value in zip(self._state_tensors(), saved):
                    tensor.copy_(value)  # in place: the graph holds these addresses
        self._graph_key = self._state_addresses()

    @contextmanager
    def _own_gradients(self) -> Iterator[None]:
        """An eager step beside the captured one (it sets its own gradients): the graph's gradient tensors,
        which live in the graph's memory pool, stay referenced and are put back on the parameters after."""
        holders = self.optimizer.grad_holders
        graph_grads = [h.grad for h in holders]
        self.optimizer.zero_grad()
        try:
            yield
        finally:
            for holder, grad in zip(holders, graph_grads):
                holder.grad = grad

    @torch.no_grad()
    def predict_logits(self, inputs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Logits (K, M, C) of every run on the same inputs (M, ...), evaluation mode."""
        self.model.eval()
        K = self.runs.n_models
        # K copies of a batch go through the grouped convolutions: keep K x batch moderate (cache)
        batch_size = batch_size or max(16, 2048 // K)
        out = []
        with self._cudnn_setting():
            for start in range(0, len(inputs), batch_size):
                x = self._prepare(inputs[start:start + batch_size])
                with self.autocast():
                    out.append(self.forward(x.unsqueeze(0).expand(K, *x.shape)).float())
        return torch.cat(out, 1)

    def class_gradient_norms(self, inputs: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor,
                             n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Norm of the gradient contributed by each class's probe examples, (K, C) weighted and unweighted.

        On the probe set (evaluation mode), class c contributes sum_{i in c} w_c l_i / Z with Z = n
        (``mean``) or sum_i w_i (``weight_sum``); unweighted: sum_{i in c} l_i / n.
        """
        self.model.eval()
        K = self.runs.n_models
        x = self._prepare(inputs).unsqueeze(0).expand(K, *inputs.shape)
        params = [p for p in self.model.parameters() if p.requires_grad]
        plain = []
        with self._cudnn_setting():
            per_example = torch.nn.functional.cross_entropy(
                self.model(x).float().flatten(0, 1), labels.repeat(K), reduction="none").view(K, -1)
            for c in range(n_classes):
                loss = (per_example * (labels == c)).sum(1) / len(labels)
                grads = torch.autograd.grad(loss.sum(), params, retain_graph=c < n_classes - 1, allow_unused=True)
                plain.append(sum(g.reshape(K, -1).pow(2).sum(1) for g in grads if g is not None).sqrt())
        plain_t = torch.stack(plain, 1)  # (K, C)
        counts = torch.bincount(labels, minlength=n_classes).float()
        if self.normalization == "mean":
            scale = class_weights
        else:  # sum_i w_i = sum_c n_c w_c
            scale = class_weights * len(labels) / (class_weights * counts).sum(1, keepdim=True)
        return (plain_t * scale).detach().cpu().numpy(), plain_t.detach().cpu().numpy()


def train_side_by_side(trainers: Sequence[Trainer], on_step: Callable[[], None] | None = None) -> list[EpochStats]:
    """One epoch of each trainer, their captured steps replayed side by side, each trainer's on a CUDA stream
    of its own, which the GPU may run at once: a small stack's step is a chain of small kernels (cuDNN runs
    some grouped convolutions group by group) that leaves much of the GPU idle (whether the overlap pays is
    for ``benchmarks/bench_cifar.py --side-by-side`` to say; no GPU has timed it yet). Each trainer
    computes what its own :meth:`Trainer.train_epoch` computes (the same captured step, replayed as often).
    Off CUDA, and for a trainer whose step is not captured, the steps run eagerly, one trainer after the other
    at each round. ``on_step`` is called after each round of full batches (every trainer's next step), and
    once after the last partial batches, if any. The statistics of each trainer's epoch, in order."""
    if any(t.engine == "fused" for t in trainers):
        raise ValueError("train_side_by_side needs the torch engine (the fused engine runs whole epochs)")
    if len({t.device for t in trainers}) > 1:
        raise ValueError("train_side_by_side: the trainers are on different devices")
    plans = []
    for trainer in trainers:
        with trainer._cudnn_setting():
            plans.append(trainer._begin_epoch())
    side = [t for t, plan in zip(trainers, plans) if plan.captured]
    if side:
        main = torch.cuda.current_stream(side[0].device)
        for trainer in side:
            if trainer._stream is None:
                trainer._stream = torch.cuda.Stream(trainer.device)
            trainer._stream.wait_stream(main)  # the epoch's batch orders were written on the main stream
    for step in range(max((plan.full for plan in plans), default=0)):
        for trainer, plan in zip(trainers, plans):
            if step >= plan.full:
                continue
            if plan.captured:
                with torch.cuda.stream(trainer._stream):
                    trainer._graph.replay()
            else:
                with trainer._cudnn_setting():
                    trainer._step(trainer.batch_size)
        if on_step is not None:
            on_step()
    for trainer in side:
        main.wait_stream(trainer._stream)
    stats = []
    for trainer, plan in zip(trainers, plans):
        with trainer._cudnn_setting():
            stats.append(trainer._finish_epoch(plan))
    if on_step is not None and any(plan.last for plan in plans):
        on_step()
    return stats


class SideBySide:
    """Several stacks trained side by side (:func:`train_side_by_side`), seen as one trainer of all their
    runs, stack 0's first: what :func:`fit_table` and the studies' evaluations use of a :class:`Trainer`
    (``train_epoch``, ``epoch``, ``diverged``, ``predict_logits``, ``class_gradient_norms``, ``state_dict``)
    with the stacks' runs concatenated. Each run computes what it computes in a stack of its own."""

    def __init__(self, trainers: Sequence[Trainer]):
        if not trainers:
            raise ValueError("SideBySide needs at least one trainer")
        if len({t.epoch for t in trainers}) > 1:
            raise ValueError("the trainers of a SideBySide must be at the same epoch")
        self.trainers = list(trainers)
        self._bounds = np.cumsum([0] + [t.runs.n_models for t in self.trainers])

    @property
    def epoch(self) -> int:
        return self.trainers[0].epoch

    @property
    def diverged_epoch(self) -> np.ndarray:
        return np.concatenate([t.diverged_epoch for t in self.trainers])

    @property
    def diverged(self) -> np.ndarray:
        return self.diverged_epoch > 0

    def train_epoch(self, on_step: Callable[[], None] | None = None) -> EpochStats:
        parts = train_side_by_side(self.trainers, on_step)
        return EpochStats(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(EpochStats)))

    def predict_logits(self, inputs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return torch.cat([t.predict_logits(inputs, batch_size) for t in self.trainers])

    def class_gradient_norms(self, inputs: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor,
                             n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
        parts = [t.class_gradient_norms(inputs, labels, class_weights[a:b], n_classes)
                 for t, a, b in zip(self.trainers, self._bounds, self._bounds[1:])]
        return np.concatenate([w for w, _ in parts]), np.concatenate([p for _, p in parts])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "side_by_side": [t.state_dict() for t in self.trainers],
                "runs": [t.runs.n_models for t in self.trainers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("runs") != [t.runs.n_models for t in self.trainers]:
            raise ValueError("a checkpoint of other stacks side by side")
        for trainer, saved in zip(self.trainers, state["side_by_side"], strict=True):
            trainer.load_state_dict(saved)


# ------------------------------------------------------------------------------ the per-epoch loop


@dataclass
class Checkpoint:
    """Where :func:`fit_table` saves a stack's state (atomically) every ``every`` epochs and on
    :func:`checkpoint_now`; ``meta`` identifies what is trained (a saved file with other meta is not resumed)."""

    path: Path
    every: int = 10
    meta: dict[str, Any] = field(default_factory=dict)


_SAVERS: list[Callable[[], None]] = []  # the running fit_table's "save the last finished epoch"


def checkpoint_now() -> int:
    """Save the running :func:`fit_table`'s last finished epoch (for signal handlers: preemption, time
    limits). Returns how many checkpoints were written."""
    for save in list(_SAVERS):
        save()
    return len(_SAVERS)


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint written by :func:`fit_table`, or None when the file does not load (say, truncated)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a half-written or foreign file is no checkpoint: train from the start
        return None
    return state if isinstance(state, dict) and {"meta", "trainer", "table", "seconds"} <= set(state) else None


def fit_table(trainer: Trainer | SideBySide, id_frame: pd.DataFrame, epochs: int, eval_epochs: Iterable[int],
              evaluate: Callable[[Trainer | SideBySide], dict[str, np.ndarray]],
              checkpoint: Checkpoint | None = None, on_epoch: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Train the trainer's K runs to ``epochs`` and return a tidy table: at each epoch of ``eval_epochs``
    one row per run with ``id_frame``'s row (K rows), the epoch, the epoch's running training loss
    (weighted and not) and accuracy, what ``evaluate(trainer)`` measures (arrays of K) and ``seconds``
    since the start. With a ``checkpoint``, continues from its file when that holds the same ``meta``, and
    saves every ``checkpoint.every`` epochs and on :func:`checkpoint_now`; a resumed table equals an
    uninterrupted one (but for ``seconds``, of the time spent in this and earlier attempts)."""
    evals = set(eval_epochs)
    frames: list[pd.DataFrame] = []
    spent = 0.0
    if checkpoint is not None and Path(checkpoint.path).exists():
        saved = read_checkpoint(checkpoint.path)
        if saved is not None and saved["meta"] == checkpoint.meta and saved["trainer"]["epoch"] < epochs:
            trainer.load_state_dict(saved["trainer"])
            frames, spent = [saved["table"]] if len(saved["table"]) else [], float(saved["seconds"])
    start = time.perf_counter() - spent
    last: dict[str, Any] = {}  # the state after the last finished epoch (a signal may come mid-epoch)

    def save() -> None:
        if last and checkpoint is not None:
            from .results import atomic_write

            atomic_write(checkpoint.path, lambda f: torch.save({**last, "meta": checkpoint.meta}, f), binary=True)

    if checkpoint is not None:
        _SAVERS.append(save)
    try:
        for epoch in range(trainer.epoch + 1, epochs + 1):
            stats = trainer.train_epoch()
            if epoch in evals or (trainer.diverged_epoch == epoch).any():  # a diverged run's last row
                frame = id_frame.reset_index(drop=True).copy()
                frame["epoch"] = epoch
                frame["train_loss_weighted"], frame["train_loss"] = stats.loss_weighted, stats.loss
                frame["train_accuracy"] = stats.accuracy
                for name, values in evaluate(trainer).items():
                    frame[name] = values
                frame["seconds"] = time.perf_counter() - start
                frames.append(frame)
            if checkpoint is not None and epoch < epochs:  # the last epoch's results are written at once
                last = {"trainer": trainer.state_dict(), "seconds": time.perf_counter() - start,
                        "table": pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()}
                if checkpoint.every and epoch % checkpoint.every == 0:
                    save()
            if on_epoch is not None:
                on_epoch(epoch)
            if trainer.diverged.all():  # every run diverged (non-finite loss): nothing left to train
                break
    finally:
        if checkpoint is not None:
            _SAVERS.remove(save)
    return pd.concat(frames, ignore_index=True)
