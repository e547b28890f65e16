#!/usr/bin/env bash
# The GPU code builds without a GPU: every CUDA target (the trainers in BF16 and FP32, every kernel check,
# the NCCL check) compiles with zero warnings. Rebuilt from scratch (-B) each time, so warnings are seen
# even when the binaries are up to date. Needs the CUDA toolkit (nvcc, cuBLASLt, NCCL). Built for sm_90
# only, which halves the time: no source has code for one architecture only (no __CUDA_ARCH__ branch),
# so sm_80 compiles the same code (`make cuda` builds both). The default (multi-GPU: NCCL, MPI) build makes
# the programs whose code NCCL and MPI change (the trainers in both precisions, the NCCL checks; the trainers'
# tests include the same train_gpt2.cu, so they are built once, like the kernel checks, whose code is the
# same in both builds), in the bring-up pack (make bringup_pack: one
# GPU, NO_MULTI_GPU=1, sm_90a), which must also build warning-free, need neither libnccl nor libmpi at load
# time (its MANIFEST, from readelf) and stay under its size limit; and dev/cuda/bringup.sh in its GPU mode
# on this machine with no GPU, which must go through every step (each fails at once: no CUDA device) and
# print its table, so the GPU-only paths of the script (the pack's layout, the library lookup) run here.
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
# build_warning_free MAKE-ARGS...: a make of its own (MAKEFLAGS cleared: not a job of an outer `make -j`, whose
# jobserver it would otherwise share or warn about), two compiles at a time, its output in $log; fails on an
# error or on any of the compilers' diagnostics (nvcc, cicc, ptxas, gcc: "file:line: warning ...", "ptxas
# warning : ..."), not make's own messages
build_warning_free() {
    if ! MAKEFLAGS='' make -j2 "$@" > "$log" 2>&1; then
        grep -iE "error|FAIL" "$log" | head -20
        echo "FAIL: make $* failed"
        exit 1
    fi
    if grep -iE "warning" "$log" | grep -vE '^make(\[[0-9]+\])?: '; then
        echo "FAIL: make $* printed warnings (above)"
        exit 1
    fi
}
mapfile -t targets < <(MAKEFLAGS='' make -s -p cuda 2>/dev/null | sed -n 's/^CUDA_BINS := //p' | head -1 |
    tr ' ' '\n' | grep -E 'train_gpt2|nccl_check')
[ ${#targets[@]} -ge 3 ] || { echo "FAIL: expected the trainers and the NCCL check, got: ${targets[*]}"; exit 1; }
build_warning_free -B "${targets[@]}" CUDA_ARCH=90
echo "make (multi-GPU build): $(grep -c 'nvcc\|mpicxx\|g++' "$log") compiler invocations, 0 warnings: ${targets[*]}"

# the bring-up pack
rm -rf build/bringup
build_warning_free bringup_pack
sed -n '/^program/,$p' build/bringup/MANIFEST | grep -E "train_gpt2cu|test_gpt2cu|total"
# GPU mode without a GPU: every step must be listed in the table, the GPU ones failing
out=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$out"' EXIT
# (it fails, as it must here: its exit status is not the check. Its own gpt2v states, not the shared ones
# that make test builds first and the rehearsal finds: so train_gpt2.py's generation from the pack's args
# runs here, as on a device)
BRINGUP_STATE_DIR=$out/states bash dev/cuda/bringup.sh --budget 200 correct "$out" > "$log" 2>&1 || true
for row in "programs load  *ok" "test_gpt2cu bf16 tiny -r 0  *FAIL" "matmul_check_fp32  *FAIL" \
    "two identical runs"; do
    grep -qE "^$row" "$out/correct_table.txt" || { cat "$out/correct_table.txt"; echo "FAIL: no row '$row' in the GPU-mode table"; exit 1; }
done
echo "bringup.sh (GPU mode, no GPU here): $(grep -c . "$out/correct_table.txt") table lines, every step reached"
