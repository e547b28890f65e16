"""
bench_pytorch_gpt2.py: PyTorch training throughput of the GPT-2 of train_gpt2.py, the baseline our CUDA
trainer is compared against.

What it runs is a tuned PyTorch recipe, not the reference's float64 math: torch.compile (PyTorch >= 2.0,
unless --no-compile), F.scaled_dot_product_attention with is_causal=True (flash attention on H100), bf16
autocast on CUDA with fp32 master weights, fused AdamW on CUDA, TF32 for what stays fp32, gradient clipping.
The model's vocab is the padded Vp (50304 for GPT-2): the classifier matmul then has the shape our trainer
uses. Its Vp-V extra logits join the softmax, a change of the loss a benchmark can live with; tokens stay
below V.

It prints per-step time and tokens/s, then the median tokens/s over the steps after --warmup, and MFU:
  FLOPs per token = 6 N + 6 L C T    (forward + backward, the llm.c estimate)
where N counts every parameter except the position table wpe (a lookup, no matmul), and includes the
tied wte/lm_head with its Vp rows (it is the classifier matmul); 6 L C T is the attention's QK^T and AV
with the causal half skipped. The peak is --peak-flops, or the dense bf16 tensor-core peak of a known GPU
(table below); on an unknown GPU or the CPU, MFU prints n/a.

Examples:
  python3 dev/bench/bench_pytorch_gpt2.py -B 16 -T 1024 --steps 50 --input "data/fineweb10B/*train*.bin"
  python3 dev/bench/bench_pytorch_gpt2.py --device cpu --no-compile --n-layer 2 --n-embd 64 --n-head 2 \\
      --vocab-size 256 -B 2 -T 32 --steps 2 --warmup 1
"""

import argparse
import glob
import inspect
import os
import statistics
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from train_gpt2 import GPT, GPTConfig, HEADER_INTS, TOKENS_MAGIC, TOKENS_VERSION, fail, init_weights  # noqa: E402

# dense bf16 tensor-core peak FLOP/s (no sparsity), matched against torch.cuda.get_device_name()
PEAK_BF16_FLOPS = [
    # (all substrings that must appear in the name, peak)
    (("H200",), 989e12),
    (("H100", "PCIe"), 756e12),
    (("H100", "SXM"), 989e12),
    (("H100", "HBM3"), 989e12),  # the SXM part reports itself as "NVIDIA H100 80GB HBM3"
    (("A100",), 312e12),
]


def peak_flops_for(device_name):
    for parts, peak in PEAK_BF16_FLOPS:
        if all(p in device_name for p in parts):
            return peak
    return None


class ShardLoader:
    """Batches of B*T+1 consecutive tokens from llm.c token shards (header int32[256]: 20240520, 1, count;
    then count uint16), the shards in sorted order, wrapping around at the end."""

    def __init__(self, pattern, B, T, V):
        self.paths = sorted(glob.glob(pattern))
        if not self.paths:
            fail(f"--input '{pattern}' matches no files")
        self.B, self.T, self.V = B, T, V
        self.shard = -1
        self.next_shard()

    def next_shard(self):
        self.shard = (self.shard + 1) % len(self.paths)
        path = self.paths[self.shard]
        h = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
        if len(h) != HEADER_INTS or h[0] != TOKENS_MAGIC or h[1] != TOKENS_VERSION:
            fail(f"'{path}' is not an llm.c token shard (expected magic {TOKENS_MAGIC}, version {TOKENS_VERSION})")
        count = int(h[2])
        if os.path.getsize(path) != 4 * HEADER_INTS + 2 * count:
            fail(f"'{path}': header says {count} tokens, file size {os.path.getsize(path)} disagrees")
        if count < self.B * self.T + 1:
            fail(f"'{path}' has {count} tokens, fewer than B*T+1 = {self.B * self.T + 1}")
        self.tokens = np.memmap(path, dtype="<u2", mode="r", offset=4 * HEADER_INTS, shape=(count,))
        if int(self.tokens.max()) >= self.V:
            fail(f"'{path}' holds token {int(self.tokens.max())}, not below --vocab-size {self.V}")
        self.pos = 0

    def next_batch(self):
        n = self.B * self.T
        if self.pos + n + 1 > len(self.tokens):
            self.next_shard()
        buf = torch.from_numpy(self.tokens[self.pos : self.pos + n + 1].astype(np.int64))
        self.pos += n
        return buf[:-1].view(self.B, self.T), buf[1:].view(self.B, self.T)


class RandomLoader:
    """Batches of uniformly random tokens in [0,V) (throughput does not depend on the data)."""

    def __init__(self, B, T, V, seed):
        self.B, self.T, self.V = B, T, V
        self.gen = torch.Generator().manual_seed(seed)

    def next_batch(self):
        buf = torch.randint(0, self.V, (self.B * self.T + 1,), generator=self.gen)
        return buf[:-1].view(self.B, self.T), buf[1:].view(self.B, self.T)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="PyTorch GPT-2 training throughput benchmark")
    p.add_argument("--vocab-size", type=int, default=50257, help="V: tokens are below it (default 50257)")
    p.add_argument("--padded-vocab", type=int, default=None, help="Vp, the model's vocab (default: V up to 128)")
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--block-size", type=int, default=1024, help="maxT (default 1024)")
    p.add_argument("-B", type=int, default=16, help="batch size (default 16)")
    p.add_argument("-T", type=int, default=1024, help="sequence length (default 1024)")
    p.add_argument("--steps", type=int, default=50, help="training steps (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the median (compile, autotune)")
    p.add_argument("--input", default=None, help="glob of llm.c token shards (default: random tokens)")
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--weight-decay", type=float, default=0.1, help="on 2-D weights only (default 0.1)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="global grad-norm clip, 0 = off (default 1.0)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--no-compile", action="store_true", help="do not torch.compile the model")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for MFU (default: table by GPU)")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    if args.padded_vocab is None:
        args.padded_vocab = (args.vocab_size + 127) // 128 * 128
    if args.padded_vocab < args.vocab_size:
        fail(f"--padded-vocab {args.padded_vocab} must be at least --vocab-size {args.vocab_size}")
    if args.n_embd % args.n_head != 0:
        fail(f"--n-embd {args.n_embd} must be a multiple of --n-head {args.n_head}")
    if args.T > args.block_size:
        fail(f"-T {args.T} must not exceed --block-size {args.block_size}")
    if args.steps <= 0 or args.warmup < 0:
        fail(f"--steps must be positive and --warmup non-negative (got {args.steps}, {args.warmup})")
    return args


def main(argv=None):
    args = parse_args(argv)
    B, T, L, C = args.B, args.T, args.n_layer, args.n_embd
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda asked for, but torch.cuda.is_available() is False")
    on_cuda = device.startswith("cuda")
    torch.manual_seed(args.seed)
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    config = GPTConfig(block_size=args.block_size, vocab_size=args.padded_vocab, n_layer=L, n_head=args.n_head,
                       n_embd=C, use_sdpa=True)  # fmt: skip
    model = GPT(config)
    init_weights(model, torch.Generator().manual_seed(args.seed))
    model.to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    n_flop_params = n_params - model.transformer.wpe.weight.numel()
    flops_per_token = 6 * n_flop_params + 6 * L * C * T

    compiled = not args.no_compile and hasattr(torch, "compile")
    if compiled:
        model = torch.compile(model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = on_cuda and "fused" in inspect.signature(torch.optim.AdamW).parameters  # PyTorch >= 2.0
    extra = {"fused": True} if fused else {}
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **extra)
    use_bf16 = on_cuda and not args.fp32
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    sdpa = hasattr(torch.nn.functional, "scaled_dot_product_attention")
    loader = ShardLoader(args.input, B, T, args.vocab_size) if args.input else RandomLoader(
        B, T, args.vocab_size, args.seed)  # fmt: skip

    device_name = torch.cuda.get_device_name() if on_cuda else "cpu"
    peak = args.peak_flops if args.peak_flops else (peak_flops_for(device_name) if on_cuda else None)
    print(f"torch {torch.__version__} on {device_name}")
    print(f"model: L={L} NH={args.n_head} C={C} V={args.vocab_size} Vp={args.padded_vocab} maxT={args.block_size} "
          f"| {n_params / 1e6:.2f}M parameters, N = {n_flop_params / 1e6:.2f}M of them (all but wpe) for FLOPs")
    print(f"run: B={B} T={T} steps={args.steps} warmup={args.warmup} | compile={compiled} sdpa={sdpa} "
          f"bf16-autocast={use_bf16} fused-adamw={fused} data={args.input or 'random'}")
    print(f"FLOPs per token: {flops_per_token:.4g} (6N + 6LCT)")

    tokens_per_s = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        x, y = loader.next_batch()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip) if args.grad_clip > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tokens_per_s.append(B * T / dt)
        norm_str = f" | norm {norm.item():.4f}" if norm is not None else ""
        print(f"step {step + 1:4d}/{args.steps} | loss {loss.item():.6f}{norm_str} | {dt * 1000:.2f} ms "
              f"| {tokens_per_s[-1]:.0f} tok/s")  # fmt: skip

    timed = tokens_per_s[args.warmup :]
    if not timed:
        print(f"median over all {len(tokens_per_s)} steps (no steps after --warmup {args.warmup})")
        timed = tokens_per_s
    median = statistics.median(timed)
    print(f"median tokens/s over {len(timed)} steps: {median:.0f}")
    if peak:
        print(f"MFU: {100.0 * median * flops_per_token / peak:.1f}% of {peak:.4g} FLOP/s")
    else:
        print(f"MFU: n/a (no peak FLOP/s known for '{device_name}'; give --peak-flops)")
    if on_cuda:
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
