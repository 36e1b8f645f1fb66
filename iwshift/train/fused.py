"""The trainer's fused engine: the numba kernel of :mod:`iwshift.kernels.sgd2d` trains whole epochs of every run
of a 2-D stack in compiled code (10,000 epochs of batch-8 SGD are 640,000 sequential steps per run: too many for
a Python step each). It computes what the torch engine computes; the tests train the same stacks through both.

The kernel has its own compiled versions of the losses it knows (:data:`FUSED_LOSSES`); a stack with another
loss is left to the torch engine (``engine="auto"``) or refused (``engine="fused"``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..kernels import sgd2d
from ..losses import logit_offset
from ..models import Stacked2D
from .runs import EpochStats

if TYPE_CHECKING:
    from .trainer import Trainer

FUSED_LOSSES = ("plain", "logit_adjusted", "poly")  # the losses the kernel has a compiled version of


def why_not(trainer: Trainer, compile: bool) -> list[str]:
    """Why the fused engine cannot train this trainer's stack (empty: it can)."""
    other = sorted({spec.name for spec in trainer.runs.loss if spec.name not in FUSED_LOSSES})
    return [why for why, holds in (
        ("the model is not a Stacked2D", isinstance(trainer.model, Stacked2D)),
        ("the model has more than 2 classes", getattr(trainer.model, "n_classes", 2) == 2),
        ("the inputs are not float32 features (N, d)", trainer.inputs.dtype == torch.float32 and trainer.inputs.dim() == 2),
        ("the device is not the CPU", trainer.device.type == "cpu"),
        ("momentum is not 0", trainer.momentum == 0),
        ("precision is not fp32", trainer.precision == "fp32"),
        ('batch_order is not "counter"', trainer.batch_order == "counter"),
        ("compile is on", not compile),
        (f"the kernel has no compiled version of the loss {', '.join(other)}", not other)) if not holds]


def train(trainer: Trainer, count: int) -> EpochStats:
    """``count`` epochs of every run of the stack through the kernel; the running statistics of the last one."""
    runs, K = trainer.runs, trainer.runs.n_models
    params = {k: v.numpy() for k, v in trainer.model.stacked_params().items()}  # views: trained in place
    kinds, offsets, poly = np.zeros(K, np.int64), np.zeros(K, np.float32), np.tile([1.0, 0.0], (K, 1))
    log_w = trainer.losses.log_class_weights.cpu()
    for k, spec in enumerate(runs.loss):
        values = dict(spec.params)
        if spec.name == "poly":
            kinds[k], poly[k] = 1, (values["poly_alpha"], values["poly_beta"])
        elif spec.name == "logit_adjusted":  # [0, z] + offset: the BCE of z + (offset_1 - offset_0)
            offset = logit_offset(log_w[k], values["tau"])
            offsets[k] = (offset[1] - offset[0]).item()
    stats = sgd2d.train_stacked(
        params, trainer.inputs.numpy(), trainer.labels.numpy(), runs.train_index, trainer.train_weights,
        [trainer.optimizer.lr] * K, runs.l2, runs.dropout, runs.seeds, trainer.epoch, trainer.epoch + count,
        trainer.batch_size, trainer.normalization, loss_kind=kinds, logit_offset=offsets, poly=poly,
        defer_until=runs.defer_until)
    trainer.epoch += count
    nonfinite = ~np.isfinite(stats[:, :2]).all(1) | ~trainer._finite_parameters().cpu().numpy()
    return EpochStats(loss_weighted=stats[:, 0], loss=stats[:, 1], accuracy=stats[:, 2], nonfinite=nonfinite)
