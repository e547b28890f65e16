#!/usr/bin/env bash
# Pipeline parallelism (-pp, -pk) of the CPU trainer under MPI.
#  1. Equivalence: with the same global batch of 8 micro-batches of 2 x 32 tokens (-d 512), the losses and
#     gradient norms of 4 steps (clipping at norm 1 active in the first) match one process for -pp 2 and
#     -pp 4 with both schedules, for 2 x 2 processes (-pp 2, two data-parallel replicas) with -z 0 and -z 1,
#     and with 8-bit AdamW (-np 4 -pp 2 -z 1 against 8-bit AdamW in one process). d4 has 4 layers, so -pp 4
#     is one layer a stage. Tolerance 2e-5 relative on the loss, 2e-4 on the printed norm, as
#     test_mpi_training.sh's: the runs differ only in the order of fp32 sums (wte's gradient is two
#     stages' parts added at the end, not accumulated in one buffer), ~1e-6, while a missing micro-batch,
#     a gradient sent to the wrong stage, a stale wte on the last stage or a norm without a stage's share
#     changes a loss by 1e-3 or more (or the norm by far more than 2e-4).
#     Planted bugs in train_gpt2.cpp that the comparison must catch: wte's gradient not summed over the
#     first and the last stage, the clipping norm not summed over the stages.
#  2. Checkpoints: -pp 2 with -n 3 resumed from step 3 prints exactly the uninterrupted run's lines and
#     sample; its model file (written whole by rank 0) trains in one process, and from the same model file
#     one process and -pp 2 train the same losses, as do one process and -pp 4 from a model file one
#     process wrote; resuming a -pp 2 checkpoint with -pp 1 (and the same
#     process count) is refused, naming -pp.
#  3. Memory and bubble (a model with a 256-token vocabulary, tests/dist/small_vocab.py, so that both
#     stages do about equal work): the per-stage table's allocated memory equals its prediction on every
#     stage; at M = 8, 1F1B holds 2 micro-batches' activations on stage 0 against GPipe's 8, and allocates
#     less. The measured bubble (mean over the stages and over steps 2-5), printed beside the ideal
#     (P-1)/(M+P-1): at M = 1 the two stages take turns, 0.35..0.65 (ideal 0.5, a time fraction that a
#     loaded machine slows on both stages alike); at M = 16, both schedules, at most 0.8 of that (ideal
#     0.059, a ratio of 0.12; measured 0.07-0.08 on an idle 2-core host, 0.17 beside another test and 0.26
#     beside test_cuda_build's two compilers: a ratio of 0.51). A schedule that serializes the stages gives
#     0.5 at any M, a ratio of 1. How close the bubble comes to the ideal is a benchmark's figure
#     (dev/bench/bench_pipeline_cpu.sh, on an idle machine), not a timed test's.
#  4. Failures: more stages than layers is refused at start-up; a stage's state file missing at resume
#     stops every rank, naming the rank and the file; a stage stopped mid-run (SIGSTOP) makes the others
#     stop after LLMC_STEP_TIMEOUT_S with a message; a stage killed (-9) ends the job promptly with a
#     non-zero status. Nothing hangs.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_mpirun
require_python numpy
make -s --no-print-directory train_gpt2 data
dir=$(mktemp -d)
job="" pid=""
trap 'kill -9 $job $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1
common="-e d4 -t 32 -b 2 -d 512 -x 4 -v 1000 -m 1 -s 0 -u 2 -l 3e-3"
run() { timeout 300 "${MPIRUN[@]}" "$@"; }

compare() { compare_losses "$1" "$2" "$3" 4; } # reference file, other file, label

# 1. equivalence
./train_gpt2 $common > "$dir/ref.txt"
for pk in gpipe 1f1b; do
    for P in 2 4; do
        run -np $P ./train_gpt2 $common -pp $P -pk $pk > "$dir/pp$P-$pk.txt"
        grep -q "x 1 replicas (of $P pipeline stages) x 8 micro-batches" "$dir/pp$P-$pk.txt"
        compare "$dir/ref.txt" "$dir/pp$P-$pk.txt" "-pp $P -pk $pk"
    done
done
for z in 0 1; do
    run -np 4 ./train_gpt2 $common -pp 2 -z $z > "$dir/pp2x2-z$z.txt"
    grep -q "x 2 replicas (of 2 pipeline stages) x 4 micro-batches" "$dir/pp2x2-z$z.txt"
    compare "$dir/ref.txt" "$dir/pp2x2-z$z.txt" "-np 4 -pp 2 -z $z (2 replicas)"
done
q8="-qo 1 -qb 128"
./train_gpt2 $common $q8 > "$dir/ref8.txt"
run -np 4 ./train_gpt2 $common -pp 2 -z 1 $q8 > "$dir/pp2x2-8bit.txt"
compare "$dir/ref8.txt" "$dir/pp2x2-8bit.txt" "-np 4 -pp 2 -z 1, 8-bit AdamW"

# planted bugs the comparison must catch: wte's gradient not summed over the first and last stage (the
# classifier's part lost), and the clipping norm not summed over the stages (each clips by its own)
mutant() { # name, sed expression on train_gpt2.cpp
    local m=build/mutants/pipeline_trainer/$1
    mkdir -p "$m"
    sed "$2" train_gpt2.cpp > "$m/train_gpt2.cpp"
    cmp -s train_gpt2.cpp "$m/train_gpt2.cpp" && { echo "FAIL: the sed of mutant $1 matched nothing"; exit 1; }
    mpicxx -DUSE_MPI -O3 -march=native -std=c++17 -Wno-psabi -fno-math-errno -fno-trapping-math -fopenmp -I. \
        "$m/train_gpt2.cpp" -o "$m/train_gpt2" -lm
    run -np 2 "$m/train_gpt2" $common -pp 2 > "$dir/mutant-$1.txt"
    if compare "$dir/ref.txt" "$dir/mutant-$1.txt" "mutant $1" > "$dir/mutant-$1.cmp"; then
        echo "FAIL: mutant $1 not caught: $(cat "$dir/mutant-$1.cmp")"; exit 1
    fi
    echo "ok   mutant $1 caught: $(sed 's/ *FAIL$//' "$dir/mutant-$1.cmp")"
}
mutant wte_grad_not_tied 's/    if (opt->tie) pg_allreduce_sum(opt->tie, model->grads.wte/    if (false) pg_allreduce_sum(opt->tie, model->grads.wte/'
mutant norm_per_stage 's/    if (opt->pipe) sumsq = pg_allreduce_sum_double(opt->pipe, sumsq);//'

# 2. checkpoints
strip() { grep -a -E "^step|^val loss" "$1" | sed 's/ | [0-9.]* ms.*//'; }
ck="-e d4 -t 32 -b 2 -d 256 -x 6 -n 3 -v 3 -m 2 -s 6 -g 16 -u 2 -l 3e-3"
run -np 2 ./train_gpt2 $ck -pp 2 -o "$dir/ck" > "$dir/ck-full.txt"
cp -r "$dir/ck" "$dir/ck-cut"
rm "$dir/ck-cut"/*00000006*
echo 3 > "$dir/ck-cut/checkpoint_latest"
cp -r "$dir/ck-cut" "$dir/ck-copy"
run -np 2 ./train_gpt2 $ck -pp 2 -o "$dir/ck-cut" -y 1 > "$dir/ck-resumed.txt"
grep -q "resumed from step 3" "$dir/ck-resumed.txt"
diff <(strip "$dir/ck-full.txt" | grep -A100 "^step    3/6" | tail -n +2) <(strip "$dir/ck-resumed.txt")
diff "$dir/ck/main.log" "$dir/ck-cut/main.log"
sample() { grep -a -A2 "^generating:" "$1" | sed -n 3p; } # the line after "---"
[ -n "$(sample "$dir/ck-full.txt" | tr -d ' ')" ] || { echo "FAIL: the pipeline sampled nothing"; exit 1; }
diff <(sample "$dir/ck-full.txt") <(sample "$dir/ck-resumed.txt")
echo "ok   -pp 2 resumed from step 3: the uninterrupted run's lines and sample ($(sample "$dir/ck-full.txt" | cut -c1-40))"
from="-e $dir/ck/model_00000006.bin -t 32 -b 2 -d 256 -x 3 -v 1000 -m 1 -s 0 -u 2 -l 3e-4" # (3e-3 from here: a loss spike whose norm, 18.7, amplifies the fp32 noise past 2e-4)
./train_gpt2 $from > "$dir/from-one.txt"
run -np 2 ./train_gpt2 $from -pp 2 > "$dir/from-pp.txt"
compare_losses "$dir/from-one.txt" "$dir/from-pp.txt" "its model file: 1 process vs -pp 2" 3
# and the other way: a model file one process wrote starts a pipeline run (-pp 4 over d4's 4 layers)
./train_gpt2 -e d4 -t 32 -b 2 -x 2 -v 1000 -m 1 -s 0 -o "$dir/one" > /dev/null
from_one="-e $dir/one/model_00000002.bin -t 32 -b 2 -d 256 -x 3 -v 1000 -m 1 -s 0 -u 2 -l 3e-4"
./train_gpt2 $from_one > "$dir/one-one.txt"
run -np 4 ./train_gpt2 $from_one -pp 4 > "$dir/one-pp.txt"
compare_losses "$dir/one-one.txt" "$dir/one-pp.txt" "one process's model file: 1 vs -pp 4" 3
failures=0
expect_status 1 "a -pp 2 checkpoint resumed with -pp 1" "written by a run with -pp 2 \(pipeline stages\) but this run has -pp 1" \
    "${MPIRUN[@]}" -np 2 ./train_gpt2 $ck -o "$dir/ck-copy" -y 1
[ $failures -eq 0 ] || exit 1

# 3. memory and bubble, on a model whose stages do equal work
"$PY" tests/dist/small_vocab.py "$dir/sv" 256 8 256
sv="-e $dir/sv/model.bin -i $dir/sv/train.bin -j $dir/sv/val.bin -t 64 -b 2 -v 1000 -m 1 -s 0 -x 5"
for pk in gpipe 1f1b; do run -np 2 ./train_gpt2 $sv -d 1024 -pp 2 -pk $pk > "$dir/mem-$pk.txt"; done
check_stage_memory "$dir/mem-gpipe.txt" "$dir/mem-1f1b.txt" 0
bubble() { # M, schedule: the mean over steps 2-5 of the mean bubble, and the ideal
    run -np 2 ./train_gpt2 $sv -d $(( $1 * 128 )) -pp 2 -pk $2 > "$dir/bubble-$1-$2.txt"
    grep "^step" "$dir/bubble-$1-$2.txt" | sed -n '2,5p' | sed 's/.*| bubble \([0-9.]*\) .*ideal \([0-9.]*\)).*/\1 \2/' |
        awk '{ sum += $1; ideal = $2; n++ } END { printf "%.3f %.3f", sum / n, ideal }'
}
read -r b1 i1 <<<"$(bubble 1 1f1b)"
awk -v b="$b1" -v i="$i1" 'BEGIN { ok = b >= 0.35 && b <= 0.65
    printf "%s bubble at M = 1:  %.3f measured (mean of steps 2-5), ideal %.3f: the stages take turns\n", ok ? "ok  " : "FAIL", b, i; exit !ok }'
for pk in 1f1b gpipe; do
    read -r b16 i16 <<<"$(bubble 16 $pk)"
    awk -v b="$b16" -v i="$i16" -v b1="$b1" -v pk=$pk 'BEGIN { ok = b <= 0.8 * b1
        printf "%s bubble at M = 16, %-5s %.3f measured, ideal %.3f: at most 0.8 of M = 1'"'"'s %.3f (the stages overlap)\n",
            ok ? "ok  " : "FAIL", pk, b, i, b1; exit !ok }'
done

# 4. failures
rm "$dir/ck-copy"/state_00000003_00001.bin
set +e
out=$(run -np 2 ./train_gpt2 $ck -pp 2 -o "$dir/ck-copy" -y 1 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: a missing stage state: exit $rc"; exit 1; }
grep -q "error: \[rank 1 of 2\].*state_00000003_00001.bin" <<<"$out" || { echo "FAIL: no message naming rank 1's file"; echo "$out"; exit 1; }
echo "ok   stage 1's state file missing: every rank stopped ($(grep -m1 -o 'error: \[rank 1 of 2\].*' <<<"$out" | cut -c1-90))"
set +e
out=$(run -np 4 ./train_gpt2 -e d2 -t 32 -b 2 -x 1 -pp 4 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "flag -pp 4: the model has 2 layers, fewer than the stages" <<<"$out" ||
    { echo "FAIL: -pp 4 over d2's 2 layers: exit $rc"; echo "$out"; exit 1; }
echo "ok   -pp 4 over 2 layers: refused ($(grep -m1 -o 'flag -pp 4: .*' <<<"$out"))"
long="-e d4 -t 32 -b 2 -d 512 -x 1000 -v 1000 -m 1 -s 0"
signal_a_stage 5 "$dir" "${MPIRUN[@]}" -np 2 ./train_gpt2 $long -pp 2
