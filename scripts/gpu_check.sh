#!/usr/bin/env bash
# Prove the GPU path in one run of under 8 minutes on one GPU:
#   1. env     environment report (torch, CUDA, cuDNN, the GPU, bf16 and flash attention support, git commit)
#   2. tests   tests/test_gpu.py on the device (models, bf16 autocast, attention kernels and sampling agree with
#              the CPU; training runs there), plus, on a GPU, the trainer's exact-resume test
#   3. models  bf16 training step of xunet-small and dit-small at 64 px, eager with the flash and with the math
#              attention kernel, and dit-small under torch.compile (inductor) with flash attention
#              (scripts/gpu_check.py models, timed by benchmarks/models.py's train_step_fn and timed)
#   4. data    a procedural dataset (novelview data synth, with its manifest)
#   5. train   a 3-minute dit-small bf16 run on it (stopped by its time limit; checkpoints every 100 steps)
#   6. grid    held-out objects sampled from the last checkpoint through the Pipeline
# Writes OUT/gpu_check.json (every step's status and figures), OUT/gpu_check.png (the sample grid) and
# OUT/log.txt; at most 20 MB in all (the run folder and dataset live in a temporary folder, removed at the end).
#
#   scripts/gpu_check.sh                          # on the GPU: --device cuda, OUT = outputs/gpu_check
#   scripts/gpu_check.sh --device cpu --quick     # the same steps, tiny, on the CPU (tests/test_gpu_check.py)
#
# Exit status: 0 when every step passed, 1 otherwise (the JSON says which), 2 for bad arguments.
# PYTHON selects the interpreter (default: .venv/bin/python when present, else python3).
set -uo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

DEVICE=cuda
QUICK=0
OUT=outputs/gpu_check
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) DEVICE="${2:?--device needs a value}"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --out) OUT="${2:?--out needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT/gpu_check.json" "$OUT/gpu_check.png" "$OUT/log.txt"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/log.txt"
cd "$ROOT" || exit 2

if [[ "$QUICK" == 1 ]]; then
    PRESETS=(xunet-tiny dit-tiny); COMPILE=(dit-tiny); BACKEND=aot_eager; SIZE=16; BATCH=4; ITERS=1; WARMUP=0
    OBJECTS=4; VIEWS=4; MODEL=dit-tiny; TRAIN_BATCH=4; STEPS=3; PRECISION=fp32; TRAIN_LIMIT=120
    GRID_OBJECTS=1; GRID_STEPS=2; EXTRA_TESTS=(); DATA_WORKERS=1
else
    PRESETS=(xunet-small dit-small); COMPILE=(dit-small); BACKEND=inductor; SIZE=64; BATCH=32
    ITERS=10; WARMUP=3; OBJECTS=512; VIEWS=12; MODEL=dit-small; TRAIN_BATCH=64; STEPS=1000000
    PRECISION=bf16; TRAIN_LIMIT=180; GRID_OBJECTS=4; GRID_STEPS=25
    EXTRA_TESTS=(tests/test_train.py::test_resume_equals_uninterrupted_run); DATA_WORKERS="$(nproc)"
fi

# step NAME SECONDS COMMAND...: run under a time limit (SIGINT first, so Python unwinds), log, record the status.
step() {
    local name="$1" limit="$2"
    shift 2
    echo "== $name (limit ${limit}s): $*" >>"$LOG"
    local start end
    start="$(date +%s.%N)"
    timeout --signal=INT --kill-after=30 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    end="$(date +%s.%N)"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')" \
        >>"$WORK/steps.tsv"
    echo "== $name: exit $rc" >>"$LOG"
}

step env 120 "$PYTHON" scripts/gpu_check.py env --device "$DEVICE" --out "$WORK/env.json"
step tests 240 env NOVELVIEW_TEST_DEVICE="$DEVICE" "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_gpu.py "${EXTRA_TESTS[@]}" --junitxml="$WORK/tests.xml"
step models 300 "$PYTHON" scripts/gpu_check.py models --device "$DEVICE" --presets "${PRESETS[@]}" \
    --compile-presets "${COMPILE[@]}" --compile-backend "$BACKEND" --size "$SIZE" --batch "$BATCH" \
    --iters "$ITERS" --warmup "$WARMUP" --out "$WORK/models.json"
step data 180 "$PYTHON" -m novelview.cli data synth "$WORK/data" --objects "$OBJECTS" --views "$VIEWS" \
    --size "$SIZE" --seed 0 --workers "$DATA_WORKERS" --quiet
step train "$TRAIN_LIMIT" "$PYTHON" -m novelview.cli train --data "$WORK/data" --out "$WORK/run" \
    --model "$MODEL" --size "$SIZE" --batch-size "$TRAIN_BATCH" --steps "$STEPS" --precision "$PRECISION" \
    --warmup 100 --checkpoint-every 100 --keep 1 --val-every 500 --sample-every 0
step grid 180 "$PYTHON" scripts/gpu_check.py grid --device "$DEVICE" --checkpoint "$WORK/run" \
    --data "$WORK/data" --objects "$GRID_OBJECTS" --steps "$GRID_STEPS" --out "$WORK/grid.png" \
    --json "$WORK/grid.json"
"$PYTHON" scripts/gpu_check.py report --work "$WORK" --out "$OUT" --device "$DEVICE" --quick "$QUICK"
