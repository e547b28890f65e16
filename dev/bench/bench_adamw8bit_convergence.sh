#!/usr/bin/env bash
# Convergence of 8-bit AdamW against fp32 AdamW on the CPU: the same model, seed, data and schedule,
# trained twice on Tiny Shakespeare (d2: L=2, C=128, GPT-2 vocabulary), only -qo differs. Prints both
# final val losses and their relative difference (the bar: within 1%), and plots both curves.
#   bash dev/bench/bench_adamw8bit_convergence.sh [steps] [out_dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-300}
out=${2:-dev/results}
make -s data train_gpt2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags="-e d2 -b 8 -t 64 -x $steps -v 50 -m 20 -s 0 -l 1e-3 -u 20 -c 0.1 -sd 1337"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
echo "flags: $flags"
for q in 0 1; do
    ./train_gpt2 $flags -qo $q -o "$work/qo$q" > "$work/qo$q.txt"
    grep -E "^optimizer" "$work/qo$q.txt"
    awk '/^memory \(this process[,)]/ { on = 1 } on { print } on && /^  total/ { exit }' "$work/qo$q.txt"
done
f0=$(grep "final val loss" "$work/qo0.txt" | awk '{print $4}')
f1=$(grep "final val loss" "$work/qo1.txt" | awk '{print $4}')
awk -v a="$f0" -v b="$f1" 'BEGIN { d = (b - a) / a; if (d < 0) d = -d;
    printf "final val loss: fp32 AdamW %.4f, 8-bit AdamW %.4f, relative difference %.2f%% (bar 1%%): %s\n",
           a, b, 100 * d, d <= 0.01 ? "within" : "NOT within" }'
mkdir -p "$out"
cp "$work/qo0/main.log" "$out/adamw8bit_convergence_fp32.log"
cp "$work/qo1/main.log" "$out/adamw8bit_convergence_8bit.log"
/usr/bin/python3 dev/plot_log.py "$out/adamw8bit_convergence_fp32.log" "$out/adamw8bit_convergence_8bit.log" \
    --labels "fp32 AdamW,8-bit AdamW" --title "d2 on Tiny Shakespeare: fp32 vs 8-bit AdamW" \
    -o "$out/adamw8bit_convergence.png"
