# Shared by the test scripts: the Python that has torch, and the reference files made by train_gpt2.py.
PY=/usr/bin/python3
if ! "$PY" -c "import torch, numpy" 2>/dev/null; then
    echo "error: $PY cannot import torch and numpy: install python3-torch python3-numpy (apt-get)" >&2
    exit 1
fi

# (Re)make the PyTorch reference model + debug state files under build/test/ when missing or older than
# train_gpt2.py. The tiny configuration has a 64-token vocabulary; gpt2v has GPT-2's, L=2 C=128 NH=4.
make_reference_states() {
    mkdir -p build/test
    local tiny="--test-init --vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 -B 4 -T 16"
    if [ ! build/test/tiny_state.bin -nt train_gpt2.py ]; then
        $PY train_gpt2.py $tiny --write-model build/test/tiny_model.bin --write-state build/test/tiny_state.bin >/dev/null
    fi
    if [ ! build/test/tiny_state_bf16.bin -nt train_gpt2.py ]; then
        $PY train_gpt2.py $tiny --round-to-bf16 --model-dtype bf16 --write-model build/test/tiny_model_bf16.bin \
            --write-state build/test/tiny_state_bf16.bin >/dev/null
    fi
    if [ ! build/test/gpt2v_state.bin -nt train_gpt2.py ]; then
        make -s data
        $PY train_gpt2.py --test-init --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 -B 4 -T 64 \
            --tokens data/tinyshakespeare/tiny_shakespeare_val.bin \
            --write-model build/test/gpt2v_model.bin --write-state build/test/gpt2v_state.bin >/dev/null
    fi
}

# The reference states test_gpt2.cu (the GPU trainer's test) runs on, under build/test/gpu/: the flash
# attention kernels need a head size of 64 or 128, so C/NH = 64. tiny: a 64-token vocabulary, fp32 and a
# bf16-rounded model. (GPT-2's vocabulary: make_reference_states' gpt2v, head size 64 already.)
make_gpu_reference_states() {
    mkdir -p build/test/gpu
    local tiny="--vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 -B 4 -T 32"
    if [ ! build/test/gpu/tiny_state.bin -nt train_gpt2.py ]; then
        $PY train_gpt2.py $tiny --write-model build/test/gpu/tiny_model.bin --write-state build/test/gpu/tiny_state.bin >/dev/null
    fi
    if [ ! build/test/gpu/tiny_state_bf16.bin -nt train_gpt2.py ]; then
        $PY train_gpt2.py $tiny --round-to-bf16 --model-dtype bf16 --write-model build/test/gpu/tiny_model_bf16.bin \
            --write-state build/test/gpu/tiny_state_bf16.bin >/dev/null
    fi
}
