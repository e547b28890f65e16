// sim_layers.h: the launchers of llmc/*.cuh with the same names, arguments and semantics (written or
// added into, scratch requirements, shape checks), computed on the CPU. With them train_gpt2.cu and
// test_gpt2.cu compile with g++ and run on a machine without a GPU, which checks the trainer's wiring
// (which buffer feeds which launcher, the recompute modes, gradient accumulation, the optimizer ranges,
// checkpoints and resume) against the PyTorch reference; the kernels themselves are checked on a GPU by
// dev/cuda/*_check. Built with -DENABLE_FP32 (floatX = float) or without (floatX = software bf16).
//
// Precision follows the kernels: inputs read as floatX, math and sums in fp32, ONE rounding to floatX
// where the kernel stores (a matmul output, dweight += partial sum, a LayerNorm weight gradient added once
// per backward, ...), stochastic rounding of the AdamW parameters with the kernels' hash. The order of
// the fp32 sums differs from the GPU's, so results agree with a GPU run to rounding, not to the bit.
// Semantics mirrored from the real headers:
//   matmul_backward: dinp written, dweight and dbias added; a bias gradient needs dbias_scratch
//   layernorm_backward: dinp, dweight, dbias added
//   attention_backward: dqkv written; head size 64 or 128 only, as the flash kernels
//   fused_classifier: losses, and dlogits in place of the logits when write_dlogits
//   encoder_backward: dwte, dwpe added; the device and host token copies must agree
#pragma once

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "llmc/adamw8bit.h"
#include "llmc/cuda_common.h"
#include "llmc/kernel_math.h"
#include "llmc/matmul_cpu.h"

inline std::vector<float> sim_to_float(const floatX* x, size_t n) {
    std::vector<float> out(n);
    for (size_t i = 0; i < n; i++) out[i] = (float)x[i];
    return out;
}

// ----------------------------------------------------------------------------------------------------
// encoder
inline void encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe, int B, int T,
                            int C, cudaStream_t) {
    for (int bt = 0; bt < B * T; bt++) {
        for (int c = 0; c < C; c++) {
            out[(size_t)bt * C + c] =
                (float)wte[(size_t)inp[bt] * C + c] + (float)wpe[(size_t)(bt % T) * C + c];
        }
    }
}
struct EncoderBackwardScratch {
    int max_BT = 0;
};
inline void encoder_backward_scratch_init(EncoderBackwardScratch* s, int max_BT) {
    s->max_BT = max_BT;
}
inline void encoder_backward_scratch_free(EncoderBackwardScratch* s) {
    s->max_BT = 0;
}
// as the kernels: each token's (and position's) sum in fp32, added to the gradient once
inline void encoder_backward(floatX* dwte, floatX* dwpe, const floatX* dout, const int* inp,
                             const int* inp_cpu, EncoderBackwardScratch* scratch, int B, int T, int C,
                             cudaStream_t) {
    if (B * T > scratch->max_BT) fail("encoder_backward: B*T = %d exceeds the scratch", B * T);
    std::vector<int> order(B * T);
    for (int i = 0; i < B * T; i++) {
        if (inp[i] != inp_cpu[i]) fail("encoder_backward: device and host tokens differ at %d", i);
        order[i] = i;
    }
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return inp_cpu[a] < inp_cpu[b]; });
    std::vector<float> acc(C);
    for (int i = 0; i < B * T;) {
        const int token = inp_cpu[order[i]];
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (; i < B * T && inp_cpu[order[i]] == token; i++)
            for (int c = 0; c < C; c++) acc[c] += (float)dout[(size_t)order[i] * C + c];
        for (int c = 0; c < C; c++) dwte[(size_t)token * C + c] += acc[c];
    }
    for (int t = 0; t < T; t++) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) acc[c] += (float)dout[((size_t)b * T + t) * C + c];
        for (int c = 0; c < C; c++) dwpe[(size_t)t * C + c] += acc[c];
    }
}

// ----------------------------------------------------------------------------------------------------
// layernorm
inline void fused_residual_layernorm_forward(floatX* residual_out, floatX* out, float* mean, float* rstd,
                                             const floatX* inp1, const floatX* inp2, const floatX* weight,
                                             const floatX* bias, int N, int C, cudaStream_t) {
    for (int n = 0; n < N; n++) {
        const size_t o = (size_t)n * C;
        const floatX* x = inp1 + o;
        if (inp2 != nullptr) {
            for (int c = 0; c < C; c++) residual_out[o + c] = (float)inp1[o + c] + (float)inp2[o + c];
            x = residual_out + o;
        }
        float m = 0.0f, v = 0.0f;
        for (int c = 0; c < C; c++) m += (float)x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += ((float)x[c] - m) * ((float)x[c] - m);
        const float s = 1.0f / sqrtf(v / C + 1e-5f);
        for (int c = 0; c < C; c++) out[o + c] = ((float)x[c] - m) * s * (float)weight[c] + (float)bias[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = s;
    }
}
inline void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* inp, const floatX* weight,
                              const floatX* bias, int N, int C, cudaStream_t s) {
    fused_residual_layernorm_forward(nullptr, out, mean, rstd, inp, nullptr, weight, bias, N, C, s);
}
inline size_t layernorm_backward_scratch_bytes(int B, int T, int C) {
    return 2 * (size_t)((B * T + 31) / 32) * C * 4;
}
inline void layernorm_backward(floatX* dinp, floatX* dweight, floatX* dbias, float* scratch,
                               const floatX* dout, const floatX* inp, const floatX* weight, const float* mean,
                               const float* rstd, int B, int T, int C, cudaStream_t) {
    if (scratch == nullptr) fail("layernorm_backward: needs scratch");
    std::vector<float> dw(C, 0.0f), db(C, 0.0f);
    for (int n = 0; n < B * T; n++) {
        const size_t o = (size_t)n * C;
        float mg = 0.0f, mgx = 0.0f;
        for (int c = 0; c < C; c++) {
            const float g = (float)dout[o + c] * (float)weight[c],
                        xhat = ((float)inp[o + c] - mean[n]) * rstd[n];
            mg += g, mgx += g * xhat;
        }
        mg /= C, mgx /= C;
        for (int c = 0; c < C; c++) {
            const float g = (float)dout[o + c] * (float)weight[c],
                        xhat = ((float)inp[o + c] - mean[n]) * rstd[n];
            dinp[o + c] = (float)dinp[o + c] + layernorm_dinp_math(g, xhat, rstd[n], mg, mgx);
            dw[c] += (float)dout[o + c] * xhat;
            db[c] += (float)dout[o + c];
        }
    }
    for (int c = 0; c < C; c++) {
        dweight[c] = (float)dweight[c] + dw[c];
        dbias[c] = (float)dbias[c] + db[c];
    }
}

// ---------------------------------------------------------------------------------------------------- gelu
inline void gelu_forward(floatX* out, const floatX* inp, size_t N, cudaStream_t) {
    for (size_t i = 0; i < N; i++) out[i] = gelu_forward_math((float)inp[i]);
}

// ---------------------------------------------------------------------------------------------------- matmul
struct MatmulContext {
    size_t workspace_bytes = 0;
};
inline void matmul_context_init(MatmulContext* ctx) {
    ctx->workspace_bytes = 0;
}
inline void matmul_context_free(MatmulContext*) {}
inline size_t matmul_dbias_scratch_bytes(int BT, int OC) {
    return (size_t)((BT + 63) / 64) * OC * 4;
}

// out (BT,OC) = inp (BT,C) weight (OC,C)^T + bias; with pre_gelu: pre_gelu = that, out = gelu(pre_gelu).
// fp32 products with the CPU trainer's kernels (llmc/matmul_cpu.h), so that a short training run is quick.
inline void matmul_forward(MatmulContext*, floatX* out, const floatX* inp, const floatX* weight,
                           const floatX* bias, int BT, int C, int OC, floatX* pre_gelu, cudaStream_t) {
    if (C % 8 != 0 || OC % 8 != 0) fail("matmul_forward: C = %d and OC = %d must be multiples of 8", C, OC);
    std::vector<float> a = sim_to_float(inp, (size_t)BT * C), w = sim_to_float(weight, (size_t)OC * C), b;
    if (bias) b = sim_to_float(bias, OC);
    std::vector<float> o((size_t)BT * OC);
    matmul_dot_kernel(o.data(), a.data(), w.data(), bias ? b.data() : nullptr, BT, OC, C);
    for (size_t i = 0; i < o.size(); i++) {
        if (pre_gelu) pre_gelu[i] = o[i];
        out[i] = pre_gelu ? gelu_forward_math(o[i]) : o[i];
    }
}
inline void matmul_backward(MatmulContext*, floatX* dinp, floatX* dweight, floatX* dbias, const floatX* dout,
                            const floatX* inp, const floatX* weight, int BT, int C, int OC,
                            const floatX* pre_gelu, float* dbias_scratch, cudaStream_t) {
    if (C % 8 != 0 || OC % 8 != 0) fail("matmul_backward: C = %d and OC = %d must be multiples of 8", C, OC);
    if (dbias != nullptr && dbias_scratch == nullptr) fail("matmul_backward: dbias needs dbias_scratch");
    std::vector<float> d = sim_to_float(dout, (size_t)BT * OC), w = sim_to_float(weight, (size_t)OC * C),
                       a = sim_to_float(inp, (size_t)BT * C);
    std::vector<float> di((size_t)BT * C, 0.0f), dw((size_t)OC * C, 0.0f);
    matmul_axpy_kernel(di.data(), C, d.data(), /*a_row=*/OC, /*a_col=*/1, w.data(), 16, C, BT, C, OC);
    for (size_t i = 0; i < di.size(); i++) {
        dinp[i] = pre_gelu ? di[i] * gelu_backward_math((float)pre_gelu[i]) : di[i]; // written, not added
    }
    matmul_axpy_kernel(dw.data(), C, d.data(), /*a_row=*/1, /*a_col=*/OC, a.data(), 16, C, OC, C, BT);
    for (size_t i = 0; i < dw.size(); i++) dweight[i] = (float)dweight[i] + dw[i];
    if (dbias)
        for (int o = 0; o < OC; o++) {
            float sum = 0.0f;
            for (int r = 0; r < BT; r++) sum += d[(size_t)r * OC + o];
            dbias[o] = (float)dbias[o] + sum;
        }
}

// ----------------------------------------------------------------------------------------------------
// attention
inline void attention_check_hs(int HS, const char* who) {
    if (HS != 64 && HS != 128) fail("%s: head size HS=%d is not supported (64 or 128)", who, HS);
}
inline size_t attention_backward_scratch_bytes(int B, int T, int NH, int) {
    return (size_t)B * NH * T * 4;
}

// qkv (B,T,3C) -> out (B,T,C), lse (B,NH,T)
inline void attention_forward(floatX* out, float* lse, const floatX* qkv_x, int B, int T, int NH, int HS,
                              cudaStream_t) {
    attention_check_hs(HS, "attention_forward");
    const int C = NH * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    const std::vector<float> qkv = sim_to_float(qkv_x, (size_t)B * T * 3 * C);
    std::vector<float> s(T), o(HS);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const float* q = qkv.data() + ((size_t)b * T + i) * 3 * C + h * HS;
                float m = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    const float* k = qkv.data() + ((size_t)b * T + j) * 3 * C + C + h * HS;
                    float d = 0.0f;
                    for (int e = 0; e < HS; e++) d += q[e] * k[e];
                    s[j] = d * scale;
                    m = fmaxf(m, s[j]);
                }
                float sum = 0.0f;
                for (int j = 0; j <= i; j++) sum += expf(s[j] - m);
                const float l = m + logf(sum);
                lse[((size_t)b * NH + h) * T + i] = l;
                std::fill(o.begin(), o.end(), 0.0f);
                for (int j = 0; j <= i; j++) {
                    const float* v = qkv.data() + ((size_t)b * T + j) * 3 * C + 2 * C + h * HS;
                    const float p = expf(s[j] - l);
                    for (int e = 0; e < HS; e++) o[e] += p * v[e];
                }
                for (int e = 0; e < HS; e++) out[((size_t)b * T + i) * C + h * HS + e] = o[e];
            }
}

// dout (B,T,C) -> dqkv (B,T,3C), written; P recomputed from q, k and lse, D_i = dO_i . O_i
inline void attention_backward(floatX* dqkv_x, const floatX* dout_x, const floatX* qkv_x, const floatX* out_x,
                               const float* lse, void* scratch, int B, int T, int NH, int HS, cudaStream_t) {
    attention_check_hs(HS, "attention_backward");
    if (scratch == nullptr) fail("attention_backward: needs scratch");
    const int C = NH * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    const size_t BT = (size_t)B * T;
    const std::vector<float> qkv = sim_to_float(qkv_x, BT * 3 * C), dout = sim_to_float(dout_x, BT * C),
                             out = sim_to_float(out_x, BT * C);
    std::vector<float> dqkv(BT * 3 * C, 0.0f);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const size_t row = (size_t)b * T + i;
                const float* q = qkv.data() + row * 3 * C + h * HS;
                const float* dO = dout.data() + row * C + h * HS;
                const float* O = out.data() + row * C + h * HS;
                float D = 0.0f;
                for (int e = 0; e < HS; e++) D += dO[e] * O[e];
                const float l = lse[((size_t)b * NH + h) * T + i];
                for (int j = 0; j <= i; j++) {
                    const size_t rj = (size_t)b * T + j;
                    const float* k = qkv.data() + rj * 3 * C + C + h * HS;
                    const float* v = qkv.data() + rj * 3 * C + 2 * C + h * HS;
                    float sdot = 0.0f, dp = 0.0f;
                    for (int e = 0; e < HS; e++) sdot += q[e] * k[e], dp += dO[e] * v[e];
                    const float p = expf(sdot * scale - l);
                    const float ds = p * (dp - D) * scale;
                    float* dq = dqkv.data() + row * 3 * C + h * HS;
                    float* dk = dqkv.data() + rj * 3 * C + C + h * HS;
                    float* dv = dqkv.data() + rj * 3 * C + 2 * C + h * HS;
                    for (int e = 0; e < HS; e++) {
                        dq[e] += ds * k[e];
                        dk[e] += ds * q[e];
                        dv[e] += p * dO[e];
                    }
                }
            }
    for (size_t i = 0; i < dqkv.size(); i++) dqkv_x[i] = dqkv[i];
}

// ----------------------------------------------------------------------------------------------------
// classifier
inline void fused_classifier(floatX* logits, float* losses, const int* targets, float dloss_scale, int BT,
                             int V, int Vp, bool write_dlogits, cudaStream_t) {
    for (int r = 0; r < BT; r++) {
        floatX* x = logits + (size_t)r * Vp;
        SoftmaxState s = softmax_state_init();
        for (int i = 0; i < V; i++) s = softmax_state_update(s, (float)x[i]);
        const int y = targets[r];
        losses[r] = (y >= 0 && y < V) ? s.max + logf(s.sum) - (float)x[y] : NAN;
        if (write_dlogits) {
            for (int i = 0; i < Vp; i++) x[i] = classifier_dlogit((float)x[i], i, y, V, s, dloss_scale);
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// optimizer the kernels' per-step seed and per-element stochastic rounding (llmc/adamw.cuh)
inline floatX sim_round_stochastic(float x, uint32_t random) {
#if defined(ENABLE_FP32)
    (void)random;
    return x;
#else
    floatX out;
    out.bits = float_to_bf16_bits_stochastic(x, random);
    return out;
#endif
}
template <class GradT>
void adamw_update(floatX* params, float* master_fp32, const GradT* grads, float* m, float* v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale, int t,
                  unsigned int seed, cudaStream_t) {
    if (t < 1) fail("adamw_update: step t = %d must start at 1", t);
#if !defined(ENABLE_FP32)
    if (master_fp32 == nullptr) fail("adamw_update: the bf16 build needs the fp32 master weights");
#endif
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    const uint32_t step_seed = hash_mix32(seed ^ hash_mix32((uint32_t)t));
    for (size_t i = 0; i < n; i++) {
        float p = master_fp32 ? master_fp32[i] : (float)params[i];
        p = adamw_step_math(p, grad_scale * (float)grads[i], &m[i], &v[i], lr, beta1, beta2, bc1, bc2, eps,
                            weight_decay);
        if (master_fp32) master_fp32[i] = p;
        params[i] = sim_round_stochastic(p, random_u32(step_seed, i));
    }
}
constexpr int ADAMW8BIT_MAX_BLOCK = 4096;
inline void adamw8bit_update_cuda(float* param, floatX* param_x, const float* grad, uint8_t* m_codes,
                                  float* m_absmax, uint8_t* v_codes, float* v_absmax, size_t n,
                                  int block_size, float lr, float beta1, float beta2, float eps,
                                  float weight_decay, int t, cudaStream_t) {
    adamw8bit_update(param, grad, m_codes, m_absmax, v_codes, v_absmax, n, block_size, lr, beta1, beta2, eps,
                     weight_decay, t);
    if (param_x != nullptr)
        for (size_t i = 0; i < n; i++) param_x[i] = param[i];
}
inline void accumulate_grads_fp32(float* acc, const floatX* g, size_t n, cudaStream_t) {
    for (size_t i = 0; i < n; i++) acc[i] += (float)g[i];
}
inline size_t global_norm_scratch_bytes(size_t) {
    return 1024 * sizeof(float);
}
template <class T> void global_norm_squared(float* out, const T* g, size_t n, float* scratch, cudaStream_t) {
    if (scratch == nullptr) fail("global_norm_squared: needs scratch");
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)(float)g[i] * (double)(float)g[i];
    *out = (float)sum;
}

// ----------------------------------------------------------------------------------------------------
// processes. One process (comm null): every collective is the single-process no-op or copy of
// nccl_gpu.cuh. Several simulated processes are threads sharing a SimComm: each collective posts its
// buffer, waits for all, and rank 0 reduces in rank order (deterministic), as a stand-in for NCCL.
struct SimComm {
    int n = 1;
    std::mutex mu;
    std::condition_variable cv;
    int waiting = 0;
    long generation = 0;
    std::vector<void*> bufs;
    std::vector<float> tmp;
    explicit SimComm(int num) : n(num), bufs(num) {}
    void barrier() {
        std::unique_lock<std::mutex> lock(mu);
        long gen = generation;
        if (++waiting == n) {
            waiting = 0;
            generation++;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != gen; });
        }
    }
};
struct MultiGpuConfig {
    int process_rank = 0, num_processes = 1, local_device_idx = 0;
    SimComm* comm = nullptr;
};
inline MultiGpuConfig multi_gpu_config_init(int*, char***, const char*, const char*, const char*, int, int,
                                            int) {
    return MultiGpuConfig{};
}
inline void multi_gpu_config_free(MultiGpuConfig*) {}
inline void multi_gpu_sync(MultiGpuConfig*, cudaStream_t) {}
inline void multi_gpu_wait(MultiGpuConfig*, cudaStream_t, double) {}
inline void multi_gpu_barrier(MultiGpuConfig* c, double) {
    if (c->comm) c->comm->barrier();
}
// buf (count) of every rank <- sum over ranks (or the mean), fp32 buffers only (all the trainer reduces)
inline void sim_allreduce(MultiGpuConfig* c, float* buf, size_t count, bool average) {
    SimComm* m = c->comm;
    m->bufs[c->process_rank] = buf;
    m->barrier();
    if (c->process_rank == 0) {
        m->tmp.assign(count, 0.0f);
        for (int r = 0; r < m->n; r++)
            for (size_t i = 0; i < count; i++) m->tmp[i] += ((float*)m->bufs[r])[i];
        if (average)
            for (float& x : m->tmp) x /= m->n;
    }
    m->barrier();
    memcpy(buf, m->tmp.data(), count * sizeof(float));
    m->barrier();
}
inline float multi_gpu_sum_host(MultiGpuConfig* c, float value, double) {
    if (c->comm) sim_allreduce(c, &value, 1, false);
    return value;
}
template <class T> void multi_gpu_allreduce_avg(MultiGpuConfig* c, cudaStream_t, T* buf, size_t count) {
    if (c->comm) sim_allreduce(c, buf, count, true);
}
template <class T> void multi_gpu_allreduce_sum(MultiGpuConfig* c, cudaStream_t, T* buf, size_t count) {
    if (c->comm) sim_allreduce(c, buf, count, false);
}
// recv (n) <- sum (or mean) over ranks of send[rank*n, (rank+1)*n); recv may be send + rank*n
template <class T>
void multi_gpu_reduce_scatter(MultiGpuConfig* c, cudaStream_t, const T* send, T* recv, size_t n,
                              bool average) {
    if (!c->comm) {
        if (recv != send) memmove((void*)recv, (const void*)send, n * sizeof(T));
        return;
    }
    SimComm* m = c->comm;
    m->bufs[c->process_rank] = (void*)send;
    m->barrier();
    if (c->process_rank == 0) {
        m->tmp.assign(n * m->n, 0.0f);
        for (int r = 0; r < m->n; r++)
            for (size_t i = 0; i < n * m->n; i++) m->tmp[i] += ((const float*)m->bufs[r])[i];
        if (average)
            for (float& x : m->tmp) x /= m->n;
    }
    m->barrier();
    memcpy((void*)recv, m->tmp.data() + (size_t)c->process_rank * n, n * sizeof(float));
    m->barrier();
}
// recv (num_processes * n) <- every rank's send (n), slice r from rank r; send may be recv + rank*n
template <class T>
void multi_gpu_all_gather(MultiGpuConfig* c, cudaStream_t, const T* send, T* recv, size_t n) {
    if (!c->comm) {
        if (recv != send) memmove((void*)recv, (const void*)send, n * sizeof(T));
        return;
    }
    SimComm* m = c->comm;
    m->bufs[c->process_rank] = (void*)send;
    m->barrier();
    for (int r = 0; r < m->n; r++) {
        if (r != c->process_rank) memcpy((void*)(recv + (size_t)r * n), m->bufs[r], n * sizeof(T));
    }
    m->barrier();
}
