#!/usr/bin/env bash
# The CPU emulator's bf16 conversions against the CUDA toolkit's own (tests/test_emu_bf16.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build/emu/test_emu_bf16
./build/emu/test_emu_bf16
