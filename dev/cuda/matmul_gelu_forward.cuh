// matmul_gelu_forward.cuh: the forward matmul with GELU fused into cuBLASLt's epilogue, an experiment the
// trainer does not use: pre_gelu = inp W^T + b, out = gelu(pre_gelu) in one pass (GELU_AUX(_BIAS)),
// instead of llmc/matmul.cuh's matmul_forward and gelu.cuh's gelu_forward. cuBLASLt's GELU need not
// round like gelu_forward, and the trainer's recompute modes need the same bits from the forward and the
// recompute, so train_gpt2.cu runs them apart. dev/cuda/matmul_check measures what fusion would save;
// tests/emu/test_emu_cublaslt checks the emulated epilogue with it.
#pragma once

#include "llmc/matmul.cuh"

// ctx->fuse_gelu false (or no algorithm for the fused epilogue): the plain matmul into pre_gelu, then
// gelu.cuh's kernel.
inline void matmul_forward_gelu(MatmulContext* ctx, floatX* out, floatX* pre_gelu, const floatX* inp,
                                const floatX* weight, const floatX* bias, int BT, int C, int OC,
                                cudaStream_t stream) {
    matmul_check_shapes(C, OC, "matmul_forward_gelu");
    const cublasLtEpilogue_t fused =
        bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    if (ctx->fuse_gelu && matmul_cublaslt(ctx, out, weight, inp, bias, pre_gelu, OC, BT, C, true, false,
                                          false, fused, stream)) {
        return;
    }
    matmul_forward(ctx, pre_gelu, inp, weight, bias, BT, C, OC, stream);
    gelu_forward(out, pre_gelu, (size_t)BT * OC, stream);
}
