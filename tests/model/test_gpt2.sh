#!/usr/bin/env bash
# The CPU trainer against the PyTorch reference (train_gpt2.py, float64): logits, loss, every gradient
# tensor and 10 AdamW steps, on a tiny model with a small vocabulary and on a GPT-2-vocabulary model; and
# LoRA fine-tuning of those models (fp32 and NF4 bases): the adapters' gradients and steps, B = 0 giving
# the base's logits bit for bit, the merged model file giving base + adapters' logits.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory test_gpt2
make_reference_states tiny tiny_bf16 gpt2v lora_tiny lora_tiny_nf4 lora_gpt2v_nf4
./test_gpt2 build/test/tiny_model.bin build/test/tiny_state.bin
./test_gpt2 build/test/gpt2v_model.bin build/test/gpt2v_state.bin
# the bf16 (version 5) checkpoint loads to the same weights rounded to bf16: its own reference state
./test_gpt2 build/test/tiny_bf16_model.bin build/test/tiny_bf16_state.bin
# LoRA on an fp32 base (every target), on an NF4 base (QLoRA, the default targets), and on a GPT-2-vocabulary
# NF4 base with rank 8 on every target
./test_gpt2 build/test/lora_tiny_model.bin build/test/lora_tiny_state.bin
./test_gpt2 build/test/lora_tiny_nf4_model.bin build/test/lora_tiny_nf4_state.bin
./test_gpt2 build/test/lora_gpt2v_nf4_model.bin build/test/lora_gpt2v_nf4_state.bin
