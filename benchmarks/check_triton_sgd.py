"""Checks of the Triton SGD update (:mod:`iwshift.kernels.triton_sgd`) against the ``_foreach`` update: the kernel
alone over three steps, and two trainers over two epochs.

    python benchmarks/check_triton_sgd.py --check [--device cpu|cuda]   (TRITON_INTERPRET=1 on the CPU)
"""

# (no `from __future__ import annotations`: Triton 3.0's interpreter reads `tl.constexpr` annotations as objects)
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package beside this folder

from iwshift.kernels.triton_sgd import applies, compare  # noqa: E402


def check(device: str) -> float:
    """Largest difference between :func:`update` and ``StackedSGD``'s ``_foreach`` update over three steps of
    a stack of three runs (with and without momentum and weight decay per run, a channels-last weight,
    copies and no copy), relative to the parameters' scale. float16 copies on the CPU (the interpreter has no
    bfloat16)."""
    from iwshift.train import StackedSGD

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
            sgd._checked = True  # the kernel itself, not the first-use check (main runs that one apart)
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

    from iwshift.models import StackedCNN
    from iwshift.train import StackedRuns, Trainer, to_device_images

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
    if trainers[0].optimizer.fallback is not None or not trainers[0].optimizer._checked:
        raise AssertionError(f"the Triton update never ran ({trainers[0].optimizer.fallback or 'not checked'})")
    worst = max(((p - q).abs().max() / q.abs().max()).item()
                for p, q in zip(trainers[0].model.parameters(), trainers[1].model.parameters()))
    if not worst < (1e-5 if precision == "fp32" else 1e-2):
        raise AssertionError(f"the trainer with the Triton update differs from the _foreach one by {worst:.1e}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/check_triton_sgd.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the _foreach update (TRITON_INTERPRET=1 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.check:
        from iwshift.kernels import triton_sgd
        from iwshift.train.optimizer import check_update

        failure = check_update(triton_sgd, args.device)  # the trainers' first-use check: several steps, momentum
        if failure is not None:
            sys.exit(f"check_triton_sgd.py: the first-use check fails: {failure}")
        worst, trained = check(args.device), check_trainer(args.device)
        print(f"triton_sgd check on {args.device}: ok (first-use check passed; largest relative difference "
              f"{worst:.1e}; two trainers after two epochs {trained:.1e})")
        return
    parser.print_help()
    sys.exit(2)


if __name__ == "__main__":
    main()
