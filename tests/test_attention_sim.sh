#!/usr/bin/env bash
# The CUDA kernels of llmc/attention.cuh, their own code, simulated on the CPU (one thread per CUDA
# thread, host WMMA) in both builds and compared with naive double-precision attention.
set -euo pipefail
cd "$(dirname "$0")/.."
./build/attention_sim_fp32
./build/attention_sim_bf16
