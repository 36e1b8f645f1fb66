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
from pathlib import Path

# light imports only up to the parsed command line: --help and argument errors answer at once;
# the studies (torch, pandas) are imported in the functions that run them
from iwshift import cli, config

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
ESTIMATOR_FEATURES = "penultimate"  # covariate estimators' features: penultimate (the seed's unweighted network) | pixels
FEATURE_DIMS = 16                # covariate estimators: principal components of their features
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
# the choices of the constants that are not knobs of the study's configuration (config.ExtensionConfig)
CHOICES = {"PRESET": ("auto", *config.EXTENSION_PRESETS), "STUDIES": config.EXTENSION_STUDIES,
           "COVARIATE_WEIGHTS": config.COVARIATE_SOURCES, "LABEL_WEIGHTS": config.LABEL_SOURCES,
           "LAUNCHER": config.LAUNCHERS}


def main(argv=None) -> int:
    constants = {k: v for k, v in globals().items() if k.isupper() and k != "CHOICES"}
    values = cli.override_from_argv(constants, __doc__, argv, help_text=cli.constant_comments(__file__),
                                    choices=CHOICES, config=config.ExtensionConfig,
                                    presets=config.EXTENSION_PRESETS, prog=_PROG, repeats_allowed=["SOURCE_COUNTS"])
    from iwshift import cifar_extension as ext
    from iwshift import launch, sweep
    from iwshift.cnn import check_device

    with cli.exit_on_config_error(_PROG):
        launcher = launch.LaunchConfig.from_constants(values)
        device = launch.job_device(values["DEVICE"], launcher)
        preset = values["PRESET"] if values["PRESET"] != "auto" else "paper" if device.startswith("cuda") else "cpu"
        fields = cli.config_fields(values, config.ExtensionConfig, config.EXTENSION_PRESETS, preset, argv)
        configs = [config.ExtensionConfig(**{**fields, "study": s, "weight_sources": values[
            "COVARIATE_WEIGHTS" if s == "covariate" else "LABEL_WEIGHTS"]})
                   for s in cli.all_of("studies", values["STUDIES"], config.EXTENSION_STUDIES)]
        for cfg in configs:
            check_device(cfg, device)
        checkpoint_every = cli.at_least("checkpoint_every", values["CHECKPOINT_EVERY"], 1)
        if not values["MERGE_ONLY"]:
            launch.check(launcher)
        cli.creatable_folder("out", values["OUT"])  # (made once every check has passed)
        if values["FIGURES_ON"]:
            cli.creatable_folder("figures", values["FIGURES"])
        if not values["MERGE_ONLY"]:
            for cfg in configs:  # the phases need no data: checked before it is loaded
                ext.ExtensionStudy(cfg).check_phases(Path(values["OUT"]))
        # the weights tables and merged tables are made here, on this machine's device
        here = launch.resolve_device("auto") if launcher.launcher == "submitit" else device
    out = Path(values["OUT"])
    if values["MERGE_ONLY"]:
        incomplete = [cfg for cfg in configs if not complete(cfg, out)]
        if incomplete:
            return report_incomplete(incomplete, out)
    from iwshift.cifar_data import load_for_script

    data_dir = str(Path(values["DATA_DIR"]).resolve())  # as the jobs see it: one data source in config.json
    data = load_for_script(_PROG, data_dir, values["DOWNLOAD"], values["PROGRESS"] and sys.stderr.isatty())
    if data is None:
        return 2
    studies = [ext.ExtensionStudy(cfg, data, data_dir) for cfg in configs]
    with cli.exit_on_config_error(_PROG):  # every check before anything is trained or written
        runners = [sweep.Runner(s, out, here, progress=values["PROGRESS"], overwrite=values["OVERWRITE"],
                                checkpoint_every=checkpoint_every) for s in studies]
        todo = []
        if not values["MERGE_ONLY"]:
            for s, r in zip(studies, runners):
                s.check(out)
                todo.append(r.todo())
        executor = launch.make_executor(launcher) if launcher.uses_submitit and not values["MERGE_ONLY"] else None
        out = cli.writable_folder("out", out)  # folders last: a refused command leaves none behind
        figures_dir = cli.writable_folder("figures", values["FIGURES"]) if values["FIGURES_ON"] else None
    print(f"data: {data.source}; preset {preset}; device {device}")
    if executor is not None:
        phases = [jobs for s, t in zip(studies, todo) if len(t)
                  for jobs in sweep.jobs(s, t, out, device, launcher.jobs, values["OVERWRITE"])]
        failures = launch.submit_and_report(executor, launcher, phases, prog=_PROG)
        if failures is None:  # Ctrl-C: the jobs go on
            return 130
        incomplete = [cfg for cfg in configs if not complete(cfg, out)]
        if failures or incomplete:  # never train here what the jobs were to train
            return report_incomplete(incomplete, out)
    from iwshift import health, plots, results

    summaries = []
    for s, runner in zip(studies, runners):
        start = time.perf_counter()
        with cli.exit_on_config_error(_PROG):
            runner.run()
            table = runner.table()
            weights = s.finish(out, table)
        results.write_table(out / f"merged_{s.config.study}.csv", table)
        print(f"{s.config.study} shift: {table['run'].nunique()} runs in {out}/ ({time.perf_counter() - start:.0f} s)")
        print(weights.to_string(index=False))
        if figures_dir is not None:
            scatter = results.read_arrays(out / f"weights_{s.config.study}.npz")
            for name, fig in ext.figures(table, scatter, s.config.study):
                plots.save_figure(fig, figures_dir / f"{name}.png")
        summaries.append(health.divergence_summary(table, f"{_PROG}: {s.config.study} shift"))
    for summary in filter(None, summaries):
        print(summary, file=sys.stderr)
    return health.DIVERGED_EXIT_STATUS if any(summaries) else 0


def complete(cfg, out) -> bool:
    from iwshift import cifar_extension as ext
    from iwshift import results

    return all(results.is_complete(out, r) for r in ext.build_runs(cfg)["run"])


def report_incomplete(configs, out) -> int:
    """Merge what there is (no weights tables, no figures) and say how to finish."""
    from iwshift import cifar_extension as ext
    from iwshift import results

    for cfg in configs:
        runs = ext.build_runs(cfg)["run"]
        table = results.merge(out, runs)
        if len(table):
            results.write_table(out / f"merged_{cfg.study}.csv", table)
        done = table["run"].nunique() if len(table) else 0
        print(f"{_PROG}: {cfg.study} shift: {len(runs) - done} of {len(runs)} runs have no results "
              f"(merged_{cfg.study}.csv holds the others; no weights table, no figures); run the sweep again "
              f"to train only them", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
