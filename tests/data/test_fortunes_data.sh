#!/usr/bin/env bash
# prepro_fortunes (the second corpus, issue 12's fine-tuning data: Debian's `fortunes` package): its shards
# equal what the Python reference encoder makes from the same files by the same recipe (written
# independently in tests/data/check_tokenizer_data.py), the trainer trains on them, `make data_fortunes`
# writes the same files, and a missing or empty corpus directory is a clear error.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_python regex
corpus=/usr/share/games/fortunes
[ -f $corpus/literature ] || { echo "error: $corpus missing: install Debian's fortunes (bash scripts/install_deps.sh)"; exit 1; }
make -s --no-print-directory prepro_fortunes train_gpt2 data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

./prepro_fortunes --out-dir "$tmp"
ls "$tmp"/*.tmp >/dev/null 2>&1 && { echo "FAIL: temporary files left behind"; exit 1; }
$PY tests/data/check_tokenizer_data.py fortunes "$tmp/fortunes_val.bin" "$tmp/fortunes_train.bin" $corpus
OMP_NUM_THREADS=2 timeout 120 ./train_gpt2 -e d1 -b 4 -t 64 -x 2 -v 2 -m 2 -s 0 \
    -i "$tmp/fortunes_train.bin" -j "$tmp/fortunes_val.bin" > "$tmp/train.txt"
grep -q "^train: 640843 tokens in 1 shards" "$tmp/train.txt" && grep -q "^final val loss" "$tmp/train.txt" ||
    { echo "FAIL: the trainer did not train on the shards"; cat "$tmp/train.txt"; exit 1; }
echo "ok: train_gpt2 trains on them ($(grep '^final val loss' "$tmp/train.txt"))"
make -s --no-print-directory data_fortunes > /dev/null
for f in fortunes_val.bin fortunes_train.bin; do cmp "$tmp/$f" "data/fortunes/$f"; done
make -q data_fortunes || { echo "FAIL: make data_fortunes is not up to date right after itself"; exit 1; }
echo "ok: make data_fortunes writes the same files to data/fortunes/"

mkdir -p "$tmp/empty"
expect_status 1 "a missing corpus directory" "could not open the fortunes directory '$tmp/nope': .*apt-get install fortunes" \
    ./prepro_fortunes --input-dir "$tmp/nope" --out-dir "$tmp/out"
expect_status 1 "an empty corpus directory" "'$tmp/empty' holds no fortune files" ./prepro_fortunes --input-dir "$tmp/empty" --out-dir "$tmp/out"
expect_status 1 "an output directory that is a file" "'$tmp/fortunes_val.bin' exists but is not a directory" \
    ./prepro_fortunes --out-dir "$tmp/fortunes_val.bin"
[ $failures -eq 0 ]
