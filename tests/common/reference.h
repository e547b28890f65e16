// reference.h: the layers in double precision, one reference per layer, shared by every test that checks
// an implementation of it: the kernel checks (dev/cuda/*_check.cu, through check_common.h), the scalar math
// of the kernels (tests/unit/test_kernel_math.cpp), the emulated cuBLASLt epilogues
// (tests/emu/test_emu_cublaslt.cpp) and the 8-bit AdamW (tests/unit/test_adamw8bit.cpp). Each is the
// formula written plainly, in double, from inputs the caller has already rounded to what the implementation
// sees; the callers add the tolerances, which depend on the implementation. No CUDA, no llmc.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

// ----------------------------------------------------------------------------------------------------
// GELU, GPT-2's tanh approximation: gelu(x) = x/2 (1 + tanh(s (x + 0.044715 x^3))), s = sqrt(2/pi)

inline double gelu_ref(double x) {
    const double s = std::sqrt(2.0 / 3.14159265358979323846);
    return 0.5 * x * (1.0 + std::tanh(s * (x + 0.044715 * x * x * x)));
}
// d gelu / dx
inline double gelu_grad_ref(double x) {
    const double s = std::sqrt(2.0 / 3.14159265358979323846);
    const double th = std::tanh(s * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * s * (1.0 + 3.0 * 0.044715 * x * x);
}

// ----------------------------------------------------------------------------------------------------
// LayerNorm of one row of C values, eps 1e-5 (GPT-2's):
//   mean = sum x / C, rstd = 1 / sqrt(sum (x - mean)^2 / C + eps), out = (x - mean) rstd w + b

template <class T>
inline void layernorm_forward_ref(const T* x, const T* weight, const T* bias, int C, double* out,
                                  double* mean, double* rstd) {
    double m = 0.0;
    for (int c = 0; c < C; c++) m += (double)x[c];
    m /= C;
    double var = 0.0;
    for (int c = 0; c < C; c++) var += ((double)x[c] - m) * ((double)x[c] - m);
    var /= C;
    const double s = 1.0 / std::sqrt(var + 1e-5);
    for (int c = 0; c < C; c++) out[c] = ((double)x[c] - m) * s * (double)weight[c] + (double)bias[c];
    *mean = m;
    *rstd = s;
}

// Its backward for one row, given the row's mean and rstd (xhat = (x - mean) rstd, g = dout w):
//   dinp += rstd (g - mean(g) - xhat mean(g xhat)),  dweight += dout xhat,  dbias += dout
// (added, as the gradients of a layer are accumulated)
template <class T>
inline void layernorm_backward_ref(const T* dout, const T* x, const T* weight, double mean, double rstd,
                                   int C, double* dinp, double* dweight, double* dbias) {
    double mean_g = 0.0, mean_gx = 0.0;
    for (int c = 0; c < C; c++) {
        const double g = (double)dout[c] * (double)weight[c], xhat = ((double)x[c] - mean) * rstd;
        mean_g += g;
        mean_gx += g * xhat;
    }
    mean_g /= C;
    mean_gx /= C;
    for (int c = 0; c < C; c++) {
        const double g = (double)dout[c] * (double)weight[c], xhat = ((double)x[c] - mean) * rstd;
        dinp[c] += rstd * (g - mean_g - xhat * mean_gx);
        dweight[c] += (double)dout[c] * xhat;
        dbias[c] += (double)dout[c];
    }
}

// ----------------------------------------------------------------------------------------------------
// Softmax cross-entropy over one row of V logits (the padding beyond V is not part of the row):
//   lse = log sum exp x,  loss = lse - x[target],  dlogit_i = (exp(x_i - lse) - [i == target]) * scale

template <class T> inline double logsumexp_ref(const T* x, int V) {
    double m = -INFINITY;
    for (int i = 0; i < V; i++) m = std::max(m, (double)x[i]);
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += std::exp((double)x[i] - m);
    return m + std::log(sum);
}

// ----------------------------------------------------------------------------------------------------
// AdamW, step t (1-based) of one parameter p with gradient g; m and v are updated, the new p returned:
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
//   p -= lr (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd p)   (decoupled weight decay)

inline double adamw_ref(double p, double g, double* m, double* v, double lr, double beta1, double beta2,
                        double eps, double wd, int t) {
    *m = beta1 * *m + (1.0 - beta1) * g;
    *v = beta2 * *v + (1.0 - beta2) * g * g;
    const double mhat = *m / (1.0 - std::pow(beta1, t)), vhat = *v / (1.0 - std::pow(beta2, t));
    return p - lr * (mhat / (std::sqrt(vhat) + eps) + wd * p);
}

// ----------------------------------------------------------------------------------------------------
// Causal self-attention of qkv (B,T,3C) (q, k, v side by side; NH heads of HS = C / NH channels), and its
// backward for the output gradient dout (B,T,C):
//   S = q k^T / sqrt(HS) with S_ij = -inf for j > i,  P = softmax(S) per row,  out = P v,
//   lse_i = log sum_j exp S_ij (B,NH,T);
//   dP_ij = dO_i . v_j,  D_i = sum_j P_ij dP_ij,  dS_ij = P_ij (dP_ij - D_i) / sqrt(HS),
//   dq = dS k,  dk = dS^T q,  dv = P^T dO,  written to dqkv (B,T,3C) in qkv's layout.
// One (b, h) per OpenMP task, one query row at a time (no T x T matrix is stored).

inline void attention_ref(std::vector<double>& out, std::vector<double>& lse, std::vector<double>& dqkv,
                          const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int NH,
                          int HS) {
    const int C = NH * HS;
    const double scale = 1.0 / std::sqrt((double)HS);
    out.assign((size_t)B * T * C, 0.0);
    lse.assign((size_t)B * NH * T, 0.0);
    dqkv.assign((size_t)B * T * 3 * C, 0.0);
#if defined(_OPENMP) // (the checks built without -fopenmp would warn about the pragma)
#pragma omp parallel for schedule(dynamic)
#endif
    for (int bh = 0; bh < B * NH; bh++) {
        const int b = bh / NH, h = bh % NH;
        // this head's q, k, v, dO as (T, HS) doubles; dq, dk, dv accumulators
        std::vector<double> q((size_t)T * HS), k((size_t)T * HS), v((size_t)T * HS), dO((size_t)T * HS);
        std::vector<double> dq((size_t)T * HS, 0.0), dk((size_t)T * HS, 0.0), dv((size_t)T * HS, 0.0);
        for (int t = 0; t < T; t++) {
            for (int d = 0; d < HS; d++) {
                const size_t row = ((size_t)b * T + t) * 3 * C + h * HS + d;
                q[(size_t)t * HS + d] = qkv[row];
                k[(size_t)t * HS + d] = qkv[row + C];
                v[(size_t)t * HS + d] = qkv[row + 2 * C];
                dO[(size_t)t * HS + d] = dout[((size_t)b * T + t) * C + h * HS + d];
            }
        }
        std::vector<double> p(T), ds(T);
        for (int i = 0; i < T; i++) {
            const double* qi = &q[(size_t)i * HS];
            double mx = -INFINITY;
            for (int j = 0; j <= i; j++) {
                double dot = 0.0;
                for (int d = 0; d < HS; d++) dot += qi[d] * k[(size_t)j * HS + d];
                p[j] = dot * scale;
                mx = std::max(mx, p[j]);
            }
            double sum = 0.0;
            for (int j = 0; j <= i; j++) sum += std::exp(p[j] - mx);
            for (int j = 0; j <= i; j++) p[j] = std::exp(p[j] - mx) / sum;
            lse[(size_t)bh * T + i] = mx + std::log(sum);
            double* oi = &out[((size_t)b * T + i) * C + h * HS];
            for (int j = 0; j <= i; j++)
                for (int d = 0; d < HS; d++) oi[d] += p[j] * v[(size_t)j * HS + d];
            // backward of row i
            const double* doi = &dO[(size_t)i * HS];
            double Di = 0.0;
            for (int j = 0; j <= i; j++) {
                double dot = 0.0;
                for (int d = 0; d < HS; d++) dot += doi[d] * v[(size_t)j * HS + d];
                ds[j] = dot;
                Di += p[j] * dot;
            }
            for (int j = 0; j <= i; j++) {
                ds[j] = p[j] * (ds[j] - Di) * scale;
                for (int d = 0; d < HS; d++) {
                    dq[(size_t)i * HS + d] += ds[j] * k[(size_t)j * HS + d];
                    dk[(size_t)j * HS + d] += ds[j] * qi[d];
                    dv[(size_t)j * HS + d] += p[j] * doi[d];
                }
            }
        }
        for (int t = 0; t < T; t++) {
            for (int d = 0; d < HS; d++) {
                const size_t row = ((size_t)b * T + t) * 3 * C + h * HS + d;
                dqkv[row] = dq[(size_t)t * HS + d];
                dqkv[row + C] = dk[(size_t)t * HS + d];
                dqkv[row + 2 * C] = dv[(size_t)t * HS + d];
            }
        }
    }
}
