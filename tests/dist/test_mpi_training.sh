#!/usr/bin/env bash
# Data parallel and ZeRO-0/1/2/3 training of the CPU trainer under MPI.
#  1. Equivalence: with the same global batch of 4 x 32 tokens, the losses of 10 steps (gradient clipping at
#     norm 1 active in the first steps) match one process (B=4) to fp32 tolerance for -np 2 (B=2) and -np 4
#     (B=1), each with -z 0, 1, 2 and 3, and so do one process and -np 2 -z 2/3 with gradient accumulation
#     (B=1, -d 128). Tolerance 2e-5 relative: the runs differ only in the order of fp32 sums (gradients
#     averaged across processes, or per micro-step, vs summed in one), ~1e-6 per step, while a missing 1/N,
#     a wrong shard, a unit reduce-scattered twice or a stale gathered layer changes a loss by 1e-3 or more.
#     The gradient norm (before clipping) must match to 2e-4, two units of its printed last digit: AdamW
#     with clipping is blind to a constant factor on the gradients (a missing 1/N leaves the losses equal
#     to 1e-7), the norm is not (it doubles).
#     8-bit AdamW with -np 2 -z 1, -np 2 -z 2 and -np 4 -z 3 matches 8-bit AdamW in one process the same
#     way (-qb 128: every tensor, per-layer piece and shard boundary of d2 (C=128) is a multiple of 128, so
#     each process's quantization blocks are the single process's).
#  2. Resume from sharded state: -np 2 with -z 1 and -z 3, 6 steps with a checkpoint at 3; resumed from
#     step 3 each prints exactly the uninterrupted run's lines; resuming with -np 4 fails, naming the
#     process counts. ZeRO-3's model file (gathered unit by unit) is bit-identical to ZeRO-2's (the same
#     arithmetic on held parameters) and loads in one process; ZeRO-3 samples (every rank runs the
#     forwards) the same text as ZeRO-2.
#  3. Memory: at 1, 2 and 4 processes and every stage, the memory table's rows match the ZeRO formulas
#     worked out by check_zero_memory.py from the model's shape (its header states the margin).
#  4. Failure: rank 1's state file is missing at resume (-z 1 and -z 3); every rank stops (no hang), the exit
#     status is non-zero and the message names rank 1 and the file.
#  5. Ranks started with different -b (mpirun's MPMD form) stop at start-up, naming -b and both values.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_mpirun
make -s --no-print-directory train_gpt2 data
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
common="-e d2 -t 32 -x 10 -v 1000 -m 1 -s 0 -u 2 -l 3e-3"

# loss and gradient norm of every step line
compare() { compare_losses "$1" "$2" "$3" 10; } # reference file, other file, label

OMP_NUM_THREADS=2 ./train_gpt2 $common -b 4 > "$dir/ref.txt"
OMP_NUM_THREADS=2 ./train_gpt2 $common -b 1 -d 128 > "$dir/accum.txt"
compare "$dir/ref.txt" "$dir/accum.txt" "1 process, 4 accum steps"
for np in 2 4; do
    for z in 0 1 2 3; do
        OMP_NUM_THREADS=1 timeout 300 "${MPIRUN[@]}" -np $np ./train_gpt2 $common -b $((4 / np)) -z $z > "$dir/np$np-z$z.txt"
        grep -q "ZeRO stage $z over $np processes" "$dir/np$np-z$z.txt"
        compare "$dir/ref.txt" "$dir/np$np-z$z.txt" "-np $np -z $z"
    done
done

for z in 2 3; do
    OMP_NUM_THREADS=1 timeout 300 "${MPIRUN[@]}" -np 2 ./train_gpt2 $common -b 1 -d 128 -z $z > "$dir/accum-z$z.txt"
    compare "$dir/ref.txt" "$dir/accum-z$z.txt" "-np 2 -z $z, 2 accum steps"
done

# 8-bit AdamW composes with ZeRO: each process quantizes its own shard, block by block from the start of
# each of its pieces (see the header for why the grids line up)
q8="-qo 1 -qb 128"
OMP_NUM_THREADS=2 ./train_gpt2 $common -b 4 $q8 > "$dir/ref8.txt"
for npz in 2:1 2:2 4:3; do
    np=${npz%:*} z=${npz#*:}
    OMP_NUM_THREADS=1 timeout 300 "${MPIRUN[@]}" -np $np ./train_gpt2 $common -b $((4 / np)) -z $z $q8 > "$dir/np$np-z$z-8bit.txt"
    grep -q "8-bit AdamW, ZeRO stage $z over $np processes" "$dir/np$np-z$z-8bit.txt"
    compare "$dir/ref8.txt" "$dir/np$np-z$z-8bit.txt" "-np $np -z $z, 8-bit AdamW"
done

# 2. resume from sharded state (and 4. a failing rank stops the job)
export OMP_NUM_THREADS=1
strip() { grep "^step" "$1" | sed 's/ | [0-9.]* ms.*//'; }
for z in 1 2 3; do
    ck="-e d2 -t 32 -b 2 -z $z -x 6 -n 3 -v 1000 -m 1 -s 6 -g 16"
    timeout 300 "${MPIRUN[@]}" -np 2 ./train_gpt2 $ck -o "$dir/z$z" > "$dir/z$z-full.txt"
    [ $z -eq 2 ] && continue # (its model file and sample, for ZeRO-3's to match)
    ls "$dir/z$z"/state_00000003_0000{0,1}.bin >/dev/null
    cp -r "$dir/z$z" "$dir/z$z-cut"
    rm "$dir/z$z-cut"/*00000006*
    echo 3 > "$dir/z$z-cut/checkpoint_latest"
    cp -r "$dir/z$z-cut" "$dir/z$z-copy"
    timeout 300 "${MPIRUN[@]}" -np 2 ./train_gpt2 $ck -o "$dir/z$z-cut" -y 1 > "$dir/z$z-resumed.txt"
    diff <(strip "$dir/z$z-full.txt" | tail -3) <(strip "$dir/z$z-resumed.txt")
    echo "-np 2 -z $z resumed from sharded state: identical to the uninterrupted run"
    if out=$(timeout 120 "${MPIRUN[@]}" -np 4 ./train_gpt2 ${ck/-b 2/-b 1} -o "$dir/z$z-copy" -y 1 2>&1); then
        echo "FAIL: resumed 2-process state with 4 processes"; exit 1
    fi
    grep -q "written by a run with 2 processes but this run has 4" <<<"$out"
    echo "resume with a different process count: refused ($(grep -m1 'written by' <<<"$out"))"
    # 4. a failing rank stops the job
    rm "$dir/z$z-copy"/state_00000003_00001.bin
    start=$(date +%s)
    set +e
    out=$(timeout 120 "${MPIRUN[@]}" -np 2 ./train_gpt2 $ck -o "$dir/z$z-copy" -y 1 2>&1)
    rc=$?
    set -e
    echo "-z $z, missing state of rank 1: exit $rc after $(( $(date +%s) - start )) s"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: expected a prompt non-zero exit, got $rc"; echo "$out"; exit 1; }
    grep "error: \[rank 1 of 2\].*state_00000003_00001.bin" <<<"$out"
done
cmp "$dir/z2/model_00000006.bin" "$dir/z3/model_00000006.bin"
echo "ZeRO-3's model file (gathered unit by unit) is bit-identical to ZeRO-2's"
sample() { grep -A2 "^generating:" "$1" | sed -n 3p; } # the line after "---"
[ -n "$(sample "$dir/z3-full.txt" | tr -d ' ')" ] || { echo "FAIL: ZeRO-3 sampled nothing"; exit 1; }
diff <(sample "$dir/z2-full.txt") <(sample "$dir/z3-full.txt")
echo "ZeRO-3 samples (every rank runs the forwards) what ZeRO-2 samples: $(sample "$dir/z3-full.txt" | cut -c1-60)"
./train_gpt2 -e "$dir/z3/model_00000006.bin" -t 32 -b 2 -x 1 -v 1000 -m 1 -s 0 > "$dir/z3-load.txt"
grep -q "^step    1/1" "$dir/z3-load.txt"
echo "ZeRO-3's model file trains in one process"

# 3. the memory table against the ZeRO formulas, at 1, 2 and 4 processes (2 and 4: the tables the runs of
#    section 1 printed)
for z in 0 1 2 3; do
    ./train_gpt2 -e d2 -t 32 -b 1 -x 1 -v 1000 -m 1 -s 0 -z $z > "$dir/mem-np1-z$z.txt"
done
"$PY" tests/dist/check_zero_memory.py "$dir"/mem-np1-z*.txt "$dir"/np[24]-z[0-3].txt

# 5. ranks started with different batch flags (mpirun's MPMD form): every rank stops at start-up with a
#    message naming what differs, instead of running collectives of different sizes (a hang or garbage)
set +e
out=$(timeout 120 "${MPIRUN[@]}" -np 1 ./train_gpt2 -e d2 -b 4 -t 32 -x 1 : -np 1 ./train_gpt2 -e d2 -b 2 -t 32 -x 1 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: ranks with -b 4 and -b 2: expected a prompt non-zero exit, got $rc"; exit 1; }
grep -q "processes of this run disagree on -b: rank 0 has .4., rank 1 has .2." <<<"$out" || { echo "FAIL: no message naming -b"; echo "$out"; exit 1; }
echo "ranks with -b 4 and -b 2: refused ($(grep -m1 'disagree' <<<"$out"))"
