#!/usr/bin/env bash
# Resume reproduces an uninterrupted run exactly: run 8 steps with checkpoints every 4; then take the
# directory as a run stopped after step 4 would have left it (the step-8 checkpoint removed, the pointer at
# step 4), resume, and require the loss lines of steps 5..8 (and the val losses) to be identical, character
# for character, to the uninterrupted run's. Also: a checkpoint whose pointer is missing is not resumed
# from, and an 8-bit AdamW run resumes exactly too.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s --no-print-directory train_gpt2 data
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=2
common="-e d2 -b 4 -t 32 -x 8 -n 4 -v 4 -m 2 -s 0"

check_resume() { # name, extra flags
    local name=$1 extra=$2
    ./train_gpt2 $common $extra -o "$dir/$name-full" > "$dir/$name-full.txt"
    cp -r "$dir/$name-full" "$dir/$name-cut"
    rm "$dir/$name-cut"/model_00000008.bin "$dir/$name-cut"/state_00000008_*.bin
    echo 4 > "$dir/$name-cut/checkpoint_latest"
    ./train_gpt2 $common $extra -o "$dir/$name-cut" -y 1 > "$dir/$name-resumed.txt"
    grep -q "resumed from step 4" "$dir/$name-resumed.txt"
    # the training lines without their timing columns, and the val lines
    strip() { grep -E "^step|^val loss" "$1" | sed 's/ | [0-9.]* ms.*//'; }
    diff <(strip "$dir/$name-full.txt" | grep -A100 "^step    4/8" | tail -n +2) <(strip "$dir/$name-resumed.txt")
    # the log of the resumed run equals the uninterrupted one's
    diff "$dir/$name-full/main.log" "$dir/$name-cut/main.log"
    echo "$name: resumed run identical to the uninterrupted run ($(strip "$dir/$name-resumed.txt" | wc -l) lines)"
}
check_resume fp32 ""
check_resume adam8bit "-qo 1 -qb 256"

# -y 1 with no checkpoint_latest: a clear error, not a fresh start
mkdir -p "$dir/empty"
if out=$(./train_gpt2 $common -o "$dir/empty" -y 1 2>&1); then echo "FAIL: resumed from nothing"; exit 1; fi
grep -q "no checkpoint in" <<<"$out" && echo "resume without a checkpoint: $out"
