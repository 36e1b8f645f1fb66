"""Models: logistic regression and a one-hidden-layer MLP for feature vectors (the paper's 2-D data, or
any width); the Byrd & Lipton CNN.

Parameters of many runs are *stacked* (a leading run dimension K) so that one kernel or one batched
product trains or evaluates them all (:class:`Stacked2D`, :class:`StackedCNN`). Initialisation is
PyTorch's default for ``nn.Linear``/``nn.Conv2d`` under the run's model seed, so a stacked run starts
exactly where the same ``nn.Module`` would.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import CONVOLUTIONS, MODELS_2D
from .kernels import triton_available
from .kernels.counter import dropout_scales


def _outputs(n_classes: int) -> int:
    """Output units: one logit (of class 1) for two classes, one per class otherwise."""
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2 (got {n_classes})")
    return 1 if n_classes == 2 else int(n_classes)


def _check_in_features(in_features: int) -> int:
    if isinstance(in_features, bool) or int(in_features) != in_features or in_features < 1:
        raise ValueError(f"in_features must be an integer >= 1 (got {in_features})")
    return int(in_features)


class LogisticRegression(nn.Module):
    """Linear in_features -> 1 (the logit of class 1) for two classes, -> n_classes logits otherwise."""

    def __init__(self, in_features: int = 2, n_classes: int = 2):
        super().__init__()
        self.n_classes = n_classes
        self.linear = nn.Linear(_check_in_features(in_features), _outputs(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z.squeeze(-1) if self.n_classes == 2 else z


class MLP(nn.Module):
    """in_features -> hidden (ReLU, dropout p) -> 1 logit (of class 1) for two classes, n_classes otherwise."""

    def __init__(self, in_features: int = 2, hidden: int = 64, dropout: float = 0.0, n_classes: int = 2):
        super().__init__()
        self.n_classes = n_classes
        self.hidden = nn.Linear(_check_in_features(in_features), hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, _outputs(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.out(self.dropout(torch.relu(self.hidden(x))))
        return z.squeeze(-1) if self.n_classes == 2 else z


def make_2d_model(name: str, hidden: int = 64, dropout: float = 0.0, seed: int = 0, in_features: int = 2,
                  n_classes: int = 2) -> nn.Module:
    """One logistic regression (``lr``) or MLP (``mlp``) initialised under ``seed``."""
    torch.manual_seed(seed)
    if name == "lr":
        return LogisticRegression(in_features, n_classes)
    if name == "mlp":
        return MLP(in_features, hidden=hidden, dropout=dropout, n_classes=n_classes)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS_2D)}")


def module_to_stacked(model: nn.Module) -> dict[str, np.ndarray]:
    """One module's parameters in the stacked layout (without the run dimension).

    Layout, for d inputs and H hidden units: ``W1`` (d, H), ``b1`` (H,), then for two classes (one
    logit) ``w2`` (H,) and ``b2`` (), for C > 2 classes ``w2`` (H, C) and ``b2`` (C,). Logistic
    regression has H = 0 hidden units (``W1`` (d, 0)) and ``w2`` acts on the inputs directly
    (``w2`` (d,) or (d, C)).
    """
    def head(linear: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
        weight, bias = linear.weight.detach().numpy(), linear.bias.detach().numpy()
        if weight.shape[0] == 1:  # binary: the logit of class 1
            return weight[0].copy(), bias[0].copy()
        return weight.T.copy(), bias.copy()

    if isinstance(model, LogisticRegression):
        w2, b2 = head(model.linear)
        d = model.linear.in_features
        return {"W1": np.zeros((d, 0), np.float32), "b1": np.zeros(0, np.float32), "w2": w2, "b2": b2}
    w2, b2 = head(model.out)
    return {"W1": model.hidden.weight.detach().numpy().T.copy(),
            "b1": model.hidden.bias.detach().numpy().copy(), "w2": w2, "b2": b2}


def stacked_to_module(params: dict[str, np.ndarray], dropout: float = 0.0) -> nn.Module:
    """Inverse of :func:`module_to_stacked` for one run (input width and class count read from the
    shapes: ``W1`` (d, H), ``w2`` (F,) for two classes or (F, C))."""
    in_features, hidden = params["W1"].shape
    n_classes = 2 if np.ndim(params["w2"]) == 1 else np.shape(params["w2"])[1]
    outputs = _outputs(n_classes)

    def set_head(linear: nn.Linear) -> None:
        linear.weight.data = torch.as_tensor(params["w2"]).reshape(-1, outputs).T.float().contiguous().clone()
        linear.bias.data = torch.as_tensor(params["b2"]).reshape(outputs).float().clone()

    model: nn.Module
    if hidden == 0:
        model = LogisticRegression(in_features, n_classes)
        set_head(model.linear)
    else:
        model = MLP(in_features, hidden=hidden, dropout=dropout, n_classes=n_classes)
        model.hidden.weight.data = torch.as_tensor(params["W1"]).T.float().contiguous().clone()
        model.hidden.bias.data = torch.as_tensor(params["b1"]).float().clone()
        set_head(model.out)
    return model


def init_stacked(name: str, seeds: Sequence[int], hidden: int = 64, in_features: int = 2,
                 n_classes: int = 2) -> dict[str, np.ndarray]:
    """Stacked initial parameters of ``len(seeds)`` runs, run k initialised with ``seeds[k]``."""
    per_run = [module_to_stacked(make_2d_model(name, hidden, seed=s, in_features=in_features, n_classes=n_classes))
               for s in seeds]
    return {key: np.ascontiguousarray(np.stack([p[key] for p in per_run]).astype(np.float32))
            for key in per_run[0]}


class Stacked2D(nn.Module):
    """K logistic regressions or MLPs on feature vectors of ``in_features`` (the paper's 2-D data by
    default), one module (the layout of :func:`init_stacked`), for :class:`iwshift.train.Trainer`.

    Input ``(K, B, in_features)``, output ``(K, B, n_classes)`` logits. With two classes the model has
    one logit z (of class 1) and outputs ``[0, z]``: softmax cross-entropy of ``[0, z]`` is the binary
    cross-entropy of z (and its class margin is +-z), so the trainer's multi-class losses serve the
    binary models unchanged. Dropout masks are counter-based, a function of (run seed, SGD step): the
    trainer passes ``step`` in training mode, and its fused engine (:mod:`iwshift.sgd2d`, binary models
    only) draws the same masks.
    """

    step_seeded_dropout = True

    def __init__(self, name: str, seeds: Sequence[int], hidden: int = 64, dropout: Sequence[float] | float = 0.0,
                 in_features: int = 2, n_classes: int = 2):
        super().__init__()
        if name not in MODELS_2D:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS_2D)}")
        self.n_models = len(seeds)
        self.in_features, self.n_classes = _check_in_features(in_features), int(n_classes)
        initial = {k: torch.from_numpy(v)
                   for k, v in init_stacked(name, seeds, hidden, in_features, n_classes).items()}
        if name == "lr":  # no hidden layer: W1 and b1 stay empty (buffers, so that they get no gradient)
            self.register_buffer("W1", initial["W1"])
            self.register_buffer("b1", initial["b1"])
        else:
            self.W1, self.b1 = nn.Parameter(initial["W1"]), nn.Parameter(initial["b1"])
        self.w2, self.b2 = nn.Parameter(initial["w2"]), nn.Parameter(initial["b2"])
        self.register_buffer("seeds", torch.as_tensor(list(seeds), dtype=torch.int64))
        self.register_buffer("dropout", torch.as_tensor(dropout, dtype=torch.float32).expand(self.n_models).clone())
        self.has_dropout = bool((self.dropout > 0).any())  # a Python flag: no device sync per forward

    def stacked_params(self) -> dict[str, torch.Tensor]:
        """The parameters as ``{W1, b1, w2, b2}`` (detached views: they follow training)."""
        return {k: v.detach() for k, v in self._params().items()}

    def _params(self) -> dict[str, torch.Tensor]:
        return {"W1": self.W1, "b1": self.b1, "w2": self.w2, "b2": self.b2}

    def forward(self, x: torch.Tensor, step: int | torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"inputs have {x.shape[-1]} features but the model takes in_features={self.in_features}")
        hidden_scale = None
        if self.training and self.has_dropout:
            if step is None:
                raise ValueError("training with dropout needs the SGD step (the masks are counter-based)")
            hidden_scale = dropout_scales(self.seeds, self.dropout, step, x.shape[1], [self.W1.shape[-1]])[0]
        z = stacked_logits(self._params(), x, hidden_scale)
        return z if self.n_classes > 2 else torch.stack([torch.zeros_like(z), z], -1)


def stacked_logits(params: dict[str, torch.Tensor], x: torch.Tensor,
                   hidden_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of K stacked runs on shared inputs ``x`` (n, d) or per-run inputs (K, n, d): (K, n), the
    logit of class 1, for binary runs (``w2`` (K, F)); (K, n, C) for C-class runs (``w2`` (K, F, C)).
    ``hidden_scale`` (K, n, H) multiplies the MLP's hidden units (dropout masks; none: evaluation)."""
    if x.dim() == 2:
        x = x.expand(params["w2"].shape[0], -1, -1)
    if params["W1"].shape[-1] == 0:
        features = x
    else:
        features = torch.relu(torch.baddbmm(params["b1"].unsqueeze(1), x, params["W1"]))
        if hidden_scale is not None:
            features = features * hidden_scale
    if params["w2"].dim() == 3:
        return torch.baddbmm(params["b2"].unsqueeze(1), features, params["w2"])
    return torch.bmm(features, params["w2"].unsqueeze(-1)).squeeze(-1) + params["b2"].unsqueeze(-1)


# ------------------------------------------------------------------------------- the CIFAR-10 CNN


POOL_AFTER = (1, 4)  # 2x2 max-pooling after the second and the fifth convolution


def cnn_widths(width: float) -> tuple[list[int], list[int]]:
    """Channels of the five convolutions and sizes of the two hidden fully connected layers of the
    Byrd & Lipton CNN at width multiplier ``width`` (1.0: 64, 64, 128, 128, 128 and 512, 128)."""
    scale = lambda c: max(1, int(round(c * width)))  # noqa: E731
    return [scale(c) for c in (64, 64, 128, 128, 128)], [scale(512), scale(128)]


def conv_layers(width: float, size: int = 32) -> list[tuple[int, int, int]]:
    """(input channels, output channels, input height and width) of each convolution of the Byrd & Lipton CNN
    at width multiplier ``width`` on ``size`` x ``size`` images (3x3, no padding; 2x2 max-pooling after the
    convolutions of :data:`POOL_AFTER`)."""
    layers, c_in = [], 3
    for i, c_out in enumerate(cnn_widths(width)[0]):
        layers.append((c_in, c_out, size))
        size, c_in = size - 2, c_out
        if i in POOL_AFTER:
            size //= 2
    return layers


class StackedCNN(nn.Module):
    """K independent copies of the Byrd & Lipton CNN, trained as one module.

    conv 3->64, 64->64, max-pool, 64->128, 128->128, 128->128, max-pool (3x3 kernels, no padding, ReLU;
    optional batch norm after each convolution), FC 2048->512->128->n_classes with dropout on the two
    hidden FC layers. Model k's convolution channels are group k of grouped convolutions, so batch norm
    keeps per-model statistics for free; the FC layers are batched matrix products. Dropout
    probabilities are per model (a buffer), so runs with and without dropout share one stack.

    Dropout masks are counter-based, a function of (model k's seed, SGD step, element index) computed
    with integer torch ops on the model's device (:func:`iwshift.kernels.counter.counter_uniform`): no global RNG, no host sync,
    and a run draws the same masks alone or in any stack. The trainer passes ``step`` in training mode
    (a Python int, or a 0-d int64 tensor on the device, e.g. inside a CUDA graph).

    ``convolutions``: ``torch`` (``nn.Conv2d``: cuDNN on CUDA, oneDNN on the CPU), ``triton`` (one Triton
    implicit-GEMM launch per layer for all K models, :mod:`iwshift.kernels.triton_conv`; CUDA only, on the same
    parameters) or ``auto`` (per layer, whichever of the two :meth:`tune` times faster for the training batch
    on CUDA; ``torch`` until then, and on the CPU). ``layer_convolutions`` holds each layer's choice.

    Input ``(K, B, 3, 32, 32)`` (model k sees its own batch), output logits ``(K, B, n_classes)``.
    """

    step_seeded_dropout = True

    def __init__(self, n_models: int, width: float = 1.0, batch_norm: bool = False, n_classes: int = 2,
                 dropout: Sequence[float] | float = 0.0, seeds: Sequence[int] | None = None,
                 convolutions: str = "torch"):
        super().__init__()
        if convolutions not in CONVOLUTIONS:
            raise ValueError(f"unknown convolutions {convolutions!r}; choose from {', '.join(CONVOLUTIONS)}")
        self.convolutions = convolutions
        K = self.n_models = n_models
        self.width, self.batch_norm, self.n_classes = width, batch_norm, n_classes
        channels, hidden = cnn_widths(width)
        convs, norms, c_in = [], [], 3
        for c_out in channels:
            convs.append(nn.Conv2d(K * c_in, K * c_out, 3, groups=K))
            norms.append(nn.BatchNorm2d(K * c_out) if batch_norm else nn.Identity())
            c_in = c_out
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.layer_convolutions = ["triton" if convolutions == "triton" else "torch"] * len(convs)
        self.tuned: dict[str, dict[str, float]] = {}  # auto: each layer's timings (ms), once tuned
        sizes = [channels[-1] * 16, *hidden, n_classes]
        self.fc_weights = nn.ParameterList(nn.Parameter(torch.empty(K, a, b)) for a, b in zip(sizes, sizes[1:]))
        self.fc_biases = nn.ParameterList(nn.Parameter(torch.empty(K, 1, b)) for b in sizes[1:])
        self.register_buffer("dropout", torch.as_tensor(dropout, dtype=torch.float32).expand(K).clone())
        self.has_dropout = bool((self.dropout > 0).any())  # a Python flag: no device sync per forward
        self.register_buffer("seeds", torch.zeros(K, dtype=torch.int64))
        self.reset_parameters([0] * K if seeds is None else seeds)

    def reset_parameters(self, seeds: Sequence[int]) -> None:
        """Initialise model k exactly as a single ``nn.Conv2d``/``nn.Linear`` network under ``seeds[k]``;
        its dropout masks come from the same seed."""
        channels, hidden = cnn_widths(self.width)
        sizes = [channels[-1] * 16, *hidden, self.n_classes]
        with torch.no_grad():
            self.seeds.copy_(torch.as_tensor(list(seeds), dtype=torch.int64))
            for k, seed in enumerate(seeds):
                gen = torch.Generator().manual_seed(int(seed))
                c_in = 3
                for conv, c_out in zip(self.convs, channels):
                    w, b = _default_init((c_out, c_in, 3, 3), c_in * 9, gen)
                    conv.weight[k * c_out:(k + 1) * c_out] = w
                    conv.bias[k * c_out:(k + 1) * c_out] = b
                    c_in = c_out
                for W, bias, (a, b_) in zip(self.fc_weights, self.fc_biases, zip(sizes, sizes[1:])):
                    w, b = _default_init((b_, a), a, gen)
                    W[k] = w.T
                    bias[k, 0] = b
            for norm in self.norms:
                if isinstance(norm, nn.BatchNorm2d):
                    norm.reset_parameters()

    def autocast_parameters(self) -> list[str]:
        """Names of the parameters that the forward uses in autocast's dtype: the convolutions' and the fully
        connected layers' (batch norm's stay float32). The trainer keeps bf16 copies of these
        (:class:`iwshift.train.StackedSGD`)."""
        return [name for name, _ in self.named_parameters() if not name.startswith("norms.")]

    def tune(self, batch_size: int, dtype: torch.dtype, channels_last: bool = True,
             timer: Callable[..., dict[str, float]] | None = None) -> None:
        """``convolutions="auto"`` on CUDA: time each layer's forward and backward through cuDNN and through
        the Triton kernels (``timer``, default :func:`iwshift.kernels.triton_conv.time_layer`: captured CUDA graphs
        on this stack's shapes for batches of ``batch_size`` under autocast to ``dtype``, weights in ``dtype``
        as the trainer's copies are, activations in the training's memory format) and keep the faster per
        layer. Once (a checkpoint carries the choice: :meth:`tuning_state`); nothing to do for other choices,
        or off CUDA unless a ``timer`` is given. The trainer calls it before its first step."""
        if self.convolutions != "auto" or self.tuned:
            return
        if timer is None:
            if self.convs[0].weight.device.type != "cuda":
                return
            if not triton_available():
                warnings.warn("convolutions auto: Triton 3.0 or newer (with PyTorch 2.4 or newer) is not installed "
                              "here; cuDNN for every layer", stacklevel=2)
                return
            from .kernels.triton_conv import time_layer as timer
        for i, (conv, (c_in, _, size)) in enumerate(zip(self.convs, conv_layers(self.width))):
            # as in training: the normalised images are float32 and need no gradient; later inputs are autocast's;
            # the weights in ``dtype`` (the trainer's bf16 weight copies)
            weight, bias = (t.detach().to(dtype) for t in (conv.weight, conv.bias))
            times = timer(weight, bias, self.n_models, (batch_size, self.n_models * c_in, size, size),
                          dtype, input_grad=i > 0, input_dtype=dtype if i else torch.float32,
                          channels_last=channels_last)
            self.layer_convolutions[i] = min(times, key=times.get)
            self.tuned[f"conv{i + 1}"] = times

    def tuning_state(self) -> dict[str, Any]:
        """What :meth:`tune` chose, to carry in a checkpoint: a resumed run keeps its convolutions."""
        return {"layer_convolutions": list(self.layer_convolutions),
                "tuned": {layer: dict(times) for layer, times in self.tuned.items()}}

    def load_tuning_state(self, state: dict[str, Any]) -> None:
        """Take a checkpoint's :meth:`tuning_state` (``convolutions="auto"`` only, where it tuned): no timing
        again, the same layers through the same kernels."""
        if self.convolutions == "auto" and state.get("tuned"):
            self.layer_convolutions = list(state["layer_convolutions"])
            self.tuned = {k: dict(v) for k, v in state["tuned"].items()}

    def tuning_summary(self) -> str:
        """What :meth:`tune` chose, one line: each layer's choice and its two timings ('' if not tuned)."""
        return "; ".join(f"{layer} {choice} (cuDNN {times['torch']:.3f} ms, Triton {times['triton']:.3f} ms)"
                         for (layer, times), choice in zip(self.tuned.items(), self.layer_convolutions))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, units) the last hidden layer (after its ReLU) of each model on its own batch, evaluation mode:
        the features an importance-weight estimator may see the shift in."""
        return self.forward(x, penultimate=True)

    def forward(self, x: torch.Tensor, step: int | torch.Tensor | None = None,
                penultimate: bool = False) -> torch.Tensor:
        K, B = x.shape[:2]
        scales = None
        if self.training and self.has_dropout:
            if step is None:
                raise ValueError("training with dropout needs the SGD step (the masks are counter-based)")
            sizes = [W.shape[-1] for W in list(self.fc_weights)[:-1]]
            scales = dropout_scales(self.seeds, self.dropout, step, B, sizes)
        h = x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])
        if self.convs[0].weight.is_contiguous(memory_format=torch.channels_last) and K * x.shape[2] > 1:
            h = h.contiguous(memory_format=torch.channels_last)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if self.layer_convolutions[i] == "triton":
                from .kernels.triton_conv import grouped_conv3x3  # (needs triton: imported only where it runs)

                h = grouped_conv3x3(h, conv.weight, conv.bias, K)
            else:
                h = conv(h)
            h = norm(h)
            if i in POOL_AFTER:  # pool, then ReLU (they commute; the ReLU and its gradient on a quarter of the values)
                h = nn.functional.max_pool2d(h, 2)
            h = torch.relu(h)
        h = h.reshape(B, K, -1).transpose(0, 1)  # (K, B, features) in each model's C, H, W order
        last = len(self.fc_weights) - 1
        for i, (W, b) in enumerate(zip(self.fc_weights, self.fc_biases)):
            if penultimate and i == last:
                return h
            h = torch.baddbmm(b.to(h.dtype), h, W.to(h.dtype))
            if i < last:
                h = torch.relu(h)
                if scales is not None:
                    h = h * scales[i].to(h.dtype)
        return h


def _default_init(shape: tuple[int, ...], fan_in: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's default ``nn.Linear``/``nn.Conv2d`` initialisation (uniform, bound 1/sqrt(fan_in))."""
    bound = 1.0 / fan_in ** 0.5
    weight = (torch.rand(shape, generator=gen) * 2 - 1) * bound
    bias = (torch.rand(shape[0], generator=gen) * 2 - 1) * bound
    return weight, bias
