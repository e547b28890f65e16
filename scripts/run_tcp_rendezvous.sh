#!/usr/bin/env bash
# Data-parallel training over several machines without MPI: run this script once on every machine; it
# starts one trainer process per GPU there, and the processes find each other through rank 0's TCP port
# (the NCCL id is handed over by llmc/rendezvous.h).
#
#   on machine k (k = 0 .. NUM_NODES-1):
#   NODE_RANK=k NUM_NODES=2 GPUS_PER_NODE=8 SERVER=10.0.0.1 scripts/run_tcp_rendezvous.sh [trainer flags...]
#
# Starts, for local GPU g = 0 .. GPUS_PER_NODE-1 (process rank r = NODE_RANK * GPUS_PER_NODE + g):
#   $TRAINER -pi tcp -ps $SERVER -pn <NUM_NODES * GPUS_PER_NODE> -pr r -pg $GPUS_PER_NODE -z $ZERO_STAGE [flags...]
# The trainer's flags: -pi init method (mpi | tcp | fs), -ps rank 0's address host[:port] (port 12345 by
# default), -pf shared directory (fs), -pn number of processes, -pr process rank, -pg GPUs per machine
# (the process uses GPU r % pg).
#
# Environment:
#   NODE_RANK      this machine's index, 0 on the machine whose address is SERVER (required)
#   NUM_NODES      machines (default 1)
#   GPUS_PER_NODE  processes per machine (default 8)
#   SERVER         address of machine 0 as the others reach it, host[:port] (required); its port must be free
#   ZERO_STAGE     0 or 1 (default 1)
#   TRAINER        default ./train_gpt2cu (no MPI needed)
#   LLMC_RENDEZVOUS_TIMEOUT_S  how long processes wait for each other at start-up (default 300 s)
# If one process on this machine fails, the script stops the others on this machine and exits non-zero;
# processes on other machines get an NCCL error or time out (the trainer's multi_gpu_wait) and stop too.
set -euo pipefail
TRAINER=${TRAINER:-./train_gpt2cu}
ZERO_STAGE=${ZERO_STAGE:-1}
NUM_NODES=${NUM_NODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
[ -n "${NODE_RANK:-}" ] || { echo "error: set NODE_RANK (this machine's index, 0..NUM_NODES-1)" >&2; exit 1; }
[ -n "${SERVER:-}" ] || { echo "error: set SERVER (address of machine 0, host[:port])" >&2; exit 1; }
if [ "$NODE_RANK" -lt 0 ] || [ "$NODE_RANK" -ge "$NUM_NODES" ]; then
    echo "error: NODE_RANK=$NODE_RANK is not in 0..$((NUM_NODES - 1))" >&2
    exit 1
fi
[ -x "$TRAINER" ] || { echo "error: trainer '$TRAINER' not found or not executable (make it first)" >&2; exit 1; }
NUM_PROCESSES=$((NUM_NODES * GPUS_PER_NODE))

pids=()
stop_all() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap 'stop_all; exit 130' INT TERM
for ((g = 0; g < GPUS_PER_NODE; g++)); do
    rank=$((NODE_RANK * GPUS_PER_NODE + g))
    echo "starting process $rank of $NUM_PROCESSES: $TRAINER -pi tcp -ps $SERVER -pn $NUM_PROCESSES -pr $rank -pg $GPUS_PER_NODE -z $ZERO_STAGE $*"
    "$TRAINER" -pi tcp -ps "$SERVER" -pn "$NUM_PROCESSES" -pr "$rank" -pg "$GPUS_PER_NODE" -z "$ZERO_STAGE" "$@" &
    pids+=($!)
done
# wait for every process (bash >= 5.1 for wait -n -p); the first failure stops the rest
status=0
remaining=("${pids[@]}")
while [ ${#remaining[@]} -gt 0 ]; do
    rc=0
    finished=""
    wait -n -p finished "${remaining[@]}" || rc=$?
    [ -n "$finished" ] || break # nothing left to wait for
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$rc
        echo "error: a trainer process on this machine exited with status $rc; stopping the others" >&2
        stop_all
    fi
    still=()
    for pid in "${remaining[@]}"; do
        if [ "$pid" != "$finished" ]; then still+=("$pid"); fi
    done
    remaining=("${still[@]}")
done
exit "$status"
