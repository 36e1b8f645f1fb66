"""Where a training step of the paper's `none` stack (K = 21 full-width CNNs, batch 16) spends its GPU time.

Times the trainer's step (captured as a CUDA graph on CUDA) in bf16 with channels-last (the studies' CUDA
default) and channels-first activations, then profiles eager steps of the first with ``torch.profiler``
and prints the kernels that dominate (the same kernels the captured graph replays).
Random images: throughput does not depend on pixel values. Run from the repository root:
``python benchmarks/profile_step.py [--device cuda] [--k 21] [--width 1]``. Last line: ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iwshift.models import StackedCNN  # noqa: E402
from iwshift.train import StackedRuns, Trainer, to_device_images  # noqa: E402

VARIANTS = {  # name: (precision, channels_last)
    "bf16-nhwc": ("bf16", True),   # the studies' CUDA default
    "bf16-nchw": ("bf16", False),
}


def build(k: int, width: float, device: torch.device, precision: str, channels_last: bool,
          n: int = 2000, graph: str = "auto") -> Trainer:
    rng = np.random.default_rng(0)
    images = to_device_images(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), device)
    labels = torch.as_tensor(np.repeat([0, 1], n // 2), device=device)
    weights = [1 / 128, 1 / 32, 1 / 8, 1.0, 8.0, 32.0, 128.0]
    runs = StackedRuns(seeds=list(range(k)), train_index=np.tile(np.arange(n), (k, 1)),
                       example_weights=np.stack([np.where(labels.cpu().numpy() == 1, weights[i % 7], 1.0)
                                                 for i in range(k)]),
                       l2=[0.0] * k, dropout=[0.0] * k)
    model = StackedCNN(k, width)
    model.reset_parameters(runs.seeds)
    return Trainer(model.to(device), runs, images, labels, lr=0.01, momentum=0.9, batch_size=16,
                   precision=precision, channels_last=channels_last, image_normalization="cifar10", graph=graph)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_per_step(trainer: Trainer, device: torch.device, epochs: int = 2) -> float:
    trainer.train_epoch()  # capture, autotuning
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
    parser.add_argument("--k", type=int, default=21)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--profile-steps", type=int, default=30)
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {}
    for name, (precision, channels_last) in VARIANTS.items():
        results[name] = ms_per_step(build(args.k, args.width, device, precision, channels_last), device)
        print(f"{name:20s} K = {args.k}: {results[name]:.3f} ms per step "
              f"({16 * args.k / results[name] * 1e3:,.0f} model-images/s)", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    precision, channels_last = VARIANTS["bf16-nhwc"]
    trainer = build(args.k, args.width, device, precision, channels_last, n=16 * args.profile_steps, graph="off")
    trainer.train_epoch()
    sync(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        trainer.train_epoch()
        sync(device)
    print(f"eager bf16-nhwc, {args.profile_steps} steps, by self time on the device:")
    for sort in (("self_cuda_time_total", "cuda_time_total") if device.type == "cuda" else ("self_cpu_time_total",)):
        try:
            print(prof.key_averages().table(sort_by=sort, row_limit=22, max_name_column_width=70))
            break
        except (KeyError, AttributeError, ValueError) as err:
            print(f"(sort by {sort}: {err})")
    print(" ".join([f"device={device.type}", f"k={args.k}"]
                   + [f"{name.replace('-', '_')}_ms={value:.3f}" for name, value in results.items()]))


if __name__ == "__main__":
    main()
