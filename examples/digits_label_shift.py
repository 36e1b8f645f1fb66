"""iwshift as a library on scikit-learn's bundled digits (8x8 images as 64 features, 10 classes).

Three uses of the public API (docs/library.md), each printed as a small table:
  1. binary 3 vs 8 under label shift: the training set keeps few 3s, the test set is balanced; K runs
     (seeds x unweighted/importance-weighted) train as one stack through the trainer and are measured;
  2. 10-class label shift: a long-tailed source, a uniform target; class weights pi_t / pi_s estimated
     by BBSE and by MLLS (after bias-corrected temperature scaling) from a source-trained 10-class MLP;
  3. covariate shift: a source drawn with a probability that depends on the inputs; the density ratio
     estimated by a domain classifier, by KLIEP and by kernel mean matching (each kernel width by
     likelihood cross-validation; KMM also with the median heuristic's width, which flattens the weights).

Every upper-case constant is a flag (``--help``); ``--quick`` is a smaller run (the test suite's).
Run from anywhere: ``python examples/digits_label_shift.py`` (after ``pip install -e .``).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from iwshift import cli  # noqa: E402

QUICK = False          # a smaller, faster run: one seed, fewer epochs, KLIEP's median-heuristic width
SEEDS = [0, 1, 2]      # model seeds (initialisation, batch order) of the trained runs
DATA_SEED = 0          # splits and subsampling
EPOCHS = 40            # SGD epochs of every network
HIDDEN = 32            # MLP hidden units
LR = 0.1               # SGD learning rate (no momentum)
BATCH_SIZE = 16        # mini-batch size
KEEP_THREES = 0.1      # binary study: fraction of the training set's 3s kept (the label shift)
IMBALANCE = 5.0        # 10-class study: largest / smallest source class count
HOLDOUT = 0.4          # 10-class study: held-out source fraction for BBSE's confusion matrix and calibration
KLIEP_CENTERS = 100    # covariate study: KLIEP's kernel centres


def main(argv=None) -> int:
    values = cli.override_from_argv({k: v for k, v in globals().items() if k.isupper()}, __doc__, argv,
                                    help_text=cli.constant_comments(__file__), prog="digits_label_shift.py")
    if values["QUICK"]:
        values.update(SEEDS=values["SEEDS"][:1], EPOCHS=min(values["EPOCHS"], 8), KLIEP_CENTERS=50)
    start = time.perf_counter()
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    rng = np.random.default_rng(values["DATA_SEED"])
    for part in (binary_label_shift, multiclass_weight_estimation, covariate_shift_estimation):
        t0 = time.perf_counter()
        part(x, y, rng, values)
        print(f"  ({time.perf_counter() - t0:.1f} s)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def train_stack(x, y, index, example_weights, seeds, n_classes, values):
    """K runs (row k of ``index``/``example_weights``), one stack, through the one trainer."""
    import torch

    from iwshift import models
    from iwshift.train import StackedRuns, Trainer

    K = len(seeds)
    runs = StackedRuns(seeds, index, example_weights, l2=[0.0] * K, dropout=[0.0] * K)
    model = models.Stacked2D("mlp", seeds, hidden=values["HIDDEN"], in_features=x.shape[1], n_classes=n_classes)
    # engine "auto": the compiled fused engine for binary runs, the torch engine for 10 classes
    trainer = Trainer(model, runs, torch.from_numpy(x), torch.from_numpy(y), lr=values["LR"], momentum=0.0,
                      batch_size=values["BATCH_SIZE"], normalization="mean", batch_order="counter")
    trainer.train_epochs(values["EPOCHS"])
    return trainer


def halves(n, rng):
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2:]


def binary_label_shift(x, y, rng, values) -> None:
    import numpy as np
    import torch

    from iwshift import metrics, shifts

    pair = np.flatnonzero((y == 3) | (y == 8))
    xb, yb = x[pair], (y[pair] == 8).astype(np.int64)  # class 1: an 8
    train, test = halves(len(pair), rng)
    kept = train[shifts.keep_fraction(yb[train], 0, values["KEEP_THREES"], values["DATA_SEED"])]
    prior = np.bincount(yb[kept], minlength=2) / len(kept)
    correcting = 0.5 / prior  # weights that make the training set's classes count as in a balanced target
    seeds = [s for s in values["SEEDS"] for _ in ("unweighted", "weighted")]
    variants = ["unweighted", "weighted"] * len(values["SEEDS"])
    class_w = np.array([np.ones(2) if v == "unweighted" else correcting for v in variants])
    index = np.tile(kept, (len(seeds), 1))
    trainer = train_stack(xb, yb, index, class_w[:, yb[kept]], seeds, 2, values)
    predictions = trainer.predict_logits(torch.from_numpy(xb[test])).argmax(-1)
    labels = torch.from_numpy(yb[test])
    accuracy = metrics.accuracy(predictions, labels).numpy()
    balanced = metrics.balanced_accuracy(predictions, labels).numpy()
    threes = 1 - metrics.fraction_predicted(predictions, 1).numpy()
    print(f"binary 3 vs 8 under label shift ({len(kept)} training digits, {prior[0]:.0%} 3s; balanced test set; "
          f"engine {trainer.engine}, {values['EPOCHS']} epochs):")
    for variant in ("unweighted", "weighted"):
        rows = [k for k, v in enumerate(variants) if v == variant]
        print(f"  {variant:10s}  accuracy {accuracy[rows].mean():.3f}  balanced accuracy {balanced[rows].mean():.3f}"
              f"  predicted 3s {threes[rows].mean():.3f} (true 0.5)  [{len(rows)} seeds]")


def multiclass_weight_estimation(x, y, rng, values) -> None:
    import numpy as np
    import torch

    from iwshift import weights as iw

    order = rng.permutation(len(y))
    source_pool, target = order[: 2 * len(y) // 3], order[2 * len(y) // 3:]
    # long-tailed source: class c keeps a fraction IMBALANCE^(-c/9) of its examples
    keep = values["IMBALANCE"] ** (-np.arange(10) / 9)
    source = np.concatenate([rng.permutation(source_pool[y[source_pool] == c])[
        : max(2, round(keep[c] * np.sum(y[source_pool] == c)))] for c in range(10)])
    source = rng.permutation(source)
    cut = round(values["HOLDOUT"] * len(source))
    holdout, train = source[:cut], source[cut:]
    source_prior = np.bincount(y[train], minlength=10) / len(train)
    true_w = (np.bincount(y[target], minlength=10) / len(target)) / source_prior
    seeds = values["SEEDS"]
    trainer = train_stack(x, y, np.tile(train, (len(seeds), 1)), np.ones((len(seeds), len(train))), seeds, 10, values)
    held_logits = trainer.predict_logits(torch.from_numpy(x[holdout])).numpy()
    target_logits = trainer.predict_logits(torch.from_numpy(x[target])).numpy()
    errors: dict[str, list] = {"BBSE": [], "MLLS": []}
    accuracy = (target_logits.argmax(-1) == y[target]).mean(1)
    for k in range(len(seeds)):
        bbse = iw.bbse_weights(held_logits[k].argmax(1), y[holdout], target_logits[k].argmax(1), n_classes=10)
        temperature, bias = iw.calibrate_bcts(held_logits[k], y[holdout])
        mlls = iw.mlls_weights(iw.apply_calibration(target_logits[k], temperature, bias), source_prior)
        for name, estimate in (("BBSE", bbse), ("MLLS", mlls)):
            errors[name].append(iw.class_weight_error(estimate, true_w))
    print(f"10-class label shift ({len(train)} long-tailed source digits for training, {len(holdout)} held out, "
          f"{len(target)} uniform target; true weights {true_w.min():.2f}..{true_w.max():.2f}; engine "
          f"{trainer.engine}; target accuracy {accuracy.mean():.3f}):")
    for name, errs in errors.items():
        print(f"  {name}  class weights: max |error| {np.mean([e['max_abs_error'] for e in errs]):.3f}, "
              f"|error| / |true| {np.mean([e['l2_error'] for e in errs]) / np.linalg.norm(true_w):.3f}  "
              f"[{len(errs)} seeds]")


def covariate_shift_estimation(x, y, rng, values) -> None:
    import numpy as np
    from sklearn.decomposition import PCA

    from iwshift import weights as iw

    features = PCA(5, random_state=values["DATA_SEED"]).fit_transform(x)
    source_pool, target = halves(len(x), rng)
    # the source keeps a point with probability s(x), growing with the first principal component
    keep_probability = 1 / (1 + np.exp(-1.0 * features[:, 0] / features[:, 0].std()))
    source = source_pool[rng.random(len(source_pool)) < keep_probability[source_pool]]
    true_ratio = keep_probability[target].mean() / keep_probability[source]  # p_target(x) / p_source(x)
    estimators = {
        "domain classifier": iw.DomainClassifierWeights(seed=values["DATA_SEED"]),
        "KLIEP": iw.KLIEPWeights(n_centers=values["KLIEP_CENTERS"], gamma=None if values["QUICK"] else "cv",
                                 tol=1e-6, seed=values["DATA_SEED"]),
        # kernel width by the same likelihood cross-validation; the median heuristic alone flattens the weights
        "KMM": iw.KMMWeights(gamma="cv", seed=values["DATA_SEED"]),
        "KMM, median width": iw.KMMWeights(gamma=None),
    }
    print(f"covariate shift ({len(source)} source digits selected on their first principal component, "
          f"{len(target)} target; 5 PCA features):")
    for name, estimator in estimators.items():
        w = iw.self_normalize(estimator.fit(features[source], features[target]).source_weights_)
        error = iw.weight_error(w, true_ratio / true_ratio.mean())
        print(f"  {name:17s}  max {w.max():.2f}  Spearman with the true ratio {error['spearman']:.3f}  rmse {error['rmse']:.3f}  "
              f"effective sample size {iw.ess_fraction(w):.0%} (true weights: max {(true_ratio / true_ratio.mean()).max():.2f}, {iw.ess_fraction(true_ratio):.0%})")


if __name__ == "__main__":
    sys.exit(main())
