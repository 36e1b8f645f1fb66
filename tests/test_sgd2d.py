"""The fused 2-D kernel against PyTorch autograd, and batched training against training alone."""

import numpy as np
import pytest
import torch

from iwshift import losses, models, sgd2d
from iwshift.data import make_moons_split


def reference_sgd(model_name, seed, x, y, class_w, lr, l2, p, epochs, batch, normalization, loss="ce",
                  offset=0.0, poly=(1.0, 0.0)):
    """Plain one-run PyTorch training with the kernel's batch order and dropout masks."""
    model = models.make_2d_model(model_name, hidden=16, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=l2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    weights = torch.tensor(class_w, dtype=torch.float32)[yt]
    steps = (len(y) + batch - 1) // batch
    for epoch in range(epochs):
        order = torch.from_numpy(sgd2d.epoch_permutation(seed, epoch, len(y)))
        for step in range(steps):
            idx = order[step * batch:(step + 1) * batch]
            if model_name == "lr":
                logits = model(xt[idx])
            else:
                mask = torch.from_numpy(sgd2d.dropout_scales(seed, epoch * steps + step, len(idx), 16, p))
                logits = model.out(torch.relu(model.hidden(xt[idx])) * mask).squeeze(-1)
            if loss == "poly":
                per_example = losses.poly_tailed((2 * yt[idx] - 1) * logits, *poly)
                value = losses.reduce_weighted(per_example, weights[idx], normalization)
            else:
                value = losses.weighted_bce_with_logits(logits + offset, yt[idx], weights[idx], normalization)
            opt.zero_grad()
            value.backward()
            opt.step()
    return models.module_to_stacked(model)


@pytest.mark.parametrize("model_name,p,l2,normalization,loss", [
    ("lr", 0.0, 0.0, "mean", "ce"),
    ("lr", 0.0, 0.1, "weight_sum", "ce"),
    ("mlp", 0.0, 0.01, "mean", "ce"),
    ("mlp", 0.5, 0.0, "weight_sum", "ce"),
    ("lr", 0.0, 0.0, "mean", "poly"),
    ("mlp", 0.0, 0.0, "mean", "poly"),
    ("mlp", 0.0, 0.0, "mean", "logit_adjusted"),
])
def test_kernel_matches_autograd(model_name, p, l2, normalization, loss):
    data = make_moons_split(n_samples=84, seed=3).train  # 42 examples: the last batch is partial
    class_w = np.array([1.0, 10.0])
    seed, lr, epochs, batch = 7, 0.05, 3, 8
    offset = 0.7 if loss == "logit_adjusted" else 0.0
    poly = (2.0, 0.5)
    expected = reference_sgd(model_name, seed, data.x, data.y, class_w, lr, l2, p, epochs, batch,
                             normalization, loss, offset, poly)
    params = models.init_stacked(model_name, [seed], hidden=16)
    sgd2d.train_stacked(params, data.x, data.y, class_w[None], [lr], [l2], [p], [seed], 0, epochs,
                        batch, normalization, loss_kind=[int(loss == "poly")], logit_offset=[offset],
                        poly=[poly])
    for key, value in expected.items():
        np.testing.assert_allclose(params[key][0], value, rtol=1e-4, atol=1e-5, err_msg=key)


def test_runs_trained_together_equal_runs_trained_alone():
    data = make_moons_split(n_samples=64, seed=1).train
    seeds = [0, 1, 2]
    class_w = np.array([[1.0, 1.0], [1.0, 10.0], [10.0, 1.0]])
    lr, l2, p = [0.1, 0.05, 0.1], [0.0, 0.01, 0.0], [0.5, 0.0, 0.2]
    together = models.init_stacked("mlp", seeds, hidden=16)
    sgd2d.train_stacked(together, data.x, data.y, class_w, lr, l2, p, seeds, 0, 4, 8)
    for k, seed in enumerate(seeds):
        alone = models.init_stacked("mlp", [seed], hidden=16)
        sgd2d.train_stacked(alone, data.x, data.y, class_w[k:k + 1], lr[k:k + 1], l2[k:k + 1],
                            p[k:k + 1], [seed], 0, 2, 8)
        sgd2d.train_stacked(alone, data.x, data.y, class_w[k:k + 1], lr[k:k + 1], l2[k:k + 1],
                            p[k:k + 1], [seed], 2, 4, 8)  # resuming at epoch 2 changes nothing
        for key in alone:
            np.testing.assert_array_equal(together[key][k], alone[key][0], err_msg=key)


def test_permutation_is_a_permutation_and_depends_on_seed_and_epoch():
    a = sgd2d.epoch_permutation(0, 0, 100)
    assert sorted(a.tolist()) == list(range(100))
    assert not np.array_equal(a, sgd2d.epoch_permutation(1, 0, 100))
    assert not np.array_equal(a, sgd2d.epoch_permutation(0, 1, 100))
    np.testing.assert_array_equal(a, sgd2d.epoch_permutation(0, 0, 100))


def test_dropout_rate():
    mask = sgd2d.dropout_scales(5, 0, 100, 100, 0.3)
    kept = mask[mask != 0]
    np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-6)
    assert abs((mask == 0).mean() - 0.3) < 0.03
