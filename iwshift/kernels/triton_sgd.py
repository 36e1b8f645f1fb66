"""The stacked SGD update as one Triton kernel per parameter (:class:`iwshift.train.optimizer.StackedSGD` on CUDA).

With ``torch._foreach`` the update of a bf16-trained stack is four passes over every parameter (momentum
scaled, gradient added, parameter updated, parameter rounded into its bf16 copy), one of them launched per
parameter since its gradient is bf16 and its momentum float32. Here one launch per parameter reads the
parameter, its momentum and its gradient once and writes the parameter, the momentum and the copy once:

    g = grad + l2_k * p;  buf = momentum * buf + g (or g, the first step);  p = p - lr * buf;  copy = p

(``torch.optim.SGD``'s update, run k's weight decay l2_k on its block of the parameter). CUDA (on the CPU
only through Triton's interpreter, ``TRITON_INTERPRET=1``, for the tests): ``python benchmarks/check_triton_sgd.py
--check`` compares it with the ``_foreach`` update. Not the default (no GPU has measured it): ``update="triton"``
opts in. Importing this module needs the ``triton`` package.
"""

# (no `from __future__ import annotations`: Triton 3.0's interpreter reads `tl.constexpr` annotations as objects)
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

BLOCK = 2048  # elements per program


@triton.jit
def _sgd_update(param, buf, grad, copy, decay, lr_ptr, n, per_run, momentum,
                DECAY: tl.constexpr, MOMENTUM: tl.constexpr, STARTED: tl.constexpr, COPY: tl.constexpr,
                BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    p = tl.load(param + offsets, mask=inside)
    g = tl.load(grad + offsets, mask=inside).to(tl.float32)
    if DECAY:  # run k's block of the parameter: elements [k per_run, (k + 1) per_run)
        g = g + p * tl.load(decay + offsets // per_run, mask=inside)
    if MOMENTUM:
        if STARTED:
            g = tl.load(buf + offsets, mask=inside) * momentum + g
        tl.store(buf + offsets, g, mask=inside)
    p = p - tl.load(lr_ptr) * g  # the learning rate from device memory: a schedule needs no new capture
    tl.store(param + offsets, p, mask=inside)
    if COPY:
        # rounded to nearest, ties to even, as autocast's cast (Triton's CPU interpreter truncates to bfloat16:
        # there the trainer's first-use check falls back to the _foreach update)
        tl.store(copy + offsets, p.to(copy.dtype.element_ty, fp_downcast_rounding="rtne"), mask=inside)


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def applies(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor],
            copies: Sequence[torch.Tensor | None]) -> bool:
    """Whether :func:`update` takes these tensors: float32 parameters and momentum on a CUDA device (or the
    interpreter's CPU), each tensor of a parameter dense and in its parameter's memory layout, so that one flat
    index walks them all alike."""
    for p, g, b, c in zip(params, grads, buffers, copies, strict=True):
        tensors = [t for t in (p, g, b, c) if t is not None]
        if g is None or p.dtype != torch.float32 or b.dtype != torch.float32 or not _dense(p):
            return False
        if any(t.stride() != p.stride() or t.shape != p.shape or t.device != p.device for t in tensors):
            return False
    return True


def update(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor],
           copies: Sequence[torch.Tensor | None], decay: torch.Tensor | None, n_models: int, lr: torch.Tensor,
           momentum: float, started: bool) -> None:
    """The SGD step of :class:`iwshift.train.optimizer.StackedSGD` in place, one launch per parameter (see the module's
    docstring). ``decay``: (K,) float32 weight decay per run, or None; ``lr``: a float32 scalar tensor on the
    device; ``started``: whether the momentum buffers hold a previous step (else they take the gradient)."""
    for p, g, b, c in zip(params, grads, buffers, copies, strict=True):
        n = p.numel()
        _sgd_update[(triton.cdiv(n, BLOCK),)](
            p, b, g, p if c is None else c, p if decay is None else decay, lr, n, n // n_models, momentum,
            DECAY=decay is not None, MOMENTUM=momentum != 0, STARTED=started, COPY=c is not None, BLOCK=BLOCK)


def compare(fused: Sequence[Sequence[torch.Tensor | None]], reference: Sequence[Sequence[torch.Tensor | None]],
            tolerance: float = 1e-6) -> float:
    """Largest difference between two updates' ``(params, grads, buffers, copies)``, relative to each tensor's
    largest value: parameters and momentum buffers within ``tolerance`` (float32 rounding, e.g. a fused
    multiply-add), each copy its parameter rounded, every layout the same; AssertionError otherwise."""
    worst = 0.0
    for kind, ours, theirs in (("parameter", fused[0], reference[0]), ("momentum", fused[2], reference[2])):
        for a, b in zip(ours, theirs, strict=True):
            if a.stride() != b.stride():
                raise AssertionError(f"a {kind}'s layout differs: {a.stride()} against {b.stride()}")
            scale = max(b.abs().max().item(), 1e-30) if b.numel() else 1.0
            worst = max(worst, (a - b).abs().max().item() / scale if b.numel() else 0.0)
    if not worst <= tolerance:
        raise AssertionError(f"the Triton update differs from the foreach update by {worst:.1e} (relative)")
    for p, c in zip(fused[0], fused[3], strict=True):
        if c is not None and (c.stride() != p.stride() or not torch.equal(c, p.to(c.dtype))):
            raise AssertionError("a copy is not its parameter rounded, in its parameter's layout")
    return worst
