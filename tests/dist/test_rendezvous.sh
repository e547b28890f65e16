#!/usr/bin/env bash
# llmc/rendezvous.h: the MPI-free bootstrap of the NCCL communicator (-pi tcp / -pi fs), with processes
# on this machine standing in for nodes.
#  - tcp, 4 processes, rank 0 started last: everyone receives rank 0's id;
#  - fs, 4 processes: a first run leaves its id file behind; in a second run the other ranks start before
#    rank 0 and must not take the stale id;
#  - failures end with a clear message within the (shortened) timeout, never a hang: a missing rank (tcp
#    and fs), no rank 0 at all, two processes with the same -pr, disagreeing -pn.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
BIN=build/tests/rendezvous_peer
make -s --no-print-directory $BIN
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PORT=$($PY tests/common/free_port.py)

# start NAME ARGS...: one process in the background, its output in $TMP/NAME.out
pids=()
names=()
start() {
    local name=$1
    shift
    timeout 30 "$BIN" "$@" >"$TMP/$name.out" 2>&1 &
    pids+=($!)
    names+=("$name")
}
# finish EXPECT: wait for every started process; EXPECT is "ok" (all exit 0) or "fail" (all exit non-zero,
# none by the timeout)
finish() {
    local expect=$1 i rc
    for i in "${!pids[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        if [ "$rc" -eq 124 ] || { [ "$expect" = ok ] && [ "$rc" -ne 0 ]; } || { [ "$expect" = fail ] && [ "$rc" -eq 0 ]; }; then
            cat "$TMP/${names[$i]}.out"
            echo "FAIL: ${names[$i]} exited with $rc, expected $expect (124 = hung until the timeout)"
            exit 1
        fi
    done
    pids=()
    names=()
}
# expect_text NAME TEXT: the process's output contains TEXT
expect_text() {
    if ! grep -qF "$2" "$TMP/$1.out"; then
        cat "$TMP/$1.out"
        echo "FAIL: the output of $1 does not contain '$2'"
        exit 1
    fi
    echo "  $1: $(grep -F "$2" "$TMP/$1.out" | head -1)"
}

export LLMC_RENDEZVOUS_TIMEOUT_S=20
echo "tcp, 4 processes, rank 0 last:"
for r in 1 2 3; do start "tcp$r" tcp $r 4 "127.0.0.1:$PORT" 11; done
sleep 0.5
start tcp0 tcp 0 4 "127.0.0.1:$PORT" 11
finish ok
for r in 1 2 3; do expect_text "tcp$r" "rank $r of 4 (tcp): has rank 0's 128-byte id"; done

echo "fs, 4 processes, twice; in the second run rank 0 starts last, after the first run's id file:"
mkdir "$TMP/shared"
for r in 0 1 2 3; do start "fsA$r" fs $r 4 "$TMP/shared" 21; done
finish ok
[ -f "$TMP/shared/ncclUniqueId.bin" ] || { echo "FAIL: the first run left no id file to be stale"; exit 1; }
for r in 1 2 3; do start "fsB$r" fs $r 4 "$TMP/shared" 22; done
sleep 1
start fsB0 fs 0 4 "$TMP/shared" 22
finish ok
for r in 1 2 3; do expect_text "fsB$r" "rank $r of 4 (fs): has rank 0's 128-byte id"; done

export LLMC_RENDEZVOUS_TIMEOUT_S=2
echo "tcp, rank 2 of 3 missing:"
start miss0 tcp 0 3 "127.0.0.1:$PORT" 31
start miss1 tcp 1 3 "127.0.0.1:$PORT" 31
finish fail
expect_text miss0 "process rank(s) 2 of 3 never connected"
expect_text miss1 "error: rendezvous: process rank 1"

echo "tcp, no rank 0:"
start alone1 tcp 1 2 "127.0.0.1:$PORT" 32
finish fail
expect_text alone1 "could not reach rank 0 at 127.0.0.1:$PORT"

echo "tcp, two processes with -pr 1:"
start dup0 tcp 0 3 "127.0.0.1:$PORT" 33
start dup1 tcp 1 3 "127.0.0.1:$PORT" 33
start dup1b tcp 1 3 "127.0.0.1:$PORT" 33
finish fail
expect_text dup0 "two processes connected as rank 1"

echo "tcp, -pn disagrees:"
start pn0 tcp 0 2 "127.0.0.1:$PORT" 34
start pn1 tcp 1 3 "127.0.0.1:$PORT" 34
finish fail
expect_text pn0 "process rank 1 was started with -pn 3, rank 0 with -pn 2"

echo "fs, rank 2 of 3 missing:"
mkdir "$TMP/shared2"
start fsmiss0 fs 0 3 "$TMP/shared2" 35
start fsmiss1 fs 1 3 "$TMP/shared2" 35
finish fail
expect_text fsmiss0 "process rank(s) 2 of 3 never checked in"
expect_text fsmiss1 "process rank 1 waited 2 s for rank 0"

echo "single process: no rendezvous at all"
start single0 tcp 0 1 "" 36
finish ok
echo "OK test_rendezvous.sh"
