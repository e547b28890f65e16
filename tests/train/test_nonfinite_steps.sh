#!/usr/bin/env bash
# A step whose gradient norm is NaN or inf is skipped: no parameter changes (llmc/run_plan.h), and
# RUN_MAX_SKIPPED_STEPS (5) in a row stop the run with a message and a non-zero exit. Both trainers (the GPU
# one on the CPU emulator, FP32 build) from a d2 model whose wpe row of position 0 is all 3e38, a finite value
# (every LayerNorm's sum over C overflows, so every loss and gradient is NaN; a NaN in the file itself is
# refused at load, tests/faults/test_bad_model_state.sh). Checks: the skip lines, the stop message after step 5, and
# the parameters of the model checkpoint of step 1 byte-identical to the poisoned input's (an applied update
# would have changed them: AdamW with NaN gradients turns the parameters NaN). The CPU trainer also runs as
# a pipeline of 2 stages under mpirun.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory train_gpt2 build/emu/train_gpt2fp32cu data
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./train_gpt2 -e d2 -b 4 -t 64 -x 1 -v 100 -s 0 -o "$dir/init" > /dev/null
$PY tests/train/poison_model.py "$dir/init/model_00000001.bin" "$dir/poisoned.bin" 3e38
# (the third run: the CPU trainer as a pipeline of 2 stages, whose second stage gets NaN activations and
# whose norm sums over the stages: every stage skips, and the model file rank 0 gathers is unchanged)
require_mpirun
for bin in ./train_gpt2 build/emu/train_gpt2fp32cu "${MPIRUN[*]} -np 2 ./train_gpt2 -pp 2"; do
    out="$dir/out"
    rm -rf "$out"
    set +e
    OMP_NUM_THREADS=1 timeout 300 $bin -e "$dir/poisoned.bin" -b 4 -t 64 -x 8 -v 100 -m 1 -s 0 -n 1 -o "$out" \
        > "$dir/log.txt" 2>&1
    rc=$?
    set -e
    [ $rc -ne 0 ] || { echo "FAIL: $bin: exit 0 after 5 skipped steps"; cat "$dir/log.txt"; exit 1; }
    grep -qE "step 1 skipped: gradient norm -?nan, the update was not applied \(1 in a row\)" "$dir/log.txt" ||
        { echo "FAIL: $bin: no skip line for step 1"; cat "$dir/log.txt"; exit 1; }
    grep -q "5 steps in a row (the last: step 5) had a non-finite gradient norm: stopping" "$dir/log.txt" ||
        { echo "FAIL: $bin: no stop message after step 5"; cat "$dir/log.txt"; exit 1; }
    if grep -q "^step    6/" "$dir/log.txt"; then echo "FAIL: $bin: trained on after 5 skipped steps"; exit 1; fi
    # the parameters, after the 1024-byte header (the checkpoint's has a checksum, the poisoned file has none)
    cmp <(tail -c +1025 "$dir/poisoned.bin") <(tail -c +1025 "$out/model_00000001.bin") ||
        { echo "FAIL: $bin: the parameters changed in a skipped step"; exit 1; }
    echo "$bin: 5 skipped steps, parameters unchanged, stopped: ok ($(grep -m1 'error:' "$dir/log.txt"))"
done
