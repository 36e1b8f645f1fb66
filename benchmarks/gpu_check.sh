#!/usr/bin/env bash
# One-shot check on a CUDA machine, run from the repository root: bash benchmarks/gpu_check.sh
#
#   0. extracts .devdata/cifar10-jpeg.tar.gz (ImageFolder: train/ and test/ at its top) to /tmp/cifar10;
#   1. benchmarks/bench_cifar.py at full width, fp32 and bf16 (plain DataLoader loop vs the stacked trainer);
#   2. a 3-epoch slice of the paper preset with torch.compile (the 84-run weighting sweep, 3 seeds: a 63-run
#      stack and a 21-run batch-norm stack), then prints seconds per epoch of the whole sweep and the projected
#      wall time of the full study (500 epochs).
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
    echo "=== step 2: paper preset, 3 seeds, 3 epochs, torch.compile (timeout $limit s), $((SECONDS - start)) s elapsed"
    rm -rf "$SLICE"
    if timeout -k 10 "$limit" python3 CIFAR10_binary_classifier.py --preset paper --device cuda --data-dir "$DATA" \
            --seeds 0 1 2 --epochs 3 --compile --out "$SLICE" --figures "$OUT/figures" --no-progress 2>&1 \
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
        SLICE_DIR=$SLICE FULL_EPOCHS=500 python3 - <<'PY' || echo "summary: FAILED"
"""Seconds per epoch of the whole weighting sweep (every stack) from a short slice, and the projection."""
import os
import sys
from pathlib import Path

sys.path.insert(0, os.getcwd())
from iwshift.cifar_binary import BinaryConfig, merge  # noqa: E402

table = merge(Path(os.environ["SLICE_DIR"]))
full_epochs = int(os.environ.get("FULL_EPOCHS", 500))
if table.empty:
    sys.exit("no complete runs")
total = 0.0
stacks = table.groupby(table["regime"] == "batchnorm")
for bn, part in stacks:
    per_run = part.groupby("epoch")["seconds"].first().sort_index()
    e, t = per_run.index.to_list(), per_run.to_list()
    per_epoch = (t[-1] - t[0]) / (e[-1] - e[0]) if len(e) > 1 else t[-1] / e[-1]
    total += per_epoch
    print(f"{'batch-norm' if bn else 'plain':10s} stack: {part['run'].nunique()} runs; first epoch {t[0]:.1f} s "
          f"(compilation included), then {per_epoch:.2f} s/epoch (cumulative s {[round(x, 1) for x in t]})")
n_runs = table["run"].nunique()
evals = len(BinaryConfig(epochs=full_epochs).eval_epochs())
print(f"the {n_runs}-run paper sweep: {total:.2f} s per epoch, every epoch evaluated in this slice")
print(f"PROJECTED full paper study ({full_epochs} epochs, all seeds together): {full_epochs * total / 3600:.2f} h "
      f"(an upper bound: the full study evaluates {evals} of its {full_epochs} epochs)")
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
