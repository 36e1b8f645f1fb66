"""The 2-D synthetic study: ERM vs importance-weighted ERM on separable Gaussians and (imbalanced) moons.

Every upper-case constant below is the study's configuration and can be overridden from the command
line (``--epochs 100 --seeds 0 1``); ``--help`` lists them. Writes one folder per run under OUT (``metrics.csv``,
``config.json``, ``params.npz``: the results format of every study; the extreme-weighting study's under
OUT_EXTREME) and the figures (PNG) to FIGURES. A run with complete results is skipped on rerun.

A run whose loss or parameters become non-finite is not measured further and is marked ``diverged`` in its
metrics.csv (``status=diverged``); the script then ends with a summary line on stderr and exit status 3.
"""

import sys
import time
from pathlib import Path

# light imports only up to the parsed command line: --help and argument errors answer at once;
# the study (torch, pandas, numba) is imported once the command line is parsed
from iwshift import cli, config

OUT = "results/synthetic"            # results folder: one sub-folder per run
FIGURES = "figures/synthetic"        # figures folder
DATASETS = list(config.SYNTHETIC_DATASETS)  # 2-D data sets: separable Gaussians, moons, moons with a minority class
MODELS = ["lr", "mlp"]               # logistic regression and/or a one-hidden-layer MLP
WEIGHTINGS = ["equal", "up", "down"]  # up: WEIGHT on class 1; down: WEIGHT on class 0
REGIMES = ["none", "l2", "dropout"]   # dropout applies to the MLP only
SEEDS = [0, 1, 2, 3, 4]               # model seeds (initialisation, batch order, dropout)
DATA_SEED = 0                         # data seed (sampling of the data sets and the imbalance)
WEIGHT = 10.0                         # importance weight of the up-weighted class
L2_LR = 0.1                           # weight decay of logistic regression in the l2 regime
L2_MLP = 0.01                         # weight decay of the MLP in the l2 regime
DROPOUT = 0.5                         # dropout probability in the dropout regime
HIDDEN = 64                           # MLP hidden units
EPOCHS = 10_000                      # SGD epochs
BATCH_SIZE = 8                        # mini-batch size
LR_SCALE = 0.01                       # learning rate = LR_SCALE / sigma_max(X_train)
NORMALIZATION = "mean"                # mean: sum w*l / n (IW-ERM); weight_sum: sum w*l / sum w (torch)
EVALS_PER_DECADE = 3                  # metric snapshots per decade of epochs (3: 1, 2, 5, 10, ...)
REMEDIES = ["plain"]                  # and/or: poly logit_adjusted drw exponent (in the `none` regime)
POLY_ALPHA = 1.0                      # polynomially-tailed loss: tail exponent alpha > 0
POLY_BETA = 0.0                       # ... switch point beta
TAU = 1.0                             # logit adjustment strength
DRW_EPOCH = 0                         # deferred re-weighting: weights from this epoch on (0: half)
WEIGHT_POWER = 0.5                    # weight exponent k
ENGINE = "auto"                       # trainer engine: auto/fused (compiled, CPU) or torch (a step per batch, slow)
EXTREME = True                        # also run the extreme-weighting stability study
EXTREME_WEIGHTS = [1.0, 10.0, 100.0, 1000.0]  # weights on either class (separable, moons; LR, MLP; regime none)
OUT_EXTREME = ""                      # extreme-weighting results ("": OUT/extreme)
CHECKPOINT_EVERY = 1000               # checkpoint each stack every this many epochs
OVERWRITE = False                     # retrain the runs in OUT saved with another configuration (else: an error)
FIGURES_ON = True                     # draw the figures
PROGRESS = True                       # progress bar

_PROG = "synthetic_study.py"


def main(argv=None) -> int:
    values = cli.override_from_argv({k: v for k, v in globals().items() if k.isupper()}, __doc__, argv,
                                    help_text=cli.constant_comments(__file__), config=config.SyntheticConfig,
                                    prog=_PROG)
    from iwshift import health, sweep, synthetic

    with cli.exit_on_config_error(_PROG):
        cfg = config.SyntheticConfig(**cli.config_fields(values, config.SyntheticConfig, {"paper": {}}, "paper"))
        checkpoint_every = cli.at_least("checkpoint_every", values["CHECKPOINT_EVERY"], 1)
        cli.creatable_folder("out", values["OUT"])  # (made once every check has passed)
        if values["FIGURES_ON"]:
            cli.creatable_folder("figures", values["FIGURES"])
        studies = [synthetic.SyntheticStudy(cfg)]
        outs = [Path(values["OUT"])]
        if values["EXTREME"]:
            studies.append(synthetic.ExtremeStudy(cfg))
            outs.append(Path(values["OUT_EXTREME"] or outs[0] / "extreme"))
        runners = [sweep.Runner(s, o, "cpu", progress=values["PROGRESS"] and sys.stderr.isatty(),
                                overwrite=values["OVERWRITE"], checkpoint_every=checkpoint_every)
                   for s, o in zip(studies, outs)]
        for runner in runners:
            runner.todo()  # a run saved with another configuration: an error before anything is trained
        # folders last: a bad argument creates nothing
        for name, out in zip(("out", "out_extreme"), outs):
            cli.writable_folder(name, out)
        figures_dir = cli.writable_folder("figures", values["FIGURES"]) if values["FIGURES_ON"] else None
    summaries = []
    for study, runner, out in zip(studies, runners, outs):
        start = time.perf_counter()
        runner.run()
        table = runner.table()
        print(f"{study.name}: {table['run'].nunique()} runs x {cfg.epochs} epochs in {out}/ "
              f"({time.perf_counter() - start:.1f} s)")
        if figures_dir is not None:
            from iwshift import plots

            figures = synthetic.figures(table, study.config, out) if study.name == "synthetic" else \
                [("instability_vs_weight", synthetic.instability_figure(synthetic.stability(table)))]
            count = 0
            for name, fig in figures:
                plots.save_figure(fig, figures_dir / f"{name}.png")
                count += 1
            print(f"{count} figures in {figures_dir}/")
        summaries.append(health.divergence_summary(table, f"{_PROG}: {study.name}"))
    for summary in filter(None, summaries):
        print(summary, file=sys.stderr)
    return health.DIVERGED_EXIT_STATUS if any(summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
