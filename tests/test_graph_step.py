"""The trainer's SGD step trains each run of a stack as plain ``torch.optim.SGD`` trains one ``nn.Module``
(on CPU), and captured as a CUDA graph (``graph=True``, the default, on CUDA) it computes what the same step
computes eagerly (``graph=False``)."""

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch
from reference_sgd import reference_cnn

from iwshift.models import Stacked2D, StackedCNN
from iwshift.train.capture import CapturedStep
from iwshift.train.optimizer import CHECK_STEPS
from iwshift.train import (Checkpoint, LossSpec, SideBySide, StackedRuns, Trainer, fit_table, to_device_images,
                           train_side_by_side)

N_IMAGES, N_TRAIN, BATCH = 60, 37, 8  # 4 full batches and a last one of 5 per epoch
CUDA = torch.cuda.is_available()


def _runs(losses: bool = True) -> StackedRuns:
    """Three runs with their own training sets, weights, weight decay, dropout and deferral (and, with
    ``losses``, their own losses)."""
    rng = np.random.default_rng(0)
    index = np.stack([rng.choice(N_IMAGES, N_TRAIN, replace=False) for _ in range(3)])
    loss = [LossSpec(), LossSpec("poly", poly_alpha=1.0, poly_beta=0.5), LossSpec("logit_adjusted", tau=1.0)] if losses else None
    return StackedRuns(seeds=[3, 5, 7], train_index=index, example_weights=rng.uniform(0.1, 8.0, index.shape),
                       l2=[0.0, 1e-3, 1e-2], dropout=[0.0, 0.5, 0.0], loss=loss, defer_until=[0, 2, 0])


def _data(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, N_IMAGES)
    images = np.clip(rng.integers(0, 200, (N_IMAGES, 32, 32, 3)) + 40 * labels[:, None, None, None], 0, 255)
    return to_device_images(images.astype(np.uint8), device), torch.as_tensor(labels, device=device)


def _trainer(graph: bool = True, device: str = "cpu", batch_norm: bool = False, precision: str = "fp32",
             normalization: str = "weight_sum", runs: StackedRuns | None = None, cudnn_benchmark: bool = True,
             momentum: float = 0.9, weight_copies: bool = True) -> Trainer:
    runs = runs or _runs()
    model = StackedCNN(runs.n_models, 0.0625, batch_norm=batch_norm, dropout=runs.dropout)
    model.reset_parameters(runs.seeds)
    images, labels = _data(device)
    return Trainer(model.to(device), runs, images, labels, lr=0.05, momentum=momentum, batch_size=BATCH,
                   normalization=normalization, precision=precision, channels_last=precision == "bf16",
                   image_normalization="cifar10", graph=graph, cudnn_benchmark=cudnn_benchmark,
                   weight_copies=weight_copies)


def _train(trainer: Trainer, epochs: int = 2) -> tuple[list, list]:
    """Epoch statistics and evaluation logits along the way (evaluation between epochs switches the model
    to evaluation mode; the next epoch must train as before)."""
    stats, logits = [], []
    probe = trainer.inputs[:5]
    for _ in range(epochs):
        s = trainer.train_epoch()
        stats.append(np.stack([s.loss_weighted, s.loss, s.accuracy]))
        logits.append(trainer.predict_logits(probe).cpu())
    return stats, logits


def _assert_same_training(a: Trainer, b: Trainer, atol: float = 0.0, rtol: float = 0.0) -> None:
    stats_a, logits_a = _train(a)
    stats_b, logits_b = _train(b)
    for x, y in zip(stats_a, stats_b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
    for x, y in zip(logits_a, logits_b):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        torch.testing.assert_close(p.detach().cpu(), q.detach().cpu(), rtol=rtol, atol=atol, msg=name)
    for (name, p), q in zip(a.model.named_buffers(), b.model.buffers()):  # batch-norm running statistics
        torch.testing.assert_close(p.cpu(), q.cpu(), rtol=rtol, atol=atol, msg=name)
    for p, q in zip(a.optimizer.buffers, b.optimizer.buffers):  # momentum
        torch.testing.assert_close(p.cpu(), q.cpu(), rtol=rtol, atol=atol)
    assert a.epoch == b.epoch


@pytest.mark.parametrize("batch_norm, normalization, n_train, momentum", [
    (False, "weight_sum", N_TRAIN, 0.9),
    (True, "mean", N_TRAIN, 0.9),
    (False, "weight_sum", 32, 0.0),   # every batch full, plain SGD
])
def test_each_run_trains_as_plain_torch_sgd_on_one_module(batch_norm, normalization, n_train, momentum):
    runs = _runs(losses=False)
    runs.train_index, runs.example_weights = runs.train_index[:, :n_train], runs.example_weights[:, :n_train]
    trainer = _trainer(batch_norm=batch_norm, normalization=normalization, runs=runs, momentum=momentum)
    initial = StackedCNN(runs.n_models, 0.0625, batch_norm=batch_norm, dropout=runs.dropout, seeds=runs.seeds)
    stats = [trainer.train_epoch() for _ in range(2)]
    for k in range(runs.n_models):
        plain, history = reference_cnn(
            initial, k, trainer.inputs, trainer.labels, runs.train_index[k], runs.example_weights[k], lr=0.05,
            momentum=momentum, l2=runs.l2[k], p=runs.dropout[k], defer_until=runs.defer_until[k], epochs=2,
            batch=BATCH, normalization=normalization)
        for epoch, (loss_weighted, accuracy) in enumerate(history):
            assert stats[epoch].loss_weighted[k] == pytest.approx(loss_weighted, rel=1e-5)
            assert stats[epoch].accuracy[k] == pytest.approx(accuracy, abs=1e-6)
        inputs = trainer._prepare(trainer.inputs[:6])
        plain.eval()
        torch.testing.assert_close(trainer.predict_logits(trainer.inputs[:6])[k], plain(inputs).detach(),
                                   rtol=1e-4, atol=1e-5, msg=f"run {k}")


@pytest.mark.parametrize("batch_norm, momentum", [(False, 0.9), (True, 0.9), (False, 0.0)])
def test_bf16_weight_copies_train_bit_for_bit_as_autocasts_casts(batch_norm, momentum):
    """bf16 training on weight copies that the update keeps computes exactly what autocast's cast of the float32
    weights at every step computes (runs with weight decay, dropout, deferral; batch norm's parameters stay
    float32), and the forward does use the copies: their gradients are the update's."""
    copies = _trainer(precision="bf16", batch_norm=batch_norm, momentum=momentum)
    casts = _trainer(precision="bf16", batch_norm=batch_norm, momentum=momentum, weight_copies=False)
    names = {name for name, _ in copies.model.named_parameters()}
    assert set(copies.weight_copies) == {n for n in names if not n.startswith("norms.")} and not casts.weight_copies
    _assert_same_training(copies, casts)
    parameters = dict(copies.model.named_parameters())
    for name, copy in copies.weight_copies.items():
        assert copy.dtype == torch.bfloat16 and copy.grad is not None and parameters[name].grad is None, name
        assert torch.equal(copy, parameters[name].detach().to(torch.bfloat16)), name  # rounded after each update


def test_a_bf16_trainer_restored_from_its_state_trains_on_as_without_the_break():
    """The weight copies follow restored parameters (a checkpoint), not the ones the trainer was built with."""
    straight, resumed = _trainer(precision="bf16"), _trainer(precision="bf16")
    straight.train_epoch()
    resumed.load_state_dict(straight.state_dict())
    straight.train_epoch()
    resumed.train_epoch()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


class _FakeTritonUpdate:
    """Stands in for :mod:`iwshift.kernels.triton_sgd` (its ``applies`` and ``update``), computing the update in
    torch as written below: right, without the momentum term, or raising (a compiler error)."""

    def __init__(self, mistake: str | None = None):
        self.mistake, self.calls = mistake, 0

    def applies(self, params, grads, buffers, copies):
        return True

    def update(self, params, grads, buffers, copies, decay, n_models, lr, momentum, started):
        self.calls += 1
        if self.mistake == "raises":
            raise RuntimeError("PassManager::run failed")
        for k, (p, g, b, c) in enumerate(zip(params, grads, buffers, copies)):
            g = g.float()
            if decay is not None:
                g = g + p * decay.repeat_interleave(p.shape[0] // n_models).view(-1, *[1] * (p.dim() - 1))
            if momentum:
                if started and self.mistake != "momentum":  # the deliberate bug: the momentum term left out
                    g = b * momentum + g
                b.copy_(g)
            p.sub_(lr * g)
            if c is not None:
                c.copy_(p)


@pytest.mark.parametrize("mistake, message", [
    ("momentum", "after 4 steps with momentum and weight decay, a parameter differs from the _foreach update's"),
    ("raises", "it failed to run \\(RuntimeError: PassManager::run failed"),
])
def test_an_update_kernel_that_fails_its_first_use_check_falls_back_and_says_why(mistake, message):
    """The first-use check of a custom update compares several steps with momentum, weight decay and both
    precisions against the _foreach update on a made-up stack (so the momentum path is checked whatever the
    trainer's state, e.g. under capture): a kernel without the momentum term fails it, and so does one that does
    not run; the trainer then trains with the _foreach update and records why."""
    failing, foreach = _trainer(precision="bf16"), _trainer(precision="bf16")
    failing.optimizer.update, failing.optimizer.kernel = "triton", _FakeTritonUpdate(mistake)
    with pytest.warns(UserWarning, match=f"the Triton SGD update is not used: {message}"):
        _assert_same_training(failing, foreach)
    assert failing.optimizer.fallback is not None and failing.record()["update"].startswith("foreach (triton fell back")


def test_an_update_kernel_that_passes_its_first_use_check_trains():
    """The same check passes a kernel that computes the update (here the fake, in torch): it then runs every step,
    and its path is recorded."""
    kernel = _FakeTritonUpdate()
    trainer = _trainer()
    trainer.optimizer.update, trainer.optimizer.kernel = "triton", kernel
    trainer.train_epoch()
    assert trainer.optimizer.fallback is None and trainer.record()["update"] == "triton"
    assert kernel.calls >= 2 * CHECK_STEPS + N_TRAIN // BATCH  # the check's steps, then the epoch's


def test_the_step_never_reads_tensor_values_on_the_host(monkeypatch):
    """No .item(), .cpu(), bool(tensor) ... inside a step: what would sync the host with the device
    (and break a CUDA graph capture)."""
    trainer = _trainer()
    trainer.train_epoch()  # the epoch's set-up (batch orders, statistics read-back) may use the host
    trainer._buffers.cursor.zero_()

    def forbidden(self, *args, **kwargs):
        raise AssertionError("a tensor's value was read on the host inside the step")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
            patch.setattr(torch.Tensor, name, forbidden)
        trainer._step(BATCH)
        trainer._step(N_TRAIN % BATCH)


def test_graph_is_a_flag_and_applies_to_every_model():
    with pytest.raises(ValueError, match="graph must be True or False"):
        _trainer("auto")
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    runs = StackedRuns(seeds=[0, 1], train_index=np.tile(np.arange(20), (2, 1)), example_weights=np.ones((2, 20)),
                       l2=[0.0, 0.0], dropout=[0.0, 0.5])
    trainer = Trainer(Stacked2D("mlp", runs.seeds, hidden=4, dropout=runs.dropout), runs, x, y, engine="torch")
    assert np.isfinite(trainer.train_epoch().loss).all()  # a 2-D MLP with dropout: masks drawn on the device


@pytest.mark.parametrize("benchmark", [True, False])
def test_cudnn_autotuning_is_the_trainers_setting_while_it_runs_and_restored_after(benchmark):
    trainer = _trainer(cudnn_benchmark=benchmark)
    seen = []
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append(torch.backends.cudnn.benchmark))
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = not benchmark
        trainer.train_epoch()
        trainer.predict_logits(trainer.inputs[:4])
        trainer.class_gradient_norms(trainer.inputs[:4], trainer.labels[:4])
        assert torch.backends.cudnn.benchmark is (not benchmark)  # no global change
    finally:
        torch.backends.cudnn.benchmark = saved
    assert len(seen) > 3 and set(seen) == {benchmark}


def _two_stacks(device: str = "cpu", graph: bool = True, **options) -> list[Trainer]:
    """The three runs of :func:`_runs`, and two other runs (other seeds, sets and weights) with batch norm."""
    rng = np.random.default_rng(2)
    index = np.stack([rng.choice(N_IMAGES, N_TRAIN, replace=False) for _ in range(2)])
    other = StackedRuns(seeds=[11, 13], train_index=index, example_weights=rng.uniform(0.1, 8.0, index.shape),
                        l2=[1e-3, 0.0], dropout=[0.0, 0.0])
    return [_trainer(graph, device, runs=_runs(), **options),
            _trainer(graph, device, batch_norm=True, runs=other, **options)]


def _assert_side_by_side_trains_as_alone(side: list[Trainer], alone: list[Trainer], atol: float = 0.0,
                                         rtol: float = 0.0) -> None:
    rounds = []
    for _ in range(2):
        stats_side = train_side_by_side(side, on_step=lambda: rounds.append(1))
        for trainer, stats in zip(alone, stats_side):
            expected = trainer.train_epoch()
            np.testing.assert_allclose(stats.loss_weighted, expected.loss_weighted, rtol=rtol, atol=atol)
            np.testing.assert_allclose(stats.accuracy, expected.accuracy, rtol=rtol, atol=atol)
    assert len(rounds) == 2 * (N_TRAIN // BATCH + 1)  # each round of full batches, then the partial ones
    for a, b in zip(side, alone):
        for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            torch.testing.assert_close(p.cpu(), q.cpu(), rtol=rtol, atol=atol, msg=name)
        for p, q in zip(a.optimizer.buffers, b.optimizer.buffers):
            torch.testing.assert_close(p.cpu(), q.cpu(), rtol=rtol, atol=atol)
        assert a.epoch == b.epoch == 2


def test_stacks_trained_side_by_side_train_as_each_alone():
    """Two stacks of other sizes, runs and layers (one with batch norm), one epoch each side by side at a
    time: each trains exactly as its own train_epoch trains it (on the CPU their steps take turns)."""
    _assert_side_by_side_trains_as_alone(_two_stacks(graph=False), _two_stacks(graph=False))
    fused = Trainer(Stacked2D("lr", [0]), StackedRuns(seeds=[0], train_index=np.arange(8)[None],
                                                          example_weights=np.ones((1, 8)), l2=[0.0], dropout=[0.0]),
                    torch.randn(8, 2), torch.arange(8) % 2, momentum=0.0, batch_order="counter")
    with pytest.raises(ValueError, match="needs the torch engine"):
        train_side_by_side([fused])


def test_stacks_side_by_side_answer_as_one_trainer_of_their_runs_in_order():
    """SideBySide: logits, per-class gradient norms (each run with its own class weights), divergence and
    epoch statistics are the stacks' own, concatenated in order; a state of other stacks is refused."""
    side, alone = SideBySide(_two_stacks(graph=False)), _two_stacks(graph=False)
    stats = side.train_epoch()
    expected = [t.train_epoch() for t in alone]
    np.testing.assert_array_equal(stats.loss_weighted, np.concatenate([e.loss_weighted for e in expected]))
    probe, labels = alone[0].inputs[:6], alone[0].labels[:6]
    torch.testing.assert_close(side.predict_logits(probe), torch.cat([t.predict_logits(probe) for t in alone]),
                               rtol=0, atol=0)
    got = side.class_gradient_norms(probe, labels)  # each run with its own class weights
    want = [alone[0].class_gradient_norms(probe, labels), alone[1].class_gradient_norms(probe, labels)]
    for i in range(2):
        np.testing.assert_array_equal(got[i], np.concatenate([w[i] for w in want]))
    assert not np.array_equal(got[0][:, 1], got[1][:, 1])  # the weighted norms are not the plain ones
    side.trainers[1].diverged_epoch[1] = 1
    assert side.diverged.tolist() == [False, False, False, False, True] and side.epoch == 1
    with pytest.raises(ValueError, match="other stacks side by side"):
        SideBySide(_two_stacks(graph=False)[::-1]).load_state_dict(side.state_dict())


def test_stacks_side_by_side_checkpoint_and_resume_as_fit_table_trains_them_straight(tmp_path):
    ids = pd.DataFrame({"run": [f"run{k}" for k in range(5)]})

    def evaluate(trainer):
        return {"logit": trainer.predict_logits(trainer.trainers[0].inputs[:1])[:, 0, 1].cpu().numpy()}

    straight = fit_table(SideBySide(_two_stacks(graph=False)), ids, 3, [1, 2, 3], evaluate)
    checkpoint = Checkpoint(tmp_path / "stacks.pt", every=1, meta={"stacks": 2})

    class Stopped(Exception):
        """As a job stopped after its second epoch."""

    def stop_after_two(epoch):
        if epoch == 2:
            raise Stopped

    with pytest.raises(Stopped):
        fit_table(SideBySide(_two_stacks(graph=False)), ids, 3, [1, 2, 3], evaluate, checkpoint, stop_after_two)
    resumed = fit_table(SideBySide(_two_stacks(graph=False)), ids, 3, [1, 2, 3], evaluate, checkpoint)
    pd.testing.assert_frame_equal(straight.drop(columns="seconds"), resumed.drop(columns="seconds"))
    assert len(straight) == 15 and straight["logit"].nunique() > 5


# ------------------------------------------------------------------------------------ CUDA only


@contextlib.contextmanager
def _deterministic_cudnn():
    """cuDNN's deterministic algorithms, chosen by heuristics (the trainers are built with
    ``cudnn_benchmark=False``): both paths then run the same kernels, and two bf16 trajectories do not drift
    apart on a different autotuning pick."""
    saved = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = saved


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("batch_norm", [False, True])
def test_captured_graph_trains_as_the_eager_step_on_cuda(batch_norm):
    runs = _runs()  # with dropout: its masks are counter-based, the same draws on both paths
    with _deterministic_cudnn():
        captured, eager = (_trainer(g, "cuda", batch_norm=batch_norm, runs=runs, cudnn_benchmark=False)
                           for g in (True, False))
        _assert_same_training(captured, eager, atol=1e-6, rtol=1e-5)
    assert captured.captured.graph is not None


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_captured_graph_in_bf16_trains_as_the_eager_step_on_cuda():
    runs = _runs()
    with _deterministic_cudnn():
        captured, eager = (_trainer(g, "cuda", precision="bf16", runs=runs, cudnn_benchmark=False)
                           for g in (True, False))
        _assert_same_training(captured, eager, atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_triton_update_trains_as_the_foreach_update_on_cuda(precision):
    """On CUDA the update runs as one Triton kernel per parameter (fp32: on the parameters; bf16: on the
    weight copies too); it trains as the ``_foreach`` passes do."""
    runs = _runs()
    with _deterministic_cudnn():
        triton, foreach = (_trainer(True, "cuda", precision=precision, runs=runs, cudnn_benchmark=False)
                           for _ in range(2))
        foreach.optimizer.update = "foreach"
        assert triton.optimizer.update == "triton"
        _assert_same_training(triton, foreach, atol=1e-5 if precision == "fp32" else 1e-4, rtol=1e-4)
    assert triton.optimizer.update == "triton"  # it did not fall back


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_stacks_side_by_side_on_cuda_train_as_each_alone():
    """Their captured steps replayed on streams of their own, at once: each stack trains as alone. (An opt-in
    path; gpu_check.sh runs it with every CUDA test.)"""
    with _deterministic_cudnn():
        side, alone = _two_stacks("cuda", cudnn_benchmark=False), _two_stacks("cuda", cudnn_benchmark=False)
        _assert_side_by_side_trains_as_alone(side, alone, atol=1e-6, rtol=1e-5)
    assert all(t.captured.graph is not None and t.captured.stream is not None for t in side)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_captured_steps_do_not_sync_and_a_replaced_state_is_captured_again():
    trainer = _trainer(True, "cuda", batch_norm=True)
    trainer.train_epoch()
    graph = trainer.captured.graph
    trainer._buffers.cursor.zero_()  # the epoch is over: replay its first batch again
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        graph.replay()
        with trainer.captured.own_gradients():
            trainer._step(N_TRAIN % BATCH)  # the eager partial batch
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.optimizer.buffers = [b.clone() for b in trainer.optimizer.buffers]  # e.g. a restored checkpoint
    stats = trainer.train_epoch()
    assert trainer.captured.graph is not graph and np.isfinite(stats.loss).all()


class _FakeStream:
    def wait_stream(self, other):
        pass


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on CPU: capture runs the Python but leaves no trace on the
    tensors (as capture launches no kernel); replay runs the captured step again."""

    replay_step = None
    step = None  # (this graph's own step, where a test captures several)

    def replay(self):
        (self.step or type(self).replay_step)()


def _fake_capture(trainer):
    @contextlib.contextmanager
    def capture(graph, stream=None):
        tensors = [*trainer._state_tensors(), *vars(trainer._buffers).values()]
        saved = [t.clone() for t in tensors]
        yield
        with torch.no_grad():
            for t, value in zip(tensors, saved):
                t.copy_(value)

    return capture


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_capture_orchestration_trains_as_the_eager_step_with_a_fake_graph_on_cpu(monkeypatch, precision):
    """The capture's warm-up steps leave no trace (in bf16, none on the weight copies either), the replays and the
    eager last batch follow each other as the eager steps do (the CUDA graph itself is faked: this runs on CPU)."""
    captured, eager = (_trainer(g, batch_norm=True, precision=precision) for g in (True, False))
    captured.captured = CapturedStep(captured)  # capture forced on the CPU (with a fake graph below)
    _FakeGraph.replay_step = staticmethod(lambda: captured._step(BATCH))
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: _FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: _FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", _fake_capture(captured))
    _assert_same_training(captured, eager)
    assert isinstance(captured.captured.graph, _FakeGraph) and captured.record()["capture"] == "graph"


def test_a_capture_that_fails_warns_and_trains_eagerly_with_the_same_numbers(monkeypatch):
    """Where this CUDA build cannot capture the step (the capture raises after the warm-up and the captured
    step have run), the trainer says so, puts the runs' state back and trains the same step eagerly."""
    captured, eager = _trainer(True, batch_norm=True), _trainer(False, batch_norm=True)
    captured.captured = CapturedStep(captured)  # capture forced on the CPU (with a fake graph below)
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: _FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: _FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)

    @contextlib.contextmanager
    def failing_capture(graph, stream=None):
        yield  # the step runs (on the CPU: for real), then the capture fails
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "graph", failing_capture)
    with pytest.warns(UserWarning, match="capturing the training step as a CUDA graph failed \\(RuntimeError"):
        _assert_same_training(captured, eager)
    assert captured.captured.failure is not None and captured.captured.graph is None
    assert captured.record()["capture"].startswith("eager (capture failed: RuntimeError")


class _RecordingStream:
    """A fake CUDA stream that writes what happens on it into ``log``."""

    def __init__(self, log, name="side"):
        self.log, self.name = log, name

    def wait_stream(self, other):
        self.log.append(("wait", self, other))


def test_side_by_side_replays_each_stacks_graph_on_its_own_stream_with_a_fake_graph_on_cpu(monkeypatch):
    """Captured (the CUDA graph and streams faked, on the CPU): each stack's replays run on its own stream,
    which waits for the epoch's set-up on the main stream first, and the main stream waits for them before the
    partial batches and the statistics; each stack still trains as alone."""
    side, alone = _two_stacks(), _two_stacks(graph=False)
    log, current = [], [None]
    main = _RecordingStream(log, "main")
    capturing = iter(side)

    @contextlib.contextmanager
    def on_stream(stream):
        saved, current[0] = current[0], stream
        yield
        current[0] = saved

    @contextlib.contextmanager
    def capture(graph, stream=None):
        trainer = next(capturing)
        graph.step = lambda: (log.append(("replay", current[0])), trainer._step(BATCH))
        with _fake_capture(trainer)(graph, stream):
            yield

    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: _RecordingStream(log))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: main)
    monkeypatch.setattr(torch.cuda, "stream", on_stream)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    for trainer in side:
        trainer.captured = CapturedStep(trainer)  # capture forced on the CPU (with a fake graph below)
    _assert_side_by_side_trains_as_alone(side, alone)
    streams = [trainer.captured.stream for trainer in side]
    assert isinstance(streams[0], _RecordingStream) and streams[0] is not streams[1]
    replays = [event[1] for event in log if event[0] == "replay"]
    assert replays == streams * (2 * (N_TRAIN // BATCH))  # in turns, each on its own stream
    for stream in streams:
        for epoch in range(2):
            waits = [i for i, e in enumerate(log) if e == ("wait", stream, main)]
            joins = [i for i, e in enumerate(log) if e == ("wait", main, stream)]
            on_it = [i for i, e in enumerate(log) if e == ("replay", stream)]
            per_epoch = N_TRAIN // BATCH
            first, last = on_it[epoch * per_epoch], on_it[(epoch + 1) * per_epoch - 1]
            assert waits[epoch] < first and joins[epoch] > last
            assert epoch == 1 or joins[epoch] < waits[epoch + 1]
