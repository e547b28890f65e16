#!/usr/bin/env bash
# The GPU trainer's own code (train_gpt2.cu, test_gpt2.cu) on the CPU, with the llmc/*.cuh launchers
# simulated in fp32 (dev/cuda/trainer_sim): everything but the kernels, which dev/cuda/*_check test on a GPU.
#  1. test_gpt2.cu on a tiny model with head size 64 (the flash attention kernels' minimum), -r 3: logits,
#     loss, gradients and 10 AdamW steps against the PyTorch float64 reference (tolerance 1e-4; measured
#     ~1e-6), every recompute mode bit-identical to -r 0, save/resume bit-exact (AdamW and 8-bit AdamW);
#  2. the trainer's main on d2 / Tiny Shakespeare, 4 steps, checkpoint at step 2: the step and validation
#     losses and norms agree with the CPU trainer train_gpt2 given the same flags (same init, data, schedule,
#     clipping; relative 1e-4 for fp32 summation order), and a resume from step 2 prints the same step lines
#     and leaves the same log as the uninterrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/lib.sh
make -s build/trainer_sim/train_gpt2_sim build/trainer_sim/test_gpt2_sim train_gpt2 data

mkdir -p build/test/gpu
if [ ! build/test/gpu/tiny_state.bin -nt train_gpt2.py ]; then
    $PY train_gpt2.py --vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 \
        -B 4 -T 32 --write-model build/test/gpu/tiny_model.bin --write-state build/test/gpu/tiny_state.bin >/dev/null
fi
echo "-- test_gpt2.cu, simulated launchers"
./build/trainer_sim/test_gpt2_sim build/test/gpu/tiny_model.bin build/test/gpu/tiny_state.bin -r 3

echo "-- train_gpt2.cu main, simulated launchers, against train_gpt2 (CPU) and against its own resume"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
flags="-e d2 -b 4 -t 64 -x 4 -u 1 -l 6e-4 -v 2 -m 1 -s 0" # defaults of the two trainers differ
./build/trainer_sim/train_gpt2_sim $flags -n 2 -o "$dir/a" > "$dir/a.txt"
cp -r "$dir/a" "$dir/b"
echo 2 > "$dir/b/checkpoint_latest"
./build/trainer_sim/train_gpt2_sim $flags -n 2 -o "$dir/b" -y 1 > "$dir/b.txt"
./train_gpt2 $flags > "$dir/cpu.txt"
grep -q "resumed from step 2" "$dir/b.txt" || { echo "FAIL: the resumed run does not say so"; exit 1; }
$PY - "$dir" <<'PYEOF'
import re, sys
d = sys.argv[1]
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
worst = max(abs(x - y) / abs(y) for s in cpu for x, y in zip(a[s], cpu[s]))
worst_val = max(abs(x - y) / abs(y) for x, y in zip(a_val, cpu_val))
print(f"GPU trainer (simulated) vs CPU trainer: max rel diff of loss/lr/norm {worst:.2e}, val {worst_val:.2e} (tol 1e-4)")
check(worst <= 1e-4 and worst_val <= 1e-4 and len(a_val) == len(cpu_val) == 3, "agrees with the CPU trainer")
check(sorted(b) == [3, 4] and all(b[s] == a[s] for s in b), "resumed steps 3, 4 identical to the uninterrupted run")
check(b_val == a_val[1:], "resumed validation losses identical")
check(open(f"{d}/a/main.log").read() == open(f"{d}/b/main.log").read(), "resumed main.log identical")
sys.exit(1 if fails else 0)
PYEOF
