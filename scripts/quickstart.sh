#!/usr/bin/env bash
# The README's first command: install what is missing, prepare Tiny Shakespeare, build, and run the main
# job: the GPU trainer when an NVIDIA GPU and nvcc are present, otherwise the CPU trainer (a small GPT-2
# trained from scratch for a few minutes; it prints the losses, the val loss and samples).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
make -s data
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
    echo "quickstart: GPU found ($(nvidia-smi -L | head -1)); training d12 with the GPU trainer"
    make -s train_gpt2cu
    ./train_gpt2cu "$@"
else
    echo "quickstart: no GPU; training with the CPU trainer on $(nproc) cores"
    make -s train_gpt2
    ./train_gpt2 "$@"
fi
