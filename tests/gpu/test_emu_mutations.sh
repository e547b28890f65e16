#!/usr/bin/env bash
# The CPU emulator of CUDA (dev/cuda/emu) must catch bugs planted in the real kernels. Each mutant is one
# small edit to a copy of llmc/ and dev/cuda/ (under build/emu/mutants/), built with clang++ against the
# emulator like `make emu` builds the checks; the dev/cuda check program built from it must FAIL, with the
# emulator's message or a failed check line. The unmutated check (`make emu`'s build of it) passes.
#   barrier:    block_reduce_sum's first __syncthreads removed (llmc/cuda_common.h; adamw_check's
#               global_norm_squared), and the __syncthreads after attention_forward_kernel loads a K/V tile
#               (llmc/attention.cuh; attention_check FP32 build): each for CUDA_EMU_SEED = 1..4, every seed
#               must catch it (NaN from the poisoned shared memory);
#   off by one: gelu_forward_kernel's bounds check i >= N -> i > N (a thread writes past the end: the
#               padding check), layernorm_backward_dinp_kernel reads mean[row + 1] (wrong dinp);
#   alignment:  a 128-bit load at d_in_out + i + 1 (gelu backward), a 128-bit store at out + i + 1 (gelu
#               forward): the emulator's alignment message;
#   opt-in:     attention_set_smem without its cudaFuncSetAttribute: the forward's 62,464 bytes of dynamic
#               shared memory (BF16, HS = 64) are over 48 KiB: the emulator's launch message.
# The barrier mutant of attention is checked in the FP32 build. In the BF16 build the K/V tiles are read by
# wmma loads only after a dozen warp barriers of the warp's own Q loads; a thread-by-thread random schedule
# lets every other warp load its part of the tile meanwhile, and it took the emulator's warp-greedy blocks
# (one warp runs ahead to its next __syncthreads) to catch it there (seeds 1..4, checked once by hand).
# shellcheck disable=SC2016 # the perl substitutions are single-quoted on purpose
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX=${CXX:-clang++}
dir=build/emu/mutants
rm -rf "$dir"
mkdir -p "$dir"
FLAGS=(-std=c++17 -O2 -g -fopenmp -w -Idev/cuda/emu/include -x c++)
LIBS=(-fopenmp -lm -lrt -pthread)

# the sources a check sees: its own copy of llmc/, dev/cuda/ and the references in tests/common/ (included as
# "llmc/...", "dev/cuda/...", "tests/common/...")
mkdir -p "$dir/original/dev/cuda" "$dir/original/tests"
cp -r llmc "$dir/original/"
cp -r tests/common "$dir/original/tests/"
cp dev/cuda/*.h dev/cuda/*.cuh dev/cuda/*_check.cu "$dir/original/dev/cuda/"

# a mutant tree: the original with one perl substitution applied to one file, which must change it; its
# check is built in the background (two builds at a time), from the tree's sources only, to tree/check
# (tree/check_fp32 with -DENABLE_FP32)
build_pids=()
mutant() { # name, file, perl substitution, check, [-DENABLE_FP32]
    local tree=$dir/$1 check=$4 bin=$dir/$1/$4
    cp -r "$dir/original" "$tree"
    perl -0pi -e "$3" "$tree/$2"
    if cmp -s "$dir/original/$2" "$tree/$2"; then
        echo "FAIL: the edit for mutant '$1' matched nothing in $2 (the source changed: update the mutant)"
        exit 1
    fi
    [ $# -gt 4 ] && bin=${bin}_fp32
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do sleep 0.2; done
    "$CXX" "${FLAGS[@]}" "${@:5}" -I"$tree" "$tree/dev/cuda/$check.cu" -o "$bin" "${LIBS[@]}" &
    build_pids+=($!)
}
wait_builds() {
    local pid
    for pid in "${build_pids[@]}"; do wait "$pid" || { echo "FAIL: a mutant did not build"; exit 1; }; done
}

run() { # seed, binary, args...: sets out and rc
    local seed=$1
    shift
    set +e
    out=$(CUDA_EMU_SEED=$seed timeout 300 "$@" 2>&1)
    rc=$?
    set -e
}

expect_pass() { # binary, args...: the unmutated check
    run 1 "$@"
    if [ $rc -ne 0 ]; then
        echo "FAIL: unmutated $* exits $rc:"
        echo "$out" | tail -30
        exit 1
    fi
    echo "unmutated $(basename "$1")${2:+ ${*:2}}: passes"
}

expect_caught() { # name, seed, needle..., --, binary, args...: exits non-zero, output contains every needle
    local name=$1 seed=$2 needles=() n missing=""
    shift 2
    while [ "$1" != "--" ]; do
        needles+=("$1")
        shift
    done
    shift
    run "$seed" "$@"
    for n in "${needles[@]}"; do grep -qF -- "$n" <<<"$out" || missing+=" '$n'"; done
    if [ $rc -ne 0 ] && [ -z "$missing" ]; then
        echo "mutant '$name' (seed $seed) caught: $(grep -F -m1 -- "${needles[0]}" <<<"$out" | cut -c1-160)"
        return 0
    fi
    echo "mutant '$name' (seed $seed) NOT caught (exit $rc, output lacks$missing):"
    echo "$out" | tail -20
    return 1
}

failed=0

# the unmutated checks pass: `make emu`'s programs, built from the same sources as the mutants' originals
unmutated=(build/emu/adamw_check build/emu/gelu_check build/emu/layernorm_check build/emu/attention_check
           build/emu/attention_check_fp32)
make -s --no-print-directory "${unmutated[@]}"

# the mutants, each built from its own tree while the next one is made
# barrier: block_reduce_sum without the __syncthreads between writing the warp sums and reading them
mutant reduce_barrier llmc/cuda_common.h 's/(if \(lane == 0\) shared\[warp\] = val;\n)\s*__syncthreads\(\);\n/$1/' \
    adamw_check
# barrier: attention forward computes S = Q K^T without waiting for the other warps' K/V tile loads
mutant attention_barrier llmc/attention.cuh 's/(att_load_tile<HS>\(v_s, v_g, stride, k0, T\);\n)\s*__syncthreads\(\);\n/$1/' \
    attention_check -DENABLE_FP32
# off by one: the last thread of gelu_forward_kernel's grid (i == N) goes on and writes 16 bytes past out
mutant gelu_bounds llmc/gelu.cuh 's/(gelu_forward_kernel\(floatX\* out, const floatX\* inp, size_t N\) \{\n[^\n]*\n\s*)if \(i >= N\) return;/${1}if (i > N) return;/' \
    gelu_check
# off by one: layernorm_backward_dinp_kernel normalises row r with row r + 1's mean
mutant layernorm_index llmc/layernorm.cuh 's/\n    const float m = mean\[row\];/\n    const float m = mean[row + 1];/' \
    layernorm_check
# alignment: 128-bit load 2 bytes off (gelu backward) and 128-bit store 2 bytes off (gelu forward)
mutant gelu_load llmc/gelu.cuh 's/load128cs\(d_in_out \+ i\)/load128cs(d_in_out + i + 1)/' gelu_check
mutant gelu_store llmc/gelu.cuh 's/store128\(out \+ i, o\)/store128(out + i + 1, o)/' gelu_check
# opt-in: attention's launchers without cudaFuncSetAttribute (the BF16 forward needs 62,464 bytes at HS = 64)
mutant attention_optin llmc/attention.cuh 's/\n[^\n]*cudaFuncSetAttribute\(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize[^\n]*//' \
    attention_check

# meanwhile, the unmutated checks
expect_pass build/emu/adamw_check
expect_pass build/emu/gelu_check
expect_pass build/emu/layernorm_check
expect_pass build/emu/attention_check --quick
expect_pass build/emu/attention_check_fp32 --quick
wait_builds

for seed in 1 2 3 4; do
    expect_caught "block_reduce_sum without its first __syncthreads" $seed "FAIL global_norm_squared" -- \
        "$dir/reduce_barrier/adamw_check" || failed=1
done
for seed in 1 2 3 4; do
    expect_caught "attention forward without the __syncthreads after the K/V loads (FP32)" $seed "shape(s) failed" -- \
        "$dir/attention_barrier/attention_check_fp32" --quick || failed=1
done
expect_caught "gelu_forward_kernel bounds check i > N" 1 \
    "kernel gelu_forward_kernel wrote 2 bytes past the end of the allocation of 272 bytes" -- \
    "$dir/gelu_bounds/gelu_check" || failed=1
expect_caught "layernorm_backward_dinp_kernel reads mean[row + 1]" 1 "FAIL layernorm_backward dinp (added)" -- \
    "$dir/layernorm_index/layernorm_check" || failed=1
expect_caught "gelu_backward_inplace_kernel load128cs(d_in_out + i + 1)" 1 "128-bit load of int4" \
    "is not 16-byte aligned" "in kernel gelu_backward_inplace_kernel" -- "$dir/gelu_load/gelu_check" || failed=1
expect_caught "gelu_forward_kernel store128(out + i + 1)" 1 "128-bit store of int4" "is not 16-byte aligned" \
    "in kernel gelu_forward_kernel" -- "$dir/gelu_store/gelu_check" || failed=1
expect_caught "attention_set_smem without cudaFuncSetAttribute" 1 \
    "launch of attention_forward_kernel<HS> with 62464 bytes of dynamic shared memory: over 49152 without cudaFuncSetAttribute" -- \
    "$dir/attention_optin/attention_check" --quick || failed=1

if [ $failed -ne 0 ]; then
    echo "some mutants were NOT caught"
    exit 1
fi
echo "every mutant caught"
