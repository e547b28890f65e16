// attention.cuh: causal multi-head self-attention on the GPU, forward and backward, written as
// FlashAttention-2 style tiled kernels that never hold the (T, T) score matrix anywhere.
//
// Shapes. qkv (B, T, 3C) holds, per token, [q (NH, HS) | k (NH, HS) | v (NH, HS)] exactly as the qkv
// matmul writes it; out (B, T, C) has the heads concatenated per token; lse (B, NH, T) is the fp32
// log-sum-exp of each query row's scaled scores, written by the forward and read by the backward.
// C = NH * HS, HS is 64 or 128, T is anything >= 1 (the last tile is masked).
//
// ---- forward math, for one (b, h); i indexes queries, j keys, scale = 1/sqrt(HS) ----
//   S_ij = scale * q_i . k_j            (S_ij = -inf for j > i: causal)
//   P_ij = exp(S_ij - lse_i),  lse_i = log sum_j exp(S_ij)
//   o_i  = sum_j P_ij v_j
// Online softmax: the keys are visited one tile at a time (j = 0, 1, ... up to the diagonal) and each
// query row keeps a running max m, a running sum l and an unnormalised output o, all fp32:
//   m_new = max(m, max_j S_ij)            over the keys of this tile
//   alpha = exp(m - m_new)                rescales everything accumulated against the old max
//   p_ij  = exp(S_ij - m_new)
//   l     = alpha * l + sum_j p_ij
//   o     = alpha * o + sum_j p_ij v_j
// and after the last tile o /= l, lse = m + log(l). Exponentials are taken in base 2: the scores are
// multiplied by scale * log2(e) once, so exp(x) becomes exp2(x * log2 e), the GPU's native exponential;
// lse is converted back to the natural log when stored.
//
// ---- backward math, given dO = dL/dO ----
//   P_ij  = exp(S_ij - lse_i)             recomputed from q, k and the stored lse, tile by tile
//   dV    = P^T dO
//   dP    = dO V^T
//   dS    = P o (dP - D),  D_i = sum_j P_ij dP_ij = dO_i . o_i   (softmax backward; D from O, not P)
//   dQ    = scale * dS K
//   dK    = scale * dS^T Q
// Three passes, no atomics, so the result is bit-identical from run to run:
//   1. D_i = rowsum(dO_i * O_i) for every row, into the fp32 scratch buffer;
//   2. one block per KEY tile: loops over the query tiles at or below the diagonal in ascending order,
//      accumulating dK and dV for its keys in registers (each key row owned by one warp);
//   3. one block per QUERY tile: loops over the key tiles up to the diagonal in ascending order,
//      accumulating dQ for its queries.
// Pass 3 recomputes S and dP (7 tile matmuls per (query tile, key tile) pair instead of FA2's 5); that
// is the price of a deterministic dQ without atomics or a per-tile partial-dQ buffer.
//
// ---- tiles and why ----
// A block owns ATT_TILE query rows (forward, dQ pass) or ATT_TILE key rows (dK/dV pass) and visits the
// other side ATT_TILE rows at a time. Each warp owns 16 of the block's rows: 16 is the height of a
// WMMA m16n16k16 fragment, and rows owned by one warp need only __syncwarp, never __syncthreads, for
// their softmax and their accumulators. BF16: ATT_TILE = 64 (4 warps, 128 threads), the FA2 choice:
// each K/V tile loaded from global memory feeds 64 query rows, and at HS = 128 the tiles plus the fp32
// score and output buffers still leave room for 2 blocks per SM on an H100 (1 on an A100).
// FP32 build: ATT_TILE = 32 (2 warps): fp32 tiles take twice the bytes, and 64 would need 170 KB in
// the backward at HS = 128, above an A100's 163 KB per-block limit.
// Matmuls are bf16 tensor-core MMAs (nvcuda::wmma, m16n16k16, fp32 accumulation) in the BF16 build and
// plain fp32 FMAs, same tiles and loop order, in the FP32 build.
//
// ---- shared memory per block (BF16 build, ATT_TILE = 64; rows padded by 16 bytes against bank
// conflicts) ----
//   forward : Q, K, V tiles 3 x 64 x (HS+8) bf16, scores 64 x 68 fp32 (P overlays it as bf16),
//             output accumulator 64 x (HS+4) fp32      HS=64: 62,464 B   HS=128: 103,424 B
//   backward: K, V, Q, dO tiles 4 x 64 x (HS+8) bf16, S and dP 2 x 64 x 68 fp32 (P and dS overlay
//             them as bf16), lse and D 2 x 64 fp32      HS=64: 72,192 B   HS=128: 104,960 B
// (FP32 build, ATT_TILE = 32: forward 39,424 / 72,192 B, backward 44,288 / 77,056 B.)
// The dK/dV and dQ accumulators live in registers (they are never rescaled); the forward's output
// accumulator lives in shared memory because the online softmax rescales it row by row and a WMMA
// accumulator fragment does not expose which row an element belongs to.
//
// ---- how it is tested ----
// dev/cuda/attention_check.cu: these kernels against a naive double-precision reference, poisoned outputs,
// bit-identical reruns and timings; on a GPU, and in `make test` on the CPU emulator (dev/cuda/emu: the
// same code, one fiber per CUDA thread in shuffled orders, an emulated wmma, CUDA's rules checked).
#pragma once

#include <cmath>
#include <cstdint>
#include <mma.h>

#include "llmc/cuda_common.h"

#if defined(ENABLE_FP32)
constexpr int ATT_TILE = 32;
#else
constexpr int ATT_TILE = 64;
#endif
constexpr int ATT_WARPS = ATT_TILE / 16;
constexpr int ATT_THREADS = ATT_WARPS * WARP_SIZE;
constexpr int ATT_PAD = x128::size;   // floatX elements of padding per tile row: 16 bytes
constexpr int ATT_LDS = ATT_TILE + 4; // fp32 score row stride (16 bytes of padding)
// P and dS (floatX) are written over the fp32 score rows they come from: same row, same byte offset
constexpr int ATT_LDP = ATT_LDS * (int)(sizeof(float) / sizeof(floatX));
constexpr float ATT_LOG2E = 1.4426950408889634f;
constexpr float ATT_LN2 = 0.6931471805599453f;

// floatX tile row stride
__host__ __device__ constexpr int att_ldx(int HS) {
    return HS + ATT_PAD;
}
// fp32 accumulator / staging row stride
__host__ __device__ constexpr int att_ldo(int HS) {
    return HS + 4;
}

constexpr size_t att_forward_smem_bytes(int HS) {
    return 3 * ATT_TILE * att_ldx(HS) * sizeof(floatX) + ATT_TILE * ATT_LDS * sizeof(float) +
           ATT_TILE * att_ldo(HS) * sizeof(float);
}
constexpr size_t att_backward_smem_bytes(int HS) {
    return 4 * ATT_TILE * att_ldx(HS) * sizeof(floatX) + 2 * ATT_TILE * ATT_LDS * sizeof(float) +
           2 * ATT_TILE * sizeof(float);
}
// the backward stages its fp32 results in the space of the Q and dO tiles before writing them out
static_assert(ATT_TILE * att_ldo(64) * sizeof(float) <= 2 * ATT_TILE * att_ldx(64) * sizeof(floatX), "");
static_assert(ATT_TILE * att_ldo(128) * sizeof(float) <= 2 * ATT_TILE * att_ldx(128) * sizeof(floatX), "");

// ----------------------------------------------------------------------------------------------------
// warp-level tile matmuls: the only place the BF16 and FP32 builds differ

#if !defined(ENABLE_FP32)
namespace att_wmma = nvcuda::wmma;
typedef att_wmma::fragment<att_wmma::matrix_a, 16, 16, 16, __nv_bfloat16, att_wmma::row_major> AttFragA;
typedef att_wmma::fragment<att_wmma::matrix_b, 16, 16, 16, __nv_bfloat16, att_wmma::row_major> AttFragB;
// B = X^T read straight from the rows of X: column-major B is row-major X
typedef att_wmma::fragment<att_wmma::matrix_b, 16, 16, 16, __nv_bfloat16, att_wmma::col_major> AttFragBt;
typedef att_wmma::fragment<att_wmma::accumulator, 16, 16, 16, float> AttFragC;
#endif

// c (16, ATT_TILE) fp32, row stride ATT_LDS  =  a (16, KDIM) . b (ATT_TILE, KDIM)^T
// a and b are floatX rows in shared memory (strides lda, ldb); used for S = Q K^T and dP = dO V^T.
template <int KDIM>
__device__ void att_warp_abt(float* c, const floatX* a, int lda, const floatX* b, int ldb) {
#if !defined(ENABLE_FP32)
    AttFragA fa[KDIM / 16];
#pragma unroll
    for (int k = 0; k < KDIM / 16; k++) att_wmma::load_matrix_sync(fa[k], a + 16 * k, lda);
#pragma unroll
    for (int n = 0; n < ATT_TILE / 16; n++) {
        AttFragC acc;
        att_wmma::fill_fragment(acc, 0.f);
#pragma unroll
        for (int k = 0; k < KDIM / 16; k++) {
            AttFragBt fb;
            att_wmma::load_matrix_sync(fb, b + 16 * n * ldb + 16 * k, ldb);
            att_wmma::mma_sync(acc, fa[k], fb, acc);
        }
        att_wmma::store_matrix_sync(c + 16 * n, acc, ATT_LDS, att_wmma::mem_row_major);
    }
#else
    const int lane = threadIdx.x % WARP_SIZE;
    for (int col = lane; col < ATT_TILE; col += WARP_SIZE) {
        float acc[16] = {};
#pragma unroll 4
        for (int k = 0; k < KDIM; k++) {
            const float bk = b[col * ldb + k];
#pragma unroll
            for (int r = 0; r < 16; r++) acc[r] += a[r * lda + k] * bk;
        }
#pragma unroll
        for (int r = 0; r < 16; r++) c[r * ATT_LDS + col] = acc[r];
    }
#endif
}

// A warp's fp32 accumulator for a (16, N) output tile: acc += a (16, ATT_TILE) . b (ATT_TILE, N), with a
// and b floatX rows in shared memory. BF16: N/16 WMMA accumulator fragments (layout opaque; rows are
// reached by store() to shared memory). FP32: lane owns columns lane, lane + 32, ... of all 16 rows.
template <int N> struct AttWarpAcc {
#if !defined(ENABLE_FP32)
    AttFragC frag[N / 16];
#else
    float v[16][N / WARP_SIZE];
#endif

    __device__ void zero() {
#if !defined(ENABLE_FP32)
#pragma unroll
        for (int n = 0; n < N / 16; n++) att_wmma::fill_fragment(frag[n], 0.f);
#else
#pragma unroll
        for (int r = 0; r < 16; r++)
#pragma unroll
            for (int i = 0; i < N / WARP_SIZE; i++) v[r][i] = 0.f;
#endif
    }
    // from / to a (16, N) fp32 block of shared memory with row stride ld
    __device__ void load(const float* p, int ld) {
#if !defined(ENABLE_FP32)
#pragma unroll
        for (int n = 0; n < N / 16; n++)
            att_wmma::load_matrix_sync(frag[n], p + 16 * n, ld, att_wmma::mem_row_major);
#else
        const int lane = threadIdx.x % WARP_SIZE;
#pragma unroll
        for (int r = 0; r < 16; r++)
#pragma unroll
            for (int i = 0; i < N / WARP_SIZE; i++) v[r][i] = p[r * ld + lane + WARP_SIZE * i];
#endif
    }
    __device__ void store(float* p, int ld) const {
#if !defined(ENABLE_FP32)
#pragma unroll
        for (int n = 0; n < N / 16; n++)
            att_wmma::store_matrix_sync(p + 16 * n, frag[n], ld, att_wmma::mem_row_major);
#else
        const int lane = threadIdx.x % WARP_SIZE;
#pragma unroll
        for (int r = 0; r < 16; r++)
#pragma unroll
            for (int i = 0; i < N / WARP_SIZE; i++) p[r * ld + lane + WARP_SIZE * i] = v[r][i];
#endif
    }
    __device__ void mma(const floatX* a, int lda, const floatX* b, int ldb) {
#if !defined(ENABLE_FP32)
#pragma unroll
        for (int k = 0; k < ATT_TILE / 16; k++) {
            AttFragA fa;
            att_wmma::load_matrix_sync(fa, a + 16 * k, lda);
#pragma unroll
            for (int n = 0; n < N / 16; n++) {
                AttFragB fb;
                att_wmma::load_matrix_sync(fb, b + 16 * k * ldb + 16 * n, ldb);
                att_wmma::mma_sync(frag[n], fa, fb, frag[n]);
            }
        }
#else
        const int lane = threadIdx.x % WARP_SIZE;
#pragma unroll 2
        for (int k = 0; k < ATT_TILE; k++) {
            float bk[N / WARP_SIZE];
#pragma unroll
            for (int i = 0; i < N / WARP_SIZE; i++) bk[i] = b[k * ldb + lane + WARP_SIZE * i];
#pragma unroll
            for (int r = 0; r < 16; r++) {
                const float ar = a[r * lda + k];
#pragma unroll
                for (int i = 0; i < N / WARP_SIZE; i++) v[r][i] += ar * bk[i];
            }
        }
#endif
    }
};

// ----------------------------------------------------------------------------------------------------
// global <-> shared memory

// Rows [row0, row0 + ATT_TILE) of one head's (T, HS) slice into a shared tile (row stride att_ldx(HS)),
// 128-bit loads; row t of the slice starts at src + t * stride. Rows >= T are filled with zeros.
template <int HS>
__device__ void att_load_tile(floatX* dst, const floatX* src, size_t stride, int row0, int T) {
    constexpr int CHUNKS = HS / x128::size;
    for (int idx = threadIdx.x; idx < ATT_TILE * CHUNKS; idx += ATT_THREADS) {
        const int r = idx / CHUNKS, c = idx % CHUNKS;
        const x128 val =
            (row0 + r < T) ? load128(src + (size_t)(row0 + r) * stride + c * x128::size) : x128::zeros();
        store128(dst + r * att_ldx(HS) + c * x128::size, val);
    }
}

// One warp writes its 16 fp32 staging rows (row stride att_ldo(HS)) as floatX rows [row0, row0 + 16)
// of a (T, HS) slice with row stride `stride`, 128-bit stores; rows >= T are skipped.
template <int HS>
__device__ void att_store_rows(floatX* dst, size_t stride, const float* stage, int row0, int T, float mul) {
    constexpr int CHUNKS = HS / x128::size;
    const int lane = threadIdx.x % WARP_SIZE;
    for (int idx = lane; idx < 16 * CHUNKS; idx += WARP_SIZE) {
        const int r = idx / CHUNKS, c = idx % CHUNKS;
        if (row0 + r >= T) continue;
        x128 val;
#pragma unroll
        for (int e = 0; e < x128::size; e++)
            val[e] = (floatX)(stage[r * att_ldo(HS) + c * x128::size + e] * mul);
        store128(dst + (size_t)(row0 + r) * stride + c * x128::size, val);
    }
}

// ----------------------------------------------------------------------------------------------------
// forward: grid (T tiles, NH, B); block = ATT_TILE query rows of one (b, h)

template <int HS>
__global__ void __launch_bounds__(ATT_THREADS)
    attention_forward_kernel(floatX* out, float* lse, const floatX* qkv, int T, int NH) {
    constexpr int LDX = att_ldx(HS), LDO = att_ldo(HS);
    DYNAMIC_SHARED_MEMORY(att_smem);
    floatX* q_s = (floatX*)att_smem;
    floatX* k_s = q_s + ATT_TILE * LDX;
    floatX* v_s = k_s + ATT_TILE * LDX;
    float* s_s = (float*)(v_s + ATT_TILE * LDX);
    float* o_s = s_s + ATT_TILE * ATT_LDS;

    const int C = NH * HS;
    const int h = blockIdx.y, b = blockIdx.z;
    const int qt = gridDim.x - 1 - blockIdx.x; // the tiles with the most keys start first
    const int q0 = qt * ATT_TILE;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const size_t stride = 3 * (size_t)C;
    const floatX* q_g = qkv + (size_t)b * T * stride + h * HS;
    const floatX* k_g = q_g + C;
    const floatX* v_g = q_g + 2 * C;

    // this warp's 16 query rows
    const int row0 = q0 + 16 * warp;
    const floatX* q_w = q_s + 16 * warp * LDX;
    float* s_w = s_s + 16 * warp * ATT_LDS;
    floatX* p_w = (floatX*)s_w; // P over S, row stride ATT_LDP
    float* o_w = o_s + 16 * warp * LDO;

    // softmax work split: lane 2r + half owns row r of the warp's 16, the half-row of scores
    // [half * HALF, (half + 1) * HALF) and the half-row of outputs [half * HS/2, (half + 1) * HS/2); the
    // two lanes of a row combine their max and sum with one shuffle each. Each lane walks its columns
    // starting at an offset of `lane`, which spreads the 32 lanes over the 32 shared-memory banks.
    constexpr int HALF = ATT_TILE / 2, HALF_HS = HS / 2;
    const int my_row = lane / 2, half = lane % 2;
    const int q = row0 + my_row;
    float* s_row = s_w + my_row * ATT_LDS + half * HALF;
    floatX* p_row = p_w + my_row * ATT_LDP + half * HALF;
    float* o_row = o_w + my_row * LDO + half * HALF_HS;

    att_load_tile<HS>(q_s, q_g, stride, q0, T);
    for (int i = lane; i < 16 * LDO; i += WARP_SIZE) o_w[i] = 0.f;
    float m = -INFINITY, l = 0.f; // running max (of base-2 scaled scores) and sum of row q
    const float scale_log2 = ATT_LOG2E / sqrtf((float)HS);

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * ATT_TILE;
        __syncthreads(); // every warp is done with the previous K, V tiles (and Q is loaded)
        att_load_tile<HS>(k_s, k_g, stride, k0, T);
        att_load_tile<HS>(v_s, v_g, stride, k0, T);
        __syncthreads();

        att_warp_abt<HS>(s_w, q_w, LDX, k_s, LDX); // S = Q K^T, unscaled
        __syncwarp();
        float s[HALF];
        float mx = -INFINITY;
#pragma unroll
        for (int i = 0; i < HALF; i++) {
            const int c = (i + lane) % HALF;
            s[i] = (k0 + half * HALF + c <= q) ? s_row[c] * scale_log2 : -INFINITY;
            mx = fmaxf(mx, s[i]);
        }
        // key 0 is in every row's first tile, so m_new is finite from the first tile on
        const float m_new = fmaxf(m, fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1)));
        const float alpha = exp2f(m - m_new);
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < HALF; i++) {
            s[i] = exp2f(s[i] - m_new);
            sum += s[i];
        }
        l = alpha * l + sum + __shfl_xor_sync(0xffffffff, sum, 1);
        m = m_new;
        __syncwarp(); // every lane has read its scores before P overwrites the rows (the other half too)
#pragma unroll
        for (int i = 0; i < HALF; i++) p_row[(i + lane) % HALF] = (floatX)s[i];
#pragma unroll 8
        for (int i = 0; i < HALF_HS; i++) o_row[(i + lane) % HALF_HS] *= alpha;
        __syncwarp();
        AttWarpAcc<HS> acc; // o += P V
        acc.load(o_w, LDO);
        acc.mma(p_w, ATT_LDP, v_s, LDX);
        acc.store(o_w, LDO);
    }
    __syncwarp();
    const float inv = 1.f / l;
#pragma unroll 8
    for (int i = 0; i < HALF_HS; i++) o_row[(i + lane) % HALF_HS] *= inv;
    if (half == 0 && q < T) lse[((size_t)b * NH + h) * T + q] = (m + log2f(l)) * ATT_LN2;
    __syncwarp();
    att_store_rows<HS>(out + (size_t)b * T * C + h * HS, C, o_w, row0, T, 1.f);
}

// ----------------------------------------------------------------------------------------------------
// backward pass 1: D (B, NH, T) = rowsum(dout * out) per head; one thread per 16 bytes, the HS/x128::size
// threads of a row (a power of two <= 32, adjacent lanes) reduce with shuffles

template <int HS>
__global__ void attention_backward_d_kernel(float* D, const floatX* dout, const floatX* out, int B, int T,
                                            int NH) {
    constexpr int CH = HS / x128::size;
    const size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t total = (size_t)B * T * NH * CH;
    float sum = 0.f;
    if (g < total) {
        const x128 a = load128(dout + g * x128::size);
        const x128 o = load128(out + g * x128::size);
#pragma unroll
        for (int e = 0; e < x128::size; e++) sum += (float)a[e] * (float)o[e];
    }
#pragma unroll
    for (int offset = CH / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffff, sum, offset);
    if (g < total && g % CH == 0) {
        const size_t row = g / CH; // (b * T + t) * NH + h
        const int h = row % NH;
        const size_t bt = row / NH;
        const int t = bt % T;
        const size_t b = bt / T;
        D[(b * NH + h) * T + t] = sum;
    }
}

// Shared layout of both backward passes: K, V, Q, dO tiles, then S and dP (fp32), then lse and D.
struct AttBackwardSmem {
    floatX *k_s, *v_s, *q_s, *do_s;
    float *s_s, *dp_s, *lse_s, *d_s;
};
template <int HS> __device__ AttBackwardSmem att_backward_smem(unsigned char* base) {
    constexpr int LDX = att_ldx(HS);
    AttBackwardSmem sm;
    sm.k_s = (floatX*)base;
    sm.v_s = sm.k_s + ATT_TILE * LDX;
    sm.q_s = sm.v_s + ATT_TILE * LDX;
    sm.do_s = sm.q_s + ATT_TILE * LDX;
    sm.s_s = (float*)(sm.do_s + ATT_TILE * LDX);
    sm.dp_s = sm.s_s + ATT_TILE * ATT_LDS;
    sm.lse_s = sm.dp_s + ATT_TILE * ATT_LDS;
    sm.d_s = sm.lse_s + ATT_TILE;
    return sm;
}

// lse (pre-multiplied by log2 e) and D of query rows [q0, q0 + ATT_TILE) into shared memory; 0 past T
__device__ inline void att_load_rowstats(float* lse_s, float* d_s, const float* lse, const float* D, int q0,
                                         int T) {
    for (int i = threadIdx.x; i < ATT_TILE; i += ATT_THREADS) {
        const bool in = q0 + i < T;
        lse_s[i] = in ? lse[q0 + i] * ATT_LOG2E : 0.f;
        d_s[i] = in ? D[q0 + i] : 0.f;
    }
}

// ----------------------------------------------------------------------------------------------------
// backward pass 2: grid (T tiles, NH, B); block = ATT_TILE key rows; writes the k and v parts of dqkv.
// Works on the transposed tiles S^T = K Q^T and dP^T = V dO^T so that a warp's 16 rows are its keys.

template <int HS>
__global__ void __launch_bounds__(ATT_THREADS)
    attention_backward_dkdv_kernel(floatX* dqkv, const floatX* dout, const floatX* qkv, const float* lse,
                                   const float* D, int T, int NH) {
    constexpr int LDX = att_ldx(HS), LDO = att_ldo(HS);
    DYNAMIC_SHARED_MEMORY(att_smem);
    const AttBackwardSmem sm = att_backward_smem<HS>(att_smem);

    const int C = NH * HS;
    const int h = blockIdx.y, b = blockIdx.z;
    const int kt = blockIdx.x; // the first key tiles see the most query tiles: they start first
    const int k0 = kt * ATT_TILE;
    const int n_tiles = gridDim.x;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const size_t stride = 3 * (size_t)C;
    const floatX* q_g = qkv + (size_t)b * T * stride + h * HS;
    const floatX* do_g = dout + (size_t)b * T * C + h * HS;
    const float* lse_bh = lse + ((size_t)b * NH + h) * T;
    const float* d_bh = D + ((size_t)b * NH + h) * T;

    // this warp's 16 key rows
    const int row0 = k0 + 16 * warp;
    const floatX* k_w = sm.k_s + 16 * warp * LDX;
    const floatX* v_w = sm.v_s + 16 * warp * LDX;
    float* s_w = sm.s_s + 16 * warp * ATT_LDS;   // S^T, then P^T over it
    float* dp_w = sm.dp_s + 16 * warp * ATT_LDS; // dP^T, then dS^T over it
    floatX* p_w = (floatX*)s_w;
    floatX* ds_w = (floatX*)dp_w;

    att_load_tile<HS>(sm.k_s, q_g + C, stride, k0, T);
    att_load_tile<HS>(sm.v_s, q_g + 2 * C, stride, k0, T);
    AttWarpAcc<HS> dk, dv;
    dk.zero();
    dv.zero();
    const float scale = 1.f / sqrtf((float)HS);
    const float scale_log2 = ATT_LOG2E * scale;

    for (int qt = kt; qt < n_tiles; qt++) {
        const int q0 = qt * ATT_TILE;
        __syncthreads(); // every warp is done with the previous Q, dO tiles
        att_load_tile<HS>(sm.q_s, q_g, stride, q0, T);
        att_load_tile<HS>(sm.do_s, do_g, C, q0, T);
        att_load_rowstats(sm.lse_s, sm.d_s, lse_bh, d_bh, q0, T);
        __syncthreads();

        att_warp_abt<HS>(s_w, k_w, LDX, sm.q_s, LDX);   // S^T = K Q^T
        att_warp_abt<HS>(dp_w, v_w, LDX, sm.do_s, LDX); // dP^T = V dO^T
        __syncwarp();
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int k = row0 + r;
            float p[ATT_TILE / WARP_SIZE], ds[ATT_TILE / WARP_SIZE];
#pragma unroll
            for (int t = 0; t < ATT_TILE / WARP_SIZE; t++) {
                const int c = lane + WARP_SIZE * t, q = q0 + c;
                const bool valid = q >= k && q < T;
                p[t] = valid ? exp2f(s_w[r * ATT_LDS + c] * scale_log2 - sm.lse_s[c]) : 0.f;
                ds[t] = valid ? p[t] * (dp_w[r * ATT_LDS + c] - sm.d_s[c]) : 0.f;
            }
            __syncwarp(); // all lanes have read row r of S^T and dP^T before P^T and dS^T overwrite them
#pragma unroll
            for (int t = 0; t < ATT_TILE / WARP_SIZE; t++) {
                p_w[r * ATT_LDP + lane + WARP_SIZE * t] = (floatX)p[t];
                ds_w[r * ATT_LDP + lane + WARP_SIZE * t] = (floatX)ds[t];
            }
        }
        __syncwarp();
        dv.mma(p_w, ATT_LDP, sm.do_s, LDX); // dV += P^T dO
        dk.mma(ds_w, ATT_LDP, sm.q_s, LDX); // dK += dS^T Q   (scaled at the end)
    }

    __syncthreads(); // Q and dO tiles are free: stage the fp32 results there
    float* stage_w = (float*)sm.q_s + 16 * warp * LDO;
    floatX* dk_g = dqkv + (size_t)b * T * stride + C + h * HS;
    dk.store(stage_w, LDO);
    __syncwarp();
    att_store_rows<HS>(dk_g, stride, stage_w, row0, T, scale);
    __syncwarp();
    dv.store(stage_w, LDO);
    __syncwarp();
    att_store_rows<HS>(dk_g + C, stride, stage_w, row0, T, 1.f);
}

// ----------------------------------------------------------------------------------------------------
// backward pass 3: grid (T tiles, NH, B); block = ATT_TILE query rows; writes the q part of dqkv

template <int HS>
__global__ void __launch_bounds__(ATT_THREADS)
    attention_backward_dq_kernel(floatX* dqkv, const floatX* dout, const floatX* qkv, const float* lse,
                                 const float* D, int T, int NH) {
    constexpr int LDX = att_ldx(HS), LDO = att_ldo(HS);
    DYNAMIC_SHARED_MEMORY(att_smem);
    const AttBackwardSmem sm = att_backward_smem<HS>(att_smem);

    const int C = NH * HS;
    const int h = blockIdx.y, b = blockIdx.z;
    const int qt = gridDim.x - 1 - blockIdx.x; // the tiles with the most keys start first
    const int q0 = qt * ATT_TILE;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const size_t stride = 3 * (size_t)C;
    const floatX* q_g = qkv + (size_t)b * T * stride + h * HS;

    // this warp's 16 query rows
    const int row0 = q0 + 16 * warp;
    const floatX* q_w = sm.q_s + 16 * warp * LDX;
    const floatX* do_w = sm.do_s + 16 * warp * LDX;
    float* s_w = sm.s_s + 16 * warp * ATT_LDS; // S, then dS over it
    float* dp_w = sm.dp_s + 16 * warp * ATT_LDS;
    floatX* ds_w = (floatX*)s_w;
    const float* lse_w = sm.lse_s + 16 * warp;
    const float* d_w = sm.d_s + 16 * warp;

    att_load_tile<HS>(sm.q_s, q_g, stride, q0, T);
    att_load_tile<HS>(sm.do_s, dout + (size_t)b * T * C + h * HS, C, q0, T);
    att_load_rowstats(sm.lse_s, sm.d_s, lse + ((size_t)b * NH + h) * T, D + ((size_t)b * NH + h) * T, q0, T);
    AttWarpAcc<HS> dq;
    dq.zero();
    const float scale = 1.f / sqrtf((float)HS);
    const float scale_log2 = ATT_LOG2E * scale;

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * ATT_TILE;
        __syncthreads(); // every warp is done with the previous K, V tiles (and Q, dO, lse, D are loaded)
        att_load_tile<HS>(sm.k_s, q_g + C, stride, k0, T);
        att_load_tile<HS>(sm.v_s, q_g + 2 * C, stride, k0, T);
        __syncthreads();

        att_warp_abt<HS>(s_w, q_w, LDX, sm.k_s, LDX);   // S = Q K^T
        att_warp_abt<HS>(dp_w, do_w, LDX, sm.v_s, LDX); // dP = dO V^T
        __syncwarp();
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int q = row0 + r;
            float ds[ATT_TILE / WARP_SIZE];
#pragma unroll
            for (int t = 0; t < ATT_TILE / WARP_SIZE; t++) {
                const int c = lane + WARP_SIZE * t;
                const bool valid = k0 + c <= q;
                const float p = valid ? exp2f(s_w[r * ATT_LDS + c] * scale_log2 - lse_w[r]) : 0.f;
                ds[t] = valid ? p * (dp_w[r * ATT_LDS + c] - d_w[r]) : 0.f;
            }
            __syncwarp(); // all lanes have read row r of S before dS overwrites it
#pragma unroll
            for (int t = 0; t < ATT_TILE / WARP_SIZE; t++)
                ds_w[r * ATT_LDP + lane + WARP_SIZE * t] = (floatX)ds[t];
        }
        __syncwarp();
        dq.mma(ds_w, ATT_LDP, sm.k_s, LDX); // dQ += dS K   (scaled at the end)
    }

    __syncthreads(); // Q and dO tiles are free: stage the fp32 result there
    float* stage_w = (float*)sm.q_s + 16 * warp * LDO;
    dq.store(stage_w, LDO);
    __syncwarp();
    att_store_rows<HS>(dqkv + (size_t)b * T * stride + h * HS, stride, stage_w, row0, T, scale);
}

// ----------------------------------------------------------------------------------------------------
// launchers

// Shape and alignment checks shared by both launchers; the floatX tensors are read and written 16 bytes
// at a time, so they must be 16-byte aligned (cudaMalloc gives 256).
inline void attention_check_args(const char* who, int B, int T, int NH, int HS, const floatX* a,
                                 const floatX* b, const floatX* c = nullptr, const floatX* d = nullptr) {
    if (HS != 64 && HS != 128) {
        fail("%s: head size HS=%d is not supported (the flash attention kernels are built for HS = 64 and HS "
             "= 128)",
             who, HS);
    }
    if (B < 1 || T < 1 || NH < 1 || NH > 65535 || B > 65535) {
        fail("%s: bad shape B=%d T=%d NH=%d (need B, T, NH >= 1 and B, NH <= 65535)", who, B, T, NH);
    }
    const floatX* ptrs[4] = {a, b, c, d};
    for (const floatX* p : ptrs) {
        if ((uintptr_t)p % 16 != 0) {
            fail("%s: tensor pointer %p is not 16-byte aligned (needed for 128-bit loads)", who,
                 (const void*)p);
        }
    }
}

// Opt in to more than 48 KB of dynamic shared memory, or fail naming what this GPU offers.
template <class Kernel> void attention_set_smem(Kernel kernel, size_t bytes, const char* who) {
    int device = 0, optin = 0;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (bytes > (size_t)optin) {
        fail("%s: needs %zu bytes of shared memory per block, this GPU allows %d", who, bytes, optin);
    }
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int HS>
void attention_forward_hs(floatX* out, float* lse, const floatX* qkv, int B, int T, int NH,
                          cudaStream_t stream) {
    const size_t smem = att_forward_smem_bytes(HS);
    attention_set_smem(attention_forward_kernel<HS>, smem, "attention_forward");
    const dim3 grid((T + ATT_TILE - 1) / ATT_TILE, NH, B);
    CUDA_LAUNCH(attention_forward_kernel<HS>, grid, ATT_THREADS, smem, stream)(out, lse, qkv, T, NH);
    cudaCheck(cudaGetLastError());
}

// qkv (B, T, 3C) -> out (B, T, C), lse (B, NH, T) fp32
inline void attention_forward(floatX* out, float* lse, const floatX* qkv, int B, int T, int NH, int HS,
                              cudaStream_t stream) {
    attention_check_args("attention_forward", B, T, NH, HS, out, qkv);
    if (HS == 64) {
        attention_forward_hs<64>(out, lse, qkv, B, T, NH, stream);
    } else {
        attention_forward_hs<128>(out, lse, qkv, B, T, NH, stream);
    }
}

// fp32 scratch for the backward: D (B, NH, T)
inline size_t attention_backward_scratch_bytes(int B, int T, int NH, int HS) {
    (void)HS;
    return (size_t)B * NH * T * sizeof(float);
}

template <int HS>
void attention_backward_hs(floatX* dqkv, const floatX* dout, const floatX* qkv, const floatX* out,
                           const float* lse, float* D, int B, int T, int NH, cudaStream_t stream) {
    const size_t threads = (size_t)B * T * NH * (HS / x128::size);
    const int block = 256;
    CUDA_LAUNCH(attention_backward_d_kernel<HS>, (unsigned)((threads + block - 1) / block), block, 0, stream)
    (D, dout, out, B, T, NH);
    cudaCheck(cudaGetLastError());

    const size_t smem = att_backward_smem_bytes(HS);
    const dim3 grid((T + ATT_TILE - 1) / ATT_TILE, NH, B);
    attention_set_smem(attention_backward_dkdv_kernel<HS>, smem, "attention_backward");
    CUDA_LAUNCH(attention_backward_dkdv_kernel<HS>, grid, ATT_THREADS, smem, stream)
    (dqkv, dout, qkv, lse, D, T, NH);
    cudaCheck(cudaGetLastError());
    attention_set_smem(attention_backward_dq_kernel<HS>, smem, "attention_backward");
    CUDA_LAUNCH(attention_backward_dq_kernel<HS>, grid, ATT_THREADS, smem, stream)
    (dqkv, dout, qkv, lse, D, T, NH);
    cudaCheck(cudaGetLastError());
}

// dout (B, T, C) -> dqkv (B, T, 3C), written (not accumulated); uses out and lse of the forward and
// scratch of attention_backward_scratch_bytes() bytes. dqkv must not overlap any input.
inline void attention_backward(floatX* dqkv, const floatX* dout, const floatX* qkv, const floatX* out,
                               const float* lse, void* scratch, int B, int T, int NH, int HS,
                               cudaStream_t stream) {
    attention_check_args("attention_backward", B, T, NH, HS, dqkv, dout, qkv, out);
    if (HS == 64) {
        attention_backward_hs<64>(dqkv, dout, qkv, out, lse, (float*)scratch, B, T, NH, stream);
    } else {
        attention_backward_hs<128>(dqkv, dout, qkv, out, lse, (float*)scratch, B, T, NH, stream);
    }
}
