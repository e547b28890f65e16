#!/usr/bin/env bash
# The CPU trainer against the PyTorch reference (train_gpt2.py, float64): logits, loss, every gradient
# tensor and 10 AdamW steps, on a tiny model with a small vocabulary and on a GPT-2-vocabulary model.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory test_gpt2
make_reference_states tiny tiny_bf16 gpt2v
./test_gpt2 build/test/tiny_model.bin build/test/tiny_state.bin
./test_gpt2 build/test/gpt2v_model.bin build/test/gpt2v_state.bin
# the bf16 (version 5) checkpoint loads to the same weights rounded to bf16: its own reference state
./test_gpt2 build/test/tiny_bf16_model.bin build/test/tiny_bf16_state.bin
