#!/usr/bin/python3
"""Independent checks of prepro_tinyshakespeare's outputs, for tests/data/test_tokenizer_data.sh.

  check_tokenizer_data.py shards VAL_BIN TRAIN_BIN INPUT_TXT
      parses both shards with struct (not with our C++ reader): magic 20240520, version 1, the token count
      field, file size = 1024 + 2 * count, counts 32768 and 305260 (the numbers llm.c's
      dev/data/tinyshakespeare.py gives), and val + train == the stream the Python reference encoder makes
      from INPUT_TXT with llm.c's recipe (EOT before each "\\n\\n"-separated section).
  check_tokenizer_data.py fortunes VAL_BIN TRAIN_BIN FORTUNES_DIR
      prepro_fortunes's shards: the same header checks, and val + train == the reference encoder's documents
      (EOT, then a quotation with its final newline; quotations end at a line "%"; files sorted, ascii-art
      and names with a dot left out), every tenth document in val, the others in train.
  check_tokenizer_data.py bin TOKENIZER_BIN ENCODER_JSON
      parses gpt2_tokenizer.bin: magic 20240328, version 2, vocab 50257, EOT 50256, and every token's bytes
      equal encoder.json's key for that id with GPT-2's byte-to-unicode spelling undone.
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "dev", "data"))
import gpt2_bpe_reference as ref  # noqa: E402


def check(ok, what):
    if not ok:
        print("FAILED: " + what)
        sys.exit(1)
    print("ok: " + what)


def read_shard(path):
    data = open(path, "rb").read()
    check(len(data) >= 1024, f"{path} holds a 1024-byte header")
    header = struct.unpack("<256i", data[:1024])
    check(header[0] == 20240520 and header[1] == 1, f"{path}: magic 20240520, version 1")
    n = header[2]
    check(len(data) == 1024 + 2 * n, f"{path}: size is 1024 + 2 * {n} tokens")
    check(all(h == 0 for h in header[3:]), f"{path}: unused header slots are 0")
    return list(struct.unpack(f"<{n}H", data[1024:]))


def shards(val_path, train_path, input_path):
    val, train = read_shard(val_path), read_shard(train_path)
    check(len(val) == 32768, f"val has 32768 tokens (got {len(val)})")
    check(len(train) == 305260, f"train has 305260 tokens (got {len(train)})")
    enc = ref.Encoder("data/gpt2/encoder.json", "data/gpt2/vocab.bpe")
    text = open(input_path, encoding="utf-8").read()
    sections = text.split("\n\n")
    want = []
    for i, s in enumerate(sections):
        want.append(50256)
        want.extend(enc.encode_ordinary(s + "\n\n" if i != len(sections) - 1 else s))
    check(val + train == want, "val + train == the reference encoder's token stream, in order")


def fortunes(val_path, train_path, corpus_dir):
    val, train = read_shard(val_path), read_shard(train_path)
    enc = ref.Encoder("data/gpt2/encoder.json", "data/gpt2/vocab.bpe")
    names = sorted(n for n in os.listdir(corpus_dir) if "." not in n and n != "ascii-art"
                   and os.path.isfile(os.path.join(corpus_dir, n)))
    quotes = []
    for name in names:
        lines, current = open(os.path.join(corpus_dir, name), encoding="utf-8").read().splitlines(True), []
        for line in lines + ["%\n"]:  # a "%" line ends the quotation before it; the file's end does too
            if line == "%\n":
                if current:
                    quotes.append("".join(current))
                current = []
            else:
                current.append(line)
    want_val, want_train = [], []
    for i, q in enumerate(quotes):
        (want_val if i % 10 == 0 else want_train).extend([50256] + enc.encode_ordinary(q))
    check(len(quotes) > 10000, f"{len(quotes)} quotations from {len(names)} files")
    check(val == want_val, f"val ({len(val)} tokens) == every tenth quotation, by the reference encoder")
    check(train == want_train, f"train ({len(train)} tokens) == the other quotations, by the reference encoder")


def tokenizer_bin(path, encoder_path):
    data = open(path, "rb").read()
    header = struct.unpack("<256i", data[:1024])
    check(header[:4] == (20240328, 2, 50257, 50256), f"{path}: magic 20240328, version 2, vocab 50257, EOT 50256")
    byte_decoder = {c: b for b, c in ref.bytes_to_unicode().items()}
    by_id = {i: bytes(byte_decoder[c] for c in key) for key, i in json.load(open(encoder_path, encoding="utf-8")).items()}
    pos, ok = 1024, True
    for i in range(header[2]):
        n = data[pos]
        ok = ok and data[pos + 1 : pos + 1 + n] == by_id[i]
        pos += 1 + n
    check(ok, "every token's bytes equal encoder.json's, in id order")
    check(pos == len(data), "nothing after the last token")


if __name__ == "__main__":
    if sys.argv[1] == "shards":
        shards(*sys.argv[2:5])
    elif sys.argv[1] == "fortunes":
        fortunes(*sys.argv[2:5])
    elif sys.argv[1] == "bin":
        tokenizer_bin(*sys.argv[2:4])
    else:
        sys.exit(__doc__)
