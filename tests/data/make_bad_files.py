"""Writes the bad inputs of tests/data/test_bad_files.sh into DIR, each a small edit of a good file.

    make_bad_files.py DIR GOOD_STATE GOOD_TOKENIZER_BIN

  shard_*.bin        token shards (the good one: 3000 tokens < 64, the tiny model's vocab)
  state_*.bin        debug states, edits of GOOD_STATE (train_gpt2.py --write-state of the tiny model)
  tok_*.bin          gpt2_tokenizer.bin, edits of GOOD_TOKENIZER_BIN
  enc_*.json, bpe_*  encoder.json / vocab.bpe: a small valid vocab (the 256 bytes, <|endoftext|>, "ab")
                     and edits of it
Each bad file differs from a good one in one thing, so the error it gets is the one for that thing.
"""

import json
import os
import sys

import numpy as np

out, good_state_path, good_tok_path = sys.argv[1:4]


def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def header(*slots):
    h = np.zeros(256, np.int32)
    h[: len(slots)] = slots
    return h.tobytes()


# --- token shards: int32 header {20240520, 1, N}, then N uint16 tokens
tokens = (np.arange(3000) % 64).astype(np.uint16)
good_shard = header(20240520, 1, len(tokens)) + tokens.tobytes()
write("shard_good.bin", good_shard)
write("shard_magic.bin", header(20240521, 1, len(tokens)) + tokens.tobytes())
write("shard_version.bin", header(20240520, 2, len(tokens)) + tokens.tobytes())
write("shard_short_header.bin", good_shard[:100])
write("shard_truncated.bin", good_shard[:2000])
write("shard_negative.bin", header(20240520, 1, -3000) + tokens.tobytes())
write("shard_huge.bin", header(20240520, 1, 2**31 - 1))  # 4 GB of tokens claimed by a 1 KB file
write("shard_extra.bin", good_shard + b"\x00\x00")
write("shard_odd.bin", good_shard + b"\x00")
oob = tokens.copy()
oob[1234] = 64
write("shard_oob.bin", header(20240520, 1, len(oob)) + oob.tobytes())
oob[1234] = 65535
write("shard_max.bin", header(20240520, 1, len(oob)) + oob.tobytes())

# --- debug states: int32 header {20240327, 2, B, T, NSTEPS}, then x, y (B,T) int32, logits, loss, ...
good_state = open(good_state_path, "rb").read()
h = np.frombuffer(good_state[:1024], np.int32).copy()
B, T = int(h[2]), int(h[3])
body = good_state[1024:]


def patched(name, header, slots, payload):
    """Writes header (an int32 array of 256 slots) with slots changed, then payload."""
    hh = header.copy()
    for k, v in slots.items():
        hh[k] = v
    write(name, hh.tobytes() + payload)


def state(name, slots={}, payload=body):
    patched(name, h, slots, payload)


state("state_magic.bin", {0: 20240326})
state("state_version.bin", {1: 1})
write("state_short_header.bin", good_state[:600])
write("state_truncated.bin", good_state[: len(good_state) - 40])
state("state_extra.bin", payload=body + b"\x00" * 4)
# B*T = 2^32 + B0*T0: an int32 product wraps to the good file's B0*T0, so only 64-bit sizes see it
state("state_bt_wraps.bin", {2: (2**32 // T) + B})
state("state_huge_b.bin", {2: 2**30}, payload=b"")
state("state_negative_b.bin", {2: -B})
state("state_long_t.bin", {3: 4096})
state("state_negative_steps.bin", {4: -1})
state("state_huge_steps.bin", {4: 2**31 - 1})
x = np.frombuffer(body[: 4 * B * T], np.int32).copy()
x[5] = 64
state("state_oob_input.bin", payload=x.tobytes() + body[4 * B * T :])
y = np.frombuffer(body[4 * B * T : 8 * B * T], np.int32).copy()
y[7] = -1
state("state_negative_target.bin", payload=body[: 4 * B * T] + y.tobytes() + body[8 * B * T :])

# --- gpt2_tokenizer.bin: int32 header {20240328, 2, V, EOT}, then V times (1-byte length, bytes)
good_tok = open(good_tok_path, "rb").read()
th = np.frombuffer(good_tok[:1024], np.int32).copy()
table = good_tok[1024:]


def tok(name, slots={}, payload=table):
    patched(name, th, slots, payload)


tok("tok_magic.bin", {0: 20240329})
tok("tok_version.bin", {1: 3})
write("tok_short_header.bin", good_tok[:700])
write("tok_truncated.bin", good_tok[:300000])
tok("tok_huge_vocab.bin", {2: 1 << 24, 3: 0}, payload=b"")  # 2^24 tokens claimed by a 1 KB file
tok("tok_int_max_vocab.bin", {2: 2**31 - 1, 3: 0})
tok("tok_negative_vocab.bin", {2: -50257})
tok("tok_eot.bin", {3: 50257})
tok("tok_zero_length.bin", payload=b"\x00" + table[1:])
# the last token's length byte says 255 where 13 bytes ("<|endoftext|>") are left
last = len(table) - 14
tok("tok_past_end.bin", payload=table[:last] + b"\xff" + table[last + 1 :])
tok("tok_extra.bin", payload=table + b"x")
tok("tok_v2_too_big.bin", {2: 3, 3: 0}, payload=b"\x01a\x01b\x01c" + b"\x01d" * 2000)

# --- encoder.json / vocab.bpe: a small vocab in GPT-2's spelling of bytes (bytes_to_unicode)
printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
spell, n = {}, 0
for b in range(256):
    if b in printable:
        spell[b] = chr(b)
    else:
        spell[b] = chr(256 + n)
        n += 1
vocab = {spell[b]: b for b in range(256)}
vocab["ab"] = 256
vocab["<|endoftext|>"] = 257
good_json = json.dumps(vocab, ensure_ascii=False)
write("enc_good.json", good_json.encode())
good_bpe = "#version: 0.2\na b\n"
write("bpe_good.bpe", good_bpe.encode())
write("enc_empty.json", b"")
write("enc_truncated.json", good_json.encode()[:500])
write("enc_negative_id.json", good_json.replace('"ab": 256', '"ab": -256').encode())
write("enc_huge_id.json", good_json.replace('"ab": 256', '"ab": 99999999999999999999').encode())
write("enc_trailing.json", (good_json + " {").encode())
long_vocab = dict(vocab)
long_vocab["a" * 300] = 258  # loads (no merge needs it), but a .bin token is at most 255 bytes
write("enc_long_token.json", json.dumps(long_vocab, ensure_ascii=False).encode())
big_vocab = dict(vocab)
for i in range(70000):  # ids above 65535 do not fit a uint16 token shard
    big_vocab["t%d" % i] = 258 + i
write("enc_big_vocab.json", json.dumps(big_vocab, ensure_ascii=False).encode())
write("bpe_empty.bpe", b"")
write("bpe_header_only.bpe", b"#version: 0.2\n")
write("bpe_crlf.bpe", good_bpe.replace("\n", "\r\n").encode())
write("bpe_blank_line.bpe", b"#version: 0.2\n\na b\n")
write("bpe_unknown.bpe", b"#version: 0.2\na b\nab zz\n")
