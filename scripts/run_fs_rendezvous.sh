#!/usr/bin/env bash
# Data-parallel training over several machines without MPI: run this script once on every machine; it
# starts one trainer process per GPU there, and the processes find each other through a directory that
# every machine shares (the NCCL id is handed over as a file by llmc/rendezvous.h; files left there by an
# earlier run are recognised as such and ignored, so the directory may be reused).
#
#   on machine k (k = 0 .. NUM_NODES-1):
#   NODE_RANK=k NUM_NODES=2 GPUS_PER_NODE=8 FS_PATH=/shared/run1 scripts/run_fs_rendezvous.sh [trainer flags...]
#
# Starts, for local GPU g = 0 .. GPUS_PER_NODE-1 (process rank r = NODE_RANK * GPUS_PER_NODE + g):
#   $TRAINER -pi fs -pf $FS_PATH -pn <NUM_NODES * GPUS_PER_NODE> -pr r -pg $GPUS_PER_NODE -z $ZERO_STAGE [flags...]
# The trainer's flags: -pi init method (mpi | tcp | fs), -ps rank 0's address host[:port] (port 12345 by
# default), -pf shared directory (fs), -pn number of processes, -pr process rank, -pg GPUs per machine
# (the process uses GPU r % pg).
#
# Environment:
#   NODE_RANK      this machine's index, 0..NUM_NODES-1 (required)
#   NUM_NODES      machines (default 1)
#   GPUS_PER_NODE  processes per machine (default 8)
#   FS_PATH        a directory on a file system that every machine mounts (NFS, Lustre...) (required)
#   ZERO_STAGE     0 or 1 (default 1)
#   TRAINER        default ./train_gpt2cu (no MPI needed)
#   LLMC_RENDEZVOUS_TIMEOUT_S  how long processes wait for each other at start-up (default 300 s)
# If one process on this machine fails, the script stops the others on this machine and exits non-zero;
# processes on other machines get an NCCL error or time out (the trainer's multi_gpu_wait) and stop too.
set -euo pipefail
source "$(dirname "$0")/lib_launch_node.sh"
[ -n "${FS_PATH:-}" ] || { echo "error: set FS_PATH (a directory shared by every machine)" >&2; exit 1; }
[ -d "$FS_PATH" ] || { echo "error: FS_PATH '$FS_PATH' is not a directory" >&2; exit 1; }
launch_node -pi fs -pf "$FS_PATH" -- "$@"
