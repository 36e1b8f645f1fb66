"""Run health, in one place: did a run fit its training data, did it diverge, did it collapse to a constant
predictor -- measured at every evaluated epoch, summarised as each run's ``status``, and used the same way by the
scripts (their exit status), the figures and the claims report.

Columns of every run's ``metrics.csv``: ``train_accuracy_eval`` (evaluation-mode accuracy on the run's own
training set, at most :data:`TRAIN_EVAL_SIZE` fixed examples), ``diverged`` (a non-finite training loss or
parameters: the run is stopped and its rows end there), ``collapsed`` (one class predicted for at least
:data:`COLLAPSE_FRACTION` of the test examples) and ``status`` (``ok`` / ``collapsed`` / ``diverged`` at its last
epoch, the same in every row of the run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

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


def train_accuracy_eval(trainer: Any, subsets: Sequence[np.ndarray], inputs: torch.Tensor,
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


def health_columns(trainer: Any, subsets: Sequence[np.ndarray], inputs: torch.Tensor, labels: torch.Tensor,
                   test_pred: torch.Tensor, n_classes: int) -> dict[str, np.ndarray]:
    """The run-health columns of an evaluated epoch: eval-mode training accuracy, divergence so far, collapse to
    a constant predictor on the task's test images."""
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


def split_status(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of runs whose ``status`` is "ok", the others); a derived table without the column (e.g. paired
    differences) is all ok."""
    if "status" not in table:
        return table, table.iloc[:0]
    ok = table["status"] == "ok"
    return table[ok], table[~ok]


def excluded_note(table: pd.DataFrame) -> str:
    """"2 collapsed, 1 diverged" for the runs of ``table`` whose status is not ok ("" if none)."""
    _, bad = split_status(table)
    if bad.empty:
        return ""
    counts = bad.groupby("status")["run"].nunique() if "run" in bad else bad["status"].value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def diverged_runs(table: pd.DataFrame) -> list[Any]:
    """The runs of a table whose status is diverged, in order."""
    return sorted(table.loc[table["status"] == "diverged", "run"].unique().tolist())


def divergence_summary(table: pd.DataFrame, prog: str) -> str | None:
    """The line a script ends with when runs of ``table`` diverged (None when none did)."""
    if not len(table):
        return None
    status = table.groupby("run", sort=False)["status"].last()
    diverged = status.index[status == "diverged"].tolist()
    if not diverged:
        return None
    shown = ", ".join(map(str, diverged[:5])) + (f" and {len(diverged) - 5} more" if len(diverged) > 5 else "")
    return (f"{prog}: {len(diverged)} of {len(status)} runs diverged (non-finite training loss; stopped, "
            f"status=diverged in their metrics.csv): {shown}")
