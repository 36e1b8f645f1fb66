"""Nothing lost, nothing stale (issue 14): resume checks what it resumes, checkpoints survive a kill or a
signal, bad result files are retrained and never merged, every argument is checked before any work, outputs
stay under the folders given, logs get progress lines; and the per-epoch loop serves any stack (issue 15)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from functools import partial

from helpers import ROOT, fake_cifar, load_script, tiny_binary, train, write_image_folder
from iwshift import cifar_binary as study
from iwshift import report, results, sweep
from iwshift import train as training
from iwshift.checks import ConfigError

TESTS = Path(__file__).resolve().parent
tiny = partial(tiny_binary, per_class=16, other_eval=10, noise_eval=4, weights=[1.0, 4.0])


@pytest.fixture(scope="module")
def data():
    return fake_cifar(train_per_class=16, test_per_class=4)


def metrics(out: Path) -> pd.DataFrame:
    table = results.merge(out)
    return table.drop(columns="seconds").sort_values(["run", "epoch"]).reset_index(drop=True)


# ------------------------------------------------------------------------------- 1. stale results


def test_a_changed_configuration_is_a_one_line_error_unless_overwrite(data, tmp_path):
    train(tiny(epochs=1, weights=[4.0], regimes=["none"]), data, tmp_path)
    before = (tmp_path / "weighting_w4_none_s0" / "metrics.csv").read_bytes()
    with pytest.raises(ConfigError) as info:
        train(tiny(epochs=2, weights=[4.0], regimes=["none"]), data, tmp_path)
    message = str(info.value)
    assert message.startswith("--epochs: run weighting_w4_none_s0") and "\n" not in message
    assert "--overwrite" in message
    assert (tmp_path / "weighting_w4_none_s0" / "metrics.csv").read_bytes() == before  # nothing touched
    # another data source is stale too; the grid's lists and the stack size are not
    other = study.BinaryStudy(tiny(epochs=1, weights=[4.0], regimes=["none"]), data)
    record = {**other.record("cpu"), "data": "other data"}
    with pytest.raises(ConfigError, match="^--data-dir: "):
        sweep.todo_runs(other, other.runs(), tmp_path, record)
    same = study.BinaryStudy(tiny(epochs=1, weights=[1.0, 4.0], regimes=["none", "l2"], max_stack=3), data)
    todo = sweep.todo_runs(same, same.runs(), tmp_path, same.record("cpu"))
    assert "weighting_w4_none_s0" not in set(todo["run"]) and len(todo) == 3
    table = train(tiny(epochs=2, weights=[4.0], regimes=["none"]), data, tmp_path,
                            overwrite=True)
    assert sorted(table["epoch"]) == [1, 2]


def test_script_refuses_stale_results_before_training(tmp_path, capsys, image_folder):
    script = load_script("CIFAR10_binary_classifier.py")
    common = [*BINARY, "--data-dir", str(image_folder), "--out", str(tmp_path / "o"), "--no-figures"]
    assert script.main([*common, "--epochs", "1"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        script.main([*common, "--epochs", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("CIFAR10_binary_classifier.py: error: --epochs: run ") and "\n" not in err
    assert script.main([*common, "--epochs", "2", "--overwrite"]) == 0
    assert pd.read_csv(tmp_path / "o" / "merged.csv")["epoch"].max() == 2


# ------------------------------------------------------------------------------ 2. checkpoints


KILLED = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
import torch
from helpers import fake_cifar, tiny_binary, train as run_sweep
from iwshift import train
torch.set_num_threads(1)
cfg = tiny_binary(per_class=16, epochs=3, other_eval=10, noise_eval=4, weights=[1.0, 4.0], regimes=["none", "l2"])
kill_at = int(sys.argv[2])  # the epoch during which this process SIGKILLs itself (0: never)
trained = []
epoch_before = train.Trainer.train_epoch
def train_epoch(self, *args, **kwargs):
    if self.epoch + 1 == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    trained.append(self.epoch + 1)
    return epoch_before(self, *args, **kwargs)
train.Trainer.train_epoch = train_epoch
run_sweep(cfg, fake_cifar(train_per_class=16, test_per_class=4), sys.argv[1], checkpoint_every=1)
print("trained epochs", trained)
"""


def test_sigkill_mid_stack_then_rerun_resumes_from_the_checkpoint_and_matches(tmp_path, data):
    script = tmp_path / "sweep.py"
    script.write_text(KILLED.format(root=str(ROOT), tests=str(TESTS)))
    run = lambda out, kill_at: subprocess.run(  # noqa: E731
        [sys.executable, str(script), str(out), str(kill_at)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    killed = run(tmp_path / "resumed", 3)
    assert killed.returncode == -signal.SIGKILL
    assert len(list((tmp_path / "resumed" / results.CHECKPOINTS).glob("stack-*.pt"))) == 1
    assert not list((tmp_path / "resumed").glob("*/metrics.csv"))
    rerun = run(tmp_path / "resumed", 0)
    assert rerun.returncode == 0, rerun.stderr
    assert "trained epochs [3]" in rerun.stdout  # continued from epoch 2's checkpoint
    train(tiny(epochs=3, regimes=["none", "l2"]), fake_cifar(train_per_class=16, test_per_class=4),
          tmp_path / "whole")  # the same sweep, uninterrupted
    pd.testing.assert_frame_equal(metrics(tmp_path / "resumed"), metrics(tmp_path / "whole"), check_exact=True)
    assert not (tmp_path / "resumed" / results.CHECKPOINTS).exists()  # removed once the results are complete


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_saves_the_last_finished_epoch_and_a_rerun_matches(data, tmp_path, monkeypatch, signum):
    cfg = tiny(epochs=3, weights=[4.0], regimes=["l2"])  # (CNN dropout draws from the unseeded global RNG today)
    train(cfg, data, tmp_path / "whole", checkpoint_every=100)
    evaluate = study._evaluate

    def signalled(trainer, *args):  # the signal comes while epoch 2 is evaluated: epoch 1 is the last finished
        if trainer.epoch == 2:
            os.kill(os.getpid(), signum)
        return evaluate(trainer, *args)

    monkeypatch.setattr(study, "_evaluate", signalled)
    with pytest.raises(SystemExit) as info:
        train(cfg, data, tmp_path / "resumed", checkpoint_every=100)
    assert info.value.code == 128 + signum
    saved = training.read_checkpoint(next((tmp_path / "resumed" / results.CHECKPOINTS).glob("stack-*.pt")))
    assert saved["trainer"]["epoch"] == 1 and list(saved["table"]["epoch"].unique()) == [1]
    monkeypatch.setattr(study, "_evaluate", evaluate)
    train(cfg, data, tmp_path / "resumed")
    pd.testing.assert_frame_equal(metrics(tmp_path / "resumed"), metrics(tmp_path / "whole"), check_exact=True)
    assert signal.getsignal(signum) is signal.SIG_DFL  # the sweep's handlers are gone


def test_submitit_checkpoint_saves_the_running_stack_and_requeues_the_same_job(data, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    cfg = tiny(epochs=3, weights=[4.0], regimes=["none"])
    job = sweep.Job(study.BinaryStudy(cfg, data), str(tmp_path), "cpu", ["weighting_w4_none_s0"], overwrite=True)
    requeued = []
    evaluate = study._evaluate

    def preempted(trainer, *args):  # what submitit's SIGUSR handler does mid-training
        if trainer.epoch == 2 and not requeued:
            requeued.append(job.checkpoint())
            saved = training.read_checkpoint(next((tmp_path / results.CHECKPOINTS).glob("stack-*.pt")))
            assert saved["trainer"]["epoch"] == 1  # the last finished epoch, saved by the checkpoint call
        return evaluate(trainer, *args)

    monkeypatch.setattr(study, "_evaluate", preempted)
    assert job() == ["weighting_w4_none_s0"]
    again = requeued[0].function
    assert isinstance(again, sweep.Job) and (again.out, again.names, again.overwrite) == (job.out, job.names, True)
    assert "_data" not in again.study.__getstate__()  # a requeued job carries the study without its data


# ---------------------------------------------------------------------------- 3. corrupt files


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])


CORRUPTIONS = {
    "garbage": lambda p: p.write_bytes(bytes(range(256)) * 4),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": _truncate,
    "wrong columns": lambda p: p.write_text(p.read_text().replace("epoch", "epoc", 1) if p.suffix == ".csv"
                                            else p.read_text().replace('"config":', '"konfig":', 1)),
    "text in a number": lambda p: _text_in_a_number(p) if p.suffix == ".csv"
    else p.write_text(p.read_text().replace('"run": {', '"run": "x", "_": {', 1)),
}


def _text_in_a_number(path: Path) -> None:
    table = pd.read_csv(path, dtype=str)
    table.loc[0, "test_accuracy"] = "abc"
    table.to_csv(path, index=False)


def test_corrupt_files_are_named_retrained_and_never_merged(data, tmp_path, capsys):
    cfg = tiny(weights=[1.0, 4.0], regimes=["none", "l2"], seeds=[0, 1, 2])  # 12 runs, 10 made corrupt
    good = metrics_of(train(cfg, data, tmp_path))
    names = sorted(good["run"].unique())
    corrupt = {}
    for name, (kind, file) in zip(names, [(k, f) for k in CORRUPTIONS for f in ("metrics.csv", "config.json")]):
        CORRUPTIONS[kind](tmp_path / name / file)
        corrupt[name] = tmp_path / name / file
    for name in names:
        assert results.is_complete(tmp_path, name) == (name not in corrupt), name
    assert set(results.merge(tmp_path)["run"]) == set(names) - set(corrupt)  # never merged
    with pytest.raises(ConfigError) as info:  # the report names a bad file in one line
        report.load(tmp_path)
    assert any(str(path) in str(info.value) for path in corrupt.values()) and "\n" not in str(info.value)
    capsys.readouterr()
    again = metrics_of(train(cfg, data, tmp_path))
    err = capsys.readouterr().err.splitlines()
    for name, path in corrupt.items():
        lines = [line for line in err if f"run {name} " in line]
        assert len(lines) == 1 and lines[0].startswith(f"cifar_binary: {path}: "), (name, err)
        assert "training it again" in lines[0]
    pd.testing.assert_frame_equal(again, good, check_exact=True)


def test_results_without_a_recorded_digest_are_incomplete(data, tmp_path):
    """A record without the digest of its metrics file cannot vouch for it: the run is trained again."""
    cfg = tiny(weights=[1.0, 4.0], regimes=["none"])
    name = sorted(train(cfg, data, tmp_path)["run"].unique())[0]
    record = json.loads((tmp_path / name / "config.json").read_text())
    del record["metrics_sha256"]
    (tmp_path / name / "config.json").write_text(json.dumps(record))
    assert not results.is_complete(tmp_path, name)
    with pytest.raises(results.BadResultFile) as info:
        results.load_run(tmp_path, name)
    assert str(info.value).startswith(str(tmp_path / name / "metrics.csv")) and "\n" not in str(info.value)


def metrics_of(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns="seconds").sort_values(["run", "epoch"]).reset_index(drop=True)


def test_report_names_a_bad_file_in_one_line(tmp_path):
    (tmp_path / "synthetic" / "a_run").mkdir(parents=True)
    (tmp_path / "synthetic" / "a_run" / "metrics.csv").write_text("run,epoch\na_run,1\n")
    (tmp_path / "synthetic" / "a_run" / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    proc = subprocess.run([sys.executable, "-m", "iwshift.report", "--results", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "synthetic" / "a_run" / "config.json") in proc.stderr


def test_the_report_of_a_folder_without_results_is_a_one_line_error(tmp_path):
    (tmp_path / "empty" / "cifar_binary").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "iwshift.report", "--results", str(tmp_path / "empty")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--results: no results in" in proc.stderr and not (tmp_path / "empty" / "REPORT.md").exists()


# ---------------------------------------------------------------------- 5. checks before work


BINARY = ["--preset", "cpu", "--per-class", "8", "--width", "0.0625", "--seeds", "0", "--weights", "4",
          "--regimes", "none", "--other-eval", "4", "--noise-eval", "2", "--device", "cpu", "--no-progress",
          "--precision", "fp32"]




@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data"), fake_cifar(train_per_class=10, test_per_class=2))


@pytest.mark.parametrize("script_name,args,message", [
    ("CIFAR10_extension.py", ["--studies", "covariate", "label", "--label-weights", "true", "bbse"],
     "--label-weights: the estimated weights are computed from the unweighted runs"),
    ("CIFAR10_extension.py", ["--studies", "covariate", "label", "--per-class", "100000"], "--per-class: needs"),
    ("CIFAR10_extension.py", ["--covariate-weights", "bbse"], "--covariate-weights: unknown value"),
    ("CIFAR10_binary_classifier.py", ["--per-class", "100000"], "--per-class: needs 100000 training images of cat"),
])
def test_argument_errors_come_before_any_training_or_file(script_name, args, message, tmp_path, capsys,
                                                           image_folder):
    script = load_script(script_name)
    common = ["--preset", "cpu", "--epochs", "1", "--width", "0.0625", "--seeds", "0", "--device", "cpu",
              "--regimes", "none"]
    if "extension" in script_name:
        common += ["--source-counts", "2", "4", "2", "4"]
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(script.main([*common, *args, "--data-dir", str(image_folder), "--out", str(tmp_path / "o"),
                                      "--figures", str(tmp_path / "f"), "--no-progress"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "weight-sources" not in err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing written


# ------------------------------------------------------------------------------ 6. output folders


def test_every_output_goes_under_the_folders_given(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    script = load_script("synthetic_study.py")
    (tmp_path / "run").mkdir()
    assert script.main(["--epochs", "2", "--seeds", "0", "--datasets", "separable", "--models", "lr",
                        "--weightings", "up", "--regimes", "none", "--extreme-weights", "1", "10",
                        "--out", "run/out", "--figures", "run/fig", "--no-progress"]) == 0
    written = {p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {("run", "out"), ("run", "fig")}, written
    assert (tmp_path / "run" / "out" / "extreme" / "extreme_w10_separable_lr_up_none_s0" / "config.json").exists()
    for flag in ("--out", "--figures"):  # (--out-extreme "" is the default: OUT/extreme)
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--epochs", "2", "--out", "run/o2", "--figures", "run/f2", flag, ""])
        assert exit_info.value.code == 2
        assert f"{flag}: needs a folder" in capsys.readouterr().err


def test_the_report_reads_runs_at_any_depth(tmp_path):
    table = pd.DataFrame({"run": ["a", "a"], "seed": [0, 0], "epoch": [1, 2], "x": [0.5, 0.25]})
    results.write_run(tmp_path / "synthetic" / "extreme" / "a", table,
                      {"run": {"run": "a", "seed": 0}, "study": "synthetic_extreme", "config": {}})
    loaded = report.load(tmp_path)
    assert loaded.study("synthetic_extreme")["source"].unique().tolist() == ["synthetic/extreme"]


# -------------------------------------------------------------------------------- 7. progress


def test_progress_lines_when_stderr_is_not_a_terminal(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "PROGRESS_EVERY_S", 0.0)  # a line every epoch instead of every 30 s
    train(tiny(weights=[4.0], regimes=["none", "l2"]), data, tmp_path, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "run-epochs" in line]
    assert len(lines) == 2
    assert "stack 1/1 (2 runs), epoch 1/2; 2/4 run-epochs; elapsed" in lines[0] and "left" in lines[0]
    assert "epoch 2/2; 4/4 run-epochs" in lines[1]


# ------------------------------------------------------------------- issue 15.4: any stack's loop


def test_fit_table_trains_a_2d_stack_to_a_tidy_table_and_resumes_exactly(tmp_path):
    from iwshift.models import Stacked2D

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(40, 2)), dtype=torch.float32)
    y = torch.tensor((x[:, 0] > 0).long().numpy())
    runs = training.StackedRuns(seeds=[0, 1], train_index=np.tile(np.arange(40), (2, 1)),
                             example_weights=np.ones((2, 40)), l2=[0.0, 0.01], dropout=[0.0, 0.0])

    def trainer():
        model = Stacked2D("mlp", runs.seeds, hidden=8, dropout=runs.dropout)
        return training.Trainer(model, runs, x, y, lr=0.1, momentum=0.9, batch_size=8, engine="torch")

    ids = pd.DataFrame({"run": ["a", "b"], "seed": [0, 1]})
    evaluate = lambda t: {"accuracy": (t.predict_logits(x).argmax(-1) == y).float().mean(1).numpy()}  # noqa: E731
    whole = training.fit_table(trainer(), ids, 4, [1, 2, 4], evaluate)
    assert list(whole.columns[:3]) == ["run", "seed", "epoch"] and len(whole) == 6
    assert list(whole["epoch"]) == [1, 1, 2, 2, 4, 4]
    checkpoint = training.Checkpoint(tmp_path / "c.pt", every=2, meta={"runs": ["a", "b"]})
    first = trainer()
    first_table = training.fit_table(first, ids, 4, [1, 2, 4], evaluate, checkpoint)
    assert training.read_checkpoint(tmp_path / "c.pt")["trainer"]["epoch"] == 2
    resumed = training.fit_table(trainer(), ids, 4, [1, 2, 4], evaluate, checkpoint)
    for table in (first_table, resumed):
        pd.testing.assert_frame_equal(table.drop(columns="seconds"), whole.drop(columns="seconds"), check_exact=True)
    other = training.Checkpoint(tmp_path / "c.pt", every=2, meta={"runs": ["x"]})  # not this stack's: not resumed
    fresh = trainer()
    training.fit_table(fresh, ids, 1, [1], evaluate, other)
    assert fresh.epoch == 1


@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_a_learning_rate_schedule_sets_each_epochs_rate_on_the_device(engine):
    """fit_table's ``schedule``: the trainer's own rate as a schedule changes nothing; a rate of 0 for the first
    epochs leaves the parameters where they started, and training goes on from there once the rate rises."""
    from iwshift.models import Stacked2D

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(40, 2)), dtype=torch.float32)
    y = torch.tensor((x[:, 0] > 0).long().numpy())
    runs = training.StackedRuns(seeds=[0, 1], train_index=np.tile(np.arange(40), (2, 1)),
                                example_weights=np.ones((2, 40)), l2=[0.0, 0.01], dropout=[0.0, 0.0])

    def trainer():
        model = Stacked2D("lr", runs.seeds, hidden=8, dropout=runs.dropout)
        fused = dict(momentum=0.0, batch_order="counter") if engine == "fused" else dict(momentum=0.9)
        return training.Trainer(model, runs, x, y, lr=0.1, batch_size=8, engine=engine, **fused)

    ids = pd.DataFrame({"run": ["a", "b"], "seed": [0, 1]})
    evaluate = lambda t: {"w": t.model.w2.detach().reshape(2, -1)[:, 0].numpy().copy()}  # noqa: E731
    plain = training.fit_table(trainer(), ids, 4, [1, 2, 3, 4], evaluate)
    constant = training.fit_table(trainer(), ids, 4, [1, 2, 3, 4], evaluate, schedule=lambda epoch: 0.1)
    pd.testing.assert_frame_equal(constant.drop(columns="seconds"), plain.drop(columns="seconds"), check_exact=True)
    start = trainer().model.w2.detach().reshape(2, -1)[:, 0].numpy()
    warm = training.fit_table(trainer(), ids, 4, [1, 2, 3, 4], evaluate, schedule=lambda e: 0.0 if e <= 2 else 0.1)
    frozen, moved = warm[warm["epoch"] <= 2], warm[warm["epoch"] > 2]
    np.testing.assert_array_equal(frozen["w"].to_numpy(), np.tile(start, 2))
    assert (moved["w"].to_numpy() != np.tile(start, 2)).all()


def test_a_saved_run_reloads_identically_and_its_files_are_readable_as_open_makes_them(tmp_path):
    import os
    import stat

    from iwshift import results

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"run": ["r"] * 4, "epoch": [1, 2, 5, 10], "weight_source": ["true"] * 4,
                          "loss": rng.normal(size=4), "acc32": rng.random(4).astype(np.float32).astype(np.float64),
                          "tiny": [1e-300, 5e-324, np.nan, 1.0], "collapsed": [False, True, False, False]})
    returned = results.write_run(tmp_path / "r", table, {"run": {"run": "r", "weight_source": "true"}, "config": {}})
    loaded, record = results.load_run(tmp_path, "r")
    pd.testing.assert_frame_equal(loaded, table, check_exact=True)  # "true" stays text, the flags booleans
    assert returned == (tmp_path / "r" / "metrics.csv").read_bytes()  # write_run returns the bytes it wrote
    mask = os.umask(0)
    os.umask(mask)
    for name in ("metrics.csv", "config.json"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o666 & ~mask


def test_each_runs_text_cut_from_one_csv_of_many_runs_is_the_text_of_its_own_table():
    from iwshift import results

    rng = np.random.default_rng(1)
    runs = ["b", "a", "c"]
    table = pd.DataFrame({"run": [runs[i % 3] for i in range(12)], "epoch": np.repeat([1, 2, 3, 4], 3),
                          "note": ["x,y", 'say "hi"', "", "plain"] * 3, "loss": rng.normal(size=12),
                          "acc32": rng.random(12).astype(np.float32), "gap": [np.nan, 1.0, 2.5] * 4,
                          "flag": [True, False, True] * 4})
    table.loc[4, "gap"] = 3.0  # run a: integral floats only, run b and c: not
    table = table.drop(index=9).reset_index(drop=True)  # run b: one row fewer
    expected = {name: results.table_text(part.reset_index(drop=True)).encode()
                for name, part in table.groupby("run", sort=False)}
    texts = results.run_texts(table)
    assert list(texts) == runs and texts == expected
    table.loc[5, "note"] = "two\nlines"  # a quoted field across lines: converted run by run, still exact
    expected["c"] = results.table_text(table[table["run"] == "c"].reset_index(drop=True)).encode()
    assert b"two\nlines" in expected["c"] and results.run_texts(table) == expected


def test_the_runners_table_is_the_one_its_folder_holds(data, tmp_path):
    """A runner merges the runs it has just written from the bytes it wrote (not read again) and the others from
    disk: its table equals the folder's, dtypes and every bit included (float32 metrics, integral floats, flags)."""
    from helpers import tiny_synthetic, train_synthetic

    train(tiny(epochs=2, weights=[4.0], regimes=["none"]), data, tmp_path / "cifar")  # one run trained before
    table = train(tiny(epochs=2, weights=[1.0, 4.0], regimes=["none", "l2"]), data, tmp_path / "cifar")
    assert table["run"].nunique() == 4
    pd.testing.assert_frame_equal(table, results.merge(tmp_path / "cifar", table["run"].unique()), check_exact=True)
    runs, table = train_synthetic(tiny_synthetic(epochs=3), tmp_path / "synthetic")
    assert (table.dtypes == np.float32).sum() == 0 and len(table) == len(runs) * 3
    pd.testing.assert_frame_equal(table, results.merge(tmp_path / "synthetic", runs["run"]), check_exact=True)


def test_results_merge_collects_every_complete_run_of_a_folder_whatever_grid_made_it(tmp_path, capsys):
    for name, w in (("a", 1.0), ("b", 2.0)):  # two runs, as two commands with other grids would leave them
        table = pd.DataFrame({"run": [name] * 2, "epoch": [1, 2], "loss": [w, w / 2]})
        results.write_run(tmp_path / "out" / name, table, {"run": {"run": name}, "config": {}})
    (tmp_path / "out" / "c").mkdir()  # an incomplete run is left out
    assert results.main(["merge", str(tmp_path / "out")]) == 0
    merged = results.read_table(tmp_path / "out" / "merged.csv")
    assert list(merged["run"]) == ["a", "a", "b", "b"]
    assert results.main(["merge", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.strip() == f"python -m iwshift.results: error: no complete runs in {tmp_path / 'none'}/"


def test_a_table_reloads_with_booleans_only_where_booleans_were_written(tmp_path):
    """Health flags written as True/False come back as booleans; a text column whose values pandas would also
    read as booleans (a weight source called "true", a flag spelled "false") stays text."""
    from iwshift import results

    table = pd.DataFrame({"run": ["a", "b"], "diverged": [False, True], "weight_source": ["true", "true"],
                          "note": ["false", "FALSE"], "loss": [0.1, 0.2]})
    results.write_table(tmp_path / "m.csv", table)
    back = results.read_table(tmp_path / "m.csv")
    assert back["diverged"].dtype == bool and back["diverged"].tolist() == [False, True]
    assert back["weight_source"].tolist() == ["true", "true"] and back["note"].tolist() == ["false", "FALSE"]
    pd.testing.assert_frame_equal(back, table)
