"""Models: logistic regression and a one-hidden-layer MLP for 2-D data.

Parameters of many runs are *stacked* (a leading run dimension K) so that one kernel or one batched
product trains or evaluates them all. Initialisation is PyTorch's default for ``nn.Linear`` under the
run's model seed, so a stacked run starts exactly where the same ``nn.Module`` would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

MODELS_2D = ("lr", "mlp")


class LogisticRegression(nn.Module):
    """Linear 2 -> 1; the output is the logit of class 1."""

    def __init__(self, in_features: int = 2):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class MLP(nn.Module):
    """2 -> hidden (ReLU, dropout p) -> 1; the output is the logit of class 1."""

    def __init__(self, in_features: int = 2, hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(x)))).squeeze(-1)


def make_2d_model(name: str, hidden: int = 64, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "lr":
        return LogisticRegression()
    if name == "mlp":
        return MLP(hidden=hidden, dropout=dropout)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS_2D)}")


def module_to_stacked(model: nn.Module) -> dict[str, np.ndarray]:
    """One module's parameters in the stacked layout (without the run dimension).

    Layout: ``W1`` (2, H), ``b1`` (H,), ``w2`` (H,), ``b2`` () for the MLP; for logistic regression
    H = 0 hidden units and ``w2`` (2,) acts on the inputs directly.
    """
    if isinstance(model, LogisticRegression):
        w = model.linear.weight.detach().numpy()[0]
        return {"W1": np.zeros((2, 0), np.float32), "b1": np.zeros(0, np.float32), "w2": w.copy(),
                "b2": model.linear.bias.detach().numpy()[0].copy()}
    return {"W1": model.hidden.weight.detach().numpy().T.copy(),
            "b1": model.hidden.bias.detach().numpy().copy(),
            "w2": model.out.weight.detach().numpy()[0].copy(),
            "b2": model.out.bias.detach().numpy()[0].copy()}


def stacked_to_module(params: dict[str, np.ndarray], dropout: float = 0.0) -> nn.Module:
    """Inverse of :func:`module_to_stacked` for one run."""
    hidden = params["W1"].shape[-1]
    model: nn.Module
    if hidden == 0:
        model = LogisticRegression()
        model.linear.weight.data = torch.as_tensor(params["w2"]).reshape(1, 2).float().clone()
        model.linear.bias.data = torch.as_tensor(params["b2"]).reshape(1).float().clone()
    else:
        model = MLP(hidden=hidden, dropout=dropout)
        model.hidden.weight.data = torch.as_tensor(params["W1"]).T.float().clone()
        model.hidden.bias.data = torch.as_tensor(params["b1"]).float().clone()
        model.out.weight.data = torch.as_tensor(params["w2"]).reshape(1, -1).float().clone()
        model.out.bias.data = torch.as_tensor(params["b2"]).reshape(1).float().clone()
    return model


def init_stacked(name: str, seeds: Sequence[int], hidden: int = 64) -> dict[str, np.ndarray]:
    """Stacked initial parameters of ``len(seeds)`` runs, run k initialised with ``seeds[k]``."""
    per_run = [module_to_stacked(make_2d_model(name, hidden, seed=s)) for s in seeds]
    return {key: np.ascontiguousarray(np.stack([p[key] for p in per_run]).astype(np.float32))
            for key in per_run[0]}


def stacked_logits(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits of K stacked runs (no dropout: evaluation) on shared inputs ``x`` (n, 2) or per-run
    inputs (K, n, 2). Returns (K, n)."""
    if x.dim() == 2:
        x = x.expand(params["w2"].shape[0], -1, -1)
    if params["W1"].shape[-1] == 0:
        features = x
    else:
        features = torch.relu(torch.baddbmm(params["b1"].unsqueeze(1), x, params["W1"]))
    return torch.bmm(features, params["w2"].unsqueeze(-1)).squeeze(-1) + params["b2"].unsqueeze(-1)
