#!/usr/bin/env bash
# Resume reproduces an uninterrupted run exactly: run 8 steps with checkpoints every 4; then take the
# directory as a run stopped after step 4 would have left it (the step-8 checkpoint removed, the pointer at
# step 4), resume, and require the loss lines of steps 5..8 (and the val losses) to be identical, character
# for character, to the uninterrupted run's. Also: a checkpoint whose pointer is missing is not resumed
# from, and an 8-bit AdamW run resumes exactly too.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory train_gpt2 data
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=2
common="-e d2 -b 4 -t 32 -x 8 -n 4 -v 4 -m 2 -s 0"

check_resume "$dir" fp32 "$common"
check_resume "$dir" adam8bit "$common -qo 1 -qb 256"

# -y 1 with no checkpoint_latest: a clear error, not a fresh start
mkdir -p "$dir/empty"
if out=$(./train_gpt2 $common -o "$dir/empty" -y 1 2>&1); then echo "FAIL: resumed from nothing"; exit 1; fi
grep -q "no checkpoint in" <<<"$out" && echo "resume without a checkpoint: $out"
