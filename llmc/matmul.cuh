// matmul.cuh: the linear layers, on cuBLASLt, forward and backward.
//
// forward:  out = inp W^T + b                      inp (BT,C), W (OC,C) row-major, b (OC) -> out (BT,OC)
// backward: dinp  = dout W                         dout (BT,OC) -> dinp (BT,C)          (overwritten)
//           with pre_gelu (the input of the GELU that produced `inp`, shape (BT,C)):
//           dinp  = (dout W) * gelu'(pre_gelu)     (cuBLASLt DGELU epilogue: one pass instead of two)
//           dW   += dout^T inp                     (OC,C)                                (accumulated)
//           db   += sum over rows of dout          (OC)                                  (accumulated)
//
// cuBLASLt is column-major. A row-major (R,K) matrix is the same bytes as a column-major (K,R) matrix,
// so each row-major product is computed as its transpose, D(m,n) = op(A)(m,k) op(B)(k,n), column-major:
//     forward   D = out^T  (m=OC, n=BT, k=C):   A = W as col-major (C,OC) ld C, transposed;
//                                               B = inp^T (C,BT) ld C
//     dinp      D = dinp^T (m=C, n=BT, k=OC):   A = W as col-major (C,OC) ld C;
//                                               B = dout^T (OC,BT) ld OC
//     dweight   D = dW^T   (m=C, n=OC, k=BT):   A = inp^T (C,BT) ld C;
//                                               B = dout^T (OC,BT) ld OC, transposed
// The bias of a cuBLASLt epilogue has one value per row of D (m), which is OC in the forward: right.
//
// Precision: bf16 inputs and outputs, fp32 accumulation (CUBLAS_COMPUTE_32F) and fp32 alpha/beta; in
// the FP32 build everything is fp32 and CUBLAS_COMPUTE_32F is exact fp32 (TF32 is only used with
// CUBLAS_COMPUTE_32F_FAST_TF32, which we never ask for), so the GPU compares tightly with the CPU.
//
// Nothing is rebuilt per call: MatmulContext caches, per (transA, transB, m, n, k, epilogue, has_bias,
// accumulate, pointer alignment), the matmul descriptor, the three layouts and the algorithm the
// heuristic chose. The bias reduction is our own two-kernel deterministic column sum (no atomics).
// All pointers must be 16-byte aligned, C and OC multiples of 8 (checked).
#pragma once

#include <algorithm>
#include <cstdint>

#include "llmc/cuda_common.h"
#include "llmc/gelu.cuh"

constexpr size_t MATMUL_WORKSPACE_BYTES = 32 * 1024 * 1024;
constexpr int MATMUL_CACHE_SIZE = 64;
constexpr int MATMUL_DBIAS_ROWS_PER_PARTIAL = 64;

#if defined(ENABLE_FP32)
constexpr cudaDataType_t CUBLAS_FLOATX = CUDA_R_32F;
#else
constexpr cudaDataType_t CUBLAS_FLOATX = CUDA_R_16BF;
#endif

struct MatmulKey {
    bool transA, transB;
    int m, n, k;
    cublasLtEpilogue_t epilogue;
    bool has_bias;
    bool accumulate;
    int pointer_alignment; // alignment (16..256 bytes) of the bias/aux pointers: the heuristic looks at it
};

inline bool matmul_key_equal(const MatmulKey& a, const MatmulKey& b) {
    return a.transA == b.transA && a.transB == b.transB && a.m == b.m && a.n == b.n && a.k == b.k &&
           a.epilogue == b.epilogue && a.has_bias == b.has_bias && a.accumulate == b.accumulate &&
           a.pointer_alignment == b.pointer_alignment;
}

struct MatmulPlan {
    MatmulKey key;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_d = nullptr; // C shares D's layout
    cublasLtMatmulHeuristicResult_t heuristic;
    bool has_algo = false; // false: cuBLASLt has no algorithm for this epilogue; the caller falls back
};

struct MatmulContext {
    cublasLtHandle_t handle = nullptr;
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
    cublasLtMatmulPreference_t preference = nullptr;
    MatmulPlan plans[MATMUL_CACHE_SIZE];
    int num_plans = 0;
    // true: the backward's GELU in cuBLASLt's DGELU epilogue of the dinp matmul (one pass instead of two);
    // false (the trainer's default, flag -ge): plain matmul, then gelu.cuh's kernel, the project's own
    // formula, until a GPU run shows the epilogue is as exact and faster. Also the fallback when cuBLASLt
    // has no algorithm for the epilogue.
    bool fuse_gelu = false;
};

inline void matmul_context_init(MatmulContext* ctx) {
    cublasCheck(cublasLtCreate(&ctx->handle));
    ctx->workspace_bytes = MATMUL_WORKSPACE_BYTES;
    cudaCheck(cudaMalloc(&ctx->workspace, ctx->workspace_bytes));
    cublasCheck(cublasLtMatmulPreferenceCreate(&ctx->preference));
    uint64_t workspace = ctx->workspace_bytes;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(
        ctx->preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
    // Our matrices are carved from large buffers and are only guaranteed 16-byte aligned; the default
    // preference assumes 256 bytes and could pick an algorithm that faults on our pointers.
    uint32_t alignment = 16;
    const cublasLtMatmulPreferenceAttributes_t align_attrs[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++) {
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(ctx->preference, align_attrs[i], &alignment,
                                                         sizeof(alignment)));
    }
    ctx->num_plans = 0;
}

inline void matmul_context_free(MatmulContext* ctx) {
    for (int i = 0; i < ctx->num_plans; i++) {
        MatmulPlan& p = ctx->plans[i];
        cublasCheck(cublasLtMatrixLayoutDestroy(p.layout_a));
        cublasCheck(cublasLtMatrixLayoutDestroy(p.layout_b));
        cublasCheck(cublasLtMatrixLayoutDestroy(p.layout_d));
        cublasCheck(cublasLtMatmulDescDestroy(p.desc));
    }
    ctx->num_plans = 0;
    cublasCheck(cublasLtMatmulPreferenceDestroy(ctx->preference));
    cudaCheck(cudaFree(ctx->workspace));
    cublasCheck(cublasLtDestroy(ctx->handle));
    ctx->preference = nullptr;
    ctx->workspace = nullptr;
    ctx->handle = nullptr;
}

inline void matmul_set_pointers(cublasLtMatmulDesc_t desc, const floatX* bias, const floatX* aux) {
    if (bias != nullptr) {
        cublasCheck(
            cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    if (aux != nullptr) {
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux,
                                                   sizeof(aux)));
    }
}

inline bool matmul_epilogue_has_aux(cublasLtEpilogue_t epilogue) {
    return epilogue == CUBLASLT_EPILOGUE_GELU_AUX || epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
           epilogue == CUBLASLT_EPILOGUE_DGELU;
}

inline int matmul_pointer_alignment(const void* p) {
    uintptr_t address = (uintptr_t)p;
    int alignment = 16;
    while (alignment < 256 && address % (2 * alignment) == 0) alignment *= 2;
    return alignment;
}

inline void matmul_check_aligned(const void* p, const char* what) {
    if (p != nullptr && (uintptr_t)p % 16 != 0) fail("matmul: %s pointer %p is not 16-byte aligned", what, p);
}

// Builds (once) the descriptor, layouts and algorithm for this key. Called with the pointers of the
// first call set, because the heuristic reads the bias/aux pointer values to judge their alignment.
inline MatmulPlan* matmul_get_plan(MatmulContext* ctx, const MatmulKey& key, const floatX* bias,
                                   const floatX* aux) {
    for (int i = 0; i < ctx->num_plans; i++) {
        if (matmul_key_equal(ctx->plans[i].key, key)) return &ctx->plans[i];
    }
    if (ctx->num_plans == MATMUL_CACHE_SIZE) {
        fail("matmul: more than %d distinct matmul shapes; raise MATMUL_CACHE_SIZE", MATMUL_CACHE_SIZE);
    }
    MatmulPlan* p = &ctx->plans[ctx->num_plans++];
    p->key = key;
    cublasCheck(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t op_a = key.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = key.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    cublasLtEpilogue_t epilogue = key.epilogue;
    cublasCheck(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    if (key.has_bias) {
        cudaDataType_t bias_type = CUBLAS_FLOATX;
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                   sizeof(bias_type)));
    }
    if (matmul_epilogue_has_aux(key.epilogue)) {
        int64_t aux_ld = key.m; // the aux matrix has D's shape (m,n), column-major
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld,
                                                   sizeof(aux_ld)));
    }
    matmul_set_pointers(p->desc, bias, aux);
    // stored shapes (rows, cols, leading dimension) of A, B and D, column-major
    if (key.transA) {
        cublasCheck(cublasLtMatrixLayoutCreate(&p->layout_a, CUBLAS_FLOATX, key.k, key.m, key.k));
    } else {
        cublasCheck(cublasLtMatrixLayoutCreate(&p->layout_a, CUBLAS_FLOATX, key.m, key.k, key.m));
    }
    if (key.transB) {
        cublasCheck(cublasLtMatrixLayoutCreate(&p->layout_b, CUBLAS_FLOATX, key.n, key.k, key.n));
    } else {
        cublasCheck(cublasLtMatrixLayoutCreate(&p->layout_b, CUBLAS_FLOATX, key.k, key.n, key.k));
    }
    cublasCheck(cublasLtMatrixLayoutCreate(&p->layout_d, CUBLAS_FLOATX, key.m, key.n, key.m));

    int returned = 0;
    cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(ctx->handle, p->desc, p->layout_a, p->layout_b, p->layout_d,
                                       p->layout_d, ctx->preference, 1, &p->heuristic, &returned);
    if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
        returned = 0;
    } else {
        cublasCheck(status);
    }
    p->has_algo = returned > 0;
    return p;
}

// D (m,n) = alpha op(A) op(B) [+ D if accumulate], with the epilogue. Returns false (and does nothing) when
// cuBLASLt has no algorithm for this combination.
inline bool matmul_cublaslt(MatmulContext* ctx, floatX* d, const floatX* a, const floatX* b,
                            const floatX* bias, const floatX* aux, int m, int n, int k, bool transA,
                            bool transB, bool accumulate, cublasLtEpilogue_t epilogue, cudaStream_t stream,
                            float alpha = 1.0f) {
    matmul_check_aligned(d, "output");
    matmul_check_aligned(a, "A");
    matmul_check_aligned(b, "B");
    matmul_check_aligned(bias, "bias");
    matmul_check_aligned(aux, "GELU aux");
    int pointer_alignment = 256;
    if (bias != nullptr) pointer_alignment = matmul_pointer_alignment(bias);
    if (aux != nullptr) pointer_alignment = std::min(pointer_alignment, matmul_pointer_alignment(aux));
    MatmulKey key{transA, transB, m, n, k, epilogue, bias != nullptr, accumulate, pointer_alignment};
    MatmulPlan* p = matmul_get_plan(ctx, key, bias, aux);
    if (!p->has_algo) return false;
    matmul_set_pointers(p->desc, bias, aux);
    const float beta = accumulate ? 1.0f : 0.0f;
    cublasCheck(cublasLtMatmul(ctx->handle, p->desc, &alpha, a, p->layout_a, b, p->layout_b, &beta, d,
                               p->layout_d, d, p->layout_d, &p->heuristic.algo, ctx->workspace,
                               ctx->workspace_bytes, stream));
    return true;
}

inline void matmul_check_shapes(int C, int OC, const char* who) {
    if (C % 8 != 0 || OC % 8 != 0) fail("%s: C = %d and OC = %d must be multiples of 8", who, C, OC);
}

// ----------------------------------------------------------------------------------------------------
// forward

// out (BT, OC) = inp (BT, C) weight^T (OC, C) + bias (OC, or none). The trainer runs GELU as its own kernel
// after the fc matmul (see train_gpt2.cu): cuBLASLt's GELU_AUX epilogue need not round like gelu_forward,
// and recompute needs the same bits. The fused forward lives on as an experiment in
// dev/cuda/matmul_gelu_forward.cuh.
inline void matmul_forward(MatmulContext* ctx, floatX* out, const floatX* inp, const floatX* weight,
                           const floatX* bias, int BT, int C, int OC, cudaStream_t stream) {
    matmul_check_shapes(C, OC, "matmul_forward");
    const cublasLtEpilogue_t plain = bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (!matmul_cublaslt(ctx, out, weight, inp, bias, nullptr, OC, BT, C, true, false, false, plain,
                         stream)) {
        fail("matmul_forward: cuBLASLt found no algorithm for BT=%d C=%d OC=%d", BT, C, OC);
    }
}

// ----------------------------------------------------------------------------------------------------
// backward: bias gradient, deterministic. Kernel 1: thread (column chunk of x128::size, slice of
// MATMUL_DBIAS_ROWS_PER_PARTIAL rows) sums its rows in order into scratch (num_partials, OC) fp32.
// Kernel 2: one thread per column adds the partials in slice order into dbias.

__global__ void matmul_dbias_partials_kernel(float* scratch, const floatX* dout, int BT, int OC) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (c >= OC) return;
    const int slice = blockIdx.y;
    const int row_end = min(BT, (slice + 1) * MATMUL_DBIAS_ROWS_PER_PARTIAL);
    float acc[x128::size] = {};
    for (int row = slice * MATMUL_DBIAS_ROWS_PER_PARTIAL; row < row_end; row++) {
        x128 d = load128(dout + (size_t)row * OC + c);
        for (int k = 0; k < x128::size; k++) acc[k] += (float)d[k];
    }
    for (int k = 0; k < x128::size; k++) scratch[(size_t)slice * OC + c + k] = acc[k];
}

__global__ void matmul_dbias_reduce_kernel(floatX* dbias, const float* scratch, int OC, int num_partials) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= OC) return;
    float sum = 0.0f;
    for (int p = 0; p < num_partials; p++) sum += scratch[(size_t)p * OC + c];
    dbias[c] = (floatX)((float)dbias[c] + sum);
}

inline int matmul_dbias_num_partials(int BT) {
    return (BT + MATMUL_DBIAS_ROWS_PER_PARTIAL - 1) / MATMUL_DBIAS_ROWS_PER_PARTIAL;
}

// fp32 scratch matmul_backward needs for the bias gradient of a (BT,OC) dout
inline size_t matmul_dbias_scratch_bytes(int BT, int OC) {
    return (size_t)matmul_dbias_num_partials(BT) * OC * sizeof(float);
}

inline void matmul_backward(MatmulContext* ctx, floatX* dinp, floatX* dweight, floatX* dbias,
                            const floatX* dout, const floatX* inp, const floatX* weight, int BT, int C,
                            int OC, const floatX* pre_gelu, float* dbias_scratch, cudaStream_t stream) {
    matmul_check_shapes(C, OC, "matmul_backward");
    // dinp (BT,C) = dout (BT,OC) W (OC,C)  [* gelu'(pre_gelu)]
    bool done = false;
    if (pre_gelu != nullptr && ctx->fuse_gelu) {
        done = matmul_cublaslt(ctx, dinp, weight, dout, nullptr, pre_gelu, C, BT, OC, false, false, false,
                               CUBLASLT_EPILOGUE_DGELU, stream);
    }
    if (!done) {
        if (!matmul_cublaslt(ctx, dinp, weight, dout, nullptr, nullptr, C, BT, OC, false, false, false,
                             CUBLASLT_EPILOGUE_DEFAULT, stream)) {
            fail("matmul_backward: cuBLASLt found no algorithm for dinp, BT=%d C=%d OC=%d", BT, C, OC);
        }
        if (pre_gelu != nullptr) gelu_backward_inplace(dinp, pre_gelu, (size_t)BT * C, stream);
    }
    // dweight (OC,C) += dout^T (OC,BT) inp (BT,C); none for a frozen weight (LoRA: dweight null)
    if (dweight != nullptr && !matmul_cublaslt(ctx, dweight, inp, dout, nullptr, nullptr, C, OC, BT, false,
                                               true, true, CUBLASLT_EPILOGUE_DEFAULT, stream)) {
        fail("matmul_backward: cuBLASLt found no algorithm for dweight, BT=%d C=%d OC=%d", BT, C, OC);
    }
    // dbias (OC) += sum over rows of dout
    if (dbias != nullptr) {
        if (dbias_scratch == nullptr) fail("matmul_backward: dbias needs dbias_scratch");
        const int num_partials = matmul_dbias_num_partials(BT);
        const int block_size = 128;
        const int chunks = OC / x128::size;
        dim3 grid((chunks + block_size - 1) / block_size, num_partials);
        CUDA_LAUNCH(matmul_dbias_partials_kernel, grid, block_size, 0, stream)(dbias_scratch, dout, BT, OC);
        cudaCheck(cudaGetLastError());
        CUDA_LAUNCH(matmul_dbias_reduce_kernel, (OC + 255) / 256, 256, 0, stream)
        (dbias, dbias_scratch, OC, num_partials);
        cudaCheck(cudaGetLastError());
    }
}
