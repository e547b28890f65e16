#!/usr/bin/env bash
# Bad input to ./tokenizer, to tokenizer_load (malformed encoder.json / vocab.bpe), to token_decoder_load
# (corrupted or truncated gpt2_tokenizer.bin) and to prepro_tinyshakespeare: each must exit with status 1
# (fail(), not a crash: a crash is 134/139) and print a message that names the problem.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
driver=build/tests/tokenizer_driver
make -s --no-print-directory tokenizer prepro_tinyshakespeare $driver
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect_fail DESCRIPTION PATTERN CMD... : CMD (stdin from the caller) must exit 1 with PATTERN on stderr
expect_fail() {
    local desc=$1 pattern=$2
    shift 2
    local rc=0
    "$@" > "$tmp/out" 2> "$tmp/err" || rc=$?
    if [ "$rc" -ne 1 ]; then
        echo "FAIL: $desc: exit status $rc, expected 1; stderr:"; cat "$tmp/err"; exit 1
    fi
    if ! grep -qF -- "$pattern" "$tmp/err"; then
        echo "FAIL: $desc: stderr lacks '$pattern':"; cat "$tmp/err"; exit 1
    fi
    echo "ok: $desc -> $(head -n1 "$tmp/err" | cut -c1-150)"
}

echo "--- ./tokenizer command line"
expect_fail "unknown flag" "unknown argument '--bogus'" ./tokenizer --bogus < /dev/null
expect_fail "flag without its value" "flag --encoder expects a path" ./tokenizer --encoder
expect_fail "--decode with --allow-special" "--allow-special applies to encoding" ./tokenizer --decode --allow-special < /dev/null
expect_fail "non-numeric id" "token 2 on stdin is 'abc'" ./tokenizer --decode <<< "15496 abc 995"
expect_fail "negative id" "token 1 on stdin is '-1'" ./tokenizer --decode <<< "-1"
expect_fail "id with trailing junk" "is '12x'" ./tokenizer --decode <<< "12x"
expect_fail "id out of range" "token 2 on stdin is 50257, out of range" ./tokenizer --decode <<< "0 50257"
expect_fail "huge id" "'99999999999'" ./tokenizer --decode <<< "99999999999"
expect_fail "missing encoder.json" "could not open '$tmp/nope.json'" ./tokenizer --encoder "$tmp/nope.json" < /dev/null
expect_fail "--write-bin into a missing directory" "could not open '$tmp/no/dir.bin.tmp'" ./tokenizer --write-bin "$tmp/no/dir.bin"
./tokenizer -h > "$tmp/usage" # not a pipe into grep -q: its early exit would be a SIGPIPE to a line-buffered writer
grep -q -- "--write-bin PATH" "$tmp/usage"
echo "ok: -h prints the usage"
expect_fail "tokenizer_decode of a bad id" "token id 50257 (position 1) is out of range" $driver decode 15 50257

echo "--- malformed encoder.json / vocab.bpe"
head -c 5000 data/gpt2/encoder.json > "$tmp/trunc.json"
expect_fail "truncated encoder.json" "'$tmp/trunc.json' is not a valid encoder.json" ./tokenizer --encoder "$tmp/trunc.json" < /dev/null
sed 's/"!": 0,/"!": 1,/' data/gpt2/encoder.json > "$tmp/dup.json"
expect_fail "two tokens with one id" "'$tmp/dup.json': id 1 is used by two tokens" ./tokenizer --encoder "$tmp/dup.json" < /dev/null
sed 's/"!": 0,/"!": 70000,/' data/gpt2/encoder.json > "$tmp/range.json"
expect_fail "id beyond the vocab" "'$tmp/range.json': token '!' has id 70000" ./tokenizer --encoder "$tmp/range.json" < /dev/null
sed 's/"!": 0,/"!": x,/' data/gpt2/encoder.json > "$tmp/notint.json"
expect_fail "non-integer id" "expected a non-negative integer token id" ./tokenizer --encoder "$tmp/notint.json" < /dev/null
sed 's/"!": 0,/"! ": 0,/' data/gpt2/encoder.json > "$tmp/space.json"
expect_fail "raw space in a token" "not in GPT-2's byte-to-unicode map" ./tokenizer --encoder "$tmp/space.json" < /dev/null
tail -n +2 data/gpt2/vocab.bpe > "$tmp/nohdr.bpe"
expect_fail "vocab.bpe without header" "'$tmp/nohdr.bpe' is not a valid vocab.bpe" ./tokenizer --bpe "$tmp/nohdr.bpe" < /dev/null
{ cat data/gpt2/vocab.bpe; echo "abc"; } > "$tmp/oneword.bpe"
expect_fail "merge line with one token" "'$tmp/oneword.bpe' line 50002: expected two tokens" ./tokenizer --bpe "$tmp/oneword.bpe" < /dev/null
{ head -n 3 data/gpt2/vocab.bpe; echo "zq xj"; } > "$tmp/unknown.bpe"
expect_fail "merge of unknown tokens" "'$tmp/unknown.bpe' line 4: merge 'zq xj' needs" ./tokenizer --bpe "$tmp/unknown.bpe" < /dev/null
{ head -n 3 data/gpt2/vocab.bpe; sed -n 2p data/gpt2/vocab.bpe; } > "$tmp/twice.bpe"
expect_fail "duplicate merge" "line 4: merge 'Ġ t' appears twice" ./tokenizer --bpe "$tmp/twice.bpe" < /dev/null

echo "--- corrupted gpt2_tokenizer.bin"
./tokenizer --write-bin "$tmp/good.bin" 2>/dev/null
$driver decoder-piece "$tmp/good.bin" 50256 | grep -qxF "<|endoftext|>"
echo "ok: the good file loads"
patch_int32() { $PY tests/data/patch_int32.py "$@"; } # FILE SLOT VALUE
cp "$tmp/good.bin" "$tmp/magic.bin"; patch_int32 "$tmp/magic.bin" 0 12345
expect_fail "bad magic" "'$tmp/magic.bin' is not a gpt2_tokenizer.bin: magic number 12345" $driver decoder-piece "$tmp/magic.bin" 0
cp "$tmp/good.bin" "$tmp/version.bin"; patch_int32 "$tmp/version.bin" 1 3
expect_fail "bad version" "'$tmp/version.bin': unsupported version 3" $driver decoder-piece "$tmp/version.bin" 0
cp "$tmp/good.bin" "$tmp/vocab.bin"; patch_int32 "$tmp/vocab.bin" 2 -5
expect_fail "negative vocab size" "'$tmp/vocab.bin': vocab size -5" $driver decoder-piece "$tmp/vocab.bin" 0
cp "$tmp/good.bin" "$tmp/bigvocab.bin"; patch_int32 "$tmp/bigvocab.bin" 2 50258
expect_fail "vocab size larger than the file" "'$tmp/bigvocab.bin' is truncated" $driver decoder-piece "$tmp/bigvocab.bin" 0
cp "$tmp/good.bin" "$tmp/smallvocab.bin"; patch_int32 "$tmp/smallvocab.bin" 2 50000
expect_fail "vocab size smaller than the file" "EOT token 50256 is outside the vocab of 50000" $driver decoder-piece "$tmp/smallvocab.bin" 0
cp "$tmp/good.bin" "$tmp/eot.bin"; patch_int32 "$tmp/eot.bin" 3 60000
expect_fail "EOT out of range" "'$tmp/eot.bin': EOT token 60000 is outside the vocab" $driver decoder-piece "$tmp/eot.bin" 0
head -c 500 "$tmp/good.bin" > "$tmp/short.bin"
expect_fail "truncated header" "'$tmp/short.bin' is truncated: expected 1024 bytes of the 256-int32 header" $driver decoder-piece "$tmp/short.bin" 0
head -c 200000 "$tmp/good.bin" > "$tmp/cut.bin"
expect_fail "truncated token table" "'$tmp/cut.bin' is truncated" $driver decoder-piece "$tmp/cut.bin" 0
{ cat "$tmp/good.bin"; printf 'x'; } > "$tmp/long.bin"
expect_fail "trailing bytes" "'$tmp/long.bin': unexpected bytes after the last of 50257 tokens" $driver decoder-piece "$tmp/long.bin" 0
cp "$tmp/good.bin" "$tmp/zero.bin"; printf '\x00' | dd of="$tmp/zero.bin" bs=1 seek=1024 conv=notrunc status=none
expect_fail "zero-length token" "'$tmp/zero.bin': token 0 has length 0" $driver decoder-piece "$tmp/zero.bin" 0
expect_fail "piece of a bad id" "token id 50257 is out of range: the tokenizer has ids 0..50256" $driver decoder-piece "$tmp/good.bin" 50257
expect_fail "piece of a negative id" "token id -1 is out of range" $driver decoder-piece "$tmp/good.bin" -1
expect_fail "missing file" "could not open '$tmp/none.bin'" $driver decoder-piece "$tmp/none.bin" 0

echo "--- prepro_tinyshakespeare"
expect_fail "missing input" "could not open '$tmp/none.txt'" ./prepro_tinyshakespeare --input "$tmp/none.txt" --out-dir "$tmp"
printf 'tiny\n\ntext' > "$tmp/tiny.txt"
expect_fail "input too short for the val split" "fewer than the 32768" ./prepro_tinyshakespeare --input "$tmp/tiny.txt" --out-dir "$tmp"
expect_fail "unknown flag" "unknown argument '--bogus'" ./prepro_tinyshakespeare --bogus
echo "all error checks passed"
