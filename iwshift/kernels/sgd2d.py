"""The fused engine of :class:`iwshift.train.Trainer` for tiny 2-D models (logistic regression or a ReLU
MLP): a compiled kernel that runs the trainer's SGD loop for many runs at once, epochs at a time.

Why a kernel: the paper's 2-D protocol is 10,000 epochs of batch-8 SGD, i.e. 640,000 *sequential*
steps per run. Timed here (2 CPU cores) on 135 stacked MLP runs and projected to the study's 640,000
steps: one batched eager-PyTorch step costs ~300 us (~194 s), a ``torch.compile``d 8-step block ~58 us
per step (~37 s, plus 22 s of compilation). This numba kernel trains each run in a tight loop whose state
stays in L1 cache, in parallel over runs, with no per-step Python: ~17 s projected for the same runs, and
the whole study (250 runs) measured at 22-25 s of training (45-51 s on a 2x slower 2-core machine),
against ~73 minutes through the trainer's torch engine (projected from 20 epochs of the study).

The kernel computes what the trainer's PyTorch engine computes step by step (same batch orders, dropout
masks, losses, normalisations, weight decay, deferred re-weighting and running epoch statistics); the
tests train the same stacks through both engines and compare.

Exactness over speed where they meet:
  * every random draw is a pure function of (run seed, epoch or step, index) through a counter-based
    hash (splitmix64), so a run's mini-batch order and dropout masks do not depend on which other runs
    share the call, and :mod:`iwshift.kernels.counter` reproduces them outside the
    kernel (the trainer's PyTorch engine uses them);
  * the loss, its two normalisations and weight decay are those of :mod:`iwshift.losses` and
    ``torch.optim.SGD(weight_decay=l2)``: g <- grad(loss) + l2 * theta, theta <- theta - lr * g.

Parameter layout (see :func:`iwshift.models.module_to_stacked`), for d input features: ``W1`` (K, d, H),
``b1`` (K, H), ``w2`` (K, F), ``b2`` (K,), with H = 0 and F = d for logistic regression (the features are
the inputs) and F = H for the MLP (features = dropout(relu(x W1 + b1))). Binary models only (one logit):
:func:`train_stacked` refuses other shapes rather than train something else.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .counter import _dropout_scale, _fill_permutation

@njit(inline="always")
def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(inline="always")
def _softplus(z):
    """log(1 + e^z), without overflow."""
    return max(z, 0.0) + np.log1p(np.exp(-abs(z)))


@njit(inline="always")
def _loss_value(z, label, kind, offset, alpha, beta, tail_a, tail_s):
    """The loss of one example whose slope :func:`_loss_slope` gives."""
    sign = 2.0 * label - 1.0
    if kind == 1:
        margin = sign * z
        if margin < beta:
            return _softplus(-margin)
        return tail_a * (margin - beta + tail_s) ** (-alpha)
    return _softplus(-sign * (z + offset))


@njit(inline="always")
def _loss_slope(z, label, kind, offset, alpha, beta, tail_a, tail_s):
    """d loss / d logit of one example: logistic (binary cross-entropy) on the logit shifted by
    ``offset`` (logit adjustment; 0 for plain), or the polynomially-tailed loss of the margin (kind 1)."""
    if kind == 1:
        sign = 2.0 * label - 1.0
        margin = sign * z
        if margin < beta:
            return sign * -_sigmoid(-margin)
        return sign * -alpha * tail_a * (margin - beta + tail_s) ** (-alpha - 1.0)
    return _sigmoid(z + offset) - label


@njit(parallel=True, fastmath=True, cache=True)
def train_epochs(x, y, index, weights, defer_until, W1, b1, w2, b2, lr, l2, p_drop, seeds,
                 epoch_start, epoch_end, batch_size, normalize_by_weight_sum,
                 loss_kind, logit_offset, poly, stats):  # pragma: no cover
    """Train K runs in place from ``epoch_start`` to ``epoch_end`` (0-based, end exclusive).

    x (N, d) float32 and y (N,) int64 (0 or 1) are shared; run k trains on the examples ``index[k]`` (K, n) with
    importance weights ``weights[k]`` (K, n), uniform before its 1-based epoch ``defer_until[k]``
    (deferred re-weighting; 0: never deferred). ``lr``, ``l2``, ``p_drop`` (float32) and ``seeds``
    (int64) have one entry per run; so do ``loss_kind`` (0: cross-entropy, 1: polynomially tailed),
    ``logit_offset`` (logit adjustment) and ``poly`` (K, 4): alpha, beta and the tail constants A, s.
    ``stats`` (K, 3) receives the running means over the last epoch's mini-batches of the weighted
    training loss, the plain cross-entropy and the accuracy (as the PyTorch engine reports them).
    """
    n = index.shape[1]
    K = w2.shape[0]
    D = x.shape[1]
    H = W1.shape[2]
    F = w2.shape[1]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    for k in prange(K):
        seed = seeds[k]
        p = p_drop[k]
        feats = np.empty((batch_size, F), np.float32)
        dfeat = np.empty((batch_size, F), np.float32)  # d feature / d pre-activation
        g = np.empty(batch_size, np.float32)
        gW1 = np.empty((D, H), np.float32)
        pre = np.empty(H, np.float32)
        dpre = np.empty(H, np.float32)
        gb1 = np.empty(H, np.float32)
        gw2 = np.empty(F, np.float32)
        order = np.empty(n, np.int64)
        for epoch in range(epoch_start, epoch_end):
            _fill_permutation(seed, epoch, order)
            deferred = epoch + 1 < defer_until[k]
            last = epoch == epoch_end - 1
            if last:
                stats[k, 0] = 0.0
                stats[k, 1] = 0.0
                stats[k, 2] = 0.0
            for step in range(steps_per_epoch):
                start = step * batch_size
                nb = min(batch_size, n - start)
                global_step = epoch * steps_per_epoch + step
                norm = np.float32(0.0)
                if normalize_by_weight_sum:
                    for i in range(nb):
                        norm += np.float32(1.0) if deferred else weights[k, order[start + i]]
                else:
                    norm = np.float32(nb)
                batch_loss = 0.0
                # forward, and d loss / d logit for each example
                for i in range(nb):
                    pos = order[start + i]
                    e = index[k, pos]
                    w = np.float32(1.0) if deferred else weights[k, pos]
                    z = b2[k]
                    if H == 0:
                        for c in range(D):
                            feats[i, c] = x[e, c]
                            z += x[e, c] * w2[k, c]
                    else:
                        pre[:] = 0.0
                        for c in range(D):  # inputs outer, hidden units inner: contiguous, vectorised
                            xc = x[e, c]
                            for j in range(H):
                                pre[j] += xc * W1[k, c, j]
                        for j in range(H):
                            pre_j = pre[j] + b1[k, j]
                            scale = _dropout_scale(seed, global_step, i, j, H, p) if pre_j > 0 else 0.0
                            feats[i, j] = pre_j * scale
                            dfeat[i, j] = scale
                            z += feats[i, j] * w2[k, j]
                    slope = _loss_slope(z, y[e], loss_kind[k], logit_offset[k], poly[k, 0], poly[k, 1],
                                        poly[k, 2], poly[k, 3])
                    g[i] = w * slope / norm
                    if last:  # running statistics, as the PyTorch engine keeps them
                        batch_loss += w * _loss_value(z, y[e], loss_kind[k], logit_offset[k], poly[k, 0],
                                                      poly[k, 1], poly[k, 2], poly[k, 3])
                        stats[k, 1] += _loss_value(z, y[e], 0, 0.0, 0.0, 0.0, 0.0, 0.0)
                        stats[k, 2] += (z > 0) == (y[e] == 1)
                if last:
                    stats[k, 0] += batch_loss / norm * nb
                # backward
                gb2 = np.float32(0.0)
                gw2[:] = 0.0
                gW1[:] = 0.0
                gb1[:] = 0.0
                for i in range(nb):
                    gi = g[i]
                    gb2 += gi
                    for j in range(F):
                        gw2[j] += gi * feats[i, j]
                    if H > 0:
                        e = index[k, order[start + i]]
                        for j in range(H):
                            dpre[j] = gi * w2[k, j] * dfeat[i, j]
                            gb1[j] += dpre[j]
                        for c in range(D):
                            xc = x[e, c]
                            for j in range(H):
                                gW1[c, j] += dpre[j] * xc
                # SGD with weight decay, as torch.optim.SGD(weight_decay=l2)
                rate = lr[k]
                decay = l2[k]
                for c in range(D):
                    for j in range(H):
                        W1[k, c, j] -= rate * (gW1[c, j] + decay * W1[k, c, j])
                for j in range(H):
                    b1[k, j] -= rate * (gb1[j] + decay * b1[k, j])
                for j in range(F):
                    w2[k, j] -= rate * (gw2[j] + decay * w2[k, j])
                b2[k] -= rate * (gb2 + decay * b2[k])
        for c in range(3):
            stats[k, c] /= n


def _check_shapes(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, index: np.ndarray) -> None:
    """Refuse what the kernel cannot train (it reads memory unchecked, so a mismatch would train
    something else without a word): a clear ValueError instead."""
    W1, b1, w2, b2 = (params[k] for k in ("W1", "b1", "w2", "b2"))
    if any(not isinstance(p, np.ndarray) or p.dtype != np.float32 or not p.flags.c_contiguous
           for p in (W1, b1, w2, b2)):
        raise ValueError("the fused engine trains C-contiguous float32 parameter arrays in place")
    if w2.ndim != 2 or b2.ndim != 1:
        raise ValueError(f"the fused engine trains binary models (one logit: w2 (K, F), b2 (K,)); got w2 "
                         f"{w2.shape}, b2 {b2.shape}: train models with more classes through the torch engine")
    K, H = w2.shape[0], W1.shape[-1]
    if W1.ndim != 3 or W1.shape[0] != K or b1.shape != (K, H) or b2.shape != (K,):
        raise ValueError(f"inconsistent stacked parameters: W1 {W1.shape}, b1 {b1.shape}, w2 {w2.shape}, b2 {b2.shape}")
    x_shape = np.shape(x)
    if len(x_shape) != 2 or x_shape[1] != W1.shape[1]:
        raise ValueError(f"the fused engine needs inputs (N, {W1.shape[1]}) for a model with {W1.shape[1]} input "
                         f"features (W1 {W1.shape}); got inputs of shape {x_shape}")
    if w2.shape[1] != (H if H else W1.shape[1]):
        raise ValueError(f"w2 {w2.shape} does not fit W1 {W1.shape} (F = H for the MLP, F = d without hidden units)")
    check_training_labels(np.asarray(y), np.asarray(index), n_examples=x_shape[0], n_classes=2)


def check_training_labels(labels: np.ndarray, index: np.ndarray, n_examples: int, n_classes: int | None) -> None:
    """Refuse labels that are not (n_examples,), training indices outside ``0..n_examples - 1``, and
    training labels (the labels at ``index``; other examples may be evaluation-only, e.g. -1) outside
    ``0..n_classes - 1`` (None: only negative ones): a one-line ValueError, the same for both engines."""
    if labels.shape != (n_examples,):
        raise ValueError(f"labels must be (N,) = ({n_examples},) like the inputs (got {labels.shape})")
    if index.size and (index.min() < 0 or index.max() >= n_examples):
        raise ValueError(f"train_index values must be in 0..{n_examples - 1} (got {index.min()}..{index.max()})")
    trained = labels[index]
    if trained.size and (trained.min() < 0 or (n_classes is not None and trained.max() >= n_classes)):
        allowed = ">= 0" if n_classes is None else f"in 0..{n_classes - 1} for a model of n_classes={n_classes}"
        raise ValueError(f"training labels must be {allowed} (got {trained.min()}..{trained.max()})")


def train_stacked(
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    index: np.ndarray,
    weights: np.ndarray,
    lr: np.ndarray,
    l2: np.ndarray,
    dropout: np.ndarray,
    seeds: np.ndarray,
    epoch_start: int,
    epoch_end: int,
    batch_size: int,
    normalization: str = "mean",
    loss_kind: np.ndarray | None = None,
    logit_offset: np.ndarray | None = None,
    poly: np.ndarray | None = None,
    defer_until: np.ndarray | None = None,
) -> np.ndarray:
    """Typed front door of :func:`train_epochs`: trains the stacked ``params`` (float32 arrays, updated in
    place) and returns the last epoch's running statistics (K, 3): weighted loss, cross-entropy, accuracy.

    Run k trains on ``x[index[k]]``, ``y[index[k]]`` with per-example ``weights[k]``; ``loss_kind`` per
    run: 0 = cross-entropy (default), 1 = polynomially tailed with ``poly`` rows (alpha, beta);
    ``logit_offset`` per run: the logit adjustment's offset of class 1 minus class 0, -tau * log(w_1 / w_0) (default 0); ``defer_until``
    per run: the 1-based epoch from which the weights apply (default 0: always)."""
    if normalization not in ("mean", "weight_sum"):
        raise ValueError(f"unknown normalization {normalization!r}")
    K = params["w2"].shape[0]
    _check_shapes(params, x, y, index)

    def per_run(values, dtype):
        values = np.broadcast_to(np.asarray(values, dtype), (K,) + np.shape(values)[1:])
        return np.ascontiguousarray(values)

    from ..losses import poly_tail_constants

    kinds = np.zeros(K, np.int64) if loss_kind is None else per_run(loss_kind, np.int64)
    poly_rows = np.zeros((K, 4), np.float32)
    if poly is not None:
        for k, (alpha, beta) in enumerate(np.broadcast_to(np.asarray(poly, np.float64), (K, 2))):
            if kinds[k] == 1:
                poly_rows[k] = (alpha, beta, *poly_tail_constants(alpha, beta))
    stats = np.full((K, 3), np.nan, np.float64)
    train_epochs(
        np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64),
        per_run(index, np.int64), per_run(weights, np.float32),
        np.zeros(K, np.int64) if defer_until is None else per_run(defer_until, np.int64),
        params["W1"], params["b1"], params["w2"], params["b2"],
        per_run(lr, np.float32), per_run(l2, np.float32), per_run(dropout, np.float32),
        per_run(seeds, np.int64), int(epoch_start), int(epoch_end), int(batch_size),
        normalization == "weight_sum", kinds,
        np.zeros(K, np.float32) if logit_offset is None else per_run(logit_offset, np.float32), poly_rows,
        stats,
    )
    return stats
