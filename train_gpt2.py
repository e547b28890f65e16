"""
train_gpt2.py: the PyTorch reference the C++ and CUDA trainers are tested against.

It builds a GPT-2 from a config given on the command line (seeded random init) and writes
  --write-model PATH   an llm.c checkpoint of the initial weights (fp32, or bf16 with --model-dtype bf16)
  --write-state PATH   a debug state: the batch x, y, the logits, the loss, the gradient of every parameter,
                       and the losses of NSTEPS AdamW steps on that same batch.
  --write-final-model PATH   an fp32 checkpoint of the weights after those NSTEPS steps (weight decay moves
                       the weights by ~1e-8 per step, invisible in float32 losses but not in the weights).
  --lora-rank R ... --write-lora-state PATH   the same for LoRA fine-tuning (llmc/lora.h): the model above is
                       the frozen base (with --lora-nf4 its four block matrices pass through NF4 with double
                       quantization first, as QLoRA stores them); the state holds the batch, the logits, the
                       loss, the adapters, their gradients and the losses of NSTEPS AdamW steps on them.
The math runs in float64 by default (--compute-dtype) and is written as float32: the reference's own rounding
error is then far below the tolerances the tests apply to fp32/bf16 code. The initial weights are drawn in
float32, so the float64 model starts from exactly the values in the fp32 checkpoint.

Runs with PyTorch 1.13 (Debian, CPU) and 2.x (--device cuda runs the float64 math on a GPU; --sdpa picks
F.scaled_dot_product_attention). GPT-2 124M (the defaults) takes ~2 CPU-minutes per step.
Reading order: the model (a page, like nanoGPT), the AdamW of the debug state, the llm.c file formats, main.
dev/bench/bench_pytorch_gpt2.py imports the model from here.

Example:
  python3 train_gpt2.py --vocab-size 64 --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 -B 4 -T 16 \\
      --write-model model.bin --write-state state.bin
"""

import argparse
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# AdamW of the debug state. The C++ test replays these steps with the same values: change both together.
ADAMW_LR = 1e-4
ADAMW_BETA1 = 0.9
ADAMW_BETA2 = 0.999
ADAMW_EPS = 1e-8
ADAMW_WEIGHT_DECAY = 0.01  # decoupled, and only on the 2-D weight matrices (wte, wpe, qkvw, attprojw, fcw, fcprojw)
ADAMW_STEPS = 10  # default number of steps whose losses end the state file

# file format constants (llm.c)
MODEL_MAGIC = 20240326
MODEL_VERSION_FP32 = 3
MODEL_VERSION_BF16 = 5
STATE_MAGIC = 20240327
STATE_VERSION = 2
LORA_STATE_MAGIC = 20240328
LORA_STATE_VERSION = 1
TOKENS_MAGIC = 20240520
TOKENS_VERSION = 1
HEADER_INTS = 256

# the 16 parameter tensors of a checkpoint, in file order (shapes: see checkpoint_tensors)
PARAM_NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]  # fmt: skip


def fail(msg):
    """Print 'error: msg' to stderr and exit 1 (errors at the edge, like llmc/utils.h)."""
    sys.stdout.flush()
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


# ----------------------------------------------------------------------------------------------------
# the model

@dataclass
class GPTConfig:
    block_size: int = 1024  # maxT, rows of the position table
    vocab_size: int = 50257  # V, rows of the token table (the model is unpadded; files pad to Vp)
    n_layer: int = 12  # L
    n_head: int = 12  # NH
    n_embd: int = 768  # C
    use_sdpa: bool = False  # F.scaled_dot_product_attention (PyTorch >= 2.0) instead of the explicit form


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # qkv: (C) -> (3C), q then k then v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # output projection (a residual projection)
        self.use_sdpa = config.use_sdpa and hasattr(F, "scaled_dot_product_attention")

    def forward(self, x):
        # x (B,T,C) -> (B,T,C)
        B, T, C = x.size()
        NH = self.n_head
        hs = C // NH
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B,T,C); head h is channels [h*hs, (h+1)*hs)
        q = q.view(B, T, NH, hs).transpose(1, 2)  # (B,NH,T,hs)
        k = k.view(B, T, NH, hs).transpose(1, 2)
        v = v.view(B, T, NH, hs).transpose(1, 2)
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # same math, fused kernels
        else:
            # att[b,h,t,t2] = softmax over t2 <= t of q[t].k[t2] / sqrt(hs); y[t] = sum_t2 att[t,t2] v[t2]
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B,NH,T,T)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~causal, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v  # (B,NH,T,hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)  # a residual projection

    def forward(self, x):
        # GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.mlp = MLP(config)

    def forward(self, x):
        # pre-LayerNorm residual block
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # (V,C)
            wpe=nn.Embedding(config.block_size, config.n_embd),  # (maxT,C)
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=1e-5),
        ))  # fmt: skip
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: wte gets gradient from both of its uses

    def forward(self, idx, targets=None):
        # idx (B,T) int64 -> logits (B,T,V); loss = mean over B*T of -log softmax(logits)[target]
        B, T = idx.size()
        assert T <= self.config.block_size, f"T={T} exceeds block size {self.config.block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B,T,C)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B,T,V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def init_weights(model, gen):
    """GPT-2 init from generator gen: weights normal(0, 0.02), the two residual projections of each block
    normal(0, 0.02/sqrt(2L)) (the residual stream sums 2L of them), biases 0, LayerNorm weight 1 bias 0.
    Draws in the dtype the model is in (float32 for the reference: see the module docstring)."""
    std_resid = 0.02 / math.sqrt(2 * model.config.n_layer)
    with torch.no_grad():
        for name, p in model.named_parameters():  # the tied lm_head.weight is listed once, as wte
            if name.endswith("c_proj.weight"):
                p.normal_(0.0, std_resid, generator=gen)
            elif p.dim() == 2:  # wte, wpe, c_attn.weight, c_fc.weight
                p.normal_(0.0, 0.02, generator=gen)
            elif ".ln_" in name and name.endswith(".weight"):
                p.fill_(1.0)
            else:  # biases, LayerNorm biases
                p.zero_()


def perturb_for_tests(model, gen):
    """A harder starting point for the reference tests (--test-init): at GPT-2's init the biases are 0, the
    LayerNorm weights 1 and the pre-activations tiny, so a dropped bias, a swapped LayerNorm weight/bias or
    a wrong GELU constant (whose cubic term only matters for |x| ~ 1) change almost nothing. Here every
    matrix is N(0, 0.1) (pre-activations of order 1), every bias and LayerNorm bias N(0, 0.1), and every
    LayerNorm weight 1 + N(0, 0.1). The padded vocabulary rows do not exist in this model (wte has V rows)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.empty_like(p).normal_(0.0, 0.1, generator=gen)
            if p.dim() == 2:
                p.copy_(noise)
            elif ".ln_" in name and name.endswith(".weight"):
                p.add_(noise)
            else:
                p.copy_(noise)


def block_params(block):
    """The 12 parameters of one block, in checkpoint order: ln1w ln1b qkvw qkvb attprojw attprojb ln2w ln2b
    fcw fcb fcprojw fcprojb."""
    return [block.ln_1.weight, block.ln_1.bias, block.attn.c_attn.weight, block.attn.c_attn.bias,
            block.attn.c_proj.weight, block.attn.c_proj.bias, block.ln_2.weight, block.ln_2.bias,
            block.mlp.c_fc.weight, block.mlp.c_fc.bias, block.mlp.c_proj.weight, block.mlp.c_proj.bias]  # fmt: skip


def checkpoint_tensors(model, get):
    """The 16 llm.c parameter tensors in file order (PARAM_NAMES), each made from get(param), where get
    returns a tensor of the parameter's shape (the weight itself, or its gradient). Per-layer tensors are
    stacked over layers. Shapes: wte (V,C) (the writer pads it to Vp), wpe (maxT,C), ln1w ln1b (L,C),
    qkvw (L,3C,C), qkvb (L,3C), attprojw (L,C,C), attprojb (L,C), ln2w ln2b (L,C), fcw (L,4C,C), fcb (L,4C),
    fcprojw (L,C,4C), fcprojb (L,C), lnfw lnfb (C). Linear weights are (out,in), as PyTorch holds them."""
    t = model.transformer
    layers = zip(*[block_params(block) for block in t.h])  # 12 tuples of L parameters each
    per_layer = [torch.stack([get(p) for p in ps]) for ps in layers]
    return [get(t.wte.weight), get(t.wpe.weight)] + per_layer + [get(t.ln_f.weight), get(t.ln_f.bias)]


# ----------------------------------------------------------------------------------------------------
# LoRA and QLoRA (llmc/lora.h has the math and the layout the C++ trainers use)

LORA_TARGETS = ["qkv", "attproj", "fc", "fcproj"]  # the order of the adapter buffer


def block_linears(block):
    """The four matrices of a block that can get an adapter, in LORA_TARGETS order."""
    return [block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj]


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trained low-rank adapter: y = x W^T + b + (alpha/r) (x A^T) B^T, with
    A (r, in) and B (out, r)."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.A), self.B)


def nf4_table():
    """NF4's 16 levels (float32) and the midpoints between them rounded down to float32, computed as
    llmc/quantize.h does: quantiles of N(0,1) found by bisection on erfc, normalised to [-1, 1]."""
    def cdf_inverse(p):
        lo, hi = -40.0, 40.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
    delta = 0.5 * ((1.0 - 1.0 / 30.0) + (1.0 - 1.0 / 32.0))
    top = cdf_inverse(delta)
    pos = [cdf_inverse(delta - (delta - 0.5) * k / 8.0) / top for k in range(8)]
    neg = [-cdf_inverse(delta - (delta - 0.5) * k / 7.0) / top for k in range(7)]
    pos[0], neg[0] = 1.0, -1.0
    levels = np.array(sorted(pos + neg + [0.0]), dtype=np.float32)
    exact = (levels[:-1].astype(np.float64) + levels[1:].astype(np.float64)) / 2.0
    mids = exact.astype(np.float32)
    high = mids.astype(np.float64) > exact
    mids[high] = np.nextafter(mids[high], np.float32(-np.inf))
    return levels, mids


def nf4_roundtrip(w):
    """One layer's matrix through QLoRA's storage, float32 in and out: NF4 codes in blocks of 64 (nearest
    level of w / absmax), the absmax values double-quantized (minus their mean, int8 in blocks of 256), then
    dequantized: level * dequantized absmax."""
    levels, mids = nf4_table()
    x = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    assert x.size % 64 == 0, "the block matrices hold whole NF4 blocks"
    blocks = x.reshape(-1, 64)
    absmax = np.abs(blocks).max(axis=1)
    safe = np.where(absmax > 0, absmax, np.float32(1))
    y = (blocks / safe[:, None]).astype(np.float32)
    codes = np.searchsorted(mids, y, side="left")  # the number of midpoints below y
    codes[absmax == 0] = int(np.where(levels == 0)[0][0])
    mean = np.float32(absmax.astype(np.float64).mean())
    centered = (absmax - mean).astype(np.float32)
    deq = np.empty_like(absmax)
    for g in range(0, centered.size, 256):
        c = centered[g : g + 256]
        scale = np.abs(c).max()
        q = np.rint((c / scale).astype(np.float32) * np.float32(127)) if scale > 0 else np.zeros_like(c)
        deq[g : g + 256] = ((q / np.float32(127)).astype(np.float32).astype(np.float64) * float(scale) + float(mean)).astype(np.float32)
    return (levels[codes] * deq[:, None]).astype(np.float32).reshape(np.shape(w))


def apply_lora(model, r, alpha, targets, nf4, gen, test_init):
    """Freeze the model, replace its block matrices by their NF4 round trip (nf4: all four of every layer,
    adapted or not, as QLoRA stores the base), and wrap the targets in LoRALinear. Adapters drawn from gen:
    A uniform in +-1/sqrt(in) and B = 0 (the trainers' init), or with test_init (--lora-test-init) both
    N(0, 0.1), so the adapters change the output from the first step and every term of their gradient matters."""
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.transformer.h:
        linears = block_linears(block)
        if nf4:
            with torch.no_grad():
                for lin in linears:
                    lin.weight.copy_(torch.from_numpy(nf4_roundtrip(lin.weight.numpy())))
        wrapped = [LoRALinear(lin, r, alpha) if name in targets else lin for lin, name in zip(linears, LORA_TARGETS)]
        with torch.no_grad():
            for w in wrapped:
                if isinstance(w, LoRALinear):
                    if test_init:
                        w.A.normal_(0.0, 0.1, generator=gen)
                        w.B.normal_(0.0, 0.1, generator=gen)
                    else:
                        bound = 1.0 / math.sqrt(w.A.shape[1])
                        w.A.uniform_(-bound, bound, generator=gen)
        block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj = wrapped


def lora_tensors(model, targets, get):
    """The adapter buffer's tensors in llmc/lora.h's order: for each target, A (L, r, in) then B (L, out, r),
    each made from get(param)."""
    out = []
    for i, name in enumerate(LORA_TARGETS):
        if name in targets:
            adapters = [block_linears(block)[i] for block in model.transformer.h]
            out.append(torch.stack([get(a.A) for a in adapters]))
            out.append(torch.stack([get(a.B) for a in adapters]))
    return out


# ----------------------------------------------------------------------------------------------------
# AdamW of the debug state, written out so that the C++ test can follow it line by line

class AdamW:
    """Bias-corrected Adam with decoupled weight decay, no gradient clipping. For step t = 1, 2, ...:
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  mhat = m / (1-b1^t);  vhat = v / (1-b2^t)
    p -= lr (mhat / (sqrt(vhat) + eps) + wd p),  wd = ADAMW_WEIGHT_DECAY for 2-D weights, 0 otherwise."""

    def __init__(self, params):
        self.params = list(params)  # model.parameters() lists the tied wte once
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            wd = ADAMW_WEIGHT_DECAY if p.dim() == 2 else 0.0
            m.mul_(ADAMW_BETA1).add_((1.0 - ADAMW_BETA1) * g)
            v.mul_(ADAMW_BETA2).add_((1.0 - ADAMW_BETA2) * g * g)
            mhat = m / (1.0 - ADAMW_BETA1**self.t)
            vhat = v / (1.0 - ADAMW_BETA2**self.t)
            p.sub_(ADAMW_LR * (mhat / (vhat.sqrt() + ADAMW_EPS) + wd * p))


# ----------------------------------------------------------------------------------------------------
# llm.c file formats: little-endian; a header of 256 int32, then flat arrays

def write_file_atomic(path, arrays):
    """Write the arrays' bytes one after the other to path.tmp, then rename it to path: a reader never sees a
    half-written file."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            for a in arrays:
                f.write(np.ascontiguousarray(a).tobytes())
        os.replace(tmp, path)
    except OSError as e:
        fail(f"could not write '{path}': {e}")


def header(magic, version, values):
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[0], h[1] = magic, version
    h[2 : 2 + len(values)] = values
    return h


def fp32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, rounding to nearest, ties to even (finite values only)."""
    a = np.ascontiguousarray(a, dtype="<f4")
    assert np.isfinite(a).all(), "bf16 conversion of a non-finite value"
    u = a.view("<u4").astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # add just under half an ulp, plus one if the kept lsb is odd
    return u.astype("<u2")


def bf16_bits_to_fp32(u):
    return (np.asarray(u, dtype="<u2").astype("<u4") << 16).view("<f4")


def pad_rows(a, rows):
    """a (V,C) float32 -> (rows,C), the extra rows zero (the padded vocab rows Vp-V)."""
    out = np.zeros((rows, a.shape[1]), dtype="<f4")
    out[: a.shape[0]] = a
    return out


def write_model(path, config, Vp, params_fp32, dtype):
    """llm.c checkpoint. Header: [0] magic, [1] 3 (fp32) / 5 (bf16), [2] maxT, [3] V, [4] L, [5] NH, [6] C,
    [7] Vp; then the 16 tensors of checkpoint_tensors, wte padded to (Vp,C) with zero rows."""
    c = config
    version = MODEL_VERSION_FP32 if dtype == "fp32" else MODEL_VERSION_BF16
    h = header(MODEL_MAGIC, version, [c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd, Vp])
    params = [pad_rows(params_fp32[0], Vp)] + params_fp32[1:]
    if dtype == "bf16":
        params = [fp32_to_bf16_bits(p) for p in params]
    write_file_atomic(path, [h] + params)


def write_state(path, x, y, logits, loss, grads_fp32, Vp, losses):
    """Debug state. Header: [0] magic, [1] 2, [2] B, [3] T, [4] NSTEPS; then x (B,T) int32, y (B,T) int32,
    logits (B,T,V) float32 (unpadded V), loss (1) float32, the 16 gradients in checkpoint order and shape
    (wte's padded to Vp rows with zeros) float32, then NSTEPS float32 AdamW-step losses."""
    B, T = x.shape
    h = header(STATE_MAGIC, STATE_VERSION, [B, T, len(losses)])
    grads = [pad_rows(grads_fp32[0], Vp)] + grads_fp32[1:]
    arrays = [h, x.astype("<i4"), y.astype("<i4"), logits.astype("<f4"), np.array([loss], dtype="<f4")]
    write_file_atomic(path, arrays + grads + [np.array(losses, dtype="<f4")])


def write_lora_state(path, x, y, logits, loss, lora, adapters, grads, losses):
    """LoRA debug state. Header: [0] magic 20240328, [1] 1, [2] B, [3] T, [4] NSTEPS, [5] r, [6] the targets as
    bits (1 qkv, 2 attproj, 4 fc, 8 fcproj), [7] 1 for an NF4 base, [8] alpha (float32 bits); then x, y (B,T)
    int32, logits (B,T,V) float32, loss, the adapters and their gradients (llmc/lora.h's order, float32),
    then NSTEPS float32 AdamW-step losses."""
    B, T = x.shape
    r, alpha, targets, nf4 = lora
    mask = sum(1 << i for i, name in enumerate(LORA_TARGETS) if name in targets)
    alpha_bits = int(np.array([alpha], dtype="<f4").view("<i4")[0])
    h = header(LORA_STATE_MAGIC, LORA_STATE_VERSION, [B, T, len(losses), r, mask, int(nf4), alpha_bits])
    arrays = [h, x.astype("<i4"), y.astype("<i4"), logits.astype("<f4"), np.array([loss], dtype="<f4")]
    write_file_atomic(path, arrays + adapters + grads + [np.array(losses, dtype="<f4")])


def read_model(path):
    """Inverse of write_model: (config, Vp, list of 16 float32 arrays, wte cut back to V rows)."""
    if not os.path.isfile(path):
        fail(f"model file '{path}' does not exist")
    h = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if len(h) != HEADER_INTS or h[0] != MODEL_MAGIC or h[1] not in (MODEL_VERSION_FP32, MODEL_VERSION_BF16):
        fail(f"'{path}' is not an llm.c checkpoint (expected magic {MODEL_MAGIC}, version 3 or 5)")
    maxT, V, L, NH, C, Vp = (int(v) for v in h[2:8])
    config = GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C)
    shapes = [(Vp, C), (maxT, C), (L, C), (L, C), (L, 3 * C, C), (L, 3 * C), (L, C, C), (L, C),
              (L, C), (L, C), (L, 4 * C, C), (L, 4 * C), (L, C, 4 * C), (L, C), (C,), (C,)]  # fmt: skip
    bf16 = h[1] == MODEL_VERSION_BF16
    raw = np.fromfile(path, dtype="<u2" if bf16 else "<f4", offset=4 * HEADER_INTS)
    if len(raw) != sum(math.prod(s) for s in shapes):
        fail(f"'{path}' has {len(raw)} parameters, its header implies {sum(math.prod(s) for s in shapes)}")
    vals = bf16_bits_to_fp32(raw) if bf16 else raw
    params, off = [], 0
    for s in shapes:
        n = math.prod(s)
        params.append(vals[off : off + n].reshape(s))
        off += n
    params[0] = params[0][:V]
    return config, Vp, params


def load_params(model, params):
    """Copy 16 checkpoint-order arrays (wte (V,C), as read_model returns) into the model, casting to its dtype."""
    t = model.transformer
    wte, wpe, *per_layer, lnfw, lnfb = [torch.from_numpy(np.array(a)) for a in params]
    with torch.no_grad():
        for dst, src in [(t.wte.weight, wte), (t.wpe.weight, wpe), (t.ln_f.weight, lnfw), (t.ln_f.bias, lnfb)]:
            dst.copy_(src)
        for i, block in enumerate(t.h):
            for dst, src in zip(block_params(block), per_layer):
                dst.copy_(src[i])


def read_tokens(path, n, V):
    """The first n tokens of an llm.c token shard: header [0] 20240520, [1] 1, [2] count; then count uint16."""
    if not os.path.isfile(path):
        fail(f"token file '{path}' does not exist")
    h = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if len(h) != HEADER_INTS or h[0] != TOKENS_MAGIC or h[1] != TOKENS_VERSION:
        fail(f"'{path}' is not an llm.c token shard (expected magic {TOKENS_MAGIC}, version {TOKENS_VERSION})")
    count = int(h[2])
    if os.path.getsize(path) != 4 * HEADER_INTS + 2 * count:
        fail(f"'{path}': header says {count} tokens, file size {os.path.getsize(path)} disagrees")
    if count < n:
        fail(f"'{path}' has {count} tokens, need B*T+1 = {n}")
    tokens = np.fromfile(path, dtype="<u2", count=n, offset=4 * HEADER_INTS).astype(np.int64)
    if tokens.max() >= V:
        fail(f"'{path}' holds token {tokens.max()}, not below --vocab-size {V}")
    return torch.from_numpy(tokens)


# ----------------------------------------------------------------------------------------------------
# main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="PyTorch GPT-2 reference: writes an llm.c checkpoint and debug state")
    p.add_argument("--vocab-size", type=int, default=50257, help="V (default 50257)")
    p.add_argument("--padded-vocab", type=int, default=None, help="Vp (default: V rounded up to a multiple of 128)")
    p.add_argument("--n-layer", type=int, default=12, help="L (default 12)")
    p.add_argument("--n-head", type=int, default=12, help="NH (default 12)")
    p.add_argument("--n-embd", type=int, default=768, help="C (default 768)")
    p.add_argument("--block-size", type=int, default=1024, help="maxT (default 1024)")
    p.add_argument("-B", type=int, default=4, help="batch size (default 4)")
    p.add_argument("-T", type=int, default=64, help="sequence length (default 64)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the init and of random tokens (default 1337)")
    p.add_argument("--compute-dtype", choices=["float32", "float64"], default="float64",
                   help="precision of the reference math (default float64); files are float32 either way")
    p.add_argument("--tokens", default=None, help="llm.c token shard; its first B*T+1 tokens make the batch "
                   "(default: random tokens in [0,V) from the seed)")  # fmt: skip
    p.add_argument("--adamw-steps", type=int, default=ADAMW_STEPS, help=f"NSTEPS (default {ADAMW_STEPS})")
    p.add_argument("--model-dtype", choices=["fp32", "bf16"], default="fp32", help="checkpoint dtype (default fp32)")
    p.add_argument("--round-to-bf16", action="store_true",
                   help="round the initial weights to bf16-representable values before computing anything, so "
                   "that a bf16 checkpoint holds exactly the weights of the state")  # fmt: skip
    p.add_argument("--test-init", action="store_true",
                   help="perturb the init so every formula matters: random biases and LayerNorm weights, "
                        "matrices N(0,0.1) (see perturb_for_tests)")
    p.add_argument("--sdpa", action="store_true", help="use F.scaled_dot_product_attention where available")
    p.add_argument("--device", default="cpu", help="where the math runs: cpu (default) or cuda; the init and "
                   "the batch are drawn on the CPU either way, so the files differ only by round-off")  # fmt: skip
    p.add_argument("--write-model", default=None, metavar="PATH", help="write the initial weights here")
    p.add_argument("--write-state", default=None, metavar="PATH", help="write the debug state here")
    p.add_argument("--write-final-model", default=None, metavar="PATH",
                   help="write the weights after the AdamW steps here (fp32, rounded from the compute dtype)")
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA rank r: the model is a frozen base (default 0: off)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha; the adapters are scaled by alpha/r")
    p.add_argument("--lora-targets", default="qkv,attproj", help="matrices with adapters: qkv,attproj,fc,fcproj or all")
    p.add_argument("--lora-nf4", action="store_true", help="QLoRA: the block matrices pass through NF4 first")
    p.add_argument("--lora-test-init", action="store_true",
                   help="adapters A and B both N(0, 0.1), so every term of their forward and gradients matters "
                   "(default: the trainers' init, A uniform, B zero)")  # fmt: skip
    p.add_argument("--write-lora-state", default=None, metavar="PATH", help="write the LoRA debug state here")
    args = p.parse_args(argv)

    if args.padded_vocab is None:
        args.padded_vocab = (args.vocab_size + 127) // 128 * 128
    for name in ["vocab_size", "n_layer", "n_head", "n_embd", "block_size", "B", "T"]:
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.padded_vocab < args.vocab_size:
        fail(f"--padded-vocab {args.padded_vocab} must be at least --vocab-size {args.vocab_size}")
    if args.n_embd % args.n_head != 0:
        fail(f"--n-embd {args.n_embd} must be a multiple of --n-head {args.n_head}")
    if args.T > args.block_size:
        fail(f"-T {args.T} must not exceed --block-size {args.block_size}")
    if args.adamw_steps < 0:
        fail(f"--adamw-steps must be >= 0, got {args.adamw_steps}")
    args.lora_targets = LORA_TARGETS if args.lora_targets == "all" else args.lora_targets.split(",")
    for name in args.lora_targets:
        if name not in LORA_TARGETS:
            fail(f"--lora-targets: '{name}' is not one of {','.join(LORA_TARGETS)} (or all)")
    if args.lora_rank < 0 or (args.lora_rank == 0 and (args.write_lora_state or args.lora_nf4 or args.lora_test_init)):
        fail("--write-lora-state, --lora-nf4 and --lora-test-init need --lora-rank >= 1")
    if args.lora_rank > 0 and (args.write_state or args.write_final_model):
        fail("with --lora-rank use --write-lora-state (and --write-model for the base)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device}: torch.cuda.is_available() is False")
    return args


def forward_backward(model, x, y):
    model.zero_grad(set_to_none=True)
    logits, loss = model(x, y)
    loss.backward()
    return logits, loss


def main(argv=None):
    args = parse_args(argv)
    B, T, V, Vp = args.B, args.T, args.vocab_size, args.padded_vocab
    config = GPTConfig(block_size=args.block_size, vocab_size=V, n_layer=args.n_layer, n_head=args.n_head,
                       n_embd=args.n_embd, use_sdpa=args.sdpa)  # fmt: skip
    dtype = torch.float64 if args.compute_dtype == "float64" else torch.float32

    # the batch: B*T+1 tokens, x the first B*T, y the same shifted by one
    gen = torch.Generator().manual_seed(args.seed)
    if args.tokens is not None:
        tokens = read_tokens(args.tokens, B * T + 1, V)
    else:
        tokens = torch.randint(0, V, (B * T + 1,), generator=gen)
    x = tokens[:-1].view(B, T).to(args.device)
    y = tokens[1:].view(B, T).to(args.device)

    # the model: drawn in float32 from the same generator, then cast up for the math
    model = GPT(config)
    init_weights(model, gen)
    if args.test_init:
        perturb_for_tests(model, gen)
    if args.round_to_bf16:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    initial_fp32 = [t.numpy().copy() for t in checkpoint_tensors(model, lambda p: p.detach())]
    if args.lora_rank > 0:  # the base above is what --write-model writes; the adapters train
        apply_lora(model, args.lora_rank, args.lora_alpha, args.lora_targets, args.lora_nf4, gen, args.lora_test_init)
        if args.round_to_bf16:  # the adapters too, and an NF4 base's dequantized values: what a bf16 GPU reads
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).float())
        adapters_fp32 = [t.numpy().copy() for t in lora_tensors(model, args.lora_targets, lambda p: p.detach())]
    model.to(args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config: V={V} Vp={Vp} L={config.n_layer} NH={config.n_head} C={config.n_embd} "
          f"maxT={config.block_size} B={B} T={T} seed={args.seed} dtype={args.compute_dtype} "
          f"device={args.device}")  # fmt: skip
    print(f"parameters: {n_params} (unpadded)")
    if args.sdpa and not hasattr(F, "scaled_dot_product_attention"):
        print(f"note: --sdpa needs PyTorch >= 2.0 (this is {torch.__version__}); using the explicit attention")

    # forward and backward on the batch: the state's logits, loss and gradients
    logits, loss = forward_backward(model, x, y)
    loss0 = loss.item()
    print(f"loss: {loss0:.6f}")
    logits_fp32 = logits.detach().float().cpu().numpy()
    if args.lora_rank > 0:
        grads_fp32 = [t.float().cpu().numpy().copy() for t in lora_tensors(model, args.lora_targets, lambda p: p.grad)]
    else:
        grads_fp32 = [t.float().cpu().numpy().copy() for t in checkpoint_tensors(model, lambda p: p.grad)]

    # NSTEPS AdamW steps on the same batch; loss i is computed before update i (so losses[0] == loss)
    opt = AdamW(p for p in model.parameters() if p.requires_grad)  # under LoRA, the adapters
    losses = []
    for step in range(args.adamw_steps):
        if step > 0:
            _, loss = forward_backward(model, x, y)
        losses.append(loss.item())
        opt.step()
        print(f"step {step}: loss {losses[-1]:.6f}")

    if args.write_model:
        write_model(args.write_model, config, Vp, initial_fp32, args.model_dtype)
        print(f"wrote {args.write_model} ({args.model_dtype})")
    if args.write_lora_state:
        lora = (args.lora_rank, args.lora_alpha, args.lora_targets, args.lora_nf4)
        write_lora_state(args.write_lora_state, x.cpu().numpy(), y.cpu().numpy(), logits_fp32, loss0, lora,
                         adapters_fp32, grads_fp32, losses)
        print(f"wrote {args.write_lora_state}")
    if args.write_state:
        write_state(args.write_state, x.cpu().numpy(), y.cpu().numpy(), logits_fp32, loss0, grads_fp32, Vp, losses)
        print(f"wrote {args.write_state}")
    if args.write_final_model:
        final_fp32 = [t.float().cpu().numpy() for t in checkpoint_tensors(model, lambda p: p.detach())]
        write_model(args.write_final_model, config, Vp, final_fp32, "fp32")
        print(f"wrote {args.write_final_model} (fp32, after {args.adamw_steps} AdamW steps)")


if __name__ == "__main__":
    main()
