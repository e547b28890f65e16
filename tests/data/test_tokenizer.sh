#!/usr/bin/env bash
# GPT-2 tokenizer (llmc/tokenizer.h, ./tokenizer) against an independent Python reference
# (dev/data/gpt2_bpe_reference.py, OpenAI's algorithm with the `regex` module), plus round trips and
# special-token handling. Exact equality everywhere: token ids are integers, there is no tolerance.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
require_python regex # the reference tokenizer's
driver=build/tests/tokenizer_driver
make -s --no-print-directory tokenizer $driver
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "--- Unicode tables"
if [ ! -f /usr/share/unicode/UnicodeData.txt ] || [ ! -f /usr/share/unicode/PropList.txt ]; then
    echo "FAIL: /usr/share/unicode/{UnicodeData,PropList}.txt missing: install Debian's unicode-data package"
    exit 1
fi
$PY dev/data/gen_unicode_tables.py > "$tmp/unicode_tables.h" 2>/dev/null
cmp "$tmp/unicode_tables.h" llmc/unicode_tables.h
echo "ok: llmc/unicode_tables.h is what dev/data/gen_unicode_tables.py generates from /usr/share/unicode"
# every code point's class (L / N / White_Space / other) vs Python's regex module, which has its own tables
$PY tests/data/tokenizer_corpus.py classes > "$tmp/classes_ref.txt"
$driver classes > "$tmp/classes_cpp.txt"
cmp "$tmp/classes_ref.txt" "$tmp/classes_cpp.txt"
echo "ok: unicode_class() equals regex's \\p{L}, \\p{N}, \\p{White_Space} on all 0x110000 code points ($(wc -l < "$tmp/classes_cpp.txt") runs)"

echo "--- encoder vs the Python reference"
# hand-written tricky texts (scripts, digits of other scripts, emoji/ZWJ, spaces and newlines, contractions,
# U+00A0/U+3000/U+0085, \x1c, combining marks, invalid UTF-8, overlong forms, surrogates) + 3000 random ones
$PY tests/data/tokenizer_corpus.py corpus 3000 12345 > "$tmp/corpus.hex"
n=$(wc -l < "$tmp/corpus.hex")
# (modes: default = heap BPE for chunks >= 64 bytes, plain loop below; --heap / --loop: one of them for all)
$PY dev/data/gpt2_bpe_reference.py --hex-lines < "$tmp/corpus.hex" > "$tmp/ref_plain.txt"
$PY dev/data/gpt2_bpe_reference.py --hex-lines --allow-special < "$tmp/corpus.hex" > "$tmp/ref_special.txt"
for mode in "" "--allow-special" "--heap" "--loop"; do
    if [ "$mode" = "--allow-special" ]; then cp "$tmp/ref_special.txt" "$tmp/ref.txt"; else cp "$tmp/ref_plain.txt" "$tmp/ref.txt"; fi
    $driver encode-hex $mode < "$tmp/corpus.hex" > "$tmp/cpp.txt"
    [ "$(wc -l < "$tmp/ref.txt")" -eq "$n" ] || { echo "FAIL: reference gave $(wc -l < "$tmp/ref.txt") lines for $n texts"; exit 1; }
    if ! cmp -s "$tmp/ref.txt" "$tmp/cpp.txt"; then
        echo "FAIL: C++ and reference ids differ ${mode:-(ordinary)}; first differing texts:"
        paste -d'\n' "$tmp/corpus.hex" "$tmp/ref.txt" "$tmp/cpp.txt" | awk 'NR%3==1{h=$0} NR%3==2{r=$0} NR%3==0 && r!=$0 {print "text " h "\n  ref " r "\n  cpp " $0; if (++k==3) exit}'
        exit 1
    fi
    echo "ok: $n texts encode to the same ids as the reference ${mode:-(ordinary text)}"
done
# the pre-tokenizer alone: chunk boundaries (BPE rarely merges across a wrong boundary, so ids can hide them)
$PY dev/data/gpt2_bpe_reference.py --hex-lines --chunks < "$tmp/corpus.hex" > "$tmp/ref.txt"
$driver chunks-hex < "$tmp/corpus.hex" > "$tmp/cpp.txt"
cmp "$tmp/ref.txt" "$tmp/cpp.txt"
echo "ok: $n texts split into the same pre-tokenizer chunks as the reference's regex"
# the whole of Tiny Shakespeare, through the command-line tool
$PY dev/data/gpt2_bpe_reference.py < data/tinyshakespeare/input.txt > "$tmp/ref.txt"
./tokenizer < data/tinyshakespeare/input.txt > "$tmp/cpp.txt"
cmp "$tmp/ref.txt" "$tmp/cpp.txt"
echo "ok: ./tokenizer on input.txt equals the reference ($(wc -w < "$tmp/cpp.txt") tokens)"
# empty input: no tokens, an empty line
[ "$(printf '' | ./tokenizer)" = "" ] && [ "$(printf '' | $PY dev/data/gpt2_bpe_reference.py)" = "" ]
echo "ok: empty input gives no tokens"

echo "--- round trips"
./tokenizer --decode < "$tmp/cpp.txt" > "$tmp/decoded.txt"
cmp "$tmp/decoded.txt" data/tinyshakespeare/input.txt
echo "ok: ./tokenizer --decode reproduces input.txt byte for byte"
$driver roundtrip data/tinyshakespeare/input.txt
head -c 20000 /dev/urandom > "$tmp/random.bin"
./tokenizer < "$tmp/random.bin" | ./tokenizer --decode > "$tmp/random.out"
cmp "$tmp/random.bin" "$tmp/random.out"
echo "ok: 20000 random bytes from /dev/urandom survive ./tokenizer | ./tokenizer --decode"
$driver random 3000 42

echo "--- special token"
$driver special
printf 'a<|endoftext|>b' > "$tmp/special.txt"
ids_special=$(./tokenizer --allow-special < "$tmp/special.txt")
ids_plain=$(./tokenizer < "$tmp/special.txt")
[ "$ids_special" = "$($PY dev/data/gpt2_bpe_reference.py --allow-special < "$tmp/special.txt")" ]
[ "$ids_plain" = "$($PY dev/data/gpt2_bpe_reference.py < "$tmp/special.txt")" ]
[ "$ids_special" = "64 50256 65" ] # 'a' and 'b' are the single-byte tokens 64, 65 in encoder.json
case " $ids_plain " in *" 50256 "*) echo "FAIL: 50256 in ordinary encoding"; exit 1 ;; esac
[ "$(echo "$ids_special" | ./tokenizer --decode)" = "a<|endoftext|>b" ]
echo "ok: ./tokenizer --allow-special gives '64 50256 65', without it no 50256; both equal the reference and decode back"
echo "all tokenizer checks passed"
