"""The plain-PyTorch reference of the trainer's tests: one ``nn.Module`` trained by ``torch.optim.SGD`` with the
trainer's batch order and dropout masks (the counter-based draws of :mod:`iwshift.sgd2d`)."""

import numpy as np
import torch

from iwshift import losses, models, sgd2d


def reference_sgd(model_name, seed, x, y, class_w, lr, p, epochs, batch, normalization, *, hidden=16, n_classes=2,
                  l2=0.0, loss="ce", offset=0.0, poly=(1.0, 0.0)):
    """The run's stacked parameters after every step. ``loss``: ``ce`` (binary cross-entropy of the logit plus
    ``offset``, or cross-entropy for more classes) or ``poly`` (binary, ``poly`` = (alpha, beta))."""
    model = models.make_2d_model(model_name, hidden, seed=seed, in_features=x.shape[1], n_classes=n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=l2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    weights = torch.tensor(np.asarray(class_w), dtype=torch.float32)[yt]
    steps = -(-len(y) // batch)
    history = []
    for epoch in range(epochs):
        order = torch.from_numpy(sgd2d.epoch_permutation(seed, epoch, len(y)))
        for step in range(steps):
            idx = order[step * batch:(step + 1) * batch]
            if model_name == "lr":
                logits = model(xt[idx])
            else:
                mask = torch.from_numpy(sgd2d.dropout_scales(seed, epoch * steps + step, len(idx), hidden, p))
                logits = model.out(torch.relu(model.hidden(xt[idx])) * mask)
                logits = logits.squeeze(-1) if n_classes == 2 else logits
            if loss == "poly":
                per_example = losses.poly_tailed((2 * yt[idx] - 1) * logits, *poly)
            elif n_classes == 2:
                per_example = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits + offset, yt[idx].float(), reduction="none")
            else:
                per_example = torch.nn.functional.cross_entropy(logits, yt[idx], reduction="none")
            value = losses.reduce_weighted(per_example, weights[idx], normalization)
            opt.zero_grad()
            value.backward()
            opt.step()
            history.append(models.module_to_stacked(model))
    return history
