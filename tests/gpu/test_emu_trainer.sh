#!/usr/bin/env bash
# The GPU trainer's main (train_gpt2.cu) on the CPU emulator against the CPU trainer's main (train_gpt2)
# given the same flags, on d2 / Tiny Shakespeare (GPT-2's vocabulary): the losses, learning rates,
# gradient norms and validation losses of every step agree (compare_train_logs.py). Cases:
#   1. FP32 and BF16 builds, 4 steps, checkpoint at step 2; a resume from step 2 prints the same step and
#      validation lines as the uninterrupted run and leaves the same main.log; FP32 with -ge 1 (the fc
#      backward's GELU in the DGELU epilogue) as well;
#   2. FP32, in one run: gradient accumulation (-d 512 at B=4, T=64: 2 micro-steps), -x 3 shorter than
#      the default warmup (both trainers cut the warmup to the 3 steps) and 8-bit AdamW (-qo 1); each
#      trainer's resume of that run from step 2 prints the same last step as its uninterrupted run;
#   3. data parallel, emulated GPUs as processes under mpirun (emulated NCCL): 2 with ZeRO-0 and 2, 4 with
#      ZeRO-1 and 3, against one emulated GPU taking the same 512-token steps in 2 micro-steps; 2 steps,
#      validation left out (each process evaluates its own share of the validation batches, so the
#      validation loss depends on the process count, in the CPU trainer too); at stages 2 and 3 the memory
#      measured after the first step against the prediction and the formula; ZeRO-3 on 2 GPUs with 2
#      micro-steps each, 8-bit AdamW and -r 3 against 1 GPU (-r 0), and its resume; BF16 ZeRO-3 bit-identical to ZeRO-2
#      (losses and model file);
#   4. QLoRA (rank 8 on every block matrix, NF4 base: the fp32 base's path is the same but for the
#      dequantization) on d2, FP32 build, 3 steps with a checkpoint at step 2, against the CPU trainer: the
#      same lines, and the final merged model files give the same validation loss when a new run starts from
#      them; the GPU run resumed at step 2 repeats its last step exactly; 2 emulated GPUs with ZeRO-1 over
#      the adapters (LoRA) against 1. (test_emu_gpt2cu.sh checks both bases against PyTorch.)
# Tolerances (relative, max over every value): FP32 1e-4 against the CPU: both are fp32, summed in
# different orders (cuBLASLt-style GEMM, tiled attention, block reductions), ~1e-6 per value measured,
# while a wrong schedule, a missed micro-step or different data moves a loss by 1e-3 or more; BF16 1e-2:
# bf16 rounding of activations and gradients (u = 2^-8), measured ~5e-4. With 8-bit AdamW the fp32 rounding
# differences could flip a code near a decision boundary; 1e-4 as well (measured ~1e-7). 2 and 4 GPUs against
# 1 GPU: 2e-5 (only the order of the gradient sums differs, as tests/dist/test_mpi_training.sh's CPU runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_mpirun
make -s --no-print-directory build/emu/train_gpt2fp32cu build/emu/train_gpt2cu train_gpt2 data
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cmp_logs() { $PY tests/common/compare_train_logs.py "$@"; }
gpu=build/emu/train_gpt2fp32cu
common="-e d2 -b 4 -t 64 -l 6e-4 -v 2 -m 1 -s 0" # the defaults of the two trainers differ: set them

# 1. both builds against the CPU, and resume
flags="$common -x 4 -u 1"
./train_gpt2 $flags > "$dir/cpu.txt"
for build in fp32 bf16; do
    bin=build/emu/train_gpt2fp32cu tol=1e-4
    if [ $build = bf16 ]; then bin=build/emu/train_gpt2cu tol=1e-2; fi
    $bin $flags -n 2 -o "$dir/a" > "$dir/a.txt"
    cp -r "$dir/a" "$dir/b"
    echo 2 > "$dir/b/checkpoint_latest"
    $bin $flags -n 2 -o "$dir/b" -y 1 > "$dir/b.txt"
    grep -q "resumed from step 2" "$dir/b.txt" || { echo "FAIL: the resumed run does not say so"; exit 1; }
    cmp_logs "$dir/cpu.txt" "$dir/a.txt" --steps 4 --tol $tol --label "$build: against the CPU trainer"
    cmp_logs "$dir/a.txt" "$dir/b.txt" --steps 4 --from-step 3 --identical --label "$build: resumed at step 2"
    cmp -s "$dir/a/main.log" "$dir/b/main.log" || { echo "FAIL: $build: resumed main.log differs"; exit 1; }
    echo "$build: resumed main.log identical: ok"
    rm -rf "$dir/a" "$dir/b"
done
# the fc backward's GELU in cuBLASLt's DGELU epilogue (-ge 1) instead of the default gelu.cuh kernel
$gpu $flags -ge 1 > "$dir/ge.txt"
cmp_logs "$dir/cpu.txt" "$dir/ge.txt" --steps 4 --tol 1e-4 --label "fp32 -ge 1: against the CPU trainer"

# 2. accumulation, a short run with the default warmup, 8-bit AdamW; and the resume of that run from its
#    step-2 checkpoint, in both trainers
flags="$common -x 3 -d 512 -qo 1 -n 2"
./train_gpt2 $flags -o "$dir/c" > "$dir/cpu.txt"
$gpu $flags -o "$dir/g" > "$dir/gpu.txt"
grep -q "note: warmup (-u 10) cut to the 3 training steps" "$dir/gpu.txt" || { echo "FAIL: no warmup note"; exit 1; }
grep -q "x 2 accumulation steps = 512 tokens" "$dir/gpu.txt" || { echo "FAIL: not 2 micro-steps"; exit 1; }
cmp_logs "$dir/cpu.txt" "$dir/gpu.txt" --steps 3 --tol 1e-4 \
    --label "fp32: -d 512 (2 micro-steps), -x 3 < warmup, 8-bit AdamW"
for t in c g; do
    bin=./train_gpt2 name=CPU log="$dir/cpu.txt"
    if [ $t = g ]; then bin=$gpu name=GPU log="$dir/gpu.txt"; fi
    echo 2 > "$dir/$t/checkpoint_latest"
    $bin $flags -o "$dir/$t" -y 1 > "$dir/${t}_resumed.txt"
    cmp_logs "$log" "$dir/${t}_resumed.txt" --steps 3 --from-step 3 --identical \
        --label "$name: that run resumed at step 2"
done
# the GPU's state holds fp32 master weights: the CPU trainer refuses it, naming the file
if out=$(./train_gpt2 $flags -o "$dir/g" -y 1 2>&1); then echo "FAIL: the CPU trainer resumed a GPU state"; exit 1; fi
grep -qE "state_[0-9]+_00000.bin' holds the GPU trainer's fp32 master weights" <<<"$out" ||
    { echo "FAIL: unclear refusal: $out"; exit 1; }
echo "CPU resume of a GPU state: refused ($(grep -m1 error: <<<"$out"))"

# 3. 2 and 4 emulated GPUs against 1 (a 512-token step), every ZeRO stage
zflags="$common -x 2 -u 1 -d 512 -v 1000"
$gpu $zflags > "$dir/gpu1.txt"
# check_memory LOG LABEL: the device memory the emulator measured after the first step (cudaMemGetInfo) is
# the prediction (it counts every allocation: equal to 0.1 MiB), and the model state per parameter is the
# ZeRO formula's to 1% (the units' padding is under N*128*(L+2) elements)
check_memory() {
    read -r used predicted < <(sed -n 's/^memory after the first step: \([0-9.]*\) MiB used.*, \([0-9.]*\) MiB predicted.*/\1 \2/p' "$1")
    read -r state formula < <(sed -n 's/^  model state: \([0-9.]*\) B\/param.* = \([0-9.]*\).*/\1 \2/p' "$1")
    awk -v u="$used" -v p="$predicted" -v s="$state" -v f="$formula" -v label="$2" 'BEGIN {
        d = u - p; if (d < 0) d = -d; e = (s - f) / f; if (e < 0) e = -e; ok = u != "" && s != "" && d <= 0.1 && e <= 0.01;
        printf "%s: memory measured %s MiB, predicted %s MiB; model state %s B/param, formula %s: %s\n", label, u, p, s, f, ok ? "ok" : "FAIL";
        exit !ok }'
}
for run in "2 0" "4 1" "2 2" "4 3"; do
    read -r np z <<< "$run"
    OMP_NUM_THREADS=1 timeout 600 "${MPIRUN[@]}" -np $np $gpu $zflags -b $((8 / np)) -z $z > "$dir/np$np.txt"
    grep -q "$np GPU process(es)" "$dir/np$np.txt" || { echo "FAIL: not $np processes"; exit 1; }
    cmp_logs "$dir/gpu1.txt" "$dir/np$np.txt" --steps 2 --no-val --tol 2e-5 \
        --label "fp32: $np GPUs, ZeRO-$z, against 1 GPU"
    if [ $z -ge 2 ]; then check_memory "$dir/np$np.txt" "fp32: $np GPUs, ZeRO-$z"; fi
done
# ZeRO-3 with 2 micro-steps per GPU, 8-bit AdamW (-qb 128: the units' slices are multiples of 128, so
# the quantization blocks are those of one GPU) and -r 3 (the backward re-runs each layer's forward on
# its gathered parameters), 3 steps with a checkpoint at step 2, resumed there
qflags="$common -x 3 -u 1 -d 512 -v 1000 -qo 1 -qb 128"
$gpu $qflags > "$dir/q1.txt"
OMP_NUM_THREADS=1 timeout 600 "${MPIRUN[@]}" -np 2 $gpu $qflags -b 2 -z 3 -r 3 -n 2 -o "$dir/q3" > "$dir/q3.txt"
grep -q "x 2 accumulation steps" "$dir/q3.txt" || { echo "FAIL: not 2 micro-steps"; exit 1; }
cmp_logs "$dir/q1.txt" "$dir/q3.txt" --steps 3 --no-val --tol 2e-5 \
    --label "fp32: 2 GPUs, ZeRO-3, 2 micro-steps, 8-bit AdamW, -r 3, against 1 GPU"
echo 2 > "$dir/q3/checkpoint_latest"
OMP_NUM_THREADS=1 timeout 600 "${MPIRUN[@]}" -np 2 $gpu $qflags -b 2 -z 3 -r 3 -n 2 -o "$dir/q3" -y 1 > "$dir/q3r.txt"
cmp_logs "$dir/q3.txt" "$dir/q3r.txt" --steps 3 --from-step 3 --identical --no-val \
    --label "fp32: 2 GPUs, ZeRO-3: resumed at step 2"
# BF16 (stochastic rounding from the fp32 master): ZeRO-3 gathers the parameters that ZeRO-2 keeps whole,
# from the same shards, so the two print the same bits, and the model files (ZeRO-3's gathered unit by
# unit on the host) are the same bytes
for z in 2 3; do
    OMP_NUM_THREADS=1 timeout 600 "${MPIRUN[@]}" -np 2 build/emu/train_gpt2cu $zflags -b 4 -z $z -n 2 -o "$dir/b$z" > "$dir/b$z.txt"
done
cmp_logs "$dir/b2.txt" "$dir/b3.txt" --steps 2 --identical --label "bf16: 2 GPUs, ZeRO-3 against ZeRO-2"
check_memory "$dir/b3.txt" "bf16: 2 GPUs, ZeRO-3"
cmp "$dir/b2/model_00000002.bin" "$dir/b3/model_00000002.bin" || { echo "FAIL: ZeRO-3's model file differs from ZeRO-2's"; exit 1; }
echo "bf16: ZeRO-3's model file identical to ZeRO-2's: ok"

# 4. LoRA and QLoRA against the CPU trainer, resume, 2 GPUs
for mode in "qlora:-lo 8 -lt all -lq 1"; do
    name=${mode%%:*} lflags="$common -x 3 -u 1 -n 2 ${mode#*:}"
    ./train_gpt2 $lflags -o "$dir/$name-c" > "$dir/$name-cpu.txt"
    $gpu $lflags -o "$dir/$name-g" > "$dir/$name-gpu.txt"
    cmp_logs "$dir/$name-cpu.txt" "$dir/$name-gpu.txt" --steps 3 --tol 1e-4 --label "fp32 $name: against the CPU trainer"
    echo 2 > "$dir/$name-g/checkpoint_latest"
    $gpu $lflags -o "$dir/$name-g" -y 1 > "$dir/$name-resumed.txt"
    cmp_logs "$dir/$name-gpu.txt" "$dir/$name-resumed.txt" --steps 3 --from-step 3 --identical \
        --label "fp32 $name: resumed at step 2"
    # the merged model files of both trainers, each the start of a plain run: the same val loss
    for t in c g; do
        ./train_gpt2 -e "$dir/$name-$t/model_00000003.bin" -b 4 -t 64 -x 1 -v 1 -m 1 -s 0 > "$dir/$name-merged-$t.txt"
    done
    a=$(grep -m1 "^val loss" "$dir/$name-merged-c.txt" | awk '{print $3}')
    b=$(grep -m1 "^val loss" "$dir/$name-merged-g.txt" | awk '{print $3}')
    awk -v a="$a" -v b="$b" -v n="$name" 'BEGIN { d = (a - b) / a; if (d < 0) d = -d;
        printf "fp32 %s: merged model files, val loss CPU %s GPU %s (rel diff %.1e): %s\n", n, a, b, d, d <= 1e-4 ? "ok" : "FAIL";
        exit d > 1e-4 }'
done
zflags="$common -x 2 -u 1 -d 512 -v 1000 -lo 8 -lt all"
$gpu $zflags > "$dir/lora-gpu1.txt"
OMP_NUM_THREADS=1 timeout 600 "${MPIRUN[@]}" -np 2 $gpu $zflags -b 4 -z 1 > "$dir/lora-np2.txt"
cmp_logs "$dir/lora-gpu1.txt" "$dir/lora-np2.txt" --steps 2 --no-val --tol 2e-5 --label "fp32 LoRA: 2 GPUs, ZeRO-1, against 1 GPU"
