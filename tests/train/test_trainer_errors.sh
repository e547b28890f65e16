#!/usr/bin/env bash
# Bad input to the CPU trainer: each case must exit non-zero (not by a signal, not by the timeout) with an
# error that names the file or flag and what was expected.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory train_gpt2 data
make_reference_states tiny
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1
failures=0

# expect_error "what" "expected message regex" args...: the CPU trainer, one step, refused (lib.sh)
expect_error() { expect_status 1 "$1" "$2" ./train_gpt2 -x 1 -s 0 -m 1 "${@:3}"; }

good=build/test/tiny_model.bin
size=$(stat -c %s $good)
# checkpoints
printf 'garbage!' | dd of="$dir/magic.bin" bs=1 conv=notrunc status=none; cat $good >> "$dir/magic.bin"
expect_error "checkpoint with wrong magic" "is not a GPT-2 model file: expected magic 20240326" -e "$dir/magic.bin"
cp $good "$dir/version.bin"; printf '\x07\x00\x00\x00' | dd of="$dir/version.bin" bs=1 seek=4 conv=notrunc status=none
expect_error "checkpoint with wrong version" "unsupported model file version 7" -e "$dir/version.bin"
head -c $((size - 100)) $good > "$dir/truncated.bin"
expect_error "checkpoint with truncated tensors" "the file has $((size - 100)) bytes" -e "$dir/truncated.bin"
cp $good "$dir/sizes.bin"; printf '\x03\x00\x00\x00' | dd of="$dir/sizes.bin" bs=1 seek=16 conv=notrunc status=none
expect_error "header sizes disagree with the file" "header declares .* parameters" -e "$dir/sizes.bin"
head -c 100 $good > "$dir/short.bin"
expect_error "checkpoint shorter than its header" "truncated: expected 1024 bytes of the 1024-byte model header" -e "$dir/short.bin"
expect_error "missing checkpoint" "neither a model file nor a descriptor" -e "$dir/nope.bin"
# data shards
val=data/tinyshakespeare/tiny_shakespeare_val.bin
head -c 5000 $val > "$dir/short_shard.bin"
expect_error "shard shorter than its header says" "header says 32768 tokens .* but file has 5000 bytes" -e d2 -t 32 -i "$dir/short_shard.bin"
cp $val "$dir/bigtoken.bin"; printf '\xff\xff' | dd of="$dir/bigtoken.bin" bs=1 seek=$((1024 + 2 * 40)) conv=notrunc status=none
expect_error "shard with a token >= vocab" "token 65535 at position 40 is >= vocab size 50257" -e d2 -t 32 -i "$dir/bigtoken.bin"
expect_error "missing shard" "no token shard matches '$dir/none_\*.bin'" -e d2 -i "$dir/none_*.bin"
expect_error "the tiny model (V=64) on GPT-2 tokens" "is >= vocab size 64" -e $good -t 16
# flags
expect_error "unknown flag" "unknown flag -zz" -zz 3
expect_error "a GPU-only flag" "flag -r is a flag of the GPU trainer" -r 1
expect_error "malformed number" "flag -b expects an integer, got 'four'" -b four
expect_error "flag without a value" "flag -l expects a value" -l
expect_error "not a flag" "expected a flag like -b, got 'oops'" oops 1
expect_error "unknown schedule" "-k" -k sawtooth
expect_error "out-of-range ZeRO stage" "flag -z expects an integer in \[0, 3\], got 4" -z 4
expect_error "T larger than maxT" "sequence length 2048 exceeds the model's maximum 1024" -e d2 -t 2048
expect_error "total batch not a multiple of B*T" "total batch 1000 tokens is not a multiple of B\*T\*replicas" -e d2 -b 2 -t 32 -d 1000

# -h prints the usage and exits 0; every flag the usage lists is one the parser accepts
./train_gpt2 -h > "$dir/usage.txt"
for f in $(grep -oE '^  -[a-z0-9]+' "$dir/usage.txt" | tr -d ' '); do
    [ "$f" = "-h" ] && continue
    if ./train_gpt2 "$f" 2>&1 | grep -q "unknown flag"; then echo "FAIL usage lists $f but the parser rejects it"; failures=$((failures + 1)); fi
done
echo "usage lists $(grep -cE '^  -[a-z0-9]+' "$dir/usage.txt") flags, all accepted by the parser"

# OpenMP's barrier spins: short unless the user chose (the trainer restarts itself with GOMP_SPINCOUNT set,
# so that libgomp reads it; the threads line reports what the running process has)
spin_line() { env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY "$@" ./train_gpt2 -e d2 -b 1 -t 32 -x 1 -v 1000 -m 1 -s 0 | grep "^threads:"; }
for want in "(GOMP_SPINCOUNT=3000: spin briefly" "GOMP_SPINCOUNT=77)" "OMP_WAIT_POLICY=active)"; do
    case "$want" in
    GOMP*) line=$(spin_line GOMP_SPINCOUNT=77) ;;
    OMP*) line=$(spin_line OMP_WAIT_POLICY=active) ;;
    *) line=$(spin_line) ;;
    esac
    if grep -qF "$want" <<<"$line"; then echo "ok   OpenMP waits: $line"; else echo "FAIL OpenMP waits: expected '$want', got '$line'"; failures=$((failures + 1)); fi
done
[ $failures -eq 0 ]
