// lora.cuh: the GPU side of LoRA and QLoRA (llmc/lora.h has the math, the layout and the host parts both
// trainers share; train_gpt2.cpp's lora_forward / lora_backward are the CPU reference).
//
// An adapted matmul with input x (BT, IN), output (BT, OC), A (r, IN), B (OC, r), s = alpha / r:
//   forward:   u = x.A^T (BT, r), kept for the backward;   out += s.u.B^T
//   backward:  du = s.d.B (BT, r);  dB += s.d^T.u;  dA += du^T.x;  dinp += du.A   (d = dout)
// Five thin cuBLASLt matmuls through the rank-r bottleneck (llmc/matmul.cuh's matmul_cublaslt, whose alpha
// carries s and whose accumulate flag the += ), so r must be a multiple of 8 like every matmul dimension.
// The frozen base's matmuls are llmc/matmul.cuh's, with no weight gradient.
//
// QLoRA: a layer's NF4 block matrix is dequantized into a floatX scratch matrix just before each matmul
// that reads it (nf4_dequantize_floatX): per value, its block's absmax a' = fma(q/127, c, mean) (the double
// quantization, llmc/quantize.h's dq_dequantize_value) and NF4 level[code] * a', the same fp32 operations
// as the CPU's nf4_dequantize_matrix, then rounded to floatX (bf16: what cuBLASLt reads).
#pragma once

#include "llmc/cuda_common.h"
#include "llmc/lora.h"
#include "llmc/matmul.cuh"
#include "llmc/quantize.h"

inline size_t lora_align256(size_t bytes) {
    return (bytes + 255) / 256 * 256;
}

// One NF4 matrix in device memory (llmc/lora.h's Nf4Matrix): n values (n/2 code bytes), n/64 absmax codes,
// one fp32 scale per 256 of those, one mean.
struct Nf4MatrixDevice {
    size_t n = 0;
    const uint8_t* codes = nullptr;
    const int8_t* absmax_codes = nullptr;
    const float* group_absmax = nullptr;
    float absmax_mean = 0.0f;
};

struct Nf4Levels {
    float v[16];
};

__global__ void nf4_dequantize_floatX_kernel(floatX* out, const uint8_t* codes, const int8_t* absmax_codes,
                                             const float* group_absmax, float mean, size_t n,
                                             const __grid_constant__ Nf4Levels levels) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t b = i / NF4_BLOCK;
        const float a = dq_dequantize_value(absmax_codes[b], group_absmax[b / DQ_BLOCK], mean);
        const int code = (i % 2 == 0) ? (codes[i / 2] & 15) : (codes[i / 2] >> 4);
        out[i] = (floatX)codebook_dequantize_value(levels.v, code, a);
    }
}

// out (m.n values, floatX) <- the dequantized matrix
inline void nf4_dequantize_floatX(floatX* out, const Nf4MatrixDevice& m, cudaStream_t stream) {
    Nf4Levels levels;
    for (int i = 0; i < 16; i++) levels.v[i] = nf4_map().levels[i];
    const int block_size = 256;
    const size_t grid = std::min<size_t>((m.n + block_size - 1) / block_size, 65536);
    CUDA_LAUNCH(nf4_dequantize_floatX_kernel, (int)grid, block_size, 0, stream)
    (out, m.codes, m.absmax_codes, m.group_absmax, m.absmax_mean, m.n, levels);
    cudaCheck(cudaGetLastError());
}

// Device bytes of an NF4 matrix of n values, as nf4_matrix_upload allocates them: the codes and the absmax
// codes each rounded up to 256 bytes, then the group scales (the mean is a kernel argument).
inline size_t nf4_matrix_device_bytes(size_t n) {
    const size_t blocks = quant_num_blocks(n, NF4_BLOCK);
    return lora_align256(ceil_div(n, (size_t)2)) + lora_align256(blocks) +
           dq_num_groups(blocks) * sizeof(float);
}

// Uploads a host NF4 matrix into one device allocation (freed with cudaFree(codes)).
inline Nf4MatrixDevice nf4_matrix_upload(const Nf4Matrix& h) {
    const size_t c = lora_align256(h.codes.size()), q = lora_align256(h.absmax_codes.size());
    char* mem;
    cudaCheck(cudaMalloc(&mem, nf4_matrix_device_bytes(h.n)));
    cudaCheck(cudaMemcpy(mem, h.codes.data(), h.codes.size(), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(mem + c, h.absmax_codes.data(), h.absmax_codes.size(), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(mem + c + q, h.group_absmax.data(), h.group_absmax.size() * sizeof(float),
                         cudaMemcpyHostToDevice));
    Nf4MatrixDevice d;
    d.n = h.n;
    d.codes = (const uint8_t*)mem;
    d.absmax_codes = (const int8_t*)(mem + c);
    d.group_absmax = (const float*)(mem + c + q);
    d.absmax_mean = h.absmax_mean;
    return d;
}

inline void lora_check_rank(int r) {
    if (r % 8 != 0) fail("flag -lo: the GPU trainer needs the LoRA rank to be a multiple of 8, got %d", r);
}

// out (BT, OC) += s.(inp.A^T).B^T; u (BT, r) = inp.A^T is written (kept for the backward).
inline void lora_forward(MatmulContext* ctx, floatX* out, floatX* u, const floatX* inp, const floatX* A,
                         const floatX* B, float s, int BT, int IN, int OC, int r, cudaStream_t stream) {
    matmul_forward(ctx, u, inp, A, nullptr, BT, IN, r, stream);
    // out^T (OC, BT) += s B (OC, r) u^T (r, BT): B as col-major (r, OC) transposed, u^T (r, BT) ld r
    if (!matmul_cublaslt(ctx, out, B, u, nullptr, nullptr, OC, BT, r, true, false, true,
                         CUBLASLT_EPILOGUE_DEFAULT, stream, s)) {
        fail("lora_forward: cuBLASLt found no algorithm for BT=%d r=%d OC=%d", BT, r, OC);
    }
}

// dinp (BT, IN) += du.A, dA (r, IN) += du^T.inp, dB (OC, r) += s.dout^T.u, with du = s.dout.B (BT, r) written
// into du.
inline void lora_backward(MatmulContext* ctx, floatX* dinp, floatX* dA, floatX* dB, floatX* du,
                          const floatX* dout, const floatX* inp, const floatX* u, const floatX* A,
                          const floatX* B, float s, int BT, int IN, int OC, int r, cudaStream_t stream) {
    bool ok = true;
    // du^T (r, BT) = s B^T (r, OC) dout^T (OC, BT): B as col-major (r, OC), not transposed
    ok = ok && matmul_cublaslt(ctx, du, B, dout, nullptr, nullptr, r, BT, OC, false, false, false,
                               CUBLASLT_EPILOGUE_DEFAULT, stream, s);
    // dB^T (r, OC) += s u^T (r, BT) dout (BT, OC)
    ok = ok && matmul_cublaslt(ctx, dB, u, dout, nullptr, nullptr, r, OC, BT, false, true, true,
                               CUBLASLT_EPILOGUE_DEFAULT, stream, s);
    // dA^T (IN, r) += inp^T (IN, BT) du (BT, r)
    ok = ok && matmul_cublaslt(ctx, dA, inp, du, nullptr, nullptr, IN, r, BT, false, true, true,
                               CUBLASLT_EPILOGUE_DEFAULT, stream);
    // dinp^T (IN, BT) += A^T (IN, r) du^T (r, BT): A as col-major (IN, r), not transposed
    ok = ok && matmul_cublaslt(ctx, dinp, A, du, nullptr, nullptr, IN, BT, r, false, false, true,
                               CUBLASLT_EPILOGUE_DEFAULT, stream);
    if (!ok) fail("lora_backward: cuBLASLt found no algorithm for BT=%d IN=%d OC=%d r=%d", BT, IN, OC, r);
}
