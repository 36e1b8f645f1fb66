"""Run health: seeded CNN dropout, eval-mode training accuracy, divergence and collapse flags, and the
scripts' exit status when a run diverged (CPU, tiny made-up images, fp32)."""


import numpy as np
import pandas as pd
import pytest
import torch

from functools import partial

from helpers import fake_cifar, load_script, tiny_binary, tiny_extension, tiny_synthetic, train, train_synthetic
from iwshift import cifar_binary as study
from iwshift import health, synthetic
from iwshift.cifar_data import CIFAR10_CLASSES
from iwshift.kernels.counter import DROPOUT_STREAM, counter_uniform, dropout_mask, dropout_masks, dropout_scales
from iwshift.models import StackedCNN
from iwshift.train import StackedRuns, Trainer, normalize, to_device_images

CAT, DOG = CIFAR10_CLASSES.index("cat"), CIFAR10_CLASSES.index("dog")
HEALTH = ["train_accuracy_eval", "diverged", "collapsed", "status"]


@pytest.fixture(scope="module")
def data():
    return fake_cifar()


tiny = partial(tiny_binary, per_class=16, weights=[1.0], regimes=["dropout"], dropout=0.5)


def _toy(n=32):
    data = fake_cifar(train_per_class=n // 2)
    keep = np.isin(data.train.labels, (CAT, DOG))
    return (to_device_images(data.train.images[keep], "cpu"),
            torch.as_tensor((data.train.labels[keep] == DOG).astype(np.int64)))


def _trainer(runs, images, labels, lr=0.05):
    model = StackedCNN(runs.n_models, 0.0625, dropout=runs.dropout)
    model.reset_parameters(runs.seeds)
    return Trainer(model, runs, images, labels, lr=lr, batch_size=8, image_normalization="cifar10")


# ------------------------------------------------------------------------------ seeded dropout (12.6)


def _train_dropout_runs(runs, images, labels, epochs=2):
    trainer = _trainer(runs, images, labels)
    stats = [trainer.train_epoch() for _ in range(epochs)]
    return stats, [p.detach().clone() for p in trainer.model.parameters()], trainer


def test_a_dropout_run_gives_the_same_numbers_twice_and_alone_or_in_a_stack():
    images, labels = _toy(16)
    n = len(labels)
    everything = np.arange(n)
    alone = StackedRuns([3], everything[None], np.ones((1, n)), [0.0], [0.5])
    # the same run (seed 3, p = 0.5) as the middle run of a stack with other seeds and dropout rates
    stack = StackedRuns([5, 3, 4], np.stack([everything[::-1], everything, everything]),
                        np.stack([np.ones(n), np.ones(n), np.where(labels.numpy() == 1, 4.0, 1.0)]),
                        [0.0, 0.0, 0.01], [0.3, 0.5, 0.5])
    torch.manual_seed(0)  # the global RNG must play no part: draws from it in between change nothing
    first_alone = _train_dropout_runs(alone, images, labels)
    torch.rand(1000)
    second_alone = _train_dropout_runs(alone, images, labels)
    first_stack = _train_dropout_runs(stack, images, labels)
    torch.rand(1000)
    second_stack = _train_dropout_runs(stack, images, labels)
    for (stats_a, params_a, _), (stats_b, params_b, _) in ((first_alone, second_alone), (first_stack, second_stack)):
        for a, b in zip(stats_a, stats_b):
            np.testing.assert_array_equal(a.loss_weighted, b.loss_weighted)
            np.testing.assert_array_equal(a.accuracy, b.accuracy)
        for p, q in zip(params_a, params_b):
            assert torch.equal(p, q)
    for a, b in zip(first_alone[0], first_stack[0]):  # run 1 of the stack is the run alone
        assert b.loss_weighted[1] == pytest.approx(a.loss_weighted[0], rel=1e-5, abs=1e-7)
        assert b.accuracy[1] == a.accuracy[0]
    together = first_stack[2].predict_logits(images)[1]
    torch.testing.assert_close(together, first_alone[2].predict_logits(images)[0], rtol=1e-4, atol=1e-5)


def test_cnn_dropout_masks_are_the_counter_based_masks_of_the_2d_models():
    seeds = torch.tensor([0, 7, 2**40 + 3])
    for step in (0, 1, 12_345_678):
        uniform = counter_uniform(seeds, DROPOUT_STREAM, step, torch.arange(6 * 5))
        as_tensor = counter_uniform(seeds, DROPOUT_STREAM, torch.tensor(step), torch.arange(6 * 5))
        assert torch.equal(uniform, as_tensor)  # the step may be a device tensor (CUDA graphs)
        for k, seed in enumerate(seeds.tolist()):
            expected = dropout_mask(seed, step, 6, 5, 0.5) == 0
            np.testing.assert_array_equal((uniform[k] < 0.5).view(6, 5).numpy(), expected)
    model = StackedCNN(2, 0.0625, dropout=[0.5, 0.0], seeds=[1, 2])
    model.train()
    x = torch.randn(2, 4, 3, 32, 32)
    with pytest.raises(ValueError, match="step"):
        model(x)
    assert torch.equal(model(x, step=3), model(x, step=3))
    assert not torch.equal(model(x, step=3)[0], model(x, step=4)[0])  # a new mask each step
    assert torch.equal(model(x, step=3)[1], model(x, step=4)[1])      # p = 0: deterministic


@pytest.mark.parametrize("p", [0.1, 1 / 3, 0.5, 0.9])
def test_device_dropout_scales_equal_the_fused_engines_bit_for_bit(p):
    """The torch engine's masks (any model, any device) and the fused engine's numba masks: the same zeros
    and the same 1/(1-p), rounded from float64 (at p = 1/3 float32 arithmetic would round differently)."""
    seeds = np.array([0, 7, 2**40 + 3])
    dropout = np.array([p, 0.0, p], np.float32)
    scales = dropout_scales(torch.as_tensor(seeds), torch.as_tensor(dropout), torch.tensor(41), 6, [5])[0]
    np.testing.assert_array_equal(scales.numpy().view(np.int32),
                                  dropout_masks(seeds, 41, 6, 5, dropout).view(np.int32))


# ----------------------------------------------------------------- eval-mode training accuracy (12.5)


def test_train_accuracy_eval_is_the_eval_mode_accuracy_on_the_runs_training_set(data, tmp_path, monkeypatch):
    cfg = tiny(dropout=0.9, regimes=["none", "dropout"])
    runs = study.build_runs(cfg)
    direct: list[dict[str, np.ndarray]] = []
    evaluate = study._evaluate

    def spy(trainer, pair_, subsets):
        out = evaluate(trainer, pair_, subsets)
        accuracy, collapsed = [], []
        for k, name in enumerate(spy.group):
            index, _ = study.training_set(runs.set_index("run").loc[name], pair_, cfg)
            trainer.model.eval()
            with torch.no_grad():  # eval mode, the run's whole training set, by hand
                x = normalize(pair_.images[torch.as_tensor(index)])
                logits = trainer.model(x.unsqueeze(0).expand(trainer.runs.n_models, *x.shape))[k]
            accuracy.append((logits.argmax(-1) == pair_.labels[torch.as_tensor(index)]).float().mean().item())
            pred = trainer.predict_logits(pair_.images[pair_.test])[k].argmax(-1)
            collapsed.append(max((pred == c).float().mean().item() for c in (0, 1)) >= 0.999)
        direct.append({"accuracy": np.array(accuracy), "collapsed": np.array(collapsed)})
        return out

    original_build = study.BinaryStudy.build

    def remember_group(self, group, *args, **kw):
        spy.group = list(group["run"])
        return original_build(self, group, *args, **kw)

    monkeypatch.setattr(study, "_evaluate", spy)
    monkeypatch.setattr(study.BinaryStudy, "build", remember_group)
    table = train(cfg, data, tmp_path)
    assert set(HEALTH) <= set(table.columns)
    on_disk = pd.read_csv(tmp_path / table["run"].iloc[0] / "metrics.csv")
    assert set(HEALTH) <= set(on_disk.columns)
    ordered = table.set_index(["run", "epoch"]).loc[[(r, e) for r in spy.group for e in (1, 2)]]
    assert len(direct) == 2  # one stack, epochs 1-2
    assert len(spy.group) == len(runs)
    got = ordered["train_accuracy_eval"].to_numpy().reshape(len(runs), 2)
    want = np.stack([d["accuracy"] for d in direct], 1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(ordered["collapsed"].to_numpy().reshape(len(runs), 2),
                                  np.stack([d["collapsed"] for d in direct], 1))
    # with dropout 0.9 the running (training-mode) accuracy is not the eval-mode accuracy
    dropout = table[table["regime"] == "dropout"]
    assert not np.allclose(dropout["train_accuracy"], dropout["train_accuracy_eval"])


def test_train_eval_subsets_are_fixed_within_the_training_set_and_shared():
    rng = np.random.default_rng(1)
    full = np.arange(100)
    part = np.sort(rng.choice(100, 60, replace=False))
    small = np.arange(10)
    sets = [(full, None), (part, None), (full, None), (small, None)]
    a = health.train_eval_subsets(sets, 100, size=30, seed=4)
    b = health.train_eval_subsets(sets, 100, size=30, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # fixed by its seed
    assert [len(s) for s in a] == [30, 30, 30, 10]  # all of a training set smaller than the size
    assert set(a[1]) <= set(part) and len(np.unique(a[1])) == 30
    np.testing.assert_array_equal(a[0], a[2])  # the same training set, the same subset
    assert len(set(a[0]) & set(a[1])) > 10     # overlapping sets share examples: one forward pass serves both
    assert not np.array_equal(a[0], health.train_eval_subsets(sets, 100, size=30, seed=5)[0])


# ---------------------------------------------------------------- divergence and collapse (12.8, 14.4)


def test_a_diverging_run_is_flagged_in_its_epoch_and_leaves_the_other_runs_alone():
    images, labels = _toy(16)
    n = len(labels)
    everything = np.tile(np.arange(n), (2, 1))
    huge = np.where(labels.numpy() == 1, 1e39, 1.0)  # overflows float32: the loss becomes NaN
    with np.errstate(over="ignore"):
        stack = _trainer(StackedRuns([0, 1], everything, np.stack([np.ones(n), huge]), [0.0, 0.0], [0.5, 0.5]),
                         images, labels)
    alone = _trainer(StackedRuns([0], everything[:1], np.ones((1, n)), [0.0], [0.5]), images, labels)
    first = stack.train_epoch()
    assert first.nonfinite.tolist() == [False, True]
    assert stack.diverged.tolist() == [False, True] and stack.diverged_epoch.tolist() == [0, 1]
    stack.train_epoch()
    alone.train_epoch(), alone.train_epoch()
    assert stack.diverged_epoch.tolist() == [0, 1]  # the epoch it first diverged in is kept
    logits = stack.predict_logits(images)
    assert not torch.isfinite(logits[1]).all()
    torch.testing.assert_close(logits[0], alone.predict_logits(images)[0], rtol=1e-4, atol=1e-5)  # no NaN leaks


class _HostReads:
    """Counts the calls that copy a tensor to the host (each a sync on a GPU)."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("cpu", "item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def wrapper(tensor, *args, **kw):
            self.count += 1
            return original(tensor, *args, **kw)
        return wrapper


def test_divergence_detection_reads_the_device_once_per_epoch_not_per_step(monkeypatch):
    reads = []
    for n in (16, 48):  # 2 and 6 steps per epoch
        images, labels = _toy(n)
        trainer = _trainer(StackedRuns([0, 1], np.tile(np.arange(n), (2, 1)), np.ones((2, n)), [0.0, 0.0],
                                       [0.5, 0.0]), images, labels)
        trainer.train_epoch()  # warm up (first-call work)
        with monkeypatch.context() as patch:
            counter = _HostReads(patch)
            trainer.train_epoch()
            reads.append(counter.count)
    assert reads[0] == reads[1] and reads[0] <= 3


def test_constant_predictor_and_the_status_of_a_run():
    pred = torch.zeros(3, 2000, dtype=torch.long)
    pred[1, :2] = 1   # 99.9 % one class: collapsed
    pred[2, :3] = 1   # 99.85 %: not
    assert health.constant_predictor(pred, 2).tolist() == [True, True, False]
    assert health.constant_predictor(torch.tensor([[3, 3, 3, 3]]), 10).tolist() == [True]

    def run(diverged, collapsed):
        return pd.DataFrame({"run": "r", "epoch": np.arange(1, len(diverged) + 1), "diverged": diverged,
                             "collapsed": collapsed})

    ok = health.with_status(run([False] * 3, [True, True, False]))  # collapsed, then recovered
    assert (ok["status"] == "ok").all() and len(ok) == 3
    collapsed = health.with_status(run([False] * 3, [False, False, True]))
    assert (collapsed["status"] == "collapsed").all()
    diverged = health.with_status(run([False, True, True], [False, True, True]))
    assert (diverged["status"] == "diverged").all() and diverged["epoch"].tolist() == [1, 2]


def test_a_binary_sweep_stops_a_diverged_run_and_marks_it(data, tmp_path):
    cfg = tiny(weights=[1.0, 1e39], regimes=["none"])
    with np.errstate(over="ignore"):
        table = train(cfg, data, tmp_path)
    bad = table[table["weight"] == 1e39]
    good = table[table["weight"] == 1.0]
    assert bad["epoch"].tolist() == [1] and bad["diverged"].all() and (bad["status"] == "diverged").all()
    assert good["epoch"].tolist() == [1, 2] and not good["diverged"].any()
    assert (good["status"] != "diverged").all()
    assert "diverged" in health.divergence_summary(table, "prog") and "1 of 2 runs" in health.divergence_summary(table, "prog")
    assert health.divergence_summary(good, "prog") is None
    kept = tmp_path / bad["run"].iloc[0] / "metrics.csv"
    stamp = kept.stat().st_mtime_ns
    again = train(cfg, data, tmp_path)  # a diverged run's results are complete
    assert kept.stat().st_mtime_ns == stamp and again["status"].tolist() == table["status"].tolist()




def test_binary_script_with_weight_1e39_saves_marked_results_and_exits_non_zero(data, tmp_path, monkeypatch,
                                                                               capsys):
    import iwshift.cifar_data

    monkeypatch.setattr(iwshift.cifar_data, "load_for_script", lambda *a, **k: data)
    code = load_script("CIFAR10_binary_classifier.py").main(
        ["--preset", "cpu", "--per-class", "16", "--epochs", "2", "--width", "0.0625", "--seeds", "0",
         "--weights", "1", "1e39", "--regimes", "none", "--other-eval", "8", "--noise-eval", "4",
         "--settings", "weighting", "--precision", "fp32", "--device", "cpu", "--out", str(tmp_path / "out"),
         "--no-figures"])
    assert code == health.DIVERGED_EXIT_STATUS != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 of 2 runs diverged" in last and "weighting_w1e+39_none_s0" in last
    merged = pd.read_csv(tmp_path / "out" / "merged.csv")
    assert merged.groupby("run")["status"].first().to_dict() == {
        "weighting_w1_none_s0": merged.loc[merged.weight == 1, "status"].iloc[0], "weighting_w1e+39_none_s0": "diverged"}
    assert merged.loc[merged.weight == 1, "status"].iloc[0] != "diverged"


def test_synthetic_script_with_weight_1e39_marks_diverged_runs_and_exits_non_zero(tmp_path, capsys):
    code = load_script("synthetic_study.py").main(
        ["--weight", "1e39", "--epochs", "5", "--seeds", "0", "--datasets", "separable", "--models", "lr",
         "--regimes", "none", "--out", str(tmp_path / "r"), "--no-figures", "--no-extreme"])
    assert code == health.DIVERGED_EXIT_STATUS
    assert "2 of 3 runs diverged" in capsys.readouterr().err.strip().splitlines()[-1]
    from iwshift import results

    table = results.merge(tmp_path / "r")  # each run's metrics.csv, with its columns and status
    status = table.groupby("weighting")["status"].agg(set).to_dict()
    assert status == {"equal": {"ok"}, "up": {"diverged"}, "down": {"diverged"}}
    assert table.loc[table.weighting == "up", "epoch"].tolist() == [1]  # not measured after divergence
    assert not table.loc[table.weighting == "equal", "diverged"].any()


def test_synthetic_study_flags_parameters_that_overflow(tmp_path):
    cfg = tiny_synthetic(datasets=["separable"], models=["mlp"], seeds=[0], weightings=["equal", "up"], epochs=20,
                         weight=1e30, lr_scale=50.0, n_per_class=256)
    table = train_synthetic(cfg, tmp_path)[1]
    status = table.groupby("weighting")["status"].first().to_dict()
    assert status["up"] == "diverged"
    assert health.diverged_runs(table) == table.loc[table.weighting == "up", "run"].unique().tolist()


def test_extension_records_the_health_columns(tmp_path):
    data = fake_cifar(train_per_class=40, test_per_class=12)
    cfg = tiny_extension(regimes=["dropout"], weight_sources=["none", "true"])
    table = train(cfg, data, tmp_path)
    assert set(HEALTH) <= set(table.columns)
    assert table["train_accuracy_eval"].between(0, 1).all() and not table["diverged"].any()
    assert set(table["status"]) <= {"ok", "collapsed"}
