"""The paper study in GPU jobs (iwshift.plan): chunks under the limit by the record's numbers, their union the
whole study, and their archives merged into one table that the report reads as one source."""

import tarfile
from pathlib import Path

import pytest

from helpers import ROOT, fake_cifar, load_script, tiny_binary, train
from iwshift import plan, results, wang2022
from iwshift.checks import ConfigError
from iwshift.cifar_binary import BinaryStudy
from iwshift.config import BinaryConfig, Wang2022Config
from iwshift.report.load import load as load_results

H200 = ROOT / "benchmarks" / "results" / "nvidia-h200.txt"


def fake_record(tmp_path: Path, ms: float = 1.0) -> plan.GpuRecord:
    """A record in the committed format whose numbers make the tiny grid's jobs a few seconds each."""
    path = tmp_path / "fake-gpu.txt"
    path.write_text("# benchmarks/gpu_check.sh, 2030-01-01T00:00Z, one NVIDIA FAKE (made up), trainer precision fp32\n"
                    f"none regime  stack of 2 runs (48 images, 3 steps/epoch): 0.01 s/epoch training ({ms} ms/step),"
                    "  0.2 s/evaluation,   0.1 s set-up ->  0.1 min\n"
                    f"device=cuda k1_step_ms={ms} k4_step_ms={2 * ms} k8_step_ms={4 * ms}\n")
    return plan.read_record(path)


def test_the_committed_record_reads_as_measured():
    record = plan.read_record(H200)
    assert record.step_ms[7] == 1.157 and record.step_ms[21] == 2.33 and record.step_ms[84] == 7.475
    assert record.step_seconds(7) == pytest.approx(1.157e-3)
    assert record.step_seconds(8) == pytest.approx((1.157 + (1.33 - 1.157) / 2) * 1e-3)  # linear between 7 and 9
    assert record.device == "NVIDIA H200" and record.precision == "bf16"
    assert plan.newest_record().path == str(H200)


@pytest.mark.parametrize("setting", ["weighting", "imbalance"])
def test_the_paper_study_in_chunks_under_the_limit_covering_every_run_once(setting):
    record = plan.read_record(H200)
    cfg = BinaryConfig(setting=setting)
    chunks = plan.chunks(BinaryStudy, cfg, BinaryStudy(cfg).chunk_by, record, limit_s=9 * 60)
    assert all(c.seconds <= 9 * 60 for c in chunks) and len(chunks) > 1
    names = [name for c in chunks for name in c.runs]
    assert sorted(names) == sorted(BinaryStudy(cfg).runs()["run"])  # the union is the study, each run once
    # a chunk is a slice of the usual command: its runs are what the sliced configuration declares
    for c in chunks:
        assert set(c.slice) <= set(BinaryStudy(cfg).chunk_by)
        assert list(BinaryStudy(c.config).runs()["run"]) == c.runs
    if setting == "weighting":  # one seed of a regime: K = 7 at the record's 1.157 ms per step, about 7 min
        assert chunks[0].slice == {"regimes": ["none"], "seeds": [0]}
        assert 6 * 60 < chunks[0].seconds < 8 * 60


def test_the_wang_grid_in_chunks_under_the_limit():
    record = plan.read_record(H200)
    cfg = Wang2022Config()
    chunks = plan.chunks(wang2022.Wang2022Study, cfg, wang2022.Wang2022Study.chunk_by, record, 9 * 60)
    assert all(c.seconds <= 9 * 60 for c in chunks)
    assert sorted(n for c in chunks for n in c.runs) == sorted(wang2022.Wang2022Study(cfg).runs()["run"])


def test_a_run_that_alone_is_over_the_limit_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="over the 0.1 min limit"):
        plan.chunks(BinaryStudy, BinaryConfig(), BinaryStudy(BinaryConfig()).chunk_by, plan.read_record(H200), 6)


def test_chunks_archived_and_merged_are_one_table_with_every_run_once_read_as_one_source(tmp_path):
    cfg = tiny_binary(seeds=[0, 1])
    record = fake_record(tmp_path)
    # per stack 0.1 s to set up and 0.1 s per run per evaluation (2 evaluations): at most 3 runs a job
    chunks = plan.chunks(BinaryStudy, cfg, BinaryStudy(cfg).chunk_by, record, limit_s=plan.STARTUP_S + 0.75)
    assert len(chunks) == 4 and all(len(c.runs) == 3 for c in chunks)
    data = fake_cifar(train_per_class=24, test_per_class=4)
    archives = []
    for number, chunk in enumerate(chunks):  # each job on a machine of its own, its results as one archive
        machine = tmp_path / f"machine{number}" / "out"
        train(chunk.config, data, machine)
        archive = tmp_path / f"chunk{number}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for name in chunk.runs:
                tar.add(machine / name, arcname=name)
        archives.append(archive)
        assert not any(".checkpoints" in m for m in tarfile.open(archive).getnames())
    merged = tmp_path / "results" / "cifar_binary_gpu"
    merged.mkdir(parents=True)
    for archive in archives:
        with tarfile.open(archive) as tar:
            tar.extractall(merged, filter="data")
    assert plan.next_chunk(chunks, merged) is None
    table = results.merge(merged, BinaryStudy(cfg).runs()["run"], strict=True)
    last = table[table["epoch"] == cfg.epochs]
    assert sorted(last["run"]) == sorted(BinaryStudy(cfg).runs()["run"])  # every run exactly once
    res = load_results(tmp_path / "results")
    assert set(res.table["source"]) == {"cifar_binary_gpu"}


def test_the_scripts_plan_prints_slices_of_the_command_and_the_next_unfinished_one(tmp_path, capsys):
    script = load_script("CIFAR10_binary_classifier.py")
    out = tmp_path / "out"
    assert script.main(["--preset", "paper", "--settings", "weighting", "--plan", "all", "--out", str(out),
                        "--seeds", "0", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    jobs = [line for line in lines if not line.startswith("#")]
    assert len(jobs) == 8  # 4 regimes x 2 seeds, K = 7 each
    assert jobs[0].startswith(f"python CIFAR10_binary_classifier.py --preset paper --out {out} --settings weighting "
                              "--regimes none --seeds 0   # job 1: 7 runs,")
    assert script.main(["--preset", "paper", "--settings", "weighting", "--plan", "next", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (f"python CIFAR10_binary_classifier.py --preset paper --out {out} "
                                               "--settings weighting --regimes none --seeds 0")
    assert not out.exists()  # a plan writes nothing
