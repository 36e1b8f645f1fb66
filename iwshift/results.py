"""Results I/O: atomic writes, manifests and tidy tables.

Every file is written to a temporary name in its destination folder and renamed into place, so an
interrupted run never leaves a half-written result behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def atomic_write(path: str | os.PathLike, write: Callable[[io.IOBase], None], binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """A tidy table as CSV; floats written with full precision so that it reloads identically."""
    return atomic_write(path, lambda f: table.to_csv(f, index=False, float_format="%.17g"))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Inverse of :func:`write_table`. Text stays text (pandas would read a weight source called
    ``true`` as a boolean); columns whose every value is a number become numeric, and columns written
    from booleans (every value ``True`` or ``False``, e.g. the run-health flags) become booleans."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    for column in table.columns:
        try:
            table[column] = pd.to_numeric(table[column])
        except (ValueError, TypeError):
            if len(table) and table[column].isin(["True", "False"]).all():
                table[column] = table[column] == "True"
    return table


class BadResultFile(ValueError):
    """A results file that does not parse or validate; ``str(err)`` is one line naming the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        super().__init__(f"{path}: {reason}")


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (a run's config.json records its metrics.csv's, to tell a complete file
    from a truncated or edited one)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_json(path: str | os.PathLike) -> Any:
    """:func:`read_json`, with any failure to read or parse as one-line :class:`BadResultFile`."""
    try:
        return read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BadResultFile(path, f"not a JSON file ({type(err).__name__}: {_first_line(err)})") from None


def load_table(path: str | os.PathLike, required: Sequence[str] = (),
               text: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`read_table` that validates: the file parses as CSV, has rows and every ``required`` column,
    and (given ``text``) every column but the ``text`` ones is numeric or boolean. Failures are one-line
    :class:`BadResultFile`."""
    try:
        table = read_table(path)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:  # EmptyDataError: a ValueError
        raise BadResultFile(path, f"not a CSV table ({type(err).__name__}: {_first_line(err)})") from None
    if table.empty:
        raise BadResultFile(path, "has no rows")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise BadResultFile(path, f"lacks the column(s) {', '.join(missing)}")
    for column in table.columns if text is not None else ():
        if column in text or pd.api.types.is_numeric_dtype(table[column]):
            continue
        if not set(table[column].dropna().unique()) <= {"True", "False"}:
            bad = table[column][pd.to_numeric(table[column], errors="coerce").isna() & table[column].notna()]
            raise BadResultFile(path, f"column {column} holds text where numbers belong ({bad.iloc[0]!r})")
    return table


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0][:120] if text else "").rstrip(".")


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def git_revision(folder: str | os.PathLike | None = None) -> str:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes), or ``"unknown"``."""
    folder = folder or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: str = "cpu") -> dict[str, Any]:
    """Versions, device and git revision, for every manifest."""
    import torch

    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "numpy": np.__version__, "pandas": pd.__version__}
    for name in ("numba", "sklearn", "torchvision"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    info = {"versions": versions, "device": device, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "git_revision": git_revision(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
    return info
