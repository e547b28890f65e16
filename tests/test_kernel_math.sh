#!/usr/bin/env bash
# The GPU kernels' scalar math (llmc/kernel_math.h) and the MFU table (llmc/mfu.h), on the CPU:
# bf16 rounding (nearest-even and stochastic), the counter hash, GELU, the classifier's online softmax,
# the LayerNorm backward formula and the AdamW step, each against a double-precision reference.
set -euo pipefail
make --no-print-directory tests/test_kernel_math >/dev/null
./tests/test_kernel_math
