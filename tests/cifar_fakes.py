"""Tiny made-up CIFAR-10 stand-ins for the tests: every image's pixels encode its class."""

from pathlib import Path

import numpy as np

from iwshift.cifar_data import CIFAR10_CLASSES, Cifar10, ImageSet


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
