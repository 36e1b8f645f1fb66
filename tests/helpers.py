"""The tests' shared helpers: tiny made-up CIFAR-10 stand-ins (every image's pixels encode its class), tiny study
configurations, and the repository's scripts loaded as modules."""

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

from iwshift.cifar_data import CIFAR10_CLASSES, Cifar10, ImageSet
from iwshift.config import BinaryConfig, ExtensionConfig, SyntheticConfig

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """One of the repository's scripts as a module (its ``main`` callable in-process)."""
    spec = importlib.util.spec_from_file_location(name.replace(".py", "_script"), ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_binary(**kw) -> BinaryConfig:
    """A CIFAR binary grid that trains in seconds (fp32: equal across stack compositions)."""
    base = dict(per_class=24, width=0.0625, epochs=2, seeds=[0], other_eval=20, noise_eval=10, probe_per_class=4,
                weights=[1 / 4, 1.0, 4.0], ratios=[1 / 4, 1.0, 2.0], regimes=["none", "dropout"], precision="fp32")
    return BinaryConfig(**{**base, **kw})


def tiny_extension(**kw) -> ExtensionConfig:
    base = dict(width=0.0625, epochs=2, seeds=[0], regimes=["none", "l2"], probe_per_class=4,
                source_counts=(4, 30, 6, 24), per_class=30, imbalance=5.0, feature_dims=4, kernel_dims=2,
                precision="fp32")
    return ExtensionConfig(**{**base, **kw})


def tiny_synthetic(**kw) -> SyntheticConfig:
    base = dict(datasets=["separable", "moons_minority1"], models=["lr", "mlp"], regimes=["none"], weightings=["up"],
                seeds=[0, 1], epochs=12, hidden=8, n_per_class=24, n_moons=64)
    return SyntheticConfig(**{**base, **kw})


def class_of(images: np.ndarray) -> np.ndarray:
    """The class an image was made for (pixel [0, 0, 0] holds 20 * class + 5)."""
    return (images[..., 0, 0, 0].astype(int) - 5) // 20


def fake_cifar(train_per_class: int = 40, test_per_class: int = 10, seed: int = 0) -> Cifar10:
    rng = np.random.default_rng(seed)

    def split(n: int) -> ImageSet:
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        # a class-dependent brightness shift makes the classes learnable; the corner pixel names the class
        images = np.clip(images // 2 + (labels * 12)[:, None, None, None], 0, 255).astype(np.uint8)
        images[:, 0, 0, 0] = 20 * labels + 5
        order = rng.permutation(len(labels))
        return ImageSet(images[order], labels[order])

    return Cifar10(train=split(train_per_class), test=split(test_per_class), source="fake")


def write_image_folder(root: Path, data: Cifar10) -> Path:
    """``data`` as an ImageFolder tree ``root/<split>/<class>/NNNN.png`` (what the scripts read from disk)."""
    import PIL.Image

    for split, part in (("train", data.train), ("test", data.test)):
        for i, (image, label) in enumerate(zip(part.images, part.labels)):
            folder = root / split / CIFAR10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


def train(cfg, data, out, **options):
    """A tiny grid (a binary or extension configuration) trained through the one runner on the CPU; the merged
    table of its complete runs."""
    from iwshift import cifar_binary, cifar_extension

    study = cifar_binary.BinaryStudy(cfg, data) if isinstance(cfg, BinaryConfig) else \
        cifar_extension.ExtensionStudy(cfg, data)
    return train_study(study, out, **options)


def train_study(study, out, **options):
    """Any study trained through the one runner on the CPU (no progress unless asked); the merged table of its
    complete runs."""
    from iwshift import sweep

    options.setdefault("progress", False)
    runner = sweep.Runner(study, out, "cpu", **options)
    runner.run()
    return runner.table()


def train_synthetic(cfg, out, extreme: bool = False):
    """The 2-D study (or its extreme-weighting study) of ``cfg`` trained through the runner: (its runs, the merged
    table of their metrics)."""
    from iwshift import synthetic

    study = synthetic.ExtremeStudy(cfg) if extreme else synthetic.SyntheticStudy(cfg)
    return study.runs(), train_study(study, out)
