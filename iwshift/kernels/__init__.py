"""Compiled kernels below the trainer: the fused 2-D engine (numba, :mod:`.sgd2d`), the counter-based random
numbers (:mod:`.counter`), and the opt-in Triton kernels for CUDA (:mod:`.triton_conv`, :mod:`.triton_sgd`; no GPU
has measured them, so nothing uses them unless asked). Their self-checks and timings are scripts in
``benchmarks/``. Nothing here imports the models or the trainer."""

from __future__ import annotations

import importlib.metadata
import importlib.util

# The Triton kernels need Triton 3.0 (PyTorch 2.4's) or newer, and PyTorch 2.4's autocast API.
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
