# Shared by the test scripts: the Python that has torch, and the reference files made by train_gpt2.py.
PY=/usr/bin/python3
if ! "$PY" -c "import torch, numpy" 2>/dev/null; then
    echo "error: $PY cannot import torch and numpy: install python3-torch python3-numpy (apt-get)" >&2
    exit 1
fi

# A model and debug state made by train_gpt2.py in DIR with the configuration CONFIG, in fp32
# (tiny_model.bin, tiny_state.bin) and rounded to bf16 (tiny_model_bf16.bin, tiny_state_bf16.bin); each
# remade when missing or older than train_gpt2.py.
make_tiny_states() { # DIR, CONFIG
    local dir=$1 config=$2
    mkdir -p "$dir"
    if [ ! "$dir/tiny_state.bin" -nt train_gpt2.py ]; then
        $PY train_gpt2.py $config --write-model "$dir/tiny_model.bin" --write-state "$dir/tiny_state.bin" >/dev/null
    fi
    if [ ! "$dir/tiny_state_bf16.bin" -nt train_gpt2.py ]; then
        $PY train_gpt2.py $config --round-to-bf16 --model-dtype bf16 --write-model "$dir/tiny_model_bf16.bin" \
            --write-state "$dir/tiny_state_bf16.bin" >/dev/null
    fi
}

# The CPU trainer's reference states under build/test/: tiny has a 64-token vocabulary; gpt2v has GPT-2's,
# L=2 C=128 NH=2 (head size 64, so the GPU trainer's test uses the same state).
make_reference_states() {
    make_tiny_states build/test \
        "--test-init --vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 -B 4 -T 16"
    if [ ! build/test/gpt2v_state.bin -nt train_gpt2.py ]; then
        make -s data
        $PY train_gpt2.py --test-init --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 -B 4 -T 64 \
            --tokens data/tinyshakespeare/tiny_shakespeare_val.bin \
            --write-model build/test/gpt2v_model.bin --write-state build/test/gpt2v_state.bin >/dev/null
    fi
}

# The tiny states test_gpt2.cu (the GPU trainer's test) runs on, under build/test/gpu/: the flash attention
# kernels need a head size of 64 or 128, so C/NH = 64. (GPT-2's vocabulary: make_reference_states' gpt2v.)
make_gpu_reference_states() {
    make_tiny_states build/test/gpu \
        "--vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 -B 4 -T 32"
}
