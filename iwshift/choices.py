"""The named values the studies accept, and the presets of the CIFAR studies, in one light module.

It imports nothing (no torch, pandas or numba), so a script's ``--help`` and its argument errors answer
at once (:func:`iwshift.config.override_from_argv` shows and checks these choices); the modules that use
them import them from here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

# ------------------------------------------------------------------------------------ shared
NORMALIZATIONS = ("mean", "weight_sum")              # of the weighted loss (iwshift.losses)
PRECISIONS = ("auto", "fp32", "bf16")                # CNN training precision (iwshift.sweep)
CNN_REGIMES = ("none", "l2", "dropout", "batchnorm")  # of the CNN studies (iwshift.sweep)
ENGINES = ("auto", "torch", "fused")                 # of the trainer (iwshift.train)
CONVOLUTIONS = ("torch", "triton", "auto")           # the CNN's grouped convolutions (iwshift.models)
LAUNCHERS = ("local", "submitit", "submitit-local")  # where the runs train (iwshift.launch)
# The Triton kernels (iwshift.triton_conv, iwshift.triton_sgd) need Triton 3.0 (PyTorch 2.4's) or newer, and
# PyTorch 2.4's autocast API; with an older one, an `auto` choice takes the PyTorch path.
TRITON_MINIMUM, TORCH_FOR_TRITON = (3, 0), (2, 4)


def triton_available() -> bool:
    """Whether the Triton kernels can run here: Triton and PyTorch recent enough (read from the installed
    packages' metadata, without importing them)."""
    def version(package: str) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in importlib.metadata.version(package).split("+")[0].split(".")[:2])
        except (importlib.metadata.PackageNotFoundError, ValueError):
            return ()
    triton = version("triton") or version("pytorch-triton")  # (the latter with PyTorch's nightly builds)
    return importlib.util.find_spec("triton") is not None and triton >= TRITON_MINIMUM and (
        version("torch") >= TORCH_FOR_TRITON)


CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# ---------------------------------------------------------------- the CIFAR-10 binary study
BINARY_SETTINGS = ("weighting", "imbalance")
# plain weighted cross-entropy, and the remedies proposed to make weights matter for deep networks
BINARY_REMEDIES = ("plain", "poly", "logit_adjusted", "drw", "exponent", "early_stop")
# Measured on the JPEG copy here (2 CPU cores): see README, "Presets".
BINARY_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(per_class=5000, width=1.0, epochs=500, lr=0.01, other_eval=8000, noise_eval=1000),
    "cpu": dict(per_class=500, width=0.25, epochs=150, lr=0.01, other_eval=500, noise_eval=250, eval_every=10,
                weights=(1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0)),
}

# ------------------------------------------------------------------- the CIFAR-10 extension
EXTENSION_STUDIES = ("covariate", "label")
COVARIATE_SOURCES = ("none", "true", "domain", "kliep", "kmm")
LABEL_SOURCES = ("none", "true", "bbse", "mlls")
EXTENSION_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(width=1.0, epochs=500, lr=0.01),
    "cpu": dict(width=0.25, epochs=60, lr=0.01, eval_every=10, source_counts=(50, 500, 50, 500),
                per_class=500),
}

# ----------------------------------------------------------------------- the 2-D synthetic study
SYNTHETIC_DATASETS = ("separable", "moons", "moons_minority0", "moons_minority1")
MODELS_2D = ("lr", "mlp")
WEIGHTINGS = ("equal", "up", "down")  # (weight of class 0, weight of class 1): (1, 1), (1, w), (w, 1)
SYNTHETIC_REGIMES = ("none", "l2", "dropout")
SYNTHETIC_REMEDIES = ("plain", "poly", "logit_adjusted", "drw", "exponent")

# -------------------------------------------------- the replication of Wang et al. (ICLR 2022)
WANG_LOSSES = ("ce", "poly_wang")            # cross-entropy, their poly-tailed loss
WANG_WEIGHTINGS = ("none", "iw", "iw_exp")   # No IW, IW, IW-Exp
# their protocol (released code and paper): the fields that make a run comparable with their numbers
WANG_PROTOCOL: dict[str, Any] = dict(per_class=5000, imbalance=10, train_fraction=0.8, width=1.0, epochs=400,
                                     lr=0.001, momentum=0.9, exp_lr=0.008, exp_momentum=0.0, weight_exponent=1.5,
                                     batch_size=64, poly_alpha=1.0, eval_every=1)
WANG_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(WANG_PROTOCOL, seeds=tuple(range(10))),
    # NOT comparable with their numbers: a first look (width 1/4, 1,100 images, 40 epochs, bf16 on CPU)
    "cpu": dict(WANG_PROTOCOL, per_class=1000, width=0.25, epochs=40, eval_every=5, seeds=(0, 1, 2), precision="auto"),
}
