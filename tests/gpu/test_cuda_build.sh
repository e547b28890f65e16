#!/usr/bin/env bash
# The GPU code builds without a GPU: every CUDA target (the trainers in BF16 and FP32, every kernel check,
# the NCCL check) compiles with zero warnings. Rebuilt from scratch (-B) each time, so warnings are seen
# even when the binaries are up to date. Needs the CUDA toolkit (nvcc, cuBLASLt, NCCL). Built for sm_90
# only, which halves the time: no source has code for one architecture only (no __CUDA_ARCH__ branch),
# so sm_80 compiles the same code (`make cuda` builds both).
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
[ -x "$NVCC" ] || { echo "error: nvcc not found at $NVCC: the CUDA toolkit is needed to check that the GPU code builds"; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if grep -rq __CUDA_ARCH__ llmc dev/cuda/*.cu train_gpt2.cu test_gpt2.cu; then
    echo "FAIL: a source has __CUDA_ARCH__ code: build every architecture here (drop CUDA_ARCHS below)"
    exit 1
fi
# A make of its own (MAKEFLAGS cleared: not a job of an outer `make -j`, whose jobserver it would otherwise
# share or warn about), two compiles at a time.
if ! MAKEFLAGS='' make -B -j2 cuda CUDA_ARCHS="-gencode arch=compute_90,code=sm_90" > "$log" 2>&1; then
    grep -iE "error" "$log" | head -20
    echo "FAIL: make cuda failed"
    exit 1
fi
# the compilers' diagnostics (nvcc, cicc, ptxas, gcc: "file:line: warning ...", "ptxas warning : ..."),
# not make's own messages
if grep -iE "warning" "$log" | grep -vE '^make(\[[0-9]+\])?: '; then
    echo "FAIL: the CUDA build printed warnings (above)"
    exit 1
fi
echo "make cuda: $(grep -c 'nvcc\|mpicxx\|g++' "$log") compiler invocations, 0 warnings, targets:"
MAKEFLAGS='' make -s -p cuda 2>/dev/null | sed -n 's/^CUDA_BINS := //p' | head -1
