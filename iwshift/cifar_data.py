"""CIFAR-10 as uint8 arrays, decoded once and cached.

Two sources, tried in this order:

* an image folder: ``data_dir/train/<class>/*.png|*.jpg|*.jpeg`` and ``data_dir/test/<class>/*``,
  where every ``<class>`` is a CIFAR-10 class name (a subset is fine). This is the way to run
  without internet access, from any copy of the data.
* torchvision's official CIFAR-10 in ``data_dir`` (downloaded there when ``download=True``).

Decoding 60,000 image files takes a while, so the arrays are written once to an ``.npz`` in a cache
folder and later calls read that instead (seconds, not minutes). The cache file name holds a hash
of the source folder and, for an image folder, of its file listing (names, sizes, mtimes), so a
changed folder is decoded again rather than served stale.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .config import CIFAR10_CLASSES
from .results import atomic_write

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
IMAGE_SHAPE: tuple[int, int, int] = (32, 32, 3)
SPLITS: tuple[str, ...] = ("train", "test")
TORCHVISION_FOLDER = "cifar-10-batches-py"  # what torchvision.datasets.CIFAR10 keeps under its root
CACHE_FOLDER = ".iwshift-cache"
_CACHE_FORMAT = "1"  # bump when the cache layout changes, so old files are not misread

_HOW_TO_GET_DATA = (
    "connect to the internet so torchvision can download it there, or pass --data-dir pointing to "
    "a folder in ImageFolder layout (train/<class>/*.png, test/<class>/*.png)"
)


class DataUnavailableError(RuntimeError):
    """The data cannot be found, downloaded or decoded. ``str(err)`` is always one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


@dataclass(frozen=True)
class ImageSet:
    """One split: ``images`` uint8 (N, 32, 32, 3) HWC, ``labels`` int64 (N,) indexing
    :data:`CIFAR10_CLASSES`, and ``files`` (source paths relative to the data folder, same order)
    for an image folder, ``None`` for torchvision."""

    images: np.ndarray
    labels: np.ndarray
    files: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"images must be uint8 (N, 32, 32, 3), got {self.images.dtype} "
                             f"{self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{len(self.images)} images but labels of shape {self.labels.shape}")
        if self.files is not None and len(self.files) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.files)} file names")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Cifar10:
    """Both splits and a human-readable ``source`` (for manifests and logs)."""

    train: ImageSet
    test: ImageSet
    source: str


# ------------------------------------------------------------------------------------------- public


def require_training_images(data: Cifar10, counts: dict[str, int], flag: str) -> None:
    """Refuse, as a one-line error on ``--flag``, a study that needs more training images of a class than
    the data has (``counts``: class name -> images wanted), before anything is drawn or trained."""
    from .checks import ConfigError

    for name, count in counts.items():
        have = int(np.sum(data.train.labels == CIFAR10_CLASSES.index(name)))
        if count > have:
            raise ConfigError(flag, f"needs {count} training images of {name}; the data has {have}")


def load_cifar10(
    data_dir: str | Path = "data",
    cache_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = False,
) -> Cifar10:
    """CIFAR-10 from an image folder in ``data_dir`` if it has ``train/`` and ``test/``, else from
    torchvision (downloading into ``data_dir`` when ``download``); cached as ``.npz`` in
    ``cache_dir`` (default ``data_dir/.iwshift-cache`` if writable, else ``~/.cache/iwshift``).

    Raises :class:`DataUnavailableError` (one line) when neither source gives the data.
    """
    data_dir = Path(data_dir)
    has = {split: (data_dir / split).is_dir() for split in SPLITS}
    if all(has.values()):
        return _load_image_folder(data_dir, cache_dir, progress)
    if any(has.values()) and not (data_dir / TORCHVISION_FOLDER).is_dir():
        present, missing = ("train", "test") if has["train"] else ("test", "train")
        raise DataUnavailableError(
            f"image folder '{data_dir}' has {present}/ but no {missing}/: an ImageFolder layout "
            f"needs both train/<class>/*.png and test/<class>/*.png")
    return _load_torchvision(data_dir, cache_dir, download)


def load_for_script(prog: str, data_dir: str | Path, download: bool, progress: bool) -> Cifar10 | None:
    """:func:`load_cifar10` for a script: on failure, print the one-line reason and return ``None``."""
    try:
        return load_cifar10(data_dir, download=download, progress=progress)
    except DataUnavailableError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return None


# ------------------------------------------------------------------------------------ image folder


def _load_image_folder(data_dir: Path, cache_dir: str | Path | None, progress: bool) -> Cifar10:
    """Decode (or read from the cache) an ImageFolder tree of CIFAR-10 class folders."""
    root = data_dir.resolve()
    source = f"image folder '{root.name}'"  # kind and folder name only: no absolute path in any result
    listing = {split: _list_split(root, split) for split in SPLITS}
    fingerprint = hashlib.sha256()
    for split in SPLITS:
        for rel, _label, size, mtime in listing[split]:
            fingerprint.update(f"{rel}\t{size}\t{mtime}\n".encode("utf-8", "surrogateescape"))
    cache = _cache_path(cache_dir, data_dir, "folder", root, fingerprint.hexdigest())
    cached = _read_cache(cache)
    if cached is not None:
        return Cifar10(cached["train"], cached["test"], source)
    sets = {split: _decode_split(root, split, listing[split], progress) for split in SPLITS}
    _write_cache(cache, sets)
    return Cifar10(sets["train"], sets["test"], source)


def _list_split(root: Path, split: str) -> list[tuple[str, int, int, int]]:
    """(relative path, label, size, mtime_ns) per image of one split, in a deterministic order:
    classes in :data:`CIFAR10_CLASSES` order, file names sorted within a class. Uses
    ``os.scandir`` so that 60,000 files are listed in a fraction of a second."""
    split_dir = root / split
    classes: list[str] = []
    with os.scandir(split_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue  # hidden entries and stray files beside the class folders
            if entry.name not in CIFAR10_CLASSES:
                raise DataUnavailableError(
                    f"unknown class folder '{entry.path}': class folders must be CIFAR-10 class "
                    f"names ({', '.join(CIFAR10_CLASSES)})")
            classes.append(entry.name)
    classes.sort(key=CIFAR10_CLASSES.index)
    rows: list[tuple[str, int, int, int]] = []
    for name in classes:
        label = CIFAR10_CLASSES.index(name)
        files: list[tuple[str, int, int]] = []
        with os.scandir(split_dir / name) as entries:
            for entry in entries:
                if (entry.name.startswith(".") or not entry.name.lower().endswith(IMAGE_SUFFIXES)
                        or not entry.is_file()):
                    continue
                stat = entry.stat()
                files.append((entry.name, stat.st_size, stat.st_mtime_ns))
        files.sort()
        rows.extend((f"{split}/{name}/{file}", label, size, mtime) for file, size, mtime in files)
    if not rows:
        raise DataUnavailableError(
            f"no images in '{split_dir}': expected {split}/<class>/*.png|*.jpg|*.jpeg with CIFAR-10 "
            f"class names")
    return rows


def _decode_split(root: Path, split: str, rows: list[tuple[str, int, int, int]],
                  progress: bool) -> ImageSet:
    """Decode every listed image to RGB uint8; any unreadable or non-32x32 file is an error that
    names it, since silently skipping it would change the data set."""
    from tqdm import tqdm

    images = np.empty((len(rows), *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.fromiter((label for _rel, label, _size, _mtime in rows), dtype=np.int64,
                         count=len(rows))
    bar = tqdm(rows, desc=f"decoding CIFAR-10 {split}", unit="img", disable=not progress)
    for i, (rel, _label, _size, _mtime) in enumerate(bar):
        path = root / rel
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except Exception as err:  # PIL raises many types for a bad file; all mean "unreadable"
            raise DataUnavailableError(
                f"cannot read image '{path}': {type(err).__name__}: {err}") from err
        if rgb.size != IMAGE_SHAPE[:2]:
            raise DataUnavailableError(
                f"image '{path}' is {rgb.size[0]}x{rgb.size[1]}, but CIFAR-10 images are 32x32")
        images[i] = np.asarray(rgb, dtype=np.uint8)
    files = np.array([rel for rel, _label, _size, _mtime in rows], dtype=str)
    return ImageSet(images, labels, files)


# ------------------------------------------------------------------------------------- torchvision


def _load_torchvision(data_dir: Path, cache_dir: str | Path | None, download: bool) -> Cifar10:
    """The official CIFAR-10 through torchvision; cached too, which skips torchvision's checksums
    and unpickling on later calls."""
    root = data_dir.resolve()
    source = "torchvision CIFAR-10 (official)"  # no path of the machine that ran it in any result
    batches = root / TORCHVISION_FOLDER
    if batches.is_dir():
        cache = _cache_path(cache_dir, data_dir, "torchvision", root, _folder_fingerprint(batches))
        cached = _read_cache(cache)
        if cached is not None:
            return Cifar10(cached["train"], cached["test"], source)
    try:
        import torchvision

        sets = {}
        for split in SPLITS:
            dataset = torchvision.datasets.CIFAR10(root=str(data_dir), train=split == "train",
                                                   download=download)
            sets[split] = ImageSet(np.ascontiguousarray(dataset.data, dtype=np.uint8),
                                   np.asarray(dataset.targets, dtype=np.int64))
    except Exception as err:  # missing files, no network, bad archive: all mean "no data here"
        reason = _short_reason(err)
        how = ("the download failed" if download
               else "downloading is off (download=False)")
        raise DataUnavailableError(
            f"no CIFAR-10 found in '{data_dir}' and {how} ({reason}): {_HOW_TO_GET_DATA}") from err
    cache = _cache_path(cache_dir, data_dir, "torchvision", root, _folder_fingerprint(batches))
    _write_cache(cache, sets)
    return Cifar10(sets["train"], sets["test"], source)


def _folder_fingerprint(folder: Path) -> str:
    """Hash of the names, sizes and mtimes of the files in ``folder`` (cheap: no file reads)."""
    digest = hashlib.sha256()
    if folder.is_dir():
        with os.scandir(folder) as entries:
            rows = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                          for e in entries if e.is_file())
        for name, size, mtime in rows:
            digest.update(f"{name}\t{size}\t{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _short_reason(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------- cache


def _cache_path(cache_dir: str | Path | None, data_dir: Path, kind: str, root: Path,
                fingerprint: str) -> Path:
    """``<cache>/cifar10-<kind>-<hash of the source path>-<hash of its contents>.npz``."""
    folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir(data_dir)
    path_hash = hashlib.sha256(f"{kind}\n{root}".encode("utf-8", "surrogateescape")).hexdigest()
    content_hash = hashlib.sha256(f"{_CACHE_FORMAT}\n{fingerprint}".encode()).hexdigest()
    return folder / f"cifar10-{kind}-{path_hash[:12]}-{content_hash[:12]}.npz"


def _default_cache_dir(data_dir: Path) -> Path:
    """``data_dir/.iwshift-cache`` beside the data when it can be written, else the user cache."""
    folder = data_dir / CACHE_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
        return folder
    except OSError:
        return Path.home() / ".cache" / "iwshift"


def _read_cache(path: Path) -> dict[str, ImageSet] | None:
    """The cached splits, or ``None`` when there is no usable cache file (then decode again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        return {split: ImageSet(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                                arrays.get(f"{split}_files"))
                for split in SPLITS}
    except Exception as err:  # truncated or foreign file: not fatal, the source is still there
        warnings.warn(f"ignoring unreadable CIFAR-10 cache {path} ({_short_reason(err)})",
                      stacklevel=3)
        return None


def _write_cache(path: Path, sets: dict[str, ImageSet]) -> None:
    """Write the arrays atomically (uncompressed: loading is then a plain read), and remove older
    cache files of the same source. A failure only warns: the data itself was loaded."""
    arrays: dict[str, np.ndarray] = {}
    for split, image_set in sets.items():
        arrays[f"{split}_images"] = image_set.images
        arrays[f"{split}_labels"] = image_set.labels
        if image_set.files is not None:
            arrays[f"{split}_files"] = image_set.files
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)
        prefix = path.name.rsplit("-", 1)[0] + "-"
        for old in path.parent.glob(f"{prefix}*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as err:
        warnings.warn(f"could not write the CIFAR-10 cache {path} ({_short_reason(err)}); "
                      f"the next call will decode again", stacklevel=3)
