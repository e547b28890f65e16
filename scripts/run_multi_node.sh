#!/usr/bin/env bash
# Data-parallel training over several machines with mpirun and a hostfile: one process per GPU, NCCL
# bootstrapped over MPI (the trainer's default -pi mpi).
#
#   HOSTFILE=hosts.txt GPUS_PER_NODE=8 scripts/run_multi_node.sh [trainer flags...]
#
# The hostfile lists one machine per line with its number of GPUs as slots:
#     node0 slots=8
#     node1 slots=8
# Launches:
#   mpirun -np <sum of slots> --hostfile $HOSTFILE --map-by ppr:$GPUS_PER_NODE:node --bind-to none
#          -x PATH -x LD_LIBRARY_PATH -x NCCL_* [--allow-run-as-root] $TRAINER -z $ZERO_STAGE [trainer flags...]
#
# Environment:
#   HOSTFILE       the hostfile (default ./hostfile)
#   GPUS_PER_NODE  processes per machine (default 8)
#   ZERO_STAGE     0 or 1 (default 1)
#   TRAINER        default ./train_gpt2cu, built with -DUSE_MPI; the same path must exist on every machine,
#                  and the data and output directories given in the flags must be valid on every machine
#   MPIRUN_ARGS    extra mpirun arguments
#   NCCL_*         any NCCL variable set here (e.g. NCCL_SOCKET_IFNAME=eth0, NCCL_IB_HCA, NCCL_DEBUG=INFO) is
#                  passed to every process
# Needs password-less ssh from this machine to every machine in the hostfile (mpirun starts them over ssh).
set -euo pipefail
HOSTFILE=${HOSTFILE:-./hostfile}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TRAINER=${TRAINER:-./train_gpt2cu}
ZERO_STAGE=${ZERO_STAGE:-1}
[ -f "$HOSTFILE" ] || { echo "error: hostfile '$HOSTFILE' not found (set HOSTFILE)" >&2; exit 1; }
[ -x "$TRAINER" ] || { echo "error: trainer '$TRAINER' not found or not executable (make it first)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "error: mpirun not found (install OpenMPI)" >&2; exit 1; }

# processes = sum of the slots (a line without slots= counts as GPUS_PER_NODE)
NP=$(awk -v per="$GPUS_PER_NODE" '
    /^[[:space:]]*(#|$)/ { next }
    { n = per; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, kv, "="); n = kv[2] } total += n }
    END { print total + 0 }' "$HOSTFILE")
[ "$NP" -ge 1 ] || { echo "error: hostfile '$HOSTFILE' lists no machine" >&2; exit 1; }

MPIRUN=(mpirun -np "$NP" --hostfile "$HOSTFILE" --map-by "ppr:$GPUS_PER_NODE:node" --bind-to none -x PATH
    -x LD_LIBRARY_PATH)
for var in $(compgen -e | grep '^NCCL_' || true); do MPIRUN+=(-x "$var"); done
if [ "$(id -u)" -eq 0 ]; then MPIRUN+=(--allow-run-as-root); fi
# shellcheck disable=SC2206 # MPIRUN_ARGS is a list of words on purpose
MPIRUN+=(${MPIRUN_ARGS:-})
echo "launching $NP processes: ${MPIRUN[*]} $TRAINER -z $ZERO_STAGE $*"
exec "${MPIRUN[@]}" "$TRAINER" -z "$ZERO_STAGE" "$@"
