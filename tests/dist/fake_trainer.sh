#!/usr/bin/env bash
# fake_trainer.sh: stands in for train_gpt2cu in tests/dist/test_launch_scripts.sh. It reports the flags
# and the MPI rank it was started with; with -pi tcp / -pi fs it does the real rendezvous of
# llmc/rendezvous.h (build/tests/rendezvous_peer) with the flags it was given; FAKE_FAIL_RANK=r makes
# process r exit with status 3 at once.
set -euo pipefail
pi=mpi ps="" pf="" pn=1 pr=0 pg=0 z="" rest=()
while [ $# -gt 0 ]; do
    case "$1" in
    -pi) pi=$2 ;;
    -ps) ps=$2 ;;
    -pf) pf=$2 ;;
    -pn) pn=$2 ;;
    -pr) pr=$2 ;;
    -pg) pg=$2 ;;
    -z) z=$2 ;;
    *) rest+=("$1" "$2") ;;
    esac
    shift 2
done
rank=${OMPI_COMM_WORLD_RANK:-$pr}
if [ "${FAKE_FAIL_RANK:-}" = "$rank" ]; then
    echo "fake trainer rank $rank: failing on purpose" >&2
    exit 3
fi
case "$pi" in
mpi) echo "fake trainer: mpi rank $OMPI_COMM_WORLD_RANK of $OMPI_COMM_WORLD_SIZE, z=$z, flags: ${rest[*]}" ;;
tcp | fs) echo "fake trainer: process $pr of $pn uses GPU $((pr % pg))" ;;
esac
case "$pi" in
tcp) exec build/tests/rendezvous_peer tcp "$pr" "$pn" "$ps" 5 ;;
fs) exec build/tests/rendezvous_peer fs "$pr" "$pn" "$pf" 5 ;;
esac
