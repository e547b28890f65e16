#!/usr/bin/env bash
# llmc/mpi_cpu.h: the CPU trainer's process group.
#  1. the single-process fallback (built without MPI) passes the collectives test, and refuses to run
#     when a launcher says there are several processes;
#  2. under mpirun with 2 and 4 ranks: reduce-scatter + all-gather == all-reduce, mean, broadcast,
#     in-place variants, chunked transfers (small artificial chunk limits), scalar sums;
#  3. failures never hang: the last rank fails while the others wait in an all-reduce, and the whole
#     mpirun must exit non-zero (not by the 60 s timeout) with a message naming the rank and the cause:
#     a. pg_fail()                                          -> MPI_Abort
#     b. utils.h fail() after pg_install_abort_on_exit(), with mpirun's own kill-on-non-zero-exit turned
#        off, so only the atexit hook can stop the job
#     c. utils.h fail() with no hook: relies on mpirun killing the job (its default; checked here because
#        utils.h's comment states it)
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
single=build/tests/test_mpi_collectives mpi=build/tests/test_mpi_collectives_mpi
make -s --no-print-directory $single

$single
echo "single-process build launched as 2 processes must refuse:"
if out=$(OMPI_COMM_WORLD_SIZE=2 $single 2>&1); then
    echo "FAIL: the single-process build ran although OMPI_COMM_WORLD_SIZE=2"
    exit 1
fi
echo "$out"
grep -q "built without MPI" <<<"$out" || { echo "FAIL: the refusal does not say why"; exit 1; }

require_mpirun
make -s --no-print-directory $mpi
for np in 2 4; do
    timeout 60 "${MPIRUN[@]}" -np "$np" $mpi
done

# run_failure NAME NP EXPECTED_TEXT [ENV=VALUE...]: the job must fail quickly, naming the rank and cause
run_failure() {
    local mode=$1 np=$2 expected=$3
    shift 3
    local start rc=0 out
    start=$(date +%s)
    out=$(env "$@" timeout 60 "${MPIRUN[@]}" -np "$np" $mpi "$mode" 2>&1) || rc=$?
    local elapsed=$(($(date +%s) - start))
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "$out"
        echo "FAIL: $mode with $np ranks: exit status $rc after ${elapsed} s (0 = no failure seen, 124 = hung)"
        exit 1
    fi
    if ! grep -qF "$expected" <<<"$out"; then
        echo "$out"
        echo "FAIL: $mode: the output does not contain '$expected'"
        exit 1
    fi
    echo "$mode with $np ranks: exit status $rc after ${elapsed} s, message: $(grep -F "$expected" <<<"$out" | head -1)"
}

run_failure fail-pg 4 "error: [rank 3 of 4] injected failure (cause: test of pg_fail)" X=1
run_failure fail-utils 2 "error: [rank 1 of 2] exiting without process_group_finalize" \
    OMPI_MCA_orte_abort_on_non_zero_status=0
run_failure fail-utils 2 "error: [rank 1 of 2] injected failure (cause: test of utils.h fail() in fail-utils mode)" \
    OMPI_MCA_orte_abort_on_non_zero_status=0
run_failure fail-plain 2 "error: [rank 1 of 2] injected failure (cause: test of utils.h fail() in fail-plain mode)" X=1
echo "OK test_mpi_collectives.sh"
