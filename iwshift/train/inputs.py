"""The inputs of a stack: images moved to the device once as uint8 and normalised per batch there, or float
features used as they are; and the checks that refuse inputs a model cannot take."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..kernels import sgd2d
from ..models import Stacked2D
from .runs import StackedRuns

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


def check_inputs(model: torch.nn.Module, runs: StackedRuns, inputs: torch.Tensor, labels: torch.Tensor,
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
