"""Sweeps as jobs (iwshift.launch): sharding, submitit's local executor against the in-process sweep, a
killed job and the rerun that completes only its runs, the SLURM options, and one-line launcher errors.
Nothing is ever submitted to a cluster: the SLURM executor is only built and its sbatch text read."""

import signal
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from helpers import ROOT, fake_cifar, write_image_folder
from helpers import load_script as load
from iwshift import cifar_binary as study
from iwshift import launch, results, sweep
from iwshift.checks import ConfigError
from iwshift.config import BINARY_PRESETS, BinaryConfig
# the grid of the script below: 2 regimes x 2 weights, one seed (4 runs, 2 stacks). fp32: jobs may stack
# runs differently from the in-process sweep, and bf16 rounding would then differ in the 4th digit
GRID = ["--preset", "cpu", "--per-class", "12", "--epochs", "2", "--width", "0.0625", "--seeds", "0",
        "--weights", "1", "4", "--regimes", "none", "batchnorm", "--other-eval", "8", "--noise-eval", "4",
        "--device", "cpu", "--no-progress", "--precision", "fp32"]


def grid_config() -> BinaryConfig:  # what GRID gives (preset cpu, then the flags)
    fields = {**BINARY_PRESETS["cpu"], "per_class": 12, "epochs": 2, "width": 0.0625, "seeds": [0],
              "weights": [1.0, 4.0], "regimes": ["none", "batchnorm"], "other_eval": 8, "noise_eval": 4,
              "precision": "fp32"}
    return BinaryConfig(setting="weighting", **fields)


load_script = partial(load, "CIFAR10_binary_classifier.py")
load_extension = partial(load, "CIFAR10_extension.py")


def table(out: Path) -> pd.DataFrame:
    merged = pd.read_csv(out / "merged.csv").drop(columns=["seconds"])
    return merged.sort_values(["run", "epoch"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def env():
    """Jobs are fresh interpreters: they find iwshift through PYTHONPATH and use one thread each."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(ROOT))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("MKL_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny CIFAR-10 ImageFolder tree (what a job reads from disk, like the real data)."""
    return write_image_folder(tmp_path_factory.mktemp("data"), fake_cifar(train_per_class=12, test_per_class=3))


@pytest.fixture(scope="module")
def swept(env, data_dir, tmp_path_factory):
    """The same grid in-process and through submitit's local executor in 2 jobs."""
    pytest.importorskip("submitit")
    base = tmp_path_factory.mktemp("swept")
    script = load_script()
    common = [*GRID, "--data-dir", str(data_dir)]
    assert script.main([*common, "--out", str(base / "local"), "--figures", str(base / "fig_local")]) == 0
    assert script.main([*common, "--out", str(base / "jobs"), "--figures", str(base / "fig_jobs"),
                        "--launcher", "submitit-local", "--jobs", "2", "--log-dir", str(base / "logs")]) == 0
    return base


def stamps(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("*/*") if p.is_file()}


# ------------------------------------------------------------------------------------------ sharding


def test_shards_are_contiguous_near_equal_and_never_empty():
    names = [f"r{i}" for i in range(10)]
    shards = launch.shard(names, 4)
    assert [len(s) for s in shards] == [3, 3, 2, 2]
    assert sum(shards, []) == names
    assert launch.shard(names[:2], 5) == [["r0"], ["r1"]]
    assert launch.shard([], 3) == []


# ------------------------------------------------------------------------------ through submitit


def test_submitit_local_in_two_jobs_gives_the_in_process_table(swept):
    local, jobs = table(swept / "local"), table(swept / "jobs")
    assert local.shape == jobs.shape and local["run"].nunique() == 4
    pd.testing.assert_frame_equal(local, jobs, rtol=1e-4, atol=1e-5)
    assert (swept / "fig_jobs" / "final_fraction_vs_weight.png").exists()
    assert len(list((swept / "logs").glob("*/*_log.err"))) == 2  # a log folder per job
    # --merge-only: no training, the same table and figures again
    (swept / "jobs" / "merged.csv").unlink()
    before = stamps(swept / "jobs")
    assert load_script().main([*GRID, "--merge-only", "--out", str(swept / "jobs"), "--figures",
                               str(swept / "fig_merge")]) == 0
    assert stamps(swept / "jobs") == before
    pd.testing.assert_frame_equal(table(swept / "jobs"), local, rtol=1e-4, atol=1e-5)
    assert (swept / "fig_merge" / "final_fraction_vs_weight.png").exists()


def test_a_killed_job_is_reported_and_a_rerun_trains_only_its_runs(swept, data_dir, tmp_path, monkeypatch):
    """Three jobs: one trains its runs; one is killed while it runs (a job that cannot finish on its own -- it
    sleeps for ten minutes -- stands for the job of the other runs, so the kill always comes first); one names a
    run outside the grid. The failures are reported in one line each, and a rerun trains only the runs still
    without results."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit.local.local.LocalJob, "_results_timeout_s", 1)
    out = tmp_path / "out"
    cfg = grid_config()
    runs = study.build_runs(cfg)["run"].tolist()
    assert set(runs) == set(pd.read_csv(swept / "local" / "merged.csv")["run"])
    from iwshift.cifar_data import load_cifar10

    grid = study.BinaryStudy(cfg, load_cifar10(data_dir, download=False), str(data_dir))
    executor = launch.make_executor(launch.LaunchConfig(launcher="submitit-local", log_dir=str(tmp_path / "logs")))
    jobs = [sweep.Job(grid, str(out), "cpu", runs[:2]), partial(time.sleep, 600),
            sweep.Job(grid, str(out), "cpu", ["not_a_run"])]
    # cancel() sends SIGINT, which a job would ignore if it inherited SIGINT ignored (as every command started in
    # the background by a non-interactive shell does, CI's perhaps): the jobs start with the default disposition
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        submitted = launch.submit(executor, jobs)
    finally:
        signal.signal(signal.SIGINT, previous)
    submitted[1].cancel()  # killed while it runs: it cannot have finished
    failures = launch.wait(submitted, [2, 2, 1])
    assert [f.index for f in failures] == [2, 3]
    for failure in failures:
        assert "\n" not in str(failure) and f"log: {failure.log}" in str(failure)
    assert "ended without a result" in failures[0].reason
    assert failures[1].reason == "ValueError: runs not in the cifar_binary grid: not_a_run"
    assert "not_a_run" in failures[1].log.read_text()  # the log named holds the traceback
    assert [r for r in runs if results.is_complete(out, r)] == runs[:2]
    before = stamps(out)
    assert load_script().main([*GRID, "--data-dir", str(data_dir), "--out", str(out), "--figures",
                               str(tmp_path / "fig"), "--launcher", "submitit-local", "--log-dir",
                               str(tmp_path / "logs")]) == 0
    after = stamps(out)
    assert {k: after[k] for k in before} == before  # the finished job's runs were not retrained
    assert all(results.is_complete(out, r) for r in runs)
    pd.testing.assert_frame_equal(table(out), table(swept / "local"), rtol=1e-4, atol=1e-5)


def test_script_reports_each_failed_job_in_one_line_and_exits_1(env, data_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    log = tmp_path / "logs" / "123" / "123_0_log.err"
    monkeypatch.setattr(launch, "submit", lambda executor, jobs: [])
    monkeypatch.setattr(launch, "wait", lambda *a, **k: [
        launch.JobFailure(1, 2, "123", 2, "ValueError: boom", log),
        launch.JobFailure(2, 2, "124", 2, "ended without a result (state: TIMEOUT)", log)])
    code = load_script().main([*GRID, "--data-dir", str(data_dir), "--out", str(tmp_path / "out"), "--figures",
                               str(tmp_path / "fig"), "--launcher", "submitit-local", "--log-dir",
                               str(tmp_path / "logs")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"CIFAR10_binary_classifier.py: job 1/2 (id 123, 2 runs) failed: ValueError: boom; log: {log}"
    assert "job 2/2 (id 124, 2 runs) failed" in err[1] and len(err) == 3 and "rerun" in err[2]
    assert not (tmp_path / "fig").exists() or not any((tmp_path / "fig").iterdir())


# ------------------------------------------------------------------------------ SLURM, not submitted


def test_slurm_executor_gets_the_cluster_options(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun is here"
    cfg = launch.LaunchConfig(launcher="submitit", partition="gpu", gpus_per_job=2, cpus_per_job=4, mem_gb=16,
                              time_min=30, array_parallelism=3, log_dir=str(tmp_path / "logs"))
    executor = launch.make_executor(cfg)
    text = executor._executor._make_submission_file_text("COMMAND", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=4", "--mem=16GB", "--time=30"):
        assert f"#SBATCH {line}" in text
    assert executor._executor.parameters["array_parallelism"] == 3
    cpu_only = launch.make_executor(launch.LaunchConfig(launcher="submitit", gpus_per_job=0,
                                                        log_dir=str(tmp_path / "logs")))
    text = cpu_only._executor._make_submission_file_text("COMMAND", "uid")
    assert "--gpus-per-node" not in text and "--partition" not in text
    assert launch.job_device("auto", cfg) == "cuda"  # the jobs' GPUs, whatever this machine has
    assert launch.job_device("auto", launch.LaunchConfig(launcher="submitit", gpus_per_job=0)) == "cpu"


def test_a_refused_submission_is_a_one_line_error():
    class Refusing:  # what submitit raises when sbatch says no
        @contextmanager
        def batch(self):
            yield

        def submit(self, *args):
            raise RuntimeError("Could not submit\nsbatch: error: invalid partition specified: nope\n")

    with pytest.raises(ConfigError) as info:
        launch.submit(Refusing(), [print])
    assert str(info.value) == "--launcher: submitting the jobs failed: sbatch: error: invalid partition specified: nope"


# ------------------------------------------------------------------------------------ bad options


@pytest.mark.parametrize("args,message", [
    (["--launcher", "slurm"], "--launcher: unknown value 'slurm'; choose from local, submitit, submitit-local"),
    (["--jobs", "0"], "--jobs: must be an integer >= 1 (got 0)"),
    (["--jobs", "two"], "--jobs: not an integer: 'two'"),
    (["--time-min", "0"], "--time-min: must be an integer >= 1"),
    (["--gpus-per-job", "-1"], "--gpus-per-job: must be an integer >= 0"),
    (["--cpus-per-job", "0"], "--cpus-per-job: must be an integer >= 1"),
    (["--mem-gb", "0"], "--mem-gb: must be an integer >= 1"),
    (["--array-parallelism", "0"], "--array-parallelism: must be an integer >= 1"),
    (["--partition", "gpu; rm"], "--partition: not a SLURM partition name"),
    (["--launcher", "submitit-local", "--log-dir", " "], "--log-dir: needs a folder"),
    (["--launcher", "submitit-local", "--log-dir", "/proc/forbidden"], "--log-dir: cannot write"),
    (["--launcher", "submitit"], "--launcher: submitit found no SLURM here"),
    (["--launcher", "submitit", "--device", "cuda", "--gpus-per-job", "0"], "--gpus-per-job: must be >= 1"),
    (["--launcher", "submitit", "--device", "tpu"], "--device: unknown device 'tpu'"),
])
def test_bad_launcher_options_give_one_line_and_exit_2(args, message, tmp_path, capsys, monkeypatch):
    if "submitit found no SLURM" in message:
        submitit = pytest.importorskip("submitit")
        monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    if "--device" not in args:
        args = [*args, "--device", "cpu"]
    if "--log-dir" not in args:
        args = [*args, "--log-dir", str(tmp_path / "logs")]
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(load_script().main([*args, "--data-dir", str(tmp_path / "none"), "--no-download",
                                             "--out", str(tmp_path / "out"), "--figures", str(tmp_path / "f")]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_missing_submitit_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(ConfigError, match="submitit is not installed; pip install submitit"):
        launch.make_executor(launch.LaunchConfig(launcher="submitit-local", log_dir=str(tmp_path / "logs")))
    with pytest.raises(SystemExit) as exit_info:
        load_script().main(["--launcher", "submitit-local", "--device", "cpu", "--out", str(tmp_path / "o"),
                            "--figures", str(tmp_path / "f"), "--log-dir", str(tmp_path / "logs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("CIFAR10_binary_classifier.py: error: --launcher: submitit is not installed; "
                   "pip install submitit (or use --launcher local)")
    # the local launcher never needs it
    assert launch.LaunchConfig().uses_submitit is False


# ------------------------------------------------------------------------------- the CIFAR extension

EXTENSION = ["--studies", "label", "--regimes", "none", "--label-weights", "none", "true", "bbse", "--seeds", "0",
             "--per-class", "12", "--imbalance", "2", "--epochs", "2", "--width", "0.0625", "--preset", "cpu",
             "--device", "cpu", "--no-progress", "--precision", "fp32"]


def test_extension_phases_through_submitit_local_give_the_in_process_tables(env, data_dir, tmp_path):
    """Phase 1 (none, true: two jobs of one run) then phase 2 (bbse, from phase 1's unweighted run: one job)."""
    pytest.importorskip("submitit")
    common = [*EXTENSION, "--data-dir", str(data_dir), "--no-figures"]
    assert load_extension().main([*common, "--out", str(tmp_path / "local")]) == 0
    assert load_extension().main([*common, "--out", str(tmp_path / "jobs"), "--launcher", "submitit-local",
                                  "--jobs", "2", "--log-dir", str(tmp_path / "logs")]) == 0
    assert len(list((tmp_path / "logs").glob("*/*_log.err"))) == 3
    for name in ("merged_label.csv", "weights_label.csv"):
        local, jobs = pd.read_csv(tmp_path / "local" / name), pd.read_csv(tmp_path / "jobs" / name)
        pd.testing.assert_frame_equal(local.drop(columns=["seconds"], errors="ignore"),
                                      jobs.drop(columns=["seconds"], errors="ignore"), rtol=1e-4, atol=1e-5)
    assert set(pd.read_csv(tmp_path / "jobs" / "merged_label.csv")["weight_source"]) == {"none", "true", "bbse"}


def test_extension_checks_the_phases_before_submitting(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_extension().main(["--studies", "label", "--label-weights", "true", "bbse", "--launcher",
                               "submitit-local", "--device", "cpu", "--out", str(tmp_path / "o"),
                               "--figures", str(tmp_path / "f"), "--log-dir", str(tmp_path / "logs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("CIFAR10_extension.py: error: --label-weights: the estimated weights are computed from the "
                          "unweighted runs") and "\n" not in err
