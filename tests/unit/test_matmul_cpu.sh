#!/usr/bin/env bash
# test_matmul_cpu: the CPU matmul against its double reference (build/tests/test_matmul_cpu), then planted
# bugs in llmc/matmul_cpu.h that the program must FAIL: the last k of every K block dropped from the
# micro-kernel, and each work item taking one panel of the next (a panel computed twice: with accumulate,
# its columns of C get the product twice).
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s --no-print-directory build/tests/test_matmul_cpu
build/tests/test_matmul_cpu
dir=build/mutants/matmul_cpu
CXX=${CXX:-g++}
mutant() { # name, sed expression
    mkdir -p "$dir/$1/llmc"
    sed "$2" llmc/matmul_cpu.h >"$dir/$1/llmc/matmul_cpu.h"
    if cmp -s llmc/matmul_cpu.h "$dir/$1/llmc/matmul_cpu.h"; then
        echo "the sed for mutant '$1' matched nothing"
        exit 1
    fi
    $CXX -O2 -march=native -std=c++17 -fopenmp -Wno-psabi -I"$dir/$1" -I. tests/unit/test_matmul_cpu.cpp \
        -o "$dir/$1/test_matmul_cpu"
    set +e
    out=$(OMP_NUM_THREADS=2 "$dir/$1/test_matmul_cpu" 2>&1)
    rc=$?
    set -e
    if [ $rc -eq 1 ] && grep -q "checks FAILED" <<<"$out"; then
        echo "mutant '$1' caught: $(grep -c '^FAIL' <<<"$out") failing checks"
    else
        echo "mutant '$1' NOT caught (exit $rc):"
        echo "$out"
        exit 1
    fi
}
mutant last_k_dropped 's/for (int k = 0; k < kc; k++, a += MR, b += NR)/for (int k = 0; k + 1 < kc; k++, a += MR, b += NR)/'
mutant items_overlap 's/s1 = std::min(panels, s0 + NCHUNK);/s1 = std::min(panels, s0 + NCHUNK + 1);/'
echo "test_matmul_cpu: the kernel and 2 planted bugs checked"
