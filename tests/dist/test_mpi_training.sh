#!/usr/bin/env bash
# Data parallel and ZeRO-1 training of the CPU trainer under MPI (issue: ZeRO-1 over MPI, tested in CI).
#  1. Equivalence: with the same global batch of 4 x 32 tokens, the losses of 10 steps match one process
#     (B=4) to fp32 tolerance for -np 2 (B=2) and -np 4 (B=1), each with -z 0 and -z 1, and so does one
#     process with gradient accumulation (B=1, -d 128). Tolerance 2e-5 relative: the runs differ only in
#     the order of fp32 sums (gradients averaged across processes vs summed in one), ~1e-6 per step,
#     while a missing 1/N, a wrong shard or a skipped all-gather changes a loss by 1e-3 or more.
#     8-bit AdamW with -np 2 -z 1 matches 8-bit AdamW in one process the same way.
#  2. Resume from sharded state: -np 2 -z 1, 6 steps with a checkpoint at 3; resumed from step 3 it prints
#     exactly the uninterrupted run's lines; resuming with -np 4 fails, naming the process counts.
#  3. Failure: rank 1's state file is missing at resume; every rank stops (no hang), the exit status is
#     non-zero and the message names rank 1 and the file.
#  4. Ranks started with different -b (mpirun's MPMD form) stop at start-up, naming -b and both values.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_mpirun
make -s --no-print-directory train_gpt2 data
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
common="-e d2 -t 32 -x 10 -v 1000 -m 1 -s 0 -u 2 -l 3e-3"

losses() { grep "^step" "$1" | sed 's/.*| loss \([0-9.]*\) .*/\1/'; }
compare() { # reference file, other file, label
    paste <(losses "$1") <(losses "$2") | awk -v label="$3" '
        { n++; d = $1 - $2; if (d < 0) d = -d; r = d / $1; if (r > worst) worst = r; if (r > 2e-5) bad++ }
        END { printf "%-28s %2d steps, max rel diff %.2e %s\n", label, n, worst, (bad || n != 10) ? "FAIL" : "ok";
              exit (bad || n != 10) }'
}

OMP_NUM_THREADS=2 ./train_gpt2 $common -b 4 > "$dir/ref.txt"
OMP_NUM_THREADS=2 ./train_gpt2 $common -b 1 -d 128 > "$dir/accum.txt"
compare "$dir/ref.txt" "$dir/accum.txt" "1 process, 4 accum steps"
for np in 2 4; do
    for z in 0 1; do
        OMP_NUM_THREADS=1 timeout 300 "${MPIRUN[@]}" -np $np ./train_gpt2 $common -b $((4 / np)) -z $z > "$dir/np$np-z$z.txt"
        grep -q "ZeRO stage $z over $np processes" "$dir/np$np-z$z.txt"
        compare "$dir/ref.txt" "$dir/np$np-z$z.txt" "-np $np -z $z"
    done
done

# 8-bit AdamW composes with ZeRO-1: each process quantizes its own shard (its block grid starts at the shard
# boundary, a multiple of 2*128 elements, so it lines up with the single process's blocks of 256)
q8="-qo 1 -qb 256"
OMP_NUM_THREADS=2 ./train_gpt2 $common -b 4 $q8 > "$dir/ref8.txt"
OMP_NUM_THREADS=1 timeout 300 "${MPIRUN[@]}" -np 2 ./train_gpt2 $common -b 2 -z 1 $q8 > "$dir/np2-z1-8bit.txt"
grep -q "8-bit AdamW, ZeRO stage 1 over 2 processes" "$dir/np2-z1-8bit.txt"
compare "$dir/ref8.txt" "$dir/np2-z1-8bit.txt" "-np 2 -z 1, 8-bit AdamW"

# 2. resume from sharded state
ck="-e d2 -t 32 -b 2 -z 1 -x 6 -n 3 -v 1000 -m 1 -s 0"
export OMP_NUM_THREADS=1
timeout 300 "${MPIRUN[@]}" -np 2 ./train_gpt2 $ck -o "$dir/z1" > "$dir/z1-full.txt"
ls "$dir/z1"/state_00000003_0000{0,1}.bin >/dev/null
rm "$dir/z1"/*00000006*
echo 3 > "$dir/z1/checkpoint_latest"
cp -r "$dir/z1" "$dir/z1-copy"
timeout 300 "${MPIRUN[@]}" -np 2 ./train_gpt2 $ck -o "$dir/z1" -y 1 > "$dir/z1-resumed.txt"
strip() { grep "^step" "$1" | sed 's/ | [0-9.]* ms.*//'; }
diff <(strip "$dir/z1-full.txt" | tail -3) <(strip "$dir/z1-resumed.txt")
echo "-np 2 -z 1 resumed from sharded state: identical to the uninterrupted run"
if out=$(timeout 120 "${MPIRUN[@]}" -np 4 ./train_gpt2 ${ck/-b 2/-b 1} -o "$dir/z1-copy" -y 1 2>&1); then
    echo "FAIL: resumed 2-process state with 4 processes"; exit 1
fi
grep -q "written by a run with 2 processes but this run has 4" <<<"$out"
echo "resume with a different process count: refused ($(grep -m1 'written by' <<<"$out"))"

# 3. a failing rank stops the job
rm "$dir/z1-copy"/state_00000003_00001.bin
start=$(date +%s)
set +e
out=$(timeout 120 "${MPIRUN[@]}" -np 2 ./train_gpt2 $ck -o "$dir/z1-copy" -y 1 2>&1)
rc=$?
set -e
echo "missing state of rank 1: exit $rc after $(( $(date +%s) - start )) s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: expected a prompt non-zero exit, got $rc"; echo "$out"; exit 1; }
grep "error: \[rank 1 of 2\].*state_00000003_00001.bin" <<<"$out"

# 4. ranks started with different batch flags (mpirun's MPMD form): every rank stops at start-up with a
#    message naming what differs, instead of running collectives of different sizes (a hang or garbage)
set +e
out=$(timeout 120 "${MPIRUN[@]}" -np 1 ./train_gpt2 -e d2 -b 4 -t 32 -x 1 : -np 1 ./train_gpt2 -e d2 -b 2 -t 32 -x 1 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: ranks with -b 4 and -b 2: expected a prompt non-zero exit, got $rc"; exit 1; }
grep -q "processes of this run disagree on -b: rank 0 has .4., rank 1 has .2." <<<"$out" || { echo "FAIL: no message naming -b"; echo "$out"; exit 1; }
echo "ranks with -b 4 and -b 2: refused ($(grep -m1 'disagree' <<<"$out"))"
