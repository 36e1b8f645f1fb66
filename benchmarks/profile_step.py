"""Where a training step of the paper's `none` stack (K = 21 full-width CNNs, batch 16) spends its GPU time,
and what candidate changes to it would gain.

Times the trainer's step (captured as a CUDA graph on CUDA) for each ``--variants`` entry: every variant is built
and warmed up first, then timed in turns, ``--rounds`` times an epoch each, and its best round reported (the
first variant timed alone would pay the machine's warm-up: 40 % slower on the CPU here). Then it profiles eager
steps of ``--profile-variant`` (default: the studies' default) with ``torch.profiler`` and prints the kernels
that dominate (the same kernels the captured graph replays) and the convolutions' time by layer. The variants:

* ``bf16-nhwc``: the studies' CUDA default (bf16 autocast, channels-last activations, the forward on bf16 copies
  of the weights that the update keeps, the update as one Triton kernel per parameter: ``iwshift.kernels.triton_sgd``);
* ``foreach-sgd``: the same with the update as ``torch._foreach`` passes (the default off CUDA);
* ``autocast-casts``: the update as ``_foreach`` passes and no bf16 copies: autocast casts the float32 weights
  at every step, and their gradients back (the default before the copies);
* ``bf16-nchw``: channels-first activations;
* ``conv1-pad8``: the first convolution (``model.convs[0]`` swapped for a padding wrapper) with each model's 3
  input channels padded with zeros to 8, so that cuDNN may take its tensor-core grouped kernels for it rather
  than running it group by group (the profile shows 21 launches per step of one layer's forward);
* ``conv1-bmm``: the first convolution as one batched matrix product of gathered image patches (one copy) with
  each model's weights, instead of a grouped convolution;
* ``triton-conv``: every convolution through Triton implicit-GEMM kernels (``iwshift.kernels.triton_conv``: one
  launch for all K groups, forward, data and weight gradients; CUDA only, checked on the GPU against
  ``F.conv2d`` first, and in the tests through Triton's CPU interpreter);
* ``auto-conv``: ``StackedCNN(convolutions="auto")``: each layer through cuDNN or the Triton kernels,
  whichever :meth:`~iwshift.models.StackedCNN.tune` times faster on the stack's shapes (CUDA only; the choice
  and the timings are printed);
* ``compile``: ``torch.compile`` of the stacked model inside the captured step (CUDA only; on the CPU it is
  the default).

The variants that compute the model otherwise (``bf16-nchw``, ``conv1-pad8``, ``conv1-bmm``) are first checked
on the CPU in float64 against the default: the same logits after two SGD steps (a variant that computes
something else is refused, not timed). The update and the weight copies are checked by the tests
(``tests/test_graph_step.py``) and by ``python benchmarks/check_triton_sgd.py --check``; the Triton convolutions by
``iwshift.kernels.triton_conv``'s check, on the GPU, before they are timed. Random images: throughput does not depend
on pixel values. Run from the repository root: ``python benchmarks/profile_step.py [--device cuda] [--k 21]
[--width 1] [--variants ...]``. Last line: ``device=D k=K <variant>_ms=...`` (milliseconds per step).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # the kernels' checks beside this script

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from iwshift.models import StackedCNN  # noqa: E402
from iwshift.train import StackedRuns, Trainer, to_device_images  # noqa: E402


class FirstConvStandIn(torch.nn.Module):
    """Stands in for a stacked model's first convolution (``model.convs[0]``), on its parameters."""

    def __init__(self, conv: torch.nn.Conv2d, n_models: int):
        super().__init__()
        self.conv, self.n_models = conv, n_models

    @property
    def weight(self) -> torch.Tensor:  # the model checks its first convolution's memory format
        return self.conv.weight


class PaddedConv(FirstConvStandIn):
    """The first convolution on 8 input channels per model, 5 of them zero (input and weights)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        conv, K = self.conv, self.n_models
        B, _, H, W = h.shape
        h8 = F.pad(h.reshape(B, K, 3, H, W), (0, 0, 0, 0, 0, 5)).reshape(B, K * 8, H, W)
        w8 = F.pad(conv.weight, (0, 0, 0, 0, 0, 5))  # (K*64, 8, 3, 3): the gradient flows to the 3 real inputs
        if conv.weight.is_contiguous(memory_format=torch.channels_last):
            h8, w8 = (t.contiguous(memory_format=torch.channels_last) for t in (h8, w8))
        return F.conv2d(h8, w8, conv.bias, groups=K)


class BmmConv(FirstConvStandIn):
    """The first convolution (no padding, stride 1) as one batched matrix product per model: the image
    patches, gathered once into (K, B * H' * W', c_in * 9), times each model's (c_in * 9, c_out) weights.
    No grouped convolution kernel (run group by group for 3 input channels), and the input needs no
    gradient, so no patch scatter backwards."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        conv, K = self.conv, self.n_models
        B, KC, H, W = h.shape
        c_in, c_out, r = KC // K, conv.weight.shape[0] // K, conv.kernel_size[0]
        Ho, Wo = H - r + 1, W - r + 1
        # patches[b, y, x, k, c, dy, dx] as a view of the (B, H, W, K * c_in) images, then one gathering copy
        patches = h.permute(0, 2, 3, 1).unfold(1, r, 1).unfold(2, r, 1).reshape(B, Ho, Wo, K, c_in, r, r)
        patches = patches.permute(3, 0, 1, 2, 4, 5, 6).reshape(K, B * Ho * Wo, c_in * r * r)
        weight = conv.weight.reshape(K, c_out, c_in * r * r).transpose(1, 2)   # (K, c_in * 9, c_out)
        out = torch.baddbmm(conv.bias.view(K, 1, c_out), patches, weight)      # (K, B * Ho * Wo, c_out)
        # back to the (B, K * c_out, Ho, Wo) activations, channels-last in memory as the next layer wants
        out = out.view(K, B, Ho, Wo, c_out).permute(1, 2, 3, 0, 4).reshape(B, Ho, Wo, K * c_out)
        return out.permute(0, 3, 1, 2)


def first_conv(stand_in: type[FirstConvStandIn]):
    def swap(model: StackedCNN, n_models: int) -> None:
        model.convs[0] = stand_in(model.convs[0], n_models)
    return swap


VARIANTS = {  # name: (what replaces the first convolution, the model's and the trainer's keywords)
    "bf16-nhwc": (None, {}, {}),
    "foreach-sgd": (None, {}, {"update": "foreach"}),
    "autocast-casts": (None, {}, {"update": "foreach", "weight_copies": False}),
    "bf16-nchw": (None, {}, {"channels_last": False}),
    "conv1-pad8": (first_conv(PaddedConv), {}, {}),
    "conv1-bmm": (first_conv(BmmConv), {}, {}),
    "triton-conv": (None, {"convolutions": "triton"}, {}),
    "auto-conv": (None, {"convolutions": "auto"}, {}),
    "compile": (None, {}, {"compile": True}),
}
CPU_CHECKED = {"bf16-nchw", "conv1-pad8", "conv1-bmm"}  # the model computed otherwise: checked in float64 first
CUDA_ONLY = {"triton-conv", "auto-conv"}  # Triton kernels (on the CPU only through Triton's interpreter, in the tests)


def build(variant: str, k: int, width: float, device: torch.device, n: int = 2000, graph: bool = True,
          dtype: torch.dtype = torch.float32) -> Trainer:
    convs, model_options, options = VARIANTS[variant]
    options = {"precision": "bf16", "channels_last": True, "compile": False, **options}
    rng = np.random.default_rng(0)
    images = to_device_images(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), device)
    labels = torch.as_tensor(np.repeat([0, 1], n // 2), device=device)
    weights = [1 / 128, 1 / 32, 1 / 8, 1.0, 8.0, 32.0, 128.0]
    runs = StackedRuns(seeds=list(range(k)), train_index=np.tile(np.arange(n), (k, 1)),
                       example_weights=np.stack([np.where(labels.cpu().numpy() == 1, weights[i % 7], 1.0)
                                                 for i in range(k)]),
                       l2=[0.0] * k, dropout=[0.0] * k)
    model = StackedCNN(k, width, **model_options)
    model.reset_parameters(runs.seeds)
    if convs is not None:
        convs(model, k)
    if dtype != torch.float32:  # the CPU check: float64 on the CPU, fp32 arithmetic otherwise
        options["precision"] = "fp32"
    update = options.pop("update", "auto")
    options["compile"] = options["compile"] and device.type == "cuda"
    trainer = Trainer(model.to(device, dtype), runs, images, labels, lr=0.01, momentum=0.9, batch_size=16,
                      image_normalization="cifar10", graph=graph, **options)
    if update != "auto":
        trainer.optimizer.update = update
    return trainer


def check_on_cpu(variant: str) -> None:
    """The variant trains as the default does (float64 on the CPU, two steps, width 1/16, K = 2)."""
    logits = []
    for name in ("bf16-nhwc", variant):
        trainer = build(name, 2, 0.0625, torch.device("cpu"), n=32, graph=False, dtype=torch.float64)
        trainer.scale, trainer.shift = (t.double() for t in (trainer.scale, trainer.shift))
        trainer.weights = trainer.weights.double()
        trainer.train_epoch()
        logits.append(trainer.predict_logits(trainer.inputs[:8]))
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-9, atol=1e-12)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_per_step(trainer: Trainer, device: torch.device, epochs: int = 1) -> float:
    """Milliseconds per step over ``epochs`` epochs of a warmed-up trainer."""
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        trainer.train_epoch()
    sync(device)
    steps = epochs * -(-trainer.index.shape[1] // trainer.batch_size)
    return 1e3 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--k", type=int, default=21, help="runs in the stack (21: the none regime's)")
    parser.add_argument("--width", type=float, default=1.0, help="CNN width multiplier")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="what to time (default: all; compile takes a minute to compile)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of timing every variant (best one reported)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of 125 steps per variant and round")
    parser.add_argument("--profile-steps", type=int, default=30, help="eager steps under the profiler (0: none)")
    parser.add_argument("--profile-variant", choices=list(VARIANTS), default="bf16-nhwc",
                        help="the variant whose eager steps are profiled (default: the studies' default)")
    args = parser.parse_args()
    device = torch.device(args.device)
    trainers, triton_checked = {}, False
    for name in args.variants:  # every variant built and warmed up first, then timed in turns (below)
        if name in CUDA_ONLY and device.type != "cuda":
            print(f"{name:14s} K = {args.k}: skipped (CUDA only)", flush=True)
            continue
        try:  # a variant that fails its check or on this device is reported, not fatal
            if name in ("triton-conv", "auto-conv"):
                if not triton_checked:  # the kernels' own checks, once, on the GPU: fp32 and bf16, then the model
                    import check_triton_conv as triton_conv

                    worst = max(triton_conv.check("cuda"), triton_conv.check("cuda", torch.bfloat16))
                    print(f"triton-conv checks: kernels within {worst:.1e} of F.conv2d, "
                          f"stacked CNN within {triton_conv.check_model('cuda'):.1e}", flush=True)
                    triton_checked = True
            elif name in CPU_CHECKED:
                check_on_cpu(name)
            trainer = build(name, args.k, args.width, device)
            trainer.train_epoch()  # capture, autotuning, compilation: not timed
            trainers[name] = trainer
            if getattr(trainer.model, "tuned", None):
                print(f"{name:14s} K = {args.k}: {trainer.model.tuning_summary()}", flush=True)
        except Exception as err:  # noqa: BLE001
            reason = str(err).splitlines()[0][:200] if str(err) else ""
            print(f"{name:14s} K = {args.k}: FAILED: {type(err).__name__}: {reason}", flush=True)
    # in turns, so that a machine's drift (clocks, other jobs, the first runs' warm-up) spreads over all variants
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for round_ in range(1, args.rounds + 1):
        for name, trainer in trainers.items():
            times[name].append(ms_per_step(trainer, device, args.epochs))
            print(f"{name:14s} K = {args.k}: {times[name][-1]:.3f} ms per step (round {round_} of {args.rounds}, "
                  f"{trainer.optimizer.update} update{', bf16 weight copies' if trainer.weight_copies else ''})",
                  flush=True)
    results = {name: min(t) for name, t in times.items()}
    print(f"best of {args.rounds} rounds of {args.epochs} epoch(s) each (median in brackets):")
    for name, t in times.items():
        print(f"{name:14s} K = {args.k}: {min(t):.3f} ms per step ({float(np.median(t)):.3f}), "
              f"{16 * args.k / min(t) * 1e3:,.0f} model-images/s", flush=True)
    del trainers
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if args.profile_steps:
        trainer = build(args.profile_variant, args.k, args.width, device, n=16 * args.profile_steps, graph=False)
        trainer.train_epoch()
        sync(device)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
            trainer.train_epoch()
            sync(device)
        print(f"eager {args.profile_variant}, {args.profile_steps} steps, by self time on the device:")
        sorts = ("self_cuda_time_total", "cuda_time_total") if device.type == "cuda" else ("self_cpu_time_total",)
        for sort in sorts:
            try:
                print(prof.key_averages().table(sort_by=sort, row_limit=22, max_name_column_width=70))
                # which layer each convolution's time belongs to (its input shapes name it)
                print("convolutions by layer (input shapes):")
                conv_ops = ("aten::cudnn_convolution", "aten::convolution_backward", "aten::mkldnn_convolution")
                convs = [e for e in prof.key_averages(group_by_input_shape=True)
                         if e.key in conv_ops or "GroupedConv3x3" in e.key]  # the Triton variant's
                time_of = lambda e: (getattr(e, sort.replace("cuda", "device"), None)  # noqa: E731
                                     or getattr(e, sort, 0))
                for e in sorted(convs, key=time_of, reverse=True)[:12]:
                    print(f"  {e.key:28s} {time_of(e) / 1e3:9.3f} ms  x{e.count:<5d} {str(e.input_shapes)[:150]}")
                break
            except (KeyError, AttributeError, ValueError) as err:
                print(f"(sort by {sort}: {err})")
    print(" ".join([f"device={device.type}", f"k={args.k}"]
                   + [f"{name.replace('-', '_')}_ms={value:.3f}" for name, value in results.items()]))


if __name__ == "__main__":
    main()
