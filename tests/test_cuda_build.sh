#!/usr/bin/env bash
# The GPU code builds without a GPU: every CUDA target (the trainers in BF16 and FP32, every kernel check,
# the NCCL check) compiles for sm_80 and sm_90 with zero warnings. Rebuilt from scratch (-B) each time,
# so warnings are seen even when the binaries are up to date. Needs the CUDA toolkit (nvcc, cuBLASLt, NCCL).
set -euo pipefail
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
[ -x "$NVCC" ] || { echo "error: nvcc not found at $NVCC: the CUDA toolkit is needed to check that the GPU code builds"; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! make -B -j2 cuda > "$log" 2>&1; then
    grep -iE "error" "$log" | head -20
    echo "FAIL: make cuda failed"
    exit 1
fi
if grep -iE "warning" "$log"; then
    echo "FAIL: the CUDA build printed warnings (above)"
    exit 1
fi
echo "make cuda: $(grep -c 'nvcc\|mpicxx\|g++' "$log") compiler invocations, 0 warnings, targets:"
make -s -p cuda 2>/dev/null | sed -n 's/^CUDA_BINS := //p' | head -1
