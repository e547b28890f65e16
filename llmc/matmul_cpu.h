// matmul_cpu.h: the two fp32 matrix-multiply kernels of the CPU trainer: where nearly all its time goes.
//
// A transformer layer's matmuls come in three shapes (BT = B*T rows, C inputs, OC outputs):
//   forward           out  (BT,OC) = inp (BT,C) . weight(OC,C)^T   -> matmul_dot_kernel   (rows x rows)
//                                                                     or matmul_axpy_kernel on weight^T
//   backward, input   dinp (BT,C) += dout(BT,OC) . weight(OC,C)    -> matmul_axpy_kernel  (broadcast form)
//   backward, weight  dw  (OC,C) += dout(BT,OC)^T . inp (BT,C)     -> matmul_axpy_kernel  (broadcast form)
// The broadcast form reads its right-hand matrix in 16-column strips, each packed into one contiguous
// panel first (pack_weight_strips for weight^T, pack_column_strips for a row-major matrix). The forward
// takes any OC: pack_weight_strips fills the last strip up with zero columns and the kernel stores only the
// real ones.
// Both kernels hold a 12-accumulator register tile (each accumulator a vector of 8 floats: one AVX2 register;
// GCC's vector extension lowers it to whatever the target has), so every vector loaded from memory feeds
// several FMAs. They are cache-blocked so the data a tile reuses stays in L1/L2, and threaded with OpenMP
// over independent output tiles (no two threads write the same element, so results do not depend on timing).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

typedef float vec8 __attribute__((vector_size(32)));

static inline vec8 load8(const float* p) {
    vec8 v;
    memcpy(&v, p, sizeof(v)); // an unaligned vector load
    return v;
}
static inline void store8(float* p, vec8 v) {
    memcpy(p, &v, sizeof(v));
}
static inline vec8 splat8(float x) {
    return vec8{x, x, x, x, x, x, x, x};
}
static inline float hsum8(vec8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// ----------------------------------------------------------------------------------------------------
// out(M,N) = (bias or 0) + A(M,K) . W(N,K)^T, written (not accumulated); rows of A and W contiguous,
// K % 8 == 0.
// Tile: 4 rows of A x 3 rows of W = 12 dot products, each a vector accumulator of 8 partial sums along K.
// K is cut into panels of KC (most layers fit in one panel, so each tile's horizontal sums are done once)
// so that a tile's 7 rows (up to 28 KiB) stay in L1 while the block's 48 W rows stay in L2.
static inline void matmul_dot_kernel(float* out, const float* A, const float* W, const float* bias, int M,
                                     int N, int K) {
    constexpr int TM = 4, TN = 3, KC = 1024, BM = 32, BN = 48; // BN is a multiple of TN, BM of TM
    const int mblocks = (M + BM - 1) / BM, nblocks = (N + BN - 1) / BN;
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int k1 = std::min(K, k0 + KC);
#pragma omp parallel for collapse(2) schedule(static)
        for (int mb = 0; mb < mblocks; mb++) {
            for (int nb = 0; nb < nblocks; nb++) {
                const int mend = std::min(M, (mb + 1) * BM), nend = std::min(N, (nb + 1) * BN);
                for (int m = mb * BM; m < mend; m += TM) {
                    // rows past the end repeat the last row; their results are computed but not stored
                    const float* a[TM];
                    for (int i = 0; i < TM; i++) a[i] = A + (size_t)std::min(m + i, M - 1) * K;
                    for (int n = nb * BN; n < nend; n += TN) {
                        const float* w[TN];
                        for (int j = 0; j < TN; j++) w[j] = W + (size_t)std::min(n + j, N - 1) * K;
                        vec8 acc[TM][TN] = {};
                        for (int k = k0; k < k1; k += 8) {
                            vec8 av[TM], wv[TN];
                            for (int i = 0; i < TM; i++) av[i] = load8(a[i] + k);
                            for (int j = 0; j < TN; j++) wv[j] = load8(w[j] + k);
                            for (int i = 0; i < TM; i++)
                                for (int j = 0; j < TN; j++) acc[i][j] += av[i] * wv[j];
                        }
                        for (int i = 0; i < TM && m + i < M; i++) {
                            for (int j = 0; j < TN && n + j < N; j++) {
                                float* o = out + (size_t)(m + i) * N + (n + j);
                                float start = (k0 > 0) ? *o : (bias ? bias[n + j] : 0.0f);
                                *o = start + hsum8(acc[i][j]);
                            }
                        }
                    }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// Out(R,N) += sum_j A(r,j) * Bm(j,N) for j in [0,J), where A(r,j) = A[r*a_row + j*a_col] (so A may be
// read transposed), and the 16 columns of strip s of Bm at row j start at Bm + s*strip_stride + j*ldb:
// strip_stride = 16 for a row-major Bm with leading dimension ldb, or J*16 with ldb = 16 for a Bm packed by
// pack_weight_strips or pack_column_strips. Out has leading dimension ldo. N % 16 != 0 needs a Bm whose
// last strip is readable for all 16 columns (pack_weight_strips pads it): that strip stores only its first
// N % 16 columns. Each column is a lane of its own, so a column's value does not depend on N.
// Tile: 6 rows x 16 columns = 12 vector accumulators; per j, two vector loads of Bm feed 12 FMAs with 6
// broadcast scalars of A. J is cut into panels of JC so the 16-column strip of Bm stays in L1/L2.
static inline void matmul_axpy_kernel(float* Out, int ldo, const float* A, size_t a_row, size_t a_col,
                                      const float* Bm, size_t strip_stride, int ldb, int R, int N, int J) {
    constexpr int TR = 6, JC = 512;
    const int rtiles = (R + TR - 1) / TR, strips = (N + 15) / 16;
    for (int j0 = 0; j0 < J; j0 += JC) {
        const int j1 = std::min(J, j0 + JC);
#pragma omp parallel for collapse(2) schedule(static)
        for (int rt = 0; rt < rtiles;
             rt++) { // row tile outer: the tile's A values stay in cache across strips
            for (int s = 0; s < strips; s++) {
                const int c = s * 16, r0 = rt * TR;
                int rows[TR]; // rows past the end repeat the last row and are not stored
                for (int i = 0; i < TR; i++) rows[i] = std::min(r0 + i, R - 1);
                vec8 acc[TR][2] = {};
                for (int j = j0; j < j1; j++) {
                    const float* b = Bm + (size_t)s * strip_stride + (size_t)j * ldb;
                    vec8 b0 = load8(b), b1 = load8(b + 8);
                    for (int i = 0; i < TR; i++) {
                        vec8 a = splat8(A[rows[i] * a_row + j * a_col]);
                        acc[i][0] += a * b0;
                        acc[i][1] += a * b1;
                    }
                }
                for (int i = 0; i < TR && r0 + i < R; i++) {
                    float* o = Out + (size_t)(r0 + i) * ldo + c;
                    if (c + 16 <= N) {
                        store8(o, load8(o) + acc[i][0]);
                        store8(o + 8, load8(o + 8) + acc[i][1]);
                    } else { // the last, partial strip: its real columns only
                        for (int k = 0; c + k < N; k++) o[k] += acc[i][k / 8][k % 8];
                    }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// Pack W (N,K) for the forward's broadcast-form matmul: the 16-row strip s of W becomes one contiguous
// (K,16) panel, dst[s][k][i] = W[s*16 + i][k], so the kernel walks each strip's panel linearly; rows past N
// (the last strip when N % 16 != 0) are packed as zeros. dst holds packed_strips_size(N, K) floats.
// One pass over W: a small fraction of the matmul's work when the batch has many rows.
static inline size_t packed_strips_size(int N, int K) {
    return (size_t)(N + 15) / 16 * 16 * K;
}
static inline void pack_weight_strips(float* dst, const float* W, int N, int K) {
#pragma omp parallel for schedule(static)
    for (int s = 0; s < (N + 15) / 16; s++) {
        float* panel = dst + (size_t)s * K * 16;
        for (int i = 0; i < 16; i++) {
            const int n = s * 16 + i;
            if (n < N) {
                for (int k = 0; k < K; k++) panel[(size_t)k * 16 + i] = W[(size_t)n * K + k];
            } else {
                for (int k = 0; k < K; k++) panel[(size_t)k * 16 + i] = 0.0f;
            }
        }
    }
}

// Pack B (J,N) row-major into contiguous (J,16) panels, one per 16-column strip:
// dst[s][j][i] = B[j][s*16 + i] (N % 16 == 0), so the broadcast-form kernel reads each strip linearly
// instead of one cache line per row.
static inline void pack_column_strips(float* dst, const float* Bm, int J, int N) {
#pragma omp parallel for schedule(static)
    for (int s = 0; s < N / 16; s++) {
        float* panel = dst + (size_t)s * J * 16;
        for (int j = 0; j < J; j++)
            memcpy(panel + (size_t)j * 16, Bm + (size_t)j * N + s * 16, 16 * sizeof(float));
    }
}
