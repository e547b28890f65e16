#!/usr/bin/env bash
# The CPU emulator of CUDA (dev/cuda/emu) enforces the rules in cuda_runtime.h's top comment and passes
# correct code: tests/test_emu_rules.cu, one kernel per broken rule in a forked child that must stop with
# the emulator's message, correct kernels that must pass, and schedule checks that re-run the program with
# CUDA_EMU_SEED=1..8 (a missing __syncthreads and an inter-block dependency must show). Built with clang++
# (the emulator needs it: g++ does not put template __shared__ statics in the poisoned section).
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX:-clang++}
BIN=build/emu/test_emu_rules
SOURCES=(tests/test_emu_rules.cu tests/test_common.h llmc/cuda_common.h llmc/utils.h dev/cuda/emu/include/*.h)
stale=0
[ -x "$BIN" ] || stale=1
for f in "${SOURCES[@]}"; do [ "$f" -nt "$BIN" ] && stale=1; done
if [ "$stale" -eq 1 ]; then
    mkdir -p build/emu
    "$CXX" -std=c++17 -O2 -g -fopenmp -Wall -Wextra -Idev/cuda/emu/include -I. -x c++ tests/test_emu_rules.cu \
        -o "$BIN" -fopenmp -lm -lrt -pthread
fi
timeout 120 "$BIN"
