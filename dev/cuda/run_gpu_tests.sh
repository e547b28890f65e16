#!/usr/bin/env bash
# GPU tests of the trainer: test_gpt2cu (BF16) and test_gpt2fp32cu (FP32) against the PyTorch reference,
# on two models, in every recompute mode (each run also checks that all -r modes give the bits of -r 0
# and that save/resume is bit-exact; see test_gpt2.cu). Needs a GPU, so it is NOT run by `make test`.
#
#   dev/cuda/run_gpu_tests.sh            build, make the reference states if missing, run everything
#   SKIP_BUILD=1 dev/cuda/run_gpu_tests.sh   (binaries and build/test/gpu/ states already there, e.g. copied
#                                          to a GPU machine without torch)
#
# The flash attention kernels need head size 64 or 128, so these states are not tests/lib.sh's (head sizes
# 16 and 32) but the same two kinds with C/NH = 64 and 128:
#   tiny   V=64 (Vp=128), L=2, NH=2, C=128 (HS=64), B=4, T=32 (shorter than one attention tile), random tokens
#   gpt2v  GPT-2's vocabulary (Vp=50304), L=2, NH=1, C=128 (HS=128), B=4, T=64, Tiny Shakespeare tokens
# Each has an fp32 model for the FP32 build and a bf16-rounded one (--round-to-bf16 --model-dtype bf16) for
# the BF16 build, so both start from weights they represent exactly.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
DIR=build/test/gpu

if [ -z "${SKIP_BUILD:-}" ]; then
    make -s test_gpt2cu test_gpt2fp32cu
    mkdir -p "$DIR"
    tiny="--vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 -B 4 -T 32"
    gpt2v="--n-layer 2 --n-head 1 --n-embd 128 --block-size 64 -B 4 -T 64 --tokens data/tinyshakespeare/tiny_shakespeare_val.bin"
    for name in tiny gpt2v; do
        args=${!name}
        if [ "$name" = gpt2v ]; then make -s data; fi
        if [ ! "$DIR/${name}_state.bin" -nt train_gpt2.py ]; then
            $PY train_gpt2.py $args --write-model "$DIR/${name}_model.bin" --write-state "$DIR/${name}_state.bin" >/dev/null
        fi
        if [ ! "$DIR/${name}_state_bf16.bin" -nt train_gpt2.py ]; then
            $PY train_gpt2.py $args --round-to-bf16 --model-dtype bf16 --write-model "$DIR/${name}_model_bf16.bin" \
                --write-state "$DIR/${name}_state_bf16.bin" >/dev/null
        fi
    done
fi

failed=0
for name in tiny gpt2v; do
    for r in 0 1 2 3; do
        echo "=== FP32 build, $name, -r $r"
        ./test_gpt2fp32cu "$DIR/${name}_model.bin" "$DIR/${name}_state.bin" -r $r || failed=$((failed + 1))
        echo "=== BF16 build, $name, -r $r"
        ./test_gpt2cu "$DIR/${name}_model_bf16.bin" "$DIR/${name}_state_bf16.bin" -r $r || failed=$((failed + 1))
    done
done
echo "$failed GPU test runs failed"
[ "$failed" -eq 0 ]
