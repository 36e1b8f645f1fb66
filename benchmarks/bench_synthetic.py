"""Benchmark: the batched 2-D synthetic study against a plain one-run-at-a-time PyTorch loop.

What is measured, in one process:

* ``study_seconds``: wall time of the 2-D study (``synthetic.SyntheticStudy(SyntheticConfig())`` through the
  runner, ``iwshift.sweep.Runner``, into a temporary folder) at paper scale by default (250 runs, 10,000 epochs):
  data, training of all runs (``iwshift.train.Trainer``, its fused numba engine on CPU), all metric evaluations
  and parameter snapshots, and writing each run's results. A tiny warm-up study (1 epoch, seed 0) runs first so
  that numba JIT compilation is not counted.
* ``plain_run_epochs_per_s``: how the original code would train one run: a ``TensorDataset`` +
  ``DataLoader(batch_size=8, shuffle=True)``, an ``nn.Module`` from ``models.make_2d_model``,
  ``torch.optim.SGD(lr=learning_rate(x, 0.01), weight_decay=...)`` and ``weighted_bce_with_logits``
  with per-example class weights (weight 10 on class 1), on the balanced ``moons`` training set, for
  ``--plain-epochs`` epochs, with no evaluation at all (so the baseline is flattered), after an untimed 1-epoch warm-up. Two
  representative runs are timed: logistic regression (weight decay ``l2_lr``) and the MLP with dropout
  0.5. Their seconds per run-epoch, t_lr and t_mlp, are averaged in the study's proportion of LR and
  MLP runs (f_lr, f_mlp from ``runs["model"].value_counts()``):
  ``plain = 1 / (f_lr * t_lr + f_mlp * t_mlp)``, i.e. the run-epochs per second a plain loop would
  reach on the study's mix of runs. torch's default thread count is left as is.
* ``batched_run_epochs_per_s = n_runs * cfg.epochs / study_seconds``. Imbalanced moons runs
  (``moons_minority*``) have fewer training examples (276 and 287 instead of 512) and so cost less per
  epoch; the plain baseline uses the full 512-example moons set, which slightly favours the batched
  number. ``ratio = batched / plain``.

Run from the repository root: ``python benchmarks/bench_synthetic.py`` (``--epochs``/``--seeds`` for a
quick check). The last line is ``study_seconds=S plain_run_epochs_per_s=A batched_run_epochs_per_s=B
ratio=R``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from iwshift import losses, models, sweep, synthetic  # noqa: E402
from iwshift.config import SyntheticConfig  # noqa: E402


def plain_seconds_per_epoch(model_name: str, cfg: SyntheticConfig, epochs: int,
                            dropout: float, weight_decay: float) -> float:
    """Seconds per epoch of one run trained the plain way (see module docstring) on moons, 'up' weighting."""
    split = synthetic.load_dataset("moons", cfg).train
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    w = torch.tensor([1.0, cfg.weight])[y]
    loader = DataLoader(TensorDataset(x, y, w), batch_size=cfg.batch_size, shuffle=True)
    model = models.make_2d_model(model_name, cfg.hidden, dropout=dropout, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=synthetic.learning_rate(split.x, cfg.lr_scale),
                          weight_decay=weight_decay)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb, wb in loader:
            opt.zero_grad()
            loss = losses.weighted_bce_with_logits(model(xb), yb, wb, cfg.normalization)
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / epochs


def train_study(cfg: SyntheticConfig, out: str) -> pd.DataFrame:
    """Train the whole 2-D study into ``out`` through the runner; the study's grid of runs."""
    study = synthetic.SyntheticStudy(cfg)
    sweep.Runner(study, out, progress=False, checkpoint_every=cfg.epochs).run()
    return study.runs()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="study epochs (default: paper's 10,000)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 5)")
    parser.add_argument("--plain-epochs", type=int, default=3, help="epochs per plain baseline run")
    args = parser.parse_args()

    overrides: dict[str, object] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seeds is not None:
        overrides["seeds"] = list(range(args.seeds))
    cfg = SyntheticConfig(**overrides)  # type: ignore[arg-type]

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as warm_up:
        train_study(SyntheticConfig(epochs=1, seeds=[0]), warm_up)
    print(f"warm-up study (1 epoch, seed 0; numba JIT compilation, not counted): "
          f"{time.perf_counter() - t0:.2f} s")

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        runs = train_study(cfg, out)
        study_seconds = time.perf_counter() - t0
    n_runs = len(runs)
    print(f"batched study: {n_runs} runs x {cfg.epochs} epochs in {study_seconds:.2f} s "
          f"(data, training, metrics, snapshots and writing results)")

    mix = runs["model"].value_counts(normalize=True)
    for name in ("lr", "mlp"):  # untimed: torch's one-off start-up cost would land on the first run
        plain_seconds_per_epoch(name, cfg, 1, dropout=0.0, weight_decay=0.0)
    per_epoch = {
        "lr": plain_seconds_per_epoch("lr", cfg, args.plain_epochs, dropout=0.0, weight_decay=cfg.l2_lr),
        "mlp": plain_seconds_per_epoch("mlp", cfg, args.plain_epochs, dropout=cfg.dropout, weight_decay=0.0),
    }
    for name, secs in per_epoch.items():
        print(f"plain {name}: {secs * 1e3:.1f} ms/epoch ({args.plain_epochs} epochs on moons), "
              f"share of study runs {mix.get(name, 0.0):.2f}")
    plain = 1.0 / sum(mix.get(name, 0.0) * secs for name, secs in per_epoch.items())
    batched = n_runs * cfg.epochs / study_seconds
    ratio = batched / plain
    print(f"plain loop on the study's mix: {plain:.1f} run-epochs/s -> full study would take "
          f"~{n_runs * cfg.epochs / plain / 3600:.2f} h; batched: {batched:.1f} run-epochs/s")
    print(f"study_seconds={study_seconds:.2f} plain_run_epochs_per_s={plain:.2f} "
          f"batched_run_epochs_per_s={batched:.2f} ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
