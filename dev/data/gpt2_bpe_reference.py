#!/usr/bin/python3
"""An independent, deliberately plain GPT-2 BPE encoder in Python, the reference the C++ tokenizer is tested
against (tests/data/test_tokenizer.sh). It follows OpenAI's encoder.py, with two changes that make it match
tiktoken's "gpt2" encoding and our definition for invalid UTF-8:

  * \\s in the pattern is spelled [\\p{White_Space}]: Python's \\s is not Unicode White_Space (it includes
    U+001C..U+001F), while tiktoken's Rust regex uses White_Space.
  * Input is bytes, decoded with errors="surrogateescape": each byte that is not part of well-formed UTF-8
    becomes a lone surrogate U+DC80..U+DCFF, category Cs, i.e. "neither letter, number nor space", and is
    turned back into its byte before BPE. So invalid bytes behave as one-byte "other" characters.

Usage:
  gpt2_bpe_reference.py [--encoder PATH] [--bpe PATH] [--allow-special] [--hex-lines] < input
Default: all of stdin is one text; prints its ids on one line, separated by spaces.
--hex-lines: every stdin line is one text written in hex; prints one line of ids per text.
--allow-special: "<|endoftext|>" in a text becomes the id of that token instead of ordinary text.
--chunks: instead of ids, print the byte length of each pre-tokenizer chunk (tests the regex split alone).
"""
import argparse
import json
import sys

try:
    import regex
except ImportError:
    sys.stderr.write("error: the Python module 'regex' is missing: install python3-regex (apt-get install python3-regex)\n")
    sys.exit(1)

PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+"""
    r"""|[\p{White_Space}]+(?![^\p{White_Space}])|[\p{White_Space}]+"""
)
SPECIAL = "<|endoftext|>"


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, [chr(c) for c in chars]))


class Encoder:
    def __init__(self, encoder_path, bpe_path):
        with open(encoder_path, encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(bpe_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split(" ")) for line in lines[1:] if line]
        self.bpe_ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache = {}

    def bpe(self, token):
        """token: a string of byte-encoder characters. Returns the list of merged symbols."""
        if token in self.cache:
            return self.cache[token]
        word = list(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            first, second = best
            merged = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = word
        return word

    def encode_ordinary(self, text):
        ids = []
        for chunk in PATTERN.findall(text):
            raw = chunk.encode("utf-8", errors="surrogateescape")
            spelled = "".join(self.byte_encoder[b] for b in raw)
            ids.extend(self.encoder[sym] for sym in self.bpe(spelled))
        return ids

    def chunk_lengths(self, data):
        text = data.decode("utf-8", errors="surrogateescape")
        return [len(c.encode("utf-8", errors="surrogateescape")) for c in PATTERN.findall(text)]

    def encode(self, data, allow_special):
        text = data.decode("utf-8", errors="surrogateescape")
        if not allow_special:
            return self.encode_ordinary(text)
        ids = []
        for i, part in enumerate(text.split(SPECIAL)):
            if i > 0:
                ids.append(self.encoder[SPECIAL])
            ids.extend(self.encode_ordinary(part))
        return ids


def main():
    ap = argparse.ArgumentParser(description="reference GPT-2 BPE encoder")
    ap.add_argument("--encoder", default="data/gpt2/encoder.json")
    ap.add_argument("--bpe", default="data/gpt2/vocab.bpe")
    ap.add_argument("--allow-special", action="store_true")
    ap.add_argument("--hex-lines", action="store_true")
    ap.add_argument("--chunks", action="store_true")
    args = ap.parse_args()
    enc = Encoder(args.encoder, args.bpe)
    data = sys.stdin.buffer.read()
    if args.hex_lines:
        texts = [bytes.fromhex(line) for line in data.decode("ascii").split("\n") if line.strip()]
    else:
        texts = [data]
    out = sys.stdout
    for t in texts:
        ids = enc.chunk_lengths(t) if args.chunks else enc.encode(t, args.allow_special)
        out.write(" ".join(str(i) for i in ids) + "\n")


if __name__ == "__main__":
    main()
