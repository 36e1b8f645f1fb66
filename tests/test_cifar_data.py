"""CIFAR-10 loading from a tiny ImageFolder tree: decoding, labels, cache and one-line errors.

Never downloads and never needs the real data set: every tree is made here with PIL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from iwshift.cifar_data import (
    CIFAR10_CLASSES,
    Cifar10,
    DataUnavailableError,
    ImageSet,
    load_cifar10,
)

# one solid colour per class, so a label can be checked against the pixels it came with
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "ship": (30, 30, 200)}


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(pixels, "RGB").save(path)


def _solid(colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (32, 32, 3)).copy()


def _make_tree(root: Path, train: dict[str, int], test: dict[str, int], ext: str = "png") -> Path:
    for split, counts in (("train", train), ("test", test)):
        for name, count in counts.items():
            for i in range(count):
                _save(root / split / name / f"{i:04d}.{ext}", _solid(COLOURS[name]))
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    # dog before cat on disk order doesn't matter: classes follow CIFAR10_CLASSES order
    return _make_tree(tmp_path / "cifar", {"dog": 2, "cat": 3}, {"cat": 1, "dog": 1})


def test_shapes_dtypes_and_source(tree: Path, tmp_path: Path):
    data = load_cifar10(tree, cache_dir=tmp_path / "cache")
    assert isinstance(data, Cifar10)
    assert isinstance(data.train, ImageSet)
    assert data.train.images.shape == (5, 32, 32, 3) and data.train.images.dtype == np.uint8
    assert data.train.labels.shape == (5,) and data.train.labels.dtype == np.int64
    assert data.test.images.shape == (2, 32, 32, 3) and data.test.labels.dtype == np.int64
    assert data.source == f"image folder '{tree.resolve().name}'"  # provenance names no absolute path
    assert str(tree.resolve().parent) not in data.source
    cat, dog = CIFAR10_CLASSES.index("cat"), CIFAR10_CLASSES.index("dog")
    # deterministic order: classes in CIFAR-10 order, files by name within a class
    assert data.train.labels.tolist() == [cat, cat, cat, dog, dog]
    assert data.train.files.tolist() == [
        "train/cat/0000.png", "train/cat/0001.png", "train/cat/0002.png",
        "train/dog/0000.png", "train/dog/0001.png"]
    assert data.test.labels.tolist() == [cat, dog]


def test_each_image_keeps_its_own_label(tmp_path: Path):
    root = _make_tree(tmp_path / "c", {"cat": 2, "dog": 2, "ship": 2}, {"ship": 1, "cat": 1},
                      ext="jpg")
    data = load_cifar10(root, cache_dir=tmp_path / "cache")
    for image_set in (data.train, data.test):
        for image, label in zip(image_set.images, image_set.labels):
            expected = np.array(COLOURS[CIFAR10_CLASSES[label]], dtype=float)
            # JPEG is lossy, but a solid colour survives within a few levels
            assert np.abs(image.reshape(-1, 3).mean(axis=0) - expected).max() < 8


def test_png_pixels_round_trip_exactly(tmp_path: Path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    root = tmp_path / "c"
    for i, p in enumerate(pixels):
        _save(root / "train" / "bird" / f"{i}.png", p)
    _save(root / "test" / "bird" / "0.png", pixels[0])
    data = load_cifar10(root, cache_dir=tmp_path / "cache")
    assert np.array_equal(data.train.images, pixels)
    assert np.array_equal(data.test.images[0], pixels[0])
    assert (data.train.labels == CIFAR10_CLASSES.index("bird")).all()


def test_second_call_is_served_from_the_cache(tree: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_cifar10(tree, cache_dir=cache)
    assert len(list(cache.glob("cifar10-folder-*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    second = load_cifar10(tree, cache_dir=cache)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert np.array_equal(a.images, b.images)
        assert np.array_equal(a.labels, b.labels)
        assert a.files.tolist() == b.files.tolist()
    assert second.source == first.source


def test_default_cache_lives_in_the_data_folder(tree: Path):
    load_cifar10(tree)
    assert len(list((tree / ".iwshift-cache").glob("*.npz"))) == 1
    assert load_cifar10(tree).train.images.shape == (5, 32, 32, 3)  # cache folder is not a class


def test_changed_listing_invalidates_the_cache(tree: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    assert len(load_cifar10(tree, cache_dir=cache).train) == 5
    _save(tree / "train" / "cat" / "0009.png", _solid(COLOURS["cat"]))
    assert len(load_cifar10(tree, cache_dir=cache).train) == 6
    assert len(list(cache.glob("*.npz"))) == 1  # the stale file is replaced, not kept


def test_corrupt_image_names_the_file(tree: Path, tmp_path: Path):
    (tree / "train" / "cat" / "x.png").write_bytes(b"\x00garbage\nnot a png\xff" * 10)
    with pytest.raises(DataUnavailableError) as info:
        load_cifar10(tree, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "x.png" in message and "\n" not in message


def test_wrong_size_image_names_the_file(tree: Path, tmp_path: Path):
    _save(tree / "test" / "dog" / "big.png", np.zeros((28, 40, 3), dtype=np.uint8))
    with pytest.raises(DataUnavailableError, match=r"big\.png.*32x32"):
        load_cifar10(tree, cache_dir=tmp_path / "cache")


def test_unknown_class_folder_is_a_one_line_error(tree: Path, tmp_path: Path):
    _save(tree / "train" / "unicorn" / "0.png", _solid((1, 2, 3)))
    with pytest.raises(DataUnavailableError) as info:
        load_cifar10(tree, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "unicorn" in message and "\n" not in message


def test_half_an_image_folder_is_an_error(tmp_path: Path):
    _save(tmp_path / "c" / "train" / "cat" / "0.png", _solid(COLOURS["cat"]))
    with pytest.raises(DataUnavailableError, match="no test/"):
        load_cifar10(tmp_path / "c", cache_dir=tmp_path / "cache", download=False)


def test_missing_data_without_download_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(DataUnavailableError) as info:
        load_cifar10(tmp_path / "nothing", cache_dir=tmp_path / "cache", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "--data-dir" in message and "download" in message
    assert str(tmp_path / "nothing") in message
