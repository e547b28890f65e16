#!/usr/bin/env bash
# The GPU trainer's own code (train_gpt2.cu, test_gpt2.cu) on the CPU, with the llmc/*.cuh launchers
# simulated (dev/cuda/trainer_sim; FP32 build and BF16 build with a software bf16): everything but the
# kernels, which dev/cuda/*_check test on a GPU.
#  1. test_gpt2.cu on a tiny model with head size 64 (the flash attention kernels' minimum), FP32 and BF16
#     (bf16-rounded model): logits, loss, gradients and 10 AdamW steps against the PyTorch float64
#     reference (test_gpt2.cu's tolerances), every recompute mode bit-identical to -r 0, save/resume
#     bit-exact (AdamW with stochastic rounding and fp32 master weights, and 8-bit AdamW);
#  2. data parallelism with 2 simulated processes (threads): ZeRO-0 (per-layer all-reduce) and ZeRO-1 (fp32 and
#     8-bit AdamW) train like one process on the whole batch (test_zero_sim.cpp);
#  3. the trainer's main on d2 / Tiny Shakespeare, 4 steps, checkpoint at step 2, both builds: a resume from
#     step 2 prints the same step lines and leaves the same log as the uninterrupted run, and the losses
#     agree with the CPU trainer train_gpt2 given the same flags (same init, data, schedule, clipping):
#     FP32 to 1e-4 relative (fp32 summation order), BF16 to 1e-2 (bf16 rounding; measured ~1e-3).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/lib.sh
sim=build/trainer_sim
make -s $sim/train_gpt2_sim $sim/test_gpt2_sim $sim/train_gpt2_sim_bf16 $sim/test_gpt2_sim_bf16 $sim/test_zero_sim \
    train_gpt2 data

mkdir -p build/test/gpu
tiny="--vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 -B 4 -T 32"
if [ ! build/test/gpu/tiny_state.bin -nt train_gpt2.py ]; then
    $PY train_gpt2.py $tiny --write-model build/test/gpu/tiny_model.bin --write-state build/test/gpu/tiny_state.bin >/dev/null
fi
if [ ! build/test/gpu/tiny_state_bf16.bin -nt train_gpt2.py ]; then
    $PY train_gpt2.py $tiny --round-to-bf16 --model-dtype bf16 --write-model build/test/gpu/tiny_model_bf16.bin \
        --write-state build/test/gpu/tiny_state_bf16.bin >/dev/null
fi
echo "-- test_gpt2.cu, simulated launchers, FP32"
$sim/test_gpt2_sim build/test/gpu/tiny_model.bin build/test/gpu/tiny_state.bin -r 3
echo "-- test_gpt2.cu, simulated launchers, BF16"
$sim/test_gpt2_sim_bf16 build/test/gpu/tiny_model_bf16.bin build/test/gpu/tiny_state_bf16.bin -r 2
echo "-- ZeRO-0 / ZeRO-1 with 2 simulated processes against 1 (dev/cuda/trainer_sim/test_zero_sim.cpp)"
$sim/test_zero_sim build/test/gpu/tiny_model.bin build/test/gpu/tiny_state.bin

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
flags="-e d2 -b 4 -t 64 -x 4 -u 1 -l 6e-4 -v 2 -m 1 -s 0" # defaults of the two trainers differ
./train_gpt2 $flags > "$dir/cpu.txt"
for build in fp32 bf16; do
    echo "-- train_gpt2.cu main ($build), simulated launchers, against its own resume and train_gpt2 (CPU)"
    bin=$sim/train_gpt2_sim
    tol=1e-4
    if [ $build = bf16 ]; then bin=$sim/train_gpt2_sim_bf16 tol=1e-2; fi
    $bin $flags -n 2 -o "$dir/a" > "$dir/a.txt"
    cp -r "$dir/a" "$dir/b"
    echo 2 > "$dir/b/checkpoint_latest"
    $bin $flags -n 2 -o "$dir/b" -y 1 > "$dir/b.txt"
    grep -q "resumed from step 2" "$dir/b.txt" || { echo "FAIL: the resumed run does not say so"; exit 1; }
    $PY - "$dir" $tol <<'PYEOF'
import re, sys
d, tol = sys.argv[1], float(sys.argv[2])
def parse(name):
    steps, vals = {}, []
    for line in open(f"{d}/{name}.txt"):
        m = re.match(r"step\s+(\d+)/\d+ \| loss (\S+) \| lr (\S+) \| norm (\S+) \|", line)
        if m:
            steps[int(m.group(1))] = tuple(float(x) for x in m.groups()[1:])
        m = re.match(r"val loss (\S+)", line)
        if m:
            vals.append(float(m.group(1)))
    return steps, vals
a, a_val = parse("a")
b, b_val = parse("b")
cpu, cpu_val = parse("cpu")
fails = 0
def check(ok, what):
    global fails
    print(f"{what}: {'ok' if ok else 'FAIL'}")
    fails += 0 if ok else 1
check(sorted(a) == [1, 2, 3, 4] and sorted(cpu) == [1, 2, 3, 4], "4 step lines from both trainers")
worst = max(abs(a[s][i] - cpu[s][i]) / abs(cpu[s][i]) for s in cpu for i in (0, 1))  # loss, lr
worst_norm = max(abs(a[s][2] - cpu[s][2]) / abs(cpu[s][2]) for s in cpu)
worst_val = max(abs(x - y) / abs(y) for x, y in zip(a_val, cpu_val))
print(f"vs the CPU trainer: max rel diff of loss/lr {worst:.2e}, norm {worst_norm:.2e}, val {worst_val:.2e} (tol {tol:g})")
check(max(worst, worst_norm, worst_val) <= tol and len(a_val) == len(cpu_val) == 3, "agrees with the CPU trainer")
check(sorted(b) == [3, 4] and all(b[s] == a[s] for s in b), "resumed steps 3, 4 identical to the uninterrupted run")
check(b_val == a_val[1:], "resumed validation losses identical")
check(open(f"{d}/a/main.log").read() == open(f"{d}/b/main.log").read(), "resumed main.log identical")
sys.exit(1 if fails else 0)
PYEOF
    rm -rf "$dir/a" "$dir/b"
done
