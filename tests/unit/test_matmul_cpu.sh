#!/usr/bin/env bash
# test_matmul_cpu: the CPU matmul against its double reference (build/tests/test_matmul_cpu), then planted
# bugs in llmc/matmul_cpu.h that the program must FAIL: the last k of every K block dropped from the
# micro-kernel, the A packed once for the call read at its first K block for every K block, and each work
# item taking one panel of the next (a panel computed twice: with accumulate, its columns of C get the
# product twice).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory build/tests/test_matmul_cpu
build/tests/test_matmul_cpu
mutant() { header_mutant "matmul_cpu/$1" llmc/matmul_cpu.h "$2" tests/unit/test_matmul_cpu.cpp; }
mutant last_k_dropped 's/for (int k = 0; k < kc; k++, a += MR, b += NR)/for (int k = 0; k + 1 < kc; k++, a += MR, b += NR)/'
mutant shared_a_first_k_block 's/a_shared.data() + ((size_t)mb \* kblocks + k0 \/ KC) \* mc_max \* KC/a_shared.data() + ((size_t)mb * kblocks) * mc_max * KC/'
mutant items_overlap 's/s1 = std::min(panels, s0 + NCHUNK);/s1 = std::min(panels, s0 + NCHUNK + 1);/'
echo "test_matmul_cpu: the kernel and 3 planted bugs checked"
