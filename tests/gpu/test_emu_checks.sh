#!/usr/bin/env bash
# The dev/cuda kernel checks on the CPU emulator of CUDA (dev/cuda/emu, `make emu`): every *_check
# program, BF16 and FP32 builds where there are both, at the small sizes the checks choose under the
# emulator (ON_EMULATOR in dev/cuda/check_common.h), each under one schedule seed, seeds 1..3 in turn:
# CUDA_EMU_SEED reshuffles the order of the threads and blocks, so a missing barrier or a block that
# depends on another changes the result (tests/gpu/test_emu_mutations.sh runs planted ones under 4 seeds).
# A check must exit 0 and print no GPU figure (GB/s, TFLOP/s): the emulator's times are the host's. Then
# nccl_check with 1 process, and with 2 processes meeting through a directory (-pi fs). Prints the time each
# program took.
set -euo pipefail
cd "$(dirname "$0")/../.."

CHECKS=(encoder_check layernorm_check gelu_check matmul_check classifier_check adamw_check attention_check)
BINS=()
for c in "${CHECKS[@]}"; do BINS+=("build/emu/$c" "build/emu/${c}_fp32"); done
BINS+=(build/emu/quantize_check build/emu/adamw8bit_check)
make -s --no-print-directory "${BINS[@]}" build/emu/nccl_check

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=()
total_start=$(date +%s%N)

seconds_since() { # start in ns -> "12.3"
    local ns=$(($(date +%s%N) - $1))
    printf "%d.%d" $((ns / 1000000000)) $((ns / 100000000 % 10))
}

# name, then the command; its output goes to $work/out, shown when it fails
run_check() {
    local name=$1
    shift
    local start status=ok
    start=$(date +%s%N)
    if ! timeout 120 "$@" >"$work/out" 2>&1; then
        status=FAIL
    elif grep -qE 'GB/s|TFLOP/s' "$work/out"; then
        status=FAIL
        echo "     prints a GPU figure on the emulator:"
        grep -E 'GB/s|TFLOP/s' "$work/out" | head -3
    fi
    printf "%-4s %-52s %6s s\n" "$status" "$name" "$(seconds_since "$start")"
    if [ "$status" = FAIL ]; then
        tail -n 30 "$work/out"
        failures+=("$name")
    fi
}

seed=1
for b in "${BINS[@]}"; do
    run_check "$b (CUDA_EMU_SEED=$seed)" env CUDA_EMU_SEED=$seed "$b"
    seed=$((seed % 3 + 1))
done

run_check "build/emu/nccl_check (1 process)" build/emu/nccl_check

# two ranks as background processes, rendezvous through a directory; both must exit 0
start=$(date +%s%N)
mkdir "$work/rendezvous"
for r in 0 1; do
    timeout 120 build/emu/nccl_check -pi fs -pn 2 -pr $r -pf "$work/rendezvous" >"$work/rank$r.log" 2>&1 &
    pids[r]=$!
done
rc0=0 rc1=0
wait "${pids[0]}" || rc0=$?
wait "${pids[1]}" || rc1=$?
status=ok
if [ "$rc0" -ne 0 ] || [ "$rc1" -ne 0 ] || ! grep -q "^OK nccl_check" "$work/rank0.log"; then status=FAIL; fi
printf "%-4s %-52s %6s s\n" "$status" "build/emu/nccl_check (2 processes, -pi fs)" "$(seconds_since "$start")"
if [ "$status" = FAIL ]; then
    for r in 0 1; do
        echo "     rank $r exit status $([ $r -eq 0 ] && echo $rc0 || echo $rc1):"
        tail -n 15 "$work/rank$r.log"
    done
    failures+=("nccl_check (2 processes)")
fi

echo "total $(seconds_since "$total_start") s"
if [ ${#failures[@]} -gt 0 ]; then
    echo "FAIL: ${failures[*]}"
    exit 1
fi
echo "OK: every emulated check passed"
