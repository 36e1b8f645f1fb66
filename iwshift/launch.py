"""Where a sweep's runs train: in this process, or as jobs through submitit.

``local``          every run in this process, stack by stack (the default).
``submitit``       the runs without complete results are split into ``jobs`` shards, submitted as one SLURM
                   job array (``executor.batch()``); each job trains its shard with the batched trainer and
                   writes each run's results as a local sweep does. This process waits, reports every
                   failed job (one line, with its log), then merges.
``submitit-local`` the same jobs through submitit's local executor: subprocesses on this machine (a cluster
                   sweep tried without a cluster, and what the tests use).

A job is a :class:`iwshift.sweep.Job`: a study, an output folder and the names of the runs it trains (a phase's
jobs are submitted once the previous phase's are done). A run is complete when its folder has ``metrics.csv``
and ``config.json`` that validate, so rerunning a sweep submits only the runs that a failed, killed or timed-out
job left without results. Each job is checkpoint-and-requeue: on preemption or its time limit, submitit's signal
calls the job's ``checkpoint``, which saves the running stack's last finished epoch, and the requeued job
continues from there. This module knows no study. Nothing here imports submitit until a job is to be
submitted; it is an optional dependency (``pip install submitit``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checks as v
from .checks import ConfigError
from .config import LAUNCHERS

MISSING = "submitit is not installed; pip install submitit (or use --launcher local)"

# a script's constant -> LaunchConfig field
CONSTANTS = {"LAUNCHER": "launcher", "PARTITION": "partition", "GPUS_PER_JOB": "gpus_per_job",
             "CPUS_PER_JOB": "cpus_per_job", "MEM_GB": "mem_gb", "TIME_MIN": "time_min",
             "ARRAY_PARALLELISM": "array_parallelism", "LOG_DIR": "log_dir", "JOBS": "jobs"}


@dataclass
class LaunchConfig:
    """How a sweep is launched; the cluster options only matter to ``submitit`` (SLURM)."""

    launcher: str = "local"
    partition: str = ""              # SLURM partition; "" = the cluster's default
    gpus_per_job: int = 1            # 0: CPU-only jobs
    cpus_per_job: int = 8
    mem_gb: int = 32
    time_min: int = 240              # time limit of each job (minutes; also the local executor's)
    array_parallelism: int = 16      # jobs of the array running at once at most (SLURM)
    log_dir: str = "logs/submitit"   # submitit's folder: a sub-folder per job with its logs
    jobs: int = 4                    # shards the runs without results are split into

    def __post_init__(self) -> None:
        self.launcher = v.one_of("launcher", self.launcher, LAUNCHERS)
        self.partition = str(self.partition).strip()
        if any(c.isspace() or c in "#;&|'\"" for c in self.partition):
            raise ConfigError("partition", f"not a SLURM partition name: {self.partition!r}")
        self.gpus_per_job = v.at_least("gpus_per_job", self.gpus_per_job, 0)
        self.cpus_per_job = v.at_least("cpus_per_job", self.cpus_per_job, 1)
        self.mem_gb = v.at_least("mem_gb", self.mem_gb, 1)
        self.time_min = v.at_least("time_min", self.time_min, 1)
        self.array_parallelism = v.at_least("array_parallelism", self.array_parallelism, 1)
        self.jobs = v.at_least("jobs", self.jobs, 1)
        if not str(self.log_dir).strip():
            raise ConfigError("log_dir", "needs a folder for the job logs")

    @classmethod
    def from_constants(cls, values: dict[str, Any]) -> LaunchConfig:
        return cls(**{name: values[const] for const, name in CONSTANTS.items()})

    @property
    def uses_submitit(self) -> bool:
        return self.launcher != "local"


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device without CUDA is a bad argument."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError("device", f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{name} requested but CUDA is not available")
    return name


def job_device(name: str, cfg: LaunchConfig) -> str:
    """The device the runs train on. In this process or through the local executor it is this machine's
    (:func:`resolve_device`); on a cluster it is the jobs' and is not checked here (the login node may have no
    GPU): ``auto`` is ``cuda`` when the jobs get GPUs, else ``cpu``."""
    if cfg.launcher != "submitit":
        return resolve_device(name)
    if not (name in ("auto", "cpu") or name.startswith("cuda")):
        raise ConfigError("device", f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return "cuda" if cfg.gpus_per_job else "cpu"
    if name.startswith("cuda") and not cfg.gpus_per_job:
        raise ConfigError("gpus_per_job", f"must be >= 1 for --device {name} (got 0)")
    return name


def shard(names: Sequence[str], n_jobs: int) -> list[list[str]]:
    """``names`` cut, in order, into ``n_jobs`` contiguous shards of near-equal size (fewer when there are
    fewer names; never an empty one). Given the runs in stack order, a stack is cut only where a shard
    ends, so each job trains its runs in few stacks (whole ones, and at most a piece at either end)."""
    n_jobs = v.at_least("jobs", n_jobs, 1)
    names = list(names)
    count = min(n_jobs, len(names))
    if not count:
        return []
    size, extra = divmod(len(names), count)
    out, start = [], 0
    for i in range(count):
        stop = start + size + (i < extra)
        out.append(names[start:stop])
        start = stop
    return out


# ---------------------------------------------------------------------------------------- submitit


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("launcher", MISSING) from None
    return submitit


def check(cfg: LaunchConfig) -> None:
    """What :func:`make_executor` would refuse, checked without making anything (no log folder yet): submitit
    installed, SLURM reachable for ``submitit``, a log folder that can be made."""
    if not cfg.uses_submitit:
        return
    v.creatable_folder("log_dir", cfg.log_dir)
    submitit = import_submitit()
    if cfg.launcher == "submitit" and submitit.SlurmExecutor.affinity() <= 0:
        raise ConfigError("launcher", "submitit found no SLURM here (srun is not on PATH); submit from the "
                                      "cluster's login node, or use --launcher submitit-local")


def make_executor(cfg: LaunchConfig, name: str = "iwshift") -> Any:
    """A submitit executor for ``cfg`` (logs in ``<log_dir>/<job id>/``): SLURM for ``submitit`` (an error
    where there is no SLURM), the local executor for ``submitit-local``."""
    if not cfg.uses_submitit:
        raise ValueError("the local launcher has no executor")
    folder = v.writable_folder("log_dir", cfg.log_dir).resolve() / "%j"
    submitit = import_submitit()
    if cfg.launcher == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=cfg.time_min, gpus_per_node=cfg.gpus_per_job)
        return executor
    if submitit.SlurmExecutor.affinity() <= 0:
        raise ConfigError("launcher", "submitit found no SLURM here (srun is not on PATH); submit from the "
                                      "cluster's login node, or use --launcher submitit-local")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    parameters: dict[str, Any] = dict(name=name, cpus_per_task=cfg.cpus_per_job, mem_gb=cfg.mem_gb,
                                      timeout_min=cfg.time_min, slurm_array_parallelism=cfg.array_parallelism)
    if cfg.gpus_per_job:
        parameters["gpus_per_node"] = cfg.gpus_per_job
    if cfg.partition:
        parameters["slurm_partition"] = cfg.partition
    executor.update_parameters(**parameters)
    return executor


@contextmanager
def _importable() -> Iterator[None]:
    """While submitting: the folder holding the ``iwshift`` package on PYTHONPATH, so that a job (a fresh
    interpreter, in this working directory) can unpickle its function wherever the script was started."""
    root = str(Path(__file__).resolve().parents[1])
    before = os.environ.get("PYTHONPATH")
    if root not in (before or "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, before) if p)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def submit(executor: Any, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """The jobs (callables without arguments, e.g. :class:`iwshift.sweep.Job`), submitted together (a job array on
    SLURM). A refused submission (sbatch's error: a bad partition, too much memory or time) is a one-line
    ConfigError."""
    try:
        with _importable(), executor.batch():
            submitted = [executor.submit(job) for job in jobs]
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        said = [line for line in lines if "error" in line.lower()] or lines or [type(err).__name__]
        reason = said[-1] if len(said[-1]) <= 300 else said[-1][:297] + "..."
        raise ConfigError("launcher", f"submitting the jobs failed: {reason}") from err
    return submitted


@dataclass
class JobFailure:
    index: int          # 1-based, in submission order
    total: int
    job_id: str
    runs: int
    reason: str         # one line
    log: Path           # the job's stderr

    def __str__(self) -> str:
        return (f"job {self.index}/{self.total} (id {self.job_id}, {self.runs} runs) failed: {self.reason}; "
                f"log: {self.log}")


def one_line_reason(error: BaseException) -> str:
    """The gist of a submitit job error: the exception a failed job raised (the last line of its
    traceback), or the state of a job that ended without a result (killed, timed out, out of memory)."""
    text = str(error)
    if type(error).__name__ == "UncompletedJobError":
        state = re.search(r"\(state: ([^)]*)\)", text)
        return f"ended without a result (state: {state.group(1) if state else 'unknown'}): killed, timed out " \
               f"or out of memory?"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line):
            return line if len(line) <= 300 else line[:297] + "..."
    return (lines[0][:300] if lines else type(error).__name__)


def wait(submitted: Sequence[Any], runs: Sequence[int], poll_s: float = 1.0,
         on_done: Callable[[int, Any, JobFailure | None], None] | None = None) -> list[JobFailure]:
    """Wait for every submitted job (``runs``: how many runs each trains); return the failures (in submission
    order). ``on_done(index, job, failure)`` is called as each job ends."""
    failures: dict[int, JobFailure] = {}
    pending = set(range(len(submitted)))
    while pending:
        for i in sorted(pending):
            job = submitted[i]
            if not job.done():
                continue
            pending.discard(i)
            try:
                error = job.exception()
            except Exception as err:  # the job's own state could not be read: a failure all the same
                error = err
            failure = None
            if error is not None:
                failure = JobFailure(i + 1, len(submitted), str(job.job_id), runs[i], one_line_reason(error),
                                     job.paths.stderr)
                failures[i] = failure
            if on_done is not None:
                on_done(i + 1, job, failure)
        if pending:
            time.sleep(poll_s)
    return [failures[i] for i in sorted(failures)]


def submit_and_report(executor: Any, cfg: LaunchConfig, phases: Sequence[Sequence[Any]], prog: str) -> list[JobFailure] | None:
    """Submit each phase's jobs (each job has ``names``, the runs it trains), print progress, wait for them
    before the next phase; print each failure as one line on stderr and return the failures (a failed phase
    ends the submission: a later phase needs its results). ``None`` when Ctrl-C stopped the waiting (the jobs
    go on)."""
    import sys

    from . import cli

    failures: list[JobFailure] = []
    submitted: list[Any] = []
    for number, jobs in enumerate(phases, 1):
        label = f"phase {number}/{len(phases)}: " if len(phases) > 1 else ""
        runs = [len(job.names) for job in jobs]
        print(f"{cfg.launcher}: {label}{sum(runs)} runs without results in {len(jobs)} jobs; logs in "
              f"{Path(cfg.log_dir).resolve()}/<job id>/", flush=True)

        def on_done(index: int, job: Any, failure: JobFailure | None) -> None:
            if failure is None:
                print(f"job {index}/{len(jobs)} (id {job.job_id}) done", flush=True)

        try:
            with cli.exit_on_config_error(prog):  # sbatch refusing the jobs: one line
                submitted = submit(executor, jobs)
                print(f"submitted jobs {job_ids(submitted)}; waiting (Ctrl-C stops waiting, not the jobs)", flush=True)
                failed = wait(submitted, runs, on_done=on_done)
        except KeyboardInterrupt:
            print(f"\n{prog}: {stopped_waiting(cfg, submitted)}", file=sys.stderr)
            return None
        for failure in failed:
            print(f"{prog}: {label}{failure}", file=sys.stderr)
        failures += failed
        if failed:
            break
    return failures


def stopped_waiting(cfg: LaunchConfig, jobs: Sequence[Any]) -> str:
    """What Ctrl-C while waiting means: SLURM jobs keep running; local ones got the Ctrl-C too."""
    if cfg.launcher == "submitit-local":
        return "stopped; the local jobs were interrupted too: rerun the same command to train the runs still " \
               "without results"
    return f"stopped waiting; jobs {job_ids(jobs) or '(none yet)'} keep running on the cluster. When they have " \
           f"finished, rerun the same command: it submits only the runs still without results, then merges"


def job_ids(jobs: Sequence[Any]) -> str:
    """``123_0 .. 123_3`` for an array, else the ids one by one."""
    ids = [str(j.job_id) for j in jobs]
    if not ids:
        return ""
    return ids[0] if len(ids) == 1 else f"{ids[0]} .. {ids[-1]}" if len(ids) > 3 else ", ".join(ids)
