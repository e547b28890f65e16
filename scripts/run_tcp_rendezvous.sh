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
source "$(dirname "$0")/lib_launch_node.sh"
[ -n "${SERVER:-}" ] || { echo "error: set SERVER (address of machine 0, host[:port])" >&2; exit 1; }
launch_node -pi tcp -ps "$SERVER" -- "$@"
