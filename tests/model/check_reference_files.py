"""(a) of tests/model/test_pytorch_reference.sh: an independent, numpy-only reader of the files train_gpt2.py
wrote in DIR (the tiny configuration): header fields, exact file sizes, zero padded wte rows (weights and
gradient), the bf16 file == the fp32 file rounded to nearest even, the loss == the cross-entropy of the
written logits, x/y from a token shard.

  check_reference_files.py DIR
"""
import os, sys
import numpy as np
d = sys.argv[1]
V, Vp, L, NH, C, maxT, B, T = 64, 128, 2, 2, 32, 32, 4, 16
fails = 0
def check(ok, what):
    global fails
    print(("  ok    " if ok else "  FAIL  ") + what)
    fails += not ok

shapes = [(Vp, C), (maxT, C), (L, C), (L, C), (L, 3*C, C), (L, 3*C), (L, C, C), (L, C),
          (L, C), (L, C), (L, 4*C, C), (L, 4*C), (L, C, 4*C), (L, C), (C,), (C,)]
nparams = sum(int(np.prod(s)) for s in shapes)
def split(flat):
    out, off = [], 0
    for s in shapes:
        n = int(np.prod(s)); out.append(flat[off:off+n].reshape(s)); off += n
    return out

# fp32 checkpoint
path = f"{d}/m32.bin"
h = np.fromfile(path, dtype="<i4", count=256)
check(list(h[:8]) == [20240326, 3, maxT, V, L, NH, C, Vp] and not h[8:].any(), f"fp32 header {list(h[:8])}")
check(os.path.getsize(path) == 1024 + 4 * nparams, f"fp32 file size {os.path.getsize(path)} == 1024 + 4*{nparams}")
p32 = split(np.fromfile(path, dtype="<f4", offset=1024))
check(not p32[0][V:].any(), "padded wte rows V..Vp-1 are zero")
check(p32[0][:V].std() > 0.015 and abs(p32[0][:V].std() - 0.02) < 0.002, f"wte std {p32[0][:V].std():.4f} ~ 0.02")
check(abs(p32[6].std() - 0.02 / np.sqrt(2 * L)) < 0.002, f"attprojw std {p32[6].std():.4f} ~ 0.02/sqrt(2L)")
check(abs(p32[12].std() - 0.02 / np.sqrt(2 * L)) < 0.002, f"fcprojw std {p32[12].std():.4f} ~ 0.02/sqrt(2L)")
check((p32[2] == 1).all() and (p32[14] == 1).all() and not p32[3].any() and not p32[5].any(), "LN weights 1, biases 0")

# bf16 checkpoint == fp32 rounded to nearest even; computed here from values, not bits: of the two bf16
# neighbours of each value, the nearer one, the one with the even last bit on a tie
path = f"{d}/m16.bin"
h = np.fromfile(path, dtype="<i4", count=256)
check(list(h[:8]) == [20240326, 5, maxT, V, L, NH, C, Vp], f"bf16 header {list(h[:8])}")
check(os.path.getsize(path) == 1024 + 2 * nparams, f"bf16 file size {os.path.getsize(path)} == 1024 + 2*{nparams}")
b16 = np.fromfile(path, dtype="<u2", offset=1024)
f = np.concatenate([p.ravel() for p in p32])
lo = (f.view("<u4") >> 16).astype(np.uint32)  # truncation: the neighbour toward zero
up = lo + 1
val = lambda u: (u.astype(np.uint32) << 16).view("<f4").astype(np.float64)
dlo, dup = np.abs(f - val(lo)), np.abs(val(up) - f)
expect = np.where(dlo < dup, lo, np.where(dup < dlo, up, np.where(lo % 2 == 0, lo, up))).astype("<u2")
check(np.array_equal(b16, expect), f"bf16 file == fp32 file rounded to nearest even ({np.sum(b16 != expect)} differ)")

# state
path = f"{d}/s.bin"
NSTEPS = 10
h = np.fromfile(path, dtype="<i4", count=256)
check(list(h[:5]) == [20240327, 2, B, T, NSTEPS] and not h[5:].any(), f"state header {list(h[:5])}")
size = 1024 + 4 * (2 * B * T + B * T * V + 1 + nparams + NSTEPS)
check(os.path.getsize(path) == size, f"state file size {os.path.getsize(path)} == {size}")
raw = np.fromfile(path, dtype="<i4", offset=1024)
x, y = raw[:B*T], raw[B*T:2*B*T]
rest = raw[2*B*T:].view("<f4")
logits = rest[:B*T*V].reshape(B*T, V).astype(np.float64)
loss = rest[B*T*V]
grads = split(rest[B*T*V+1 : B*T*V+1+nparams])
losses = rest[B*T*V+1+nparams:]
check(x.min() >= 0 and x.max() < V and y.min() >= 0 and y.max() < V, "x, y tokens in [0,V)")
check(np.array_equal(x[1:], y[:-1]), "y is x shifted by one token")
m = logits.max(axis=1, keepdims=True)
ce = np.mean(np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0] - logits[np.arange(B*T), y])
# logits are float32 (rel. 6e-8), so the recomputed loss may differ by ~1e-6 at most
check(abs(ce - loss) < 2e-6, f"loss {loss:.7f} == cross-entropy of the written logits {ce:.7f}")
check(abs(loss - np.log(V)) < 0.1, f"loss {loss:.4f} near ln(V) = {np.log(V):.4f} at init")
check(not grads[0][V:].any(), "wte gradient rows V..Vp-1 are zero")
check(all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in grads[:2] + grads[4:]),
      "gradients finite and non-zero")
check(losses[0] == loss, f"AdamW loss 0 {losses[0]:.7f} == loss {loss:.7f}")
check(all(losses[i+1] < losses[i] for i in range(NSTEPS - 1)), "AdamW losses decrease on a repeated batch")
s2 = np.fromfile(f"{d}/s2.bin", dtype="<f4")
check(np.array_equal(s2[256:-3], raw.view("<f4")[:-NSTEPS]) and np.array_equal(s2[-3:], losses[:3]),
      "the bf16 run wrote the same state (first 3 of its 3 steps)")

# the token-shard run: x, y are the shard's first B*T+1 tokens
raw = np.fromfile(f"{d}/s_tok.bin", dtype="<i4", offset=1024)
tok = (np.arange(B*T + 1) * 7) % 64
check(np.array_equal(raw[:B*T], tok[:-1]) and np.array_equal(raw[B*T:2*B*T], tok[1:]), "--tokens: x, y from the shard")
check(os.path.getsize(f"{d}/s_tok.bin") == 1024 + 4 * (2*B*T + B*T*V + 1 + nparams), "--adamw-steps 0: no losses")
sys.exit(1 if fails else 0)
