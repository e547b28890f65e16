# shellcheck shell=bash
# lib.sh: sourced by the test scripts, which tests/run.sh runs from the repository root.
#   PY                      the Python that has torch and numpy (Debian's)
#   require_python MODULE.. fail unless $PY imports every MODULE
#   MPIRUN                  mpirun with the options every test needs (as root, more ranks than cores)
#   require_mpirun          fail unless mpirun exists
#   make_reference_states   the PyTorch reference states under build/test/ (below)
#   expect_status           one bad-input case: exit status and message (below)
#   check_resume            a CPU run cut at step 4 and resumed prints what the uninterrupted run printed (below)
#   header_mutant           a test program must FAIL against a header with a planted bug (below)
#   step_losses, compare_losses   the loss and norm of a run's step lines; two runs compared (below)
#   signal_a_stage          a pipeline job's rank stopped, then killed, mid-run: the job ends (below)
#   check_stage_memory      a pipeline's per-stage memory table: allocated = predicted, 1F1B below GPipe (below)
PY=/usr/bin/python3

require_python() { # MODULE...
    local missing
    missing=$("$PY" scripts/missing_python_modules.py "$@") || {
        echo "error: $PY cannot import $missing: install the Debian packages (bash scripts/install_deps.sh)" >&2
        exit 1
    }
}

# OpenMPI refuses to run as root without --allow-run-as-root, and more ranks than cores without oversubscribing
MPIRUN=(mpirun --oversubscribe)
if [ "$(id -u)" -eq 0 ]; then MPIRUN+=(--allow-run-as-root); fi
export OMPI_MCA_rmaps_base_oversubscribe=1
require_mpirun() {
    command -v mpirun >/dev/null || { echo "error: mpirun not found: install openmpi-bin libopenmpi-dev (apt-get)" >&2; exit 1; }
}

# train_gpt2.py's models and debug states (float64) that test_gpt2 and test_gpt2cu compare with, made by the
# Makefile (REFERENCE_STATES: remade when train_gpt2.py changes) as build/test/NAME_model.bin and
# build/test/NAME_state.bin:
#   tiny, tiny_bf16          64-token vocabulary, L=2 C=32 NH=2, B=4 T=16 (the CPU trainer's)
#   gpt2v                    GPT-2's vocabulary, L=2 C=128 NH=2, B=4 T=64, Tiny Shakespeare tokens (head size
#                            64: both trainers' tests take it)
#   gpu/tiny, gpu/tiny_bf16  64-token vocabulary, L=2 C=128 NH=2 (head size 64, as the GPU trainer's flash
#                            attention needs), B=4 T=32
# A _bf16 model holds the fp32 one's weights rounded to bf16, in a bf16 (version 5) checkpoint.
make_reference_states() { # NAME...
    require_python torch numpy
    local targets=() name
    for name in "$@"; do targets+=("build/test/${name}_state.bin"); done
    make -s --no-print-directory "${targets[@]}"
}

# expect_status WANT WHAT PATTERN CMD...: one case of a bad-input test. CMD runs under a 60 s timeout; the
# case passes when it exits with WANT (1: refused by fail(); 0: accepted) and a line of its output matches
# the extended regex PATTERN, which for WANT=1 must be the "error: " line (not a crash, a hang or a message of
# the wrong kind). Prints "ok   WHAT: <the line>" or "FAIL ..." with the output's end; counts failures in
# the caller's $failures.
expect_status() {
    local want=$1 what=$2 pattern=$3 out rc line
    shift 3
    set +e
    out=$(timeout 60 "$@" 2>&1)
    rc=$?
    set -e
    line=$(grep -m1 -E -e "$pattern" <<<"$out" || true)
    if [ $rc -eq "$want" ] && [ -n "$line" ] && { [ "$want" -eq 0 ] || grep -q "^error: " <<<"$line"; }; then
        echo "ok   $what: $line"
    else
        echo "FAIL $what: exit $rc (expected $want) and a line matching '$pattern'; got:"
        tail -5 <<<"$out"
        failures=$((failures + 1))
    fi
}

# check_resume DIR NAME FLAGS: ./train_gpt2 FLAGS (which must train 8 steps with a checkpoint every 4: -x 8
# -n 4) into DIR/NAME-full; a copy of it as a run stopped after step 4 would have left it (the step-8
# checkpoint removed, the pointer at step 4) is resumed, and its step and val lines (without the timing)
# and its main.log must equal the uninterrupted run's, character for character. set -e stops the caller
# on a difference (diff prints it).
check_resume() {
    local dir=$1 name=$2 flags=$3
    # shellcheck disable=SC2086 # the flags are words
    ./train_gpt2 $flags -o "$dir/$name-full" > "$dir/$name-full.txt"
    cp -r "$dir/$name-full" "$dir/$name-cut"
    rm "$dir/$name-cut"/model_00000008.bin "$dir/$name-cut"/state_00000008_*.bin
    echo 4 > "$dir/$name-cut/checkpoint_latest"
    # shellcheck disable=SC2086
    ./train_gpt2 $flags -o "$dir/$name-cut" -y 1 > "$dir/$name-resumed.txt"
    grep -q "resumed from step 4" "$dir/$name-resumed.txt"
    strip() { grep -E "^step|^val loss" "$1" | sed 's/ | [0-9.]* ms.*//'; }
    diff <(strip "$dir/$name-full.txt" | grep -A100 "^step    4/8" | tail -n +2) <(strip "$dir/$name-resumed.txt")
    diff "$dir/$name-full/main.log" "$dir/$name-cut/main.log"
    echo "ok   $name: resumed run identical to the uninterrupted run ($(strip "$dir/$name-resumed.txt" | wc -l) lines)"
}

# header_mutant NAME HEADER SED TEST_SOURCE: builds TEST_SOURCE (a test_common.h program) against a copy of
# HEADER (llmc/<name>.h) changed by the sed expression SED, under build/mutants/NAME, and runs it: it must
# report "checks FAILED" and exit 1. Prints whether the mutant was caught; exits 1 if not, or if the sed
# changed nothing. (The test's #include "llmc/..." finds the copy: -I of the mutant's folder comes first,
# and tests/<concern>/ holds no llmc/.)
header_mutant() {
    local name=$1 header=$2 expr=$3 src=$4 dir=build/mutants/$1 out rc
    mkdir -p "$dir/$(dirname "$header")"
    sed "$expr" "$header" >"$dir/$header"
    if cmp -s "$header" "$dir/$header"; then
        echo "the sed for mutant '$name' matched nothing"
        exit 1
    fi
    ${CXX:-g++} -O2 -march=native -std=c++17 -fopenmp -Wno-psabi -I"$dir" -I. "$src" -o "$dir/test"
    set +e
    out=$(OMP_NUM_THREADS=2 "$dir/test" 2>&1)
    rc=$?
    set -e
    if [ $rc -eq 1 ] && grep -q "checks FAILED" <<<"$out"; then
        echo "mutant '$name' caught: $(grep -c '^FAIL' <<<"$out") failing checks"
    else
        echo "mutant '$name' NOT caught (exit $rc):"
        echo "$out"
        exit 1
    fi
}

# step_losses FILE: "loss norm" of every step line of a trainer's output
step_losses() { grep "^step" "$1" | sed 's/.*| loss \([0-9.]*\) .*| norm \([0-9.]*\) .*/\1 \2/'; }
# compare_losses REF OTHER LABEL STEPS: OTHER's losses match REF's to 2e-5 relative and its gradient norms to
# 2e-4 (two units of the printed last digit), over exactly STEPS steps; prints one line, exits 1 if not. The
# tolerance of runs that differ only in the order of fp32 sums (several processes, accumulation,
# pipeline stages: ~1e-6), against a missing factor or a lost contribution (1e-3 or more; a missing 1/N
# leaves the losses equal under clipping but doubles the norm).
compare_losses() {
    paste <(step_losses "$1") <(step_losses "$2") | awk -v label="$3" -v steps="$4" '
        { n++; d = $1 - $3; if (d < 0) d = -d; r = d / $1; if (r > worst) worst = r; if (r > 2e-5) bad++
          dn = $2 - $4; if (dn < 0) dn = -dn; if (dn > worst_norm) worst_norm = dn; if (dn > 2e-4) bad++ }
        END { printf "%-34s %2d steps, max rel diff of the loss %.2e, of the norm %.1e %s\n", label, n, worst,
                     worst_norm, (bad || n != steps) ? "FAIL" : "ok";
              exit (bad || n != steps) }'
}

# signal_a_stage TIMEOUT_S DIR CMD...: runs CMD (an mpirun job of pipeline stages, LLMC_STEP_TIMEOUT_S =
# TIMEOUT_S) twice in the background, output in DIR/sig-<SIG>.txt; after its second step line stops one of
# its ranks (SIGSTOP), then kills one (SIGKILL). Each time the job must end within 100 s with a non-zero
# status, and after SIGSTOP with the watchdog's "no progress" message; prints a line each, exits 1 if not.
# Sets the globals job and pid (the job and the rank signalled) for the caller's cleanup trap.
signal_a_stage() {
    local timeout_s=$1 dir=$2 sig start rc took out
    shift 2
    for sig in STOP KILL; do
        out=$dir/sig-$sig.txt
        start=$(date +%s)
        LLMC_STEP_TIMEOUT_S=$timeout_s "$@" > "$out" 2>&1 &
        job=$!
        for _ in $(seq 300); do grep -q "^step    2" "$out" 2>/dev/null && break; sleep 0.2; done
        pid=$(pgrep -P $job | tail -1 || true) # (mpirun starts the ranks as its children)
        [ -n "$pid" ] || { echo "FAIL: no rank process found"; kill -9 $job; exit 1; }
        kill -$sig "$pid"
        for _ in $(seq 600); do kill -0 $job 2>/dev/null || break; sleep 0.2; done # at most 120 s
        kill -9 $job 2>/dev/null || true
        set +e
        wait $job
        rc=$?
        set -e
        kill -9 "$pid" 2>/dev/null || true
        took=$(( $(date +%s) - start ))
        [ $rc -ne 0 ] && [ $took -lt 100 ] || { echo "FAIL: SIG$sig of a stage: exit $rc after $took s"; cat "$out"; exit 1; }
        if [ $sig = STOP ]; then
            grep -q "no progress" "$out" || { echo "FAIL: SIGSTOP: no watchdog message"; cat "$out"; exit 1; }
        fi
        echo "ok   SIG$sig of a stage mid-run: the job ended in $took s, exit $rc $(grep -m1 -o 'error: .*no progress[^(]*' "$out" | cut -c1-80)"
    done
}

# check_stage_memory GPIPE_LOG 1F1B_LOG TOL: the per-stage memory tables (llmc/pipeline.h's
# pipeline_print_memory) of two 2-stage runs at M = 8, GPipe's and 1F1B's: on every stage the allocated
# total (column 8) is the predicted one (column 9) to TOL MiB; on stage 0, 1F1B holds 2 micro-batches
# (column 7) and GPipe 8, and 1F1B's activations (column 6) and total are the smaller.
check_stage_memory() {
    local file s row g f
    for file in "$1" "$2"; do
        for s in 0 1; do
            row=$(grep -E "^ +$s +[0-9]+-[0-9]+ " "$file") || { echo "FAIL: no row for stage $s in $file"; exit 1; }
            awk -v r="$row" -v tol="$3" -v what="$(basename "$file") stage $s" 'BEGIN { n = split(r, x); d = x[8] - x[9]
                if (d < 0) d = -d; ok = n == 9 && d <= tol
                printf "%s %s: allocated %s MiB, predicted %s MiB\n", ok ? "ok  " : "FAIL", what, x[8], x[9]; exit !ok }'
        done
    done
    g=$(grep -E "^ +0 +[0-9]+-[0-9]+ " "$1") f=$(grep -E "^ +0 +[0-9]+-[0-9]+ " "$2")
    awk -v g="$g" -v f="$f" 'BEGIN { split(g, G); split(f, F)
        ok = G[7] == 8 && F[7] == 2 && F[6] < G[6] && F[8] < G[8]
        printf "%s stage 0 at M = 8: 1F1B holds %d micro-batches, %.2f MiB of activations (%.2f in all); GPipe %d, %.2f MiB (%.2f)\n",
            ok ? "ok  " : "FAIL", F[7], F[6], F[8], G[7], G[6], G[8]; exit !ok }'
}
