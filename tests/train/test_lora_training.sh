#!/usr/bin/env bash
# LoRA and QLoRA fine-tuning in the CPU trainer, end to end (test_gpt2 checks the math against PyTorch):
#  1. Resume is exact: LoRA (every target), QLoRA and LoRA with 8-bit AdamW, each 8 steps with checkpoints
#     every 4, cut at step 4 and resumed: the step and val lines and main.log equal the uninterrupted run's.
#  2. The merged model file of a LoRA run is a plain model: a new run from it (-e) starts at the LoRA run's
#     final val loss (to 2e-5 relative: the same sums in another order).
#  3. Resume refuses another base (-e), another rank (-lo) and another NF4 setting (-lq), naming the fact.
#  4. Composes: gradient accumulation (B=1 x 4 micro-steps) and ZeRO-1 over 2 processes (B=2 each) give the
#     losses, learning rates and norms of one process with B=4 (not its val losses: -m 2 batches of another
#     B are other tokens), to 2e-5 relative (fp32 sums in another order; a missing 1/N or a
#     wrong shard moves a loss by 1e-3 or more), for LoRA and QLoRA.
#  5. The memory table: predicted and allocated agree within 1% per row, for full training, LoRA and QLoRA;
#     the adapters' gradients and optimizer state are what LoRA allocates instead of the model's.
#  6. Bad flags: -lq 1 without -lo, an unknown -lt, -la 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_mpirun
make -s --no-print-directory train_gpt2 data
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=2

# a small pretrained base: 20 steps of d2 on Tiny Shakespeare
./train_gpt2 -e d2 -b 4 -t 32 -x 20 -v 100 -s 0 -o "$dir/base" > "$dir/base.txt"
base=$dir/base/model_00000020.bin
common="-e $base -b 4 -t 32 -x 8 -n 4 -v 4 -m 2 -s 0 -u 2 -l 3e-3"

# 1. resume
check_resume "$dir" lora "$common -lo 4 -lt all"
check_resume "$dir" qlora "$common -lo 4 -lq 1"
check_resume "$dir" lora8bit "$common -lo 4 -qo 1 -qb 256"
grep -q "model_<step>.bin is the merged model, W + (alpha/r) B.A on the dequantized NF4 base" "$dir/qlora-full.txt"

# 2. the merged model file
final_val=$(grep "^final val loss" "$dir/lora-full.txt" | awk '{print $4}')
./train_gpt2 -e "$dir/lora-full/model_00000008.bin" -b 4 -t 32 -x 1 -v 4 -m 2 -s 0 > "$dir/merged.txt"
merged_val=$(grep -m1 "^val loss" "$dir/merged.txt" | awk '{print $3}')
awk -v a="$final_val" -v b="$merged_val" 'BEGIN { d = (a - b) / a; if (d < 0) d = -d;
    printf "%s   merged model file: val loss %s, the LoRA run ended at %s (rel diff %.1e)\n", d <= 2e-5 ? "ok" : "FAIL", b, a, d;
    exit d > 2e-5 }'

# 3. resume refusals
failures=0
./train_gpt2 -e d2 -b 4 -t 32 -x 20 -v 100 -s 0 -sd 7 -o "$dir/base2" > /dev/null
expect_status 1 "resume with another base" "LoRA base" \
    ./train_gpt2 ${common/$base/$dir/base2/model_00000020.bin} -lo 4 -lt all -o "$dir/lora-cut" -y 1
expect_status 1 "resume with another rank" "adapters of -lo" ./train_gpt2 $common -lo 8 -lt all -o "$dir/lora-cut" -y 1
expect_status 1 "resume with another -lq" "-lq" ./train_gpt2 $common -lo 4 -o "$dir/qlora-cut" -y 1

# 4. accumulation and ZeRO-1 against one process
compare() { # reference file, other file, label
    /usr/bin/python3 tests/common/compare_train_logs.py "$1" "$2" --label "$3" --tol 2e-5 --steps 8 --no-val
}
one="-e $base -t 32 -x 8 -v 100 -m 2 -s 0 -u 2 -l 3e-3"
for mode in "lora:-lo 4 -lt all" "qlora:-lo 4 -lq 1"; do
    name=${mode%%:*} flags=${mode#*:}
    ./train_gpt2 $one -b 4 $flags > "$dir/$name-b4.txt"
    ./train_gpt2 $one -b 1 -d 128 $flags > "$dir/$name-accum.txt"
    compare "$dir/$name-b4.txt" "$dir/$name-accum.txt" "$name, 4 accumulation steps"
    OMP_NUM_THREADS=1 timeout 300 "${MPIRUN[@]}" -np 2 ./train_gpt2 $one -b 2 -z 1 $flags > "$dir/$name-np2.txt"
    grep -q "ZeRO stage 1 over 2 processes" "$dir/$name-np2.txt"
    compare "$dir/$name-b4.txt" "$dir/$name-np2.txt" "$name, -np 2 -z 1"
done

# 5. the memory table: every row's prediction within 1% (or 0.01 MiB) of what was allocated
check_table() { # file, label
    awk -v label="$2" '
        /^memory \(this process[,)]/ { on = 1; next }
        on && /^  / { n = split($0, f, " "); p = f[n - 1]; a = f[n]; d = p - a; if (d < 0) d = -d;
                     if (d > 0.01 && d > 0.01 * a) { bad++; print "  row off: " $0 } rows++; next }
        on { on = 0 }
        END { printf "%s   memory table, %s: %d rows, predicted = allocated within 1%%\n", bad || rows != 6 ? "FAIL" : "ok", label, rows;
              exit (bad || rows != 6) }' "$1"
}
./train_gpt2 $one -b 4 -x 1 > "$dir/full-mem.txt"
check_table "$dir/full-mem.txt" "full training"
check_table "$dir/lora-b4.txt" "LoRA"
check_table "$dir/qlora-b4.txt" "QLoRA"
row() { grep "^  $2" "$1" | awk '{print $NF}'; } # the allocated MiB of a row
awk -v full="$(row "$dir/full-mem.txt" gradients)" -v lora="$(row "$dir/lora-b4.txt" gradients)" 'BEGIN {
    printf "%s   gradients: %s MiB for the whole model, %s MiB for the adapters\n", lora < full / 100 ? "ok" : "FAIL", full, lora;
    exit !(lora < full / 100) }'
awk -v f="$(row "$dir/lora-b4.txt" "frozen base")" -v q="$(row "$dir/qlora-b4.txt" "frozen base")" 'BEGIN {
    printf "%s   frozen base: %s MiB in fp32, %s MiB with NF4 block matrices\n", q < f ? "ok" : "FAIL", f, q; exit !(q < f) }'

# 6. bad flags
expect_status 1 "-lq 1 without -lo" "needs a LoRA rank" ./train_gpt2 $one -b 4 -lq 1
expect_status 1 "unknown -lt" "flag -lt expects" ./train_gpt2 $one -b 4 -lo 4 -lt qkv,mlp
expect_status 1 "-la 0" "flag -la expects" ./train_gpt2 $one -b 4 -lo 4 -la 0
[ "$failures" -eq 0 ] || { echo "$failures case(s) failed"; exit 1; }
echo "LoRA training: all checks passed"
