"""The Triton implicit-GEMM convolutions (``iwshift.triton_conv``, ``StackedCNN(convolutions="triton")``)
compute what ``F.conv2d`` computes: forward, data and weight gradients, and a stacked CNN trained through
them. On the CPU through Triton's interpreter (float32 and float16); compiled for sm_90 without a GPU."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_triton_convolutions_equal_conv2d_forward_and_backward():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "iwshift.triton_conv", "--check", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "triton_conv check on cpu: ok" in done.stdout


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_triton_convolutions_compile_for_hopper_without_a_gpu():
    """The interpreter is lenient where the compiler is not: every kernel of a `none`-stack step compiles for
    sm_90, specialised as a launch would be, with its products on Hopper's tensor cores and no register spills
    (a tile too large for its registers fails here, not on a GPU lease)."""
    done = subprocess.run([sys.executable, "-m", "iwshift.triton_conv", "--compile-only"],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compiled 14 kernels for sm_90: 14 with wgmma, 0 spilling registers" in done.stdout, done.stdout
    assert "conv2 64->64 at 30x30 data gradient: _gather_conv BM=128 BN=64" in done.stdout


def test_triton_convolutions_are_a_checked_choice_and_a_how_field():
    """(Refused off CUDA: tests/test_cifar_binary.py's one-line errors.)"""
    from iwshift import sweep
    from iwshift.config import ConfigError
    from iwshift.models import StackedCNN

    with pytest.raises(ValueError, match="unknown convolutions 'cublas'"):
        StackedCNN(2, 0.0625, convolutions="cublas")
    with pytest.raises(ConfigError, match="--convolutions: unknown value 'cublas'"):
        sweep.CnnConfig(convolutions="cublas")
    # how a run is computed, not what it computes: results stay comparable across the two
    record = {"config": {"width": 1.0, "convolutions": "triton"}}
    assert sweep.run_identity({"run": "a"}, record) == sweep.run_identity({"run": "a"}, {"config": {"width": 1.0}})


@pytest.mark.skipif(not (importlib.util.find_spec("triton") and __import__("torch").cuda.is_available()),
                    reason="needs CUDA and triton")
def test_triton_convolutions_on_cuda_in_float32_and_bfloat16():
    import torch

    from iwshift import triton_conv

    assert triton_conv.check("cuda") < 1e-5
    assert triton_conv.check("cuda", torch.bfloat16) < 2e-2
    assert triton_conv.check_model("cuda") < 1e-4
