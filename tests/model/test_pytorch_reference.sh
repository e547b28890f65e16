#!/usr/bin/env bash
# Checks of the PyTorch reference train_gpt2.py itself (its files feed every C++/CUDA test), of
# dev/plot_log.py and of the benchmark's CPU path. Independent of the C++ code.
#   (a) a numpy-only reader parses the model and state files back: header fields, exact file sizes, zero
#       padded wte rows (weights and gradient), bf16 file == fp32 file rounded to nearest even, loss ==
#       cross-entropy of the written logits, x/y from a token shard
#   (b) gradient check: central finite differences in float64 vs the written gradients (rel. error < 1e-5);
#       the state's AdamW losses vs an independent numpy AdamW replay, and train_gpt2.AdamW's parameters vs
#       that replay; fp32->bf16 rounding on ties; bad flags and files fail clearly (in-process, saves imports)
#   (c) the same seed writes identical files (and another seed does not)
#   (d) plot_log.py writes a PNG, fails clearly on a missing file and on a file with no parsable lines
#   (e) the benchmark runs 2 steps on the CPU with --no-compile
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/usr/bin/python3}
DIR=$(mktemp -d /tmp/test_pytorch_reference.XXXXXX)
trap 'rm -rf "$DIR"' EXIT

CFG=(--vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 -B 4 -T 16)

echo "== writing the tiny model (fp32, bf16) and state"
$PY train_gpt2.py "${CFG[@]}" --seed 7 --write-model "$DIR/m32.bin" --write-state "$DIR/s.bin" \
    --write-final-model "$DIR/final.bin" >"$DIR/run1.txt"
$PY train_gpt2.py "${CFG[@]}" --seed 7 --model-dtype bf16 --write-model "$DIR/m16.bin" \
    --write-state "$DIR/s2.bin" --adamw-steps 3 >/dev/null
# a token shard: 100 tokens below V=64 with a known pattern
$PY - "$DIR/tok.bin" <<'PYEOF'
import sys, numpy as np
h = np.zeros(256, dtype="<i4"); h[:3] = [20240520, 1, 100]
with open(sys.argv[1], "wb") as f:
    f.write(h.tobytes()); f.write(((np.arange(100) * 7) % 64).astype("<u2").tobytes())
PYEOF
$PY train_gpt2.py "${CFG[@]}" --seed 8 --tokens "$DIR/tok.bin" --write-state "$DIR/s_tok.bin" --adamw-steps 0 \
    --write-model "$DIR/m32c.bin" >/dev/null

echo "== (a) independent reader"
$PY - "$DIR" <<'PYEOF'
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
PYEOF

echo "== (b) finite-difference gradient check, AdamW replay, error paths"
$PY - "$DIR" <<'PYEOF'
import contextlib
import io
import sys
import numpy as np
import torch
sys.path.insert(0, ".")
import train_gpt2 as tg
d = sys.argv[1]
fails = 0
def check(ok, what):
    global fails
    print(("  ok    " if ok else "  FAIL  ") + what)
    fails += not ok

config, Vp, params = tg.read_model(f"{d}/m32.bin")
V, C = config.vocab_size, config.n_embd
raw = np.fromfile(f"{d}/s.bin", dtype="<i4")
B, T, NSTEPS = raw[2], raw[3], raw[4]
raw = raw[256:]
x = torch.from_numpy(raw[:B*T].astype(np.int64)).view(B, T)
y = torch.from_numpy(raw[B*T:2*B*T].astype(np.int64)).view(B, T)
rest = raw[2*B*T:].view("<f4")
loss_file = float(rest[B*T*V])
grads, off = [], B*T*V + 1
for i, p in enumerate(params):
    n = (Vp * C) if i == 0 else p.size
    g = rest[off:off+n].reshape((Vp, C) if i == 0 else p.shape)
    grads.append(g[:V] if i == 0 else g)
    off += n
losses_file = rest[off:off+NSTEPS]

model = tg.GPT(config).double()
tg.load_params(model, params)
def loss_of(model):
    with torch.no_grad():
        return model(x, y)[1].item()
l0 = loss_of(model)
check(abs(l0 - loss_file) < 1e-6, f"float64 loss of the written model {l0:.8f} == state loss {loss_file:.8f}")

# The model against the spec: a GPT-2 forward written here in numpy, float64, from the formulas.
def np_forward(P, xb):
    wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb = P
    NH, L = config.n_head, config.n_layer
    Bn, Tn = xb.shape
    hs = C // NH
    def layernorm(a, w, b):
        mu = a.mean(-1, keepdims=True)
        var = ((a - mu) ** 2).mean(-1, keepdims=True)
        return (a - mu) / np.sqrt(var + 1e-5) * w + b
    def gelu(a):
        return 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
    def heads(a):  # (B,T,C) -> (B,NH,T,hs)
        return a.reshape(Bn, Tn, NH, hs).transpose(0, 2, 1, 3)
    h = wte[xb] + wpe[:Tn]
    causal = np.tril(np.ones((Tn, Tn), dtype=bool))
    for l in range(L):
        a = layernorm(h, ln1w[l], ln1b[l])
        qkv = a @ qkvw[l].T + qkvb[l]
        q, k, v = heads(qkv[..., :C]), heads(qkv[..., C:2*C]), heads(qkv[..., 2*C:])
        att = np.where(causal, q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs), -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        yatt = (att @ v).transpose(0, 2, 1, 3).reshape(Bn, Tn, C)
        h = h + yatt @ attprojw[l].T + attprojb[l]
        a = layernorm(h, ln2w[l], ln2b[l])
        h = h + gelu(a @ fcw[l].T + fcb[l]) @ fcprojw[l].T + fcprojb[l]
    return layernorm(h, lnfw, lnfb) @ wte.T  # (B,T,V), classifier tied to wte

logits_file = rest[:B*T*V].reshape(B, T, V)
lg = np_forward([p.astype(np.float64) for p in params], x.numpy())
err = np.abs(lg - logits_file).max()
check(err < 1e-6, f"written logits == numpy forward of the written weights (max abs diff {err:.1e} < 1e-6)")
# At init the weights are too small to tell e.g. erf-GELU from tanh-GELU in the logits; with every parameter
# perturbed by normal(0, 0.3), activations are O(1) and each nonlinearity, the head split, the mask and the
# scale show. Both sides float64: only summation order differs (~1e-14).
rng1 = np.random.default_rng(1)
Q = [p.astype(np.float64) + rng1.normal(0, 0.3, p.shape) for p in params]
big = tg.GPT(config).double()
tg.load_params(big, Q)
with torch.no_grad():
    lt = big(x)[0].numpy()
lg = np_forward(Q, x.numpy())
err = np.abs(lt - lg).max()
check(err < 1e-9 and lg.std() > 0.5, f"train_gpt2.GPT == numpy forward at O(1) weights (logits std {lg.std():.2f}, "
      f"max abs diff {err:.1e} < 1e-9)")

# Central differences: (L(p+h) - L(p-h)) / 2h has truncation error ~h^2 L'''/6 and round-off ~1e-15 L / h, both
# ~1e-10 at h = 1e-5 in float64; gradients of magnitude >= 1e-4 (3/4 of them here) so measure to ~1e-6
# relative, and the written float32 gradient carries 6e-8. A wrong term of a gradient (a missed path, the
# tied wte's classifier half, a wrong scale) shows as O(1) relative error.
rng = np.random.default_rng(0)
h = 1e-5
worst = 0.0
t = model.transformer
whole = {0: t.wte.weight, 1: t.wpe.weight, 14: t.ln_f.weight, 15: t.ln_f.bias}  # the others are per layer
for i, name in enumerate(tg.PARAM_NAMES):
    g = grads[i]
    candidates = np.argwhere(np.abs(g) >= 1e-4)
    for idx in candidates[rng.choice(len(candidates), size=3, replace=False)]:
        idx = tuple(int(j) for j in idx)
        if i in whole:
            p, pidx = whole[i], idx
        else:  # element (layer, ...) of a stacked tensor: that layer's parameter
            p, pidx = tg.block_params(t.h[idx[0]])[i - 2], idx[1:]
        with torch.no_grad():
            orig = p[pidx].item()
            p[pidx] = orig + h
            lp = loss_of(model)
            p[pidx] = orig - h
            lm = loss_of(model)
            p[pidx] = orig
        fd = (lp - lm) / (2 * h)
        rel = abs(fd - g[idx]) / abs(g[idx])
        worst = max(worst, rel)
        if rel >= 1e-5:
            check(False, f"{name}{list(idx)}: finite difference {fd:.8e} vs gradient {g[idx]:.8e} (rel {rel:.2e})")
check(worst < 1e-5, f"3 elements of each of the 16 tensors: finite differences == gradients, "
      f"worst rel. error {worst:.2e} < 1e-5")

# AdamW replay, written independently in numpy (float64) from the formulas: gradients from autograd on the
# model holding the numpy parameters. The state's float32 losses carry ~2.5e-7 of rounding; 1e-6 abs.
ps = [p.detach().numpy().copy() for p in model.parameters()]
decay = [p.ndim == 2 for p in ps]
m = [np.zeros_like(p) for p in ps]
v = [np.zeros_like(p) for p in ps]
lr, b1, b2, eps, wd = tg.ADAMW_LR, tg.ADAMW_BETA1, tg.ADAMW_BETA2, tg.ADAMW_EPS, tg.ADAMW_WEIGHT_DECAY
check((lr, b1, b2, eps, wd) == (1e-4, 0.9, 0.999, 1e-8, 0.01),
      "AdamW constants as specified: lr 1e-4, betas 0.9/0.999, eps 1e-8, wd 0.01")
model_np = tg.GPT(config).double()
model_tg = tg.GPT(config).double()  # the same steps with train_gpt2.AdamW, parameters compared at the end
tg.load_params(model_tg, params)
opt = tg.AdamW(model_tg.parameters())
replay = []
for step in range(NSTEPS):
    with torch.no_grad():
        for dst, src in zip(model_np.parameters(), ps):
            dst.copy_(torch.from_numpy(src))
    model_np.zero_grad()
    loss = model_np(x, y)[1]
    loss.backward()
    replay.append(loss.item())
    for k, p in enumerate(model_np.parameters()):
        g = p.grad.numpy()
        m[k] = b1 * m[k] + (1 - b1) * g
        v[k] = b2 * v[k] + (1 - b2) * g * g
        mhat = m[k] / (1 - b1 ** (step + 1))
        vhat = v[k] / (1 - b2 ** (step + 1))
        ps[k] = ps[k] - lr * (mhat / (np.sqrt(vhat) + eps) + (wd * ps[k] if decay[k] else 0.0))
    model_tg.zero_grad()
    model_tg(x, y)[1].backward()
    opt.step()
diff = max(abs(a - b) for a, b in zip(replay, losses_file))
check(diff < 1e-6, f"{NSTEPS} AdamW losses == numpy replay (max abs diff {diff:.2e} < 1e-6)")
# parameters after NSTEPS steps: weight decay moves them by lr*wd*p ~ 1e-8, too little to see in a loss, so
# compare parameters (float64 against float64: only round-off differs, 1e-12 relative to the step size)
pdiff = max(np.abs(a.detach().numpy() - b).max() for a, b in zip(model_tg.parameters(), ps))
check(pdiff < 1e-12, f"train_gpt2.AdamW parameters == numpy replay after {NSTEPS} steps (max diff {pdiff:.1e})")
# --write-final-model: the replay's parameters rounded to float32 (half an ulp: 2^-24 relative)
with torch.no_grad():
    for dst, src in zip(model_np.parameters(), ps):
        dst.copy_(torch.from_numpy(src))
want = [t.numpy() for t in tg.checkpoint_tensors(model_np, lambda p: p.detach())]
_, _, final = tg.read_model(f"{d}/final.bin")
ok = all(np.all(np.abs(f - w) <= 2**-24 * np.abs(w) + 1e-30) for f, w in zip(final, want))
moved = min(np.abs(f - p).max() for f, p in zip(final, params))
check(ok and moved > 0, f"--write-final-model == replay parameters after {NSTEPS} steps, to float32 rounding")

# bf16 rounding on hand-made values: ties go to the even neighbour, both directions, and negatives
f = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 3 * 2**-8), 3.0e-39], dtype="<f4")
bits = tg.fp32_to_bf16_bits(f)
expect = np.array([0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xBF82, 0x0021], dtype="<u2")
check(np.array_equal(bits, expect), f"fp32_to_bf16_bits on ties and near-ties: {[hex(b) for b in bits]}")

# the tiny config again, for in-process runs of train_gpt2.main
B_, T_ = str(int(B)), str(int(T))
base = ["--vocab-size", "64", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "-B", B_, "-T", T_]

# --round-to-bf16: the fp32 checkpoint holds bf16-representable values, the bf16 one the same values, and
# both runs compute the same state
for dt in ["fp32", "bf16"]:
    with contextlib.redirect_stdout(io.StringIO()):
        tg.main(base + ["--seed", "7", "--round-to-bf16", "--model-dtype", dt, "--adamw-steps", "2",
                        "--write-model", f"{d}/r_{dt}.bin", "--write-state", f"{d}/rs_{dt}.bin"])
r32 = np.fromfile(f"{d}/r_fp32.bin", dtype="<u4", offset=1024)
r16 = np.fromfile(f"{d}/r_bf16.bin", dtype="<u2", offset=1024)
check(not (r32 & 0xFFFF).any() and np.array_equal(r32 >> 16, r16),
      "--round-to-bf16: fp32 weights are bf16 values, the bf16 checkpoint holds exactly them")
check(open(f"{d}/rs_fp32.bin", "rb").read() == open(f"{d}/rs_bf16.bin", "rb").read(),
      "--round-to-bf16: the same state from the fp32 and the bf16 run")

# --compute-dtype float32: same batch and weights, logits within float32 round-off (~1e-7 relative, a few
# hundred operations deep) of the float64 reference
with contextlib.redirect_stdout(io.StringIO()):
    tg.main(base + ["--seed", "7", "--compute-dtype", "float32", "--adamw-steps", "0",
                    "--write-state", f"{d}/s_f32.bin"])
lf32 = np.fromfile(f"{d}/s_f32.bin", dtype="<f4", offset=1024 + 8 * B * T, count=B * T * V)
err = np.abs(lf32 - logits_file.ravel()).max()
check(0 < err < 1e-5, f"--compute-dtype float32 logits == float64 logits (max abs diff {err:.1e} < 1e-5)")

# error paths, in this process (saves a torch import each): a clear message and exit status 1
for what, extra, msg in [
    ("a token >= V", ["--vocab-size", "50", "--tokens", f"{d}/tok.bin"], "not below --vocab-size 50"),
    ("a missing token file", ["--tokens", f"{d}/nope.bin"], "does not exist"),
    ("a token file too short for B*T+1", ["-B", "8", "--tokens", f"{d}/tok.bin"], "need B*T+1 = 129"),
    ("an unwritable --write-model path", ["--write-model", f"{d}/no/such/dir/m.bin"], "could not write"),
    ("-T above --block-size", ["-T", "64"], "must not exceed --block-size"),
    ("C not a multiple of NH", ["--n-head", "3"], "must be a multiple of --n-head"),
]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            tg.main(base + extra + ["--adamw-steps", "0"])
            code = 0
        except SystemExit as e:
            code = e.code
    line = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""
    check(code == 1 and msg in line, f"{what} fails clearly: {line}")
sys.exit(1 if fails else 0)
PYEOF

echo "== (c) determinism"
$PY train_gpt2.py "${CFG[@]}" --seed 7 --write-model "$DIR/m32b.bin" --write-state "$DIR/sb.bin" >/dev/null
cmp "$DIR/m32.bin" "$DIR/m32b.bin" && cmp "$DIR/s.bin" "$DIR/sb.bin"
echo "  ok    seed 7 twice: identical model and state files"
if cmp -s "$DIR/m32.bin" "$DIR/m32c.bin"; then
    echo "  FAIL  seeds 7 and 8 wrote the same model"
    exit 1
fi
echo "  ok    seed 8 writes a different model"
ls "$DIR"/*.tmp >/dev/null 2>&1 && { echo "  FAIL  a .tmp file was left behind"; exit 1; }
echo "  ok    no .tmp files left behind"

expect_fail() {  # expect_fail "<what>" "<message substring>" cmd...: must exit non-zero naming the problem
    local what=$1 msg=$2
    shift 2
    if "$@" >"$DIR/out.txt" 2>&1; then
        echo "  FAIL  $what: exited 0"
        exit 1
    fi
    grep -q -- "$msg" "$DIR/out.txt" || { echo "  FAIL  $what: no '$msg' in:"; cat "$DIR/out.txt"; exit 1; }
    echo "  ok    $what fails clearly: $(grep -m1 -- "$msg" "$DIR/out.txt")"
}

echo "== (d) plot_log.py"
cat >"$DIR/a.log" <<'LOG'
s:0 trl:4.50 lr:0.0001 norm:2.0
s:0 tel:4.60
a line that is not a log record
s:1 trl:4.20 lr:0.0002 norm:1.5 ms:12.5 tok/s:100000
s:2 trl:4.00 lr:0.0003 norm:1.2
s:2 tel:4.10
LOG
sed 's/trl:4/trl:3/' "$DIR/a.log" >"$DIR/b.log"
$PY dev/plot_log.py "$DIR/a.log" "$DIR/b.log" --labels "run a,run b" -o "$DIR/plot.png"
$PY - "$DIR/plot.png" <<'PYEOF'
import sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000, "not a PNG"
print(f"  ok    PNG written ({len(data)} bytes)")
PYEOF
expect_fail "plot_log.py on a missing file" "does not exist" $PY dev/plot_log.py "$DIR/missing.log" -o "$DIR/x.png"
echo "nothing to see" >"$DIR/empty.log"
expect_fail "plot_log.py on a log with no records" "no parsable lines" \
    $PY dev/plot_log.py "$DIR/empty.log" -o "$DIR/x.png"

echo "== (e) benchmark, 2 steps on the CPU"
$PY dev/bench/bench_pytorch_gpt2.py --device cpu --no-compile --vocab-size 64 --n-layer 2 --n-head 2 --n-embd 32 \
    --block-size 32 -B 2 -T 16 --steps 2 --warmup 1 --input "$DIR/tok.bin" >"$DIR/bench.txt"
cat "$DIR/bench.txt" | sed 's/^/  | /'
grep -q "^step    2/2 " "$DIR/bench.txt" && grep -q "^median tokens/s over 1 steps" "$DIR/bench.txt" \
    && grep -q "^MFU: n/a" "$DIR/bench.txt" || { echo "  FAIL  benchmark output incomplete"; exit 1; }
echo "  ok    benchmark ran 2 steps, printed the median and MFU n/a on the CPU"
echo "all PyTorch reference checks passed"
