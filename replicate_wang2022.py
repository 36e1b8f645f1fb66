"""Replicate Wang, Chatterji, Haque & Hashimoto (ICLR 2022), imbalanced binary CIFAR-10 (cat vs dog, 10:1),
side by side with their released per-seed results.

Their grid: cross-entropy and their poly-tailed loss (alpha = 1) x {No IW, IW, IW-Exp (weights ** 1.5,
lr 0.008, momentum 0)} x 10 seeds, 400 epochs; the early-stopped cells (IW-ES, IW-Exp-ES) are checkpoints
of the IW runs chosen by their rule, ours, and test-as-validation (see iwshift/wang2022.py). Every
upper-case constant is a flag (--help). ``--preset paper`` is their protocol (``auto``: paper on CUDA);
``--preset cpu`` a scaled-down grid (width 1/4, 1,000 + 100 images, 40 epochs, 3 seeds) that is NOT
comparable with their numbers. Runs are resumable (a complete run is skipped). Writes the comparison
table to OUT/comparison.md and the figure to FIGURES/comparison.png; ``--dry-run`` prints the projected
cost and trains nothing.
"""

import sys
import time
from pathlib import Path

# light imports only up to the parsed command line: --help and argument errors answer at once
from iwshift import cli, config

PRESET = "auto"                  # auto | paper (their protocol) | cpu (scaled down, not comparable)
DATA_DIR = "data"                # torchvision download folder, or an ImageFolder tree
DOWNLOAD = True                  # let torchvision download CIFAR-10 into DATA_DIR when it is not there
OUT = ""                         # "" -> results/wang2022 (paper) or results/wang2022_cpu (cpu)
FIGURES = ""                     # "" -> figures/wang2022 or figures/wang2022_cpu
DEVICE = "auto"                  # auto | cpu | cuda | cuda:N
SEEDS = list(range(10))          # model seeds: one run per seed in each cell
DATA_SEED = 0                    # draws the 500 dogs and the 80/20 split (with each seed, unless FIXED_DATA)
LOSSES = ["ce", "poly_wang"]     # cross-entropy, their poly-tailed loss
WEIGHTINGS = ["none", "iw", "iw_exp"]  # No IW, IW (1 / class count), IW-Exp (weights ** WEIGHT_EXPONENT)
PER_CLASS = 5000                 # cats; dogs = PER_CLASS / IMBALANCE
IMBALANCE = 10                   # cats per dog
TRAIN_FRACTION = 0.8             # the rest: held-out validation split (early stopping)
WIDTH = 1.0                      # CNN width multiplier
EPOCHS = 400                     # SGD epochs
LR = 0.001                       # SGD learning rate (No IW, IW)
MOMENTUM = 0.9                   # SGD momentum (No IW, IW)
EXP_LR = 0.008                   # IW-Exp's optimiser
EXP_MOMENTUM = 0.0               # IW-Exp's momentum
WEIGHT_EXPONENT = 1.5            # IW-Exp: (1 / class count) ** exponent
BATCH_SIZE = 64                  # mini-batch size
POLY_ALPHA = 1.0                 # their poly-tailed loss's tail exponent
FIXED_DATA = True                # the dogs and the split drawn once from DATA_SEED, as their code (else per seed)
NORMALIZATION = "mean"           # mean: sum w*l / batch (theirs); weight_sum: sum w*l / sum w
PRECISION = "fp32"               # fp32 (theirs) | bf16 | auto
COMPILE = False                  # torch.compile the stacked model
CONVOLUTIONS = "torch"           # torch (cuDNN/oneDNN) | triton (Triton kernels; CUDA) | auto (faster per layer; CUDA)
EVAL_EVERY = 1                   # their checkpoint callback looks at every epoch
MAX_STACK = 84                   # runs trained together at most
SIDE_BY_SIDE = 1                 # each stack as this many smaller stacks trained at once (CUDA: a stream each)
CPU_IMG_PER_S = 0.0              # > 0: also project the CPU wall time at this rate (model-images per second;
                                 # 324 measured here for the cpu preset, bf16, 2 cores under load ~9)
PROGRESS = True                  # progress bar on a terminal, else a line about every 30 s
DRY_RUN = False                  # print the grid and its projected cost; train nothing
MERGE_ONLY = False               # train nothing: compare the complete runs in OUT
PLAN = "off"                     # all: print the grid as GPU jobs (slices of this command) and train nothing | next: the next job not complete in OUT
PLAN_LIMIT_MIN = 9.0             # plan: each job's projected minutes at most, by the GPU record
PLAN_RECORD = ""                 # plan (and the projection): the GPU record ("": the newest in benchmarks/results/)

_PROG = "replicate_wang2022.py"
# the choices of the constants that are not knobs of the replication's configuration (config.Wang2022Config)
CHOICES = {"PRESET": ("auto", *config.WANG_PRESETS), "PLAN": ("off", "all", "next")}


def main(argv=None) -> int:
    constants = {k: v for k, v in globals().items() if k.isupper() and k != "CHOICES"}
    values = cli.override_from_argv(constants, __doc__, argv, help_text=cli.constant_comments(__file__),
                                    choices=CHOICES, config=config.Wang2022Config, presets=config.WANG_PRESETS,
                                    prog=_PROG)
    from iwshift import plan, sweep
    from iwshift import wang2022 as study
    from iwshift.cnn import check_device
    from iwshift.launch import resolve_device

    with cli.exit_on_config_error(_PROG):
        device = resolve_device(values["DEVICE"])
        preset = values["PRESET"] if values["PRESET"] != "auto" else "paper" if device.startswith("cuda") else "cpu"
        fields = cli.config_fields(values, config.Wang2022Config, config.WANG_PRESETS, preset, argv)
        cfg = config.Wang2022Config(**{**fields, "preset": preset})
        check_device(cfg, device)
        suffix = "" if preset == "paper" else f"_{preset}"
        out = Path(values["OUT"] or f"results/wang2022{suffix}")
        figures_dir = Path(values["FIGURES"] or f"figures/wang2022{suffix}")
        if values["PLAN"] != "off":  # the grid as GPU jobs: nothing loaded, trained or written
            return plan.print_plan(values["PLAN"], _PROG, sys.argv[1:] if argv is None else argv, [(cfg, {})],
                                   study.Wang2022Study, out, preset,
                                   cli.positive_finite("plan_limit_min", values["PLAN_LIMIT_MIN"]), values["PLAN_RECORD"])
        record = plan.read_record(values["PLAN_RECORD"]) if values["PLAN_RECORD"] else plan.newest_record()
        cli.creatable_folder("out", out)
        cli.creatable_folder("figures", figures_dir)
        cpu_rate = cli.non_negative_finite("cpu_img_per_s", values["CPU_IMG_PER_S"])
    cost = study.projected_cost(cfg)
    protocol = "their protocol" if study.comparable(cfg, "official CIFAR-10", study.resolve_precision(
        cfg.precision, device))[0] else "NOT their protocol"
    print(f"preset {preset} ({protocol}, given the official CIFAR-10 files); device {device}; {cost['runs']} runs in {cost['stacks']} stacks; "
          f"{cost['train_images'] / 1e6:.1f} M model-images trained + {cost['eval_images'] / 1e6:.1f} M evaluated "
          f"({cost['evaluated_epochs']} evaluated epochs per run)")
    work = cost["train_images"] + cost["eval_images"] / 3  # by FLOP count, a forward pass is a third of a step
    print(f"projected: ~{plan.project(study.Wang2022Study(cfg), record) / 60:.0f} min as one job on one "
          f"{record.device} (by {Path(record.path).name}; --plan all splits it into jobs of at most 9 min)"
          + (f"; ~{work / cpu_rate / 60:.0f} min on CPU at {cpu_rate:,.0f} model-img/s" if cpu_rate else ""))
    if values["DRY_RUN"]:
        return 0
    start = time.perf_counter()
    if values["MERGE_ONLY"]:
        from iwshift import results

        table = results.merge(out, study.build_runs(cfg)["run"])
        if table.empty:
            print(f"{_PROG}: error: no complete runs of this grid in {out}/", file=sys.stderr)
            return 1
    else:
        from iwshift.cifar_data import load_for_script

        data = load_for_script(_PROG, values["DATA_DIR"], values["DOWNLOAD"], values["PROGRESS"] and sys.stderr.isatty())
        if data is None:
            return 2
        grid = study.Wang2022Study(cfg, data, values["DATA_DIR"])
        ok, why = grid.comparable()
        print(f"data: {data.source}; " + ("their protocol" if ok else f"NOT comparable with their numbers: "
                                          f"{'; '.join(why)}"))
        runner = sweep.Runner(grid, out, device, progress=values["PROGRESS"])
        with cli.exit_on_config_error(_PROG):
            grid.check(out)
            runner.todo()
        cli.writable_folder("out", out)
        runner.run()  # lines in a log
        table = runner.table()
    cli.writable_folder("figures", figures_dir)
    return finish(table, out, figures_dir, start)


def finish(table, out, figures_dir, start) -> int:
    from iwshift import plots, results
    from iwshift import wang2022 as study

    comparison, headlines = study.summarise(table)
    records = [results.load_run(out, run)[1] for run in table["run"].unique()]
    text = study.markdown(comparison, headlines, study.describe(table, records))
    results.write_table(out / "merged.csv", table)
    results.write_table(out / "comparison.csv", comparison)
    results.write_text(out / "comparison.md", text)
    comparable = table["comparable"].astype(bool).all()
    title = "" if comparable else "NOT COMPARABLE (scaled-down protocol): ours vs Wang et al. (2022)"
    plots.save_figure(study.figure(comparison, title), figures_dir / "comparison.png")
    print(text)
    print(f"{table['run'].nunique()} runs complete in {out}/ ({time.perf_counter() - start:.0f} s); "
          f"comparison: {out / 'comparison.md'}; figure: {figures_dir / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
