"""Remedies: polynomially-tailed loss, logit adjustment, deferred re-weighting, weight exponent."""

import math

import numpy as np
import pytest
import torch

from iwshift import cifar_binary, losses
from iwshift.checks import ConfigError
from iwshift.models import StackedCNN
from iwshift.train import LossSpec, StackedRuns, Trainer


def test_poly_tailed_loss_matches_hand_computation():
    # alpha = 1, beta = 0: s = alpha * log 2 / sigmoid(0) = 2 log 2, A = log 2 * s
    s = 2 * math.log(2)
    A = math.log(2) * s
    z = torch.tensor([-1.0, 0.5, 2.0])
    expected = [math.log1p(math.e), A / (0.5 + s), A / (2.0 + s)]
    assert losses.poly_tailed(z, 1.0, 0.0).tolist() == pytest.approx(expected, rel=1e-6)
    assert losses.poly_tail_constants(1.0, 0.0) == pytest.approx((A, s))


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, 1.5), (0.5, -1.0)])
def test_poly_tailed_loss_and_derivative_are_continuous_at_the_switch(alpha, beta):
    eps = 1e-6
    z = torch.tensor([beta - eps, beta, beta + eps], dtype=torch.float64, requires_grad=True)
    values = losses.poly_tailed(z, alpha, beta)
    (grads,) = torch.autograd.grad(values.sum(), z)
    assert values[0].item() == pytest.approx(values[2].item(), abs=1e-5)
    assert grads[0].item() == pytest.approx(grads[2].item(), rel=1e-4)
    assert grads[0].item() == pytest.approx(-1 / (1 + math.exp(beta)), rel=1e-4)  # logistic slope


def test_poly_tail_decays_polynomially():
    z = torch.tensor([20.0, 100.0], dtype=torch.float64)
    values = losses.poly_tailed(z, 2.0, 0.0)
    logistic = torch.nn.functional.softplus(-z)
    assert (values > 1e3 * logistic).all()  # far heavier than the exponential tail
    _, s = losses.poly_tail_constants(2.0, 0.0)
    assert (values[1] / values[0]).item() == pytest.approx(((20 + s) / (100 + s)) ** 2)


def test_cross_entropy_is_the_logistic_loss_of_the_class_margin():
    torch.manual_seed(0)
    logits, labels = torch.randn(20, 4), torch.randint(0, 4, (20,))
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    margin = losses.class_margin(logits, labels)
    torch.testing.assert_close(torch.nn.functional.softplus(-margin), ce)


def test_logit_adjustment_matches_hand_computation_and_tau_zero_is_cross_entropy():
    """Source prior (0.8, 0.2), balanced target: class weights w = p_t / p_s = (0.625, 2.5); the adjusted logits
    0 - log w = log(p_s / p_t) give the positive example the loss -log 0.2."""
    logits, labels = torch.zeros(1, 1, 2), torch.tensor([[1]])
    log_w = torch.log(torch.tensor([[0.5 / 0.8, 0.5 / 0.2]], dtype=torch.float64))
    adjusted = losses.LossSpec("logit_adjusted", tau=1.0)(logits, labels, log_w)
    assert adjusted.item() == pytest.approx(-math.log(0.2), rel=1e-6)
    torch.manual_seed(1)
    logits, labels = torch.randn(1, 8, 3), torch.randint(0, 3, (1, 8))
    plain = losses.LossSpec()(logits, labels, torch.zeros(1, 3, dtype=torch.float64))
    tau0 = losses.LossSpec("logit_adjusted", tau=0.0)(logits, labels, torch.randn(1, 3, dtype=torch.float64))
    assert torch.equal(plain, tau0)


def test_weight_exponent():
    w = np.array([0.25, 0.25, 1.75, 1.75])  # mean 1
    np.testing.assert_allclose(losses.weight_exponent(w, 1.0), w)
    np.testing.assert_allclose(losses.weight_exponent(w, 0.0), np.ones(4))
    half = losses.weight_exponent(w, 0.5)
    assert half.mean() == pytest.approx(1.0) and half[2] / half[0] == pytest.approx(math.sqrt(7))


def _toy_trainer(weights, defer_until=0, loss=None):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(32) % 2
    n = len(labels)
    runs = StackedRuns([7], np.arange(n)[None], weights[None], [0.0], [0.0],
                       loss=[loss or LossSpec()], defer_until=[defer_until])
    model = StackedCNN(1, 0.0625)
    model.reset_parameters([7])
    return Trainer(model, runs, images, labels, lr=0.05, batch_size=8, normalization="mean",
                   image_normalization="cifar10")


def _params(trainer):
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_deferred_reweighting_is_erm_before_its_epoch_and_iw_erm_after():
    w = np.where(np.arange(32) % 2 == 1, 8.0, 1.0)
    deferred, erm, iw = _toy_trainer(w, defer_until=3), _toy_trainer(np.ones(32)), _toy_trainer(w)
    for _ in range(2):
        deferred.train_epoch(), erm.train_epoch(), iw.train_epoch()
    for a, b in zip(_params(deferred), _params(erm)):
        assert torch.equal(a, b)  # epochs 1-2: unweighted
    # from epoch 3 on it is IW-ERM: one weighted epoch from the ERM state differs from one ERM epoch
    deferred.train_epoch(), erm.train_epoch()
    assert any(not torch.equal(a, b) for a, b in zip(_params(deferred), _params(erm)))
    from_start = _toy_trainer(w, defer_until=1)  # deferring to epoch 1 is plain IW-ERM
    from_start.train_epoch(), from_start.train_epoch()
    for a, b in zip(_params(from_start), _params(iw)):
        assert torch.equal(a, b)


def test_logit_adjustment_with_tau_zero_trains_like_cross_entropy():
    w = np.ones(32)
    a, b = _toy_trainer(w), _toy_trainer(w, loss=LossSpec("logit_adjusted", tau=0.0))
    a.train_epoch(), b.train_epoch()
    for p, q in zip(_params(a), _params(b)):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("kw,argument", [
    (dict(poly_alpha=0.0), "--poly-alpha"),
    (dict(poly_alpha=-1.0), "--poly-alpha"),
    (dict(poly_beta=float("inf")), "--poly-beta"),
    (dict(tau=float("nan")), "--tau"),
    (dict(tau=float("inf")), "--tau"),
    (dict(drw_epoch=-1), "--drw-epoch"),
    (dict(weight_power=-0.5), "--weight-power"),
    (dict(val_fraction=0.0), "--val-fraction"),
    (dict(remedies=["focal"]), "--remedies"),
])
def test_bad_remedy_parameters_give_one_line_errors(kw, argument):
    with pytest.raises(ConfigError) as info:
        cifar_binary.BinaryConfig(**kw)
    assert str(info.value).startswith(argument) and "\n" not in str(info.value)


# ------------------------------------------------------------------------- logit adjustment in the trainer


def _trainer_2d(data, class_w, spec, engine, bias_shift=0.0, seed=3):
    from iwshift import models

    weights = np.asarray(class_w, np.float32)[data.y][None]
    runs = StackedRuns([seed], np.arange(len(data.y))[None], weights, [0.0], [0.0], loss=[spec])
    model = models.Stacked2D("lr", [seed], hidden=4)
    with torch.no_grad():
        model.stacked_params()["b2"].add_(bias_shift)
    return Trainer(model, runs, torch.from_numpy(data.x), torch.from_numpy(data.y), lr=0.1, momentum=0.0,
                   batch_size=8, normalization="mean", batch_order="counter", engine=engine)


def _trained(trainer, epochs=3):
    trainer.train_epochs(epochs)
    return {k: v.detach().numpy().copy() for k, v in trainer.model.stacked_params().items()}


@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_logit_adjustment_on_a_balanced_set_with_weights_is_not_cross_entropy(engine):
    """In the weighting setting (balanced classes, weight w on one) the offset -tau log w_y is not a constant:
    logit adjustment is neither plain nor weighted cross-entropy."""
    from iwshift.data import make_separable

    data = make_separable(32, seed=0).train
    w = [1.0, 8.0]
    adjusted = _trained(_trainer_2d(data, w, LossSpec("logit_adjusted", tau=1.0), engine))
    for reference in (_trainer_2d(data, w, LossSpec(), engine), _trainer_2d(data, [1.0, 1.0], LossSpec(), engine)):
        assert not np.allclose(adjusted["b2"], _trained(reference)["b2"], atol=1e-3)


@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_logit_adjustment_replaces_the_weights_instead_of_correcting_twice(engine):
    """With correcting class weights w on an imbalanced set, logit adjustment trains exactly as unweighted
    cross-entropy on logits offset by -tau log w_y (here: a linear model whose bias starts shifted by the
    offset difference), whatever the scale of the weights; not as weighted cross-entropy plus an offset."""
    from iwshift.data import make_moons_split
    from iwshift.shifts import keep_fraction

    moons = make_moons_split(96, seed=1).train
    data = moons.subset(keep_fraction(moons.y, 1, 0.25, seed=0))
    counts = np.bincount(data.y, minlength=2)
    w = 0.5 * len(data.y) / counts  # the imbalance setting's correcting weights
    tau = 1.0
    shift = -tau * np.log(w[1] / w[0])
    adjusted = _trained(_trainer_2d(data, w, LossSpec("logit_adjusted", tau=tau), engine))
    reference = _trained(_trainer_2d(data, [1.0, 1.0], LossSpec(), engine, bias_shift=shift))
    np.testing.assert_allclose(adjusted["w2"], reference["w2"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adjusted["b2"] + shift, reference["b2"], rtol=1e-5, atol=1e-6)
    scaled = _trained(_trainer_2d(data, 3 * w, LossSpec("logit_adjusted", tau=tau), engine))
    np.testing.assert_allclose(scaled["w2"], adjusted["w2"], rtol=1e-5, atol=1e-6)


def test_a_class_weight_of_zero_leaves_every_offset_finite():
    """Estimated weights can give a class weight 0: other losses get no offset, logit adjustment a finite one."""
    from iwshift.data import make_separable

    data = make_separable(16, seed=0).train
    for spec in (LossSpec(), LossSpec("logit_adjusted", tau=1.0)):
        trainer = _trainer_2d(data, [0.0, 2.0], spec, "torch")
        assert torch.isfinite(losses.logit_offset(trainer.losses.log_class_weights, 1.0)).all()
        assert np.isfinite(_trained(trainer, epochs=1)["w2"]).all()


def test_the_docs_remedies_table_is_the_registry():
    from helpers import ROOT
    from iwshift import readme

    text = (ROOT / "docs" / "protocol.md").read_text()
    assert readme.check_block(text, "remedies-table", losses.remedies_table()) is None
