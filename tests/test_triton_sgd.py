"""The Triton SGD update (``iwshift.triton_sgd``, :class:`iwshift.train.StackedSGD` on CUDA) computes what the
``_foreach`` update computes: momentum, each run's weight decay, the bf16 weight copies, a channels-last weight.
On the CPU through Triton's interpreter; on the GPU, ``gpu_check.sh`` runs the same check there."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iwshift.train import StackedSGD

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_triton_update_equals_the_foreach_update():
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "iwshift.triton_sgd", "--check", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "triton_sgd check on cpu: ok" in done.stdout


def test_the_update_is_foreach_off_cuda_and_bad_choices_are_one_line_errors():
    params = [torch.zeros(4, 3)]
    assert StackedSGD(params, 2, 0.1, 0.9, [0.0, 0.0]).update == "foreach"
    with pytest.raises(ValueError, match="unknown update 'fused'; choose from auto, foreach, triton"):
        StackedSGD(params, 2, 0.1, 0.9, [0.0, 0.0], update="fused")
    with pytest.raises(ValueError, match="1 copies for 2 parameters"):
        StackedSGD([*params, torch.zeros(2)], 2, 0.1, 0.9, [0.0, 0.0], copies=[None])
    transposed = torch.zeros(3, 4).t().to(torch.bfloat16).requires_grad_()  # other strides
    with pytest.raises(ValueError, match="a copy must have its parameter's shape and strides"):
        StackedSGD(params, 2, 0.1, 0.9, [0.0, 0.0], copies=[transposed])


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
@pytest.mark.parametrize("grad, copy", [("bf16", True), ("fp32", False)])
def test_the_update_kernel_compiles_for_hopper_with_vector_loads(grad, copy):
    """The interpreter is lenient where the compiler is not: the kernel compiles for sm_90 without a GPU, as a
    launch on the stack's (16-aligned) tensors specialises it, with 16-byte loads and stores (it moves bytes,
    nothing else)."""
    import re

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from iwshift.triton_sgd import BLOCK, _sgd_update

    signature = {"param": "*fp32", "buf": "*fp32", "grad": f"*{grad}", "copy": f"*{grad}", "decay": "*fp32",
                 "n": "i32", "per_run": "i32", "lr": "fp32", "momentum": "fp32", **dict.fromkeys(
                     ["DECAY", "MOMENTUM", "STARTED", "COPY", "BLOCK"], "constexpr")}
    constants = {"DECAY": True, "MOMENTUM": True, "STARTED": True, "COPY": copy, "BLOCK": BLOCK}
    aligned = {(i,): [["tt.divisibility", 16]] for i in range(7)}  # the pointers, n and per_run
    compiled = triton.compile(ASTSource(_sgd_update, signature, constexprs=constants, attrs=aligned),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    accesses = set(re.findall(r"\b(?:ld|st)\.global[\w.:]*", compiled.asm["ptx"]))
    assert {"ld.global.v4.b32", "st.global.v4.b32"} <= accesses, accesses
