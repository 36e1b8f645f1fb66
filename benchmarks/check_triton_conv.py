"""Checks of the Triton convolutions (:mod:`iwshift.kernels.triton_conv`): against ``F.conv2d`` in float64, a
stacked CNN trained through them, and an offline compilation for sm_90 that reports registers and spills.

    python benchmarks/check_triton_conv.py --check [--device cpu|cuda]   (TRITON_INTERPRET=1 on the CPU)
    python benchmarks/check_triton_conv.py --compile-only                 (no GPU needed)
"""

# (no `from __future__ import annotations`: Triton 3.0's interpreter reads `tl.constexpr` annotations as objects)
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package beside this folder

from iwshift.kernels.triton_conv import (Launch, _gather_launch, _weight_gradient_launch,  # noqa: E402
                                         grouped_conv3x3)


def check(device: str, dtype: torch.dtype = torch.float32) -> float:
    """Largest relative error of forward and gradients against ``F.conv2d`` in float64 over a few shapes (fresh
    random inputs, channels-last and not). Triton's CPU interpreter computes float32 and float16, not bfloat16."""
    worst, split = 0.0, False
    gen = torch.Generator().manual_seed(0)
    # small channel counts (the flat k loop), 32 / 64 / 128 input channels (the tap-major loops of the forward
    # and data gradient, and of the weight gradient), 392 positions per group (the weight gradient's sum split
    # over two slices of positions, the second one partial), and 4,500 or more (128-position tiles, the flat
    # loop at 8 warps): the paths the GPU takes on the full-size layers (the interpreter, slow, takes these
    # in float32 only: the paths do not depend on the dtype)
    shapes = [(3, 3, 4, 2, 7, True), (2, 5, 6, 3, 6, False), (4, 16, 20, 2, 9, True), (2, 32, 32, 2, 6, True),
              (2, 64, 32, 1, 5, False), (2, 4, 6, 2, 16, True), (1, 64, 16, 2, 16, True),
              (2, 128, 128, 1, 6, True)]  # 128 channels: two channel tiles in every pass, as the deep layers
    if device != "cpu" or dtype == torch.float32:
        shapes += [(2, 3, 8, 5, 32, True), (1, 64, 64, 6, 30, True)]
    for groups, c_in, c_out, batch, size, channels_last in shapes:
        x = torch.randn(batch, groups * c_in, size, size, generator=gen).to(device, dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(groups * c_out, c_in, 3, 3, generator=gen).to(device, dtype)
        b = torch.randn(groups * c_out, generator=gen).to(device, dtype)
        gout = torch.randn(batch, groups * c_out, size - 2, size - 2, generator=gen).to(device, dtype)
        split |= len(_weight_gradient_launch(x, gout, groups).args[2]) > 1
        results = []  # the reference in float64 on the same (rounded) inputs
        for conv, as_dtype in ((lambda *a: F.conv2d(*a, groups=groups), torch.float64),
                               (lambda *a: grouped_conv3x3(*a, groups), dtype)):
            leaves = [t.detach().to(as_dtype).requires_grad_() for t in (x, w, b)]
            out = conv(*leaves)
            out.backward(gout.to(as_dtype))
            results.append([out.detach(), *(t.grad for t in leaves)])
        for name, want, got in zip(("output", "input gradient", "weight gradient", "bias gradient"), *results):
            error = float((got.double() - want).norm() / want.norm())
            worst = max(worst, error)
            if not error < (1e-5 if dtype == torch.float32 else 2e-2):
                raise AssertionError(f"{name}: relative error {error:.2e} (groups {groups}, {c_in} -> {c_out})")
    if not split:
        raise AssertionError("no shape of the check splits the weight gradient's sum: that path went unchecked")
    return worst


def check_model(device: str, n_models: int = 2, steps: int = 2, batch: int = 2) -> float:
    """Largest relative difference of a stacked CNN's logits after a few SGD steps (fp32, width 1/16) with
    every convolution through the Triton kernels, and with every other one (as ``auto`` may choose), against
    the default model."""
    import numpy as np

    from iwshift.models import StackedCNN
    from iwshift.train import StackedRuns, Trainer, to_device_images

    n = steps * batch
    rng = np.random.default_rng(0)
    images = to_device_images(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), device)
    labels = torch.as_tensor(np.arange(n) % 2, device=device)
    runs = StackedRuns(seeds=list(range(n_models)), train_index=np.tile(np.arange(n), (n_models, 1)),
                       example_weights=np.ones((n_models, n)), l2=[0.0] * n_models, dropout=[0.0] * n_models)
    logits = []
    for layers in (["torch"] * 5, ["triton"] * 5, ["triton", "torch"] * 2 + ["triton"]):
        model = StackedCNN(n_models, 0.0625, seeds=runs.seeds)
        model.layer_convolutions = layers
        trainer = Trainer(model.to(device), runs, images, labels, lr=0.01, batch_size=batch, channels_last=True,
                          image_normalization="cifar10", cudnn_benchmark=False)
        trainer.train_epoch()
        logits.append(trainer.predict_logits(images[:batch]))
    if not float(logits[0].std()) > 1e-3:
        raise AssertionError("the check's model gives constant logits: it would compare nothing")
    worst = 0.0
    for got, layers in zip(logits[1:], ("every", "every other")):
        error = float((got - logits[0]).norm() / logits[0].norm())
        if not error < 1e-4:
            raise AssertionError(f"the stacked CNN with {layers} convolution through the Triton kernels: "
                                 f"relative error {error:.2e}")
        worst = max(worst, error)
    return worst


def step_launches(n_models: int = 21, width: float = 1.0, batch: int = 16) -> list[tuple[str, Launch]]:
    """The convolution launches of one training step of a stacked CNN in bf16, channels-last, as the GPU runs
    them (default: the `none` regime's stack), planned on meta tensors; each named by layer and pass."""
    from iwshift.models import conv_layers

    K, launches = n_models, []
    meta = dict(device="meta", dtype=torch.bfloat16)
    for i, (c_in, c_out, size) in enumerate(conv_layers(width)):
        x = torch.empty(batch, K * c_in, size, size, memory_format=torch.channels_last, **meta)
        out = torch.empty(batch, K * c_out, size - 2, size - 2, memory_format=torch.channels_last, **meta)
        name = f"conv{i + 1} {c_in}->{c_out} at {size}x{size}"
        launches.append((f"{name} forward",
                         _gather_launch(x, torch.empty(K, 9 * c_in, c_out, **meta), torch.empty(K * c_out, **meta),
                                        out, K, 1)))
        if i:  # the images need no gradient
            launches.append((f"{name} data gradient",
                             _gather_launch(out, torch.empty(K, 9 * c_out, c_in, **meta), None, x, K, -1)))
        launches.append((f"{name} weight gradient", _weight_gradient_launch(x, out, K)))
    return launches


_TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def offline_compile_missing() -> str | None:
    """Why this Triton cannot compile for sm_90 without a GPU as :func:`compile_for_hopper` does (its
    ``ASTSource(constexprs=...)`` and ``get_ptxas(arch)`` came after Triton 3.2), or None if it can."""
    import inspect

    try:
        from triton.backends.nvidia.compiler import get_ptxas
        from triton.compiler import ASTSource
    except ImportError as err:
        return f"Triton {triton.__version__} lacks its offline compile API ({err})"
    if "constexprs" not in inspect.signature(ASTSource).parameters or not inspect.signature(get_ptxas).parameters:
        return f"Triton {triton.__version__}'s offline compile API is older than this check's"
    return None


def compile_for_hopper(n_models: int = 21, width: float = 1.0) -> list[str]:
    """Compile the kernels of :func:`step_launches` for sm_90 without a GPU, specialised as a launch
    specialises them (integer arguments equal to 1 become constants, multiples of 16 and the pointers are
    known aligned), and read their resources from ``ptxas -v``. One line per kernel: does it use wgmma,
    its registers per thread, bytes spilled, shared memory. The interpreter is lenient where the compiler
    is not; and spills or a kernel without wgmma would show here before any GPU time is spent."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    target, lines = GPUTarget("cuda", 90, 32), []
    for name, launch in step_launches(n_models, width):
        signature, constants, attrs = {}, dict(launch.constants), {}
        for i, (param, value) in enumerate(zip(launch.kernel.params, launch.args)):
            arg = param.name
            if isinstance(value, torch.Tensor):
                signature[arg], attrs[(i,)] = f"*{_TRITON_TYPES[value.dtype]}", [["tt.divisibility", 16]]
            elif param.do_not_specialize:
                signature[arg] = "i32"
            elif value == 1:
                signature[arg], constants[arg] = "constexpr", 1
            else:
                signature[arg] = "i32"
                if value % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        signature.update(dict.fromkeys(launch.constants, "constexpr"))
        compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs=constants, attrs=attrs),
                                  target=target, options=dict(num_warps=launch.num_warps, num_stages=3))
        with tempfile.TemporaryDirectory() as tmp:
            with open(f"{tmp}/k.ptx", "w") as f:
                f.write(compiled.asm["ptx"])
            log = subprocess.run([get_ptxas(90).path, "-v", "--regAllocOptLevel=2", "--gpu-name=sm_90a",
                                  f"{tmp}/k.ptx", "-o", f"{tmp}/k.cubin"], capture_output=True, text=True,
                                 check=True).stderr
        registers = int(log.split("Used ")[1].split(" registers")[0])
        spilled = int(log.split("bytes spill stores")[0].split(",")[-1])
        c = launch.constants
        lines.append(f"{name}: {launch.kernel.__name__} BM={c['BM']} BN={c['BN']} {launch.num_warps} warps, "
                     f"{'wgmma' if 'wgmma' in compiled.asm['ptx'] else 'NO wgmma'}, {registers} registers, "
                     f"{spilled} bytes spilled, {compiled.metadata.shared // 1024} KiB shared")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/check_triton_conv.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with F.conv2d (TRITON_INTERPRET=1 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile the kernels of a training step of the `none` stack for sm_90 and report their "
                             "registers (no GPU needed)")
    args = parser.parse_args()
    if args.compile_only:
        missing = offline_compile_missing()
        if missing:
            sys.exit(f"check_triton_conv.py: error: --compile-only needs a newer Triton: {missing}")
        lines = compile_for_hopper()
        print("\n".join(lines))
        print(f"compiled {len(lines)} kernels for sm_90: {sum(', wgmma,' in line for line in lines)} with wgmma, "
              f"{sum(' 0 bytes spilled' not in line for line in lines)} spilling registers")
        return
    if args.check:
        worst, model = check(args.device), check_model(args.device)
        low = torch.float16 if args.device == "cpu" else torch.bfloat16
        print(f"triton_conv check on {args.device}: ok (largest relative error {worst:.1e} in float32, "
              f"{check(args.device, low):.1e} in {str(low).split('.')[1]}; stacked CNN after two steps {model:.1e})")
        return
    parser.print_help()
    sys.exit(2)


if __name__ == "__main__":
    main()
