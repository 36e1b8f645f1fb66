"""Benchmark: CNN training throughput of the stacked CIFAR-10 trainer against a plain one-model loop.

What is measured, in one process, on the same cat/dog training images (``--per-class`` per class, from
``--data-dir`` through ``iwshift.cifar_data.load_cifar10``, or random uint8 images when no data is given or
found; the line ``data: ...`` says which):

* ``plain``: the paper's original way: a torch ``Dataset`` whose ``__getitem__`` does, per sample,
  ``PIL.Image.fromarray(img)`` then ``ToTensor()`` + ``Normalize(CIFAR_MEAN, CIFAR_STD)`` (as
  ``torchvision.datasets.CIFAR10`` does), a ``DataLoader(batch_size=16, shuffle=True)`` (no workers), each
  batch moved to the device in the loop, ONE model in fp32, ``torch.optim.SGD(lr=0.01, momentum=0.9)`` and
  ``nn.CrossEntropyLoss(weight=class_weights)``. The model is ``StackedCNN(1, width)`` fed ``x.unsqueeze(0)``
  (logits ``[0]``): with one model its grouped convolutions are plain convolutions, so this is the plain CNN.
* ``K = k``: ``iwshift.train.Trainer`` on a ``StackedCNN(k, width)`` with ``StackedRuns`` laid out as the
  weighting study lays out its grid (run i: weight ``WEIGHTS[i % 7]`` on the positive class, regime
  ``none, l2, dropout, batchnorm`` for i // 7 = 0, 1, 2, 3; l2 = 1e-3, dropout 0.5; batch norm is off in the
  stack unless ``--batch-norm``: the study trains its batch-norm runs in a stack of their own), images
  resident on the device (``to_device_images``), at ``--precision`` (``auto`` = ``resolve_precision``: bf16 on
  CUDA; bf16 implies channels_last as in ``cifar_binary.train_stack``), optionally ``--compile``.
  ``--precisions fp32 bf16`` measures each listed precision as well. ``--graph`` is the trainer's option
  (``on``: the step captured as a CUDA graph on CUDA; ``off``: the same step run eagerly; on the CPU the step
  always runs eagerly); ``--graphs on off`` measures each listed mode as well. ``--side-by-side S``: each
  case's K runs as S stacks (of K / S runs, at most K stacks) trained at once by
  ``iwshift.train.train_side_by_side`` (on CUDA each stack's captured step replayed on a stream of its own:
  does the GPU overlap the stacks' chains of small kernels?); a step is then one step of every stack.

Each case runs ``--warmup`` untimed steps, then ``--steps`` timed steps (on CUDA the device is synchronised
before each clock read). The trainer is driven through ``Trainer.train_epoch`` itself (the timed span ends
inside an epoch, via its ``on_step`` hook), so epoch overheads (batch orders, the end-of-epoch statistics)
are included whenever an epoch boundary falls in the timed span; the plain loop likewise pays for
re-creating its ``DataLoader`` iterator at each epoch.

The unit, ``img/s per model``, is model-images per second: one image seen by one model counts one, so K
runs stepping together on batches of 16 do 16 K per step. It is the rate at which the study's (model,
image) training work gets done, so ``case / plain`` is the speed-up on a sweep of many runs over the plain
loop that trains them one after another (the issue's "per model-image"). Each case's line also shows the
rate of a single run (img/s per run = img/s per model / K), and the wall time per optimiser step (one step
of all K runs; the host overhead the CUDA graph removes is a fixed cost per step, whatever K), and how the
trainer updated its weights (the Triton or ``_foreach`` update, bf16 weight copies or autocast's casts).

Run from the repository root: ``python benchmarks/bench_cifar.py`` (defaults: width 1.0, 200 steps and
``--ks 1 7 28 42 84`` on CUDA; width 0.25, 30 steps and ``--ks 1 8 28`` on CPU). The last line is
``device=D plain_img_s=A k1_img_s=B k8_img_s=C k28_img_s=E k1_step_ms=... best_ratio=R`` (one ``k<K>_img_s``
and one ``k<K>_step_ms`` per ``--ks`` value, at ``--precision`` and ``--graph``); R is the largest ratio over
every measured trainer case, all ``--precisions`` and ``--graphs`` included.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from iwshift.cnn import resolve_precision  # noqa: E402
from iwshift.config import CNN_REGIMES as REGIMES  # noqa: E402
from iwshift.config import CONVOLUTIONS, UPDATES, BinaryConfig  # noqa: E402
from iwshift.cifar_data import CIFAR10_CLASSES, DataUnavailableError, load_cifar10  # noqa: E402
from iwshift.models import StackedCNN, cnn_widths  # noqa: E402
from iwshift.train import (CIFAR_MEAN, CIFAR_STD, StackedRuns, Trainer, to_device_images,  # noqa: E402
                           train_side_by_side)


BATCH_SIZE = 16
LR = 0.01
MOMENTUM = 0.9
PLAIN_POSITIVE_WEIGHT = 8.0  # class weight of the positive class in the plain loss (the cost does not depend on it)
CLASSES = ("cat", "dog")     # negative, positive
GRAPH_MODES = ("on", "off")   # the trainer's graph option: the step captured as a CUDA graph on CUDA, or eager


# ------------------------------------------------------------------------------------------ data


@dataclass
class PairImages:
    images: np.ndarray  # uint8 (N, 32, 32, 3)
    labels: np.ndarray  # int64 (N,), 0 = negative, 1 = positive
    source: str


def load_pair(data_dir: str | None, per_class: int, seed: int = 0) -> PairImages:
    """``per_class`` training images of each of cat and dog, or random images when there is no data."""
    rng = np.random.default_rng(seed)
    reason = "no --data-dir given"
    if data_dir is not None:
        try:
            data = load_cifar10(data_dir, download=False)
        except (DataUnavailableError, OSError) as err:
            reason = f"could not load {data_dir!r}: {err}"
        else:
            picked = []
            for c in CLASSES:
                members = np.flatnonzero(data.train.labels == CIFAR10_CLASSES.index(c))
                if len(members) < per_class:
                    print(f"note: class {c} has only {len(members)} training images; using them all")
                picked.append(np.sort(rng.choice(members, min(per_class, len(members)), replace=False)))
            images = np.concatenate([data.train.images[p] for p in picked])
            labels = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(picked)])
            return PairImages(images, labels, f"{data.source}, {len(picked[0])} cat + {len(picked[1])} dog "
                                              f"training images")
    images = rng.integers(0, 256, (2 * per_class, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(2, dtype=np.int64), per_class)
    return PairImages(images, labels, f"RANDOM uint8 images ({reason}), {per_class} per class")


class PlainCatDog(Dataset):
    """What ``torchvision.datasets.CIFAR10.__getitem__`` does: PIL image from the uint8 array, then the
    transform, per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], torch.Tensor]):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


# ---------------------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    seconds: float
    images_per_run: int  # images each model saw in the timed steps
    n_models: int
    how: str = ""        # the trainer's update and weights (after training: a fallback shows)

    @property
    def per_run(self) -> float:
        """Images per second of one run."""
        return self.images_per_run / self.seconds

    @property
    def per_model(self) -> float:
        """Images per second summed over the models (one image seen by one model counts one)."""
        return self.n_models * self.per_run


def time_plain(pair: PairImages, width: float, device: torch.device, warmup: int, steps: int) -> Timing:
    """The original code's loop (see the module docstring), one fp32 model."""
    from torchvision import transforms

    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    loader = DataLoader(PlainCatDog(pair.images, pair.labels, transform), batch_size=BATCH_SIZE, shuffle=True)
    model = StackedCNN(1, width).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor([1.0, PLAIN_POSITIVE_WEIGHT], device=device))

    def batches():
        while True:  # epoch after epoch, a new shuffled iterator each time
            yield from loader

    stream = batches()
    start, images = 0.0, 0
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start, images = time.perf_counter(), 0
        x, y = next(stream)
        x, y = x.to(device), y.to(device)
        logits = model(x.unsqueeze(0))[0]
        loss = criterion(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        images += len(y)
    synchronize(device)
    return Timing(time.perf_counter() - start, images, 1)


class _Done(Exception):
    """Raised from the trainer's ``on_step`` hook to leave ``train_epoch`` once the timed steps are done."""


class StepClock:
    """``on_step`` hook for ``Trainer.train_epoch``: starts the clock after ``warmup`` steps and stops it
    (raising :class:`_Done`) after ``steps`` more, counting the images each run saw in between."""

    def __init__(self, device: torch.device, n_train: int, warmup: int, steps: int):
        self.device, self.n_train, self.warmup, self.steps = device, n_train, warmup, steps
        self.step = 0           # steps since the start
        self.position = 0       # examples consumed in the current epoch
        self.images = 0         # images per run in the timed span
        self.start = self.seconds = 0.0
        if warmup == 0:
            synchronize(device)
            self.start = time.perf_counter()

    def new_epoch(self) -> None:
        self.position = 0

    def __call__(self) -> None:
        batch = min(BATCH_SIZE, self.n_train - self.position)
        self.position += batch
        self.step += 1
        if self.step > self.warmup:
            self.images += batch
        if self.step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
        if self.step == self.warmup + self.steps:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
            raise _Done


def study_runs(n_models: int, n_train_per_class: int) -> StackedRuns:
    """K runs laid out like the weighting grid: weight WEIGHTS[i % 7] on the positive class, regime
    REGIMES[i // 7 % 4] (l2 and dropout values of the paper's configuration)."""
    cfg = BinaryConfig()
    weights = list(cfg.weights)
    labels = np.repeat([0, 1], n_train_per_class)
    regimes = [REGIMES[(i // len(weights)) % len(REGIMES)] for i in range(n_models)]
    return StackedRuns(
        seeds=list(range(n_models)),
        train_index=np.tile(np.arange(len(labels)), (n_models, 1)),
        example_weights=np.stack([np.where(labels == 1, weights[i % len(weights)], 1.0) for i in range(n_models)]),
        l2=[cfg.l2 if r == "l2" else 0.0 for r in regimes],
        dropout=[cfg.dropout if r == "dropout" else 0.0 for r in regimes])


def time_trainer(pair: PairImages, n_models: int, width: float, device: torch.device, precision: str,
                 compile: bool, batch_norm: bool, warmup: int, steps: int, graph: str = "on",
                 convolutions: str = "torch", side_by_side: int = 1, update: str = "foreach",
                 weight_copies: bool | None = None) -> Timing:
    """``Trainer.train_epoch`` on K stacked runs (see the module docstring); with ``side_by_side`` S > 1, the
    K runs as S stacks of K / S trained by ``train_side_by_side`` (a step: one step of every stack)."""
    if len(pair.labels) != 2 * int((pair.labels == 0).sum()):
        raise ValueError("the trainer cases expect as many images of each class")
    images = to_device_images(pair.images, device)
    labels = torch.as_tensor(pair.labels, device=device)
    runs = study_runs(n_models, len(pair.labels) // 2)
    trainers = []
    for part in np.array_split(np.arange(n_models), side_by_side):
        stack = StackedRuns(seeds=[runs.seeds[i] for i in part], train_index=runs.train_index[part],
                            example_weights=runs.example_weights[part], l2=[runs.l2[i] for i in part],
                            dropout=[runs.dropout[i] for i in part])
        model = StackedCNN(len(part), width, batch_norm=batch_norm, dropout=stack.dropout, convolutions=convolutions)
        model.reset_parameters(stack.seeds)
        model.to(device)
        trainers.append(Trainer(model, stack, images, labels, lr=LR, momentum=MOMENTUM, batch_size=BATCH_SIZE,
                                normalization="weight_sum", precision=precision, channels_last=precision == "bf16",
                                compile=compile, image_normalization="cifar10", graph=graph == "on",
                                update=update, weight_copies=weight_copies))
    clock = StepClock(device, len(pair.labels), warmup, steps)
    try:
        while True:
            clock.new_epoch()
            if side_by_side > 1:
                train_side_by_side(trainers, on_step=clock)
            else:
                trainers[0].train_epoch(on_step=clock)
    except _Done:
        pass
    for trainer in trainers:
        if trainer.model.tuned:
            print(f"  convolutions auto, K = {trainer.runs.n_models}: {trainer.model.tuning_summary()}", flush=True)
    optimizer = trainers[0].optimizer
    how = f"{optimizer.update} update{', bf16 weight copies' if trainers[0].weight_copies else ''}"
    if side_by_side > 1:
        how += f", {side_by_side} stacks of {n_models // side_by_side}{'+' if n_models % side_by_side else ''} side by side"
    return Timing(clock.seconds, clock.images, n_models, how)


# ------------------------------------------------------------------------------------------ main


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_cifar.py: error: --device cuda requested but CUDA is not available")
    return torch.device(name)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--width", type=float, default=None, help="CNN width multiplier (default 1.0 on CUDA, "
                                                                  "0.25 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 200 on CUDA, "
                                                                "30 on CPU)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before each case's clock starts")
    parser.add_argument("--per-class", type=int, default=1000, help="training images per class")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 ImageFolder tree or torchvision folder "
                                                         "(default: random images)")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="stack sizes K to time (default 1 7 28 "
                                                                        "42 84 on CUDA, 1 8 28 on CPU)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="trainer precision of the summary line (auto: bf16 on CUDA, CPU_PRECISION on CPU)")
    parser.add_argument("--precisions", choices=("fp32", "bf16"), nargs="+", default=[],
                        help="also time the trainer cases at each of these precisions")
    parser.add_argument("--graph", choices=GRAPH_MODES, default="on",
                        help="the trainer's graph option in the summary line (on: the step as a CUDA graph on CUDA)")
    parser.add_argument("--graphs", choices=GRAPH_MODES, nargs="+", default=[],
                        help="also time the trainer cases with each of these graph options")
    parser.add_argument("--compile", action="store_true", help="torch.compile the stacked model (trainer cases)")
    parser.add_argument("--batch-norm", action="store_true", help="batch norm in the trainer's stacks")
    parser.add_argument("--convolutions", choices=CONVOLUTIONS, default="torch",
                        help="the stacked CNN's convolutions: torch (cuDNN / oneDNN), triton (CUDA only) or auto "
                             "(per layer, the faster of the two, timed before training; CUDA only)")
    parser.add_argument("--side-by-side", type=int, default=1, metavar="S",
                        help="each K case as S stacks of K / S runs trained side by side (iwshift.train."
                             "train_side_by_side: on CUDA each stack's captured step on a stream of its own)")
    parser.add_argument("--update", choices=UPDATES, default="foreach",
                        help="the SGD update: foreach (the default) or triton (unmeasured on a GPU: opt-in)")
    parser.add_argument("--weight-copies", choices=("default", "on", "off"), default="default",
                        help="bf16 weight copies kept by the update (default: the trainer's: on CPU, off on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if (args.warmup < 0 or (args.steps is not None and args.steps < 1) or args.per_class < 1
            or (args.threads is not None and args.threads < 1)):
        parser.error("--warmup must be >= 0; --steps, --per-class and --threads >= 1")
    if args.ks is not None and (any(k < 1 for k in args.ks) or len(set(args.ks)) != len(args.ks)):
        parser.error("--ks needs distinct values >= 1")
    if args.side_by_side < 1:
        parser.error("--side-by-side needs a value >= 1")
    if args.convolutions != "torch" and resolve_device(args.device).type != "cuda":
        parser.error(f"--convolutions {args.convolutions} runs on CUDA only")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    width = args.width if args.width is not None else (1.0 if cuda else 0.25)
    steps = args.steps if args.steps is not None else (200 if cuda else 30)
    ks = args.ks if args.ks is not None else ([1, 7, 28, 42, 84] if cuda else [1, 8, 28])
    graphs = [args.graph] + [g for g in dict.fromkeys(args.graphs) if g != args.graph]
    main_precision = resolve_precision(args.precision, device)
    precisions = [main_precision] + [p for p in dict.fromkeys(args.precisions) if p != main_precision]

    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} torch threads"
    print(f"device: {device} ({name}); torch {torch.__version__}")
    pair = load_pair(args.data_dir, args.per_class)
    channels, hidden = cnn_widths(width)
    print(f"data: {pair.source}")
    print(f"CNN width {width:g} (channels {channels}, FC {hidden}); batch {BATCH_SIZE}; {args.warmup} warm-up + "
          f"{steps} timed steps per case; trainer precision {main_precision}"
          f"{' (also ' + ', '.join(precisions[1:]) + ')' if len(precisions) > 1 else ''}"
          f"{'; torch.compile' if args.compile else ''}{'; batch norm' if args.batch_norm else ''}"
          f"{'; convolutions ' + args.convolutions if args.convolutions != 'torch' else ''}; "
          f"graph {args.graph}{' (also ' + ', '.join(graphs[1:]) + ')' if len(graphs) > 1 else ''}"
          f"{f'; each K as {args.side_by_side} stacks side by side' if args.side_by_side > 1 else ''}")

    plain = time_plain(pair, width, device, args.warmup, steps)
    print(f"plain   (PIL + ToTensor + Normalize, DataLoader, 1 model, fp32): {plain.per_model:9.1f} img/s per model "
          f"({plain.seconds:.2f} s for {steps} steps, {1e3 * plain.seconds / steps:.3f} ms per step)", flush=True)

    results: dict[tuple[int, str, str], Timing] = {}
    for precision in precisions:
        for graph in graphs:
            for k in ks:
                timing = time_trainer(pair, k, width, device, precision, args.compile, args.batch_norm,
                                      args.warmup, steps, graph, args.convolutions, min(args.side_by_side, k),
                                      args.update, {"default": None, "on": True, "off": False}[args.weight_copies])
                results[k, precision, graph] = timing
                print(f"K = {k:<3d} (Trainer, {precision}, graph {graph}, {timing.how}): "
                      f"{timing.per_model:9.1f} img/s per model = "
                      f"{timing.per_model / plain.per_model:6.2f} x plain  ({timing.per_run:.1f} img/s per run; "
                      f"{1e3 * timing.seconds / steps:.3f} ms per step; {timing.seconds:.2f} s for {steps} steps)",
                      flush=True)
                if cuda:
                    torch.cuda.empty_cache()

    (best_k, best_p, best_g), best = max(results.items(), key=lambda item: item[1].per_model)
    best_ratio = best.per_model / plain.per_model
    print(f"best: K = {best_k} at {best_p}, graph {best_g}, {best_ratio:.2f} x the plain loop")
    if args.data_dir is None or pair.source.startswith("RANDOM"):
        print("note: random images (no CIFAR-10 loaded); throughput does not depend on pixel values")
    fields = [f"device={device.type}", f"plain_img_s={plain.per_model:.1f}"]
    fields += [f"k{k}_img_s={results[k, main_precision, args.graph].per_model:.1f}" for k in ks]
    fields += [f"k{k}_step_ms={1e3 * results[k, main_precision, args.graph].seconds / steps:.3f}" for k in ks]
    fields.append(f"best_ratio={best_ratio:.2f}")
    print(" ".join(fields))


if __name__ == "__main__":
    main()
