#!/usr/bin/env bash
# Pipeline parallelism (-pp, -pk) of the GPU trainer, emulated GPUs as processes under mpirun (the CPU
# emulator's NCCL: ncclSend / ncclRecv complete only with their partner, as on a GPU, so a send that is not
# grouped with the next receive deadlocks here as there). A model with a 256-token vocabulary, 4 layers of
# C = 128 (tests/dist/small_vocab.py), 8 micro-batches of 2 x 64 tokens a step (-d 1024), FP32 build unless
# said.
#  1. Equivalence with one emulated GPU on the same global batch, 3 steps (clipping at 1 active in the
#     first): -pp 2 with both schedules, -pp 4 with 1F1B (tests/unit/test_pipeline.cpp checks both schedules'
#     orders for P <= 8), -pp 3 (uneven: 2 + 1 + 1 layers), 2 x 2 processes (-pp 2, two data-parallel
#     replicas) with -z 0 and -z 1, 8-bit AdamW (-np 4 -pp 2 -z 1 -qo 1 against one GPU with -qo 1), -r 3
#     with GPipe's 8 slots (against -r 0: recomputation repeats the same kernels, into one copy that
#     serves every slot). Tolerance 2e-5
#     relative on the loss, the learning rate and the norm (compare_train_logs.py), as the data-parallel
#     runs of test_emu_trainer.sh: the runs differ only in the order of fp32 sums (wte's gradient is two
#     stages' parts added at the end; measured 0), while a lost gradient or a norm without a stage's share
#     moves a value by 1e-3 or more. 8-bit AdamW to 2e-4: a stage's blocks of 8-bit codes start at its own
#     tensors' boundaries (as a ZeRO-1 shard's do), so the moments round differently (measured 7e-5 on the
#     printed norm, one unit of its last digit; the losses to 2e-7). Validation is compared where there is one replica (two replicas each
#     evaluate their share of the batches). BF16 build: -pp 2 against one GPU to 5e-3: AdamW's stochastic rounding
#     draws its bits by a parameter's offset in the stage's buffer, not the whole model's, so a bf16
#     parameter may round the other way (2^-8 relative), and wte's two parts are each rounded to bf16
#     before they are added (measured 6e-4, on the norm).
#     Planted bugs in train_gpt2.cu that the comparison must catch: wte's gradient not summed over the
#     first and the last stage, the clipping norm not summed over the stages, and the pre-GELU fch (read
#     by the backward) one buffer for every activation slot instead of one per slot.
#  2. Checkpoints: -pp 2 with a checkpoint at step 2 resumed prints exactly the uninterrupted run's last
#     step and sample, and leaves the same main.log; its model file (gathered whole by rank 0) trains in one
#     GPU the losses of -pp 2 from the same file; a -pp 2 checkpoint resumed with -pp 1 is refused, naming
#     -pp.
#  3. Memory and bubble: every stage's row of the per-stage table has the allocated memory (cudaMemGetInfo
#     after allocation) equal to the predicted total (to 0.1 MiB, as test_emu_trainer.sh's check); at M = 8
#     stage 0 holds 2 activation slots under 1F1B and 8 under GPipe, and less memory; the step line shows a
#     bubble per stage within [0, 1] and the ideal (P-1)/(M+P-1). The emulator's timing is not a GPU's
#     (its stages are not even balanced: an emulated classifier costs 3 layers), so no bound on the bubble.
#  4. Failures: a stage killed (-9) mid-run ends the job promptly; a stage stopped (SIGSTOP) makes the
#     others stop after LLMC_STEP_TIMEOUT_S with the watchdog's message. Nothing hangs.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_mpirun
require_python numpy
make -s --no-print-directory build/emu/train_gpt2fp32cu build/emu/train_gpt2cu data
dir=$(mktemp -d)
job="" pid=""
trap 'kill -9 $job $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1 CUDA_EMU_NCCL_TIMEOUT=60
gpu=build/emu/train_gpt2fp32cu
"$PY" tests/dist/small_vocab.py "$dir/sv" 256 4 128 > /dev/null
data="-i $dir/sv/train.bin -j $dir/sv/val.bin"
common="-e $dir/sv/model.bin $data -t 64 -b 2 -d 1024 -x 3 -v 1000 -m 1 -s 0 -u 2 -l 3e-3"
run() { timeout 300 "${MPIRUN[@]}" "$@"; }
cmp_logs() { $PY tests/common/compare_train_logs.py "$@"; }

# 1. equivalence
$gpu $common > "$dir/ref.txt"
for run in "2 gpipe" "2 1f1b" "4 1f1b"; do
    read -r P pk <<<"$run"
    run -np $P $gpu $common -pp $P -pk $pk > "$dir/pp$P-$pk.txt"
    grep -q "x 1 replicas (of $P pipeline stages) x 8 micro-batches" "$dir/pp$P-$pk.txt"
    cmp_logs "$dir/ref.txt" "$dir/pp$P-$pk.txt" --steps 3 --tol 2e-5 --label "-pp $P -pk $pk"
done
run -np 3 $gpu $common -pp 3 > "$dir/pp3.txt"
grep -qE "^ +1 +2-2 " "$dir/pp3.txt" || { echo "FAIL: -pp 3 over 4 layers: stage 1 is not layer 2"; exit 1; }
cmp_logs "$dir/ref.txt" "$dir/pp3.txt" --steps 3 --tol 2e-5 --label "-pp 3 (layers 0-1, 2, 3)"
for z in 0 1; do
    run -np 4 $gpu $common -pp 2 -z $z > "$dir/pp2x2-z$z.txt"
    grep -q "x 2 replicas (of 2 pipeline stages) x 4 micro-batches" "$dir/pp2x2-z$z.txt"
    cmp_logs "$dir/ref.txt" "$dir/pp2x2-z$z.txt" --steps 3 --tol 2e-5 --no-val --label "-np 4 -pp 2 -z $z (2 replicas)"
done
$gpu $common -qo 1 > "$dir/ref8.txt"
run -np 4 $gpu $common -pp 2 -z 1 -qo 1 > "$dir/pp2x2-8bit.txt"
cmp_logs "$dir/ref8.txt" "$dir/pp2x2-8bit.txt" --steps 3 --tol 2e-4 --no-val --label "-np 4 -pp 2 -z 1, 8-bit AdamW"
run -np 2 $gpu $common -pp 2 -pk gpipe -r 3 > "$dir/pp2-r3.txt"
cmp_logs "$dir/ref.txt" "$dir/pp2-r3.txt" --steps 3 --tol 2e-5 --label "-pp 2 -pk gpipe -r 3"
build/emu/train_gpt2cu $common > "$dir/ref-bf16.txt"
run -np 2 build/emu/train_gpt2cu $common -pp 2 > "$dir/pp2-bf16.txt"
cmp_logs "$dir/ref-bf16.txt" "$dir/pp2-bf16.txt" --steps 3 --tol 5e-3 --label "BF16 build: -pp 2"

# planted bugs the comparison must catch: wte's gradient not summed over the first and last stage (each
# updates with its own part), the clipping norm not summed over the stages (each clips by its own), fch
# shared by the slots (a backward reads a later micro-batch's)
mutant() { # name, perl substitution on train_gpt2.cu
    local m=build/emu/pipeline_mutants/$1
    mkdir -p "$m"
    perl -0pe "$2" train_gpt2.cu > "$m/train_gpt2.cu"
    cmp -s train_gpt2.cu "$m/train_gpt2.cu" && { echo "FAIL: the edit of mutant $1 matched nothing"; exit 1; }
    make -s --no-print-directory "$m/train_gpt2fp32cu"
    run -np 2 "$m/train_gpt2fp32cu" $common -pp 2 > "$dir/mutant-$1.txt"
    if cmp_logs "$dir/ref.txt" "$dir/mutant-$1.txt" --steps 3 --tol 2e-5 --label "mutant $1" > "$dir/mutant-$1.cmp"; then
        echo "FAIL: mutant $1 not caught: $(cat "$dir/mutant-$1.cmp")"; exit 1
    fi
    echo "ok   mutant $1 caught: $(cat "$dir/mutant-$1.cmp")"
}
mutant wte_grad_not_tied 's/multi_gpu_allreduce_sum\(opt->tie, s, wte, n\);//'
mutant norm_per_stage 's/multi_gpu_allreduce_sum\(opt->pipe, s, model->norm_device, 1\);//'
mutant fch_shared_by_slots 's/(add\(L3 \* slot\(BT \* 4 \* C, X\), X, )r < 3\);/${1}false);/'

# 2. checkpoints
strip() { grep -a -E "^step|^val loss" "$1" | sed 's/ | [0-9.]* ms.*//'; }
sample() { grep -a -A2 "^generating:" "$1" | sed -n 3p; } # the line after "---"
ck="-e $dir/sv/model.bin $data -t 64 -b 2 -d 512 -x 3 -n 2 -v 3 -m 2 -s 3 -g 16 -u 2 -l 3e-3"
run -np 2 $gpu $ck -pp 2 -o "$dir/ck" > "$dir/ck-full.txt"
cp -r "$dir/ck" "$dir/ck-cut"
rm "$dir/ck-cut"/*00000003*
echo 2 > "$dir/ck-cut/checkpoint_latest"
cp -r "$dir/ck-cut" "$dir/ck-copy"
run -np 2 $gpu $ck -pp 2 -o "$dir/ck-cut" -y 1 > "$dir/ck-resumed.txt"
grep -q "resumed from step 2" "$dir/ck-resumed.txt"
diff <(strip "$dir/ck-full.txt" | grep -A100 "^step    2/3" | tail -n +2) <(strip "$dir/ck-resumed.txt")
diff "$dir/ck/main.log" "$dir/ck-cut/main.log"
[ -n "$(sample "$dir/ck-full.txt" | tr -d ' ')" ] || { echo "FAIL: the pipeline sampled nothing"; exit 1; }
diff <(sample "$dir/ck-full.txt") <(sample "$dir/ck-resumed.txt")
echo "ok   -pp 2 resumed from step 2: the uninterrupted run's lines, sample and main.log"
from="-e $dir/ck/model_00000003.bin $data -t 64 -b 2 -d 512 -x 2 -v 1000 -m 1 -s 0 -u 2 -l 3e-4"
$gpu $from > "$dir/from-one.txt"
run -np 2 $gpu $from -pp 2 > "$dir/from-pp.txt"
cmp_logs "$dir/from-one.txt" "$dir/from-pp.txt" --steps 2 --tol 2e-5 --label "its model file: 1 GPU vs -pp 2"
failures=0
expect_status 1 "a -pp 2 checkpoint resumed with -pp 1" "written by a run with -pp 2 \(pipeline stages\) but this run has -pp 1" \
    "${MPIRUN[@]}" -np 2 $gpu $ck -o "$dir/ck-copy" -y 1
[ $failures -eq 0 ] || exit 1

# 3. memory and bubble (the -pp 2 runs of 1.)
check_stage_memory "$dir/pp2-gpipe.txt" "$dir/pp2-1f1b.txt" 0.1
grep "^step" "$dir/pp4-1f1b.txt" | sed 's/.*| bubble \([0-9.]*\) (stages \([0-9. ]*\); ideal \([0-9.]*\)).*/\1 \2 \3/' |
    awk '{ ok = NF == 6 && $6 == 0.273; for (i = 1; i <= 5; i++) ok = ok && $i >= 0 && $i <= 1; n++; bad += !ok }
        END { printf "%s -pp 4 step lines: %d with a bubble per stage in [0, 1] and the ideal 3/11 = 0.273\n", (bad || n != 3) ? "FAIL" : "ok  ", n; exit (bad || n != 3) }'

# 4. failures
long="-e $dir/sv/model.bin $data -t 64 -b 2 -d 256 -x 1000 -v 1000 -m 1 -s 0"
signal_a_stage 10 "$dir" "${MPIRUN[@]}" -np 2 $gpu $long -pp 2
echo "test_emu_pipeline: passed"
