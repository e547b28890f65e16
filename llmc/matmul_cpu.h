// matmul_cpu.h: the CPU trainer's fp32 matrix multiply, where nearly all its time goes.
//
//   matmul_cpu:  C(M,N) = [C, or bias, or 0] + A(M,K) . B(K,N)
//
// A and B are read through strides (a MatrixView), so the three matmuls of a layer are one function
// (BT = B*T rows, IN inputs, OC outputs; every matrix row-major):
//   forward           out  (BT,OC) = inp (BT,IN) . weight(OC,IN)^T   A = inp          B = weight^T
//   backward, input   dinp (BT,IN) += dout(BT,OC) . weight(OC,IN)    A = dout         B = weight
//   backward, weight  dw   (OC,IN) += dout(BT,OC)^T . inp(BT,IN)     A = dout^T       B = inp
//
// How it nears the FMA peak (the scheme of GotoBLAS and BLIS, sized for this trainer's shapes):
// - The micro-kernel holds an MR x NR tile of C in registers, MR x NV vector accumulators (NR = NV vectors
//   of VW floats). At each k it loads NV vectors of row k of B and broadcasts MR scalars of column k of A:
//   MR*NV FMAs for NV + MR loads. With AVX2 (MR = 6, NV = 2: 12 of the 16 registers) that is 12 FMAs of 8
//   lanes per 8 loads, with AVX-512 (MR = 8, NV = 3: 24 of the 32) 24 FMAs of 16 lanes per 11 loads: both
//   within the loads a cycle the cores sustain beside 2 FMAs, and enough independent accumulators to cover
//   the FMA latency (4 cycles) times the FMA pipes (2). A tile's sum over KC values of k costs one load and
//   one store of the tile, so C's traffic is 2/KC of the FMA count. Alone, on data in cache, it runs at
//   ~86% of the measured FMA peak (AMD EPYC, AVX2).
// - Packing: before the micro-kernel sees them, an MC x KC block of A is copied into MR-row panels (for
//   each k, the panel's MR values side by side) and a KC x NR slice of B into one panel (for each k, its
//   NR values side by side). The micro-kernel then reads both as two linear streams whatever the strides
//   of the originals (transposed, or 3 KiB apart: reading those in place would thrash L1's sets), and the
//   panels are padded with zeros so it never tests an edge: only its final store skips the rows and
//   columns past M and N. Each packed value of B serves MC rows and each of A every panel of the thread,
//   so the copies are a small part of the time (~12% at the d12 shapes, perf says), and the slice of B
//   packed next is prefetched while the micro-kernels run.
// - Caches: the B slice (KC*NR*4 bytes: 16 KiB with AVX2, 48 KiB with AVX-512) and the A block
//   (MC*KC*4 = 256 KiB) stay in L2 (512 KiB a core on the EPYC this was tuned on), and so, across the K
//   blocks, does most of the MC x NC block of C that a work item updates (NC = 384 columns).
// - Threads: a work item is an MC-row block of C by NC columns of it (whole panels); the threads take the
//   items one at a time as they finish the last (dynamic scheduling), so a thread slowed by the machine does
//   fewer; no two write the same element of C. The threads first pack A together, once, where it fits the
//   L2 caches (else each item packs its A block for itself, ~1/NC of its work; packed once per item, the
//   classifier's forward packed its A 131 times: 76 ms against 58 packed once, bench_matmul_cpu on the
//   AVX-512 Xeon); one parallel region per call.
// - Determinism: each element of C is the same sum in the same order (K blocks in order, k in order, one
//   lane of one accumulator, added to C once per K block) whatever M, N, the thread count or which thread
//   computed it: the same bits run to run, and a row's result does not depend on the other rows.
// The vector width is chosen at build time: 16 floats where the compiler targets AVX-512, 8 otherwise
// (one AVX2 register; GCC's vector extension lowers it to SSE, or scalars, on machines without).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <omp.h>
#include <vector>

#if defined(__AVX512F__)
constexpr int MATMUL_VW = 16, MATMUL_MR = 8, MATMUL_NV = 3; // 24 accumulators of the 32 zmm registers
#else
constexpr int MATMUL_VW = 8, MATMUL_MR = 6, MATMUL_NV = 2; // 12 accumulators of the 16 ymm registers
#endif
constexpr int MATMUL_NR = MATMUL_NV * MATMUL_VW; // the columns of a B panel: 48 (AVX-512) or 16
constexpr int MATMUL_KC = 256;                   // the K block
constexpr int MATMUL_MC = 256; // the largest M block: M is cut into ceil(M / MC) equal blocks (of MR rows)
constexpr int MATMUL_NC = 384; // the columns of a work item: whole panels, NC / NR of them rounded up

typedef float vecf __attribute__((vector_size(MATMUL_VW * sizeof(float))));

static inline vecf load_vec(const float* p) {
    vecf v;
    memcpy(&v, p, sizeof(v)); // an unaligned vector load
    return v;
}
static inline void store_vec(float* p, vecf v) {
    memcpy(p, &v, sizeof(v));
}

// A matrix read through strides: element (i, j) is p[i*row_stride + j*col_stride]. A row-major (R, C)
// matrix is {p, C, 1}, its transpose {p, 1, C}.
struct MatrixView {
    const float* p;
    size_t row_stride, col_stride;
    const float& at(size_t i, size_t j) const { return p[i * row_stride + j * col_stride]; }
};

// ----------------------------------------------------------------------------------------------------
// packing

// Both packers walk k in the outer loop and the panel's MR (or NR) values in the inner one, whatever the
// strides: when those values are adjacent in memory (A transposed, B row-major) the inner loop is a copy;
// when they are not (A row-major, B transposed) it reads MR or NR rows side by side, so that many cache
// misses are in flight at once instead of the few one row's stream would give (the weights come from DRAM).

// Rows [m0, m0 + mc) and columns [k0, k0 + kc) of A(M, .) into MR-row panels: dst[(p*kc + k)*MR + i] =
// A(m0 + p*MR + i, k0 + k), rows past M as zeros. mc is a multiple of MR.
static inline void matmul_pack_a(float* dst, MatrixView A, int M, int m0, int mc, int k0, int kc) {
    constexpr int MR = MATMUL_MR;
    for (int p = 0; p < mc / MR; p++) {
        float* panel = dst + (size_t)p * kc * MR;
        const int m = m0 + p * MR, rows = std::min(MR, M - m);
        for (int k = 0; k < kc; k++) {
            if (A.row_stride == 1) { // a copy (the compiler cannot see the stride in the loop below)
                const float* col = &A.at(m, k0 + k);
                // a fixed count where it can: unrolled moves (a copy of `rows` floats becomes a memcpy call)
                if (rows == MR) {
                    for (int i = 0; i < MR; i++) panel[k * MR + i] = col[i];
                } else {
                    for (int i = 0; i < rows; i++) panel[k * MR + i] = col[i];
                }
            } else {
                for (int i = 0; i < rows; i++) panel[k * MR + i] = A.at(m + i, k0 + k);
            }
            for (int i = rows; i < MR; i++) panel[k * MR + i] = 0.0f;
        }
    }
}

// Rows [k0, k0 + kc) of the NR columns of B(., N) that start at n0 into one panel: dst[k*NR + j] =
// B(k0 + k, n0 + j), columns past N as zeros.
static inline void matmul_pack_b(float* dst, MatrixView B, int N, int n0, int k0, int kc) {
    constexpr int NR = MATMUL_NR;
    const int cols = std::min(NR, N - n0);
    if (B.col_stride == 1 && cols == NR) { // a copy of NR floats per row, in vectors
        for (int k = 0; k < kc; k++)
            for (int v = 0; v < NR; v += MATMUL_VW)
                store_vec(dst + (size_t)k * NR + v, load_vec(&B.at(k0 + k, n0 + v)));
        return;
    }
    for (int k = 0; k < kc; k++) {
        for (int j = 0; j < cols; j++) dst[(size_t)k * NR + j] = B.at(k0 + k, n0 + j);
        for (int j = cols; j < NR; j++) dst[(size_t)k * NR + j] = 0.0f;
    }
}

// Ask for the cache lines of part `part` of `parts` of that slice's source ahead of matmul_pack_b: the
// slice's lines are far apart (rows of B 3 KiB or more apart, or NR columns of a weight), so without it the
// copy waits on its misses a few at a time; with it they arrive while the micro-kernels run.
static inline void matmul_prefetch_b(MatrixView B, int N, int n0, int k0, int kc, int part, int parts) {
    const int cols = std::min(MATMUL_NR, N - n0);
    const int k_begin = kc * part / parts, k_end = kc * (part + 1) / parts;
    if (B.col_stride == 1) { // a row's NR values: one or two lines per k
        for (int k = k_begin; k < k_end; k++) {
            __builtin_prefetch(&B.at(k0 + k, n0), 0, 2);
            __builtin_prefetch(&B.at(k0 + k, n0 + cols - 1), 0, 2);
        }
    } else { // NR columns, each kc values apart by row_stride: every 16th (a line, for row_stride 1)
        for (int j = 0; j < cols; j++)
            for (int k = k_begin - k_begin % 16; k < k_end; k += 16)
                __builtin_prefetch(&B.at(k0 + k, n0 + j), 0, 2);
    }
}

// All of B(K, N) packed once, for a B that several calls share (the classifier's wte between updates):
// panel s (columns [s*NR, s*NR + NR)) is a contiguous (K, NR) block at dst + s*K*NR, rows k0.. of it at
// + k0*NR, the layout matmul_cpu reads when given it. dst holds matmul_packed_b_size(N, K) floats.
static inline size_t matmul_packed_b_size(int N, int K) {
    return (size_t)(N + MATMUL_NR - 1) / MATMUL_NR * MATMUL_NR * K;
}
static inline void matmul_pack_b_all(float* dst, MatrixView B, int N, int K) {
    const int panels = (N + MATMUL_NR - 1) / MATMUL_NR;
#pragma omp parallel for schedule(static)
    for (int s = 0; s < panels; s++)
        matmul_pack_b(dst + (size_t)s * K * MATMUL_NR, B, N, s * MATMUL_NR, 0, K);
}

// ----------------------------------------------------------------------------------------------------
// The micro-kernel: the (rows x cols) tile at c (leading dimension ldc) of C gets a(MR-row panel, kc) .
// b(kc, NR panel), added to C, or, when overwrite, to the bias (cols values; null: 0) in place of C.
static inline void matmul_micro_kernel(int kc, const float* a, const float* b, float* c, size_t ldc, int rows,
                                       int cols, bool overwrite, const float* bias) {
    constexpr int MR = MATMUL_MR, NV = MATMUL_NV, VW = MATMUL_VW, NR = MATMUL_NR;
    for (int i = 0; i < rows; i++) { // fetch the tile of C while the loop runs (its rows are ldc apart, too
        __builtin_prefetch(c + (size_t)i * ldc, 1); // far for the hardware prefetchers to guess): its
        __builtin_prefetch(c + (size_t)i * ldc + NR - 1, 1); // ~12 cache misses would stall the store
    }
    vecf acc[MR][NV] = {};
    for (int k = 0; k < kc; k++, a += MR, b += NR) {
        vecf bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = load_vec(b + v * VW);
        for (int i = 0; i < MR; i++)
            for (int v = 0; v < NV; v++) acc[i][v] += a[i] * bv[v];
    }
    if (rows == MR && cols == NR) {
        for (int i = 0; i < MR; i++) {
            float* ci = c + (size_t)i * ldc;
            for (int v = 0; v < NV; v++) {
                const vecf start =
                    overwrite ? (bias ? load_vec(bias + v * VW) : vecf{}) : load_vec(ci + v * VW);
                store_vec(ci + v * VW, start + acc[i][v]);
            }
        }
        return;
    }
    float tile[MR][NR]; // an edge tile: its real rows and columns only
    memcpy(tile, acc, sizeof(tile));
    for (int i = 0; i < rows; i++) {
        float* ci = c + (size_t)i * ldc;
        for (int j = 0; j < cols; j++) {
            const float start = overwrite ? (bias ? bias[j] : 0.0f) : ci[j];
            ci[j] = start + tile[i][j];
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// C(M,N) (leading dimension ldc) = [C if accumulate, else bias (N values) or 0] + A(M,K) . B(K,N).
// B_packed: B already packed by matmul_pack_b_all, or null to pack it here, slice by slice.
static inline void matmul_cpu(float* C, size_t ldc, MatrixView A, MatrixView B, const float* B_packed, int M,
                              int N, int K, const float* bias, bool accumulate) {
    constexpr int MR = MATMUL_MR, NR = MATMUL_NR, KC = MATMUL_KC, MC = MATMUL_MC;
    constexpr int NCHUNK = (MATMUL_NC + NR - 1) / NR;
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { // an empty sum: C keeps its value, or becomes the bias or 0
        if (!accumulate)
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) C[(size_t)m * ldc + n] = bias ? bias[n] : 0.0f;
        return;
    }
    const int mblocks = (M + MC - 1) / MC, panels = (N + NR - 1) / NR, kblocks = (K + KC - 1) / KC;
    const int mc_max = ((M + mblocks - 1) / mblocks + MR - 1) / MR * MR; // rows of a block, MR-padded
    const int chunks = (panels + NCHUNK - 1) / NCHUNK;                   // NCHUNK panels to a work item
    const long items = (long)mblocks * chunks;
    // When several work items would each pack the same A block (chunks > 1: 2 to 8 for the layers, 131 for
    // the classifier's forward), A is packed once for the call into a buffer the threads share, block
    // (mb, kb) at (mb * kblocks + kb) * mc_max * KC, if it fits the L2 caches (4 MiB: a larger one, packed
    // long before it is used, is read back from memory, which measured slower than packing it again).
    // Packing only copies, so the results are the same bits either way.
    const size_t shared_floats = (size_t)mblocks * kblocks * mc_max * KC;
    const bool share_a = chunks > 1 && shared_floats <= ((size_t)1 << 20);
    static std::vector<float> a_shared; // (grown to the largest; used by one call at a time)
    if (share_a && a_shared.size() < shared_floats) a_shared.resize(shared_floats);
#pragma omp parallel
    {
        // each thread's packed A block and B slice (static: allocated once per thread, not per call)
        alignas(64) static thread_local float a_pack[(MC + MR - 1) / MR * MR * KC];
        alignas(64) static thread_local float b_pack[KC * NR];
        if (share_a) {
#pragma omp for schedule(static)
            for (int blk = 0; blk < mblocks * kblocks; blk++) {
                const int m0 = blk / kblocks * mc_max, k0 = blk % kblocks * KC;
                matmul_pack_a(a_shared.data() + (size_t)blk * mc_max * KC, A, M, m0,
                              std::min(mc_max, (M - m0 + MR - 1) / MR * MR), k0, std::min(KC, K - k0));
            } // (the threads wait here until every block is packed)
        }
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < items; it++) {
            const int mb = (int)(it / chunks), m0 = mb * mc_max;
            const int mc = std::min(mc_max, (M - m0 + MR - 1) / MR * MR);
            const int s0 = (int)(it % chunks) * NCHUNK, s1 = std::min(panels, s0 + NCHUNK); // its panels
            for (int k0 = 0; k0 < K; k0 += KC) {
                const int kc = std::min(KC, K - k0);
                const float* a_block = a_pack;
                if (share_a) {
                    a_block = a_shared.data() + ((size_t)mb * kblocks + k0 / KC) * mc_max * KC;
                } else {
                    matmul_pack_a(a_pack, A, M, m0, mc, k0, kc);
                }
                for (int s = s0; s < s1; s++) {
                    const int n0 = s * NR;
                    const float* b = B_packed ? B_packed + (size_t)n0 * K + (size_t)k0 * NR : b_pack;
                    if (!B_packed) matmul_pack_b(b_pack, B, N, n0, k0, kc);
                    // the slice packed next: the next panel's, or the first panel's in the next K block
                    const int next_n0 = s + 1 < s1 ? n0 + NR : s0 * NR;
                    const int next_k0 = s + 1 < s1 ? k0 : k0 + KC;
                    const bool prefetch = !B_packed && next_k0 < K;
                    const int cols = std::min(NR, N - n0);
                    const bool overwrite = !accumulate && k0 == 0;
                    for (int p = 0; p < mc / MR; p++) {
                        const int m = m0 + p * MR;
                        if (prefetch)
                            matmul_prefetch_b(B, N, next_n0, next_k0, std::min(KC, K - next_k0), p, mc / MR);
                        matmul_micro_kernel(kc, a_block + (size_t)p * kc * MR, b, C + (size_t)m * ldc + n0,
                                            ldc, std::min(MR, M - m), cols, overwrite,
                                            bias ? bias + n0 : nullptr);
                    }
                }
            }
        }
    }
}
