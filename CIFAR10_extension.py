"""CIFAR-10 extension: covariate shift (animal/vehicle with skewed sub-populations) and multiclass label
shift (long-tailed source, balanced target), with importance weights known (true) or estimated
(domain classifier, KLIEP, KMM; BBSE, MLLS).

Every upper-case constant below is the configuration; each is a flag (``--help``). Presets and data
options as in CIFAR10_binary_classifier.py (``--preset auto|paper|cpu``, ``--data-dir``). Writes one folder
per run under OUT (metrics.csv, config.json), ``weights_<study>.csv`` (error of each weight source against
the true weights, effective sample size), the merged table and figures.

``--launcher submitit`` (SLURM job array) or ``submitit-local`` trains the runs without results as jobs:
phase 1 (every weight source but bbse/mlls), then phase 2 (bbse/mlls, estimated from phase 1's unweighted
runs); each job trains cells (a study, a seed, the plain regimes or batchnorm). Then the weights tables,
merged tables and figures are made here as in a local run. ``--merge-only`` trains nothing.

Run health columns and diverged runs (summary line, exit status 3) as in CIFAR10_binary_classifier.py.
"""

import sys
import time

# light imports only up to the parsed command line: --help and argument errors answer at once;
# the studies (torch, pandas) are imported in the functions that run them
from iwshift import choices
from iwshift import config as cli
from iwshift import launch

PRESET = "auto"                  # config preset: paper (the paper's protocol), cpu (fits 2 CPU cores), auto (paper on CUDA, else cpu)
STUDIES = ["covariate", "label"]  # covariate shift (animal/vehicle sub-populations) and/or multiclass label shift
DATA_DIR = "data"                # torchvision download folder, or an ImageFolder tree
DOWNLOAD = True                  # let torchvision download CIFAR-10 into DATA_DIR when it is not there
OUT = "results/cifar_extension"  # results folder: one sub-folder per run
FIGURES = "figures/cifar_extension"  # figures folder
DEVICE = "auto"                  # auto | cpu | cuda | cuda:N
SEEDS = [0, 1, 2]                # model seeds (initialisation, batch order, dropout): one run per seed
DATA_SEED = 0                    # data seed (shifted splits, estimators)
REGIMES = ["none", "l2", "dropout", "batchnorm"]  # regularisation regimes (weight decay, dropout, batch norm)
COVARIATE_WEIGHTS = ["none", "true", "domain", "kliep"]  # covariate study's weight sources (kmm: skada, n x n kernel)
LABEL_WEIGHTS = ["none", "true", "bbse", "mlls"]  # label study's weight sources
SOURCE_COUNTS = [500, 5000, 500, 5000]   # cats, dogs, automobiles, trucks in the training set
IMBALANCE = 10.0                 # label shift: largest / smallest class count of the source
PER_CLASS = 5000                 # label shift: images of the largest source class
HOLDOUT = 0.2                    # label shift: held-out source fraction for BBSE and calibration
FEATURE_DIMS = 16                # covariate estimators: PCA dimensions of 8x8x3 pooled pixels
KERNEL_DIMS = 5                  # ... used by the kernel estimator (KLIEP)
CLIP = float("inf")              # clip estimated weights at this value
SELF_NORMALIZE = True            # rescale estimated weights to mean 1 over the training set
WIDTH = 1.0                      # CNN width multiplier
EPOCHS = 500                     # SGD epochs
LR = 0.01                        # SGD learning rate
MOMENTUM = 0.9                   # SGD momentum
BATCH_SIZE = 16                  # mini-batch size
L2 = 1e-3                        # weight decay of the l2 regime
DROPOUT = 0.5                    # on the two hidden fully connected layers, in the dropout regime
NORMALIZATION = "weight_sum"     # weight_sum: torch class weights (paper); mean: sum w*l / n
PRECISION = "auto"               # auto: bf16 on CUDA, measured choice on CPU | fp32 | bf16 (autocast)
COMPILE = False                  # torch.compile the stacked model
CONVOLUTIONS = "torch"           # torch (cuDNN/oneDNN) | triton (Triton kernels; CUDA) | auto (faster per layer; CUDA)
MAX_STACK = 84                   # runs trained together at most (a GPU wants many)
SIDE_BY_SIDE = 1                 # each stack as this many smaller stacks trained at once (CUDA: a stream each)
FIGURES_ON = True                # draw the figures
PROGRESS = True                  # progress bar (on a terminal)
MERGE_ONLY = False               # train nothing: weights tables, merged tables and figures of complete studies
OVERWRITE = False                # retrain the runs in OUT saved with another configuration (else: an error)
CHECKPOINT_EVERY = 10            # checkpoint each stack every this many epochs (and on SIGTERM/SIGUSR1)
LAUNCHER = "local"               # local (this process) | submitit (SLURM job array) | submitit-local (same jobs here)
PARTITION = ""                   # submitit: SLURM partition ("" = the cluster's default)
GPUS_PER_JOB = 1                 # submitit: GPUs per job (0: CPU jobs)
CPUS_PER_JOB = 8                 # submitit: CPU cores per job
MEM_GB = 32                      # submitit: memory per job (GB)
TIME_MIN = 240                   # submitit: time limit per job (minutes)
ARRAY_PARALLELISM = 16           # submitit: jobs of the array running at once at most
JOBS = 4                         # submitit: jobs per phase (each a few cells: study x seed x regime group)
LOG_DIR = "logs/submitit"        # submitit: one folder per job with its logs

_PROG = "CIFAR10_extension.py"
FIELDS = {"SEEDS": "seeds", "DATA_SEED": "data_seed", "REGIMES": "regimes", "SOURCE_COUNTS": "source_counts",
          "IMBALANCE": "imbalance", "PER_CLASS": "per_class", "HOLDOUT": "holdout", "FEATURE_DIMS": "feature_dims",
          "KERNEL_DIMS": "kernel_dims", "CLIP": "clip", "SELF_NORMALIZE": "self_normalize", "WIDTH": "width",
          "EPOCHS": "epochs", "LR": "lr", "MOMENTUM": "momentum", "BATCH_SIZE": "batch_size", "L2": "l2",
          "DROPOUT": "dropout", "NORMALIZATION": "normalization", "PRECISION": "precision",
          "COMPILE": "compile", "CONVOLUTIONS": "convolutions", "MAX_STACK": "max_stack",
          "SIDE_BY_SIDE": "side_by_side"}


CHOICES = {"PRESET": ("auto", *choices.EXTENSION_PRESETS), "STUDIES": choices.EXTENSION_STUDIES,
           "REGIMES": choices.CNN_REGIMES, "COVARIATE_WEIGHTS": choices.COVARIATE_SOURCES,
           "LABEL_WEIGHTS": choices.LABEL_SOURCES, "NORMALIZATION": choices.NORMALIZATIONS,
           "PRECISION": choices.PRECISIONS, "CONVOLUTIONS": choices.CONVOLUTIONS, "LAUNCHER": choices.LAUNCHERS}


def main(argv=None) -> int:
    constants = {k: v for k, v in globals().items() if k.isupper() and k not in ("FIELDS", "CHOICES")}
    values = cli.override_from_argv(constants, __doc__, argv, help_text=cli.constant_comments(__file__),
                                    choices=CHOICES, presets=choices.EXTENSION_PRESETS, fields=FIELDS, prog=_PROG,
                                    repeats_allowed=["SOURCE_COUNTS"])
    from iwshift import cifar_extension as ext
    from iwshift import sweep

    with cli.exit_on_config_error(_PROG):
        launcher = launch.LaunchConfig.from_constants(values)
        device = launch.job_device(values["DEVICE"], launcher)
        preset, fields = sweep.preset_fields(values, constants, FIELDS, ext.PRESETS, device, argv)
        studies = cli.all_of("studies", values["STUDIES"], ext.STUDIES)
        configs = [ext.ExtensionConfig(study=s, weight_sources=values["COVARIATE_WEIGHTS" if s == "covariate"
                                                                      else "LABEL_WEIGHTS"], **fields)
                   for s in studies]
        checkpoint_every = cli.at_least("checkpoint_every", values["CHECKPOINT_EVERY"], 1)
        out = cli.writable_folder("out", values["OUT"])
        figures_dir = cli.writable_folder("figures", values["FIGURES"]) if values["FIGURES_ON"] else None
        executor = None
        if not values["MERGE_ONLY"]:
            for cfg in configs:
                ext.check_black_box(cfg, out)
        if launcher.uses_submitit and not values["MERGE_ONLY"]:
            executor = launch.make_executor(launcher)
        # the weights tables and merged tables are made here, on this machine's device
        here = sweep.resolve_device("auto") if launcher.launcher == "submitit" else device
    from iwshift.cifar_data import load_for_script

    if values["MERGE_ONLY"]:
        incomplete = [cfg for cfg in configs if not complete(cfg, out)]
        if incomplete:
            return report_incomplete(incomplete, out)
    from pathlib import Path

    data_dir = str(Path(values["DATA_DIR"]).resolve())  # as the jobs see it: one data source in config.json
    data = load_for_script(_PROG, data_dir, values["DOWNLOAD"], values["PROGRESS"] and sys.stderr.isatty())
    if data is None:
        return 2
    todo = {}
    if not values["MERGE_ONLY"]:
        with cli.exit_on_config_error(_PROG):  # every check before anything is trained or written
            for cfg in configs:
                ext.check_data(data, cfg)
                todo[cfg.study] = set(sweep.todo_runs(ext.build_runs(cfg), out, sweep.config_record(
                    cfg, data.source, device if executor is not None else here),
                                                      values["OVERWRITE"], desc=_PROG if executor is not None else None)["run"])
    print(f"data: {data.source}; preset {preset}; device {device}")
    if executor is not None:
        code = through_submitit(executor, launcher, configs, data_dir, out, device, todo, values["OVERWRITE"])
        if code:
            return code
        incomplete = [cfg for cfg in configs if not complete(cfg, out)]
        if incomplete:  # never train here what the jobs were to train
            return report_incomplete(incomplete, out)
    from iwshift import plots, results

    summaries = []
    for cfg in configs:
        start = time.perf_counter()
        with cli.exit_on_config_error(_PROG):
            table, weights = ext.run_study(data, cfg, out, here, progress=values["PROGRESS"],
                                           overwrite=values["OVERWRITE"], checkpoint_every=checkpoint_every)
        results.write_table(out / f"merged_{cfg.study}.csv", table)
        print(f"{cfg.study} shift: {table['run'].nunique()} runs in {out}/ ({time.perf_counter() - start:.0f} s)")
        print(weights.to_string(index=False))
        if figures_dir is not None:
            scatter = results.read_arrays(out / f"weights_{cfg.study}.npz")
            for name, fig in ext.figures(table, scatter, cfg.study):
                plots.save_figure(fig, figures_dir / f"{name}.png")
        summaries.append(sweep.divergence_summary(table, f"{_PROG}: {cfg.study} shift"))
    for summary in filter(None, summaries):
        print(summary, file=sys.stderr)
    return sweep.DIVERGED_EXIT_STATUS if any(summaries) else 0


def complete(cfg, out) -> bool:
    from iwshift import cifar_extension as ext
    from iwshift import sweep

    return all(sweep.is_complete(out, r) for r in ext.build_runs(cfg)["run"])


def report_incomplete(configs, out) -> int:
    """Merge what there is (no weights tables, no figures) and say how to finish."""
    from iwshift import cifar_extension as ext
    from iwshift import results, sweep

    for cfg in configs:
        runs = ext.build_runs(cfg)["run"]
        table = sweep.merge(out, runs)
        if len(table):
            results.write_table(out / f"merged_{cfg.study}.csv", table)
        done = table["run"].nunique() if len(table) else 0
        print(f"{_PROG}: {cfg.study} shift: {len(runs) - done} of {len(runs)} runs have no results "
              f"(merged_{cfg.study}.csv holds the others; no weights table, no figures); run the sweep again "
              f"to train only them", file=sys.stderr)
    return 1


def through_submitit(executor, launcher, configs, data_dir, out, device, todo, overwrite) -> int:
    """Phase 1 then phase 2 as jobs (the runs of ``todo``: sweep.todo_runs per study); 0 when every job succeeded."""
    from pathlib import Path

    job = launch.Resumable(launch.extension_job, overwrite=overwrite)
    for phase in (1, 2):
        cells = [cell for cfg in configs for cell in launch.extension_cells(cfg, phase, out, todo[cfg.study])]
        if not cells:
            continue
        failures = launch.submit_and_report(executor, launcher, job,
                                            launch.shard(cells, launcher.jobs), configs, phase,
                                            str(Path(data_dir).resolve()), str(out.resolve()), device,
                                            prog=_PROG, label=f"phase {phase}: ")
        if failures is None:  # Ctrl-C: the jobs go on
            return 130
        if failures:
            return report_incomplete([cfg for cfg in configs if not complete(cfg, out)], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
