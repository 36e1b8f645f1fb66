"""The trainer's fused engine: the numba kernel of :mod:`iwshift.kernels.sgd2d` trains whole epochs of every run
of a 2-D stack in compiled code (10,000 epochs of batch-8 SGD are 640,000 sequential steps per run: too many for
a Python step each). It computes what the torch engine computes; the tests train the same stacks through both.

The kernel has its own compiled versions of the losses it knows (:data:`FUSED_LOSSES`); a stack with another
loss is left to the torch engine (``engine="auto"``) or refused (``engine="fused"``)."""

from __future__ import annotations

import numpy as np
import torch

from ..kernels import sgd2d
from ..losses import logit_offset
from ..models import Stacked2D
from .runs import StackedRuns

FUSED_LOSSES = ("plain", "logit_adjusted", "poly")  # the losses the kernel has a compiled version of


def why_not(model: torch.nn.Module, runs: StackedRuns, inputs: torch.Tensor, momentum: float, precision: str,
            batch_order: str, compile: bool) -> list[str]:
    """Why the fused engine cannot train this stack (empty: it can)."""
    other = sorted({spec.name for spec in runs.loss if spec.name not in FUSED_LOSSES})
    return [why for why, holds in (
        ("the model is not a Stacked2D", isinstance(model, Stacked2D)),
        ("the model has more than 2 classes", getattr(model, "n_classes", 2) == 2),
        ("the inputs are not float32 features (N, d)", inputs.dtype == torch.float32 and inputs.dim() == 2),
        ("the device is not the CPU", inputs.device.type == "cpu"),
        ("momentum is not 0", momentum == 0),
        ("precision is not fp32", precision == "fp32"),
        ('batch_order is not "counter"', batch_order == "counter"),
        ("compile is on", not compile),
        (f"the kernel has no compiled version of the loss {', '.join(other)}", not other)) if not holds]


def train(model: Stacked2D, runs: StackedRuns, inputs: torch.Tensor, labels: torch.Tensor, weights: np.ndarray,
          log_class_weights: torch.Tensor, lr: float, epoch: int, count: int, batch_size: int,
          normalization: str) -> np.ndarray:
    """``count`` epochs, from ``epoch``, of every run of the stack through the kernel (the model's parameters
    trained in place; ``weights``: the (K, n) weights SGD uses); the running statistics of the last epoch, (K, 3):
    weighted loss, cross-entropy, accuracy."""
    K = runs.n_models
    params = {k: v.numpy() for k, v in model.stacked_params().items()}  # views: trained in place
    kinds, offsets, poly = np.zeros(K, np.int64), np.zeros(K, np.float32), np.tile([1.0, 0.0], (K, 1))
    log_w = log_class_weights.cpu()
    for k, spec in enumerate(runs.loss):
        values = dict(spec.params)
        if spec.name == "poly":
            kinds[k], poly[k] = 1, (values["poly_alpha"], values["poly_beta"])
        elif spec.name == "logit_adjusted":  # [0, z] + offset: the BCE of z + (offset_1 - offset_0)
            offset = logit_offset(log_w[k], values["tau"])
            offsets[k] = (offset[1] - offset[0]).item()
    return sgd2d.train_stacked(
        params, inputs.numpy(), labels.numpy(), runs.train_index, weights, [lr] * K, runs.l2, runs.dropout,
        runs.seeds, epoch, epoch + count, batch_size, normalization, loss_kind=kinds, logit_offset=offsets, poly=poly,
        defer_until=runs.defer_until)
