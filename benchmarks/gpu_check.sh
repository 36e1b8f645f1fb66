#!/usr/bin/env bash
# One-shot checks on a CUDA machine, run from the repository root.
#
#   bash benchmarks/gpu_check.sh            (the check, under 8 minutes)
#     0. extracts .devdata/cifar10-jpeg.tar.gz (ImageFolder: train/ and test/ at its top) to /tmp/cifar10, and
#        runs tests/test_graph_step.py (its CUDA-only tests: the captured step equals the eager step);
#     1. benchmarks/bench_cifar.py at full width, --ks 1 7 28 42 84: bf16 (the study's precision on CUDA) with
#        the trainer's CUDA graph (its default) and without it (--graphs off), then fp32 with the graph;
#     2. a 3-epoch slice of the `paper` preset through the study's own code (iwshift.cifar_binary.train_stack,
#        3 seeds): the `none` regime alone (7 weights x 3 seeds: one 21-run stack), then every stack of the
#        weighting and imbalance settings. Each stack's training seconds per epoch (epochs 2-3, so without
#        the graph capture) and seconds per evaluation are measured apart, and the projected wall time of
#        500 epochs with the preset's evaluation schedule is printed per stack, for the `none` regime and
#        for the whole paper study (weighting + imbalance);
#     3. writes benchmarks/results/<device>.txt (also copied to $OUT): the projection, then the benchmark's
#        output, whose last line is its key=value summary.
#
#   bash benchmarks/gpu_check.sh session   (one 10-minute job: what a short GPU lease should run first)
#     the GPU-only tests; bench_cifar.py at K = 21 (the `none` stack, captured), with cuDNN's convolutions and
#     with auto (cuDNN or Triton per layer), to project the `none` regime with the faster;
#     then that regime as paper-none below, in what is left of SESSION_S (default 590 s) if the projection
#     fits, else benchmarks/profile_step.py (the candidate step changes, half of what is left), the none
#     stack side by side (as in none-first) and the check above; logs and a tarball of the regime's results in $OUT.
#
#   bash benchmarks/gpu_check.sh none-first (one 10-minute job: a lease's first command when the goal is the run)
#     runs the captured step's tests (tests/test_graph_step.py; a failure stops it: no results from a step
#     that computes something else) while it checks the Triton convolutions against F.conv2d on the GPU, then trains
#     the none regime below with convolutions auto (each layer through cuDNN or Triton, whichever it times
#     faster before training; the log has both timings) or, if the check failed, cuDNN alone, as one stack
#     or as three side by side, whichever a half-minute benchmark times faster (SIDE_BY_SIDE set: that), in
#     what is left of NONE_LIMIT_S (about a minute goes to the checks); with a minute or more left after it,
#     times the none stack's step as 1, 3 and 7 stacks side by side (benchmarks/results/<device>-side-by-side.txt).
#
#   bash benchmarks/gpu_check.sh paper-none (one 10-minute job)
#     the paper preset's `none` regime, 3 seeds, 500 epochs, full data and width, with
#     CIFAR10_binary_classifier.py (timeout NONE_LIMIT_S, default 570 s), CONVOLUTIONS (torch | triton | auto),
#     SIDE_BY_SIDE (default 1: the 21 runs as one stack; 3: as three stacks of 7 trained at once, if the
#     side-by-side timings favour it).
#     Resumable: a run stopped by the timeout keeps its checkpoint (and its convolutions) in $WORK, and the
#     next paper-none on the same warm machine resumes it (FRESH=1: start again). Once finished, its results
#     (merged.csv, per-run folders, figures) come back as $OUT/paper_none.tar.gz ($OUT returns a few files
#     only); each call appends its wall time to benchmarks/results/<device>-paper-none.txt. To commit:
#     mkdir -p paper-results/cifar_binary_paper_gpu && tar xzf paper_none.tar.gz --strip-components=1 \
#         -C paper-results/cifar_binary_paper_gpu && python -m iwshift.report --results paper-results \
#         --docs docs --readme README.md   (a source of its own in the report: rows beside the cpu preset's)
#
#   bash benchmarks/gpu_check.sh digest     prints the digest of the sources that every log header names
#     beside the commit (the copy on a device machine may carry a stale .git: the digest says what ran).
#
# SLICE_DEVICE (default: DEVICE, cuda) and SLICE_FIELDS (JSON, preset fields to override) let step 2 run as a dry run on
# CPU, e.g. SLICE_DEVICE=cpu SLICE_FIELDS='{"per_class": 40, "width": 0.0625, "other_eval": 20, "noise_eval": 10}'.
# Each step survives the other's failure or timeout. Everything printed also goes to $OUT/gpu_check.log.
# Exit status 0 when at least one step produced its output, 1 otherwise.
set -euo pipefail

MODE=${1:-check}
OUT=${OUT:-/tmp/gpu_check_out}
ARCHIVE=.devdata/cifar10-jpeg.tar.gz
DATA=${DATA:-/tmp/cifar10}
RESULTS=${RESULTS:-benchmarks/results}  # where the results files go (a dry run: somewhere outside the repository)
WORK=${WORK:-/tmp/gpu_check_work}  # what is too many files for $OUT (the none regime's run folders)
NONE_LIMIT_S=${NONE_LIMIT_S:-570}
SESSION_S=${SESSION_S:-590}   # the session mode ends its last step by then
BENCH_STEPS=${BENCH_STEPS:-200}
# a dry run on CPU: DEVICE=cpu RESULTS=/tmp/dry BENCH_WIDTH=0.0625 EPOCHS=2 EXTRA_ARGS="--per-class 40 --width 0.0625 ..."
DEVICE=${DEVICE:-cuda}
BENCH_WIDTH=${BENCH_WIDTH:-1}
EPOCHS=${EPOCHS:-500}
EXTRA_ARGS=${EXTRA_ARGS:-}
PRECISIONS=${PRECISIONS-fp32}  # also benchmarked (check mode), besides bf16 (PRECISIONS= : none)
GRAPHS_ALSO=${GRAPHS_ALSO-off}  # check mode: also benchmarked without the CUDA graph (GRAPHS_ALSO= : not)
SLICE_PARTS=${SLICE_PARTS:-none,weighting,imbalance}  # check mode: the slices to train and project
BUDGET_S=${BUDGET_S:-460}  # the check, seconds (step 2 gets what steps 0-1 leave)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RESULTS" "$WORK"

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

prepare_data() {
    echo "=== data"
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
    if [[ -d $DATA/train ]]; then
        echo "train images: $(find "$DATA/train" -type f | wc -l); test images: $(find "$DATA/test" -type f 2>/dev/null | wc -l)"
    else
        echo "WARNING: no $DATA/train (nor $ARCHIVE): the benchmark falls back to random images, the study fails"
    fi
}

source_digest() {  # what code ran: a digest of the Python and shell sources on disk (hidden folders aside)
    # (a copied working tree may carry a stale .git, so neither its HEAD nor its index need name the code;
    # compare with `bash benchmarks/gpu_check.sh digest` in your checkout)
    find . -path './.*' -prune -o -type f \( -name '*.py' -o -name '*.sh' \) -print | LC_ALL=C sort \
        | while read -r f; do sha256sum "$f"; done | sha256sum | cut -c1-12
}

provenance() {
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') (HEAD of the copied tree), sources $(source_digest)"
}

environment() {
    echo "=== gpu_check $MODE $(date -u '+%Y-%m-%dT%H:%M:%SZ') in $(pwd) ($(provenance)); OUT=$OUT"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv || true
    else
        echo "nvidia-smi: not found"
    fi
    python3 -c 'import sys, torch, torchvision
print(f"python {sys.version.split()[0]}; torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}); torchvision {torchvision.__version__}; "
      f"cuda available: {torch.cuda.is_available()}"
      + (f"; {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))' || true
}

device_slug() {  # e.g. nvidia-h100-80gb-hbm3
    python3 -c 'import re, torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))' 2>/dev/null || echo unknown-device
}

check() {
    local start=$SECONDS bench_ok=0 slice_ok=0 rc slug
    environment
    prepare_data
    slug=$(device_slug)

    if [[ -z ${SKIP_TESTS:-} ]]; then
        echo "=== step 0: the captured step equals the eager step (GPU-only tests, timeout 60 s)"
        timeout -k 5 60 python3 -m pytest -q -p no:cacheprovider tests/test_graph_step.py 2>&1 | tail -n 5 \
            || echo "WARNING: the graph-step tests failed or timed out: do not trust the captured path's numbers"
    fi

    echo "=== step 1: bench_cifar.py (timeout 200 s), $((SECONDS - start)) s elapsed"
    if timeout -k 10 200 python3 benchmarks/bench_cifar.py --device "$DEVICE" --width "$BENCH_WIDTH" --data-dir "$DATA" \
            --ks 1 7 28 42 84 --precision bf16 ${PRECISIONS:+--precisions $PRECISIONS} --graph on ${GRAPHS_ALSO:+--graphs $GRAPHS_ALSO} \
            --steps "$BENCH_STEPS" 2>&1 \
            | tee "$OUT/bench_cifar.log"; then
        echo "step 1: ok"
    else
        rc=$?
        echo "step 1: FAILED (exit status $rc$([[ $rc == 124 ]] && echo ': timed out'))"
    fi
    if grep -q '^device=' "$OUT/bench_cifar.log" 2>/dev/null; then
        bench_ok=1
    fi

    local left=$((BUDGET_S - (SECONDS - start)))
    local limit=$((left < 60 ? 60 : left))
    echo "=== step 2: 3-epoch slice of the paper study, every stack (timeout $limit s), $((SECONDS - start)) s elapsed"
    if DATA=$DATA SLICE_PARTS=$SLICE_PARTS SLICE_DEVICE=${SLICE_DEVICE:-$DEVICE} SLICE_FIELDS=${SLICE_FIELDS:-"{}"} timeout -k 10 "$limit" python3 - 2>&1 <<'PY' | tee "$OUT/paper_slice.log"; then
"""Train every stack of the paper study for 3 epochs (evaluating each epoch, as the preset does early on) and
project 500 epochs from the training seconds per epoch (epochs 2-3) and the seconds per evaluation."""
import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())
import torch  # noqa: E402

from iwshift import cifar_binary as study  # noqa: E402
from iwshift.cifar_data import load_cifar10  # noqa: E402
from iwshift.choices import BINARY_PRESETS  # noqa: E402

EPOCHS, FULL_EPOCHS, SEEDS = 3, 500, (0, 1, 2)
t0 = time.perf_counter()
data = load_cifar10(os.environ["DATA"], download=False)
print(f"data: {data.source} ({time.perf_counter() - t0:.0f} s)")

evaluations: list[float] = []  # seconds of each evaluation pass (the study's _evaluate, timed from outside)
evaluate = study._evaluate


def timed_evaluate(*args, **kwargs):
    t = time.perf_counter()
    out = evaluate(*args, **kwargs)  # ends with device-to-host copies: synchronised
    evaluations.append(time.perf_counter() - t)
    return out


study._evaluate = timed_evaluate
paper = {**BINARY_PRESETS["paper"], "seeds": SEEDS, **json.loads(os.environ["SLICE_FIELDS"])}
device = os.environ["SLICE_DEVICE"]
parts = [("none regime", dict(setting="weighting", regimes=["none"])),
         ("weighting", dict(setting="weighting")), ("imbalance", dict(setting="imbalance"))]
wanted = os.environ["SLICE_PARTS"].split(",")
parts = [(name, fields) for name, fields in parts if name.split()[0] in wanted]
n_evals = len(study.BinaryConfig(**dict(paper, epochs=FULL_EPOCHS)).eval_epochs())
print(f"projection: {FULL_EPOCHS} epochs, {n_evals} evaluated (the preset's schedule), from {EPOCHS}-epoch slices")
totals = {}
for name, fields in parts:
    cfg = study.BinaryConfig(**dict(paper, epochs=EPOCHS, **fields))
    pair = study.prepare_pair(data, cfg, device)
    total = train_total = eval_total = 0.0
    for group in study.stacks(study.build_runs(cfg), cfg):
        evaluations.clear()
        tables = study.train_stack(group, pair, cfg)
        seconds = next(iter(tables.values())).set_index("epoch")["seconds"]  # cumulative, after each evaluation
        cumulative_eval = [sum(evaluations[:i + 1]) for i in range(len(evaluations))]
        training = [seconds[e] - cumulative_eval[i] for i, e in enumerate(seconds.index)]  # cumulative training
        per_epoch = (training[-1] - training[0]) / (EPOCHS - 1)
        per_eval = sum(evaluations[1:]) / len(evaluations[1:])
        setup = training[0] - per_epoch  # graph capture, cuDNN autotuning: once per stack
        projected = setup + FULL_EPOCHS * per_epoch + n_evals * per_eval
        total, train_total, eval_total = total + projected, train_total + FULL_EPOCHS * per_epoch, eval_total + n_evals * per_eval
        n_train = study.train_size(group.iloc[0], cfg)
        steps = -(-n_train // cfg.batch_size)
        print(f"{name:12s} stack of {len(group):2d} runs ({n_train} images, {steps} steps/epoch): "
              f"{per_epoch:6.2f} s/epoch training ({1e3 * per_epoch / steps:.2f} ms/step), {per_eval:5.2f} s/evaluation, "
              f"{setup:5.1f} s set-up -> {projected / 60:6.1f} min for {FULL_EPOCHS} epochs", flush=True)
    totals[name] = total
    print(f"PROJECTED {name} ({cfg.setting}, {len(study.build_runs(cfg))} runs, {FULL_EPOCHS} epochs): "
          f"{total / 60:.1f} min (training {train_total / 60:.1f}, evaluation {eval_total / 60:.1f}), data loading aside",
          flush=True)
if {"weighting", "imbalance"} <= totals.keys():
    print(f"PROJECTED whole paper study (weighting + imbalance, {FULL_EPOCHS} epochs, {len(paper['seeds'])} seeds): "
          f"{(totals['weighting'] + totals['imbalance']) / 60:.1f} min on this GPU (moonshot: 10 min)")
PY
        echo "step 2: ok"
    else
        rc=$?
        echo "step 2: FAILED (exit status $rc$([[ $rc == 124 ]] && echo ': timed out'))"
    fi
    if grep -q '^PROJECTED' "$OUT/paper_slice.log" 2>/dev/null; then
        slice_ok=1
    fi

    local results_file=$RESULTS/$slug.txt
    {
        echo "# benchmarks/gpu_check.sh $(date -u '+%Y-%m-%dT%H:%M:%SZ'), $(provenance), $slug"
        grep -E '^(PROJECTED|none regime|weighting|imbalance|projection)' "$OUT/paper_slice.log" 2>/dev/null || echo "(no projection)"
        cat "$OUT/bench_cifar.log" 2>/dev/null || echo "(no benchmark)"
    } > "$results_file"
    cp "$results_file" "$OUT/"
    echo "=== done in $((SECONDS - start)) s: bench_cifar $([[ $bench_ok == 1 ]] && echo ok || echo FAILED)," \
         "paper slice $([[ $slice_ok == 1 ]] && echo ok || echo FAILED); results in $results_file; logs in $OUT"
    [[ $bench_ok == 1 || $slice_ok == 1 ]]
}

train_none() {  # the none regime, 500 epochs, under timeout $1 s, resumable; results in $WORK/paper_none
    local limit=$1 rc=0 t0=$SECONDS slug convolutions side
    slug=$(device_slug)
    [[ -n ${FRESH:-} ]] && rm -rf "$WORK/paper_none" "$WORK/convolutions" "$WORK/side_by_side"
    # the convolutions and stacks a started run chose (a resumed run keeps them), else CONVOLUTIONS (default
    # torch) and SIDE_BY_SIDE (default 1)
    convolutions=$(cat "$WORK/convolutions" 2>/dev/null || echo "${CONVOLUTIONS:-torch}")
    side=$(cat "$WORK/side_by_side" 2>/dev/null || echo "${SIDE_BY_SIDE:-1}")
    echo "$convolutions" > "$WORK/convolutions"
    echo "$side" > "$WORK/side_by_side"
    echo "=== the paper preset's none regime, 3 seeds, 500 epochs, $convolutions convolutions, $side stack(s) (timeout $limit s;" \
         "a run stopped by it is checkpointed in $WORK and resumed by the next paper-none on this machine)"
    # checkpoints every 100 epochs and on the timeout's SIGTERM: 21 full-width networks and momentum, ~0.25 GB
    # shellcheck disable=SC2086  # EXTRA_ARGS: several flags
    timeout -k 20 "$limit" python3 CIFAR10_binary_classifier.py --preset paper --device "$DEVICE" \
        --data-dir "$DATA" --settings weighting --regimes none --seeds 0 1 2 --epochs "$EPOCHS" \
        --convolutions "$convolutions" --side-by-side "$side" $EXTRA_ARGS --checkpoint-every 100 \
        --out "$WORK/paper_none" \
        --figures "$WORK/paper_none/figures" 2>&1 | tee -a "$OUT/paper_none.log" || rc=$?
    local wall=$((SECONDS - t0)) finished=0
    [[ $rc == 0 && -f $WORK/paper_none/merged.csv ]] && finished=1
    {
        echo "# benchmarks/gpu_check.sh $MODE $(date -u '+%Y-%m-%dT%H:%M:%SZ'), $(provenance), $slug"
        grep -v '^\s*$' "$OUT/paper_none.log" 2>/dev/null | tail -n 6
        echo "device=$slug regime=none runs=21 epochs=$EPOCHS convolutions=$convolutions" \
             "side_by_side=$side exit_status=$rc" \
             "wall_s=$wall finished=$finished"
    } >> "$RESULTS/$slug-paper-none.txt"
    cp "$RESULTS/$slug-paper-none.txt" "$OUT/"
    if (( finished )); then
        rm -rf "$WORK/paper_none/.checkpoints" "$WORK/convolutions" "$WORK/side_by_side"
        # $OUT brings back a few files only: the results as one tarball (merged.csv, per-run folders, figures)
        # (no figures: the report draws its own, and paper-results/ holds run folders and merged.csv only)
        tar -czf "$OUT/paper_none.tar.gz" -C "$WORK" --exclude=paper_none/figures paper_none
        echo "=== none regime finished: $wall s in this call; results: $OUT/paper_none.tar.gz"
    else
        echo "=== none regime NOT finished (exit status $rc after $wall s): resume with" \
             "'bash benchmarks/gpu_check.sh paper-none' on this machine while it is warm"
    fi
    (( finished ))
}

pick_convolutions() {  # $1 steps per benchmark: K = 21 with cuDNN, and with convolutions auto (each layer
    # through cuDNN or Triton, whichever it times faster) once the Triton kernels pass their check on this GPU;
    # sets CONVOLUTIONS to the faster, and PROJECTED_S to the none regime's projected training seconds with it
    # (+12 % for the 48 evaluations, +30 s to start; 0: no timing)
    local steps=$1 torch_ms auto_ms step_ms
    echo "=== the Triton convolutions against F.conv2d on this GPU (timeout 180 s: some 60 kernel compilations), then K = 21 with auto"
    if timeout -k 5 180 python3 -m iwshift.triton_conv --check --device "$DEVICE" 2>&1 | tail -n 3 \
            && timeout -k 5 120 python3 benchmarks/bench_cifar.py --device "$DEVICE" --width "$BENCH_WIDTH" \
                --data-dir "$DATA" --ks 21 --precision bf16 --convolutions auto --steps "$steps" 2>&1 \
                | tee "$OUT/bench_k21_auto.log" | tail -n 3; then
        auto_ms=$(sed -nE 's/^device=.* k21_step_ms=([0-9.]+).*/\1/p' "$OUT/bench_k21_auto.log")
    else
        echo "the Triton convolutions failed their check or the benchmark: cuDNN it is"
    fi
    echo "=== K = 21 with cuDNN (timeout 100 s)"
    timeout -k 5 100 python3 benchmarks/bench_cifar.py --device "$DEVICE" --width "$BENCH_WIDTH" --data-dir "$DATA" \
        --ks 21 --precision bf16 --steps "$steps" 2>&1 | tee "$OUT/bench_k21.log" | tail -n 2 || true
    torch_ms=$(sed -nE 's/^device=.* k21_step_ms=([0-9.]+).*/\1/p' "$OUT/bench_k21.log")
    CONVOLUTIONS=torch step_ms=${torch_ms:-0}
    if [[ -n ${auto_ms:-} ]] && python3 -c "import sys; sys.exit(not ${torch_ms:-1e9} > $auto_ms)"; then
        CONVOLUTIONS=auto step_ms=$auto_ms
    fi
    PROJECTED_S=$(python3 -c "v = $step_ms; print(int(30 + 1.12 * 500 * 625 * v / 1e3) if v else 0)")
    echo "K = 21: ${torch_ms:-?} ms per step with cuDNN, ${auto_ms:-?} with auto: $CONVOLUTIONS;" \
         "the none regime projects to $PROJECTED_S s"
}

side_by_side() {  # $1 seconds: the none stack's step (K = 21, captured, cuDNN) as 1, 3 and 7 stacks trained
    # side by side (iwshift.train.train_side_by_side: each stack's graph replayed on its own stream), to see
    # whether the GPU overlaps the stacks' chains of small kernels (cuDNN's, run group by group: auto would
    # time every layer of every stack first); appended to <device>-side-by-side.txt
    local limit=$1 t0=$SECONDS left slug split
    slug=$(device_slug)
    echo "=== K = 21 as 1, 3 and 7 stacks side by side (cuDNN convolutions; $limit s)"
    for split in 1 3 7; do
        left=$((limit - (SECONDS - t0)))
        (( left > 20 )) || { echo "no time left for $split stacks"; break; }
        timeout -k 5 "$left" python3 benchmarks/bench_cifar.py --device "$DEVICE" --width "$BENCH_WIDTH" \
            --data-dir "$DATA" --ks 21 --precision bf16 \
            --side-by-side "$split" --steps "$BENCH_STEPS" 2>&1 | tee -a "$OUT/side_by_side.log" | grep -E '^(K =|device=)' \
            || echo "the benchmark with $split stacks failed or timed out"
    done
    {
        echo "# benchmarks/gpu_check.sh $MODE $(date -u '+%Y-%m-%dT%H:%M:%SZ'), $(provenance), $slug"
        grep -E '^(K =|device=)' "$OUT/side_by_side.log" 2>/dev/null || echo "(no result)"
    } >> "$RESULTS/$slug-side-by-side.txt"
    cp "$RESULTS/$slug-side-by-side.txt" "$OUT/"
}

pick_side_by_side() {  # cuDNN alone (no Triton): K = 21 as one stack and as three side by side, 100 steps
    # each (about half a minute); sets SIDE_BY_SIDE to 3 where that is 5 % faster or more, else 1
    local one three
    echo "=== cuDNN alone: K = 21 as 1 and as 3 stacks side by side (100 steps each), to train the faster"
    for split in 1 3; do
        timeout -k 5 60 python3 benchmarks/bench_cifar.py --device "$DEVICE" --width "$BENCH_WIDTH" --data-dir "$DATA" \
            --ks 21 --precision bf16 --side-by-side "$split" --steps 100 2>&1 | tee "$OUT/pick_side_by_side_$split.log" \
            | grep -E '^K =' || echo "the benchmark with $split stack(s) failed or timed out"
    done
    one=$(sed -nE 's/^device=.* k21_step_ms=([0-9.]+).*/\1/p' "$OUT/pick_side_by_side_1.log")
    three=$(sed -nE 's/^device=.* k21_step_ms=([0-9.]+).*/\1/p' "$OUT/pick_side_by_side_3.log")
    SIDE_BY_SIDE=1
    if [[ -n $one && -n $three ]] && python3 -c "import sys; sys.exit(not $three < 0.95 * $one)"; then
        SIDE_BY_SIDE=3
    fi
    echo "K = 21: ${one:-?} ms per step as one stack, ${three:-?} as three side by side: $SIDE_BY_SIDE stack(s)"
}

none_first() {  # a lease's first command: its checks in about a minute, then the none regime
    local start=$SECONDS checking=
    environment
    prepare_data
    python3 -c "import sys; from iwshift.cifar_data import load_cifar10; load_cifar10(sys.argv[1], download=False)" \
        "$DATA" > "$OUT/decode.log" 2>&1 &
    local decoding=$!
    if [[ -f $WORK/convolutions ]]; then
        echo "a started none regime is in $WORK (its convolutions: $(cat "$WORK/convolutions")): resuming it"
    else
        # the Triton kernels' check (mostly compilation on the host's cores) beside the tests, not after them;
        # auto then times each layer through cuDNN and Triton itself before training (seconds, not a benchmark)
        echo "=== meanwhile: the Triton convolutions against F.conv2d on this GPU (timeout 180 s: some 60 kernel" \
             "compilations; log: $OUT/triton_conv_check.log)"
        timeout -k 5 180 python3 -m iwshift.triton_conv --check --device "$DEVICE" > "$OUT/triton_conv_check.log" 2>&1 &
        checking=$!
        # results of a step that computes something else are worse than none: its tests first
        echo "=== the captured step trains as the eager step and as plain torch SGD (GPU tests, timeout 90 s)"
        if ! python3 -c "import pytest" 2>/dev/null; then  # (the device image has it; a bare machine may not)
            echo "WARNING: no pytest on this machine: the captured step's tests did not run"
        elif ! timeout -k 5 90 python3 -m pytest -q -p no:cacheprovider tests/test_graph_step.py -k captured 2>&1 \
                | tail -n 12; then  # (-k captured: the CUDA tests of the captured step, not the CPU references)
            echo "the captured step failed its tests (or timed out) on this GPU: the none regime is not trained"
            kill "$checking" 2>/dev/null || true
            wait "$decoding" "$checking" || true
            return 1
        fi
        if wait "$checking"; then
            tail -n 3 "$OUT/triton_conv_check.log"
            CONVOLUTIONS=auto
        else
            tail -n 3 "$OUT/triton_conv_check.log"
            echo "the Triton convolutions failed their check: cuDNN alone"
            CONVOLUTIONS=torch
        fi
    fi
    wait "$decoding" || true
    if [[ ${CONVOLUTIONS:-} == torch && ! -f $WORK/side_by_side && -z ${SIDE_BY_SIDE:-} ]]; then
        pick_side_by_side  # cuDNN runs some layers group by group: do smaller stacks at once overlap them?
    fi
    echo "checks done after $((SECONDS - start)) s"
    train_none $((NONE_LIMIT_S - (SECONDS - start))) || true
    local left=$((NONE_LIMIT_S - (SECONDS - start)))
    if (( left > 60 )); then  # what the regime left of the job: the next speed question
        side_by_side "$left"
    fi
}

paper_none() {
    environment
    prepare_data
    train_none "$NONE_LIMIT_S"
}

session() {
    local start=$SECONDS left
    environment
    prepare_data
    # decode the images into the loader's cache meanwhile (the machine has cores to spare)
    python3 -c "import sys; from iwshift.cifar_data import load_cifar10; load_cifar10(sys.argv[1], download=False)" \
        "$DATA" > "$OUT/decode.log" 2>&1 &
    local decoding=$!
    # (the Triton kernels' own check comes with step 1: pick_convolutions)
    echo "=== step 0: the captured step equals the eager step (GPU-only tests, timeout 75 s)"
    timeout -k 5 75 python3 -m pytest -q -p no:cacheprovider tests/test_graph_step.py 2>&1 | tail -n 15 \
        || echo "WARNING: the graph-step tests failed or timed out"
    wait "$decoding" || echo "WARNING: decoding the images failed: $(tail -n 1 "$OUT/decode.log")"
    echo "=== step 1: K = 21 (the none stack), captured, $((SECONDS - start)) s elapsed"
    pick_convolutions "$BENCH_STEPS"
    left=$((SESSION_S - (SECONDS - start) - 15))
    echo "the none regime projects to ${PROJECTED_S} s; ${left} s are left"
    if (( PROJECTED_S > 0 && PROJECTED_S <= left )); then
        train_none $((left < NONE_LIMIT_S ? left : NONE_LIMIT_S)) || true
    else
        echo "the none regime would not finish in the ${left} s left: timing the candidate step changes, then the check"
        # the candidates most likely to pay first (channels-first measured slower; compile takes minutes)
        timeout -k 5 $((left / 2)) python3 benchmarks/profile_step.py --device "$DEVICE" --width "$BENCH_WIDTH" \
            --variants bf16-nhwc foreach-sgd autocast-casts auto-conv triton-conv conv1-bmm conv1-pad8 \
            2>&1 | tee "$OUT/profile_step.log" || echo "profile_step.py: FAILED or timed out"
        left=$((SESSION_S - (SECONDS - start) - 15))
        side_by_side $((left / 3)) || true
        left=$((SESSION_S - (SECONDS - start) - 15))
        SKIP_TESTS=1 BUDGET_S=$left check || true
    fi
    echo "=== session done in $((SECONDS - start)) s"
}

case $MODE in
    check) check 2>&1 | tee "$OUT/gpu_check.log"; exit "${PIPESTATUS[0]}" ;;
    paper-none) paper_none 2>&1 | tee "$OUT/gpu_check.log"; exit "${PIPESTATUS[0]}" ;;
    none-first) none_first 2>&1 | tee "$OUT/gpu_check.log"; exit "${PIPESTATUS[0]}" ;;
    session) session 2>&1 | tee "$OUT/gpu_check.log"; exit "${PIPESTATUS[0]}" ;;
    digest) source_digest ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [check|session|none-first|paper-none|digest]" >&2; exit 2 ;;
esac
