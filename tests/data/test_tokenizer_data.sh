#!/usr/bin/env bash
# prepro_tinyshakespeare: the val/train shards (format, counts, content vs the Python reference) and
# llm.c's gpt2_tokenizer.bin (format, content, round trip through token_decoder_load).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_python regex # the reference tokenizer's
driver=build/tests/tokenizer_driver
make -s --no-print-directory prepro_tinyshakespeare tokenizer $driver
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

./prepro_tinyshakespeare --out-dir "$tmp" --tokenizer-bin "$tmp/gpt2_tokenizer.bin"
ls "$tmp"/*.tmp >/dev/null 2>&1 && { echo "FAIL: temporary files left behind"; exit 1; }
echo "ok: no .tmp files left (atomic writes committed)"
$PY tests/data/check_tokenizer_data.py shards "$tmp/tiny_shakespeare_val.bin" "$tmp/tiny_shakespeare_train.bin" \
    data/tinyshakespeare/input.txt
$PY tests/data/check_tokenizer_data.py bin "$tmp/gpt2_tokenizer.bin" data/gpt2/encoder.json
$driver decoder-bin "$tmp/gpt2_tokenizer.bin"
# the same file from the command-line tool
./tokenizer --write-bin "$tmp/tool.bin" 2>/dev/null
cmp "$tmp/tool.bin" "$tmp/gpt2_tokenizer.bin"
echo "ok: ./tokenizer --write-bin writes the same gpt2_tokenizer.bin"
# decode the val shard's first 64 tokens through the .bin reader and through the Tokenizer: same text
ids=$($PY tests/data/shard_tokens.py "$tmp/tiny_shakespeare_val.bin" 64)
: > "$tmp/via_bin.txt"
for id in $ids; do $driver decoder-piece "$tmp/gpt2_tokenizer.bin" "$id" >> "$tmp/via_bin.txt"; done
$driver decode $ids > "$tmp/via_tok.txt"
cmp "$tmp/via_bin.txt" "$tmp/via_tok.txt"
grep -q "^<|endoftext|>First Citizen:" "$tmp/via_bin.txt"
echo "ok: the val shard's first 64 tokens decode to the same text via gpt2_tokenizer.bin and via the Tokenizer"
# `make data` makes the same three files under data/, and is a no-op once they are up to date
make -s --no-print-directory data > /dev/null
for f in tiny_shakespeare_val.bin tiny_shakespeare_train.bin; do cmp "$tmp/$f" "data/tinyshakespeare/$f"; done
cmp "$tmp/gpt2_tokenizer.bin" data/gpt2_tokenizer.bin
make -q data || { echo "FAIL: make data is not up to date right after make data"; exit 1; }
echo "ok: make data writes the same files to data/, and then has nothing to do (make -q data)"
echo "all data checks passed"
