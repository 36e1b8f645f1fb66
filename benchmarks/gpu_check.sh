#!/usr/bin/env bash
# A GPU session in one command (a device command may run 10 minutes): the checks, then the next unfinished job
# of the paper study. From the repository root:
#
#   bash benchmarks/gpu_check.sh                   on the GPU machine; $OUT is what comes back
#   bash benchmarks/gpu_check.sh merge ARCHIVE     at home: the job's archive into RESULTS, merged, and the report
#   DRY_RUN=1 bash benchmarks/gpu_check.sh         on a CPU: every step on a tiny slice (a minute)
#
# 1. checks, within CHECKS_S (90 s): every GPU test (`pytest -m gpu`: each CUDA and Triton test) and each custom
#    kernel's self-check (benchmarks/check_triton_sgd.py --check, benchmarks/check_triton_conv.py --check). Any
#    failure, or running out of time, stops here with exit status 1: no results from a path that computes
#    something else.
# 2. the next job of the plan not complete in RESULTS (`CIFAR10_binary_classifier.py --plan next`: slices of the
#    paper study, each projected under PLAN_LIMIT_MIN by the newest GPU record in benchmarks/results/), trained
#    under `timeout` for what is left of BUDGET_S. Each run is written when its stack finishes; at exit, whatever
#    the reason (the limit included), the runs that are new in RESULTS are archived to $OUT/chunk.tar.gz (run
#    folders only: no checkpoints), beside the log and the job's wall time ($OUT/chunk_times.txt).
# 3. exit status 0 when the job finished, 3 when it did not (the same command again gives the same job, and only
#    its missing runs train), 1 when the checks failed.
#
# Data: DATA (an ImageFolder tree), else .devdata/cifar10-jpeg.tar.gz (carried to the device machine) extracted
# to /tmp/cifar10. Everything printed also goes to $OUT/gpu_check.log.
set -uo pipefail

MODE=${1:-run}
OUT=${OUT:-/tmp/gpu_check_out}
DATA=${DATA:-/tmp/cifar10}
ARCHIVE=.devdata/cifar10-jpeg.tar.gz
PYTHON=${PYTHON:-python3}
CHECKS_S=${CHECKS_S:-90}
BUDGET_S=${BUDGET_S:-580}         # the whole command ends by then (checks included)
PLAN_LIMIT_MIN=${PLAN_LIMIT_MIN:-8}
RESULTS=${RESULTS:-paper-results/cifar_binary_paper_gpu}
STUDY_ARGS=${STUDY_ARGS:---preset paper --settings weighting imbalance}
DEVICE=cuda
KERNEL_ENV=
if [[ ${DRY_RUN:-0} == 1 ]]; then  # the same steps on the CPU: Triton's interpreter, a tiny slice of the study
    DEVICE=cpu
    KERNEL_ENV=TRITON_INTERPRET=1                # the kernels' self-checks through Triton's interpreter
    OUT=${OUT%/}_dry; RESULTS=${DRY_RESULTS:-/tmp/gpu_check_dry/cifar_binary_paper_gpu}
    STUDY_ARGS="--preset paper --settings weighting --per-class 24 --width 0.0625 --epochs 2 --other-eval 20 \
--noise-eval 10 --precision fp32"
    PLAN_LIMIT_MIN=${DRY_PLAN_LIMIT_MIN:-1.05}  # a job of one regime (the plan's start-up alone is 60 s)
    CHECKS_S=600                                 # the interpreter is slow
fi
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

prepare_data() {
    if [[ ! -d $DATA/train && -f $ARCHIVE ]]; then
        mkdir -p "$DATA" && tar -xzf "$ARCHIVE" -C "$DATA"
    fi
    if [[ ! -d $DATA/train ]]; then  # an archive with a top folder
        local inner
        inner=$(find "$DATA" -mindepth 2 -maxdepth 2 -type d -name train -print -quit 2>/dev/null || true)
        [[ -n $inner ]] && DATA=$(dirname "$inner")
    fi
    [[ -d $DATA/train ]] || { echo "no data: neither $DATA/train nor $ARCHIVE"; return 1; }
}

checks() {
    echo "=== checks (within ${CHECKS_S} s)"
    local t0=$SECONDS
    # shellcheck disable=SC2016
    timeout "$CHECKS_S" bash -c '
        set -e
        '"$PYTHON"' -m pytest -q -m gpu -p no:cacheprovider tests
        env '"$KERNEL_ENV"' '"$PYTHON"' benchmarks/check_triton_sgd.py --check --device '"$DEVICE"'
        env '"$KERNEL_ENV"' '"$PYTHON"' benchmarks/check_triton_conv.py --check --device '"$DEVICE"'
    '
    local status=$?
    echo "checks: exit $status after $((SECONDS - t0)) s"
    return $status
}

archive_new_runs() {  # the runs complete in RESULTS that were not there at the start, as one archive
    local now
    now=$(find "$RESULTS" -mindepth 2 -maxdepth 2 -name config.json 2>/dev/null | xargs -r -n1 dirname \
          | xargs -r -n1 basename | LC_ALL=C sort)
    comm -13 "$OUT/runs_before.txt" <(echo "$now" | sed '/^$/d') > "$OUT/runs_new.txt"
    if [[ -s $OUT/runs_new.txt ]]; then
        tar -czf "$OUT/chunk.tar.gz" -C "$RESULTS" -T "$OUT/runs_new.txt"
        echo "archived $(wc -l < "$OUT/runs_new.txt") new runs to $OUT/chunk.tar.gz"
    else
        echo "no new complete runs to archive"
    fi
}

run_job() {
    prepare_data || return 1
    mkdir -p "$RESULTS"
    find "$RESULTS" -mindepth 2 -maxdepth 2 -name config.json | xargs -r -n1 dirname | xargs -r -n1 basename \
        | LC_ALL=C sort > "$OUT/runs_before.txt"
    trap archive_new_runs EXIT
    # shellcheck disable=SC2086
    local job
    job=$($PYTHON CIFAR10_binary_classifier.py $STUDY_ARGS --plan next --plan-limit-min "$PLAN_LIMIT_MIN" \
          --out "$RESULTS") || { echo "the plan failed"; return 1; }
    if [[ -z $job ]]; then
        echo "every job of the plan is complete in $RESULTS"
        return 0
    fi
    local left=$((BUDGET_S - SECONDS))
    echo "=== job (${left} s left): $job"
    local t0=$SECONDS
    # shellcheck disable=SC2086
    timeout --signal=TERM --kill-after=20 "$left" $job --device "$DEVICE" --data-dir "$DATA" --no-download \
        --no-progress --no-figures
    local status=$?
    echo "$(date -u +%FT%TZ) exit $status after $((SECONDS - t0)) s: $job" | tee -a "$OUT/chunk_times.txt"
    # finished when the plan's next job is another one
    local after
    # shellcheck disable=SC2086
    after=$($PYTHON CIFAR10_binary_classifier.py $STUDY_ARGS --plan next --plan-limit-min "$PLAN_LIMIT_MIN" \
            --out "$RESULTS" 2>/dev/null)
    if [[ $after == "$job" ]]; then
        echo "the job did not finish (exit $status): the same command trains its missing runs"
        return 3
    fi
    return 0
}

merge() {  # at home: ARCHIVE into RESULTS, the merged table and the report
    local archive=${1:?usage: bash benchmarks/gpu_check.sh merge ARCHIVE}
    mkdir -p "$RESULTS"
    tar -xzf "$archive" -C "$RESULTS" || return 1
    # shellcheck disable=SC2086
    $PYTHON CIFAR10_binary_classifier.py $STUDY_ARGS --merge-only --no-figures --out "$RESULTS" || return 1
    local root
    root=$(dirname "$RESULTS")
    $PYTHON -m iwshift.report --results "$root" $([[ ${DRY_RUN:-0} == 1 ]] || echo "--docs docs --readme README.md")
}

main() {
    echo "=== gpu_check $MODE $(date -u '+%Y-%m-%dT%H:%M:%SZ'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), device $DEVICE"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    case $MODE in
        run) checks || { echo "the checks failed: nothing trained"; return 1; }
             run_job ;;
        merge) merge "${2:-}" ;;
        *) echo "usage: bash benchmarks/gpu_check.sh [run | merge ARCHIVE]"; return 2 ;;
    esac
}

main "$@" 2>&1 | tee -a "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
