"""The Triton implicit-GEMM convolutions (``iwshift.triton_conv``, ``StackedCNN(convolutions="triton")``)
compute what ``F.conv2d`` computes: forward, data and weight gradients, and a stacked CNN trained through
them. On the CPU through Triton's interpreter (float32 and float16); compiled for sm_90 without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iwshift.kernels import triton_available

ROOT = Path(__file__).resolve().parents[1]
NEEDS_TRITON = pytest.mark.skipif(not triton_available(), reason="needs Triton >= 3.0 with PyTorch >= 2.4")


# a kernel with a loop over a runtime bound, as ours have: Triton 3.6's CPU interpreter fails it under NumPy 2.4
# ("only 0-dimensional arrays can be converted to Python scalars": its scalars are 1-element arrays)
LOOP_PROBE = """
import torch, triton, triton.language as tl
@triton.jit
def count(out, n, BLOCK: tl.constexpr):
    total = 0
    for _ in range(0, n, BLOCK):
        total += 1
    tl.store(out, total)
out = torch.zeros(1, dtype=torch.int32)
count[(1,)](out, 40, BLOCK=16)
assert int(out) == 3, int(out)
"""


@NEEDS_TRITON
def test_triton_convolutions_equal_conv2d_forward_and_backward():
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", LOOP_PROBE], env=env, capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        import numpy
        import triton

        pytest.skip(f"Triton {triton.__version__}'s CPU interpreter cannot run a loop with a runtime bound under "
                    f"NumPy {numpy.__version__}: {probe.stderr.strip().splitlines()[-1][:160]}")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_triton_conv.py"), "--check", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "triton_conv check on cpu: ok" in done.stdout


@NEEDS_TRITON
def test_triton_convolutions_compile_for_hopper_without_a_gpu():
    """The interpreter is lenient where the compiler is not: every kernel of a `none`-stack step compiles for
    sm_90, specialised as a launch would be, with its products on Hopper's tensor cores and no register spills
    (a tile too large for its registers fails here, not on a GPU lease)."""
    from check_triton_conv import offline_compile_missing

    if offline_compile_missing():
        pytest.skip(offline_compile_missing())
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_triton_conv.py"), "--compile-only"],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compiled 14 kernels for sm_90: 14 with wgmma, 0 spilling registers" in done.stdout, done.stdout
    assert "conv2 64->64 at 30x30 data gradient: _gather_conv BM=128 BN=64" in done.stdout


def test_triton_convolutions_are_a_checked_choice_and_a_how_field():
    """(Refused off CUDA: tests/test_cifar_binary.py's one-line errors.)"""
    from iwshift import config
    from iwshift.checks import ConfigError
    from iwshift.models import StackedCNN

    with pytest.raises(ValueError, match="unknown convolutions 'cublas'"):
        StackedCNN(2, 0.0625, convolutions="cublas")
    with pytest.raises(ConfigError, match="--convolutions: unknown value 'cublas'"):
        config.CnnConfig(convolutions="cublas")
    # how a run is computed, not what it computes: results stay comparable across the two
    record = {"config": {"width": 1.0, "convolutions": "triton"}}
    assert config.identity(config.CnnConfig, {"run": "a"}, record) == \
        config.identity(config.CnnConfig, {"run": "a"}, {"config": {"width": 1.0}})


@NEEDS_TRITON
def test_auto_convolutions_take_the_faster_per_layer_and_run_it(monkeypatch):
    """``convolutions="auto"``: each layer timed on its own input shape (the images without a data gradient),
    the faster kept, once; the forward routes exactly those layers through the Triton kernels."""
    import torch
    from torch.nn import functional as F

    from iwshift.kernels import triton_conv
    from iwshift.models import StackedCNN

    K = 2
    idle = StackedCNN(K, 0.0625, convolutions="auto")
    idle.tune(16, torch.float32)  # on the CPU, without a timer: nothing to time (cuDNN against Triton is CUDA's)
    assert idle.layer_convolutions == ["torch"] * 5 and not idle.tuned
    model = StackedCNN(K, 0.0625, convolutions="auto")
    asked = []

    def timer(weight, bias, groups, input_shape, dtype, input_grad, input_dtype, channels_last):
        assert channels_last  # (tune's default: the bf16 trainer's format)
        assert weight.dtype == bias.dtype == dtype  # as the trainer's weight copies
        asked.append((tuple(weight.shape), groups, input_shape, dtype, input_grad, input_dtype))
        return {"torch": 1.0, "triton": 0.5 if len(asked) % 2 else 2.0}  # Triton the faster on odd layers

    model.tune(16, torch.bfloat16, timer=timer)
    assert model.layer_convolutions == ["triton", "torch", "triton", "torch", "triton"]
    channels = [4, 4, 8, 8, 8]  # width 1/16
    sizes = [32, 30, 14, 12, 10]  # 2x2 max-pooling after the second convolution
    assert asked == [((K * c_out, c_in, 3, 3), K, (16, K * c_in, size, size), torch.bfloat16, i > 0,
                      torch.bfloat16 if i else torch.float32)  # the images: float32, no gradient
                     for i, (c_in, c_out, size) in enumerate(zip([3, *channels], channels, sizes))]
    assert "conv2 torch (cuDNN 1.000 ms, Triton 2.000 ms)" in model.tuning_summary()
    model.tune(16, torch.bfloat16, timer=lambda *a, **k: pytest.fail("tuned twice"))

    routed = []

    def through_triton(x, weight, bias, groups):
        routed.append(weight)
        return F.conv2d(x, weight, bias, groups=groups)

    monkeypatch.setattr(triton_conv, "grouped_conv3x3", through_triton)
    model(torch.randn(K, 2, 3, 32, 32))
    assert routed == [model.convs[i].weight for i in (0, 2, 4)]


def test_the_trainer_tunes_its_model_once_before_the_first_step():
    import numpy as np
    import torch

    from iwshift.models import StackedCNN
    from iwshift.train import StackedRuns, Trainer, to_device_images

    n, K = 8, 2
    runs = StackedRuns(seeds=[0, 1], train_index=np.tile(np.arange(n), (K, 1)), example_weights=np.ones((K, n)),
                       l2=[0.0] * K, dropout=[0.0] * K)
    model = StackedCNN(K, 0.0625, seeds=runs.seeds)
    initial = model.convs[0].weight.detach().clone()
    calls = []
    model.tune = lambda batch, dtype, channels_last: calls.append(
        (batch, dtype, channels_last, torch.equal(model.convs[0].weight, initial)))
    images = to_device_images(np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "cpu")
    trainer = Trainer(model, runs, images, torch.as_tensor(np.arange(n) % 2), batch_size=4, precision="bf16",
                      image_normalization="cifar10")
    trainer.train_epoch()
    trainer.train_epoch()
    assert calls == [(4, torch.bfloat16, False, True)]  # once, untrained, with the training batch and format


def test_the_auto_choice_is_recorded_with_each_run_and_kept_by_a_checkpoint(monkeypatch, tmp_path):
    """convolutions="auto": each run's config.json says which kernels ran each layer, and a checkpoint carries
    the choice, so that a resumed run is not timed again (timing noise could switch a layer mid-run)."""
    import json

    import numpy as np
    import torch
    from helpers import fake_cifar

    from helpers import tiny_binary, train

    from iwshift.models import StackedCNN
    from iwshift.train import StackedRuns, Trainer, to_device_images

    def tune(self, batch_size, dtype, channels_last=True, timer=None):  # as on a GPU where cuDNN won everywhere
        if self.convolutions == "auto" and not self.tuned:
            self.tuned = {f"conv{i + 1}": {"torch": 1.0, "triton": 2.0} for i in range(5)}

    monkeypatch.setattr(StackedCNN, "tune", tune)
    cfg = tiny_binary(per_class=16, epochs=1, other_eval=10, noise_eval=4, weights=[1.0], regimes=["none"],
                      convolutions="auto")
    train(cfg, fake_cifar(16, 4), tmp_path)
    record = json.loads((tmp_path / "weighting_w1_none_s0" / "config.json").read_text())
    assert record["trained"]["convolutions_per_layer"] == ["torch"] * 5

    n = 8
    runs = StackedRuns(seeds=[0, 1], train_index=np.tile(np.arange(n), (2, 1)), example_weights=np.ones((2, n)),
                       l2=[0.0, 0.0], dropout=[0.0, 0.0])
    images = to_device_images(np.zeros((n, 32, 32, 3), dtype=np.uint8), "cpu")
    labels = torch.as_tensor(np.arange(n) % 2)
    trainers = []
    for _ in range(2):
        model = StackedCNN(2, 0.0625, convolutions="auto", seeds=runs.seeds)
        trainers.append(Trainer(model, runs, images, labels, batch_size=4, image_normalization="cifar10"))
    saved = trainers[0].model
    saved.layer_convolutions = ["triton", "torch", "triton", "torch", "torch"]
    saved.tuned = {f"conv{i + 1}": {"torch": 1.0, "triton": 0.5} for i in range(5)}
    trainers[1].load_state_dict(trainers[0].state_dict())
    resumed = trainers[1].model
    assert resumed.layer_convolutions == saved.layer_convolutions and resumed.tuned == saved.tuned
    monkeypatch.undo()
    resumed.tune(4, torch.float32, timer=lambda *a, **k: pytest.fail("a resumed run was timed again"))


@pytest.mark.skipif(not (triton_available() and __import__("torch").cuda.is_available()),
                    reason="needs CUDA and Triton >= 3.0")
def test_triton_convolutions_on_cuda_in_float32_and_bfloat16():
    import torch

    import check_triton_conv

    from iwshift.kernels import triton_conv

    assert check_triton_conv.check("cuda") < 1e-5
    assert check_triton_conv.check("cuda", torch.bfloat16) < 2e-2
    assert check_triton_conv.check_model("cuda") < 1e-4
    weight, bias = torch.randn(2 * 8, 4, 3, 3, device="cuda"), torch.randn(2 * 8, device="cuda")
    times = triton_conv.time_layer(weight, bias, 2, (4, 2 * 4, 12, 12), torch.bfloat16)  # what auto compares
    assert set(times) == {"torch", "triton"} and all(0 < t < 100 for t in times.values())
