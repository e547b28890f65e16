#!/usr/bin/env bash
# The GPU bring-up script (dev/cuda/bringup.sh) rehearsed on the CPU emulator: both phases run every step
# at tiny sizes (--rehearse) and must pass, print their table and leave its three files, so a wrong path, a
# missing program or a typo shows here rather than on a lent GPU. Checked besides: the -b search of the fast
# phase goes on past a -b that runs out of memory (the emulated device has 250 MB there), recompute -r 3 gives
# the losses of -r 0 bit for bit (ZeRO-3 those of ZeRO-2), and no GPU figure is claimed (the header says
# REHEARSAL).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for phase in correct fast; do
    if ! bash dev/cuda/bringup.sh --rehearse "$phase" "$out" > "$out/$phase.stdout" 2>&1; then
        tail -50 "$out/$phase.stdout"
        echo "FAIL: bringup.sh --rehearse $phase"
        exit 1
    fi
    for f in "${phase}_table.txt" "$phase.log" "${phase}_logs.tar.gz"; do
        [ -s "$out/$f" ] || { echo "FAIL: $phase left no $f"; exit 1; }
    done
    grep -q "REHEARSAL on the CPU emulator" "$out/${phase}_table.txt" || { echo "FAIL: $phase: no REHEARSAL header"; exit 1; }
    echo "$phase: $(grep -cE '  ok  ' "$out/${phase}_table.txt") steps ok"
done
t=$out/correct_table.txt
for row in "test_gpt2cu bf16 gpt2v -r 0 +ok" "test_gpt2cu fp32 gpt2v -r 0 +ok" "train_gpt2fp32cu vs CPU trainer .* +ok" "matmul_check_fp32 +ok" \
    "two identical runs .* +ok" "ZeRO-3 -r 3 = ZeRO-2 on one GPU .* +ok"; do
    grep -qE "^$row" "$t" || { cat "$t"; echo "FAIL: correct: no row '$row'"; exit 1; }
done
t=$out/fast_table.txt
for row in "train_gpt2cu d2 -b 64 .* +too big" "train_gpt2cu d2 -b 2 -t 64 -r 0 +ok" "losses -r 3 = -r 0 .* +ok" \
    "ours / PyTorch tok/s +ok"; do
    grep -qE "^$row" "$t" || { cat "$t"; echo "FAIL: fast: no row '$row'"; exit 1; }
done
echo "OK: both phases rehearsed"
