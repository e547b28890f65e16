#!/usr/bin/env bash
# test_gpt2.cu (the GPU trainer's test) on the CPU emulator: every kernel of the trainer runs, unchanged,
# against the PyTorch float64 reference (logits, loss, the 16 gradient tensors, 10 AdamW steps, with
# test_gpt2.cu's tolerances), and test_gpt2.cu's own checks: every recompute mode -r 0..3 bit-identical to
# -r 0, and resume (AdamW and 8-bit AdamW) bit-exact. The -r flag picks the mode compared with the
# reference; each run uses another scheduling seed, so thread and block orders differ between runs.
#   tiny (64-token vocabulary): FP32 build -r 0, BF16 build (bf16-rounded model) -r 3;
#   (GPT-2's 50257-token vocabulary, head size 128: dev/cuda/bringup.sh's rehearsal runs test_gpt2cu on its
#   gpt2v states in both builds, tests/gpu/test_bringup_rehearse.sh)
#   LoRA (train_gpt2.py --write-lora-state, rank 8): every target on a bf16 base, BF16 build -r 3 with all
#   checks (recompute modes and resume with the adapters); QLoRA's NF4 base in both builds (-q); and the
#   mutant alpha/r applied twice (MUTATION=lora_scale_twice), which must fail.
# Cost on 2 idle cores: about 34 s (tiny) and 22 s (LoRA) (measured 2026-12-02).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory build/emu/test_gpt2cu build/emu/test_gpt2fp32cu
make_reference_states gpu/tiny gpu/tiny_bf16 gpu/lora_tiny_bf16 gpu/lora_tiny_nf4 gpu/lora_tiny_nf4_bf16
s=build/test/gpu
run() { # label, seed, program, args...
    local label=$1 seed=$2
    shift 2
    echo "-- $label (CUDA_EMU_SEED=$seed)"
    local start
    start=$(date +%s)
    CUDA_EMU_SEED=$seed "$@"
    echo "   ($(($(date +%s) - start)) s)"
}
run "tiny, FP32 build, -r 0" 1 build/emu/test_gpt2fp32cu $s/tiny_model.bin $s/tiny_state.bin -r 0
run "tiny, BF16 build, -r 3" 2 build/emu/test_gpt2cu $s/tiny_bf16_model.bin $s/tiny_bf16_state.bin -r 3
run "LoRA, BF16 build, -r 3" 4 build/emu/test_gpt2cu $s/lora_tiny_bf16_model.bin $s/lora_tiny_bf16_state.bin -r 3
run "QLoRA, FP32 build, -r 2" 5 build/emu/test_gpt2fp32cu $s/lora_tiny_nf4_model.bin $s/lora_tiny_nf4_state.bin -r 2 -q
run "QLoRA, BF16 build, -r 0" 6 build/emu/test_gpt2cu $s/lora_tiny_nf4_bf16_model.bin $s/lora_tiny_nf4_bf16_state.bin -q
set +e
out=$(MUTATION=lora_scale_twice build/emu/test_gpt2cu $s/lora_tiny_bf16_model.bin $s/lora_tiny_bf16_state.bin -q 2>&1)
rc=$?
set -e
if [ $rc -eq 1 ] && grep -q "checks FAILED" <<<"$out"; then
    echo "mutant 'LoRA scale applied twice' caught: $(grep -c FAIL <<<"$out") failing checks"
else
    echo "mutant 'LoRA scale applied twice' NOT caught (exit $rc):"; echo "$out"; exit 1
fi
