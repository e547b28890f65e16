#!/usr/bin/env bash
# The CPU emulator's cuBLASLt and cuBLAS (dev/cuda/emu/include/cublasLt.h, cublas_v2.h) against a double-
# precision reference: every transpose, ld > rows, beta 0/1, every emulated epilogue in fp32 and bf16, the
# same bits for any thread count, the refusals' status codes, and llmc/matmul.cuh running on it. Built
# twice: floatX bf16 and (-DENABLE_FP32) fp32 for the matmul.cuh part.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX:-clang++}
SOURCES=(tests/test_emu_cublaslt.cpp tests/test_common.h llmc/*.h llmc/*.cuh dev/cuda/emu/include/*.h)
mkdir -p build
for precision in bf16 fp32; do
    BIN=build/test_emu_cublaslt
    DEFINES=""
    if [ "$precision" = fp32 ]; then
        BIN=build/test_emu_cublaslt_fp32
        DEFINES=-DENABLE_FP32
    fi
    stale=0
    [ -x "$BIN" ] || stale=1
    for f in "${SOURCES[@]}"; do [ "$f" -nt "$BIN" ] && stale=1; done
    if [ "$stale" -eq 1 ]; then
        # shellcheck disable=SC2086
        "$CXX" -std=c++17 -O2 -fopenmp -Wall -Wextra $DEFINES -Idev/cuda/emu/include -I. \
            tests/test_emu_cublaslt.cpp -o "$BIN"
    fi
    timeout 300 "$BIN"
done
