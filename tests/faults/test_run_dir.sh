#!/usr/bin/env bash
# An output directory belongs to one run at a time (llmc/run_dir.h), for both trainers (the GPU trainer on
# the CUDA emulator's single-GPU FP32 build):
#  1. two runs started on one directory: while the first trains, a second (-y 1 or fresh) is refused at once
#     with a message naming the directory and the holder (pid), and the first run's checkpoints and log end
#     byte-identical to those of the same run alone;
#  2. a fresh run into a directory that holds a run is refused (naming -y 1 and -ow 1) and changes nothing;
#     -ow 1 starts over (the old files deleted);
#  3. a write that fails (a file-size limit, as a full disk would) stops the run with the file named and
#     leaves no .tmp behind; a .tmp left by kill -9 is removed by the next run; the run then resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s --no-print-directory train_gpt2 build/emu/single/train_gpt2fp32cu data
dir=$(mktemp -d)
pids=()
trap 'kill -CONT "${holder:-}" 2>/dev/null || true; kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1
common="-e d2 -b 2 -t 32 -v 100 -m 1 -s 0 -l 1e-3"
fail() { echo "FAIL: $*"; exit 1; }

for bin in ./train_gpt2 build/emu/single/train_gpt2fp32cu; do
    b=$(basename "$bin")
    # 1. the reference: the run alone; then the same run with a second one started on its directory
    timeout 300 $bin $common -x 8 -n 2 -o "$dir/$b-alone" > /dev/null
    timeout 300 $bin $common -x 8 -n 2 -o "$dir/$b-run" > "$dir/$b-first.txt" 2>&1 &
    pids=($!)
    for _ in $(seq 600); do [ -f "$dir/$b-run/checkpoint_latest" ] && break; sleep 0.1; done
    [ -f "$dir/$b-run/checkpoint_latest" ] || fail "$b: the first run wrote no checkpoint"
    holder=$(pgrep -P "${pids[0]}") # the trainer, under timeout; paused so that it is surely still running
    kill -STOP "$holder"
    for flags in "-y 1" "-ow 1" ""; do
        set +e
        out=$(timeout 60 $bin $common -x 8 -n 2 -o "$dir/$b-run" $flags 2>&1)
        rc=$?
        set -e
        [ $rc -eq 1 ] || fail "$b: a second run ($flags) on a busy directory: exit $rc, expected 1"
        grep -qE "error: '$dir/$b-run' is in use by another run: pid $holder on .*, rank 0 of 1, since .* holds its lock" <<<"$out" ||
            fail "$b: a second run ($flags): no message naming the holder: $out"
    done
    kill -CONT "$holder"
    echo "$b: second runs on a busy directory refused: $(grep -m1 error: <<<"$out")"
    wait "${pids[0]}" || fail "$b: the first run failed: $(tail -3 "$dir/$b-first.txt")"
    for f in "$dir/$b-alone"/*.bin "$dir/$b-alone/main.log" "$dir/$b-alone/checkpoint_latest"; do
        cmp "$f" "$dir/$b-run/$(basename "$f")" || fail "$b: $(basename "$f") differs from the run alone"
    done
    echo "$b: the first run's files are identical to the run alone ($(ls "$dir/$b-alone" | grep -vc lock_) files)"

    # 2. a fresh run into a directory that holds a run: refused, nothing changed; -ow 1 starts over
    (cd "$dir/$b-run" && md5sum ./*.bin main.log checkpoint_latest) > "$dir/$b-sums" # all but the lock
    set +e
    out=$(timeout 60 $bin $common -x 2 -o "$dir/$b-run" 2>&1)
    rc=$?
    set -e
    [ $rc -eq 1 ] || fail "$b: a fresh run into a run's directory: exit $rc"
    grep -q "error: '$dir/$b-run' holds a run (a checkpoint of step 8, .*): resume it with -y 1, start over with -ow 1" <<<"$out" ||
        fail "$b: no refusal message: $out"
    (cd "$dir/$b-run" && md5sum -c --quiet "$dir/$b-sums") || fail "$b: the refused run changed the directory"
    echo "$b: fresh run into a run's directory refused, nothing changed: $(grep -m1 error: <<<"$out")"
    timeout 300 $bin $common -x 2 -n 1 -o "$dir/$b-run" -ow 1 > "$dir/$b-ow.txt"
    grep -q "^-ow 1: deleted the 10 files of the previous run" "$dir/$b-ow.txt" || fail "$b: -ow 1 said nothing"
    [ ! -e "$dir/$b-run/model_00000008.bin" ] && [ "$(cat "$dir/$b-run/checkpoint_latest")" = 2 ] ||
        fail "$b: -ow 1 left the old run"
    echo "$b: -ow 1 replaced the old run ($(ls "$dir/$b-run" | tr '\n' ' '))"

    # 3. a failed write (a file-size limit of 20 MB, which MPI's start-up still fits in: the model file of d2
    # is 27 MB) leaves no .tmp
    set +e
    out=$(ulimit -f 20000; timeout 300 $bin $common -x 4 -n 1 -o "$dir/$b-run" -y 1 2>&1)
    rc=$?
    set -e
    [ $rc -eq 1 ] || fail "$b: a failed write: exit $rc, expected 1: $out"
    grep -qE "error: could not write [0-9]+ bytes to '$dir/$b-run/model_00000003.bin.tmp': File too large" <<<"$out" ||
        fail "$b: a failed write: no message naming the file: $out"
    [ -z "$(ls "$dir/$b-run" | grep '\.tmp$')" ] || fail "$b: a failed write left $(ls "$dir/$b-run" | grep tmp)"
    echo "$b: a failed write stopped the run, no temporary left: $(grep -m1 error: <<<"$out")"
    # a temporary left by kill -9 (no cleanup can run) is removed when the next run takes the directory
    head -c 1000 /dev/zero > "$dir/$b-run/model_00000003.bin.tmp"
    head -c 1000 /dev/zero > "$dir/$b-run/state_00000003_00000.bin.tmp"
    timeout 300 $bin $common -x 4 -n 1 -o "$dir/$b-run" -y 1 > /dev/null
    [ -z "$(ls "$dir/$b-run" | grep '\.tmp$')" ] || fail "$b: stale temporaries were not removed"
    [ "$(cat "$dir/$b-run/checkpoint_latest")" = 4 ] || fail "$b: the run did not resume to step 4"
    echo "$b: stale temporaries removed, the run resumed to step 4"
done
