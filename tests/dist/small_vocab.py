"""A fresh GPT-2 model with a small vocabulary, and token shards for it, so that a pipeline's stages do
equal work: with GPT-2's 50257 tokens the classifier of the last stage outweighs the layers of a small
model many times, and the bubble measured is that imbalance, not the schedule's.

  small_vocab.py OUT_DIR V L C [SOURCE_SHARD]

writes OUT_DIR/model.bin (llm.c's fp32 v3 file: V tokens, Vp = V rounded up to 128, L layers, C
channels, C/64 heads, maxT 1024; weights N(0, 0.02), the residual projections N(0, 0.02/sqrt(2L)),
LayerNorm weights 1, biases 0, seed 0) and OUT_DIR/train.bin, OUT_DIR/val.bin (the first 90% and the
last 10% of SOURCE_SHARD's tokens, default data/tinyshakespeare/tiny_shakespeare_train.bin, each taken
mod V).
"""
import os
import sys

import numpy as np


def write_shard(path, tokens):
    header = np.zeros(256, dtype="<i4")
    header[:3] = [20240520, 1, len(tokens)]  # magic, version, token count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    out, V, L, C = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    source = sys.argv[5] if len(sys.argv) == 6 else "data/tinyshakespeare/tiny_shakespeare_train.bin"
    if C % 64 != 0 or V < 2 or L < 1:
        sys.exit(f"small_vocab.py: expected V >= 2, L >= 1 and C a multiple of 64, got V={V} L={L} C={C}")
    os.makedirs(out, exist_ok=True)
    maxT, NH, Vp = 1024, C // 64, (V + 127) // 128 * 128
    rng = np.random.default_rng(0)
    normal = lambda shape, std: rng.normal(0.0, std, size=shape).astype("<f4")
    proj = 0.02 / np.sqrt(2 * L)
    wte = normal((Vp, C), 0.02)
    wte[V:] = 0.0  # the padded rows
    tensors = [
        wte, normal((maxT, C), 0.02),
        np.ones((L, C), "<f4"), np.zeros((L, C), "<f4"),  # ln1
        normal((L, 3 * C, C), 0.02), np.zeros((L, 3 * C), "<f4"),  # qkv
        normal((L, C, C), proj), np.zeros((L, C), "<f4"),  # attproj
        np.ones((L, C), "<f4"), np.zeros((L, C), "<f4"),  # ln2
        normal((L, 4 * C, C), 0.02), np.zeros((L, 4 * C), "<f4"),  # fc
        normal((L, C, 4 * C), proj), np.zeros((L, C), "<f4"),  # fcproj
        np.ones(C, "<f4"), np.zeros(C, "<f4"),  # lnf
    ]
    header = np.zeros(256, dtype="<i4")
    header[:8] = [20240326, 3, maxT, V, L, NH, C, Vp]
    with open(os.path.join(out, "model.bin"), "wb") as f:
        f.write(header.tobytes())
        for t in tensors:
            f.write(t.tobytes())
    with open(source, "rb") as f:
        head = np.frombuffer(f.read(1024), dtype="<i4")
        if head[0] != 20240520:
            sys.exit(f"small_vocab.py: '{source}' is not a token shard (magic {head[0]})")
        tokens = np.frombuffer(f.read(), dtype="<u2")[: head[2]].astype(np.int64) % V
    cut = len(tokens) * 9 // 10
    write_shard(os.path.join(out, "train.bin"), tokens[:cut])
    write_shard(os.path.join(out, "val.bin"), tokens[cut:])


if __name__ == "__main__":
    main()
