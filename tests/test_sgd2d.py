"""The trainer on 2-D models: both engines against plain PyTorch autograd and against each other, and
batched training against training alone."""

import numpy as np
import pytest
import torch

from iwshift import models
from iwshift.kernels import counter
from iwshift.data import make_moons_split
from iwshift.train import LossSpec, StackedRuns, Trainer
from reference_sgd import reference_sgd


def make_trainer(model_name, seeds, data, class_w, lr, l2, p, batch, normalization, engine, specs=None,
                 defer=None, hidden=16, index=None):
    """A Trainer on a stack of 2-D runs: run k trains on ``data`` (or ``index[k]``) with class weights
    ``class_w[k]``."""
    K = len(seeds)
    index = np.tile(np.arange(len(data.y)), (K, 1)) if index is None else index
    weights = np.asarray(class_w, np.float32)[np.arange(K)[:, None], data.y[index]]
    runs = StackedRuns(seeds, index, weights, l2, p, loss=specs, defer_until=defer)
    model = models.Stacked2D(model_name, seeds, hidden=hidden, dropout=p)
    return Trainer(model, runs, torch.from_numpy(data.x), torch.from_numpy(data.y), lr=lr, momentum=0.0,
                   batch_size=batch, normalization=normalization, batch_order="counter", engine=engine)


def as_numpy(trainer):
    return {k: v.numpy().copy() for k, v in trainer.model.stacked_params().items()}


@pytest.mark.parametrize("engine", ["torch", "fused"])
@pytest.mark.parametrize("model_name,p,l2,normalization,loss", [
    ("lr", 0.0, 0.0, "mean", "ce"),
    ("lr", 0.0, 0.1, "weight_sum", "ce"),
    ("mlp", 0.0, 0.01, "mean", "ce"),
    ("mlp", 0.5, 0.0, "weight_sum", "ce"),
    ("lr", 0.0, 0.0, "mean", "poly"),
    ("mlp", 0.0, 0.0, "mean", "poly"),
    ("mlp", 0.0, 0.0, "mean", "logit_adjusted"),
])
def test_trainer_matches_plain_autograd(engine, model_name, p, l2, normalization, loss):
    """Both engines of the trainer train a 2-D run exactly as a plain nn.Module + torch.optim.SGD loop."""
    data = make_moons_split(n_samples=84, seed=3).train  # 42 examples: the last batch is partial
    class_w = np.array([1.0, 10.0])
    seed, lr, epochs, batch = 7, 0.05, 3, 8
    tau = 0.7
    # logit adjustment: unit weights and the offset -tau * log w_y on each class's logit
    offset = -tau * np.log(class_w[1] / class_w[0]) if loss == "logit_adjusted" else 0.0
    poly = (2.0, 0.5)
    expected = reference_sgd(model_name, seed, data.x, data.y, np.ones(2) if loss == "logit_adjusted" else class_w,
                             lr, p, epochs, batch, normalization, l2=l2, loss="poly" if loss == "poly" else "ce",
                             offset=offset, poly=poly)[-1]
    spec = {"ce": LossSpec(), "poly": LossSpec("poly", poly_alpha=poly[0], poly_beta=poly[1]), "logit_adjusted": LossSpec("logit_adjusted", tau=tau)}
    trainer = make_trainer(model_name, [seed], data, class_w[None], lr, [l2], [p], batch, normalization, engine,
                           specs=[spec[loss]])
    assert trainer.engine == engine
    trainer.train_epochs(epochs)
    params = as_numpy(trainer)
    for key, value in expected.items():
        np.testing.assert_allclose(params[key][0], value, rtol=1e-4, atol=1e-5, err_msg=key)


def test_fused_engine_equals_torch_engine_on_a_mixed_stack():
    """Per-run l2, dropout, losses, deferral and training subsets; parameters and epoch statistics."""
    data = make_moons_split(n_samples=100, seed=2).train
    seeds = [0, 1, 2, 3, 4]
    class_w = np.array([[1.0, 1.0], [1.0, 10.0], [10.0, 1.0], [1.0, 4.0], [3.0, 1.0]])
    l2, p = [0.0, 0.01, 0.0, 0.0, 0.02], [0.5, 0.0, 0.2, 0.0, 0.3]
    specs = [LossSpec(), LossSpec("poly", poly_alpha=1.0, poly_beta=0.0), LossSpec("logit_adjusted", tau=1.0), LossSpec("poly", poly_alpha=1.0, poly_beta=0.0),
             LossSpec()]
    rng = np.random.default_rng(0)
    index = np.stack([rng.permutation(len(data.y))[:40] for _ in seeds])  # each run its own subset
    for normalization in ("mean", "weight_sum"):
        kw = dict(specs=specs, defer=[0, 0, 3, 0, 2], index=index)
        fused = make_trainer("mlp", seeds, data, class_w, 0.1, l2, p, 8, normalization, "fused", **kw)
        eager = make_trainer("mlp", seeds, data, class_w, 0.1, l2, p, 8, normalization, "torch", **kw)
        for count in (1, 3):  # one epoch, then several in one fused call
            a, b = fused.train_epochs(count), eager.train_epochs(count)
            for name in ("loss_weighted", "loss", "accuracy"):
                np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5, err_msg=name)
        for key, value in as_numpy(eager).items():
            np.testing.assert_allclose(as_numpy(fused)[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
        assert fused.epoch == eager.epoch == 4


def test_runs_trained_together_equal_runs_trained_alone():
    data = make_moons_split(n_samples=64, seed=1).train
    seeds = [0, 1, 2]
    class_w = np.array([[1.0, 1.0], [1.0, 10.0], [10.0, 1.0]])
    l2, p = [0.0, 0.01, 0.0], [0.5, 0.0, 0.2]
    together = make_trainer("mlp", seeds, data, class_w, 0.1, l2, p, 8, "mean", "fused")
    together.train_epochs(4)
    for k, seed in enumerate(seeds):
        alone = make_trainer("mlp", [seed], data, class_w[k:k + 1], 0.1, l2[k:k + 1], p[k:k + 1], 8, "mean", "fused")
        alone.train_epochs(2)
        alone.train_epochs(2)  # resuming at epoch 2 changes nothing
        for key, value in as_numpy(alone).items():
            np.testing.assert_array_equal(as_numpy(together)[key][k], value[0], err_msg=key)


def test_engine_choice_and_its_errors():
    data = make_moons_split(n_samples=32, seed=0).train
    trainer = make_trainer("lr", [0], data, [[1.0, 1.0]], 0.1, [0.0], [0.0], 8, "mean", "auto")
    assert trainer.engine == "fused"
    with pytest.raises(ValueError, match="momentum is not 0"):
        runs = StackedRuns([0], np.arange(len(data.y))[None], np.ones((1, len(data.y))), [0.0], [0.0])
        Trainer(models.Stacked2D("lr", [0]), runs, torch.from_numpy(data.x), torch.from_numpy(data.y),
                momentum=0.9, batch_order="counter", engine="fused")
    with pytest.raises(ValueError, match="on_step needs the torch engine"):
        trainer.train_epochs(1, on_step=lambda: None)
    for model, what in ((models.Stacked2D("mlp", [0], dropout=0.5), "dropout"), (models.Stacked2D("mlp", [1]), "seeds")):
        with pytest.raises(ValueError, match=f"the model's {what} differ"):  # the engines would disagree
            Trainer(model, runs, torch.from_numpy(data.x), torch.from_numpy(data.y), momentum=0.0,
                    batch_order="counter")


def test_permutation_is_a_permutation_and_depends_on_seed_and_epoch():
    a = counter.epoch_permutation(0, 0, 100)
    assert sorted(a.tolist()) == list(range(100))
    assert not np.array_equal(a, counter.epoch_permutation(1, 0, 100))
    assert not np.array_equal(a, counter.epoch_permutation(0, 1, 100))
    np.testing.assert_array_equal(a, counter.epoch_permutation(0, 0, 100))


def test_dropout_rate():
    mask = counter.dropout_mask(5, 0, 100, 100, 0.3)
    kept = mask[mask != 0]
    np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-6)
    assert abs((mask == 0).mean() - 0.3) < 0.03
