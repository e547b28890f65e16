#!/usr/bin/env bash
# Checks of the PyTorch reference train_gpt2.py itself (its files feed every C++/CUDA test), of
# dev/plot_log.py and of the benchmark's CPU path. Independent of the C++ code.
#   (a) a numpy-only reader parses the model and state files back: header fields, exact file sizes, zero
#       padded wte rows (weights and gradient), bf16 file == fp32 file rounded to nearest even, loss ==
#       cross-entropy of the written logits, x/y from a token shard
#   (b) gradient check: central finite differences in float64 vs the written gradients (rel. error < 1e-5);
#       the state's AdamW losses vs an independent numpy AdamW replay, and train_gpt2.AdamW's parameters vs
#       that replay; fp32->bf16 rounding on ties; bad flags and files fail clearly (in-process, saves imports)
#   (c) the same seed writes identical files (and another seed does not)
#   (d) plot_log.py writes a PNG, fails clearly on a missing file and on a file with no parsable lines
#   (e) the benchmark runs 2 steps on the CPU with --no-compile
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/usr/bin/python3}
DIR=$(mktemp -d /tmp/test_pytorch_reference.XXXXXX)
trap 'rm -rf "$DIR"' EXIT

CFG=(--vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 -B 4 -T 16)

echo "== writing the tiny model (fp32, bf16) and state"
$PY train_gpt2.py "${CFG[@]}" --seed 7 --write-model "$DIR/m32.bin" --write-state "$DIR/s.bin" \
    --write-final-model "$DIR/final.bin" >"$DIR/run1.txt"
$PY train_gpt2.py "${CFG[@]}" --seed 7 --model-dtype bf16 --write-model "$DIR/m16.bin" \
    --write-state "$DIR/s2.bin" --adamw-steps 3 >/dev/null
# a token shard: 100 tokens below V=64 with a known pattern
$PY tests/model/make_token_shard.py "$DIR/tok.bin"
$PY train_gpt2.py "${CFG[@]}" --seed 8 --tokens "$DIR/tok.bin" --write-state "$DIR/s_tok.bin" --adamw-steps 0 \
    --write-model "$DIR/m32c.bin" >/dev/null

echo "== (a) independent reader"
$PY tests/model/check_reference_files.py "$DIR"

echo "== (b) finite-difference gradient check, AdamW replay, error paths"
$PY tests/model/check_reference_math.py "$DIR"

echo "== (c) determinism"
$PY train_gpt2.py "${CFG[@]}" --seed 7 --write-model "$DIR/m32b.bin" --write-state "$DIR/sb.bin" >/dev/null
cmp "$DIR/m32.bin" "$DIR/m32b.bin" && cmp "$DIR/s.bin" "$DIR/sb.bin"
echo "  ok    seed 7 twice: identical model and state files"
if cmp -s "$DIR/m32.bin" "$DIR/m32c.bin"; then
    echo "  FAIL  seeds 7 and 8 wrote the same model"
    exit 1
fi
echo "  ok    seed 8 writes a different model"
ls "$DIR"/*.tmp >/dev/null 2>&1 && { echo "  FAIL  a .tmp file was left behind"; exit 1; }
echo "  ok    no .tmp files left behind"

expect_fail() {  # expect_fail "<what>" "<message substring>" cmd...: must exit non-zero naming the problem
    local what=$1 msg=$2
    shift 2
    if "$@" >"$DIR/out.txt" 2>&1; then
        echo "  FAIL  $what: exited 0"
        exit 1
    fi
    grep -q -- "$msg" "$DIR/out.txt" || { echo "  FAIL  $what: no '$msg' in:"; cat "$DIR/out.txt"; exit 1; }
    echo "  ok    $what fails clearly: $(grep -m1 -- "$msg" "$DIR/out.txt")"
}

echo "== (d) plot_log.py"
cat >"$DIR/a.log" <<'LOG'
s:0 trl:4.50 lr:0.0001 norm:2.0
s:0 tel:4.60
a line that is not a log record
s:1 trl:4.20 lr:0.0002 norm:1.5 ms:12.5 tok/s:100000
s:2 trl:4.00 lr:0.0003 norm:1.2
s:2 tel:4.10
LOG
sed 's/trl:4/trl:3/' "$DIR/a.log" >"$DIR/b.log"
$PY dev/plot_log.py "$DIR/a.log" "$DIR/b.log" --labels "run a,run b" -o "$DIR/plot.png"
$PY tests/model/check_png.py "$DIR/plot.png"
expect_fail "plot_log.py on a missing file" "does not exist" $PY dev/plot_log.py "$DIR/missing.log" -o "$DIR/x.png"
echo "nothing to see" >"$DIR/empty.log"
expect_fail "plot_log.py on a log with no records" "no parsable lines" \
    $PY dev/plot_log.py "$DIR/empty.log" -o "$DIR/x.png"

echo "== (e) benchmark, 2 steps on the CPU"
$PY dev/bench/bench_pytorch_gpt2.py --device cpu --no-compile --vocab-size 64 --n-layer 2 --n-head 2 --n-embd 32 \
    --block-size 32 -B 2 -T 16 --steps 2 --warmup 1 --input "$DIR/tok.bin" >"$DIR/bench.txt"
cat "$DIR/bench.txt" | sed 's/^/  | /'
grep -q "^step    2/2 " "$DIR/bench.txt" && grep -q "^median tokens/s over 1 steps" "$DIR/bench.txt" \
    && grep -q "^MFU: n/a" "$DIR/bench.txt" || { echo "  FAIL  benchmark output incomplete"; exit 1; }
echo "  ok    benchmark ran 2 steps, printed the median and MFU n/a on the CPU"
echo "all PyTorch reference checks passed"
