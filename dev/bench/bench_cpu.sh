#!/usr/bin/env bash
# CPU trainer throughput for d12 at B=4, T=64 (llm.c's classic CPU configuration), OMP threads = cores:
# median ms/step and tokens/s over the steps after the first, and the GFLOP/s achieved (6*N*tokens per
# step, N = parameters) next to this machine's measured fp32 FMA peak (dev/bench/fma_peak.cpp, measured
# before and after the run: the figure is against their mean, and both are printed, since a shared machine's
# peak moves). Then where a step's time goes (dev/bench/bench_cpu_parts.cpp: matmuls, attention, the rest)
# and the matmul at each of the step's shapes (dev/bench/bench_matmul_cpu.cpp). Then the step beside 3
# CPU-bound busy loops (a fair share of the cores would be 1 + 3/cores of the idle time), with the trainer's
# OpenMP spin count and with libgomp's default (GOMP_SPINCOUNT=300000).
#   bash dev/bench/bench_cpu.sh [steps]     (run on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
make -s data train_gpt2 cpu_benches
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p') (family $(lscpu | sed -n 's/^CPU family: *//p'),\
 model $(lscpu | sed -n 's/^Model: *//p')), $(nproc) cores, vector ISA: $(grep -m1 -o -w 'avx512f' /proc/cpuinfo ||
    grep -m1 -o -w 'avx2' /proc/cpuinfo || echo 'neither AVX2 nor AVX-512'), OMP_NUM_THREADS=$OMP_NUM_THREADS"
peak_before=$(build/fma_peak)
out=$(./train_gpt2 -e d12 -b 4 -t 64 -x "$steps" -v 100000 -m 1 -s 0)
peak_after=$(build/fma_peak)
echo "before the run: $peak_before"
echo "after the run:  $peak_after"
peak=$(printf '%s\n%s\n' "$peak_before" "$peak_after" | sed 's/fma peak: \([0-9.]*\) .*/\1/' | awk '{ s += $1 } END { print s / NR }')
grep -E "^(model|threads):" <<<"$out"
grep "^step" <<<"$out" | tail -n +2 | sed 's/.*| \([0-9.]*\) ms | \([0-9]*\) tok\/s | \([0-9.]*\) GFLOP\/s/\1 \2 \3/' |
    sort -n | awk -v peak="$peak" '{ ms[NR] = $1; tok[NR] = $2; gf[NR] = $3 }
        END { m = int((NR + 1) / 2);
              printf "d12 B=4 T=64: median of %d steps: %.1f ms/step, %d tokens/s, %.1f GFLOP/s = %.0f%% of the %.1f GFLOP/s FMA peak\n",
                     NR, ms[m], tok[m], gf[m], 100 * gf[m] / peak, peak }'
idle_ms=$(grep "^step" <<<"$out" | tail -n +2 | sed 's/.*| \([0-9.]*\) ms .*/\1/' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
echo "where a step's time goes (the trainer's functions on fixed random tokens):"
build/bench_cpu_parts d12 "$steps"
build/bench_matmul_cpu

# contended: 3 busy loops beside the run
busy=()
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT
for _ in 1 2 3; do
    sh -c 'while :; do :; done' &
    busy+=($!)
done
for spins in trainer 300000; do
    env=()
    [ $spins = trainer ] || env=(GOMP_SPINCOUNT=$spins)
    ms=$(env "${env[@]}" ./train_gpt2 -e d12 -b 4 -t 64 -x 4 -v 100000 -m 1 -s 0 | grep "^step" | tail -n +2 |
        sed 's/.*| \([0-9.]*\) ms .*/\1/' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    awk -v ms="$ms" -v idle="$idle_ms" -v s="$spins" -v c="$(nproc)" 'BEGIN {
        printf "d12 beside 3 busy loops, %s: median %.1f ms/step = %.2fx idle (fair share %.2fx)\n",
               s == "trainer" ? "the trainer'"'"'s spin count" : "GOMP_SPINCOUNT=" s, ms, ms / idle, 1 + 3 / c }'
done
