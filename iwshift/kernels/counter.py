"""Counter-based random numbers: every batch order and dropout mask is a pure function of (run seed, stream,
epoch or step, index) through splitmix64, so a run draws the same numbers alone or in any stack, on any device,
inside a CUDA graph or a numba kernel.

Two implementations of the one hash, side by side and tested against each other bit for bit: in numba (the
fused 2-D kernel, :mod:`iwshift.kernels.sgd2d`, and the host's batch orders) and in torch int64 ops (the
models' dropout masks on the training device, no host sync).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numba import njit, prange

# ------------------------------------------------------------------------------------------ numba

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_STREAM_PERMUTATION = np.uint64(1)
_STREAM_DROPOUT = np.uint64(2)  # (DROPOUT_STREAM below)


@njit(inline="always")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _hash(seed, stream, a, b):
    """A 64-bit hash of four integers (counter-based random number)."""
    z = _mix(np.uint64(seed) * _GOLDEN + stream)
    z = _mix(z + np.uint64(a) * _GOLDEN)
    return _mix(z + np.uint64(b) * _GOLDEN + np.uint64(1))


@njit(inline="always")
def _uniform(seed, stream, a, b):
    """A float in [0, 1) from the top 24 bits of the hash."""
    return np.float32(_hash(seed, stream, a, b) >> np.uint64(40)) * np.float32(1.0 / 16777216.0)


@njit(cache=True)
def _fill_permutation(seed, epoch, out):
    n = out.shape[0]
    for i in range(n):
        out[i] = i
    for i in range(n - 1, 0, -1):  # Fisher-Yates
        j = np.int64(_hash(seed, _STREAM_PERMUTATION, epoch, i) % np.uint64(i + 1))
        out[i], out[j] = out[j], out[i]


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which run ``seed`` visits ``n`` training examples in ``epoch`` (0-based)."""
    out = np.empty(n, np.int64)
    _fill_permutation(seed, epoch, out)
    return out


@njit(inline="always")
def _dropout_scale(seed, step, i, j, hidden, p):
    if p == 0.0:
        return np.float32(1.0)
    if _uniform(seed, _STREAM_DROPOUT, step, i * hidden + j) < p:
        return np.float32(0.0)
    return np.float32(1.0 / (1.0 - p))


@njit(cache=True)
def _fill_dropout(seed, step, p, out):
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = _dropout_scale(seed, step, i, j, out.shape[1], p)


def dropout_mask(seed: int, step: int, batch: int, hidden: int, p: float) -> np.ndarray:
    """Inverted-dropout multipliers (0 or 1/(1-p)) of run ``seed`` at global ``step``: (batch, hidden)."""
    out = np.empty((batch, hidden), np.float32)
    _fill_dropout(seed, step, np.float32(p), out)
    return out


@njit(parallel=True, cache=True)
def _fill_permutations(seeds, epoch, out):
    for k in prange(out.shape[0]):
        _fill_permutation(seeds[k], epoch, out[k])


def epoch_permutations(seeds: np.ndarray, epoch: int, n: int) -> np.ndarray:
    """(K, n): row k is :func:`epoch_permutation` of ``seeds[k]``."""
    seeds = np.ascontiguousarray(seeds, np.int64)
    out = np.empty((len(seeds), n), np.int64)
    _fill_permutations(seeds, epoch, out)
    return out


@njit(parallel=True, cache=True)
def _fill_dropouts(seeds, step, p, out):
    for k in prange(out.shape[0]):
        _fill_dropout(seeds[k], step, p[k], out[k])


def dropout_masks(seeds: np.ndarray, step: int, batch: int, hidden: int, p: np.ndarray) -> np.ndarray:
    """(K, batch, hidden): slice k is :func:`dropout_mask` of ``seeds[k]`` with probability ``p[k]``."""
    seeds = np.ascontiguousarray(seeds, np.int64)
    out = np.empty((len(seeds), batch, hidden), np.float32)
    _fill_dropouts(seeds, step, np.ascontiguousarray(p, np.float32), out)
    return out


# ------------------------------------------------------------------------------------------ torch
# The same hash with int64 ops that run on any device (multiplication wraps modulo 2**64 and right shifts are
# made logical by masking).
DROPOUT_STREAM = 2  # the numba dropout stream: a CNN's first hidden layer draws the masks the 2-D MLP would


def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN_T, _M1_T, _M2_T = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)  # logical: drop the sign bits of the arithmetic shift


def _mix_t(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _shift_right(z, 30)) * _M1_T
    z = (z ^ _shift_right(z, 27)) * _M2_T
    return z ^ _shift_right(z, 31)


def counter_uniform(seeds: torch.Tensor, stream: int, step: int | torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Float32 uniforms in [0, 1), (K, n): element (k, i) is a pure function of (``seeds[k]``, ``stream``,
    ``step``, ``index[i]``), equal to the numba ``_uniform``. ``step``: a Python int (turned
    into a device scalar by a fill, not a host-to-device copy) or an int64 tensor on the device."""
    if not isinstance(step, torch.Tensor):
        step = torch.full((), int(step), dtype=torch.int64, device=seeds.device)
    z = _mix_t(seeds.to(torch.int64) * _GOLDEN_T + stream)
    z = _mix_t(z + step.to(torch.int64) * _GOLDEN_T).unsqueeze(-1)               # (K, 1)
    z = _mix_t(z + (index.to(torch.int64) * _GOLDEN_T + 1))                      # (K, n)
    return _shift_right(z, 40).to(torch.float32) * (1.0 / 16777216.0)


def dropout_scales(seeds: torch.Tensor, dropout: torch.Tensor, step: int | torch.Tensor, batch: int,
                   sizes: Sequence[int]) -> list[torch.Tensor]:
    """Inverted-dropout multipliers (0 or 1/(1-p)) of K runs' hidden layers of ``sizes`` units at global SGD
    ``step``, each (K, batch, units); run k drops with probability ``dropout[k]`` under ``seeds[k]``.
    Element index: position in the step's concatenated (batch, units) masks, so the first layer's masks are
    :func:`dropout_masks` bit for bit (1/(1-p) rounded from float64, as there)."""
    index = torch.arange(batch * sum(sizes), device=seeds.device)
    uniform = counter_uniform(seeds, DROPOUT_STREAM, step, index)  # (K, batch * sum(sizes))
    p = dropout.unsqueeze(1)
    scales = torch.where(uniform < p, 0.0, (1.0 / (1.0 - p.double())).float())
    return [part.view(len(seeds), batch, units)
            for part, units in zip(scales.split([batch * u for u in sizes], 1), sizes)]
