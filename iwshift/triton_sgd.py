"""The stacked SGD update as one Triton kernel per parameter (:class:`iwshift.train.StackedSGD` on CUDA).

With ``torch._foreach`` the update of a bf16-trained stack is four passes over every parameter (momentum
scaled, gradient added, parameter updated, parameter rounded into its bf16 copy), one of them launched per
parameter since its gradient is bf16 and its momentum float32. Here one launch per parameter reads the
parameter, its momentum and its gradient once and writes the parameter, the momentum and the copy once:

    g = grad + l2_k * p;  buf = momentum * buf + g (or g, the first step);  p = p - lr * buf;  copy = p

(``torch.optim.SGD``'s update, run k's weight decay l2_k on its block of the parameter). CUDA (on the CPU
only through Triton's interpreter, ``TRITON_INTERPRET=1``, for the tests): ``python -m iwshift.triton_sgd
--check`` compares it with the ``_foreach`` update. Importing this module needs the ``triton`` package.
"""

# (no `from __future__ import annotations`: Triton 3.0's interpreter reads `tl.constexpr` annotations as objects)
import argparse
import sys
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

BLOCK = 2048  # elements per program


@triton.jit
def _sgd_update(param, buf, grad, copy, decay, n, per_run, lr, momentum,
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
    p = p - lr * g
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
           copies: Sequence[torch.Tensor | None], decay: torch.Tensor | None, n_models: int, lr: float,
           momentum: float, started: bool) -> None:
    """The SGD step of :class:`iwshift.train.StackedSGD` in place, one launch per parameter (see the module's
    docstring). ``decay``: (K,) float32 weight decay per run, or None; ``started``: whether the momentum
    buffers hold a previous step (else they take the gradient)."""
    for p, g, b, c in zip(params, grads, buffers, copies, strict=True):
        n = p.numel()
        _sgd_update[(triton.cdiv(n, BLOCK),)](
            p, b, g, p if c is None else c, p if decay is None else decay, n, n // n_models, lr, momentum,
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


def check(device: str) -> float:
    """Largest difference between :func:`update` and ``StackedSGD``'s ``_foreach`` update over three steps of
    a stack of three runs (with and without momentum and weight decay per run, a channels-last weight,
    copies and no copy), relative to the parameters' scale. float16 copies on the CPU (the interpreter has no
    bfloat16)."""
    from .train import StackedSGD

    low = torch.float16 if device == "cpu" else torch.bfloat16
    gen = torch.Generator()
    shapes = [(3 * 8, 4, 3, 3), (3 * 8,), (3, 40, 7), (3 * 5,)]
    worst = 0.0
    for momentum, l2 in ((0.9, [0.0, 1e-2, 0.5]), (0.0, [0.0] * 3), (0.9, [0.0] * 3)):
        results = []
        for update in ("triton", "foreach"):
            gen.manual_seed(0)
            params = [torch.randn(s, generator=gen).to(device) for s in shapes]
            params[0] = params[0].contiguous(memory_format=torch.channels_last)
            copies = [p.detach().to(low).requires_grad_() if i != 1 else None for i, p in enumerate(params)]
            sgd = StackedSGD(params, 3, lr=0.1, momentum=momentum, l2=l2, copies=copies, update=update)
            sgd._triton_checked = {False, True}  # the kernel itself, not the trainer's first-use check
            for _ in range(3):
                for holder in sgd.grad_holders:
                    holder.grad = torch.randn(holder.shape, generator=gen).to(device, holder.dtype).contiguous(
                        memory_format=torch.channels_last if holder.dim() == 4 else torch.contiguous_format)
                if update == "triton" and not applies(sgd.params, [h.grad for h in sgd.grad_holders], sgd.buffers,
                                                      sgd.copies):
                    raise AssertionError("the Triton update does not apply to the check's tensors")
                sgd.step()
            if sgd.update != update:
                raise AssertionError(f"the {update} update fell back to {sgd.update}")
            results.append((sgd.params, None, sgd.buffers, copies))
        worst = max(worst, compare(*results))
    return worst


def check_trainer(device: str) -> float:
    """Largest relative difference of two stacked CNNs' parameters after two epochs (batch norm, weight decay
    per run, a last partial batch), one trainer with the Triton update, one with the ``_foreach`` update; the
    Triton one must not fall back (its first-use check passes). bf16 with the weight copies on CUDA; float32
    on the CPU, where Triton's interpreter does not round to bfloat16 as the GPU does."""
    import warnings

    import numpy as np

    from .models import StackedCNN
    from .train import StackedRuns, Trainer, to_device_images

    n, K = 40, 3
    rng = np.random.default_rng(0)
    images = to_device_images(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), device)
    labels = torch.as_tensor(np.arange(n) % 2, device=device)
    runs = StackedRuns(seeds=[0, 1, 2], train_index=np.tile(np.arange(n), (K, 1)),
                       example_weights=rng.uniform(0.5, 4.0, (K, n)), l2=[0.0, 1e-3, 1e-2], dropout=[0.0] * K)
    precision = "fp32" if device == "cpu" else "bf16"
    trainers = []
    for update in ("triton", "foreach"):
        model = StackedCNN(K, 0.0625, batch_norm=True, seeds=runs.seeds)
        trainer = Trainer(model.to(device), runs, images, labels, lr=0.05, batch_size=16, precision=precision,
                          channels_last=precision == "bf16", image_normalization="cifar10", cudnn_benchmark=False)
        trainer.optimizer.update = update
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fallback is a failure here
            for _ in range(2):
                trainer.train_epoch()
        trainers.append(trainer)
    if not trainers[0].optimizer._triton_checked:
        raise AssertionError("the Triton update never ran (it did not apply to the trainer's tensors)")
    worst = max(((p - q).abs().max() / q.abs().max()).item()
                for p, q in zip(trainers[0].model.parameters(), trainers[1].model.parameters()))
    if not worst < (1e-5 if precision == "fp32" else 1e-2):
        raise AssertionError(f"the trainer with the Triton update differs from the _foreach one by {worst:.1e}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m iwshift.triton_sgd", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the _foreach update (TRITON_INTERPRET=1 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.check:
        worst, trained = check(args.device), check_trainer(args.device)
        print(f"triton_sgd check on {args.device}: ok (largest relative difference {worst:.1e}; two trainers after "
              f"two epochs {trained:.1e})")
        return
    parser.print_help()
    sys.exit(2)


if __name__ == "__main__":
    main()
