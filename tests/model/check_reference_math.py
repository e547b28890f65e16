"""(b) of tests/model/test_pytorch_reference.sh: train_gpt2.py's numbers against independent ones, for the
files in DIR: a numpy GPT-2 forward, central finite differences in float64 against the written gradients,
the AdamW losses and parameters against a numpy AdamW replay, fp32 -> bf16 rounding on ties, and bad flags
and files failing clearly (train_gpt2.main in this process, to save a torch import each). Run from the
repository root.

  check_reference_math.py DIR
"""
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
