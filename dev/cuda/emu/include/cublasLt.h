// cublasLt.h for the CPU emulator (dev/cuda/emu): the part of cuBLASLt the project uses, computed on the
// host at call time (streams are ignored, "device" pointers are host memory from the emulated cudaMalloc).
//
// What cublasLtMatmul computes (column-major, as cuBLASLt; m, n from D's layout, k from op(A)):
//     x = alpha op(A)(m,k) op(B)(k,n) + beta C(m,n) [+ bias(m), one value per row of D]
//     DEFAULT, BIAS:            D = x
//     GELU, GELU_BIAS:          D = gelu(x)
//     GELU_AUX, GELU_AUX_BIAS:  aux = x, D = gelu(x)      (aux: D's shape and type, ld EPILOGUE_AUX_LD)
//     DGELU:                    D = x * gelu'(aux)        (aux is an input here)
// Each output element is a fp32 sum over p = 0..k-1 in that order, of fp32 copies of the bf16/fp32
// inputs, then the epilogue in fp32 and one rounding to D's type on store; so the result does not depend
// on the thread count (OpenMP splits the output into tiles, never a sum). beta == 0 reads no C (cuBLAS does
// not read C then, so C may hold NaN). CUBLAS_COMPUTE_32F_FAST_TF32 first rounds the inputs to TF32 (10
// mantissa bits, nearest-even here; the docs do not say how the hardware rounds); exact for bf16 inputs.
//
// GELU is the tanh form, gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), and gelu' its exact
// derivative, both from llmc/kernel_math.h. NVIDIA's documentation of cublasLtEpilogue_t only says "apply
// GELU point-wise transform" and gives no formula. Evidence for tanh: PyTorch's addmm
// (aten/src/ATen/native/cuda/Blas.cpp) replaces the GELU epilogue, where it cannot use it, with
// at::gelu_(result, "tanh"); SYCLomatic's cuBLASLt test (matmul_2.cu) expects gelu(1) = 0.841194 from
// CUBLASLT_EPILOGUE_GELU, the tanh value (the erf form gives 0.841345).
//
// Refusals emulated, from CUDA's cublasLt.h comments and what the real library returns:
//   cublasLtMatmulAlgoGetHeuristic and cublasLtMatmul:
//     INVALID_VALUE  null descriptor; A, B or C's (rows, cols) disagree with op/m/n/k; ld < rows; aux ld < m
//     NOT_SUPPORTED  A, B, C, D not all CUDA_R_32F or all CUDA_R_16BF; compute type not 32F or 32F_FAST_TF32;
//                    scale type not CUDA_R_32F; op not N/T; an epilogue not listed above; a bias type other
//                    than D's ("bias vector elements are the same type as the elements of output matrix");
//                    aux ld not a multiple of 8 ("must be divisible by 8"); aux pointer not 16-byte
//                    aligned (an emulator rule; the docs give no minimum)
//   cublasLtMatmulAlgoGetHeuristic: INVALID_VALUE for requestedAlgoCount < 1. Else one result, state SUCCESS.
//   cublasLtMatmul:
//     INVALID_VALUE  null alpha/beta; no bias/aux pointer when the epilogue needs one; C == D, other ld;
//                    a pointer less aligned than the algorithm was chosen for: A, B, C, D than the
//                    preference's MIN_ALIGNMENT_*_BYTES (default 256), bias and aux than their pointers were
//                    (up to 256) at heuristic time. cublasLt.h: the heuristic "depend[s] on its value to
//                    determine expected pointer alignment", and an algo "will fail if e.g. buffers are not
//                    correctly aligned" (cublasLtMatmulAlgoCheck). The real library may fault instead; we
//                    always refuse. algo NULL stands for the default preference (256 bytes for A..D).
//     emu::fatal     A, B, C (if read), D, bias, aux or the workspace not inside one cudaMalloc allocation.
// Any workspace size is accepted (none is needed). Attributes not listed below stop with emu::fatal.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <library_types.h>
#include <cublas_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "llmc/kernel_math.h"

// ----------------------------------------------------------------------------------------------------
// enums (numeric values of CUDA's cublasLt.h)

typedef enum {
    CUBLASLT_EPILOGUE_DEFAULT = 1,
    CUBLASLT_EPILOGUE_RELU = 2,
    CUBLASLT_EPILOGUE_BIAS = 4,
    CUBLASLT_EPILOGUE_GELU = 32,
    CUBLASLT_EPILOGUE_GELU_BIAS = 36,
    CUBLASLT_EPILOGUE_GELU_AUX = 160,
    CUBLASLT_EPILOGUE_GELU_AUX_BIAS = 164,
    CUBLASLT_EPILOGUE_DGELU = 192,
    CUBLASLT_EPILOGUE_DGELU_BGRAD = 208,
    CUBLASLT_EPILOGUE_BGRADA = 256,
    CUBLASLT_EPILOGUE_BGRADB = 512,
} cublasLtEpilogue_t;

typedef enum {
    CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0,          // int32_t
    CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,            // int32_t
    CUBLASLT_MATMUL_DESC_TRANSA = 3,                // int32_t (cublasOperation_t)
    CUBLASLT_MATMUL_DESC_TRANSB = 4,                // int32_t (cublasOperation_t)
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,              // uint32_t (cublasLtEpilogue_t)
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,          // const void*
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER = 11, // void*
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD = 12,      // int64_t
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26,       // int32_t (cudaDataType_t), -1: D's type
} cublasLtMatmulDescAttributes_t;

typedef enum {
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,   // uint64_t
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5, // uint32_t, default 256
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
} cublasLtMatmulPreferenceAttributes_t;

// ----------------------------------------------------------------------------------------------------
// handle, descriptors (heap structs made by the Create calls), algorithm and heuristic result

struct cublasLtContext {};
typedef cublasLtContext* cublasLtHandle_t;

struct cublasLtMatrixLayoutOpaque_t {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld; // column-major: element (r, c) is at c * ld + r
};
typedef cublasLtMatrixLayoutOpaque_t* cublasLtMatrixLayout_t;

struct cublasLtMatmulDescOpaque_t {
    int32_t compute_type, scale_type;
    int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void* bias = nullptr;
    int32_t bias_type = -1;
    void* aux = nullptr;
    int64_t aux_ld = 0;
};
typedef cublasLtMatmulDescOpaque_t* cublasLtMatmulDesc_t;

struct cublasLtMatmulPreferenceOpaque_t {
    uint64_t max_workspace = 0;
    uint32_t align_a = 256, align_b = 256, align_c = 256, align_d = 256;
};
typedef cublasLtMatmulPreferenceOpaque_t* cublasLtMatmulPreference_t;

// what an algorithm assumes about the pointers it will be given (byte alignments)
struct cublasLtMatmulAlgo_t {
    uint32_t align_a, align_b, align_c, align_d, align_bias, align_aux;
};

typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;

inline const char* cublasLtGetStatusString(cublasStatus_t status) {
    if (status == CUBLAS_STATUS_SUCCESS) return "CUBLAS_STATUS_SUCCESS";
    if (status == CUBLAS_STATUS_NOT_INITIALIZED) return "CUBLAS_STATUS_NOT_INITIALIZED (no handle)";
    if (status == CUBLAS_STATUS_INVALID_VALUE) return "CUBLAS_STATUS_INVALID_VALUE (parameters in conflict)";
    if (status == CUBLAS_STATUS_NOT_SUPPORTED) return "CUBLAS_STATUS_NOT_SUPPORTED (not supported)";
    return "CUBLAS_STATUS (another error)";
}

inline cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
    *handle = new cublasLtContext();
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type,
                                                 uint64_t rows, uint64_t cols, int64_t ld) {
    *layout = new cublasLtMatrixLayoutOpaque_t{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute_type,
                                               cudaDataType_t scale_type) {
    *desc = new cublasLtMatmulDescOpaque_t();
    (*desc)->compute_type = compute_type;
    (*desc)->scale_type = scale_type;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}

// Set*Attribute: copy sizeInBytes bytes into the field, which must be exactly that size
inline cublasStatus_t emu_lt_set(void* field, size_t field_size, const void* buf, size_t size) {
    if (buf == nullptr || size != field_size) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(field, buf, size);
    return CUBLAS_STATUS_SUCCESS;
}
#define EMU_LT_FIELD(attr, field)                                                                            \
    case attr:                                                                                               \
        return emu_lt_set(&(field), sizeof(field), buf, size)

inline cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                                     cublasLtMatmulDescAttributes_t attr, const void* buf,
                                                     size_t size) {
    if (d == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, d->compute_type);
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_SCALE_TYPE, d->scale_type);
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_TRANSA, d->transa);
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_TRANSB, d->transb);
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_EPILOGUE, d->epilogue);
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_BIAS_POINTER, d->bias);
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, d->bias_type);
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, d->aux);
        EMU_LT_FIELD(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, d->aux_ld);
    }
    emu::fatal("cublasLtMatmulDescSetAttribute: attribute %d is not emulated", (int)attr);
}

inline cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
    *pref = new cublasLtMatmulPreferenceOpaque_t();
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                           cublasLtMatmulPreferenceAttributes_t attr,
                                                           const void* buf, size_t size) {
    if (p == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
        EMU_LT_FIELD(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, p->max_workspace);
        EMU_LT_FIELD(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, p->align_a);
        EMU_LT_FIELD(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, p->align_b);
        EMU_LT_FIELD(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, p->align_c);
        EMU_LT_FIELD(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, p->align_d);
    }
    emu::fatal("cublasLtMatmulPreferenceSetAttribute: attribute %d is not emulated", (int)attr);
}
#undef EMU_LT_FIELD

// ----------------------------------------------------------------------------------------------------
// checks shared by the heuristic and the matmul

inline bool emu_lt_has_bias(uint32_t e) {
    return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS ||
           e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
inline bool emu_lt_has_aux(uint32_t e) {
    return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
           e == CUBLASLT_EPILOGUE_DGELU;
}
inline bool emu_lt_has_gelu(uint32_t e) {
    return e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_BIAS ||
           e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}

// largest power of two, up to 256, that divides the address (a null pointer counts as 256)
inline uint32_t emu_lt_alignment(const void* p) {
    uint32_t a = 1;
    while (a < 256 && (uintptr_t)p % (2 * a) == 0) a *= 2;
    return a;
}

// bytes spanned by a column-major (rows, cols) matrix with leading dimension ld
inline size_t emu_lt_extent(uint64_t rows, uint64_t cols, int64_t ld, size_t elem) {
    return rows == 0 || cols == 0 ? 0 : ((cols - 1) * (uint64_t)ld + rows) * elem;
}

inline cublasStatus_t emu_lt_check(const cublasLtMatmulDescOpaque_t* d, const cublasLtMatrixLayoutOpaque_t* a,
                                   const cublasLtMatrixLayoutOpaque_t* b,
                                   const cublasLtMatrixLayoutOpaque_t* c,
                                   const cublasLtMatrixLayoutOpaque_t* dd) {
    if (d == nullptr || a == nullptr || b == nullptr || c == nullptr || dd == nullptr) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const cudaDataType_t t = dd->type;
    if ((t != CUDA_R_32F && t != CUDA_R_16BF) || a->type != t || b->type != t || c->type != t) {
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (d->compute_type != CUBLAS_COMPUTE_32F && d->compute_type != CUBLAS_COMPUTE_32F_FAST_TF32) {
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (d->scale_type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if ((d->transa != CUBLAS_OP_N && d->transa != CUBLAS_OP_T) ||
        (d->transb != CUBLAS_OP_N && d->transb != CUBLAS_OP_T)) {
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    const uint32_t e = d->epilogue;
    if (e != CUBLASLT_EPILOGUE_DEFAULT && !emu_lt_has_bias(e) && !emu_lt_has_aux(e) && !emu_lt_has_gelu(e)) {
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    // m, n from D; op(A) is (m, k), op(B) is (k, n), C is (m, n)
    const bool ta = d->transa == CUBLAS_OP_T, tb = d->transb == CUBLAS_OP_T;
    const uint64_t m = dd->rows, n = dd->cols, k = ta ? a->rows : a->cols;
    if ((ta ? a->cols : a->rows) != m || (tb ? b->cols : b->rows) != k || (tb ? b->rows : b->cols) != n ||
        c->rows != m || c->cols != n) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    for (const cublasLtMatrixLayoutOpaque_t* l : {a, b, c, dd}) {
        if (l->ld < (int64_t)std::max<uint64_t>(l->rows, 1)) return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (std::max({m, n, k}) > INT32_MAX) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (emu_lt_has_bias(e) && d->bias_type != -1 && d->bias_type != t) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (emu_lt_has_aux(e)) {
        if (d->aux_ld < (int64_t)std::max<uint64_t>(m, 1)) return CUBLAS_STATUS_INVALID_VALUE;
        if (d->aux_ld % 8 != 0 || (uintptr_t)d->aux % 16 != 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                                     cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                     cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                     cublasLtMatmulPreference_t pref, int requested,
                                                     cublasLtMatmulHeuristicResult_t results[],
                                                     int* returned) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (requested < 1 || pref == nullptr || results == nullptr || returned == nullptr) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    *returned = 0;
    cublasStatus_t status = emu_lt_check(desc, a, b, c, d);
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    cublasLtMatmulHeuristicResult_t r = {};
    r.algo = {pref->align_a,
              pref->align_b,
              pref->align_c,
              pref->align_d,
              emu_lt_alignment(desc->bias),
              emu_lt_alignment(desc->aux)};
    r.state = CUBLAS_STATUS_SUCCESS;
    r.wavesCount = 1.0f;
    results[0] = r;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

// ----------------------------------------------------------------------------------------------------
// the GEMM. D is cut into tiles of EMU_LT_MC rows by EMU_LT_NC columns, one OpenMP task each. A task
// converts op(A)'s rows of its tile into an fp32 panel [p][row] (zero past m) and, when its column tile
// changed, op(B)'s columns into fp32 panels [p][col] of EMU_LT_NR columns each (zero past n; k x NR fits in
// L1). The micro-kernel keeps an MR x NR block of fp32 sums in registers, adds p = 0..k-1 in order, and
// vectorises over the NR columns. MR x NR = 6 x 8 is a shape clang -O2 (SSE2) keeps in registers, about
// 20 GFLOP/s a core; 8 x 4 and 4 x 8 spilled and ran 4-5x slower.

constexpr int EMU_LT_MR = 6, EMU_LT_NR = 8, EMU_LT_MC = 96, EMU_LT_NC = 256;

struct EmuLtGemm {
    int m, n, k;
    bool ta, tb, tf32;
    const void *a, *b, *c;
    void* d;
    int64_t lda, ldb, ldc, ldd;
    float alpha, beta;
    uint32_t epilogue;
    const void* bias;
    void* aux;
    int64_t aux_ld;
};

// fp32 -> TF32 (sign, 8 exponent, 10 mantissa bits), round to nearest even; inf and NaN unchanged
inline float emu_lt_tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    memcpy(&x, &u, sizeof(x));
    return x;
}

// panel[p][w] = X[(w0 + w) * stride_w + p * stride_p] as fp32 for w < count, 0 up to width. For op(A)'s
// rows (stride_w, stride_p) = ta ? (lda, 1) : (1, lda); for op(B)'s columns, tb ? (1, ldb) : (ldb, 1).
template <class T>
inline void emu_lt_pack(float* panel, int width, const T* X, int64_t stride_w, int64_t stride_p, int w0,
                        int count, int k, bool tf32) {
    for (int p = 0; p < k; p++) {
        const T* x = X + (size_t)w0 * stride_w + (size_t)p * stride_p;
        float* row = panel + (size_t)p * width;
        for (int w = 0; w < count; w++) row[w] = (float)x[(size_t)w * stride_w];
        for (int w = count; w < width; w++) row[w] = 0.0f;
        if (tf32) {
            for (int w = 0; w < count; w++) row[w] = emu_lt_tf32(row[w]);
        }
    }
}

// D(i, j) from its sum over p, in fp32, rounded once per stored value
template <class T> inline void emu_lt_epilogue(const EmuLtGemm& g, int i, int j, float sum) {
    float x = g.alpha * sum;
    if (g.beta != 0.0f) x += g.beta * (float)((const T*)g.c)[(size_t)j * g.ldc + i];
    if (emu_lt_has_bias(g.epilogue)) x += (float)((const T*)g.bias)[i];
    T* aux = emu_lt_has_aux(g.epilogue) ? (T*)g.aux + (size_t)j * g.aux_ld + i : nullptr;
    if (g.epilogue == CUBLASLT_EPILOGUE_DGELU) {
        x *= gelu_backward_math((float)*aux);
    } else if (emu_lt_has_gelu(g.epilogue)) {
        if (aux != nullptr) *aux = T(x);
        x = gelu_forward_math(x);
    }
    ((T*)g.d)[(size_t)j * g.ldd + i] = T(x);
}

template <class T> inline void emu_lt_gemm(const EmuLtGemm& g) {
    constexpr int MR = EMU_LT_MR, NR = EMU_LT_NR, MC = EMU_LT_MC, NC = EMU_LT_NC;
    const int m = g.m, n = g.n, k = g.k;
    const int mtiles = (m + MC - 1) / MC, ntiles = (n + NC - 1) / NC;
#pragma omp parallel
    {
        // apanel[p][ii]: op(A) rows i0.. of the tile; bpanel[group][p][jj]: op(B) columns j0.., NR a group
        std::vector<float> apanel((size_t)k * MC), bpanel((size_t)k * NC);
        int packed_jt = -1;
        // tiles in column-tile order, static contiguous chunks: a thread repacks op(B) only on a new column
        // tile
#pragma omp for schedule(static)
        for (int tile = 0; tile < mtiles * ntiles; tile++) {
            const int jt = tile / mtiles, i0 = tile % mtiles * MC, j0 = jt * NC;
            const int mc = std::min(MC, m - i0), nc = std::min(NC, n - j0);
            emu_lt_pack(apanel.data(), MC, (const T*)g.a, g.ta ? g.lda : 1, g.ta ? 1 : g.lda, i0, mc, k,
                        g.tf32);
            if (jt != packed_jt) {
                for (int jg = 0; jg < nc; jg += NR) {
                    emu_lt_pack(&bpanel[(size_t)jg * k], NR, (const T*)g.b, g.tb ? 1 : g.ldb,
                                g.tb ? g.ldb : 1, j0 + jg, std::min(NR, nc - jg), k, g.tf32);
                }
                packed_jt = jt;
            }
            for (int jg = 0; jg < nc; jg += NR) {
                const float* bgroup = &bpanel[(size_t)jg * k];
                for (int ii = 0; ii < mc; ii += MR) {
                    float acc[MR][NR] = {};
                    for (int p = 0; p < k; p++) {
                        const float* ap = &apanel[(size_t)p * MC + ii];
                        const float* bp = &bgroup[(size_t)p * NR];
                        for (int r = 0; r < MR; r++) {
                            for (int jj = 0; jj < NR; jj++) acc[r][jj] += ap[r] * bp[jj];
                        }
                    }
                    for (int jj = 0; jj < NR && jg + jj < nc; jj++) {
                        for (int r = 0; r < MR && ii + r < mc; r++) {
                            emu_lt_epilogue<T>(g, i0 + ii + r, j0 + jg + jj, acc[r][jj]);
                        }
                    }
                }
            }
        }
    }
}

inline void emu_lt_check_range(const void* p, size_t bytes, const char* what) {
    if (bytes > 0 && !emu::is_device_range(p, bytes)) {
        emu::fatal("cublasLtMatmul: %s at %p (%zu bytes) is not inside one cudaMalloc allocation", what, p,
                   bytes);
    }
}

inline cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                                     const void* A, cublasLtMatrixLayout_t adesc, const void* B,
                                     cublasLtMatrixLayout_t bdesc, const void* beta, const void* C,
                                     cublasLtMatrixLayout_t cdesc, void* D, cublasLtMatrixLayout_t ddesc,
                                     const cublasLtMatmulAlgo_t* algo, void* workspace,
                                     size_t workspace_bytes, cudaStream_t stream) {
    (void)stream; // synchronous
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasStatus_t status = emu_lt_check(desc, adesc, bdesc, cdesc, ddesc);
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    const uint32_t e = desc->epilogue;
    if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if ((emu_lt_has_bias(e) && desc->bias == nullptr) || (emu_lt_has_aux(e) && desc->aux == nullptr)) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (C == D && cdesc->ld != ddesc->ld) return CUBLAS_STATUS_INVALID_VALUE;
    // algo NULL: an implicit heuristic with the default preference, which sees bias and aux as they are now
    cublasLtMatmulAlgo_t al = {256, 256, 256, 256, emu_lt_alignment(desc->bias), emu_lt_alignment(desc->aux)};
    if (algo != nullptr) al = *algo;
    EmuLtGemm g;
    g.ta = desc->transa == CUBLAS_OP_T;
    g.tb = desc->transb == CUBLAS_OP_T;
    g.tf32 = desc->compute_type == CUBLAS_COMPUTE_32F_FAST_TF32;
    g.m = (int)ddesc->rows;
    g.n = (int)ddesc->cols;
    g.k = (int)(g.ta ? adesc->rows : adesc->cols);
    g.a = A, g.b = B, g.c = C, g.d = D;
    g.lda = adesc->ld, g.ldb = bdesc->ld, g.ldc = cdesc->ld, g.ldd = ddesc->ld;
    g.alpha = *(const float*)alpha;
    g.beta = *(const float*)beta;
    g.epilogue = e;
    g.bias = desc->bias;
    g.aux = desc->aux;
    g.aux_ld = desc->aux_ld;

    const size_t es = ddesc->type == CUDA_R_32F ? sizeof(float) : sizeof(__nv_bfloat16);
    emu_lt_check_range(A, emu_lt_extent(adesc->rows, adesc->cols, adesc->ld, es), "matrix A");
    emu_lt_check_range(B, emu_lt_extent(bdesc->rows, bdesc->cols, bdesc->ld, es), "matrix B");
    if (g.beta != 0.0f) emu_lt_check_range(C, emu_lt_extent(g.m, g.n, g.ldc, es), "matrix C");
    emu_lt_check_range(D, emu_lt_extent(g.m, g.n, g.ldd, es), "matrix D");
    if (emu_lt_has_bias(e)) emu_lt_check_range(g.bias, (size_t)g.m * es, "bias vector");
    if (emu_lt_has_aux(e)) {
        emu_lt_check_range(g.aux, emu_lt_extent(g.m, g.n, g.aux_ld, es), "epilogue aux matrix");
    }
    // (a pointer outside device memory stops the program above, whatever its alignment)
    if (emu_lt_alignment(A) < al.align_a || emu_lt_alignment(B) < al.align_b ||
        emu_lt_alignment(C) < al.align_c || emu_lt_alignment(D) < al.align_d ||
        (emu_lt_has_bias(e) && emu_lt_alignment(desc->bias) < al.align_bias) ||
        (emu_lt_has_aux(e) && emu_lt_alignment(desc->aux) < al.align_aux)) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    emu_lt_check_range(workspace, workspace_bytes, "workspace");

    if (ddesc->type == CUDA_R_32F) {
        emu_lt_gemm<float>(g);
    } else {
        emu_lt_gemm<__nv_bfloat16>(g);
    }
    return CUBLAS_STATUS_SUCCESS;
}
