#!/usr/bin/env bash
# GPU bring-up: everything a lent GPU must answer about the GPU trainer, in two phases of one device call
# each (at most ~6 minutes), every program under a timeout. Each phase ends by printing one table (what ran,
# ok / FAIL / TIMEOUT / not run, seconds, the figure) and leaves in OUTDIR:
#   <phase>_table.txt     the date, the machine (nvidia-smi), the command, the table
#   <phase>.log           every step's command and full output, in order
#   <phase>_logs.tar.gz   the same, one file per step
# Steps run in order of value, so a phase cut short (by its --budget, or by the device call's limit: the
# table is rewritten after every step) still answers the most important questions.
#
#   dev/cuda/bringup.sh [--pack DIR] [--budget SECONDS] correct|fast OUTDIR     on a GPU machine
#   dev/cuda/bringup.sh --rehearse correct|fast OUTDIR                          here, on the CPU emulator
#
# correct  the trainer's test against the PyTorch reference (test_gpt2cu, test_gpt2fp32cu) on the tiny and
#          the GPT-2-vocabulary states at -r 0, the trainer's main against the CPU trainer on d2 (FP32 and
#          BF16), compute-sanitizer memcheck of a training step, every dev/cuda check (correctness, then
#          timing), test_gpt2cu on the LoRA and QLoRA states (both builds), the tests at -r 1..3, two identical runs compared bit for bit, racecheck and initcheck of
#          a training step and memcheck / racecheck of the attention check's small shapes.
# fast     d12 at T=1024 with the largest -b of 64, 32, 16, 8 that fits, 20 steps: ms/step, tok/s, MFU and
#          the memory measured (cudaMemGetInfo) against predicted; the PyTorch peer on the same config
#          (dev/bench/bench_pytorch_gpt2.py) and our tok/s over its; our attention against PyTorch's SDPA at
#          the d12 shapes; -r 1..3 on the same config (step time, memory, and the losses of -r 0 bit for
#          bit); 8-bit against fp32 AdamW and the bandwidth floor; the attention kernels' loads in SASS.
#
# Programs. On a GPU machine they come from the pack (make bringup_pack: build/bringup, built on the
# development machine for one GPU and sm_90a; README "Bring-up on a GPU"); the libraries they need are looked
# up (ldd) in the CUDA toolkit and the Python's nvidia packages there. When a program still cannot load
# (a missing library, an older C library) and nvcc is there, the pack is rebuilt on the GPU machine into
# build/bringup-device. The gpt2v reference states (too big to carry) are made there by train_gpt2.py with
# the first of $PYTHON, python3, /usr/bin/python3 that imports torch and numpy.
#
# --rehearse runs the same steps on the CPU emulator (build/emu: make emu; the trainers built with
# NO_MULTI_GPU=1 in build/emu/single) at tiny sizes: d2 and T=64 instead of d12 and T=1024, test_gpt2cu with
# -q (the reference check only) at -r 0 and 3, the sanitizer steps without compute-sanitizer, the PyTorch
# peer on the CPU; what needs a GPU (SDPA, SASS) is only syntax-checked, or skipped when its tool is absent.
# Its figures are the emulator's and the CPU's, never GPU figures. tests/gpu/test_bringup_rehearse.sh runs it.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
command_line="dev/cuda/bringup.sh $*"
rehearse=0 pack=build/bringup budget="" phase="" out=""
while [ $# -gt 0 ]; do
    case "$1" in
    --rehearse) rehearse=1; shift ;;
    --pack) pack=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "bringup.sh: unknown option $1" >&2; usage ;;
    *) if [ -z "$phase" ]; then phase=$1; elif [ -z "$out" ]; then out=$1; else usage; fi; shift ;;
    esac
done
[ "$phase" = correct ] || [ "$phase" = fast ] || { echo "bringup.sh: the phase is correct or fast, got '$phase'" >&2; usage; }
[ -n "$out" ] || { echo "bringup.sh: no OUTDIR given" >&2; usage; }
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
work=$(mktemp -d)
logs=$work/$phase
mkdir -p "$logs"

# ------------------------------------------------------------------------------------------------------
# the table: one row per step, rewritten to OUTDIR after every step

rows=()
step_no=0
started=$(date +%s)
[ -n "$budget" ] || budget=$([ $rehearse = 1 ] && echo 1800 || echo 330)
deadline=$((started + budget))
machine="(not read yet)"

table() {
    printf "%-56s %-8s %6s  %s\n" step status s figure
    local r
    for r in "${rows[@]}"; do printf "%s\n" "$r"; done
}
write_outputs() {
    {
        echo "bring-up phase '$phase' $([ $rehearse = 1 ] && echo '(REHEARSAL on the CPU emulator: no GPU figures)')"
        echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(($(date +%s) - started)) s of a $budget s budget"
        echo "machine: $machine"
        echo "command: $command_line"
        echo
        table
    } > "$out/${phase}_table.txt"
    : > "$out/$phase.log"
    local f
    for f in "$logs"/*.log; do
        [ -f "$f" ] || continue
        { echo "===== ${f##*/}"; cat "$f"; echo; } >> "$out/$phase.log"
    done
}
# row NAME STATUS SECONDS FIGURE
row() {
    rows+=("$(printf "%-56s %-8s %6s  %s" "$1" "$2" "$3" "${4:0:120}")")
    printf "%-56s %-8s %6s  %s\n" "$1" "$2" "$3" "${4:0:120}"
    write_outputs
}
finish() {
    write_outputs
    tar -czf "$out/${phase}_logs.tar.gz" -C "$work" "$phase" 2>/dev/null
    echo
    cat "$out/${phase}_table.txt"
    local failed
    failed=$(printf "%s\n" "${rows[@]}" | awk '$0 ~ / (FAIL|TIMEOUT) / {n++} END {print n + 0}')
    echo "$failed step(s) failed or timed out; logs in $out"
    rm -rf "$work"
    [ "$failed" -eq 0 ] && exit 0
    exit 1
}
trap 'row "interrupted" FAIL 0 "signal received"; finish' INT TERM

# run NAME LIMIT COMMAND...: COMMAND under a timeout (LIMIT seconds, cut to what the budget has left) with
# its output in the step's log; sets status (ok, FAIL, TIMEOUT, not run), secs and log. Returns COMMAND's
# status (1 when not run).
run() {
    local name=$1 limit=$2
    shift 2
    step_no=$((step_no + 1))
    log=$logs/$(printf %02d $step_no)_${name//[^A-Za-z0-9._-]/_}.log
    local left=$((deadline - $(date +%s) - 5))
    if [ "$left" -lt 15 ]; then
        status="not run" secs=0
        echo "not run: the phase's budget of $budget s is spent" > "$log"
        return 1
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "\$ $* (timeout ${limit}s)" > "$log"
    local t0 rc
    t0=$(date +%s%N)
    timeout -k 10 "$limit" "$@" >> "$log" 2>&1
    rc=$?
    secs=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }')
    case $rc in
    0) status=ok ;;
    124 | 137) status=TIMEOUT ;;
    *) status=FAIL ;;
    esac
    return $rc
}
# step NAME LIMIT FIGURE-FUNCTION COMMAND...: run, then a row with the figure FIGURE-FUNCTION reads off the log
step() {
    local name=$1 limit=$2 fig=$3
    shift 3
    run "$name" "$limit" "$@"
    local rc=$?
    row "$name" "$status" "$secs" "$([ "$status" = "not run" ] && echo "phase budget spent" || $fig "$log")"
    return $rc
}
skip() { row "$1" skipped 0 "$2"; }

# ------------------------------------------------------------------------------------------------------
# figures read off a step's log

fig_last() { grep -v '^\$ ' "$1" | grep -v '^[[:space:]]*$' | tail -1; }
fig_first_fail() { # the first failing line, or the last line
    local f
    f=$(grep -m1 -E '^FAIL|FAIL:|error|Error|ERROR' "$1")
    [ -n "$f" ] && echo "$f" || fig_last "$1"
}
fig_test() { grep -q "checks passed" "$1" && fig_last "$1" || fig_first_fail "$1"; }
fig_check() { # "ok ..." / "FAIL ..." lines, or the attention check's per-shape PASS / FAIL
    local ok fails t
    ok=$(grep -cE '^ok |^ +PASS$' "$1")
    fails=$(grep -cE '^FAIL|^ +FAIL$' "$1")
    t=$(grep -m1 -E '^time |timing \(median' "$1" | sed 's/  */ /g; s/^ //')
    if [ "$ok" -eq 0 ] && [ "$fails" -eq 0 ]; then fig_first_fail "$1"; else echo "$ok ok, $fails FAIL${t:+; $t}"; fi
}
fig_sanitizer() { grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY|INITCHECK SUMMARY|error' "$1" || fig_last "$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# the trainer's step lines "step N/M | loss | lr | norm | X ms | Y tok/s | MFU Z": medians over the steps
# after the first two (cuBLASLt heuristics, allocation), or over all steps of a shorter run
step_medians() { # log -> "ms tok/s MFU"
    local lines skip=2
    lines=$(grep -E '^step +[0-9]+/' "$1")
    [ "$(echo "$lines" | grep -c .)" -gt 2 ] || skip=0
    lines=$(echo "$lines" | tail -n +$((skip + 1)))
    local ms tok mfu
    ms=$(echo "$lines" | awk -F'|' '{ print $5 + 0 }' | median)
    tok=$(echo "$lines" | awk -F'|' '{ print $6 + 0 }' | median)
    mfu=$(echo "$lines" | awk -F'|' '{ sub(/^ *MFU */, "", $7); print $7 }' | sed 's/%//' | grep -v n/a | median)
    echo "$ms $tok $mfu"
}
fig_train() {
    grep -q '^step ' "$1" || { fig_first_fail "$1"; return; }
    local m mem
    read -r -a m <<<"$(step_medians "$1")"
    mem=$(sed -n 's/^memory after the first step: \([0-9.]*\) MiB used.*, \([0-9.]*\) MiB predicted.*/\1 MiB used, \2 predicted/p' "$1")
    local mfu="MFU ${m[2]}%"
    [ "${m[2]}" = n/a ] && mfu="MFU n/a"
    echo "${m[0]} ms/step, ${m[1]} tok/s, $mfu${mem:+, $mem}"
}
fig_sass() { # the totals over the kernels of sass_counts.sh's table
    awk 'NR > 1 && $1 ~ /^[0-9]+$/ { k++; for (i = 1; i <= 5; i++) t[i] += $i }
         END { if (k) printf "%d kernels: LDSM %d, LDS %d, LDG %d, generic LD %d, HMMA %d\n", k, t[1], t[2], t[3], t[4], t[5]; else print "no kernel counted" }' "$1"
}
fig_compare() { fig_last "$1"; } # compare_train_logs.py's one line

# ------------------------------------------------------------------------------------------------------
# the machine, the programs and what they read

py=""
for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null && "$candidate" scripts/missing_python_modules.py torch numpy >/dev/null 2>&1; then
        py=$candidate
        break
    fi
done

if [ $rehearse = 1 ]; then
    TRAIN_DIR=build/emu/single TEST_DIR=build/emu CHECK_DIR=build/emu CPU_TRAINER=./train_gpt2
    TEST_Q="-q" TEST_R_MORE="" # (test_emu_gpt2cu.sh runs the recompute modes)
    SMALL_STEPS=2 SMALL="-e d2 -b 2 -t 64 -l 6e-4 -u 1 -x 2 -v 1 -m 1 -s 0"
    SANITIZE_RUN="-e d2 -b 2 -t 64 -x 1 -v 1 -m 1 -s 1 -g 4"
    # an emulated device of 250 MB: -b 64 runs out of memory (the search goes on), -b 2 fits
    FAST_MODEL=d2 FAST_T=64 FAST_BS="64 2" FAST_STEPS=3 FAST_EMU_MEMORY=250000000
    FAST_RS="3" # (-r 1 and 2 take the same path here; tests/gpu/test_emu_gpt2cu.sh checks every mode)
    SANITIZER=""
    machine="CPU emulator of CUDA on $(nproc) cores ($(uname -m)); not a GPU"
    make -s --no-print-directory emu build/emu/single/train_gpt2cu build/emu/single/train_gpt2fp32cu \
        train_gpt2 data build/test/gpu/tiny_state.bin build/test/gpu/tiny_bf16_state.bin "$pack/test/gpu/gpt2v.args" "$pack/test/gpu/gpt2v_bf16.args" \
        $(for n in lora_tiny lora_tiny_bf16 lora_tiny_nf4 lora_tiny_nf4_bf16; do echo build/test/gpu/${n}_state.bin; done) ||
        { row "build (rehearsal)" FAIL 0 "make failed"; finish; }
    TINY_STATES=build/test/gpu
else
    TRAIN_DIR=$pack TEST_DIR=$pack CHECK_DIR=$pack/dev/cuda CPU_TRAINER=$pack/train_gpt2
    TEST_Q="" TEST_R_MORE="1 2 3"
    SMALL_STEPS=10 SMALL="-e d2 -b 4 -t 64 -l 6e-4 -u 1 -x 10 -v 5 -m 2 -s 0"
    SANITIZE_RUN="-e d2 -b 2 -t 64 -x 1 -v 1 -m 1 -s 1 -g 4"
    FAST_MODEL=d12 FAST_T=1024 FAST_BS="64 32 16 8" FAST_STEPS=20 FAST_RS="1 2 3"
    SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    machine=$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | head -1)
    TINY_STATES=$pack/test/gpu
fi

# step 1: the machine, in one log
run machine 60 bash -c "date -u; uname -a; nvidia-smi 2>&1 | head -20; nvcc --version 2>&1 | tail -2; \
    echo python: ${py:-none imports torch and numpy}; ${py:-true} -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available())'; \
    echo compute-sanitizer: ${SANITIZER:-none}; ${SANITIZER:-true} --version 2>&1 | tail -1; nproc; free -g | head -2"
row machine "$status" "$secs" "$machine; python ${py:-none}"

# step 2: the programs load (GPU machine: find the libraries, else rebuild here)
list_programs() { # every program the phases run, from TRAIN_DIR, TEST_DIR, CHECK_DIR, CPU_TRAINER
    programs=("$TRAIN_DIR/train_gpt2cu" "$TRAIN_DIR/train_gpt2fp32cu" "$TEST_DIR/test_gpt2cu" "$TEST_DIR/test_gpt2fp32cu")
    local c
    for c in encoder_check layernorm_check gelu_check matmul_check classifier_check adamw_check attention_check; do
        programs+=("$CHECK_DIR/$c" "$CHECK_DIR/${c}_fp32")
    done
    programs+=("$CHECK_DIR/quantize_check" "$CHECK_DIR/adamw8bit_check" "$CPU_TRAINER")
}
list_programs
missing_libs() { local p; for p in "$@"; do ldd "$p" 2>&1 | awk '/not found/ { print $1 }'; done | sort -u; }
load_failures() { # programs that are missing or do not start (prints their names)
    local p
    for p in "$@"; do
        if [ ! -x "$p" ] || "$p" --no-such-flag 2>&1 | grep -qE 'error while loading shared libraries|GLIBC_|GLIBCXX_|cannot execute'; then echo "$p"; fi
    done
}
step_no=$((step_no + 1))
log=$logs/$(printf %02d $step_no)_libraries.log
{
    echo "programs: ${programs[*]}"
    if [ $rehearse = 0 ]; then
        for lib in $(missing_libs "${programs[@]}" 2>/dev/null); do
            dirs=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64)
            [ -n "$py" ] && mapfile -t -O ${#dirs[@]} dirs < <("$py" -c 'import os, nvidia, torch; [print(p) for p in list(nvidia.__path__) + [os.path.dirname(torch.__file__) + "/lib"]]' 2>/dev/null)
            found=$(find "${dirs[@]}" -name "$lib" 2>/dev/null | head -1)
            echo "missing $lib: ${found:-not found in ${dirs[*]}}"
            [ -n "$found" ] && export LD_LIBRARY_PATH=$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        done
        echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
        command -v cuobjdump >/dev/null && echo "architectures of train_gpt2cu: $(cuobjdump --list-elf "$TRAIN_DIR/train_gpt2cu" 2>&1 | grep -o 'sm_[0-9a-z]*' | sort -u | tr '\n' ' ')"
    fi
    for p in "${programs[@]}"; do echo "--- $p"; ldd "$p" 2>&1 | grep -vE 'linux-vdso|ld-linux'; done
} > "$log" 2>&1
broken=$(load_failures "${programs[@]}")
if [ -n "$broken" ] && [ $rehearse = 0 ]; then
    echo "cannot load: $broken" >> "$log"
    row libraries FAIL 0 "$(echo "$broken" | wc -l) program(s) do not load; rebuilding on this machine"
    pack=build/bringup-device
    step "build the pack here" 300 fig_last make -j"$(nproc)" --no-print-directory NO_MULTI_GPU=1 CUDA_ARCH=90a CUDA_BUILD=$pack cuda $pack/train_gpt2
    TRAIN_DIR=$pack TEST_DIR=$pack CHECK_DIR=$pack/dev/cuda CPU_TRAINER=$pack/train_gpt2
    list_programs
    broken=$(load_failures "${programs[@]}")
fi
if [ -n "$broken" ]; then
    row "programs load" FAIL 0 "cannot start: $(echo $broken)"
    finish
fi
row "programs load" ok 0 "${#programs[@]} programs; $(grep -c '=> /' "$log") library lines resolved; LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-unset}"

# the data (the pack carries it; the repository's data/ is where the trainers look by default)
for f in data/tinyshakespeare/tiny_shakespeare_train.bin data/tinyshakespeare/tiny_shakespeare_val.bin data/gpt2_tokenizer.bin; do
    [ -f "$f" ] || { mkdir -p "$(dirname "$f")" && cp "$pack/$f" "$f"; } || { row data FAIL 0 "no $f (and none in $pack)"; finish; }
done

# ------------------------------------------------------------------------------------------------------
# phase correct

# the gpt2v reference states, made here by train_gpt2.py (the pack has the arguments)
# (in $GPT2V_DIR: build/test/gpu, or $BRINGUP_STATE_DIR)
GPT2V_DIR=${BRINGUP_STATE_DIR:-build/test/gpu}
make_gpt2v_states() {
    local name
    for name in gpt2v gpt2v_bf16; do
        [ -f "$GPT2V_DIR/${name}_state.bin" ] && continue
        mkdir -p "$GPT2V_DIR"
        # shellcheck disable=SC2046
        "$py" train_gpt2.py $(sed "s#build/test/gpu/#$GPT2V_DIR/#g" "$pack/test/gpu/$name.args") > /dev/null || return 1
    done
    ls -la "$GPT2V_DIR"
    echo "$GPT2V_DIR/gpt2v{,_bf16}_{model,state}.bin: $(du -cm "$GPT2V_DIR"/gpt2v* | tail -1 | cut -f1) MB"
}
# the trainer's main against the CPU trainer, same flags: losses, lr, norms, val losses
compare_with_cpu() { # binary tolerance (the GPU run first: with no usable GPU it fails at once)
    "$1" $SMALL > "$work/gpu.txt" || return 1
    "$CPU_TRAINER" $SMALL > "$work/cpu.txt" || return 1
    cat "$work/gpu.txt"
    "$py" tests/common/compare_train_logs.py "$work/cpu.txt" "$work/gpu.txt" --steps "$SMALL_STEPS" --tol "$2" --label "$1 against $CPU_TRAINER"
}
two_identical_runs() {
    "$TRAIN_DIR/train_gpt2cu" $SMALL > "$work/run1.txt" || return 1
    "$TRAIN_DIR/train_gpt2cu" $SMALL > "$work/run2.txt" || return 1
    cat "$work/run1.txt"
    "$py" tests/common/compare_train_logs.py "$work/run1.txt" "$work/run2.txt" --steps "$SMALL_STEPS" --identical --label "two runs of $TRAIN_DIR/train_gpt2cu"
}
# ZeRO-2 and ZeRO-3 on one GPU (their collectives are copies): the units' buckets, views and gathers on a
# real device; ZeRO-3 with -r 3 prints the bits of ZeRO-2 (the same shards; recompute is bit-exact)
zero_one_gpu() {
    "$TRAIN_DIR/train_gpt2cu" $SMALL -z 2 > "$work/z2.txt" || return 1
    "$TRAIN_DIR/train_gpt2cu" $SMALL -z 3 -r 3 > "$work/z3.txt" || return 1
    grep -E "^step|ZeRO buckets|memory after" "$work/z3.txt"
    "$py" tests/common/compare_train_logs.py "$work/z2.txt" "$work/z3.txt" --steps "$SMALL_STEPS" --identical --label "-z 3 -r 3 against -z 2"
}
export -f compare_with_cpu two_identical_runs zero_one_gpu make_gpt2v_states
export CPU_TRAINER SMALL SMALL_STEPS TRAIN_DIR py work pack GPT2V_DIR

# test_gpt2cu on one state: name precision r
test_run() {
    local name=$1 precision=$2 r=$3 bin=$TEST_DIR/test_gpt2cu dir=$TINY_STATES suffix=_bf16
    [ "$precision" = fp32 ] && bin=$TEST_DIR/test_gpt2fp32cu suffix=""
    [ "${name#gpt2v}" != "$name" ] && dir=$GPT2V_DIR
    step "test_gpt2cu $precision $name -r $r" 300 fig_test "$bin" "$dir/${name}${suffix}_model.bin" "$dir/${name}${suffix}_state.bin" -r "$r" $TEST_Q
}
sanitize() { # tool label command...
    local tool=$1 label=$2
    shift 2
    if [ $rehearse = 1 ]; then
        step "$tool $label (rehearsal: no sanitizer)" 300 fig_last "$@"
    elif [ ! -x "$SANITIZER" ]; then
        skip "$tool $label" "no compute-sanitizer on this machine"
    else
        local extra=()
        [ "$tool" = racecheck ] && extra=(--racecheck-report hazard)
        step "$tool $label" 240 fig_sanitizer "$SANITIZER" --tool "$tool" "${extra[@]}" --error-exitcode 9 "$@"
    fi
}

if [ "$phase" = correct ]; then
    test_run tiny bf16 0
    test_run tiny fp32 0
    if [ -z "$py" ]; then
        skip "gpt2v reference states" "no Python here imports torch and numpy"
    else
        step "gpt2v reference states (train_gpt2.py)" 240 fig_last bash -c make_gpt2v_states
        if [ "$status" = ok ]; then
            test_run gpt2v bf16 0
            test_run gpt2v fp32 0
        fi
        step "train_gpt2fp32cu vs CPU trainer (d2, 1e-4)" 240 fig_compare bash -c "compare_with_cpu $TRAIN_DIR/train_gpt2fp32cu 1e-4"
        step "train_gpt2cu vs CPU trainer (d2, 1e-2)" 240 fig_compare bash -c "compare_with_cpu $TRAIN_DIR/train_gpt2cu 1e-2"
    fi
    sanitize memcheck "train_gpt2cu step" "$TRAIN_DIR/train_gpt2cu" $SANITIZE_RUN
    for c in attention_check matmul_check layernorm_check classifier_check encoder_check gelu_check adamw_check; do
        step "$c" 180 fig_check "$CHECK_DIR/$c"
        step "${c}_fp32" 180 fig_check "$CHECK_DIR/${c}_fp32"
    done
    step adamw8bit_check 180 fig_check "$CHECK_DIR/adamw8bit_check"
    step quantize_check 180 fig_check "$CHECK_DIR/quantize_check"
    # LoRA (adapters on every block matrix) and QLoRA (NF4 base) against their PyTorch states
    for name in lora_tiny lora_tiny_nf4; do
        test_run $name bf16 0
        test_run $name fp32 0
    done
    for r in $TEST_R_MORE; do
        test_run tiny bf16 "$r"
        test_run tiny fp32 "$r"
        if [ -f "$GPT2V_DIR/gpt2v_bf16_state.bin" ] && [ $rehearse = 0 ]; then
            test_run gpt2v bf16 "$r"
            test_run gpt2v fp32 "$r"
        fi
    done
    [ -n "$py" ] && step "two identical runs (train_gpt2cu d2)" 240 fig_compare bash -c two_identical_runs
    [ -n "$py" ] && step "ZeRO-3 -r 3 = ZeRO-2 on one GPU (d2)" 240 fig_compare bash -c zero_one_gpu
    sanitize racecheck "train_gpt2cu step" "$TRAIN_DIR/train_gpt2cu" $SANITIZE_RUN
    sanitize initcheck "train_gpt2cu step" "$TRAIN_DIR/train_gpt2cu" $SANITIZE_RUN
    sanitize memcheck "attention_check --quick" "$CHECK_DIR/attention_check" --quick
    sanitize racecheck "attention_check --quick" "$CHECK_DIR/attention_check" --quick
    finish
fi

# ------------------------------------------------------------------------------------------------------
# phase fast

fast_flags() { echo "-e $FAST_MODEL -b $1 -t $FAST_T -x $FAST_STEPS -v 1000 -m 1 -s 0"; }
B=""
[ $rehearse = 1 ] && export CUDA_EMU_MEMORY=$FAST_EMU_MEMORY # for the d2 runs only
for b in $FAST_BS; do
    name="train_gpt2cu $FAST_MODEL -b $b -t $FAST_T -r 0"
    # shellcheck disable=SC2046
    run "$name" 240 "$TRAIN_DIR/train_gpt2cu" $(fast_flags "$b") -r 0
    if [ "$status" = FAIL ] && grep -qiE 'out of memory|cudaErrorMemoryAllocation' "$log"; then
        row "$name" "too big" "$secs" "$(fig_first_fail "$log")" # not a failure: try the next -b
        continue
    fi
    row "$name" "$status" "$secs" "$(fig_train "$log")"
    [ "$status" = ok ] && B=$b && cp "$log" "$work/r0.txt"
    break
done
if [ -n "$B" ]; then
    read -r -a ours <<<"$(step_medians "$work/r0.txt")"
    if [ -z "$py" ]; then
        skip "PyTorch peer" "no Python here imports torch"
    else
        peer=(--n-layer 12 --n-head 12 --n-embd 768 -B "$B" -T "$FAST_T" --steps "$FAST_STEPS" --warmup 5
            --input data/tinyshakespeare/tiny_shakespeare_train.bin)
        [ $rehearse = 1 ] && peer=(--device cpu --no-compile --n-layer 2 --n-head 2 --n-embd 128 -B "$B" -T "$FAST_T"
            --steps "$FAST_STEPS" --warmup 1 --input data/tinyshakespeare/tiny_shakespeare_train.bin)
        step "PyTorch peer (bench_pytorch_gpt2.py, same config)" 300 fig_last env PYTHONUNBUFFERED=1 "$py" dev/bench/bench_pytorch_gpt2.py "${peer[@]}"
        theirs=$(sed -n 's/^median tokens\/s over [0-9]* steps: \([0-9.]*\)/\1/p' "$log")
        if [ -n "$theirs" ] && [ "${ours[1]}" != n/a ]; then
            row "ours / PyTorch tok/s" ok 0 "$(awk -v a="${ours[1]}" -v b="$theirs" 'BEGIN { printf "%.2f (%.0f / %.0f tok/s)", a / b, a, b }')"
        else
            row "ours / PyTorch tok/s" FAIL 0 "no figure (ours ${ours[1]}, PyTorch ${theirs:-none})"
        fi
    fi
    for r in $FAST_RS; do
        # shellcheck disable=SC2046
        step "train_gpt2cu $FAST_MODEL -b $B -t $FAST_T -r $r" 240 fig_train "$TRAIN_DIR/train_gpt2cu" $(fast_flags "$B") -r $r
        if [ "$status" = ok ] && [ -n "$py" ]; then
            run "losses -r $r = -r 0" 60 "$py" tests/common/compare_train_logs.py "$work/r0.txt" "$log" --steps "$FAST_STEPS" --identical --label "-r $r against -r 0"
            row "losses -r $r = -r 0 (bit for bit)" "$status" "$secs" "$(fig_compare "$log")"
        fi
    done
else
    row "largest -b that fits" FAIL 0 "none of $FAST_BS ran"
fi
unset CUDA_EMU_MEMORY
step "attention_check (ours, timing)" 180 fig_check "$CHECK_DIR/attention_check"
if [ $rehearse = 1 ]; then
    step "attention_sdpa_bench.py (rehearsal: syntax only)" 60 fig_last "${py:-python3}" -m py_compile dev/cuda/attention_sdpa_bench.py
elif [ -n "$py" ]; then
    step "attention_sdpa_bench.py (PyTorch SDPA flash)" 180 fig_last "$py" dev/cuda/attention_sdpa_bench.py
fi
step "adamw8bit_check (8-bit vs fp32 AdamW)" 180 fig_check "$CHECK_DIR/adamw8bit_check"
row "  AdamW timings" info 0 "$(grep -E '^time .*AdamW' "$log" | sed 's/  */ /g' | cut -c6- | tr '\n' ';')"
if command -v cuobjdump >/dev/null || [ -x /usr/local/cuda/bin/cuobjdump ]; then
    sass_bin=$TRAIN_DIR/train_gpt2cu
    [ $rehearse = 1 ] && sass_bin=build/bringup/train_gpt2cu
    if [ -f "$sass_bin" ]; then
        step "SASS of the attention kernels" 120 fig_sass bash dev/cuda/sass_counts.sh "$sass_bin" attention
    else
        skip "SASS of the attention kernels" "no $sass_bin (make bringup_pack)"
    fi
else
    skip "SASS of the attention kernels" "no cuobjdump on this machine"
fi
finish
