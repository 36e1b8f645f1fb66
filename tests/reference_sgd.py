"""The plain-PyTorch reference of the trainer's tests: one ``nn.Module`` trained by ``torch.optim.SGD`` with the
trainer's batch order and dropout masks (the counter-based draws of :mod:`iwshift.sgd2d`)."""

import numpy as np
import torch

from iwshift import losses, models, train
from iwshift.kernels import counter


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
        order = torch.from_numpy(counter.epoch_permutation(seed, epoch, len(y)))
        for step in range(steps):
            idx = order[step * batch:(step + 1) * batch]
            if model_name == "lr":
                logits = model(xt[idx])
            else:
                mask = torch.from_numpy(counter.dropout_mask(seed, epoch * steps + step, len(idx), hidden, p))
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


class PlainCNN(torch.nn.Module):
    """One Byrd & Lipton CNN as ordinary ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` layers, started where
    run ``k`` of a :class:`iwshift.models.StackedCNN` starts (model k is group k of its convolutions)."""

    def __init__(self, stacked: models.StackedCNN, k: int):
        super().__init__()
        channels, hidden = models.cnn_widths(stacked.width)
        self.convs, self.norms = torch.nn.ModuleList(), torch.nn.ModuleList()
        c_in = 3
        for conv, c_out in zip(stacked.convs, channels):
            plain = torch.nn.Conv2d(c_in, c_out, 3)
            plain.weight.data = conv.weight.detach()[k * c_out:(k + 1) * c_out].clone()
            plain.bias.data = conv.bias.detach()[k * c_out:(k + 1) * c_out].clone()
            self.convs.append(plain)
            self.norms.append(torch.nn.BatchNorm2d(c_out) if stacked.batch_norm else torch.nn.Identity())
            c_in = c_out
        self.fcs = torch.nn.ModuleList()
        for W, b in zip(stacked.fc_weights, stacked.fc_biases):
            plain = torch.nn.Linear(*W.shape[1:])
            plain.weight.data, plain.bias.data = W.detach()[k].T.clone(), b.detach()[k, 0].clone()
            self.fcs.append(plain)

    def forward(self, x, masks=()):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = torch.relu(norm(conv(x)))
            if i in (1, 4):
                x = torch.nn.functional.max_pool2d(x, 2)
        x = x.flatten(1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = torch.relu(x)
                if masks:
                    x = x * masks[i]
        return x


def hidden_masks(seed, step, batch, sizes, p):
    """The dropout multipliers of the CNN's two hidden layers: element (i, j) of layer l has index
    batch * (units before l) + i * units_l + j in the counter-based stream of :mod:`iwshift.sgd2d`."""
    first, second = sizes
    assert (batch * first) % second == 0, "the second layer's masks start on a row of the first's"
    skip = batch * first // second
    return (torch.from_numpy(counter.dropout_mask(seed, step, batch, first, p)),
            torch.from_numpy(counter.dropout_mask(seed, step, skip + batch, second, p)[skip:]))


def reference_cnn(stacked, k, images, labels, train_index, weights, *, lr, momentum, l2, p, defer_until, epochs,
                  batch, normalization):
    """Run ``k`` of ``stacked`` trained alone by ``torch.optim.SGD``: the trainer's batch order (``randperm``
    under the run's seed), dropout masks, weighted cross-entropy and deferral. Returns the trained module and
    each epoch's running (weighted loss, accuracy)."""
    model = PlainCNN(stacked, k)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=l2)
    seed = int(stacked.seeds[k])
    generator = torch.Generator().manual_seed(seed)
    train_index, weights = torch.as_tensor(train_index), torch.as_tensor(weights, dtype=torch.float32)
    n = len(train_index)
    steps = -(-n // batch)
    sizes = [fc.out_features for fc in model.fcs[:-1]]
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum = correct = 0.0
        for step in range(steps):
            pos = order[step * batch:(step + 1) * batch]
            idx = train_index[pos]
            x, y = train.normalize(images[idx]), labels[idx]
            w = torch.ones(len(pos)) if epoch + 1 < defer_until else weights[pos]
            masks = hidden_masks(seed, epoch * steps + step, len(pos), sizes, p) if p else ()
            logits = model(x, masks)
            loss = losses.reduce_weighted(torch.nn.functional.cross_entropy(logits, y, reduction="none"), w,
                                          normalization)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(pos)
            correct += float((logits.argmax(1) == y).sum())
        history.append((loss_sum / n, correct / n))
    return model, history
