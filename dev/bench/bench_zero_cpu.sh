#!/usr/bin/env bash
# ZeRO on the CPU trainer: per-process memory and step time for stages 0-3 at 1, 2 and 4 processes, on one
# global batch (8 x 64 tokens: -b 8/N per process) of a model given by descriptor (default d6). Threads per
# process = cores / processes (at least 1), so every configuration has the machine's cores and no more.
# For each: the median ms/step over the steps after the first, tokens/s, the memory table's allocated model
# state (parameters + gradients + optimizer state + ZeRO buckets) and total, the ZeRO formula's model state
# (llmc/zero.h, fp32: 16, 8 + 12/N (stage 1 keeps its reduce-scattered gradient slice apart), 4 + 12/N,
# 16/N bytes per parameter, without the buckets), and rank 0's
# peak resident memory (VmHWM).
#   bash dev/bench/bench_zero_cpu.sh [model] [steps]      (on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_mpirun
model=${1:-d6}
steps=${2:-6}
make -s --no-print-directory data train_gpt2
cores=$(nproc)
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
printf "%-3s %-2s %-7s %10s %8s %14s %14s %12s %10s\n" N z threads "ms/step" "tok/s" "state MiB" "formula MiB" "total MiB" "VmHWM MiB"
for np in 1 2 4; do
    threads=$((cores / np)); [ $threads -ge 1 ] || threads=1
    for z in 0 1 2 3; do
        OMP_NUM_THREADS=$threads timeout 900 "${MPIRUN[@]}" -np $np ./train_gpt2 -e "$model" -b $((8 / np)) -t 64 \
            -x "$steps" -v 100000 -m 1 -s 0 -z $z > "$out"
        [ $np -eq 1 ] && [ $z -eq 0 ] && grep "^model:" "$out"
        P=$(sed -n 's/^model: .*, \([0-9]*\) parameters/\1/p' "$out")
        ms=$(grep "^step" "$out" | tail -n +2 | sed 's/.*| \([0-9.]*\) ms | .*/\1/' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
        state=$(awk '/^  (trained|gradients|optimizer state|ZeRO buckets)/ { s += $NF } END { print s }' "$out")
        total=$(awk '/^  total/ { print $NF }' "$out")
        hwm=$(sed -n 's/^peak resident memory of this process: \([0-9.]*\) MiB.*/\1/p' "$out")
        formula=$(awk -v P="$P" -v z=$z -v N=$np 'BEGIN { b = z == 0 ? 16 : z == 1 ? 8 + 12 / N : z == 2 ? 4 + 12 / N : 16 / N;
                                                         printf "%.1f", b * P / 1048576 }')
        printf "%-3s %-2s %-7s %10.1f %8.0f %14.1f %14s %12s %10s\n" $np $z $threads "$ms" "$(awk -v ms="$ms" 'BEGIN { print 512 * 1000 / ms }')" \
            "$state" "$formula" "$total" "$hwm"
    done
done
echo "state: the memory table's allocated parameters + gradients + optimizer state + ZeRO buckets of one process;"
echo "formula: the ZeRO formula's bytes per parameter x P (no buckets); total adds the activations and their gradients"
