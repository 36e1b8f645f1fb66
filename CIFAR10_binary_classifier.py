"""CIFAR-10 binary label-shift study: ERM vs importance-weighted ERM (none / L2 / dropout / batch norm).

Every upper-case constant below is the configuration; each is a flag (``--help``). ``--preset paper`` is
the paper's protocol (full-width CNN, 5,000 images per class, 500 epochs); ``--preset cpu`` a smaller one
that fits on 2 CPU cores; ``auto`` picks paper on CUDA, cpu otherwise. Flags given explicitly override
the preset. Data: torchvision downloads CIFAR-10 into DATA_DIR, or DATA_DIR is an ImageFolder tree
(train/<class>/*.png|jpg, test/<class>/*).

``--launcher submitit`` trains the runs without results as a SLURM job array (JOBS jobs, each a shard of
runs trained together), waits, reports failed jobs with their logs and merges; rerunning submits only the
runs still without results. ``--launcher submitit-local`` runs the same jobs on this machine.
``--merge-only`` trains nothing: it merges the complete runs of the grid and draws the figures.

Run health, in every run's metrics.csv: ``train_accuracy_eval`` (eval-mode accuracy on the run's training
set), ``diverged`` (a non-finite training loss: the run stops, its rows end there), ``collapsed`` (a
constant predictor on the test images) and ``status`` (ok / collapsed / diverged). If any run diverged the
script ends with a summary line on stderr and exit status 3.
"""

import sys
import time
from dataclasses import asdict
from pathlib import Path

# light imports only up to the parsed command line: --help and argument errors answer at once;
# the study (torch, pandas) is imported in the functions that run it
from iwshift import cli, config

PRESET = "auto"                  # config preset: paper (the paper's protocol), cpu (fits 2 CPU cores), auto (paper on CUDA, else cpu)
SETTINGS = ["weighting"]         # weighting (weight w on the positive class) and/or imbalance (positive:negative ratio)
CLASSES = ["cat", "dog"]         # negative, positive (the positive class's predicted fraction is tracked)
DATA_DIR = "data"                # torchvision download folder, or an ImageFolder tree
DOWNLOAD = True                  # let torchvision download CIFAR-10 into DATA_DIR when it is not there
OUT = "results/cifar_binary"     # results folder: one sub-folder per run
FIGURES = "figures/cifar_binary"  # figures folder
DEVICE = "auto"                  # auto | cpu | cuda | cuda:N
SEEDS = [0, 1, 2]                # model seeds (initialisation, batch order, dropout): one run per seed
DATA_SEED = 0                    # data seed (training subset, subsampling)
WEIGHTS = [1 / 128, 1 / 32, 1 / 8, 1.0, 8.0, 32.0, 128.0]  # importance weight of the positive class
RATIOS = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0, 16.0]  # positive:negative (imbalance)
REGIMES = ["none", "l2", "dropout", "batchnorm"]  # regularisation regimes (weight decay, dropout, batch norm)
PER_CLASS = 5000                 # training images per class
WIDTH = 1.0                      # CNN width multiplier
EPOCHS = 500                     # SGD epochs
LR = 0.01                        # SGD learning rate
MOMENTUM = 0.9                   # SGD momentum
BATCH_SIZE = 16                  # mini-batch size
L2 = 1e-3                        # weight decay of the l2 regime
DROPOUT = 0.5                    # on the two hidden fully connected layers
NORMALIZATION = "weight_sum"     # weight_sum: torch class weights (paper); mean: sum w*l / n
PRECISION = "auto"               # auto: bf16 on CUDA, measured choice on CPU | fp32 | bf16 (autocast)
COMPILE = False                  # torch.compile the stacked model
CONVOLUTIONS = "torch"           # torch (cuDNN/oneDNN) | triton (Triton kernels; CUDA) | auto (faster per layer; CUDA)
OTHER_EVAL = 8000                # other-class test images for their predicted fraction
NOISE_EVAL = 1000                # uniform-noise images
MAX_STACK = 84                   # runs trained together at most (a GPU wants many)
SIDE_BY_SIDE = 1                 # each stack as this many smaller stacks trained at once (CUDA: a stream each)
REMEDIES = ["plain"]             # plain weighted CE, and/or: poly logit_adjusted drw exponent early_stop
POLY_ALPHA = 1.0                 # polynomially-tailed loss: tail exponent alpha > 0
POLY_BETA = 0.0                  # ... switch point beta (logistic below, polynomial tail above)
TAU = 1.0                        # logit adjustment: unit weights, logits - TAU * log(class weight)
DRW_EPOCH = 0                    # deferred re-weighting: unweighted before this epoch (0: half the epochs)
WEIGHT_POWER = 0.5               # weight exponent: w**k at the plain weights' mean (their step size)
VAL_FRACTION = 0.1               # early stopping: importance-weighted validation split of the training set
FIGURES_ON = True                # draw the figures
PROGRESS = True                  # progress bar (on a terminal)
MERGE_ONLY = False               # train nothing: merge the grid's complete runs in OUT, draw the figures
PLAN = "off"                     # all: print the study as GPU jobs (slices of this command) and train nothing | next: the next job not complete in OUT
PLAN_LIMIT_MIN = 9.0             # plan: each job's projected minutes at most, by the GPU record
PLAN_RECORD = ""                 # plan: the GPU record to project from ("": the newest in benchmarks/results/)
OVERWRITE = False                # retrain the runs in OUT saved with another configuration (else: an error)
CHECKPOINT_EVERY = 10            # checkpoint each stack every this many epochs (and on SIGTERM/SIGUSR1)
LAUNCHER = "local"               # local (this process) | submitit (SLURM job array) | submitit-local (same jobs here)
PARTITION = ""                   # submitit: SLURM partition ("" = the cluster's default)
GPUS_PER_JOB = 1                 # submitit: GPUs per job (0: CPU jobs)
CPUS_PER_JOB = 8                 # submitit: CPU cores per job
MEM_GB = 32                      # submitit: memory per job (GB)
TIME_MIN = 240                   # submitit: time limit per job (minutes)
ARRAY_PARALLELISM = 16           # submitit: jobs of the array running at once at most
JOBS = 4                         # submitit: the runs without results are split into this many jobs
LOG_DIR = "logs/submitit"        # submitit: one folder per job with its logs

_PROG = "CIFAR10_binary_classifier.py"
# the choices of the constants that are not knobs of the study's configuration (config.BinaryConfig)
CHOICES = {"PRESET": ("auto", *config.BINARY_PRESETS), "SETTINGS": config.BINARY_SETTINGS,
           "LAUNCHER": config.LAUNCHERS, "PLAN": ("off", "all", "next")}


def main(argv=None) -> int:
    constants = {k: v for k, v in globals().items() if k.isupper() and k != "CHOICES"}
    values = cli.override_from_argv(constants, __doc__, argv, help_text=cli.constant_comments(__file__),
                                    choices=CHOICES, config=config.BinaryConfig, presets=config.BINARY_PRESETS,
                                    prog=_PROG)
    from iwshift import cifar_binary as study
    from iwshift import launch, sweep
    from iwshift.cnn import check_device

    with cli.exit_on_config_error(_PROG):
        launcher = launch.LaunchConfig.from_constants(values)
        device = launch.job_device(values["DEVICE"], launcher)
        preset = values["PRESET"] if values["PRESET"] != "auto" else "paper" if device.startswith("cuda") else "cpu"
        fields = cli.config_fields(values, config.BinaryConfig, config.BINARY_PRESETS, preset, argv)
        configs = [config.BinaryConfig(**{**fields, "setting": s})
                   for s in cli.all_of("settings", values["SETTINGS"], config.BINARY_SETTINGS)]
        for cfg in configs:
            check_device(cfg, device)
        checkpoint_every = cli.at_least("checkpoint_every", values["CHECKPOINT_EVERY"], 1)
        if values["PLAN"] != "off":  # the study as GPU jobs: nothing loaded, trained or written
            from iwshift import plan

            return plan.print_plan(values["PLAN"], _PROG, sys.argv[1:] if argv is None else argv,
                                   [(cfg, {"settings": [cfg.setting]}) for cfg in configs], study.BinaryStudy,
                                   values["OUT"], preset, cli.positive_finite("plan_limit_min", values["PLAN_LIMIT_MIN"]),
                                   values["PLAN_RECORD"])
        if not values["MERGE_ONLY"]:
            launch.check(launcher)
        cli.creatable_folder("out", values["OUT"])  # (made once every check has passed)
        if values["FIGURES_ON"]:
            cli.creatable_folder("figures", values["FIGURES"])
    start = time.perf_counter()
    out = Path(values["OUT"])
    if values["MERGE_ONLY"]:
        table = merge(configs, out)
        if table.empty:
            print(f"{_PROG}: error: no complete runs of this grid in {out}/ (give the sweep's own flags with "
                  f"--merge-only)", file=sys.stderr)
            return 1
        with cli.exit_on_config_error(_PROG):
            figures_dir = cli.writable_folder("figures", values["FIGURES"]) if values["FIGURES_ON"] else None
        return finish(table, out, figures_dir, start)
    from iwshift.cifar_data import load_for_script

    data_dir = str(Path(values["DATA_DIR"]).resolve())  # as the jobs see it: one data source in config.json
    data = load_for_script(_PROG, data_dir, values["DOWNLOAD"], values["PROGRESS"] and sys.stderr.isatty())
    if data is None:
        return 2
    studies = [study.BinaryStudy(cfg, data, data_dir) for cfg in configs]
    with cli.exit_on_config_error(_PROG):  # every check before anything is trained or written
        runners = []
        for s in studies:
            s.check(out)
            runners.append(sweep.Runner(s, out, device, progress=values["PROGRESS"], overwrite=values["OVERWRITE"],
                                        checkpoint_every=checkpoint_every))
        todo = [r.todo() for r in runners]
        executor = launch.make_executor(launcher) if launcher.uses_submitit else None
        out = cli.writable_folder("out", out)  # folders last: a refused command leaves none behind
        figures_dir = cli.writable_folder("figures", values["FIGURES"]) if values["FIGURES_ON"] else None
    print(f"data: {data.source}; preset {preset}; device {device}")
    for s in studies:
        print(f"{s.config.setting}: {len(s.runs())} runs; config {asdict(s.config)}")
    if executor is not None:
        phases = [jobs for s, t in zip(studies, todo) if len(t)
                  for jobs in sweep.jobs(s, t, out, device, launcher.jobs, values["OVERWRITE"])]
        failures = launch.submit_and_report(executor, launcher, phases, prog=_PROG)
        if failures is None:  # Ctrl-C: the jobs go on
            return 130
        table = merge(configs, out)
        if failures:
            missing = sum(len(s.runs()) for s in studies) - (table["run"].nunique() if len(table) else 0)
            if len(table):
                from iwshift import results

                results.write_table(out / "merged.csv", table)
            print(f"{_PROG}: {len(failures)} jobs failed; {missing} runs have no results (merged.csv holds the "
                  f"others, no figures); rerun the same command to submit only them", file=sys.stderr)
            return 1
        return finish(table, out, figures_dir, start)
    import pandas as pd

    for runner in runners:
        runner.run()
    return finish(pd.concat([r.table() for r in runners], ignore_index=True), out, figures_dir, start)


def merge(configs, out):
    """The merged table of the grids' complete runs (what a local sweep returns)."""
    import pandas as pd

    from iwshift import cifar_binary as study
    from iwshift import results

    return pd.concat([results.merge(out, study.build_runs(cfg)["run"]) for cfg in configs], ignore_index=True)


def finish(table, out, figures_dir, start) -> int:
    """Write the merged table and draw the figures; say which runs diverged (exit status 3 if any)."""
    from iwshift import cifar_binary as study
    from iwshift import health, results

    results.write_table(out / "merged.csv", table)
    print(f"{table['run'].nunique()} runs complete in {out}/ ({time.perf_counter() - start:.0f} s); "
          f"merged table: {out / 'merged.csv'}")
    if figures_dir is not None:
        from iwshift import plots

        for name, fig in study.figures(table):
            plots.save_figure(fig, figures_dir / f"{name}.png")
        print(f"figures in {figures_dir}/")
    summary = health.divergence_summary(table, _PROG)
    if summary:
        print(summary, file=sys.stderr)
        return health.DIVERGED_EXIT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
