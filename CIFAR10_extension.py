"""CIFAR-10 extension: covariate shift (animal/vehicle with skewed sub-populations) and multiclass label
shift (long-tailed source, balanced target), with importance weights known (true) or estimated
(domain classifier, KLIEP, KMM; BBSE, MLLS).

Every upper-case constant below is the configuration; each is a flag (``--help``). Presets and data
options as in CIFAR10_binary_classifier.py (``--preset auto|paper|cpu``, ``--data-dir``). Writes one folder
per run under OUT (metrics.csv, config.json), ``weights_<study>.csv`` (error of each weight source against
the true weights, effective sample size), the merged table and figures.
"""

import sys
import time

from iwshift import cifar_extension as ext
from iwshift import config as cli
from iwshift import sweep

PRESET = "auto"                  # auto | paper | cpu
STUDIES = ["covariate", "label"]
DATA_DIR = "data"
DOWNLOAD = True
OUT = "results/cifar_extension"
FIGURES = "figures/cifar_extension"
DEVICE = "auto"
SEEDS = [0, 1, 2]
DATA_SEED = 0
REGIMES = ["none", "l2", "dropout", "batchnorm"]
COVARIATE_WEIGHTS = ["none", "true", "domain", "kliep"]  # also: kmm (skada; n x n kernel)
LABEL_WEIGHTS = ["none", "true", "bbse", "mlls"]
SOURCE_COUNTS = [500, 5000, 500, 5000]   # cats, dogs, automobiles, trucks in the training set
IMBALANCE = 10.0                 # label shift: largest / smallest class count of the source
PER_CLASS = 5000                 # label shift: images of the largest source class
HOLDOUT = 0.2                    # label shift: held-out source fraction for BBSE and calibration
FEATURE_DIMS = 16                # covariate estimators: PCA dimensions of 8x8x3 pooled pixels
KERNEL_DIMS = 5                  # ... used by the kernel estimator (KLIEP)
CLIP = float("inf")              # clip estimated weights at this value
SELF_NORMALIZE = True            # rescale estimated weights to mean 1 over the training set
WIDTH = 1.0
EPOCHS = 500
LR = 0.01
MOMENTUM = 0.9
BATCH_SIZE = 16
L2 = 1e-3
DROPOUT = 0.5
NORMALIZATION = "weight_sum"
PRECISION = "auto"
COMPILE = False
MAX_STACK = 84                   # runs trained together at most (a GPU wants many)
FIGURES_ON = True
PROGRESS = True

FIELDS = {"SEEDS": "seeds", "DATA_SEED": "data_seed", "REGIMES": "regimes", "SOURCE_COUNTS": "source_counts",
          "IMBALANCE": "imbalance", "PER_CLASS": "per_class", "HOLDOUT": "holdout", "FEATURE_DIMS": "feature_dims",
          "KERNEL_DIMS": "kernel_dims", "CLIP": "clip", "SELF_NORMALIZE": "self_normalize", "WIDTH": "width",
          "EPOCHS": "epochs", "LR": "lr", "MOMENTUM": "momentum", "BATCH_SIZE": "batch_size", "L2": "l2",
          "DROPOUT": "dropout", "NORMALIZATION": "normalization", "PRECISION": "precision",
          "COMPILE": "compile", "MAX_STACK": "max_stack"}


def main(argv=None) -> int:
    constants = {k: v for k, v in globals().items() if k.isupper() and k != "FIELDS"}
    values = cli.override_from_argv(constants, __doc__, argv)
    with cli.exit_on_config_error("CIFAR10_extension.py"):
        device = sweep.resolve_device(values["DEVICE"])
        preset, fields = sweep.preset_fields(values, constants, FIELDS, ext.PRESETS, device, argv)
        studies = cli.all_of("studies", values["STUDIES"], ext.STUDIES)
        configs = [ext.ExtensionConfig(study=s, weight_sources=values["COVARIATE_WEIGHTS" if s == "covariate"
                                                                      else "LABEL_WEIGHTS"], **fields)
                   for s in studies]
        out = cli.writable_folder("out", values["OUT"])
        figures_dir = cli.writable_folder("figures", values["FIGURES"]) if values["FIGURES_ON"] else None
    from iwshift.cifar_data import DataUnavailableError, load_cifar10

    try:
        data = load_cifar10(values["DATA_DIR"], download=values["DOWNLOAD"],
                            progress=values["PROGRESS"] and sys.stderr.isatty())
    except DataUnavailableError as err:
        print(f"CIFAR10_extension.py: error: {err}", file=sys.stderr)
        return 2
    print(f"data: {data.source}; preset {preset}; device {device}")
    from iwshift import plots, results

    for cfg in configs:
        start = time.perf_counter()
        with cli.exit_on_config_error("CIFAR10_extension.py"):
            table, weights = ext.run_study(data, cfg, out, device,
                                           progress=values["PROGRESS"] and sys.stderr.isatty())
        results.write_table(out / f"merged_{cfg.study}.csv", table)
        print(f"{cfg.study} shift: {table['run'].nunique()} runs in {out}/ ({time.perf_counter() - start:.0f} s)")
        print(weights.to_string(index=False))
        if figures_dir is not None:
            scatter = results.read_arrays(out / f"weights_{cfg.study}.npz")
            for name, fig in ext.figures(table, scatter, cfg.study):
                plots.save_figure(fig, figures_dir / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
