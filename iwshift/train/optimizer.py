"""The update: SGD with momentum and a weight decay per run, on every run's block of every parameter at once."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ..config import UPDATES


class StackedSGD:
    """SGD with momentum (as ``torch.optim.SGD``: buf = m*buf + g + l2*p; p -= lr*buf) and a weight decay per
    run. Every parameter's leading dimension(s) must split into K equal contiguous blocks. The update is a
    handful of ``torch._foreach`` calls over all parameters (few kernel launches); ``torch.optim.SGD`` itself
    takes one weight decay per parameter group, not one per run's block of a tensor.

    The learning rate lives on the device (:attr:`lr_tensor`, set by :meth:`set_lr`): on CUDA the update reads
    it there, so a schedule changes it without capturing the step again; on the CPU the update takes it as a
    number (one fused multiply-add, the same arithmetic as before it moved).

    ``copies`` (bf16 training): per parameter, ``None`` or a low-precision copy that the forward uses in its
    place. The copy then receives the gradient, and each update writes the new parameter into it (rounded),
    so that no cast of the weights runs in the forward and no cast of their gradients back in the backward.
    The parameters stay float32 (the master weights: the update, checkpoints, evaluation); a step computes
    exactly what autocast's casts compute.

    ``update``: ``foreach`` (the default: the ``torch._foreach`` passes) or ``triton`` (opt-in, no GPU has
    measured it: :mod:`iwshift.kernels.triton_sgd`, one pass per parameter). Before its first use the Triton
    update is checked against the ``_foreach`` update over several steps of a made-up stack with momentum,
    per-run weight decay, and float32 parameters with and without low-precision copies
    (:func:`check_update`); where it fails, a warning says why, :attr:`fallback` records it, and the
    ``_foreach`` update runs instead. :attr:`path` says which update trained the stack. ``kernel``: the Triton
    update's module (a stand-in, for the tests)."""

    def __init__(self, params: Sequence[torch.Tensor], n_models: int, lr: float, momentum: float,
                 l2: Sequence[float], copies: Sequence[torch.Tensor | None] | None = None, update: str = "foreach",
                 kernel: Any = None):
        if update not in UPDATES:
            raise ValueError(f"unknown update {update!r}; choose from {', '.join(UPDATES)}")
        self.params, self.K, self.momentum = list(params), n_models, momentum
        self.l2 = [float(v) for v in l2]
        self.copies = list(copies) if copies is not None else [None] * len(self.params)
        if len(self.copies) != len(self.params):
            raise ValueError(f"{len(self.copies)} copies for {len(self.params)} parameters")
        for p, c in zip(self.params, self.copies):
            if c is not None and (c.shape != p.shape or c.stride() != p.stride() or not c.requires_grad):
                raise ValueError("a copy must have its parameter's shape and strides and require a gradient")
        # the tensors whose .grad holds each parameter's gradient: the copy where the forward uses one
        self.grad_holders = [p if c is None else c for p, c in zip(self.params, self.copies)]
        self.has_copies = any(c is not None for c in self.copies)
        device = self.params[0].device
        self.lr = float(lr)
        self.lr_tensor = torch.tensor(float(lr), dtype=torch.float32, device=device)
        self.lr_on_device = device.type == "cuda"
        per_run = torch.tensor(list(l2), dtype=torch.float32, device=device)
        # per-parameter decay tensors, broadcastable against each parameter's run blocks
        self.decay = [per_run.repeat_interleave(p.shape[0] // n_models).view(-1, *[1] * (p.dim() - 1))
                      for p in self.params]
        self.buffers = [torch.zeros_like(p) for p in self.params]
        # no run decays (e.g. the `none` regime's stack): skip the pass, a kernel per parameter that a
        # profile on an H200 put at ~5 % of a full-width CNN step (benchmarks/results/nvidia-h200-profile.txt)
        self.has_decay = any(v != 0.0 for v in self.l2)
        self.run_decay = per_run if self.has_decay else None
        self.started = False
        self.update = update
        self.kernel = kernel
        self.fallback: str | None = None  # why the update asked for is not the one that runs
        self._checked = False

    @property
    def path(self) -> str:
        """The update that trains the stack: ``foreach``, ``triton``, or ``foreach`` with why Triton fell back."""
        return f"foreach (triton fell back: {self.fallback})" if self.fallback else self.update

    def set_lr(self, lr: float) -> None:
        """The learning rate from the next step on (in place on the device: a captured step reads it)."""
        self.lr = float(lr)
        self.lr_tensor.fill_(float(lr))

    @torch.no_grad()
    def step(self) -> None:
        grads = [h.grad for h in self.grad_holders]
        if self.update == "triton" and self._triton_ready(grads):
            self.kernel.update(self.params, grads, self.buffers, self.copies, self.run_decay, self.K, self.lr_tensor,
                               self.momentum, self.started)
        else:
            self._foreach_step(self.params, grads, self.buffers, self.copies)
        self.started = True

    def _foreach_step(self, params: list[torch.Tensor], grads: list[torch.Tensor], buffers: list[torch.Tensor],
                      copies: list[torch.Tensor | None]) -> None:
        """The update in ``_foreach`` passes, on the tensors given."""
        if self.has_decay:
            if self.has_copies:  # bf16 gradients: g + l2_k * p in float32, as autocast's float32 gradient gives it
                grads = torch._foreach_addcmul(grads, params, self.decay)
            else:
                torch._foreach_addcmul_(grads, params, self.decay)  # g += l2_k * p
        if self.momentum:
            if self.started:
                torch._foreach_mul_(buffers, self.momentum)
                torch._foreach_add_(buffers, grads)
            else:
                torch._foreach_copy_(buffers, grads)
            grads = buffers
        if self.lr_on_device:  # p -= lr * g, lr read from the device (float32 products, as the update's)
            torch._foreach_add_(params, torch._foreach_mul([g.float() for g in grads], -self.lr_tensor))
        else:
            torch._foreach_add_(params, grads, alpha=-self.lr)
        _round_into(params, copies)

    def _triton_ready(self, grads: list[torch.Tensor]) -> bool:
        """Whether the Triton update runs this step: it applies to these tensors and passed its check (done
        once, before its first use); else the ``_foreach`` update runs, and a failed check is recorded."""
        if self.fallback is not None:
            return False
        if self.kernel is None:
            from ..kernels import triton_sgd

            self.kernel = triton_sgd
        if not self.kernel.applies(self.params, grads, self.buffers, self.copies):
            self._fall_back("it does not apply to this stack's tensors (dtypes, devices or layouts)")
            return False
        if not self._checked:
            failure = check_update(self.kernel, self.params[0].device)
            if failure is not None:
                self._fall_back(failure)
                return False
            self._checked = True
        return True

    def _fall_back(self, why: str) -> None:
        self.fallback = why
        warnings.warn(f"the Triton SGD update is not used: {why}; the _foreach update runs instead", stacklevel=4)

    @torch.no_grad()
    def refresh_copies(self) -> None:
        """Round the parameters into their copies (the update does it; this is for parameters changed
        otherwise, e.g. a restored checkpoint)."""
        _round_into(self.params, self.copies)

    def zero_grad(self) -> None:
        for holder in self.grad_holders:
            holder.grad = None


def _round_into(params: list[torch.Tensor], copies: list[torch.Tensor | None]) -> None:
    """Each parameter's value into its low-precision copy, if it has one (one ``_foreach`` copy)."""
    pairs = [(p, c) for p, c in zip(params, copies) if c is not None]
    if pairs:
        torch._foreach_copy_([c for _, c in pairs], [p for p, _ in pairs])


CHECK_STEPS = 4  # steps of the first-use check: the first (momentum takes the gradient) and three with momentum


def check_update(kernel: Any, device: torch.device | str, tolerance: float = 1e-6) -> str | None:
    """Why ``kernel``'s update (:mod:`iwshift.kernels.triton_sgd`'s interface) differs from the ``_foreach``
    update, or None when it agrees: :data:`CHECK_STEPS` steps of a made-up stack of three runs, momentum 0.9 and
    weight decays 0, 1e-2 and 0.5, a channels-last 4-D weight, a 3-D and two 1-D parameters, float32 parameters
    alone and with low-precision copies (bfloat16 on CUDA, float16 elsewhere: Triton's CPU interpreter has no
    bfloat16), fresh random gradients each step; parameters and momentum within ``tolerance`` relative, each copy
    its parameter rounded. A kernel that raises (a compiler error) fails the check too."""
    device = torch.device(device)
    low = torch.bfloat16 if device.type == "cuda" else torch.float16
    shapes = [(3 * 8, 4, 3, 3), (3 * 8,), (3, 40, 7), (3 * 5,)]
    for with_copies in (False, True):
        finals = []
        for use_kernel in (True, False):
            gen = torch.Generator().manual_seed(0)
            params = [torch.randn(s, generator=gen).to(device) for s in shapes]
            params[0] = params[0].contiguous(memory_format=torch.channels_last)
            copies = [p.detach().to(low).requires_grad_() if with_copies and i != 1 else None
                      for i, p in enumerate(params)]
            sgd = StackedSGD(params, 3, lr=0.1, momentum=0.9, l2=[0.0, 1e-2, 0.5], copies=copies)
            for _ in range(CHECK_STEPS):
                for holder in sgd.grad_holders:
                    holder.grad = torch.randn(holder.shape, generator=gen).to(device, holder.dtype).contiguous(
                        memory_format=torch.channels_last if holder.dim() == 4 else torch.contiguous_format)
                grads = [h.grad for h in sgd.grad_holders]
                if use_kernel:
                    try:
                        with torch.no_grad():
                            kernel.update(sgd.params, grads, sgd.buffers, sgd.copies, sgd.run_decay, sgd.K,
                                          sgd.lr_tensor, sgd.momentum, sgd.started)
                    except Exception as err:  # noqa: BLE001  (a compiler error: the kernel cannot run here)
                        return f"it failed to run ({type(err).__name__}: {str(err).strip()[:200]})"
                    sgd.started = True
                else:
                    sgd.step()
            finals.append((sgd.params, sgd.buffers, copies))
        (params, buffers, copies), (ref_params, ref_buffers, _) = finals
        for kind, ours, theirs in (("parameter", params, ref_params), ("momentum", buffers, ref_buffers)):
            for a, b in zip(ours, theirs):
                scale = max(b.abs().max().item(), 1e-30)
                error = (a - b).abs().max().item() / scale
                if a.stride() != b.stride() or not error <= tolerance:
                    return (f"after {CHECK_STEPS} steps with momentum and weight decay"
                            f"{' and low-precision copies' if with_copies else ''}, a {kind} differs from the "
                            f"_foreach update's by {error:.1e} (relative)")
        for p, c in zip(params, copies):
            if c is not None and (c.stride() != p.stride() or not torch.equal(c, p.to(c.dtype))):
                return "a low-precision copy is not its parameter rounded, in its parameter's layout"
    return None
