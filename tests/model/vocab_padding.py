"""Helpers of tests/model/test_vocab_padding.sh (numpy only).

  vocab_padding.py shard PATH V N            a token shard of N tokens in [0, V), every 3rd one among the
                                             last 8 tokens of the vocabulary (the columns a kernel that
                                             mishandles a partial tile of the classifier gets wrong)
  vocab_padding.py repad MODEL STATE VP OUT_MODEL OUT_STATE
                                             the fp32 model file and train_gpt2.py's debug state with wte
                                             (and its gradient) padded, or cut, to VP rows: the rows past V
                                             are zero, everything else is copied bit for bit
  vocab_padding.py set-heads MODEL NH OUT    the model file with header[5] (NH) replaced: the same tensors
"""
import sys

import numpy as np

HEADER_INTS = 256


def shard(path, V, n):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, n)
    tokens[::3] = V - 1 - rng.integers(0, min(V, 8), len(tokens[::3]))
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = [20240520, 1, n]  # magic, version, token count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


def repad_wte(data, offset, V, Vp_old, Vp_new, C):
    """data (bytes) with a (Vp_old, C) float32 matrix at offset -> the same bytes with it (Vp_new, C)."""
    wte = np.frombuffer(data, dtype="<f4", count=Vp_old * C, offset=offset).reshape(Vp_old, C)
    if np.any(wte[V:] != 0):
        sys.exit("repad: the padded rows of wte are not zero")
    new = np.zeros((Vp_new, C), dtype="<f4")
    new[:V] = wte[:V]
    return data[:offset] + new.tobytes() + data[offset + 4 * Vp_old * C :]


def repad(model, state, Vp, out_model, out_state):
    data = open(model, "rb").read()
    h = np.frombuffer(data, dtype="<i4", count=HEADER_INTS).copy()
    if h[0] != 20240326 or h[1] != 3:
        sys.exit(f"repad: {model} is not an fp32 (version 3) model file")
    V, C, Vp_old = int(h[3]), int(h[6]), int(h[7])
    if Vp < V:
        sys.exit(f"repad: Vp={Vp} < V={V}")
    h[7] = Vp
    data = repad_wte(h.tobytes() + data[4 * HEADER_INTS :], 4 * HEADER_INTS, V, Vp_old, Vp, C)
    open(out_model, "wb").write(data)
    # the state: header, x (B,T), y (B,T) int32, logits (B,T,V), loss, then the gradients (wte's first)
    data = open(state, "rb").read()
    hs = np.frombuffer(data, dtype="<i4", count=HEADER_INTS)
    BT = int(hs[2]) * int(hs[3])
    open(out_state, "wb").write(repad_wte(data, 4 * (HEADER_INTS + 2 * BT + BT * V + 1), V, Vp_old, Vp, C))


def set_heads(model, NH, out):
    data = bytearray(open(model, "rb").read())
    data[4 * 5 : 4 * 6] = np.array([NH], dtype="<i4").tobytes()
    open(out, "wb").write(bytes(data))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "shard":
        shard(args[0], int(args[1]), int(args[2]))
    elif cmd == "repad":
        repad(args[0], args[1], int(args[2]), args[3], args[4])
    elif cmd == "set-heads":
        set_heads(args[0], int(args[1]), args[2])
    else:
        sys.exit(__doc__)
