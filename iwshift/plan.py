"""A study as GPU jobs that each fit a time limit, projected from the newest committed GPU record.

A GPU is lent in short sessions (10 minutes a command), so the paper study runs as *chunks*: each a slice of the
usual command (``--settings``/``--regimes``/``--seeds``/``--weights``/...: the grid knobs the study names in
:attr:`iwshift.sweep.Study.chunk_by`), trained into the same output folder, where the runner skips what is
complete. :func:`chunks` splits the study's configuration along those knobs until each slice's projection is under
the limit, then joins slices again (first fit) while the joined one still fits (a larger stack trains more runs per
second). The union of the chunks is the whole grid, each run in exactly one chunk.

The projection (:func:`project`) uses only what a record measured: seconds per step of a stack of K runs (the
record's ``k<K>_step_ms``, interpolated linearly in K), seconds per run per evaluation and per stack to set up
(its regime lines). What no record measured is an assumption named here: ``STARTUP_S`` for a job's start (process,
data loading, checks: the record says "data loading aside") and ``PRECISION_FACTOR`` for a precision the record
did not time.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .checks import ConfigError, format_number

RECORDS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
STARTUP_S = 60.0                       # a job's start: process, data loading, checks (assumed: not in a record)
PRECISION_FACTOR = {"fp32": 2.0}       # a step in this precision against the record's bf16 (assumed, unmeasured)
LIMIT_MIN = 9.0                        # a chunk's projected time at most (a GPU command may run 10 minutes)


@dataclass(frozen=True)
class GpuRecord:
    """What a committed GPU record measured: seconds per step by stack size (at its batch size and precision),
    seconds per run per evaluation, and seconds to set up a stack."""

    path: str
    device: str
    date: str
    step_ms: dict[int, float]
    eval_s_per_run: float
    setup_s: float
    batch_size: int = 16
    precision: str = "bf16"

    def step_seconds(self, k: int) -> float:
        """Seconds per step of a stack of ``k`` runs: linear between the measured sizes, extended from the
        last two beyond them (at least the smallest measured step)."""
        sizes = sorted(self.step_ms)
        ms = [self.step_ms[s] for s in sizes]
        if k <= sizes[-1]:
            return float(np.interp(k, sizes, ms)) / 1e3
        slope = (ms[-1] - ms[-2]) / (sizes[-1] - sizes[-2]) if len(sizes) > 1 else ms[-1] / sizes[-1]
        return (ms[-1] + slope * (k - sizes[-1])) / 1e3


def read_record(path: str | Path) -> GpuRecord:
    """A record of ``benchmarks/results/`` (``benchmarks/bench_cifar.py`` and the regime lines of
    ``benchmarks/gpu_check.sh``): its ``key=value`` line and its per-stack lines."""
    text = Path(path).read_text()
    keys = dict(re.findall(r"(\w+)=(\S+)", next((line for line in text.splitlines()[::-1]
                                                 if "_step_ms=" in line), "")))
    step_ms = {int(m.group(1)): float(v) for k, v in keys.items() if (m := re.fullmatch(r"k(\d+)_step_ms", k))}
    stacks = re.findall(r"stack of\s+(\d+) runs.*?([\d.]+) ms/step\),\s+([\d.]+) s/evaluation,\s+([\d.]+) s set-up",
                        text)
    if not step_ms or not stacks:
        raise ConfigError("record", f"{path} has no k<K>_step_ms line or no 'stack of K runs' lines")
    for k, ms, _, _ in stacks:  # a regime's stack measured in place counts too
        step_ms.setdefault(int(k), float(ms))
    date = re.search(r"\d{4}-\d\d-\d\dT[\d:]+Z", text)
    device = re.search(r"one (NVIDIA [\w ]+?)[ (,]", text)
    precision = re.search(r"trainer precision (\w+)", text)
    return GpuRecord(path=str(path), device=device.group(1) if device else "GPU", date=date.group(0) if date else "",
                     step_ms=step_ms,
                     eval_s_per_run=float(np.median([float(e) / int(k) for k, _, e, _ in stacks])),
                     setup_s=float(np.median([float(s) for *_, s in stacks])),
                     precision=precision.group(1) if precision else "bf16")


def newest_record(folder: str | Path = RECORDS) -> GpuRecord:
    """The newest record (by the date in it) among the folder's records that time the trainer by stack size."""
    records = []
    for path in sorted(Path(folder).glob("*.txt")):
        try:
            records.append(read_record(path))
        except ConfigError:
            continue
    if not records:
        raise ConfigError("record", f"no GPU record with k<K>_step_ms in {folder}")
    return max(records, key=lambda r: r.date)


def project(study: Any, record: GpuRecord) -> float:
    """Projected seconds of one job training every run of ``study`` on the record's GPU: its start, then each
    stack's set-up, training (epochs x images / batch steps at the stack's size) and evaluations."""
    cfg = study.config
    runs = study.runs()
    used = getattr(cfg, "precision", "auto")  # auto: bf16 on CUDA
    factor = 1.0 if used in ("auto", record.precision) else PRECISION_FACTOR.get(used, 1.0)
    evals = len(study.eval_epochs())
    seconds = STARTUP_S
    for group in study.stacks(runs):
        k = len(group)
        images = max(study.train_size(run) for run in group.to_dict("records"))
        per_image = record.step_seconds(k) / record.batch_size  # a step's time scales with its images
        seconds += (record.setup_s + study.epochs * images * per_image * factor
                    + evals * k * record.eval_s_per_run)
    return seconds


@dataclass
class Chunk:
    """One GPU job: the slice of the study's grid knobs it trains (knob -> values, only where it differs from
    the whole study), its configuration, its runs and its projected seconds."""

    slice: dict[str, list[Any]]
    config: Any
    runs: list[str]
    seconds: float

    def flags(self) -> str:
        """The slice as the script's flags (a float as a short exact number: 1/16)."""
        show = lambda v: format_number(v) if isinstance(v, float) else str(v)  # noqa: E731
        return " ".join(f"--{name.replace('_', '-')} " + " ".join(show(v) for v in values)
                        for name, values in self.slice.items())


def chunks(make_study: Callable[[Any], Any], config: Any, by: Sequence[str], record: GpuRecord,
           limit_s: float = LIMIT_MIN * 60) -> list[Chunk]:
    """The study of ``config`` (``make_study(config)``) as chunks under ``limit_s`` each by the record: split
    along the knobs ``by`` in order (one value each) while a slice is over the limit, then slices that differ
    in one knob joined again (first fit) while they fit. A slice of one run over the limit is a one-line error."""

    def plan(cfg: Any, knobs: Sequence[str]) -> list[Any]:
        if project(make_study(cfg), record) <= limit_s:
            return [cfg]
        knobs = [k for k in knobs if len(getattr(cfg, k)) > 1] if knobs else []
        if not knobs:
            names = list(make_study(cfg).runs()["run"])
            raise ConfigError("plan_limit_min", f"{names[:3]} alone project to "
                                                f"{project(make_study(cfg), record) / 60:.1f} min, over the "
                                                f"{limit_s / 60:.1f} min limit")
        knob, rest = knobs[0], knobs[1:]
        pieces = [p for value in getattr(cfg, knob) for p in plan(replace(cfg, **{knob: [value]}), rest)]
        return join(pieces, knob)

    def join(pieces: list[Any], knob: str) -> list[Any]:
        """First fit: each piece joins the first earlier slice that differs from it only in ``knob`` and
        still fits with it (runs of equal training size then share a stack)."""
        joined: list[Any] = []
        for piece in pieces:
            for i, slice_ in enumerate(joined):
                if all(getattr(slice_, k) == getattr(piece, k) for k in by if k != knob):
                    both = replace(slice_, **{knob: [*getattr(slice_, knob), *getattr(piece, knob)]})
                    if project(make_study(both), record) <= limit_s:
                        joined[i] = both
                        break
            else:
                joined.append(piece)
        return joined

    whole = {k: list(getattr(config, k)) for k in by}
    out = []
    for cfg in plan(config, list(by)):
        study = make_study(cfg)
        out.append(Chunk({k: list(getattr(cfg, k)) for k in by if list(getattr(cfg, k)) != whole[k]}, cfg,
                         list(study.runs()["run"]), project(study, record)))
    return out


def done(chunk: Chunk, out: str | Path) -> bool:
    """Whether every run of the chunk is complete in ``out``."""
    from .results import is_complete

    return all(is_complete(out, name) for name in chunk.runs)


def describe(chunks_: Sequence[Chunk], record: GpuRecord, command: str, out: str | Path | None) -> list[str]:
    """The plan as lines: the record it rests on, then one job per chunk (``[done]`` where complete in ``out``)."""
    lines = [f"# {len(chunks_)} jobs, {sum(len(c.runs) for c in chunks_)} runs, each under the limit by "
             f"{Path(record.path).name} ({record.device}, {record.date}; {record.precision}, batch "
             f"{record.batch_size}; assumed: {STARTUP_S:.0f} s to start a job)",
             f"# projected in all: {sum(c.seconds for c in chunks_) / 60:.1f} min"]
    for number, chunk in enumerate(chunks_, 1):
        mark = "[done] " if out is not None and done(chunk, out) else ""
        lines.append(f"{mark}{command} {chunk.flags()}".rstrip()
                     + f"   # job {number}: {len(chunk.runs)} runs, {chunk.seconds / 60:.1f} min")
    return lines


def next_chunk(chunks_: Sequence[Chunk], out: str | Path) -> Chunk | None:
    """The first chunk not complete in ``out`` (None: the study is done)."""
    return next((c for c in chunks_ if not done(c, out)), None)



# ------------------------------------------------------------------------------------- a script's --plan

PLAN_MODES = ("off", "all", "next")
PLAN_CONSTANTS = ("PLAN", "PLAN_LIMIT_MIN", "PLAN_RECORD")


def command_line(prog: str, argv: Sequence[str], drop: Iterable[str], first: Sequence[str] = ()) -> str:
    """``python prog`` with ``first`` and then ``argv`` less the flags in ``drop`` (each with its values)."""
    drop = set(drop)
    kept: list[str] = []
    skipping = False
    for token in argv:
        if token.startswith("--"):
            skipping = token.split("=")[0] in drop
        if not skipping:
            kept.append(token)
    return " ".join(["python", prog, *first, *(shlex.quote(t) for t in kept)])


def print_plan(mode: str, prog: str, argv: Sequence[str], parts: Sequence[tuple[Any, dict[str, list[Any]]]],
               make_study: Callable[[Any], Any], out: str | Path, preset: str, limit_min: float,
               record_path: str = "") -> int:
    """A script's ``--plan all`` (every job, ``[done]`` where complete in ``out``) or ``--plan next`` (the next
    unfinished job's command alone; nothing when the study is complete). ``parts``: each configuration the
    script would train with the flags that select it (e.g. ``{"settings": ["weighting"]}``)."""
    record = read_record(record_path) if record_path else newest_record()
    found: list[Chunk] = []
    for cfg, fixed in parts:
        for chunk in chunks(make_study, cfg, make_study(cfg).chunk_by, record, limit_min * 60):
            chunk.slice = {**fixed, **chunk.slice}
            found.append(chunk)
    flags = {f"--{k.replace('_', '-')}" for c in found for k in c.slice}
    drop = flags | {"--preset", *(f"--{c.lower().replace('_', '-')}" for c in PLAN_CONSTANTS)}
    base = command_line(prog, argv, drop, first=("--preset", preset))
    if mode == "next":
        chunk = next_chunk(found, out)
        if chunk is None:
            print(f"{prog}: every job of the plan is complete in {out}/", file=sys.stderr)
        else:
            print(f"{base} {chunk.flags()}".rstrip())
        return 0
    print("\n".join(describe(found, record, base, out)))
    return 0
