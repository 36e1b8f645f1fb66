"""The one trainer: K runs of one architecture trained together, data resident on the device.

Every study trains through :class:`Trainer`: the CIFAR-10 CNNs (:class:`iwshift.models.StackedCNN`) and the 2-D
logistic regressions and MLPs (:class:`iwshift.models.Stacked2D`). What it does for speed, without changing
what a run computes:

  * the inputs live on the device as one tensor (images as uint8, normalised on the device per batch);
  * each run draws its own batch order from its own seed (``batch_order="generator"``: a CPU ``torch.Generator``
    per run; ``"counter"``: a counter-based hash of (seed, epoch)), so a run sees exactly the batches it would
    see alone, on any device and in any stack;
  * the K models are one module (grouped convolutions + batched matrix products), so one forward/backward
    serves all K runs; the loss is the sum of the runs' losses, whose gradients do not mix;
  * the update (:class:`~iwshift.train.optimizer.StackedSGD`) applies SGD with momentum and a per-run weight
    decay to every run's block of every parameter at once;
  * two engines run the same loop: ``torch`` (any model, CPU or CUDA: :meth:`Trainer._step`, one step per
    mini-batch) and ``fused`` (2-D models on CPU: :mod:`iwshift.train.fused`, whole epochs in compiled code);
  * the torch engine's step works in place on fixed buffers with the step counter on the device and no host
    sync, so that on CUDA it is captured as a CUDA graph (:mod:`iwshift.train.capture`) and replayed for every
    full batch.

:meth:`Trainer.record` says which of these paths trained the stack (each run's ``config.json`` keeps it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import losses
from ..config import ENGINES
from ..kernels import counter
from ..models import Stacked2D
from . import fused
from .capture import CapturedStep
from .inputs import ImageNormalization, check_inputs, normalization_constants, normalize
from .optimizer import StackedSGD
from .runs import EpochStats, StackedRuns

BATCH_ORDERS = ("generator", "counter")


class EpochPlan(NamedTuple):
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
    """Train a stack of K runs (one :class:`~iwshift.models.StackedCNN` or :class:`~iwshift.models.Stacked2D`)
    epoch by epoch.

    ``inputs`` are every example the runs may see, on the training device: uint8 images (N, C, H, W),
    normalised per batch as ``image_normalization`` says (required for images: ``"cifar10"``, ``"unit"`` or
    (means, deviations) per channel), or float features (N, d) used as they are; ``labels`` (N,) their
    classes. ``engine``: ``torch``, ``fused`` (a binary Stacked2D on float32 features with
    ``batch_order="counter"``, plain SGD, fp32, on CPU, with losses the kernel knows) or ``auto`` (fused where it
    applies, torch otherwise). ``graph`` (torch engine on CUDA): capture the SGD step as a CUDA graph, replayed
    for every full batch (``False``: run the same step eagerly, as on CPU). ``cudnn_benchmark`` (CUDA): let
    cuDNN time its algorithms (``torch.backends.cudnn.benchmark``, set only while the trainer trains or
    evaluates, then restored). A model with a ``tune(batch_size, dtype, channels_last)`` method is tuned before
    the first step. ``weight_copies`` (bf16, a model with ``autocast_parameters()``; not with ``compile``): train
    on bf16 copies of those parameters that the update keeps rather than let autocast cast them at every step,
    the same numbers; ``None``: on the CPU, where it was measured faster, not on CUDA, where no GPU has timed
    it. ``update``: the update's implementation (:class:`~iwshift.train.optimizer.StackedSGD`).
    """

    def __init__(self, model: torch.nn.Module, runs: StackedRuns, inputs: torch.Tensor, labels: torch.Tensor,
                 lr: float = 0.01, momentum: float = 0.9, batch_size: int = 16, normalization: str = "weight_sum",
                 precision: str = "fp32", channels_last: bool = False, compile: bool = False,
                 batch_order: str = "generator", engine: str = "auto",
                 image_normalization: ImageNormalization | None = None, graph: bool = True,
                 cudnn_benchmark: bool = True, weight_copies: bool | None = None, update: str = "foreach"):
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
        n_classes = check_inputs(model, runs, inputs, labels, image_normalization)
        self.runs, self.inputs, self.labels = runs, inputs, labels
        self.channels_last = channels_last
        self.cudnn_benchmark = cudnn_benchmark
        if channels_last:  # NHWC convolutions: faster with bf16 on tensor cores and oneDNN
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(model) if compile else model
        self.step_seeded = getattr(model, "step_seeded_dropout", False)  # dropout masks from (seed, step)
        self.device = inputs.device
        self.momentum = momentum
        self.batch_size, self.normalization, self.precision = batch_size, normalization, precision
        self.batch_order = batch_order
        self.index = torch.as_tensor(runs.train_index, device=self.device)
        # each run's class weights (K, C), from its weights as given: the losses' and the evaluations'
        self.class_weights = runs.class_weights(labels.cpu().numpy(), n_classes)
        self.class_weight_tensor = torch.tensor(self.class_weights, dtype=torch.float32, device=self.device)
        self.losses = losses.StackLosses(runs.loss, self.class_weights, self.device)
        # the weights SGD uses: unit weights for a loss that corrects by itself (logit adjustment)
        self.train_weights = np.where(self.losses.unit_weights[:, None], np.float32(1.0),
                                      runs.sgd_weights).astype(np.float32)
        self.weights = torch.as_tensor(self.train_weights, device=self.device)
        self.defer = torch.tensor(runs.defer_until, device=self.device)
        params = dict(model.named_parameters())
        if weight_copies is None:
            weight_copies = self.device.type == "cpu"
        # bf16: the forward's weights as bf16 copies that the update keeps (no cast of them, nor of their
        # gradients, per step); what the model's forward casts to autocast's dtype, as it names it
        copied = set(model.autocast_parameters()) if (weight_copies and precision == "bf16" and not compile
                                                     and hasattr(model, "autocast_parameters")) else set()
        copies = [p.detach().to(torch.bfloat16).requires_grad_() if name in copied else None
                  for name, p in params.items()]
        self.weight_copies = {name: c for name, c in zip(params, copies) if c is not None}
        self.optimizer = StackedSGD(list(params.values()), runs.n_models, lr, momentum, runs.l2, copies, update)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in runs.seeds]
        self.epoch = 0
        # the epoch (1-based) in which each run's loss or parameters first became non-finite; 0: never
        self.diverged_epoch = np.zeros(runs.n_models, np.int64)
        self.scale = self.shift = None  # images only
        if inputs.dtype == torch.uint8:
            self.scale, self.shift = normalization_constants(self.device, image_normalization, inputs.shape[1])
        reasons = fused.why_not(model, runs, inputs, momentum, precision, batch_order, compile)
        if engine == "fused" and reasons:
            raise ValueError(f"the fused engine does not apply: {'; '.join(reasons)}")
        self.engine = engine if engine != "auto" else "torch" if reasons else "fused"
        self.fused_unavailable = reasons  # why the fused engine does not train this stack (recorded)
        self._buffers: _StepBuffers | None = None
        self.captured = CapturedStep(self) if graph and self.device.type == "cuda" else None

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    def set_lr(self, lr: float) -> None:
        """The learning rate from the next step on (on the device: a captured step reads it there)."""
        self.optimizer.set_lr(lr)

    def record(self) -> dict[str, Any]:
        """How this stack was trained, for each of its runs' ``config.json``: the engine, the capture (a CUDA
        graph, or eagerly and why), the update (with why a requested one fell back), the bf16 weight copies,
        and the convolutions per layer where the model says."""
        out: dict[str, Any] = {"engine": self.engine}
        if self.engine == "torch" and isinstance(self.model, Stacked2D) and self.fused_unavailable:
            out["engine"] = f"torch ({'; '.join(self.fused_unavailable)})"  # a 2-D stack the fused engine refused
        if self.engine == "torch":
            if self.captured is None:
                out["capture"] = "eager"
            else:
                out["capture"] = "graph" if self.captured.failure is None else \
                    f"eager (capture failed: {self.captured.failure})"
            out["update"] = self.optimizer.path
            out["weight_copies"] = bool(self.weight_copies)
        layers = getattr(self.model, "layer_convolutions", None)
        if layers is not None:
            out["convolutions_per_layer"] = list(layers)
        return out

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of inputs as the model takes it: uint8 images normalised, features as they are."""
        if x.dtype != torch.uint8:
            return x
        if self.scale is None:
            raise ValueError("uint8 images given to a trainer of float features (no image_normalization)")
        return normalize(x, self.scale, self.shift)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def batch_orders(self) -> torch.Tensor:
        """(K, n) positions into each run's training set for the next epoch, from each run's own seed."""
        n = self.index.shape[1]
        if self.batch_order == "counter":
            orders = torch.from_numpy(counter.epoch_permutations(np.asarray(self.runs.seeds), self.epoch, n))
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
            stats = fused.train(self.model, self.runs, self.inputs, self.labels, self.train_weights,
                                self.losses.log_class_weights, self.optimizer.lr, self.epoch, count, self.batch_size,
                                self.normalization)
            self.epoch += count
            nonfinite = ~np.isfinite(stats[:, :2]).all(1) | ~self._finite_parameters().cpu().numpy()
            return self._note_divergence(EpochStats(loss_weighted=stats[:, 0], loss=stats[:, 1],
                                                    accuracy=stats[:, 2], nonfinite=nonfinite))
        for _ in range(count):
            stats = self.train_epoch(on_step)
        return stats

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
    def cudnn_setting(self) -> Iterator[None]:
        """``torch.backends.cudnn.benchmark`` as the trainer was told, restored after (no global change)."""
        saved = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = saved

    def train_epoch(self, on_step: Callable[[], None] | None = None) -> EpochStats:
        """Train every run one epoch: the host sets the epoch's batch orders (one transfer), then replays the
        captured step (CUDA) or runs it once per full batch; a last partial batch runs the same step eagerly;
        one host sync at the end, for the statistics. ``on_step`` is called after each step."""
        if self.engine == "fused":
            return self.train_epochs(1, on_step)
        with self.cudnn_setting():
            plan = self.begin_epoch()
            for _ in range(plan.full):
                if plan.captured:
                    self.captured.replay()
                else:
                    self._step(self.batch_size)
                if on_step is not None:
                    on_step()
            return self.finish_epoch(plan, on_step)

    def begin_epoch(self) -> EpochPlan:
        """The epoch's set-up on the host: tuning and capture the first time, then the batch orders (one
        transfer) into the step's buffers. Its full batches are then the captured step's replays, or the
        same step run eagerly (``captured`` False), and :meth:`finish_epoch` runs what is left."""
        self.model.train()  # every epoch: evaluation switches dropout and batch norm off
        self.optimizer.refresh_copies()  # the parameters may have changed since (a checkpoint restored...)
        n = self.index.shape[1]
        full, last = divmod(n, self.batch_size)
        if self._buffers is None:  # the first epoch
            tune = getattr(self.model, "tune", None)  # e.g. StackedCNN(convolutions="auto") times its layers
            if tune is not None:
                tune(self.batch_size, torch.bfloat16 if self.precision == "bf16" else torch.float32, self.channels_last)
            self._buffers = self._step_buffers()
        captured = full > 0 and self.captured is not None and self.captured.ready()
        buffers = self._buffers
        orders = self.batch_orders()
        deferred = (self.epoch + 1 < self.defer)[:, None]  # deferred re-weighting: uniform weights until then
        buffers.epoch_index.copy_(self.index.gather(1, orders))
        buffers.epoch_weights.copy_(torch.where(deferred, 1.0, self.weights.gather(1, orders)))
        buffers.cursor.zero_()
        buffers.step.fill_(self.epoch * (full + (last > 0)))
        buffers.sums.zero_()
        return EpochPlan(full, last, captured)

    def finish_epoch(self, plan: EpochPlan, on_step: Callable[[], None] | None = None) -> EpochStats:
        """After the epoch's full batches: the last partial batch (eager), then the statistics (the one
        host sync of the epoch)."""
        if plan.last:
            with self.captured.own_gradients() if plan.captured else nullcontext():
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
        """Everything the next epoch depends on, copied: parameters and buffers, momentum, the learning rate,
        the epoch, each run's batch-order generator and the global RNG (the studies' models draw nothing from it
        since dropout masks are counter-based; kept so that a model which does still resumes exactly)."""
        state = {"epoch": self.epoch,
                 "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                 "momentum": [b.clone() for b in self.optimizer.buffers],
                 "momentum_started": self.optimizer.started,
                 "lr": self.optimizer.lr,
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
        self.optimizer.set_lr(state["lr"])
        self.diverged_epoch = np.array(state["diverged_epoch"])
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved)
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch = int(state["epoch"])

    # ------------------------------------------------------------------------------------------- the step

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
        loss = losses.reduce_weighted(self.losses(logits, y), w, self.normalization)  # (K,)
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
        return tuple(t.data_ptr() for t in (*self._state_tensors(), *self.optimizer.decay, self.optimizer.lr_tensor,
                                            self.inputs, self.labels))

    # ------------------------------------------------------------------------------------ evaluations

    @torch.no_grad()
    def predict_logits(self, inputs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Logits (K, M, C) of every run on the same inputs (M, ...), evaluation mode."""
        self.model.eval()
        K = self.runs.n_models
        # K copies of a batch go through the grouped convolutions: keep K x batch moderate (cache)
        batch_size = batch_size or max(16, 2048 // K)
        out = []
        with self.cudnn_setting():
            for start in range(0, len(inputs), batch_size):
                x = self._prepare(inputs[start:start + batch_size])
                with self.autocast():
                    out.append(self.forward(x.unsqueeze(0).expand(K, *x.shape)).float())
        return torch.cat(out, 1)

    def class_gradient_norms(self, inputs: torch.Tensor, labels: torch.Tensor,
                             n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Norm of the gradient contributed by each class's probe examples, (K, C) weighted and unweighted.

        On the probe set (evaluation mode), class c contributes sum_{i in c} w_c l_i / Z with Z = n
        (``mean``) or sum_i w_i (``weight_sum``), w_c the run's class weight (:attr:`class_weights`);
        unweighted: sum_{i in c} l_i / n.
        """
        self.model.eval()
        K = self.runs.n_models
        x = self._prepare(inputs).unsqueeze(0).expand(K, *inputs.shape)
        params = [p for p in self.model.parameters() if p.requires_grad]
        plain = []
        with self.cudnn_setting():
            per_example = torch.nn.functional.cross_entropy(
                self.model(x).float().flatten(0, 1), labels.repeat(K), reduction="none").view(K, -1)
            for c in range(n_classes):
                loss = (per_example * (labels == c)).sum(1) / len(labels)
                grads = torch.autograd.grad(loss.sum(), params, retain_graph=c < n_classes - 1, allow_unused=True)
                plain.append(sum(g.reshape(K, -1).pow(2).sum(1) for g in grads if g is not None).sqrt())
        plain_t = torch.stack(plain, 1)  # (K, C)
        counts = torch.bincount(labels, minlength=n_classes).float()
        class_weights = self.class_weight_tensor[:, :n_classes]
        if self.normalization == "mean":
            scale = class_weights
        else:  # sum_i w_i = sum_c n_c w_c
            scale = class_weights * len(labels) / (class_weights * counts).sum(1, keepdim=True)
        return (plain_t * scale).detach().cpu().numpy(), plain_t.detach().cpu().numpy()
