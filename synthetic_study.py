"""The 2-D synthetic study: ERM vs importance-weighted ERM on separable Gaussians and (imbalanced) moons.

Every upper-case constant below is the study's configuration and can be overridden from the command
line (``--epochs 100 --seeds 0 1``); ``--help`` lists them. Writes ``metrics.csv``, ``runs.csv``,
``params.npz`` and ``manifest.json`` to OUT and the figures (PNG) to FIGURES.

A run whose loss or parameters become non-finite is not measured further and is marked ``diverged`` in
metrics.csv (``status=diverged`` in the table ``iwshift.synthetic.load`` gives); the script then ends with a
summary line on stderr and exit status 3.
"""

import sys
import time

# light imports only up to the parsed command line: --help and argument errors answer at once;
# the study (torch, pandas, numba) is imported once the command line is parsed
from iwshift import choices
from iwshift import config as cli

OUT = "results/synthetic"            # results folder
FIGURES = "figures/synthetic"        # figures folder
DATASETS = list(choices.SYNTHETIC_DATASETS)  # 2-D data sets: separable Gaussians, moons, moons with a minority class
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
FIGURES_ON = True                     # draw the figures
PROGRESS = True                       # progress bar


CHOICES = {"DATASETS": choices.SYNTHETIC_DATASETS, "MODELS": choices.MODELS_2D, "WEIGHTINGS": choices.WEIGHTINGS,
           "REGIMES": choices.SYNTHETIC_REGIMES, "NORMALIZATION": choices.NORMALIZATIONS,
           "REMEDIES": choices.SYNTHETIC_REMEDIES, "ENGINE": choices.ENGINES}


def main(argv=None) -> int:
    values = cli.override_from_argv(
        {k: v for k, v in globals().items() if k.isupper() and k != "CHOICES"}, __doc__, argv,
        help_text=cli.constant_comments(__file__), choices=CHOICES, prog="synthetic_study.py")
    from iwshift import synthetic
    from iwshift.sweep import DIVERGED_EXIT_STATUS

    with cli.exit_on_config_error("synthetic_study.py"):
        extreme_weights = cli.distinct("extreme_weights", [cli.positive_finite("extreme_weights", w)
                                                            for w in values["EXTREME_WEIGHTS"]])
        cfg = synthetic.SyntheticConfig(
            datasets=values["DATASETS"], models=values["MODELS"], weightings=values["WEIGHTINGS"],
            regimes=values["REGIMES"], seeds=values["SEEDS"], data_seed=values["DATA_SEED"],
            weight=values["WEIGHT"], l2_lr=values["L2_LR"], l2_mlp=values["L2_MLP"],
            dropout=values["DROPOUT"], hidden=values["HIDDEN"], epochs=values["EPOCHS"],
            batch_size=values["BATCH_SIZE"], lr_scale=values["LR_SCALE"],
            normalization=values["NORMALIZATION"], evals_per_decade=values["EVALS_PER_DECADE"],
            remedies=values["REMEDIES"], poly_alpha=values["POLY_ALPHA"], poly_beta=values["POLY_BETA"],
            tau=values["TAU"], drw_epoch=values["DRW_EPOCH"], weight_power=values["WEIGHT_POWER"],
            engine=values["ENGINE"])
        # folders last: a bad argument creates nothing
        out = cli.writable_folder("out", values["OUT"])
        figures_dir = cli.writable_folder("figures", values["FIGURES"]) if values["FIGURES_ON"] else None
        out_extreme = None
        if values["EXTREME"]:
            out_extreme = cli.writable_folder("out_extreme", values["OUT_EXTREME"] or out / "extreme")
    progress = values["PROGRESS"] and sys.stderr.isatty()
    result = synthetic.run_study(cfg, progress=progress)
    synthetic.save(result, out)
    print(f"trained {len(result.runs)} runs x {cfg.epochs} epochs in {result.train_seconds:.1f} s "
          f"(study {result.total_seconds:.1f} s); results in {out}/")
    if figures_dir is not None:
        from iwshift import plots

        t0 = time.perf_counter()
        count = 0
        for name, fig in synthetic.figures(result.table, result.params, cfg):
            plots.save_figure(fig, figures_dir / f"{name}.png")
            count += 1
        print(f"{count} figures in {figures_dir}/ ({time.perf_counter() - t0:.1f} s)")
    extreme_diverged = 0
    if out_extreme is not None:
        extreme_diverged = run_extreme(cfg, extreme_weights, out_extreme, figures_dir, progress)
    diverged = synthetic.diverged_runs(result.table)
    if diverged or extreme_diverged:
        print(f"synthetic_study.py: {len(diverged)} of {len(result.runs)} runs diverged (non-finite loss or "
              f"parameters; diverged in {out / 'metrics.csv'}: runs {' '.join(map(str, diverged)) or '-'})"
              + (f" and {extreme_diverged} extreme-weighting runs (diverged in stability.csv)" if extreme_diverged
                 else ""), file=sys.stderr)
        return DIVERGED_EXIT_STATUS
    return 0


def run_extreme(cfg, weights, out, figures_dir, progress) -> int:
    """The extreme-weighting stability study: per-run boundary movement, seed spread, divergence flags;
    returns the number of diverged runs."""
    from dataclasses import asdict, replace

    from iwshift import plots, results, synthetic

    base = replace(cfg, datasets=[d for d in cfg.datasets if d in ("separable", "moons")] or ["separable"])
    stab, spread, seconds = synthetic.run_extreme_study(base, weights, progress=progress)
    results.write_table(out / "stability.csv", stab)
    results.write_table(out / "seed_spread.csv", spread)
    results.write_json(out / "manifest.json", {"study": "synthetic_extreme", "config": asdict(base),
                                               "weights": list(weights), "train_seconds": round(seconds, 3),
                                               **results.environment("cpu")})
    print(f"extreme weighting: {len(stab)} runs in {seconds:.1f} s of training; "
          f"{int(stab['diverged'].sum())} diverged; results in {out}/")
    if figures_dir is not None:
        plots.save_figure(synthetic.instability_figure(stab), figures_dir / "instability_vs_weight.png")
    return int(stab["diverged"].sum())


if __name__ == "__main__":
    sys.exit(main())
