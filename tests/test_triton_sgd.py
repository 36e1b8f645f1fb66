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
