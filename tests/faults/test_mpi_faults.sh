#!/usr/bin/env bash
# Faults of a multi-process run of the CPU trainer under mpirun (and, for the start-up check, of the GPU
# trainer on the CUDA emulator's NCCL). Every process runs under a timeout; nothing may hang.
#  1. Ranks started with different flags or models (mpirun's MPMD form): all stop at start-up, with one
#     message naming the first thing that differs and both values (before: hangs, silent divergence, a
#     buffer overflow inside MPI_Reduce_scatter_block).
#  2. A stalled rank (SIGSTOP): the others stop after LLMC_STEP_TIMEOUT_S with a message, the job ends.
#  3. A second run on the directory of a running one is refused; kill -9 of mpirun: its ranks stop within a
#     second and write nothing more.
#  4. The kill loop: mpirun killed (-9) at random moments and restarted at once with -y 1, until the run
#     completes; its main.log, final model and state files are byte-identical to an uninterrupted run's.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_mpirun
make -s --no-print-directory train_gpt2 build/emu/train_gpt2fp32cu data
dir=$(mktemp -d)
bg=() guards=()
trap 'kill -9 "${bg[@]}" "${guards[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT # stray ranks stop by themselves: their launcher is gone
export OMP_NUM_THREADS=1
common="-e d1 -b 2 -t 32 -v 100 -m 1 -s 0"
fail() { echo "FAIL: $*"; exit 1; }
# start_job LOG CMD...: CMD in the background as bg[0], killed after 300 s if still running (mpirun itself
# must be the job, not a timeout wrapper: the test kills it)
start_job() {
    local log=$1
    shift
    "$@" > "$log" 2>&1 &
    bg=($!)
    (sleep 300; kill -9 "${bg[0]}") > /dev/null 2>&1 &
    guards+=($!)
}

# 1. disagreement at start-up: "label|rank 0's flags|rank 1's flags|the fact named"
timeout 120 ./train_gpt2 $common -x 2 -n 1 -o "$dir/models" > /dev/null
m1="$dir/models/model_00000001.bin" m2="$dir/models/model_00000002.bin"
for c in "-x|-x 3|-x 4|-x" "-z|-x 3 -z 0|-x 3 -z 1|-z" "-qo|-x 3|-x 3 -qo 1|-qo" "-sd|-x 3 -sd 1|-x 3 -sd 2|-sd" \
    "-l|-x 3 -l 1e-3|-x 3 -l 2e-3|-l" "-d|-x 3 -d 128|-x 3 -d 256|-d" \
    "model files of the same shape|-x 3 -e $m1|-x 3 -e $m2|model parameters" \
    "-o on one rank only|-x 3 -o $dir/o1|-x 3|-o"; do
    IFS='|' read -r label a b fact <<<"$c"
    set +e
    out=$(timeout 120 "${MPIRUN[@]}" -np 1 ./train_gpt2 $common $a : -np 1 ./train_gpt2 $common $b 2>&1)
    rc=$?
    set -e
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "ranks with different $label: exit $rc (124: a hang)"
    [ "$(grep -c "disagree" <<<"$out")" -eq 1 ] || fail "ranks with different $label: expected one message: $out"
    grep -q "^error: the processes of this run disagree on $fact: rank 0 has '.*', rank 1 has '.*'" <<<"$out" ||
        fail "ranks with different $label: no message naming $fact: $out"
    echo "ok   ranks with different $label: $(grep disagree <<<"$out")"
done
set +e # the GPU trainer's check runs over (the emulator's) NCCL
out=$(timeout 120 "${MPIRUN[@]}" -np 1 build/emu/train_gpt2fp32cu $common -x 3 : -np 1 build/emu/train_gpt2fp32cu $common -x 4 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "^error: the processes of this run disagree on -x: rank 0 has '3', rank 1 has '4'" <<<"$out" ||
    fail "GPU trainer ranks with different -x: exit $rc: $out"
echo "ok   GPU trainer (emulated NCCL), ranks with different -x: $(grep disagree <<<"$out")"

# rank_pid <mpirun pid> <rank>: the pid of that rank of the job
rank_pid() {
    local p
    for p in $(pgrep -P "$1"); do
        if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$p"; return; fi
    done
}
wait_for() { # seconds, condition...
    local n=$(($1 * 10))
    shift
    for _ in $(seq $n); do "$@" && return 0; sleep 0.1; done
    return 1
}

# 2. a stalled rank: SIGSTOP rank 1 once both train; rank 0 must stop after the 4 s step timeout
LLMC_STEP_TIMEOUT_S=4 timeout 120 "${MPIRUN[@]}" -np 2 ./train_gpt2 $common -x 100000 > "$dir/stall.txt" 2>&1 &
bg=($!)
wait_for 60 grep -q "^step   10/" "$dir/stall.txt" || fail "the stall run did not train: $(tail -3 "$dir/stall.txt")"
r1=$(rank_pid "$(pgrep -P "${bg[0]}" mpirun)" 1)
[ -n "$r1" ] || fail "no rank 1 found"
kill -STOP "$r1"
start=$(date +%s)
set +e
wait "${bg[0]}"
rc=$?
set -e
took=$(($(date +%s) - start))
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a stalled rank: exit $rc (124: the job hung)"
grep -q "error: \[rank 0 of 2\] no progress for [0-9]* s (LLMC_STEP_TIMEOUT_S=4): a process of this job is stalled or gone" "$dir/stall.txt" ||
    fail "a stalled rank: no timeout message: $(tail -5 "$dir/stall.txt")"
echo "ok   a stalled rank (SIGSTOP): the job stopped after $took s: $(grep -m1 'no progress' "$dir/stall.txt")"

# 3. a second run on a running job's directory, then kill -9 of mpirun
start_job "$dir/busy.txt" "${MPIRUN[@]}" -np 2 ./train_gpt2 $common -x 100000 -n 5 -o "$dir/busy"
wait_for 60 test -f "$dir/busy/checkpoint_latest" || fail "the busy run wrote no checkpoint: $(tail -3 "$dir/busy.txt")"
set +e
out=$(timeout 60 "${MPIRUN[@]}" -np 2 ./train_gpt2 $common -x 100000 -n 5 -o "$dir/busy" -y 1 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "is in use by another run: pid [0-9]* on .*, rank [01] of 2" <<<"$out" ||
    fail "a second job on a busy directory: exit $rc: $out"
echo "ok   a second job on a running job's directory: $(grep -m1 'in use' <<<"$out" | cut -c1-150)..."
ranks=$(pgrep -P "${bg[0]}" | tr '\n' ' ')
kill -9 "${bg[0]}"
gone() { for p in $ranks; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }
wait_for 2 gone || fail "ranks $ranks outlived the killed mpirun by 2 s"
listing() { ls -l --time-style=+%s.%N "$dir/busy"; }
before=$(listing)
sleep 1
[ "$before" = "$(listing)" ] || fail "files changed after the ranks stopped"
echo "ok   kill -9 of mpirun: ranks $ranks stopped within 2 s, nothing written after"

# 4. the kill loop against an uninterrupted run
loop="$common -x 60 -n 2"
timeout 300 "${MPIRUN[@]}" -np 2 ./train_gpt2 $loop -o "$dir/ref" > /dev/null
kills=0 runs=0
while :; do
    runs=$((runs + 1))
    [ $runs -le 60 ] || fail "the kill loop did not finish in 60 runs"
    resume=""
    [ -f "$dir/loop/checkpoint_latest" ] && resume="-y 1"
    [ -z "$resume" ] && [ -d "$dir/loop" ] && resume="-ow 1" # killed before its first checkpoint
    start_job "$dir/loop-$runs.txt" "${MPIRUN[@]}" -np 2 ./train_gpt2 $loop -o "$dir/loop" $resume
    # kill at a random moment within 0.5..2 s of the start (the whole run takes ~8 s), unless it ends first;
    # after 8 kills, let it finish
    delay=$(awk -v s=$RANDOM 'BEGIN { srand(s); printf "%.2f", 0.5 + 1.5 * rand() }')
    [ $kills -ge 8 ] && delay=600
    ended=1
    for _ in $(seq "$(awk -v d="$delay" 'BEGIN { print int(d * 20) }')"); do
        kill -0 "${bg[0]}" 2>/dev/null && ! grep -q "^final val loss" "$dir/loop-$runs.txt" || { ended=0; break; }
        sleep 0.05
    done
    if [ $ended -eq 1 ] && kill -9 "${bg[0]}" 2>/dev/null; then
        kills=$((kills + 1))
        wait "${bg[0]}" 2>/dev/null || true
        continue # restart at once: a rank still holding its lock makes the next run fail, and it is retried
    fi
    set +e
    wait "${bg[0]}"
    rc=$?
    set -e
    if [ $rc -eq 0 ]; then break; fi
    grep -q "is in use by another run" "$dir/loop-$runs.txt" || fail "run $runs failed: $(tail -5 "$dir/loop-$runs.txt")"
done
[ $kills -ge 3 ] || fail "the kill loop killed mpirun only $kills times"
for f in main.log model_00000060.bin state_00000060_00000.bin state_00000060_00001.bin checkpoint_latest; do
    cmp "$dir/ref/$f" "$dir/loop/$f" || fail "kill loop: $f differs from the uninterrupted run"
done
echo "ok   kill loop: $kills kills of mpirun in $runs runs; main.log, the final model and states identical to the uninterrupted run"
