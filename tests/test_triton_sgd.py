"""The Triton SGD update (``iwshift.triton_sgd``, :class:`iwshift.train.StackedSGD` on CUDA) computes what the
``_foreach`` update computes: momentum, each run's weight decay, the bf16 weight copies, a channels-last weight.
On the CPU through Triton's interpreter (on the GPU: ``tests/test_graph_step.py`` trains with it against the
``_foreach`` update, and each trainer checks its first use against it)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iwshift.kernels import triton_available
from iwshift.train import StackedSGD

ROOT = Path(__file__).resolve().parents[1]
NEEDS_TRITON = pytest.mark.skipif(not triton_available(), reason="needs Triton >= 3.0 with PyTorch >= 2.4")


@NEEDS_TRITON
def test_triton_update_equals_the_foreach_update():
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_triton_sgd.py"), "--check", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "triton_sgd check on cpu: ok" in done.stdout


def test_the_update_is_foreach_off_cuda_and_bad_choices_are_one_line_errors():
    params = [torch.zeros(4, 3)]
    assert StackedSGD(params, 2, 0.1, 0.9, [0.0, 0.0]).update == "foreach"  # the default everywhere
    with pytest.raises(ValueError, match="unknown update 'fused'; choose from foreach, triton"):
        StackedSGD(params, 2, 0.1, 0.9, [0.0, 0.0], update="fused")
    with pytest.raises(ValueError, match="1 copies for 2 parameters"):
        StackedSGD([*params, torch.zeros(2)], 2, 0.1, 0.9, [0.0, 0.0], copies=[None])
    transposed = torch.zeros(3, 4).t().to(torch.bfloat16).requires_grad_()  # other strides
    with pytest.raises(ValueError, match="a copy must have its parameter's shape and strides"):
        StackedSGD(params, 2, 0.1, 0.9, [0.0, 0.0], copies=[transposed])


@NEEDS_TRITON
@pytest.mark.parametrize("grad, copy", [("bf16", True), ("fp32", False)])
def test_the_update_kernel_compiles_for_hopper_with_vector_loads(grad, copy):
    """The interpreter is lenient where the compiler is not: the kernel compiles for sm_90 without a GPU, as a
    launch on the stack's (16-aligned) tensors specialises it, with 16-byte loads and stores (it moves bytes,
    nothing else), and rounds the bf16 copies to nearest."""
    import re

    from check_triton_conv import offline_compile_missing

    if offline_compile_missing():
        pytest.skip(offline_compile_missing())
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from iwshift.kernels.triton_sgd import BLOCK, _sgd_update

    signature = {"param": "*fp32", "buf": "*fp32", "grad": f"*{grad}", "copy": f"*{grad}", "decay": "*fp32",
                 "lr_ptr": "*fp32", "n": "i32", "per_run": "i32", "momentum": "fp32", **dict.fromkeys(
                     ["DECAY", "MOMENTUM", "STARTED", "COPY", "BLOCK"], "constexpr")}
    constants = {"DECAY": True, "MOMENTUM": True, "STARTED": True, "COPY": copy, "BLOCK": BLOCK}
    aligned = {(i,): [["tt.divisibility", 16]] for i in range(8)}  # the pointers, n and per_run
    compiled = triton.compile(ASTSource(_sgd_update, signature, constexprs=constants, attrs=aligned),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    accesses = set(re.findall(r"\b(?:ld|st)\.global[\w.:]*", compiled.asm["ptx"]))
    assert {"ld.global.v4.b32", "st.global.v4.b32"} <= accesses, accesses
    if copy:  # the copies rounded to nearest even, as autocast's cast (Triton's CPU interpreter truncates instead)
        assert set(re.findall(r"cvt\.\w+\.bf16x2\.f32", compiled.asm["ptx"])) == {"cvt.rn.bf16x2.f32"}


@pytest.mark.parametrize("versions, available", [
    ({"triton": "3.0.0", "torch": "2.4.1+cu121"}, True),
    ({"pytorch-triton": "3.5.0+git1b0418a9", "torch": "2.10.0.dev20251201+cu128"}, True),  # a nightly build
    ({"triton": "2.2.0", "torch": "2.2.2"}, False),  # Triton 2.2's interpreter cannot run the kernels
    ({"triton": "3.6.0", "torch": "2.3.1"}, False),  # no torch.get_autocast_dtype(device) before 2.4
    ({"torch": "2.14.1"}, False),                    # no Triton at all
])
def test_the_triton_kernels_count_as_available_from_triton_3_0_with_torch_2_4(monkeypatch, versions, available):
    import importlib.metadata

    from iwshift import kernels as choices

    def version(package):
        if package not in versions:
            raise importlib.metadata.PackageNotFoundError(package)
        return versions[package]

    monkeypatch.setattr(choices.importlib.metadata, "version", version)
    monkeypatch.setattr(choices.importlib.util, "find_spec", lambda name: object() if len(versions) > 1 else None)
    assert choices.triton_available() is available
