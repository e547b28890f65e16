#!/usr/bin/env bash
# The reference test must catch wrong formulas. Mutants of the CPU trainer, each of which must make
# test_gpt2 FAIL its tolerance checks (not crash): a dropped bias, a transposed weight, a wrong GELU constant;
# and of LoRA: alpha/r applied twice, fresh B not zero, an NF4 base left in fp32.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory test_gpt2
make_reference_states tiny lora_tiny lora_tiny_nf4
dir=build/mutants
mkdir -p "$dir"
CXX=${CXX:-g++}
flags="-O2 -std=c++17 -fopenmp -I. -w -Wno-psabi"

expect_fail() { # name, binary, [env], [reference name: tiny]
    local name=$1 bin=$2 ref=${4:-tiny} out
    set +e
    out=$(env ${3:-} "$bin" "build/test/${ref}_model.bin" "build/test/${ref}_state.bin" 2>&1)
    local rc=$?
    set -e
    if [ $rc -eq 1 ] && grep -q "checks FAILED" <<<"$out"; then
        echo "mutant '$name' caught: $(grep -c FAIL <<<"$out") failing checks"
    else
        echo "mutant '$name' NOT caught (exit $rc):"; echo "$out"; exit 1
    fi
}

# 1. the qkv bias dropped from the forward pass
mkdir -p "$dir/nobias"
sed 's/la\.qkv, la\.ln1, lp\.qkvb, B, T, C, 3 \* C)/la.qkv, la.ln1, nullptr, B, T, C, 3 * C)/' train_gpt2.cpp \
    > "$dir/nobias/train_gpt2.cpp"
! cmp -s train_gpt2.cpp "$dir/nobias/train_gpt2.cpp" || { echo "sed for the bias mutant matched nothing"; exit 1; }
cp test_gpt2.cpp "$dir/nobias/"
$CXX $flags "$dir/nobias/test_gpt2.cpp" -o "$dir/nobias/test_gpt2" -lm
expect_fail "dropped qkv bias" "$dir/nobias/test_gpt2"

# 2. attprojw read transposed (the test's MUTATION hook transposes it after loading)
expect_fail "transposed attprojw" ./test_gpt2 MUTATION=transpose_attprojw

# 3. GELU's cubic coefficient 0.044715 -> 0.045
mkdir -p "$dir/gelu"
sed 's/0\.044715f/0.045f/g' train_gpt2.cpp > "$dir/gelu/train_gpt2.cpp"
! cmp -s train_gpt2.cpp "$dir/gelu/train_gpt2.cpp" || { echo "sed for the GELU mutant matched nothing"; exit 1; }
cp test_gpt2.cpp "$dir/gelu/"
$CXX $flags "$dir/gelu/test_gpt2.cpp" -o "$dir/gelu/test_gpt2" -lm
expect_fail "GELU constant 0.045" "$dir/gelu/test_gpt2"

# 4-6. LoRA (the test's MUTATION hooks): the scale alpha/r applied twice; fresh B drawn at random instead of
# zero (the B = 0 check sees the logits move); the state's NF4 base kept in fp32 (the reference dequantized)
expect_fail "LoRA scale applied twice" ./test_gpt2 MUTATION=lora_scale_twice lora_tiny
expect_fail "LoRA B not zero at init" ./test_gpt2 MUTATION=lora_b_random lora_tiny
expect_fail "NF4 base ignored" ./test_gpt2 MUTATION=nf4_ignored lora_tiny_nf4
