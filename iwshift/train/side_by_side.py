"""Several stacks trained side by side: their captured steps replayed on CUDA streams of their own, which the GPU
may run at once (opt-in, ``side_by_side``: no GPU has timed it; by the H200 numbers three stacks of 7 must
overlap by more than a third to beat one stack of 21). Each run computes what it computes in a stack of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from .runs import EpochStats
from .trainer import Trainer


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
        with trainer.cudnn_setting():
            plans.append(trainer.begin_epoch())
    side = [t for t, plan in zip(trainers, plans) if plan.captured]
    if side:
        main = torch.cuda.current_stream(side[0].device)
        for trainer in side:
            if trainer.captured.stream is None:
                trainer.captured.stream = torch.cuda.Stream(trainer.device)
            trainer.captured.stream.wait_stream(main)  # the epoch's batch orders were written on the main stream
    for step in range(max((plan.full for plan in plans), default=0)):
        for trainer, plan in zip(trainers, plans):
            if step >= plan.full:
                continue
            if plan.captured:
                with torch.cuda.stream(trainer.captured.stream):
                    trainer.captured.replay()
            else:
                with trainer.cudnn_setting():
                    trainer._step(trainer.batch_size)
        if on_step is not None:
            on_step()
    for trainer in side:
        main.wait_stream(trainer.captured.stream)
    stats = []
    for trainer, plan in zip(trainers, plans):
        with trainer.cudnn_setting():
            stats.append(trainer.finish_epoch(plan))
    if on_step is not None and any(plan.last for plan in plans):
        on_step()
    return stats


class SideBySide:
    """Several stacks trained side by side (:func:`train_side_by_side`), seen as one trainer of all their
    runs, stack 0's first: what :func:`fit_table` and the studies' evaluations use of a :class:`Trainer`
    (``train_epoch``, ``set_lr``, ``epoch``, ``diverged``, ``predict_logits``, ``class_gradient_norms``, ``state_dict``)
    with the stacks' runs concatenated. Each run computes what it computes in a stack of its own."""

    def __init__(self, trainers: Sequence[Trainer]):
        if not trainers:
            raise ValueError("SideBySide needs at least one trainer")
        if len({t.epoch for t in trainers}) > 1:
            raise ValueError("the trainers of a SideBySide must be at the same epoch")
        self.trainers = list(trainers)

    @property
    def epoch(self) -> int:
        return self.trainers[0].epoch

    @property
    def diverged_epoch(self) -> np.ndarray:
        return np.concatenate([t.diverged_epoch for t in self.trainers])

    @property
    def diverged(self) -> np.ndarray:
        return self.diverged_epoch > 0

    def set_lr(self, lr: float) -> None:
        for trainer in self.trainers:
            trainer.set_lr(lr)

    def train_epoch(self, on_step: Callable[[], None] | None = None) -> EpochStats:
        parts = train_side_by_side(self.trainers, on_step)
        return EpochStats(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(EpochStats)))

    def predict_logits(self, inputs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return torch.cat([t.predict_logits(inputs, batch_size) for t in self.trainers])

    def class_gradient_norms(self, inputs: torch.Tensor, labels: torch.Tensor,
                             n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
        parts = [t.class_gradient_norms(inputs, labels, n_classes) for t in self.trainers]
        return np.concatenate([w for w, _ in parts]), np.concatenate([p for _, p in parts])

    @property
    def model(self) -> torch.nn.Module:
        return self.trainers[0].model

    def record(self) -> dict[str, Any]:
        """How the stacks were trained (:meth:`Trainer.record`), with their number."""
        return {**self.trainers[0].record(), "side_by_side": len(self.trainers)}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "side_by_side": [t.state_dict() for t in self.trainers],
                "runs": [t.runs.n_models for t in self.trainers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("runs") != [t.runs.n_models for t in self.trainers]:
            raise ValueError("a checkpoint of other stacks side by side")
        for trainer, saved in zip(self.trainers, state["side_by_side"], strict=True):
            trainer.load_state_dict(saved)
