"""The per-epoch loop: train a stack to its last epoch, measure it at the evaluated epochs, one tidy table; and
its checkpoints, which a stopped or killed stack resumes from exactly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

if TYPE_CHECKING:
    from .side_by_side import SideBySide
    from .trainer import Trainer


@dataclass
class Checkpoint:
    """Where :func:`fit_table` saves a stack's state (atomically) every ``every`` epochs and on :meth:`save`
    (a signal handler's: preemption, a time limit); ``meta`` identifies what is trained (a saved file with other
    meta is not resumed). It holds the state after the last finished epoch while its stack trains."""

    path: Path
    every: int = 10
    meta: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict, repr=False)

    def save(self) -> bool:
        """Write the last finished epoch's state (False when no epoch has finished yet)."""
        if not self.last:
            return False
        from ..results import atomic_write

        frames = self.last["frames"]
        state = {"trainer": self.last["trainer"], "seconds": self.last["seconds"], "meta": self.meta,
                 "table": pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()}
        atomic_write(self.path, lambda f: torch.save(state, f), binary=True)
        return True


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint written by :func:`fit_table`, or None when the file does not load (say, truncated)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a half-written or foreign file is no checkpoint: train from the start
        return None
    return state if isinstance(state, dict) and {"meta", "trainer", "table", "seconds"} <= set(state) else None


def fit_table(trainer: Trainer | SideBySide, id_frame: pd.DataFrame, epochs: int, eval_epochs: Iterable[int],
              evaluate: Callable[[Trainer | SideBySide], dict[str, np.ndarray]],
              checkpoint: Checkpoint | None = None, on_epoch: Callable[[int], None] | None = None,
              schedule: Callable[[int], float] | None = None) -> pd.DataFrame:
    """Train the trainer's K runs to ``epochs`` and return a tidy table: at each epoch of ``eval_epochs``
    one row per run with ``id_frame``'s row (K rows), the epoch, the epoch's running training loss
    (weighted and not) and accuracy, what ``evaluate(trainer)`` measures (arrays of K) and ``seconds``
    since the start. ``schedule(epoch)`` is the learning rate of each (1-based) epoch, set on the device before
    it trains (None: the trainer's learning rate throughout). With a ``checkpoint``, continues from its file when that holds the same ``meta``, and
    saves every ``checkpoint.every`` epochs (and whenever :meth:`Checkpoint.save` is called); a resumed table
    equals an uninterrupted one (but for ``seconds``, of the time spent in this and earlier attempts).

    The torch engine trains epoch by epoch (a run that diverges gets a row at that epoch, its last); the fused
    engine, whose kernel runs many epochs per call, trains from one evaluated or checkpointed epoch to the next,
    and its divergence is seen there."""
    evals = set(eval_epochs)
    frames: list[pd.DataFrame] = []
    spent = 0.0
    if checkpoint is not None and Path(checkpoint.path).exists():
        saved = read_checkpoint(checkpoint.path)
        if saved is not None and saved["meta"] == checkpoint.meta and saved["trainer"]["epoch"] < epochs:
            trainer.load_state_dict(saved["trainer"])
            frames, spent = [saved["table"]] if len(saved["table"]) else [], float(saved["seconds"])
    start = time.perf_counter() - spent
    every = checkpoint.every if checkpoint is not None else 0
    spans = getattr(trainer, "engine", "torch") == "fused" and schedule is None
    stops = sorted(evals | {epochs} | (set(range(every, epochs, every)) if every else set()))
    while trainer.epoch < epochs:
        if schedule is not None:
            trainer.set_lr(schedule(trainer.epoch + 1))
        count = next(e for e in stops if e > trainer.epoch) - trainer.epoch if spans else 1
        stats = trainer.train_epochs(count) if spans else trainer.train_epoch()
        epoch = trainer.epoch
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
            # the rows so far are concatenated only when saved (with the runner's row lookup once per stack, this took
            # the 2-D study's other work in its stack loops from 0.64 s to 0.25 s, measured)
            checkpoint.last = {"trainer": trainer.state_dict(), "seconds": time.perf_counter() - start,
                               "frames": list(frames)}
            if every and epoch % every == 0:
                checkpoint.save()
        if on_epoch is not None:
            on_epoch(epoch)
        if trainer.diverged.all():  # every run diverged (non-finite loss): nothing left to train
            break
    if checkpoint is not None:
        checkpoint.last = {}
    return pd.concat(frames, ignore_index=True)
