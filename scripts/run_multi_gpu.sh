#!/usr/bin/env bash
# Data-parallel training on the GPUs of one machine: one process per GPU, started by mpirun, NCCL
# bootstrapped over MPI (the trainer's default -pi mpi).
#
#   scripts/run_multi_gpu.sh [trainer flags...]
#
# Launches:  mpirun -np $NGPU --bind-to none [--allow-run-as-root] $TRAINER -z $ZERO_STAGE [trainer flags...]
#
# Environment:
#   NGPU         processes = GPUs to use (default: every GPU nvidia-smi lists)
#   ZERO_STAGE   0 = plain data parallel (all-reduce), 1 = ZeRO-1 optimizer sharding (default 1)
#   TRAINER      the program (default ./train_gpt2cu; it must be built with -DUSE_MPI, else it refuses to
#                run as several processes). ./train_gpt2 runs the CPU trainer the same way (set NGPU).
#   MPIRUN_ARGS  extra mpirun arguments, e.g. "-x NCCL_DEBUG=INFO"
# Each process picks GPU <its rank among the processes of this node>. Any process that fails stops the
# whole job (mpirun, and MPI_Abort from the trainer's failure path) with a non-zero exit status.
set -euo pipefail
TRAINER=${TRAINER:-./train_gpt2cu}
ZERO_STAGE=${ZERO_STAGE:-1}
if [ -z "${NGPU:-}" ]; then
    command -v nvidia-smi >/dev/null || { echo "error: set NGPU (nvidia-smi not found to count GPUs)" >&2; exit 1; }
    NGPU=$(nvidia-smi -L | grep -c '^GPU')
fi
[ "$NGPU" -ge 1 ] || { echo "error: NGPU must be >= 1, got '$NGPU'" >&2; exit 1; }
[ -x "$TRAINER" ] || { echo "error: trainer '$TRAINER' not found or not executable (make it first)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "error: mpirun not found (install OpenMPI)" >&2; exit 1; }

MPIRUN=(mpirun -np "$NGPU" --bind-to none)
if [ "$(id -u)" -eq 0 ]; then MPIRUN+=(--allow-run-as-root); fi # OpenMPI refuses root without it
# shellcheck disable=SC2206 # MPIRUN_ARGS is a list of words on purpose
MPIRUN+=(${MPIRUN_ARGS:-})
echo "launching: ${MPIRUN[*]} $TRAINER -z $ZERO_STAGE $*"
exec "${MPIRUN[@]}" "$TRAINER" -z "$ZERO_STAGE" "$@"
