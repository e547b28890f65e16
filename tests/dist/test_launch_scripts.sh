#!/usr/bin/env bash
# The launch scripts in scripts/, with tests/dist/fake_trainer.sh in place of the GPU trainer:
#  - run_multi_gpu.sh and run_multi_node.sh (hostfile "localhost slots=3") start 3 MPI ranks, each given
#    -z 1 and the extra flags;
#  - run_tcp_rendezvous.sh and run_fs_rendezvous.sh, run once per "machine" (2 machines x 2 processes
#    here), pass -pi/-ps/-pf/-pn/-pr/-pg such that the 4 processes complete a real rendezvous;
#  - when one process fails, run_tcp_rendezvous.sh stops the others on its machine and exits non-zero at
#    once instead of waiting for the rendezvous timeout.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory build/tests/rendezvous_peer
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export TRAINER=tests/dist/fake_trainer.sh

expect() { # expect FILE TEXT
    if ! grep -qF -- "$2" "$1"; then
        cat "$1"
        echo "FAIL: '$2' not in the output"
        exit 1
    fi
}

require_mpirun
echo "run_multi_gpu.sh, NGPU=3:"
NGPU=3 timeout 60 bash scripts/run_multi_gpu.sh -b 4 >"$TMP/gpu.out" 2>&1 || { cat "$TMP/gpu.out"; exit 1; }
for r in 0 1 2; do expect "$TMP/gpu.out" "fake trainer: mpi rank $r of 3, z=1, flags: -b 4"; done
echo "run_multi_node.sh, hostfile 'localhost slots=3':"
echo "localhost slots=3" >"$TMP/hostfile"
HOSTFILE="$TMP/hostfile" GPUS_PER_NODE=3 ZERO_STAGE=0 timeout 60 bash scripts/run_multi_node.sh -b 4 \
    >"$TMP/node.out" 2>&1 || { cat "$TMP/node.out"; exit 1; }
for r in 0 1 2; do expect "$TMP/node.out" "fake trainer: mpi rank $r of 3, z=0, flags: -b 4"; done

export LLMC_RENDEZVOUS_TIMEOUT_S=30 NUM_NODES=2 GPUS_PER_NODE=2
PORT=$($PY tests/common/free_port.py)
echo "run_tcp_rendezvous.sh, 2 machines x 2 processes:"
NODE_RANK=1 SERVER="127.0.0.1:$PORT" timeout 60 bash scripts/run_tcp_rendezvous.sh >"$TMP/tcp1.out" 2>&1 &
node1=$!
NODE_RANK=0 SERVER="127.0.0.1:$PORT" timeout 60 bash scripts/run_tcp_rendezvous.sh >"$TMP/tcp0.out" 2>&1 ||
    { cat "$TMP/tcp0.out"; exit 1; }
wait "$node1" || { cat "$TMP/tcp1.out"; exit 1; }
expect "$TMP/tcp1.out" "-pi tcp -ps 127.0.0.1:$PORT -pn 4 -pr 3 -pg 2 -z 1"
expect "$TMP/tcp1.out" "fake trainer: process 3 of 4 uses GPU 1"
expect "$TMP/tcp0.out" "rank 1 of 4 (tcp): has rank 0's 128-byte id"
for r in 2 3; do expect "$TMP/tcp1.out" "rank $r of 4 (tcp): has rank 0's 128-byte id"; done

echo "run_fs_rendezvous.sh, 2 machines x 2 processes:"
mkdir "$TMP/shared"
NODE_RANK=1 FS_PATH="$TMP/shared" timeout 60 bash scripts/run_fs_rendezvous.sh >"$TMP/fs1.out" 2>&1 &
node1=$!
NODE_RANK=0 FS_PATH="$TMP/shared" timeout 60 bash scripts/run_fs_rendezvous.sh >"$TMP/fs0.out" 2>&1 ||
    { cat "$TMP/fs0.out"; exit 1; }
wait "$node1" || { cat "$TMP/fs1.out"; exit 1; }
expect "$TMP/fs1.out" "-pi fs -pf $TMP/shared -pn 4 -pr 2 -pg 2 -z 1"
for r in 2 3; do expect "$TMP/fs1.out" "rank $r of 4 (fs): has rank 0's 128-byte id"; done

echo "run_tcp_rendezvous.sh, process 1 fails at once:"
start=$(date +%s)
rc=0
NUM_NODES=1 NODE_RANK=0 SERVER="127.0.0.1:$PORT" FAKE_FAIL_RANK=1 timeout 60 bash scripts/run_tcp_rendezvous.sh \
    >"$TMP/fail.out" 2>&1 || rc=$?
elapsed=$(($(date +%s) - start))
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$elapsed" -ge 20 ]; then
    cat "$TMP/fail.out"
    echo "FAIL: exit status $rc after $elapsed s (expected non-zero, well before the 30 s rendezvous timeout)"
    exit 1
fi
expect "$TMP/fail.out" "exited with status 3; stopping the others"
echo "  exit status $rc after $elapsed s"
echo "OK test_launch_scripts.sh"
