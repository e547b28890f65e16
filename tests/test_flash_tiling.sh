#!/usr/bin/env bash
# The flash attention algorithm of llmc/attention.cuh (tiling, online softmax, three-pass backward),
# emulated on the CPU in float and compared with naive double-precision attention; includes mutation
# checks that must fail. (The kernels themselves are checked on a GPU by dev/cuda/attention_check.)
set -euo pipefail
cd "$(dirname "$0")/.."
./tests/test_flash_tiling
