#!/usr/bin/env bash
# Pipeline parallelism of the CPU trainer: step time, bubble and per-stage memory for GPipe and 1F1B at
# P = 1, 2, 4 stages and M = 1, 4, 16 micro-batches of B=2 x T=64, on a model whose stages do equal work
# (L=8 C=256, a 256-token vocabulary: tests/dist/small_vocab.py; with GPT-2's vocabulary the last stage's
# classifier would outweigh the layers). Each process gets cores/P OpenMP threads (at least 1: P beyond the
# cores oversubscribes them: stages that could run at once take turns on a core).
# Per configuration: the median step time over steps 2..N, the measured bubble (each stage's time blocked
# on messages over the step, mean over the stages; mean over steps 2..N) beside the ideal (P-1)/(M+P-1),
# and each stage's allocated MiB (parameters + gradients + optimizer state | activations, with the
# micro-batches it holds).
#   bash dev/bench/bench_pipeline_cpu.sh [steps]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
steps=${1:-6}
make -s data train_gpt2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$PY" tests/dist/small_vocab.py "$dir/sv" 256 8 256
cores=$(nproc)
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores"
echo "model: L=8 C=256 NH=4 V=256, B=2 T=64 per micro-batch, $steps steps (figures over steps 2..$steps)"
printf "%-2s %-6s %3s %9s %8s %8s %7s  %s\n" P sched M "ms/step" "tok/s" bubble ideal \
    "per stage: MiB params+grads+optimizer | activations (micro-batches held)"
for P in 1 2 4; do
    threads=$(( cores / P > 0 ? cores / P : 1 ))
    for pk in gpipe 1f1b; do
        [ $P -eq 1 ] && [ $pk = 1f1b ] && continue # (one stage: no schedule)
        for M in 1 4 16; do
            flags="-e $dir/sv/model.bin -i $dir/sv/train.bin -j $dir/sv/val.bin -t 64 -b 2 -d $((M * 128))
                   -x $steps -v 100000 -m 1 -s 0 -pp $P -pk $pk"
            # shellcheck disable=SC2086
            if [ $P -eq 1 ]; then
                out=$(OMP_NUM_THREADS=$threads ./train_gpt2 $flags)
            else
                out=$(OMP_NUM_THREADS=$threads "${MPIRUN[@]}" -np $P ./train_gpt2 $flags)
            fi
            steps_after_first=$(grep "^step" <<<"$out" | tail -n +2)
            median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
            ms=$(sed 's/.*| \([0-9.]*\) ms |.*/\1/' <<<"$steps_after_first" | median)
            tok=$(sed 's/.*| \([0-9]*\) tok\/s |.*/\1/' <<<"$steps_after_first" | median)
            bubble=$( (grep -o "bubble [0-9.]*" <<<"$steps_after_first" || true) | awk '{ s += $2; n++ } END { if (n) printf "%.3f", s / n; else print "-" }')
            ideal=$( (grep -o "ideal [0-9.]*" <<<"$steps_after_first" || true) | tail -1 | awk '{ print $2 }')
            timing=$(printf "%9.1f %8d %8s %7s" "$ms" "$tok" "$bubble" "${ideal:--}")
            if [ $P -eq 1 ]; then
                mem=$(grep -E "^  (trained: parameters|gradients|optimizer state|activations)" <<<"$out" |
                    awk '{ v[NR] = $NF } END { printf "%.1f | %.1f (1)", v[1] + v[2] + v[3], v[4] }')
            else
                mem=$(grep -E "^ +[0-9]+ +[0-9]+-[0-9]+ " <<<"$out" |
                    awk '{ printf "%s%.1f | %.1f (%d)", (NR > 1 ? "; " : ""), $3 + $4 + $5, $6, $7 }')
            fi
            printf "%-2d %-6s %3d %s  %s\n" $P "$([ $P -eq 1 ] && echo - || echo $pk)" $M "$timing" "$mem"
        done
    done
done
