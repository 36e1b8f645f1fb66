"""Results I/O: atomic writes, tidy tables, and the one results format every study writes and everything reads.

**One run, one folder**: ``<out>/<run>/metrics.csv`` (tidy: one row per evaluated epoch) and ``config.json`` (its
record: the run's row, the study, the configuration, the data source, how it was trained, package versions,
device, git revision, and the digest of its metrics file), plus any arrays the study keeps beside them
(``*.npz``). ``config.json`` is written last, atomically: a run is complete when both files exist and validate
(:func:`load_run`), so an interrupted sweep resumes where it stopped. :func:`load_runs` reads every run under a
folder, at any depth, into one table: the report, the notebooks and the Wang comparison read results through it.

Every file is written to a temporary name in its destination folder and renamed into place, so an interrupted
run never leaves a half-written result behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's files are private (0600)


def atomic_write(path: str | os.PathLike, write: Callable[[io.IOBase], None], binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path`` (with the
    permissions a plain ``open`` would give it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)
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


def table_text(table: pd.DataFrame) -> str:
    """A tidy table as CSV text; floats written with full precision so that it reloads identically."""
    return table.to_csv(index=False, float_format="%.17g")


def run_texts(table: pd.DataFrame) -> dict[Any, bytes]:
    """Each run's :func:`table_text` (its rows of ``table``, in their order), as bytes, keyed by the ``run`` column:
    one CSV conversion of the whole table, cut at the line ends, where pandas' set-up per call dominated small runs
    (250 2-D runs of 13 rows each: 0.26-0.42 s -> 0.08 s, measured in the study). Text with a line break in a field is
    converted run by run."""
    codes, names = pd.factorize(table["run"], sort=False)
    text = table_text(table.iloc[np.argsort(codes, kind="stable")])
    lines = text.split(os.linesep)
    if len(lines) != len(table) + 2:  # a quoted field spans lines: cutting at line ends would split it
        return {name: table_text(part).encode() for name, part in table.groupby("run", sort=False)}
    header, body = lines[0], lines[1:-1]
    counts = np.bincount(codes, minlength=len(names))
    starts = np.cumsum(counts) - counts
    return {name: os.linesep.join([header, *body[start:start + count], ""]).encode()
            for name, start, count in zip(names, starts, counts)}


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """:func:`table_text` written to ``path``."""
    text = table_text(table)
    return atomic_write(path, lambda f: f.write(text))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Inverse of :func:`write_table` (:func:`parse_table` of the file's bytes)."""
    return parse_table(Path(path).read_bytes())


def parse_table(data: bytes) -> pd.DataFrame:
    """A table from CSV bytes. Numbers are read as numbers; a column pandas would read as booleans is booleans
    only if it was written from booleans (every value ``True`` or ``False``, e.g. the run-health flags): text
    stays text (a weight source called ``true`` is not a boolean)."""
    table = pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""])
    flags = list(table.columns[(table.dtypes == bool).to_numpy()])
    # pandas also reads true/TRUE/false/FALSE as booleans: only a file holding such a field needs its text again
    # (reading every file twice: loading the committed results took 16.6 s against 12.3 s, measured)
    if flags and _OTHER_BOOLEAN_SPELLING.search(data):
        text = pd.read_csv(io.BytesIO(data), usecols=flags, dtype=str, keep_default_na=False, na_values=[""])
        for column in flags:
            if not text[column].isin(["True", "False"]).all():
                table[column] = text[column]
    return table


_OTHER_BOOLEAN_SPELLING = re.compile(rb'(?:^|,)"?(?:true|TRUE|false|FALSE)"?(?=,|\r?$)', re.MULTILINE)


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
    numeric = {c for c, dtype in table.dtypes.items() if pd.api.types.is_numeric_dtype(dtype)}
    for column in table.columns if text is not None else ():
        if column in text or column in numeric:
            continue
        if not set(table[column].dropna().unique()) <= {"True", "False"}:
            bad = table[column][pd.to_numeric(table[column], errors="coerce").isna() & table[column].notna()]
            raise BadResultFile(path, f"column {column} holds text where numbers belong ({bad.iloc[0]!r})")
    return table


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0][:120] if text else "").rstrip(".")


# --------------------------------------------------------------------------- one run, one folder

CHECKPOINTS = ".checkpoints"  # <out>/.checkpoints/<stack>.pt: not a run


def write_run(folder: str | os.PathLike, metrics: pd.DataFrame | bytes, record: dict[str, Any],
              arrays: dict[str, dict[str, np.ndarray]] | None = None) -> bytes:
    """Write one run: its arrays (file name -> arrays), its ``metrics.csv`` (a table, or its :func:`table_text`
    as bytes), then its ``config.json`` (``record`` with the metrics file's digest), each atomically; the old
    ``config.json`` goes first, so that the run reads as incomplete until every new file is in place. Returns the
    bytes of ``metrics.csv`` (:func:`parse_table` of them is the table :func:`load_run` reads)."""
    folder = Path(folder)
    (folder / "config.json").unlink(missing_ok=True)
    for name, content in (arrays or {}).items():
        write_arrays(folder / name, content)
    data = metrics if isinstance(metrics, bytes) else table_text(metrics).encode()
    atomic_write(folder / "metrics.csv", lambda f: f.write(data), binary=True)
    write_json(folder / "config.json", {**record, "metrics_sha256": hashlib.sha256(data).hexdigest()})
    return data


def load_run(out: str | os.PathLike, run: str) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """A run's (metrics table, record) when both files exist; None when either is missing; :class:`BadResultFile`
    (one line) when they do not parse or validate: JSON with this run's record, the metrics file the record's
    digest names, the run's columns, numbers where numbers belong, its own rows, epochs increasing from 1."""
    folder = Path(out) / run
    config_path, metrics_path = folder / "config.json", folder / "metrics.csv"
    if not (config_path.is_file() and metrics_path.is_file()):
        return None
    record = load_json(config_path)
    if not (isinstance(record, dict) and isinstance(record.get("run"), dict) and record["run"].get("run") == run
            and isinstance(record.get("config"), dict)):
        raise BadResultFile(config_path, "is not this run's record (its run and config fields are missing or wrong)")
    if record.get("metrics_sha256") != file_digest(metrics_path):
        raise BadResultFile(metrics_path, "is not the file its config.json recorded (truncated or changed)")
    row = record["run"]
    text = [k for k, value in row.items() if isinstance(value, str)] + ["status"]
    table = load_table(metrics_path, required=[*row, "epoch"], text=text)
    if not (table["run"].astype(str) == run).all():
        raise BadResultFile(metrics_path, "holds rows of another run")
    epoch = table["epoch"]
    if not (pd.api.types.is_integer_dtype(epoch) and epoch.is_monotonic_increasing and epoch.is_unique
            and epoch.min() >= 1):
        raise BadResultFile(metrics_path, "its epochs are not whole numbers increasing from 1")
    return table, record


def is_complete(out: str | os.PathLike, run: str) -> bool:
    """The run has results that parse and validate (:func:`load_run`)."""
    try:
        return load_run(out, run) is not None
    except BadResultFile:
        return False


def run_folders(out: str | os.PathLike) -> list[str]:
    """The names of the folders directly under ``out`` that may hold a run."""
    out = Path(out)
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) if out.is_dir() else []


def merge(out: str | os.PathLike, names: Sequence[str] | None = None, strict: bool = False,
          written: Mapping[str, bytes] | None = None) -> pd.DataFrame:
    """One tidy table of the complete runs in ``out`` (all of them, or those named). A run whose files do
    not validate is left out, or with ``strict`` raises :class:`BadResultFile`. ``written``: runs this process
    has just written (the bytes :func:`write_run` returned), parsed instead of read and validated again."""
    tables = []
    for name in run_folders(out) if names is None else names:
        if written is not None and name in written:
            tables.append(parse_table(written[name]))
            continue
        try:
            loaded = load_run(out, name)
        except BadResultFile:
            if strict:
                raise
            continue
        if loaded is not None:
            tables.append(loaded[0])
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def load_runs(root: str | os.PathLike) -> tuple[pd.DataFrame, dict[tuple[str, str], dict[str, Any]]]:
    """Every complete run under ``root``, at any depth, as one table -- each run's metrics rows with a ``source``
    column, its folder's parent relative to ``root`` (``cifar_binary``, ``cifar_binary_strength/l2_0.01``) --
    and each run's record by (source, run). A run folder whose files do not validate is a
    :class:`BadResultFile`; a folder without ``config.json`` is not a run."""
    root = Path(root)
    tables, records = [], {}
    for config in sorted(root.rglob("config.json")):
        folder = config.parent
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        loaded = load_run(folder.parent, folder.name)
        if loaded is None:
            continue
        table, record = loaded
        source = folder.parent.relative_to(root).as_posix()
        tables.append(table.assign(source=source))
        records[(source, folder.name)] = record
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), records


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
    from importlib import metadata

    import torch

    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "numpy": np.__version__, "pandas": pd.__version__}
    # the installed versions, read without importing (importing torchvision for its version kept the 2-D study,
    # which never uses it, at 9.3 s for 10 epochs; 6.7 s without it and with the runner's record taken once, measured)
    for name, distribution in (("numba", "numba"), ("sklearn", "scikit-learn"), ("torchvision", "torchvision")):
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            pass
    info = {"versions": versions, "device": device, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "git_revision": git_revision(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m iwshift.results merge DIR [DIR ...]``: each folder's complete runs, whatever grids made them,
    as one ``DIR/merged.csv`` (DomainBed's collect_results); a folder without complete runs is a one-line error."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m iwshift.results", description=main.__doc__.split(":")[0])
    parser.add_argument("command", choices=["merge"])
    parser.add_argument("folders", nargs="+", metavar="DIR")
    args = parser.parse_args(argv)
    for folder in args.folders:
        table = merge(folder)
        if table.empty:
            print(f"python -m iwshift.results: error: no complete runs in {folder}/", file=sys.stderr)
            return 1
        write_table(Path(folder) / "merged.csv", table)
        print(f"{Path(folder) / 'merged.csv'}: {table['run'].nunique()} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
