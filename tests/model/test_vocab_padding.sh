#!/usr/bin/env bash
# The padded vocabulary Vp (header slot 7 of the model file) changes no number: only wte's first V rows are
# real, the rest are zero and ignored by the loss. One model (V=997, prime; L=2 C=128 NH=2, train_gpt2.py's
# --test-init weights and its float64 debug state on a token shard) is written with Vp = V, V+1, V+5, 1000
# (a multiple of 8, not of 16) and 1024 (V rounded up to 128, as GPT-2's 50304), real weights bit-identical
# (tests/model/vocab_padding.py repad). Batch B=4 T=32: 128 rows, so the CPU classifier takes its packed
# 16-column-strip kernel, whose last strip is partial unless Vp % 16 == 0 (before the fix it left the
# columns past the last full strip at 0, real tokens 992..996 among them: loss 2.2e-3 off, logits 0.7).
# Only the padding differs between the files, so any difference between their results is a bug.
#   1. CPU, test_gpt2 against the float64 reference for each Vp: logits, loss, every gradient, 3 AdamW
#      steps, at test_gpt2.cpp's tolerances (5e-6 .. 1e-5, fp32 rounding);
#   2. CPU trainer (train_gpt2 main: load, 3 steps, validation each step): the step and validation lines of
#      every Vp identical to Vp=1024's (--identical: each logit is a lane of its own in the kernel and the
#      padding adds exact zeros, so nothing may differ, not even in the last printed digit), and the first
#      validation loss, on the reference's batch, equal to the reference's loss to 5e-6;
#   3. GPU trainer on the CPU emulator, FP32 and BF16 builds: Vp = 1000 and 1024 against the CPU trainer
#      (1e-4 FP32, 1e-2 BF16: the tolerances of test_emu_trainer.sh); Vp = 997, 998, 1002 (not multiples of
#      8, which its 128-bit loads and cuBLASLt's aligned rows need) refused at load, exit 1, with a message
#      naming the file, Vp and what is required; and a head size its flash attention lacks (NH=4: 32).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_python torch numpy
make -s --no-print-directory train_gpt2 test_gpt2 build/emu/train_gpt2fp32cu build/emu/train_gpt2cu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=2
V=997
paddings="997 998 1002 1000 1024"

timeout 60 $PY tests/model/vocab_padding.py shard "$dir/tok.bin" $V 2000
timeout 120 $PY train_gpt2.py --test-init --vocab-size $V --padded-vocab $V --n-layer 2 --n-head 2 --n-embd 128 \
    --block-size 64 -B 4 -T 32 --tokens "$dir/tok.bin" --adamw-steps 3 \
    --write-model "$dir/ref.bin" --write-state "$dir/ref_state.bin" > "$dir/ref.txt"
ref_loss=$(sed -n 's/^loss: //p' "$dir/ref.txt")
for vp in $paddings; do
    timeout 60 $PY tests/model/vocab_padding.py repad "$dir/ref.bin" "$dir/ref_state.bin" $vp "$dir/m$vp.bin" "$dir/s$vp.bin"
done

# 1. the CPU forward, backward and AdamW against the float64 reference, every padding
for vp in $paddings; do
    out=$(timeout 120 ./test_gpt2 "$dir/m$vp.bin" "$dir/s$vp.bin") || { echo "$out"; echo "FAIL: test_gpt2, Vp=$vp"; exit 1; }
    echo "Vp=$vp: test_gpt2 against the float64 reference: $(tail -1 <<<"$out")"
done

# 2. the CPU trainer: the same lines for every padding, the reference's loss on its batch
flags="-i $dir/tok.bin -j $dir/tok.bin -b 4 -t 32 -x 3 -v 1 -m 1 -s 0 -u 1 -l 1e-3"
for vp in $paddings; do timeout 120 ./train_gpt2 -e "$dir/m$vp.bin" $flags > "$dir/cpu$vp.txt"; done
for vp in 997 998 1002 1000; do
    timeout 60 $PY tests/common/compare_train_logs.py "$dir/cpu1024.txt" "$dir/cpu$vp.txt" --steps 3 --identical \
        --label "CPU trainer, Vp=$vp against Vp=1024"
done
timeout 60 $PY - "$dir/cpu997.txt" "$ref_loss" <<'EOF'
import re, sys
ours = float(re.search(r"^val loss (\S+)", open(sys.argv[1]).read(), re.M).group(1))
ref = float(sys.argv[2])
err = abs(ours - ref) / ref
print(f"CPU trainer's first val loss {ours:.6f}, the float64 reference's {ref:.6f}: rel. error {err:.1e} (bound 5e-6)")
sys.exit(0 if err <= 5e-6 else 1)
EOF

# 3. the GPU trainer on the emulator: Vp a multiple of 8 runs and agrees, the others are refused clearly
# expect_refusal "what" "expected error line" trainer model: exit 1 (not a signal, not the timeout), that error
expect_refusal() {
    local what=$1 want=$2 out rc
    set +e
    out=$(timeout 120 "$3" -e "$4" $flags 2>&1)
    rc=$?
    set -e
    if [ $rc -ne 1 ] || ! grep -qF "$want" <<<"$out"; then
        echo "FAIL: $what: exit $rc, expected 1 and '$want'; got:"
        tail -5 <<<"$out"
        exit 1
    fi
    echo "$what: refused: $(grep -m1 error: <<<"$out")"
}
for build in fp32 bf16; do
    bin=build/emu/train_gpt2fp32cu tol=1e-4
    if [ $build = bf16 ]; then bin=build/emu/train_gpt2cu tol=1e-2; fi
    for vp in 1000 1024; do
        timeout 300 $bin -e "$dir/m$vp.bin" $flags > "$dir/gpu$vp.txt"
        timeout 60 $PY tests/common/compare_train_logs.py "$dir/cpu1024.txt" "$dir/gpu$vp.txt" --steps 3 --tol $tol \
            --label "GPU $build, Vp=$vp against the CPU trainer"
    done
    for vp in 997 998 1002; do
        expect_refusal "GPU $build, Vp=$vp" "error: '$dir/m$vp.bin': the GPU kernels need the padded vocabulary Vp \
to be a multiple of 8; this model has V=$V Vp=$vp" $bin "$dir/m$vp.bin"
    done
done
timeout 60 $PY tests/model/vocab_padding.py set-heads "$dir/m1024.bin" 4 "$dir/hs32.bin"
expect_refusal "GPU, head size 32" "error: '$dir/hs32.bin': the GPU trainer's flash attention kernels support head \
size C/NH = 64 or 128; this model has C=128 NH=4 (head size 32)" build/emu/train_gpt2fp32cu "$dir/hs32.bin"
echo "all vocabulary padding checks passed"
