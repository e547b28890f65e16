#!/usr/bin/env bash
# Bad files to every reader of a token shard (the CPU trainer's data loader), a debug state (test_gpt2), a
# gpt2_tokenizer.bin (token_decoder_load, through the test driver and the trainer), an encoder.json /
# vocab.bpe (./tokenizer) and to prepro_tinyshakespeare's inputs and outputs. Each case is one defect of a
# good file (tests/data/make_bad_files.py): wrong magic or version, truncated header or payload, counts that
# are negative, huge for the file, or wrap when multiplied, out-of-range token ids, trailing bytes, and a
# FIFO, a directory or an empty file in place of the file. Each must exit non-zero by fail(): not by a
# signal (>= 128), not by the timeout (124: a FIFO opened for reading blocks forever), with an error naming
# the file and the problem. Every case runs under a 1 GB address-space limit, so a header that sizes a
# huge allocation before it is checked shows as "out of memory" (the wrong message), not as a pass.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
driver=build/tests/tokenizer_driver
make -s --no-print-directory train_gpt2 test_gpt2 tokenizer prepro_tinyshakespeare $driver
make_reference_states tiny
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1
failures=0

# expect_bad DESCRIPTION FILE PATTERN CMD... : CMD must fail by fail() with an error line that holds both
# FILE (the path it names) and PATTERN
expect_bad() {
    local desc=$1 file=$2 pattern=$3
    shift 3
    local rc=0
    (ulimit -v 1000000; exec timeout 20 "$@") > "$tmp/out" 2> "$tmp/err" < /dev/null || rc=$?
    local line
    line=$(grep -m1 '^error: ' "$tmp/err" || true)
    local why=""
    if [ $rc -eq 0 ]; then why="exit status 0"
    elif [ $rc -eq 126 ] || [ $rc -eq 127 ]; then why="could not run $1"
    elif [ $rc -eq 124 ]; then why="timed out (a hang)"
    elif [ $rc -ge 128 ]; then why="killed by signal $((rc - 128))"
    elif ! grep -qF -- "$file" <<<"$line"; then why="the error does not name '$file'"
    elif ! grep -qF -- "$pattern" <<<"$line"; then why="the error lacks '$pattern'"
    fi
    if [ -n "$why" ]; then
        echo "FAIL $desc: $why (exit $rc); stderr:"; tail -n 5 "$tmp/err" | sed 's/^/   | /'
        failures=$((failures + 1))
    else
        echo "ok   $desc -> ${line:0:160}"
    fi
}

./tokenizer --write-bin "$tmp/good_tok.bin" 2> /dev/null
$PY tests/data/make_bad_files.py "$tmp" build/test/tiny_state.bin "$tmp/good_tok.bin"
mkfifo "$tmp/fifo"
mkdir "$tmp/dir"
: > "$tmp/empty"
b=$tmp # where make_bad_files.py wrote the bad files

echo "--- token shards (./train_gpt2 -i / -j)"
# one step of the tiny model (V=64) on 16-token rows; then -i TRAIN -j VAL
train=(./train_gpt2 -x 1 -s 0 -m 1 -e build/test/tiny_model.bin -b 2 -t 16)
"${train[@]}" -i "$b/shard_good.bin" -j "$b/shard_good.bin" > /dev/null
echo "ok   the good shard trains"
expect_bad "wrong magic" "$b/shard_magic.bin" "expected magic 20240520, got 20240521" "${train[@]}" -i "$b/shard_magic.bin" -j "$b/shard_good.bin"
expect_bad "wrong version" "$b/shard_version.bin" "expected version 1, got 2" "${train[@]}" -i "$b/shard_version.bin" -j "$b/shard_good.bin"
expect_bad "truncated header" "$b/shard_short_header.bin" "has 100 bytes, shorter than the 1024-byte header" "${train[@]}" -i "$b/shard_short_header.bin" -j "$b/shard_good.bin"
expect_bad "truncated tokens" "$b/shard_truncated.bin" "header says 3000 tokens (7024 bytes) but file has 2000 bytes" "${train[@]}" -i "$b/shard_truncated.bin" -j "$b/shard_good.bin"
expect_bad "negative count" "$b/shard_negative.bin" "header says -3000 tokens" "${train[@]}" -i "$b/shard_negative.bin" -j "$b/shard_good.bin"
expect_bad "2^31-1 tokens in a 1 KB file" "$b/shard_huge.bin" "header says 2147483647 tokens (4294968318 bytes) but file has 1024 bytes" "${train[@]}" -i "$b/shard_huge.bin" -j "$b/shard_good.bin"
expect_bad "bytes after the tokens" "$b/shard_extra.bin" "but file has 7026 bytes" "${train[@]}" -i "$b/shard_extra.bin" -j "$b/shard_good.bin"
expect_bad "odd file size" "$b/shard_odd.bin" "but file has 7025 bytes" "${train[@]}" -i "$b/shard_odd.bin" -j "$b/shard_good.bin"
expect_bad "token = vocab size" "$b/shard_oob.bin" "token 64 at position 1234 is >= vocab size 64" "${train[@]}" -i "$b/shard_oob.bin" -j "$b/shard_good.bin"
expect_bad "token 65535" "$b/shard_max.bin" "token 65535 at position 1234" "${train[@]}" -i "$b/shard_max.bin" -j "$b/shard_good.bin"
expect_bad "bad validation shard" "$b/shard_truncated.bin" "but file has 2000 bytes" "${train[@]}" -i "$b/shard_good.bin" -j "$b/shard_truncated.bin"
expect_bad "FIFO as the shard" "$b/fifo" "not a regular file" "${train[@]}" -i "$b/fifo" -j "$b/shard_good.bin"
expect_bad "directory as the shard" "$b/dir" "is a directory" "${train[@]}" -i "$b/dir" -j "$b/shard_good.bin"
expect_bad "empty shard" "$b/empty" "has 0 bytes, shorter than the 1024-byte header" "${train[@]}" -i "$b/empty" -j "$b/shard_good.bin"
expect_bad "glob matching nothing" "$b/none_*.bin" "no token shard matches" "${train[@]}" -i "$b/none_*.bin" -j "$b/shard_good.bin"
expect_bad "glob matching a bad shard among good ones" "$b/shard_magic.bin" "expected magic 20240520" "${train[@]}" -i "$b/shard_[gm]*.bin" -j "$b/shard_good.bin"
expect_bad "shard smaller than one batch" "$b/shard_good.bin" "one global batch needs" ./train_gpt2 -x 1 -e build/test/tiny_model.bin -b 200 -t 16 -i "$b/shard_good.bin" -j "$b/shard_good.bin"

echo "--- debug states (./test_gpt2 MODEL STATE)"
state=(./test_gpt2 build/test/tiny_model.bin)
expect_bad "wrong magic" "$b/state_magic.bin" "is not a debug state: expected magic 20240327" "${state[@]}" "$b/state_magic.bin"
expect_bad "wrong version" "$b/state_version.bin" "got 20240327 version 1" "${state[@]}" "$b/state_version.bin"
expect_bad "truncated header" "$b/state_short_header.bin" "is truncated: expected 1024 bytes of the debug state header" "${state[@]}" "$b/state_short_header.bin"
expect_bad "truncated payload" "$b/state_truncated.bin" "but the file has 140292 bytes" "${state[@]}" "$b/state_truncated.bin"
expect_bad "bytes after the payload" "$b/state_extra.bin" "but the file has 140336 bytes" "${state[@]}" "$b/state_extra.bin"
expect_bad "B*T that wraps in 32 bits to the good B*T" "$b/state_bt_wraps.bin" "header says B=268435460 T=16" "${state[@]}" "$b/state_bt_wraps.bin"
expect_bad "B = 2^30 in a 1 KB file" "$b/state_huge_b.bin" "but the file has 1024 bytes" "${state[@]}" "$b/state_huge_b.bin"
expect_bad "negative B" "$b/state_negative_b.bin" "bad header B=-4" "${state[@]}" "$b/state_negative_b.bin"
expect_bad "T beyond the model's maxT" "$b/state_long_t.bin" "bad header B=4 T=4096" "${state[@]}" "$b/state_long_t.bin"
expect_bad "negative step count" "$b/state_negative_steps.bin" "steps=-1" "${state[@]}" "$b/state_negative_steps.bin"
expect_bad "huge step count" "$b/state_huge_steps.bin" "steps=2147483647" "${state[@]}" "$b/state_huge_steps.bin"
expect_bad "input token = V" "$b/state_oob_input.bin" "input token 64 at position 5 is outside the model's vocab [0, 64)" "${state[@]}" "$b/state_oob_input.bin"
expect_bad "negative target token" "$b/state_negative_target.bin" "target token -1 at position 7" "${state[@]}" "$b/state_negative_target.bin"
expect_bad "FIFO as the state" "$b/fifo" "not a regular file" "${state[@]}" "$b/fifo"
expect_bad "directory as the state" "$b/dir" "is a directory" "${state[@]}" "$b/dir"
expect_bad "empty state" "$b/empty" "is truncated: expected 1024 bytes" "${state[@]}" "$b/empty"

echo "--- gpt2_tokenizer.bin (token_decoder_load)"
piece=("$driver" decoder-piece) # PATH ID
expect_bad "wrong magic" "$b/tok_magic.bin" "is not a gpt2_tokenizer.bin: magic number 20240329" "${piece[@]}" "$b/tok_magic.bin" 0
expect_bad "wrong version" "$b/tok_version.bin" "unsupported version 3" "${piece[@]}" "$b/tok_version.bin" 0
expect_bad "truncated header" "$b/tok_short_header.bin" "is truncated: expected 1024 bytes of the 256-int32 header" "${piece[@]}" "$b/tok_short_header.bin" 0
expect_bad "truncated table" "$b/tok_truncated.bin" "is truncated" "${piece[@]}" "$b/tok_truncated.bin" 0
expect_bad "2^24 tokens in a 1 KB file" "$b/tok_huge_vocab.bin" "a vocab of 16777216 tokens needs at least 33554432 bytes" "${piece[@]}" "$b/tok_huge_vocab.bin" 0
expect_bad "vocab size 2^31-1" "$b/tok_int_max_vocab.bin" "vocab size 2147483647 is not in 1..16777216" "${piece[@]}" "$b/tok_int_max_vocab.bin" 0
expect_bad "negative vocab size" "$b/tok_negative_vocab.bin" "vocab size -50257" "${piece[@]}" "$b/tok_negative_vocab.bin" 0
expect_bad "EOT = vocab size" "$b/tok_eot.bin" "EOT token 50257 is outside the vocab" "${piece[@]}" "$b/tok_eot.bin" 0
expect_bad "zero-length token" "$b/tok_zero_length.bin" "token 0 has length 0" "${piece[@]}" "$b/tok_zero_length.bin" 0
expect_bad "a length past the end" "$b/tok_past_end.bin" "token 50256 has length 255, but only 13 bytes are left" "${piece[@]}" "$b/tok_past_end.bin" 0
expect_bad "one byte after the last token" "$b/tok_extra.bin" "unexpected bytes after the last of 50257 tokens" "${piece[@]}" "$b/tok_extra.bin" 0
expect_bad "more bytes than the vocab can hold" "$b/tok_v2_too_big.bin" "unexpected bytes after the last of 3 tokens" "${piece[@]}" "$b/tok_v2_too_big.bin" 0
expect_bad "FIFO as the tokenizer" "$b/fifo" "not a regular file" "${piece[@]}" "$b/fifo" 0
expect_bad "directory as the tokenizer" "$b/dir" "is a directory" "${piece[@]}" "$b/dir" 0
expect_bad "empty tokenizer" "$b/empty" "is truncated: expected 1024 bytes" "${piece[@]}" "$b/empty" 0
expect_bad "the trainer's -tk" "$b/tok_past_end.bin" "token 50256 has length 255" ./train_gpt2 -x 1 -s 0 -m 1 -e d2 -b 1 -t 16 -i "$b/shard_good.bin" -j "$b/shard_good.bin" -tk "$b/tok_past_end.bin"

echo "--- encoder.json / vocab.bpe (./tokenizer)"
enc=(./tokenizer --bpe "$b/bpe_good.bpe" --encoder) # the last --bpe / --encoder given wins
printf ab | "${enc[@]}" "$b/enc_good.json" | grep -qx 256
echo "ok   the small good vocab encodes 'ab' as 256"
expect_bad "empty encoder.json" "$b/enc_empty.json" "expected '{' at byte 0" "${enc[@]}" "$b/enc_empty.json"
expect_bad "truncated encoder.json" "$b/enc_truncated.json" "is not a valid encoder.json" "${enc[@]}" "$b/enc_truncated.json"
expect_bad "negative id" "$b/enc_negative_id.json" "expected a non-negative integer token id" "${enc[@]}" "$b/enc_negative_id.json"
expect_bad "id of 20 digits" "$b/enc_huge_id.json" "expected a token id below 2^30" "${enc[@]}" "$b/enc_huge_id.json"
expect_bad "bytes after the object" "$b/enc_trailing.json" "expected nothing after the closing '}'" "${enc[@]}" "$b/enc_trailing.json"
expect_bad "FIFO as encoder.json" "$b/fifo" "not a regular file" "${enc[@]}" "$b/fifo"
expect_bad "directory as encoder.json" "$b/dir" "is a directory" "${enc[@]}" "$b/dir"
expect_bad "empty vocab.bpe" "$b/bpe_empty.bpe" "is not a valid vocab.bpe" "${enc[@]}" "$b/enc_good.json" --bpe "$b/bpe_empty.bpe"
expect_bad "vocab.bpe without merges" "$b/bpe_header_only.bpe" "holds no merges" "${enc[@]}" "$b/enc_good.json" --bpe "$b/bpe_header_only.bpe"
expect_bad "CRLF vocab.bpe" "$b/bpe_crlf.bpe" "not in GPT-2's byte-to-unicode map" "${enc[@]}" "$b/enc_good.json" --bpe "$b/bpe_crlf.bpe"
expect_bad "blank line in vocab.bpe" "$b/bpe_blank_line.bpe" "line 2: expected two tokens separated by one space" "${enc[@]}" "$b/enc_good.json" --bpe "$b/bpe_blank_line.bpe"
expect_bad "merge of unknown tokens" "$b/bpe_unknown.bpe" "line 3: merge 'ab zz' needs" "${enc[@]}" "$b/enc_good.json" --bpe "$b/bpe_unknown.bpe"
expect_bad "FIFO as vocab.bpe" "$b/fifo" "not a regular file" "${enc[@]}" "$b/enc_good.json" --bpe "$b/fifo"
expect_bad "--write-bin of a 300-byte token" "$b/long.bin" "token 258 is 300 bytes long, the format allows 1..255" "${enc[@]}" "$b/enc_long_token.json" --bpe "$b/bpe_good.bpe" --write-bin "$b/long.bin"
if [ -e "$b/long.bin" ] || [ -e "$b/long.bin.tmp" ]; then
    echo "FAIL the refused --write-bin left a file"; failures=$((failures + 1))
fi
expect_bad "--write-bin to a directory" "$b/dir" "is a directory" "${enc[@]}" "$b/enc_good.json" --bpe "$b/bpe_good.bpe" --write-bin "$b/dir"
expect_bad "--write-bin to a FIFO" "$b/fifo" "not a regular file" "${enc[@]}" "$b/enc_good.json" --bpe "$b/bpe_good.bpe" --write-bin "$b/fifo"

echo "--- prepro_tinyshakespeare"
mkdir "$tmp/prepro"
# the small vocab, outputs in $tmp/prepro unless later flags say otherwise (the last of a flag wins); then --input
prepro=(./prepro_tinyshakespeare --encoder "$b/enc_good.json" --bpe "$b/bpe_good.bpe" --out-dir "$tmp/prepro"
    --tokenizer-bin "$tmp/prepro/tok.bin" --input)
printf 'ab ab\n\nab' > "$tmp/small.txt"
expect_bad "FIFO as the input" "$b/fifo" "not a regular file" "${prepro[@]}" "$b/fifo"
expect_bad "directory as the input" "$b/dir" "is a directory" "${prepro[@]}" "$b/dir"
expect_bad "empty input" "$b/empty" "gives only 1 tokens, fewer than the 32768" "${prepro[@]}" "$b/empty"
expect_bad "input too short" "$tmp/small.txt" "fewer than the 32768" "${prepro[@]}" "$tmp/small.txt"
expect_bad "out-dir is a file" "$tmp/small.txt/tiny_shakespeare_val.bin" "'$tmp/small.txt' is not a directory" "${prepro[@]}" "$tmp/small.txt" --out-dir "$tmp/small.txt"
expect_bad "out-dir does not exist" "$tmp/nodir/tiny_shakespeare_val.bin" "No such file or directory" "${prepro[@]}" "$tmp/small.txt" --out-dir "$tmp/nodir"
expect_bad "tokenizer-bin is a directory" "$b/dir" "is a directory" "${prepro[@]}" "$tmp/small.txt" --tokenizer-bin "$b/dir"
expect_bad "tokenizer-bin in a missing directory" "$tmp/nodir/tok.bin" "No such file or directory" "${prepro[@]}" "$tmp/small.txt" --tokenizer-bin "$tmp/nodir/tok.bin"
expect_bad "vocab beyond uint16 ids" "$b/enc_big_vocab.json" "70258 tokens: ids above 65535 do not fit" "${prepro[@]}" "$tmp/small.txt" --encoder "$b/enc_big_vocab.json"
expect_bad "vocab with a 300-byte token" "$tmp/prepro/tok.bin" "token 258 is 300 bytes long" "${prepro[@]}" "$tmp/small.txt" --encoder "$b/enc_long_token.json"
expect_bad "bad encoder.json" "$b/enc_truncated.json" "is not a valid encoder.json" "${prepro[@]}" "$tmp/small.txt" --encoder "$b/enc_truncated.json"
# and the good case: what it writes, the trainer and the decoder read
"$PY" -c "open('$tmp/ab.txt', 'w').write('ab ' * 20000)"
mkdir "$tmp/good"
"${prepro[@]}" "$tmp/ab.txt" --out-dir "$tmp/good" --tokenizer-bin "$tmp/good/tok.bin" > /dev/null
[ "$("${piece[@]}" "$tmp/good/tok.bin" 256)" = ab ]
./train_gpt2 -x 1 -s 0 -m 1 -e d2 -b 1 -t 16 -i "$tmp/good/tiny_shakespeare_train.bin" \
    -j "$tmp/good/tiny_shakespeare_val.bin" > /dev/null
echo "ok   a good prepro run's shards and tokenizer load"
if [ -n "$(ls -A "$tmp/prepro")" ]; then
    echo "FAIL the failed prepro runs left files:"; ls -A "$tmp/prepro"; failures=$((failures + 1))
else
    echo "ok   the failed prepro runs left no file behind"
fi

[ $failures -eq 0 ] || { echo "$failures case(s) failed"; exit 1; }
echo "all bad-file cases passed"
