#!/usr/bin/env bash
# GPU tests of the trainer: test_gpt2cu (BF16) and test_gpt2fp32cu (FP32) against the PyTorch reference,
# on two models, in every recompute mode (each run also checks that all -r modes give the bits of -r 0
# and that save/resume is bit-exact; see test_gpt2.cu). Needs a GPU, so it is NOT run by `make test`.
#
#   dev/cuda/run_gpu_tests.sh            build, make the reference states if missing (with the first of
#                                        $PYTHON, python3, /usr/bin/python3 that imports torch), run everything
#   SKIP_BUILD=1 dev/cuda/run_gpu_tests.sh   (binaries and build/test/gpu/ states already there, e.g. copied
#                                          to a GPU machine without torch)
#
# The flash attention kernels need head size 64 or 128, so the states (the Makefile's gpu_reference_states,
# build/test/gpu/, made by train_gpt2.py) have C/NH = 64 and 128:
#   tiny   V=64 (Vp=128), L=2, NH=2, C=128 (HS=64), B=4, T=32 (shorter than one attention tile), random tokens
#   gpt2v  GPT-2's vocabulary (Vp=50304), L=2, NH=1, C=128 (HS=128), B=4, T=64, Tiny Shakespeare tokens
# Each has an fp32 model for the FP32 build and a bf16-rounded one (<name>_bf16: --round-to-bf16
# --model-dtype bf16) for the BF16 build, so both start from weights they represent exactly.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=build/test/gpu

if [ -z "${SKIP_BUILD:-}" ]; then
    # the Python that imports torch and numpy makes the states: on a GPU machine that is often the python3
    # on PATH (a venv or conda), not Debian's /usr/bin/python3
    py=""
    for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null && "$candidate" scripts/missing_python_modules.py torch numpy >/dev/null; then
            py=$candidate
            break
        fi
    done
    [ -n "$py" ] || { echo "error: no Python here imports torch and numpy (tried \$PYTHON, python3, /usr/bin/python3)"; exit 1; }
    echo "reference states made with $py"
    make -s PYTHON="$py" test_gpt2cu test_gpt2fp32cu gpu_reference_states
fi

failed=0
for name in tiny gpt2v; do
    for r in 0 1 2 3; do
        echo "=== FP32 build, $name, -r $r"
        ./test_gpt2fp32cu "$DIR/${name}_model.bin" "$DIR/${name}_state.bin" -r $r || failed=$((failed + 1))
        echo "=== BF16 build, $name, -r $r"
        ./test_gpt2cu "$DIR/${name}_bf16_model.bin" "$DIR/${name}_bf16_state.bin" -r $r || failed=$((failed + 1))
    done
done
echo "$failed GPU test runs failed"
[ "$failed" -eq 0 ]
