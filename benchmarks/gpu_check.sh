#!/usr/bin/env bash
# One-shot check on a CUDA machine, run from the repository root: bash benchmarks/gpu_check.sh
#
#   0. extracts .devdata/cifar10-jpeg.tar.gz (ImageFolder: train/ and test/ at its top) to /tmp/cifar10;
#   1. benchmarks/bench_cifar.py at full width, fp32 and bf16 (plain DataLoader loop vs the stacked trainer);
#   2. a 2-epoch slice of the paper preset (the 28-run weighting sweep: a 21-run stack and a 7-run batch-norm
#      stack), then prints seconds per epoch of the whole sweep and the projected wall time of the full study
#      (3 seeds x 500 epochs).
# Each step survives the other's failure or timeout; the whole script stays under ~8 minutes.
# Everything printed also goes to $OUT/gpu_check.log; $OUT also receives bench_cifar.log, paper_slice.log,
# merged.csv and figures/. Exit status 0 when at least one step produced its output, 1 otherwise.
set -euo pipefail

OUT=${OUT:-/tmp/gpu_check_out}
ARCHIVE=.devdata/cifar10-jpeg.tar.gz
DATA=/tmp/cifar10
SLICE=/tmp/paper_slice
BUDGET_S=460          # the whole script, seconds (step 2 gets what steps 0-1 leave, at most 300 s)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

locate_data() {  # DATA, or the one folder below it that holds train/ (an archive with a top folder)
    local inner
    if [[ ! -d $DATA/train && -d $DATA ]]; then
        inner=$(find "$DATA" -mindepth 2 -maxdepth 2 -type d -name train -print -quit 2>/dev/null || true)
        if [[ -n $inner ]]; then
            DATA=$(dirname "$inner")
            echo "the data is in a top folder: using $DATA"
        fi
    fi
}

main() {
    local start=$SECONDS bench_ok=0 slice_ok=0 rc
    echo "=== gpu_check $(date -u '+%Y-%m-%dT%H:%M:%SZ') in $(pwd); OUT=$OUT"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv || true
        nvidia-smi || true
    else
        echo "nvidia-smi: not found"
    fi
    python3 -c 'import sys, torch, torchvision
print(f"python {sys.version.split()[0]}; torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}); torchvision {torchvision.__version__}; "
      f"cuda available: {torch.cuda.is_available()}"
      + (f"; {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))' || true

    echo "=== step 0: data"
    locate_data
    if [[ ! -d $DATA/train && -f $ARCHIVE ]]; then
        mkdir -p "$DATA"
        local t0=$SECONDS
        if tar -xzf "$ARCHIVE" -C "$DATA"; then
            echo "extracted $ARCHIVE to $DATA in $((SECONDS - t0)) s"
        else
            echo "WARNING: extracting $ARCHIVE failed"
        fi
        locate_data
    elif [[ -d $DATA/train ]]; then
        echo "$DATA/train is already there: not extracting"
    fi
    if [[ ! -d $DATA/train ]]; then
        echo "WARNING: no $DATA/train (nor $ARCHIVE): step 1 falls back to random images, step 2 will fail"
    fi
    if [[ -d $DATA/train ]]; then
        echo "train images: $(find "$DATA/train" -type f | wc -l); test images: $(find "$DATA/test" -type f 2>/dev/null | wc -l)"
    fi

    echo "=== step 1: bench_cifar.py (timeout 240 s), $((SECONDS - start)) s elapsed"
    if timeout -k 10 240 python3 benchmarks/bench_cifar.py --device cuda --width 1 --data-dir "$DATA" \
            --precisions fp32 bf16 --steps 300 2>&1 | tee "$OUT/bench_cifar.log"; then
        echo "step 1: ok"
    else
        rc=$?
        echo "step 1: FAILED (exit status $rc$([[ $rc == 124 ]] && echo ': timed out'))"
    fi
    if grep -q '^device=' "$OUT/bench_cifar.log" 2>/dev/null; then
        bench_ok=1
    fi

    local left=$((BUDGET_S - (SECONDS - start)))
    local limit=$((left < 300 ? left : 300))
    limit=$((limit < 60 ? 60 : limit))
    echo "=== step 2: paper preset, seed 0, 2 epochs (timeout $limit s), $((SECONDS - start)) s elapsed"
    rm -rf "$SLICE"
    if timeout -k 10 "$limit" python3 CIFAR10_binary_classifier.py --preset paper --device cuda --data-dir "$DATA" \
            --seeds 0 --epochs 2 --out "$SLICE" --figures "$OUT/figures" --no-progress 2>&1 \
            | tee "$OUT/paper_slice.log"; then
        echo "step 2: ok"
    else
        rc=$?
        echo "step 2: FAILED (exit status $rc$([[ $rc == 124 ]] && echo ': timed out'))"
    fi
    if [[ -f $SLICE/merged.csv ]]; then
        cp "$SLICE/merged.csv" "$OUT/merged.csv"
    fi
    if compgen -G "$SLICE/*/config.json" >/dev/null; then
        slice_ok=1
        echo "=== step 2 summary"
        SLICE_DIR=$SLICE SLICE_LOG=$OUT/paper_slice.log FULL_SEEDS=3 FULL_EPOCHS=500 python3 - <<'PY' || echo "summary: FAILED"
"""Seconds per epoch of the 28-run weighting sweep from a short slice, and the full study's projected time."""
import json
import os
import re
import sys
from pathlib import Path

import pandas as pd

root, log = Path(os.environ["SLICE_DIR"]), Path(os.environ.get("SLICE_LOG", ""))
full_seeds, full_epochs = int(os.environ.get("FULL_SEEDS", 3)), int(os.environ.get("FULL_EPOCHS", 500))

stacks: dict[tuple, dict] = {}   # runs of one stack share seed, batch norm and their `seconds` column
expected: dict[int, int] = {}    # runs per seed in the configured grid
device = "?"
for cfg_path in sorted(root.glob("*/config.json")):
    metrics_path = cfg_path.parent / "metrics.csv"
    if not metrics_path.exists():
        continue
    record = json.loads(cfg_path.read_text())
    run, config = record["run"], record.get("config", {})
    device = record.get("device_name", record.get("device", device))
    metrics = pd.read_csv(metrics_path).sort_values("epoch")
    epochs, seconds = metrics["epoch"].tolist(), metrics["seconds"].tolist()
    key = (int(run["seed"]), run["regime"] == "batchnorm", tuple(round(s, 6) for s in seconds))
    entry = stacks.setdefault(key, {"runs": 0, "epochs": epochs, "seconds": seconds,
                                    "stack_size": record.get("stack_size")})
    entry["runs"] += 1
    if config.get("weights") and config.get("regimes"):
        expected[int(run["seed"])] = len(config["weights"]) * len(config["regimes"])
    evaluated = (f"the pair's test images, {config.get('other_eval', '?')} other-class and "
                 f"{config.get('noise_eval', '?')} noise images, the gradient-norm probe")

if not stacks:
    sys.exit("no complete runs in " + str(root))
print(f"device: {device}")
per_seed: dict[int, float] = {}
runs_per_seed: dict[int, int] = {}
for (seed, bn, _), s in sorted(stacks.items(), key=lambda kv: kv[0][:2]):
    e, t = s["epochs"], s["seconds"]
    if len(e) >= 2:
        per_epoch = (t[-1] - t[0]) / (e[-1] - e[0])   # after the first epoch (warm-up, cuDNN autotuning)
    else:
        per_epoch = t[-1] / e[-1]
    per_seed[seed] = per_seed.get(seed, 0.0) + per_epoch
    runs_per_seed[seed] = runs_per_seed.get(seed, 0) + s["runs"]
    print(f"seed {seed} {'batch-norm' if bn else 'plain':10s} stack of {s['runs']:2d} runs: first epoch "
          f"{t[0]:.1f} s, then {per_epoch:.2f} s/epoch (epochs {e}; cumulative s {[round(x, 1) for x in t]})")

lines = [line.strip() for line in (log.read_text(errors="replace").splitlines() if log.is_file() else [])
         if re.search(r"stack \d+/\d+: \d+ runs x \d+ epochs in \d+ s", line)]
for line in lines:
    print("log:", line)

for seed, per_epoch in sorted(per_seed.items()):
    n, want = runs_per_seed[seed], expected.get(seed, runs_per_seed[seed])
    note = "" if n == want else f"  (INCOMPLETE: {n} of {want} runs finished; the projection misses the rest)"
    hours = full_seeds * full_epochs * per_epoch / 3600
    print(f"seed {seed}: the {n}-run sweep takes {per_epoch:.2f} s per epoch ({per_epoch / n * 1000:.0f} ms per "
          f"run-epoch){note}")
    print(f"PROJECTED full paper study ({full_seeds} seeds x {full_epochs} epochs x {per_epoch:.2f} s/epoch): "
          f"{hours:.2f} h")
if lines:
    total = sum(float(re.search(r"in (\d+) s", line).group(1)) for line in lines)
    epochs = int(re.search(r"x (\d+) epochs", lines[0]).group(1))
    print(f"from the stack log lines (model set-up and the first epoch included): {total:.0f} s for {epochs} "
          f"epochs -> {full_seeds * full_epochs * total / epochs / 3600:.2f} h")
try:
    sys.path.insert(0, os.getcwd())
    from iwshift.cifar_binary import BinaryConfig
    n_evals = len(BinaryConfig(epochs=full_epochs).eval_epochs())
except Exception:  # noqa: BLE001  (the count is only for the note)
    n_evals = None
print(f"note: evaluation time is included: every epoch of this slice was evaluated ({evaluated}), "
      "while the full study evaluates "
      + (f"{n_evals} of its {full_epochs} epochs" if n_evals else f"a few dozen of its {full_epochs} epochs")
      + ", so the projection leans high by up to the evaluation's cost per epoch.")
PY
    else
        echo "step 2: no complete runs in $SLICE"
    fi

    echo "=== done in $((SECONDS - start)) s: bench_cifar $([[ $bench_ok == 1 ]] && echo ok || echo FAILED)," \
         "paper slice $([[ $slice_ok == 1 ]] && echo ok || echo FAILED); logs in $OUT"
    [[ $bench_ok == 1 || $slice_ok == 1 ]]
}

main "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
