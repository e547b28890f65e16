#!/usr/bin/env bash
# The CPU emulator's NCCL (dev/cuda/emu/include/nccl.h): collectives between forked processes through
# shared memory, compared bit for bit with a rank-order reference, and every failure (a dead, late or
# aborting peer, mismatched calls, bad buffers, a broken bootstrap) ending within seconds, not hanging.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX:-clang++}
BIN=build/test_emu_nccl
SOURCES=(tests/test_emu_nccl.cpp tests/test_common.h llmc/utils.h dev/cuda/emu/include/*.h)
stale=0
[ -x "$BIN" ] || stale=1
for f in "${SOURCES[@]}"; do [ "$f" -nt "$BIN" ] && stale=1; done
if [ "$stale" -eq 1 ]; then
    mkdir -p build
    "$CXX" -std=c++17 -O2 -Wall -Wextra -Idev/cuda/emu/include -I. tests/test_emu_nccl.cpp -o "$BIN" -lrt -pthread
fi
timeout 300 "$BIN"
