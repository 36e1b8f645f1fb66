"""iwshift: importance weighting under dataset shift, reproduced and extended.

One home per concern:
    config           validation of user input and command-line overrides of script constants
    data             synthetic 2-D data sets
    cifar_data       CIFAR-10 from torchvision or an image folder, decoded once and cached
    shifts           class weightings and subsampled (imbalanced) training sets
    models           logistic regression, MLP, and the stacked Byrd & Lipton CNN
    losses           importance-weighted losses (two normalisations) and the remedies
    weights          importance-weight estimators (domain classifier, KLIEP, KMM, BBSE, MLLS)
    train            the one trainer: K runs at once, data on the device (CNNs and 2-D models)
    sgd2d            the trainer's fused CPU engine for 2-D models (whole epochs of many runs in numba)
    sweep            CNN studies: shared config, stacks of runs, per-run results, resume, merge
    metrics          accuracies, predicted fractions, boundary angles, per-class gradient norms
    results          atomic writes, manifests, tidy tables
    plots            figures from tidy tables
    launch           sweeps as submitit / SLURM jobs
    synthetic, cifar_binary, cifar_extension   the studies, composed from the rooms above
    report           the claims report (python -m iwshift.report)
"""

__version__ = "0.1.0"
