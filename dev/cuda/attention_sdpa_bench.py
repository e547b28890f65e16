"""Times PyTorch's flash attention (F.scaled_dot_product_attention, flash backend, bf16, causal) at the
shapes dev/cuda/attention_check.cu times, printing the same figures, so our kernels can be compared with
it in the same session on the same GPU:

    ./dev/cuda/attention_check && /usr/bin/python3 dev/cuda/attention_sdpa_bench.py

Figures: median of 20 runs (after 3 warm-up runs) of the forward and of forward+backward, in ms; the
backward is their difference. TFLOP/s use the causal flop counts of attention_check.cu: forward
4 * B * NH * T * T * HS / 2, backward 2.5x the forward. Needs PyTorch >= 2.0 (F.scaled_dot_product_attention).
Exits non-zero when there is no CUDA GPU, the PyTorch is too old, or the flash backend refuses a shape.
"""

import statistics
import sys

import torch
import torch.nn.functional as F

# name, B, NH, T, HS: the timed shapes of attention_check.cu
SHAPES = [
    ("d12 (GPT-2 124M)", 4, 12, 1024, 64),
    ("d24 style", 4, 16, 1024, 64),
    ("HS=128", 2, 8, 1024, 128),
]
WARMUP, REPS = 3, 20


def time_ms(fn):
    """Median wall time of fn on the GPU in ms, measured with CUDA events."""
    times = []
    for rep in range(WARMUP + REPS):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        if rep >= WARMUP:
            times.append(start.elapsed_time(stop))
    return statistics.median(times)


def flash_only():
    """Context manager that restricts SDPA to the flash backend (the API moved in PyTorch 2.3)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)


def bench(name, B, NH, T, HS):
    # the layout our kernels read: qkv (B, T, 3, NH, HS); SDPA wants (B, NH, T, HS) views of it
    qkv = torch.randn(B, T, 3, NH, HS, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(B, NH, T, HS, device="cuda", dtype=torch.bfloat16)

    def forward():
        q, k, v = qkv.unbind(dim=2)
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )

    def forward_backward():
        qkv.grad = None
        forward().backward(dout)

    with flash_only():
        with torch.no_grad():
            fwd = time_ms(forward)
        fwd_bwd = time_ms(forward_backward)
    bwd = fwd_bwd - fwd
    fwd_flops = 4.0 * B * NH * T * T * HS / 2.0
    bwd_flops = 2.5 * fwd_flops
    print(f"{name}: B={B} NH={NH} T={T} HS={HS}")
    print(
        f"    timing (median of {REPS}): forward {fwd:.3f} ms {fwd_flops / (fwd * 1e-3) / 1e12:.1f} TFLOP/s   "
        f"backward {bwd:.3f} ms {bwd_flops / (bwd * 1e-3) / 1e12:.1f} TFLOP/s   fwd+bwd {fwd_bwd:.3f} ms"
    )


def main():
    if not hasattr(F, "scaled_dot_product_attention"):
        print(f"error: PyTorch {torch.__version__} has no F.scaled_dot_product_attention (needs >= 2.0)", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to PyTorch", file=sys.stderr)
        return 1
    print(f"PyTorch {torch.__version__} SDPA flash backend, bf16, causal, on {torch.cuda.get_device_name()}")
    for shape in SHAPES:
        try:
            bench(*shape)
        except RuntimeError as err:
            print(f"error: flash SDPA failed for {shape}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
