"""The one runner: trains any study's runs, stack by stack, checkpointing, resuming and writing each run's results.

A study is a declaration (:class:`Study`): what its runs are (one row each), which of them may share a stack, and,
for a stack, the trainer and what each evaluated epoch measures (:class:`StackPlan`). :class:`Runner` does the rest,
the same way for every study (DomainBed's shape: a job is its arguments and an output folder; a run's folder with
its validated ``config.json`` is its *done* marker):

* the runs without complete results in the output folder are trained (a run saved with another configuration is a
  one-line error, or retrained with ``overwrite``; :func:`todo_runs`), phase by phase (a later phase may read
  what an earlier one wrote), in the study's stacks of at most ``max_stack`` runs;
* each stack goes through :func:`iwshift.train.fit_table`, checkpointed every few epochs and on SIGTERM/SIGUSR1,
  and resumed from its checkpoint by the same runs with the same configuration;
* each run is written in the one results format (:func:`iwshift.results.write_run`), its record saying what it
  is and how it was trained.

The path from a script to the training step: ``script.main`` -> :meth:`Runner.run` -> :meth:`Study.build` ->
:func:`~iwshift.train.fit_table` -> :meth:`~iwshift.train.Trainer.train_epoch`.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import config as knobs
from . import health, results
from .checks import ConfigError, flag_name
from .results import CHECKPOINTS, BadResultFile
from .train import Checkpoint, fit_table, read_checkpoint

CHECKPOINT_EVERY = 10            # epochs between a stack's checkpoints (and on SIGTERM / SIGUSR1)
PROGRESS_EVERY_S = 30.0          # a progress line this often when stderr is not a terminal
FLAG_OF = {"data": "data_dir", "precision_used": "precision"}  # record fields named by their flag


@dataclass
class StackPlan:
    """A stack, ready to train: its trainer, what each evaluated epoch measures (``evaluate(trainer)`` -> arrays
    of K), what each run keeps beside its metrics once trained (``arrays(run)`` -> file name -> arrays), and the
    learning rate of each epoch (``schedule(epoch)``; None: constant)."""

    trainer: Any
    evaluate: Callable[[Any], dict[str, np.ndarray]]
    arrays: Callable[[str], dict[str, dict[str, np.ndarray]]] = lambda run: {}
    record: Callable[[str], dict[str, Any]] = lambda run: {}  # what a run's record adds (e.g. its weights' quality)
    schedule: Callable[[int], float] | None = None


class Study:
    """A study, declared. Subclasses give :attr:`name`, :attr:`config` (a dataclass of knobs), :attr:`id_columns`
    (a run's row, kept in each of its metrics rows), :meth:`runs` and :meth:`build`; the rest has defaults."""

    name: str = "study"       # its id in every run's record ("study"), which the report reads
    config: Any = None
    id_columns: Sequence[str] = ("run", "seed")
    data_source: str = "generated"
    chunk_by: Sequence[str] = ("seeds",)  # the grid knobs a GPU plan may slice the study along (iwshift.plan)

    @property
    def label(self) -> str:
        """How progress lines name the study (default: its name)."""
        return self.name

    @property
    def epochs(self) -> int:
        return self.config.epochs

    def eval_epochs(self) -> list[int]:
        return self.config.eval_epochs()

    def runs(self) -> pd.DataFrame:
        """One row per run of the grid: its folder name (``run``) and what distinguishes it."""
        raise NotImplementedError

    def stack_key(self, run: dict[str, Any]) -> Any:
        """Runs with equal keys may train in one stack (default: all of a phase)."""
        return 0

    def phase(self, run: dict[str, Any]) -> int:
        """Runs of a later phase train after every run of an earlier one (default: one phase)."""
        return 0

    def stacks(self, runs: pd.DataFrame) -> Iterator[pd.DataFrame]:
        """Groups of runs that train together: equal :meth:`stack_key`, at most ``max_stack`` runs each."""
        keys = [self.stack_key(row) for row in runs.to_dict("records")]
        order = list(dict.fromkeys(keys))
        size = getattr(self.config, "max_stack", None) or len(runs) or 1
        for key in order:
            group = runs[[k == key for k in keys]]
            for start in range(0, len(group), size):
                yield group.iloc[start:start + size]

    def train_size(self, run: dict[str, Any]) -> int:
        """How many training examples the run sees per epoch (for a GPU plan's projection)."""
        raise NotImplementedError(f"the {self.name} study does not say its training-set sizes")

    def build(self, group: pd.DataFrame, device: str, out: Path) -> StackPlan:
        """The trainer of ``group`` and its evaluation (data prepared on ``device`` on first use)."""
        raise NotImplementedError

    def record(self, device: str) -> dict[str, Any]:
        """What every run's ``config.json`` holds besides its row and how its stack trained."""
        return {"study": self.name, "config": asdict(self.config), "data": self.data_source,
                **results.environment(str(device))}

    def check(self, out: Path) -> None:
        """Checks that need the data or the output folder, before anything is trained (ConfigError)."""

    def finish(self, out: Path, table: pd.DataFrame) -> None:
        """After the runs: derived tables beside them (default: none)."""

    def __getstate__(self) -> dict[str, Any]:  # a submitit job pickles the study: without its data
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------- resume identity


def identity(study: Study, row: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What a run's numbers depend on (:func:`iwshift.config.identity` of the study's configuration)."""
    return knobs.identity(type(study.config), row, record)


def todo_runs(study: Study, runs: pd.DataFrame, out: str | Path, record: dict[str, Any], overwrite: bool = False,
              desc: str | None = "sweep") -> pd.DataFrame:
    """The runs to train: those without results, those whose result files are bad (each named in one line
    on stderr), and, with ``overwrite``, those saved with another configuration. Without ``overwrite`` a
    saved run whose identity differs from the one ``record`` gives is a one-line ConfigError naming the first
    differing field (before anything is trained)."""
    out = Path(out)
    todo = []
    for row in runs.to_dict("records"):
        try:
            loaded = results.load_run(out, row["run"])
        except BadResultFile as err:
            if desc is not None:
                print(f"{desc}: {err}; run {row['run']} is not complete: training it again", file=sys.stderr)
            todo.append(True)
            continue
        if loaded is None:
            todo.append(True)
            continue
        saved = loaded[1]
        difference = knobs.first_difference(identity(study, saved["run"], saved), identity(study, row, record))
        if difference is not None and not overwrite:
            name, old, new = difference
            raise ConfigError(FLAG_OF.get(name, name),
                              f"run {row['run']} in {out}/ was trained with {name} = {_short(old)}, not "
                              f"{_short(new)}; rerun with --overwrite to retrain such runs, or use another --out")
        todo.append(difference is not None)
    return runs[todo]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------------------- the runner


class Runner:
    """Trains a study's runs into ``out`` (see the module docstring). ``only``: the run names to train (a
    launcher's shard); ``progress``: a bar on a terminal, else a line about every 30 s. :meth:`save_checkpoint`
    saves the running stack's last finished epoch (a signal handler's, or submitit's on preemption)."""

    def __init__(self, study: Study, out: str | Path, device: str = "cpu", progress: bool = True,
                 overwrite: bool = False, checkpoint_every: int = CHECKPOINT_EVERY, only: Sequence[str] | None = None):
        self.study, self.out, self.device = study, Path(out), device
        self.progress, self.overwrite, self.checkpoint_every = progress, overwrite, checkpoint_every
        self.only = None if only is None else list(only)
        self.current: Checkpoint | None = None
        # run -> the bytes of its metrics.csv as written: :meth:`table` parses them instead of reading and validating
        # the files again (the 250 runs of the paper-scale 2-D study: 0.43 s against 0.58 s, medians of 5, measured)
        self.written: dict[str, bytes] = {}

    @cached_property
    def record(self) -> dict[str, Any]:
        """What every run this runner trains records besides its row (the study's :meth:`Study.record`, taken
        once: a script that asks for :meth:`todo` before :meth:`run` reads the git revision once)."""
        return self.study.record(self.device)

    def save_checkpoint(self) -> bool:
        return self.current is not None and self.current.save()

    def todo(self) -> pd.DataFrame:
        """The runs this runner would train (a stale saved run: a one-line ConfigError)."""
        runs = self.study.runs()
        if self.only is not None:
            unknown = sorted(set(self.only) - set(runs["run"]))
            if unknown:
                raise ValueError(f"runs not in the {self.study.name} grid: {', '.join(unknown)}")
            runs = runs[runs["run"].isin(self.only)]
        return todo_runs(self.study, runs, self.out, self.record, self.overwrite, desc=self.study.label)

    def run(self) -> None:
        """Train what :meth:`todo` returns, phase by phase and stack by stack, each run written to its folder under
        ``out`` (:meth:`table` collects them)."""
        study = self.study
        study.check(self.out)
        todo = self.todo()
        if len(todo):
            record = self.record
            phases = np.array([study.phase(row) for row in todo.to_dict("records")])
            stacks = [group for p in sorted(set(phases)) for group in study.stacks(todo[phases == p])]
            meter = Progress(len(todo) * study.epochs, study.label, self.progress)
            with checkpoint_on_signals(self):
                for number, group in enumerate(stacks, 1):
                    self._train(group, record, meter.begin_stack(number, len(stacks), len(group), study.epochs))
                    if self.progress and meter.bar is None:  # a line per stack where there is no bar (logs)
                        print(f"{study.label}: stack {number}/{len(stacks)}: {len(group)} runs x {study.epochs} "
                              f"epochs in {meter.stack_seconds():.0f} s", file=sys.stderr, flush=True)
            meter.close()
        remove_finished_checkpoints(self.out)

    def table(self) -> pd.DataFrame:
        """The merged table of the grid's complete runs (of the named ones, with ``only``): :func:`results.merge`,
        those this runner wrote parsed from the bytes it wrote."""
        names = self.study.runs()["run"] if self.only is None else self.only
        return results.merge(self.out, names, written=self.written)

    def _train(self, group: pd.DataFrame, record: dict[str, Any], on_epoch: Callable[[int], None]) -> None:
        study = self.study
        plan = study.build(group, self.device, self.out)
        self.current = stack_checkpoint(self.out, group, study, record, self.checkpoint_every)
        try:
            table = fit_table(plan.trainer, group[list(study.id_columns)], study.epochs, study.eval_epochs(),
                              plan.evaluate, self.current, on_epoch, plan.schedule)
        finally:
            checkpoint, self.current = self.current, None
        how = plan.trainer.record()
        table = health.with_status(table)  # once for the stack (per run it cost 5 ms a run, measured)
        rows = {row["run"]: row for row in group.to_dict("records")}
        for name, text in results.run_texts(table).items():
            self.written[name] = results.write_run(
                self.out / name, text,
                {"run": rows[name], "stack_size": len(group), **record, "trained": how, **plan.record(name)},
                plan.arrays(name))
        checkpoint.path.unlink(missing_ok=True)


def stack_checkpoint(out: Path, group: pd.DataFrame, study: Study, record: dict[str, Any], every: int) -> Checkpoint:
    """A stack's checkpoint: named after its runs, resumed only by the same runs with the same configuration."""
    names = list(group["run"])
    key = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    meta = {"runs": names, "identity": {row["run"]: identity(study, row, record) for row in group.to_dict("records")},
            "side_by_side": getattr(study.config, "side_by_side", 1)}  # the state of S stacks resumes only as S
    return Checkpoint(out / CHECKPOINTS / f"stack-{key}.pt", every, meta)


def remove_finished_checkpoints(out: Path) -> None:
    """Delete the checkpoints whose runs all have complete results (and the folder when empty)."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return
    for path in folder.glob("stack-*.pt"):
        saved = read_checkpoint(path)
        if saved is None or all(results.is_complete(out, run) for run in saved["meta"].get("runs", [])):
            path.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


@contextmanager
def checkpoint_on_signals(runner: Runner) -> Iterator[None]:
    """While a sweep trains in this process's main thread: SIGTERM or SIGUSR1 (a batch system's time limit
    or preemption) saves the running stack's last finished epoch, then exits (status 128 + signal). Signals
    someone else handles already (submitit's job environment) are left to them."""
    import signal
    import threading

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in wanted}

    def handler(signum: int, frame: Any) -> None:
        saved = runner.save_checkpoint()
        print(f"signal {signum}: saved {int(saved)} checkpoint(s); rerun the same command to continue",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    for sig, before in previous.items():
        if before in (signal.SIG_DFL, None):
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            if before in (signal.SIG_DFL, None):
                signal.signal(sig, before if before is not None else signal.SIG_DFL)


@dataclass
class Job:
    """One job of a sweep split into shards (a submitit job: picklable, the study without its data): train the
    named runs of ``study`` that lack complete results; returns the names now complete. :meth:`checkpoint` is
    submitit's preemption hook: it saves the running stack and requeues the same job, which resumes there."""

    study: Study
    out: str
    device: str
    names: list[str]
    overwrite: bool = False
    runner: Runner | None = field(default=None, repr=False)

    def __call__(self) -> list[str]:
        self.runner = Runner(self.study, self.out, self.device, progress=True, overwrite=self.overwrite,
                             only=self.names)
        self.runner.run()
        return [n for n in self.names if results.is_complete(Path(self.out), n)]

    def checkpoint(self) -> Any:
        from submitit.helpers import DelayedSubmission

        if self.runner is not None:
            self.runner.save_checkpoint()
        return DelayedSubmission(Job(self.study, self.out, self.device, self.names, self.overwrite))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "runner": None}


def jobs(study: Study, todo: pd.DataFrame, out: str | Path, device: str, count: int,
         overwrite: bool = False) -> list[list[Job]]:
    """The runs of ``todo`` as at most ``count`` jobs per phase (a list per phase, in order), each a contiguous
    shard of the phase's runs in stack order (so that a job trains whole stacks, but for a piece at either end)."""
    from .launch import shard

    phases = np.array([study.phase(row) for row in todo.to_dict("records")])
    out_jobs = []
    for p in sorted(set(phases)):
        names = [n for group in study.stacks(todo[phases == p]) for n in group["run"]]
        out_jobs.append([Job(study, str(Path(out).resolve()), device, names_, overwrite)
                         for names_ in shard(names, count)])
    return out_jobs


# ------------------------------------------------------------------------------------------- progress


class Progress:
    """Progress of a sweep in run-epochs: a bar on a terminal, else a line on stderr about every
    :data:`PROGRESS_EVERY_S` seconds (runs, epoch, elapsed, projected remaining)."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="run-epoch", desc=desc, unit_scale=True)
        self.position = self.first = 0
        self.start = self.last_line = self.stack_start = time.perf_counter()
        self.stack = (0, 0, 0, 0)

    def begin_stack(self, number: int, count: int, runs: int, epochs: int) -> Callable[[int], None]:
        """The per-epoch callback of stack ``number`` of ``count`` (``runs`` runs x ``epochs`` epochs)."""
        base = self.position
        self.stack = (number, count, runs, epochs)
        self.stack_start = time.perf_counter()

        def on_epoch(epoch: int) -> None:
            if self.position == self.first == base and epoch > 1:  # a resumed stack: its past is no work done here
                self.first = base + (epoch - 1) * runs
            self.update(base + epoch * runs, epoch)

        return on_epoch

    def stack_seconds(self) -> float:
        return time.perf_counter() - self.stack_start

    def update(self, position: int, epoch: int) -> None:
        if self.bar is not None:
            self.bar.update(position - self.position)
        self.position = position
        now = time.perf_counter()
        if self.bar is None and self.enabled and now - self.last_line >= PROGRESS_EVERY_S:
            self.last_line = now
            elapsed = now - self.start
            done = position - self.first
            left = elapsed / done * (self.total - position) if done > 0 else float("nan")
            number, count, runs, epochs = self.stack
            print(f"{self.desc}: stack {number}/{count} ({runs} runs), epoch {epoch}/{epochs}; "
                  f"{position}/{self.total} run-epochs; elapsed {_duration(elapsed)}, about {_duration(left)} left",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


__all__ = ["CHECKPOINT_EVERY", "Job", "Progress", "Runner", "StackPlan", "Study", "flag_name", "identity", "jobs",
           "todo_runs"]
