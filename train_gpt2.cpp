/*
GPT-2 training on the CPU, in fp32: the reference implementation of this project.

Everything the GPU trainer does is tested against this file, and it is meant to be read top to bottom once:
  1. each layer's forward and backward pass, side by side (encoder, layernorm, matmul, attention, GELU,
     residual, softmax + cross-entropy), with the math in the comments;
  2. the model: parameters and activations as named slices of one buffer each, carved by a table of sizes;
  3. forward, backward, the AdamW update (with global-norm clipping, weight decay on matrices only, and the
     data-parallel / ZeRO-1 sharding when run under mpirun);
  4. sampling, checkpoints and resume;
  5. main: flags, the training loop.
Shapes: B batch, T sequence length, C channels, NH heads, hs = C/NH head size, V vocab, Vp padded vocab,
L layers, OC output channels of a matmul, BT = B*T.
*/
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <chrono>
#include <omp.h>

#include "llmc/utils.h"
#include "llmc/checkpoint.h"
#include "llmc/matmul_cpu.h"
#include "llmc/rand.h"
#include "llmc/dataloader.h"
#include "llmc/schedulers.h"
#include "llmc/sampler.h"
#include "llmc/logger.h"
#include "llmc/tokenizer.h"
#include "llmc/zero.h"
#include "llmc/mpi_cpu.h"
#include "llmc/adamw8bit.h"
#include "llmc/train_config.h"
#include "llmc/state_file.h"

// ----------------------------------------------------------------------------------------------------
// 1. layers: forward and backward
// Backward functions ADD into their gradient outputs (+=): gradients of shared tensors (the residual
// stream, the tied token embedding) and of successive micro-steps accumulate.

// encoder: out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
// inp (B,T) token ids, wte (Vp,C), wpe (maxT,C) -> out (B,T,C)
void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float* out_bt = out + ((size_t)b * T + t) * C;
            const float* wte_ix = wte + (size_t)inp[b * T + t] * C;
            const float* wpe_t = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) out_bt[i] = wte_ix[i] + wpe_t[i];
        }
    }
}

// dwte[inp[b,t],:] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:]
// Serial over (b,t): a token repeated in the batch adds to the same row, so a parallel loop would race.
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float* dout_bt = dout + ((size_t)b * T + t) * C;
            float* dwte_ix = dwte + (size_t)inp[b * T + t] * C;
            float* dwpe_t = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++) {
                dwte_ix[i] += dout_bt[i];
                dwpe_t[i] += dout_bt[i];
            }
        }
    }
}

// layernorm over the C channels of each position:
//   mean = sum(x)/C, var = sum((x-mean)^2)/C (biased), rstd = 1/sqrt(var + 1e-5)
//   out = (x - mean) * rstd * weight + bias
// inp (B,T,C), weight (C), bias (C) -> out (B,T,C), mean (B,T), rstd (B,T) (kept for the backward)
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int B, int T, int C) {
    const float eps = 1e-5f;
#pragma omp parallel for
    for (int bt = 0; bt < B * T; bt++) {
        const float* x = inp + (size_t)bt * C;
        float m = 0.0f;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        float v = 0.0f;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        v /= C;
        float s = 1.0f / sqrtf(v + eps);
        float* o = out + (size_t)bt * C;
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * weight[i] + bias[i];
        mean[bt] = m;
        rstd[bt] = s;
    }
}

// With norm = (x - mean) * rstd and dnorm = dout * weight:
//   dbias += dout, dweight += dout * norm
//   dx += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int B, int T, int C) {
    const int N = B * T;
#pragma omp parallel for
    for (int bt = 0; bt < N; bt++) {
        const float* dout_bt = dout + (size_t)bt * C;
        const float* x = inp + (size_t)bt * C;
        float* dx = dinp + (size_t)bt * C;
        float m = mean[bt], s = rstd[bt];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * dout_bt[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * dout_bt[i];
            dx[i] += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
        }
    }
    // the parameter gradients sum over all positions: parallel over channels, so no two threads share a sum
#pragma omp parallel for
    for (int i = 0; i < C; i++) {
        float dw = 0.0f, db = 0.0f;
        for (int bt = 0; bt < N; bt++) {
            float d = dout[(size_t)bt * C + i];
            db += d;
            dw += d * (inp[(size_t)bt * C + i] - mean[bt]) * rstd[bt];
        }
        dweight[i] += dw;
        dbias[i] += db;
    }
}

// matmul: out = inp . weight^T + bias
// inp (B,T,C), weight (OC,C), bias (OC) or null -> out (B,T,OC). The kernels are in llmc/matmul_cpu.h.
// For a batch of many rows the weight is first packed into scratch as contiguous 16-column strips of
// weight^T (one pass over it, a small fraction of the matmul's work), so the forward runs the same
// broadcast-form register tile as the backward, the faster of the two kernels; a few rows (sampling) use
// the dot-product kernel directly.
// packed (OC*C floats) receives the packed weight, or already holds it when packed_ready (the classifier
// reuses its packed wte until the next update).
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C,
                    int OC, float* packed, bool packed_ready) {
    const int BT = B * T;
    if (BT < 64) {
        matmul_dot_kernel(out, inp, weight, bias, BT, OC, C);
        return;
    }
    if (!packed_ready) pack_weight_strips(packed, weight, OC, C);
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        float* o = out + (size_t)bt * OC;
        for (int i = 0; i < OC; i++) o[i] = bias ? bias[i] : 0.0f;
    }
    matmul_axpy_kernel(out, OC, inp, /*a_row=*/C, /*a_col=*/1, packed, /*strip_stride=*/(size_t)C * 16, 16,
                       BT, OC, C);
}

// dinp += dout . weight      (BT,OC).(OC,C)     weight packed into 16-column strips first (see above)
// dweight += dout^T . inp    (OC,BT).(BT,C)     inp packed the same way
// dbias += column sums of dout
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC, float* scratch) {
    const int BT = B * T;
    pack_column_strips(scratch, weight, OC, C);
    matmul_axpy_kernel(dinp, C, dout, /*a_row=*/OC, /*a_col=*/1, scratch, /*strip_stride=*/(size_t)OC * 16,
                       16, BT, C, OC);
    pack_column_strips(scratch, inp, BT, C); // the same for inp, now that the packed weight is used up
    matmul_axpy_kernel(dweight, C, dout, /*a_row=*/1, /*a_col=*/OC, scratch, /*strip_stride=*/(size_t)BT * 16,
                       16, OC, C, BT);
    if (dbias != nullptr) {
#pragma omp parallel for
        for (int o = 0; o < OC; o++) {
            float sum = 0.0f;
            for (int bt = 0; bt < BT; bt++) sum += dout[(size_t)bt * OC + o];
            dbias[o] += sum;
        }
    }
}

// causal multi-head self-attention
// inp (B,T,3C) holds q, k, v for each position (each (NH,hs)); per head h and query position t:
//   score[t2] = q_t . k_t2 / sqrt(hs) for t2 <= t   (causal: a position sees only itself and the past)
//   att[t2]   = softmax(score)[t2]                  (stored (B,NH,T,T), zero above the diagonal)
//   out_t     = sum_t2 att[t2] * v_t2               -> out (B,T,C), heads concatenated
void attention_forward(float* out, float* att, const float* inp, int B, int T, int C, int NH) {
    const int C3 = 3 * C, hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float* q = inp + ((size_t)b * T + t) * C3 + h * hs;
                float* att_row = att + (((size_t)b * NH + h) * T + t) * T;
                float maxval = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* k = inp + ((size_t)b * T + t2) * C3 + C + h * hs;
                    float s = 0.0f;
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    s *= scale;
                    att_row[t2] = s;
                    maxval = fmaxf(maxval, s);
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    att_row[t2] = expf(att_row[t2] - maxval);
                    sum += att_row[t2];
                }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 < T; t2++) att_row[t2] = (t2 <= t) ? att_row[t2] * inv : 0.0f;
                float* o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* v = inp + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) o[i] += att_row[t2] * v[i];
                }
            }
        }
    }
}

// Backward, per head and query position t, with d = dout_t:
//   datt[t2]  = d . v_t2                      dv_t2 += att[t2] * d
//   dscore[t2] = att[t2] * (datt[t2] - sum_t3 att[t3] * datt[t3])      (softmax backward)
//   dq_t += scale * sum_t2 dscore[t2] k_t2    dk_t2 += scale * dscore[t2] q_t
// Parallel over (b, h) only: every query position t adds into the k and v gradients of all t2 <= t.
void attention_backward(float* dinp, const float* dout, const float* inp, const float* att, int B, int T,
                        int C, int NH) {
    const int C3 = 3 * C, hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel
    {
        std::vector<float> datt(T);
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                for (int t = 0; t < T; t++) {
                    const float* att_row = att + (((size_t)b * NH + h) * T + t) * T;
                    const float* d = dout + ((size_t)b * T + t) * C + h * hs;
                    const float* q = inp + ((size_t)b * T + t) * C3 + h * hs;
                    float* dq = dinp + ((size_t)b * T + t) * C3 + h * hs;
                    float dot = 0.0f; // sum_t3 att[t3] * datt[t3]
                    for (int t2 = 0; t2 <= t; t2++) {
                        const float* v = inp + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                        float* dv = dinp + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                        float s = 0.0f;
                        for (int i = 0; i < hs; i++) {
                            s += d[i] * v[i];
                            dv[i] += att_row[t2] * d[i];
                        }
                        datt[t2] = s;
                        dot += att_row[t2] * s;
                    }
                    for (int t2 = 0; t2 <= t; t2++) {
                        const float* k = inp + ((size_t)b * T + t2) * C3 + C + h * hs;
                        float* dk = dinp + ((size_t)b * T + t2) * C3 + C + h * hs;
                        float dscore = att_row[t2] * (datt[t2] - dot) * scale;
                        for (int i = 0; i < hs; i++) {
                            dq[i] += dscore * k[i];
                            dk[i] += dscore * q[i];
                        }
                    }
                }
            }
        }
    }
}

// GELU, tanh approximation: gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
#define GELU_SCALING_FACTOR 0.7978845608028654f // sqrt(2/pi)
// tanh through one exp, tanh(u) = 1 - 2 / (exp(2u) + 1): glibc's expf is several times faster than its
// tanhf, and the absolute error (~1e-7) is below what 1 + tanh(u) resolves in fp32 anyway.
static inline float tanh_via_exp(float u) {
    return 1.0f - 2.0f / (expf(2.0f * u) + 1.0f);
}
void gelu_forward(float* out, const float* inp, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float u = GELU_SCALING_FACTOR * (x + 0.044715f * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanh_via_exp(u));
    }
}

// gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float u = GELU_SCALING_FACTOR * (x + 0.044715f * x * x * x);
        float th = tanh_via_exp(u);
        float du_dx = GELU_SCALING_FACTOR * (1.0f + 3.0f * 0.044715f * x * x);
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du_dx;
        dinp[i] += grad * dout[i];
    }
}

// residual: out = inp1 + inp2; the gradient flows unchanged into both inputs
void residual_forward(float* out, const float* inp1, const float* inp2, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = inp1[i] + inp2[i];
}
void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        dinp1[i] += dout[i];
        dinp2[i] += dout[i];
    }
}

// softmax over the V real tokens of each position; the padded columns V..Vp-1 get probability 0
// logits (B,T,Vp) -> probs (B,T,Vp)
void softmax_forward(float* probs, const float* logits, int B, int T, int V, int Vp) {
#pragma omp parallel for
    for (int bt = 0; bt < B * T; bt++) {
        const float* z = logits + (size_t)bt * Vp;
        float* p = probs + (size_t)bt * Vp;
        float maxval = -INFINITY;
        for (int i = 0; i < V; i++) maxval = fmaxf(maxval, z[i]);
        float sum = 0.0f;
        for (int i = 0; i < V; i++) {
            p[i] = expf(z[i] - maxval);
            sum += p[i];
        }
        for (int i = 0; i < V; i++) p[i] /= sum;
        for (int i = V; i < Vp; i++) p[i] = 0.0f;
    }
}

// losses[b,t] = -log probs[b,t,targets[b,t]]
void crossentropy_forward(float* losses, const float* probs, const int* targets, int B, int T, int Vp) {
    for (int bt = 0; bt < B * T; bt++) losses[bt] = -logf(probs[(size_t)bt * Vp + targets[bt]]);
}

// d loss / d logits[i] = (probs[i] - [i == target]) * dloss, where dloss = d(mean loss)/d(loss[b,t]),
// for the V real columns; the padded columns get no gradient.
void crossentropy_softmax_backward(float* dlogits, const float* probs, const int* targets, float dloss, int B,
                                   int T, int V, int Vp) {
#pragma omp parallel for
    for (int bt = 0; bt < B * T; bt++) {
        float* dz = dlogits + (size_t)bt * Vp;
        const float* p = probs + (size_t)bt * Vp;
        int target = targets[bt];
        for (int i = 0; i < V; i++) dz[i] += (p[i] - (i == target ? 1.0f : 0.0f)) * dloss;
    }
}

// ----------------------------------------------------------------------------------------------------
// 2. the model

// Named slices of the one parameter buffer, in checkpoint order (llmc/checkpoint.h has the sizes).
struct ParameterTensors {
    float* wte;      // (Vp, C)
    float* wpe;      // (maxT, C)
    float* ln1w;     // (L, C)
    float* ln1b;     // (L, C)
    float* qkvw;     // (L, 3C, C)
    float* qkvb;     // (L, 3C)
    float* attprojw; // (L, C, C)
    float* attprojb; // (L, C)
    float* ln2w;     // (L, C)
    float* ln2b;     // (L, C)
    float* fcw;      // (L, 4C, C)
    float* fcb;      // (L, 4C)
    float* fcprojw;  // (L, C, 4C)
    float* fcprojb;  // (L, C)
    float* lnfw;     // (C)
    float* lnfb;     // (C)
};
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// Carve a buffer into the 16 tensors.
void point_parameters(ParameterTensors* p, float* memory, const size_t sizes[NUM_PARAMETER_TENSORS]) {
    float** ptrs = (float**)p;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        ptrs[i] = memory;
        memory += sizes[i];
    }
}

// Activations saved by the forward pass for the backward pass, again named slices of one buffer.
constexpr int NUM_ACTIVATION_TENSORS = 21;
struct ActivationTensors {
    float* encoded;   // (B, T, C)
    float* ln1;       // (L, B, T, C)
    float* ln1_mean;  // (L, B, T)
    float* ln1_rstd;  // (L, B, T)
    float* qkv;       // (L, B, T, 3C)
    float* atty;      // (L, B, T, C)
    float* att;       // (L, B, NH, T, T)
    float* attproj;   // (L, B, T, C)
    float* residual2; // (L, B, T, C)
    float* ln2;       // (L, B, T, C)
    float* ln2_mean;  // (L, B, T)
    float* ln2_rstd;  // (L, B, T)
    float* fch;       // (L, B, T, 4C)
    float* fch_gelu;  // (L, B, T, 4C)
    float* fcproj;    // (L, B, T, C)
    float* residual3; // (L, B, T, C)
    float* lnf;       // (B, T, C)
    float* lnf_mean;  // (B, T)
    float* lnf_rstd;  // (B, T)
    float* logits;    // (B, T, Vp)
    float* probs;     // (B, T, Vp)
};
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");

void activation_sizes(size_t sizes[NUM_ACTIVATION_TENSORS], const GPT2Config& c, size_t B, size_t T) {
    size_t C = c.channels, NH = c.num_heads, L = c.num_layers, Vp = c.padded_vocab_size;
    size_t i = 0;
    sizes[i++] = B * T * C;          // encoded
    sizes[i++] = L * B * T * C;      // ln1
    sizes[i++] = L * B * T;          // ln1_mean
    sizes[i++] = L * B * T;          // ln1_rstd
    sizes[i++] = L * B * T * 3 * C;  // qkv
    sizes[i++] = L * B * T * C;      // atty
    sizes[i++] = L * B * NH * T * T; // att
    sizes[i++] = L * B * T * C;      // attproj
    sizes[i++] = L * B * T * C;      // residual2
    sizes[i++] = L * B * T * C;      // ln2
    sizes[i++] = L * B * T;          // ln2_mean
    sizes[i++] = L * B * T;          // ln2_rstd
    sizes[i++] = L * B * T * 4 * C;  // fch
    sizes[i++] = L * B * T * 4 * C;  // fch_gelu
    sizes[i++] = L * B * T * C;      // fcproj
    sizes[i++] = L * B * T * C;      // residual3
    sizes[i++] = B * T * C;          // lnf
    sizes[i++] = B * T;              // lnf_mean
    sizes[i++] = B * T;              // lnf_rstd
    sizes[i++] = B * T * Vp;         // logits
    sizes[i++] = B * T * Vp;         // probs
}

void point_activations(ActivationTensors* a, float* memory, const size_t sizes[NUM_ACTIVATION_TENSORS]) {
    float** ptrs = (float**)a;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) {
        ptrs[i] = memory;
        memory += sizes[i];
    }
}

struct GPT2 {
    GPT2Config config;
    size_t param_sizes[NUM_PARAMETER_TENSORS];
    size_t num_parameters;
    size_t num_parameters_padded;   // >= num_parameters: equal slices per process (llmc/zero.h)
    float* params_memory = nullptr; // (num_parameters_padded) fp32, the padding zero
    ParameterTensors params;
    float* grads_memory = nullptr; // (num_parameters_padded) fp32, accumulated over micro-steps
    ParameterTensors grads;
    // activations, sized for batch_size x seq_len; the forward may run on smaller B, T (sampling)
    size_t act_sizes[NUM_ACTIVATION_TENSORS];
    size_t num_activations = 0;
    float* acts_memory = nullptr;
    ActivationTensors acts;
    float* grads_acts_memory = nullptr;
    ActivationTensors grads_acts;
    int batch_size = 0, seq_len = 0;
    // inputs of the last forward
    std::vector<int> inputs, targets;
    float* matmul_scratch = nullptr; // (max(Vp*C, 4C*C, B*T*4C)) a packed weight or input of a matmul
    float* wte_packed = nullptr;     // (Vp*C) wte packed for the classifier's forward
    int param_version = 1;           // incremented by every update
    int wte_packed_version = 0;      // the param_version wte_packed was made from
    float* losses = nullptr;         // (B, T) per-position loss of the last forward
    float mean_loss = -1.0f;         // mean over (B, T), or -1 when the forward ran without targets
};

void gpt2_allocate_parameters(GPT2* model) {
    gpt2_parameter_sizes(model->config, model->param_sizes);
    model->num_parameters = gpt2_num_parameters(model->config);
    model->num_parameters_padded = model->num_parameters;
    model->params_memory = (float*)calloc_check(model->num_parameters, sizeof(float), "parameters");
    point_parameters(&model->params, model->params_memory, model->param_sizes);
}

// Load an llm.c model file (fp32 v3 or bf16 v5).
void gpt2_build_from_checkpoint(GPT2* model, const char* path) {
    int version;
    checkpoint_read_header(path, &model->config, &version);
    gpt2_allocate_parameters(model);
    checkpoint_read_parameters(path, version, model->params_memory, model->num_parameters);
}

// A fresh model: weights ~ N(0, 0.02); the two projections into the residual stream (attprojw, fcprojw)
// get std 0.02/sqrt(2L) so the residual stream's variance does not grow with depth; biases 0, LayerNorm
// weights 1; padded vocabulary rows 0. Seeded: the same seed gives the same model.
void gpt2_build_from_random(GPT2* model, const GPT2Config& config, uint64_t seed) {
    model->config = config;
    gpt2_allocate_parameters(model);
    Rng rng;
    rng_init(&rng, seed);
    const size_t C = config.channels, V = config.vocab_size;
    const float residual_std = 0.02f / sqrtf(2.0f * config.num_layers);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        float* p = ((float**)&model->params)[i];
        size_t n = model->param_sizes[i];
        if (i == 2 || i == 8 || i == 14) { // ln1w, ln2w, lnfw
            for (size_t j = 0; j < n; j++) p[j] = 1.0f;
        } else if (parameter_is_matrix(i)) {
            float std = (i == 6 || i == 12) ? residual_std : 0.02f;
            size_t fill = (i == 0) ? V * C : n; // wte: only the real vocabulary rows
            rng_fill_normal(&rng, p, fill, 0.0f, std);
        } // biases stay 0 (calloc)
    }
}

void gpt2_allocate_training_state(GPT2* model, int B, int T) {
    const GPT2Config& c = model->config;
    model->batch_size = B;
    model->seq_len = T;
    activation_sizes(model->act_sizes, c, B, T);
    model->num_activations = 0;
    for (size_t s : model->act_sizes) model->num_activations += s;
    model->acts_memory = (float*)malloc_check(model->num_activations * sizeof(float), "activations");
    point_activations(&model->acts, model->acts_memory, model->act_sizes);
    model->grads_acts_memory =
        (float*)calloc_check(model->num_activations, sizeof(float), "activation gradients");
    point_activations(&model->grads_acts, model->grads_acts_memory, model->act_sizes);
    model->grads_memory = (float*)calloc_check(model->num_parameters_padded, sizeof(float), "gradients");
    point_parameters(&model->grads, model->grads_memory, model->param_sizes);
    model->losses = (float*)malloc_check((size_t)B * T * sizeof(float), "losses");
    const size_t C = c.channels, Vp = c.padded_vocab_size;
    model->matmul_scratch = (float*)malloc_check(
        std::max({Vp * C, 4 * C * C, (size_t)B * T * 4 * C}) * sizeof(float), "matmul scratch");
    model->wte_packed = (float*)malloc_check(Vp * C * sizeof(float), "packed wte");
    model->inputs.resize((size_t)B * T);
    model->targets.resize((size_t)B * T);
}

void gpt2_free(GPT2* model) {
    free(model->params_memory);
    free(model->grads_memory);
    free(model->acts_memory);
    free(model->grads_acts_memory);
    free(model->losses);
    free(model->matmul_scratch);
    free(model->wte_packed);
}

// ----------------------------------------------------------------------------------------------------
// 3. forward, backward, update

// Forward pass over inputs (B,T); with targets, also the loss. B, T may be smaller than allocated.
void gpt2_forward(GPT2* model, const int* inputs, const int* targets, int B, int T) {
    const GPT2Config& cfg = model->config;
    const int V = cfg.vocab_size, Vp = cfg.padded_vocab_size, L = cfg.num_layers, NH = cfg.num_heads,
              C = cfg.channels;
    if (B > model->batch_size || T > model->seq_len) {
        fail("forward with B=%d T=%d exceeds the allocated B=%d T=%d", B, T, model->batch_size,
             model->seq_len);
    }
    for (int i = 0; i < B * T; i++) {
        if (inputs[i] < 0 || inputs[i] >= V)
            fail("input token %d at position %d is outside [0, %d)", inputs[i], i, V);
        if (targets && (targets[i] < 0 || targets[i] >= V)) {
            fail("target token %d at position %d is outside [0, %d)", targets[i], i, V);
        }
    }
    memcpy(model->inputs.data(), inputs, (size_t)B * T * sizeof(int));
    if (targets) memcpy(model->targets.data(), targets, (size_t)B * T * sizeof(int));

    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    const size_t BTC = (size_t)B * T * C;
    encoder_forward(a.encoded, inputs, p.wte, p.wpe, B, T, C);
    for (int l = 0; l < L; l++) {
        const float* residual = (l == 0) ? a.encoded : a.residual3 + (size_t)(l - 1) * BTC;
        float* ln1 = a.ln1 + l * BTC;
        float* ln1_mean = a.ln1_mean + (size_t)l * B * T;
        float* ln1_rstd = a.ln1_rstd + (size_t)l * B * T;
        float* qkv = a.qkv + l * BTC * 3;
        float* atty = a.atty + l * BTC;
        float* att = a.att + (size_t)l * B * NH * T * T;
        float* attproj = a.attproj + l * BTC;
        float* residual2 = a.residual2 + l * BTC;
        float* ln2 = a.ln2 + l * BTC;
        float* ln2_mean = a.ln2_mean + (size_t)l * B * T;
        float* ln2_rstd = a.ln2_rstd + (size_t)l * B * T;
        float* fch = a.fch + l * BTC * 4;
        float* fch_gelu = a.fch_gelu + l * BTC * 4;
        float* fcproj = a.fcproj + l * BTC;
        float* residual3 = a.residual3 + l * BTC;
        const size_t lC = (size_t)l * C;
        layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, p.ln1w + lC, p.ln1b + lC, B, T, C);
        matmul_forward(qkv, ln1, p.qkvw + lC * 3 * C, p.qkvb + lC * 3, B, T, C, 3 * C, model->matmul_scratch,
                       false);
        attention_forward(atty, att, qkv, B, T, C, NH);
        matmul_forward(attproj, atty, p.attprojw + lC * C, p.attprojb + lC, B, T, C, C, model->matmul_scratch,
                       false);
        residual_forward(residual2, residual, attproj, BTC);
        layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, p.ln2w + lC, p.ln2b + lC, B, T, C);
        matmul_forward(fch, ln2, p.fcw + lC * 4 * C, p.fcb + lC * 4, B, T, C, 4 * C, model->matmul_scratch,
                       false);
        gelu_forward(fch_gelu, fch, BTC * 4);
        matmul_forward(fcproj, fch_gelu, p.fcprojw + lC * 4 * C, p.fcprojb + lC, B, T, 4 * C, C,
                       model->matmul_scratch, false);
        residual_forward(residual3, residual2, fcproj, BTC);
    }
    const float* residual = a.residual3 + (size_t)(L - 1) * BTC;
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, p.lnfw, p.lnfb, B, T, C);
    // the classifier, tied to wte; its packed copy is made once per update, not once per forward
    matmul_forward(a.logits, a.lnf, p.wte, nullptr, B, T, C, Vp, model->wte_packed,
                   model->wte_packed_version == model->param_version);
    if (B * T >= 64) model->wte_packed_version = model->param_version;
    softmax_forward(a.probs, a.logits, B, T, V, Vp);
    if (targets) {
        crossentropy_forward(model->losses, a.probs, targets, B, T, Vp);
        double sum = 0.0; // a fixed-order sum, so the printed loss is reproducible
        for (int i = 0; i < B * T; i++) sum += model->losses[i];
        model->mean_loss = (float)(sum / (B * T));
    } else {
        model->mean_loss = -1.0f;
    }
}

void gpt2_zero_grad(GPT2* model) {
    memset(model->grads_memory, 0, model->num_parameters_padded * sizeof(float));
}

// Backward pass of the last forward (which must have had targets), adding into the parameter gradients.
// loss_scale = d(objective)/d(mean loss of this micro-batch): 1/grad_accum_steps when micro-batches are
// averaged into one optimizer step.
void gpt2_backward(GPT2* model, float loss_scale) {
    if (model->mean_loss < 0) fail("gpt2_backward: the last forward ran without targets");
    const GPT2Config& cfg = model->config;
    const int B = model->batch_size, T = model->seq_len;
    const int V = cfg.vocab_size, Vp = cfg.padded_vocab_size, L = cfg.num_layers, NH = cfg.num_heads,
              C = cfg.channels;
    const size_t BTC = (size_t)B * T * C;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts, da = model->grads_acts;
    memset(model->grads_acts_memory, 0, model->num_activations * sizeof(float));

    crossentropy_softmax_backward(da.logits, a.probs, model->targets.data(), loss_scale / (B * T), B, T, V,
                                  Vp);
    matmul_backward(da.lnf, g.wte, nullptr, da.logits, a.lnf, p.wte, B, T, C, Vp, model->matmul_scratch);
    float* residual = a.residual3 + (size_t)(L - 1) * BTC;
    float* dresidual = da.residual3 + (size_t)(L - 1) * BTC;
    layernorm_backward(dresidual, g.lnfw, g.lnfb, da.lnf, residual, p.lnfw, a.lnf_mean, a.lnf_rstd, B, T, C);

    for (int l = L - 1; l >= 0; l--) {
        residual = (l == 0) ? a.encoded : a.residual3 + (size_t)(l - 1) * BTC;
        dresidual = (l == 0) ? da.encoded : da.residual3 + (size_t)(l - 1) * BTC;
        const size_t lC = (size_t)l * C, lBT = (size_t)l * B * T;
        float* dresidual3 = da.residual3 + l * BTC;
        // forward order: ln1 -> qkv -> attention -> attproj -> +residual -> ln2 -> fc -> gelu -> fcproj -> +
        residual_backward(da.residual2 + l * BTC, da.fcproj + l * BTC, dresidual3, BTC);
        matmul_backward(da.fch_gelu + l * BTC * 4, g.fcprojw + lC * 4 * C, g.fcprojb + lC,
                        da.fcproj + l * BTC, a.fch_gelu + l * BTC * 4, p.fcprojw + lC * 4 * C, B, T, 4 * C, C,
                        model->matmul_scratch);
        gelu_backward(da.fch + l * BTC * 4, a.fch + l * BTC * 4, da.fch_gelu + l * BTC * 4, BTC * 4);
        matmul_backward(da.ln2 + l * BTC, g.fcw + lC * 4 * C, g.fcb + lC * 4, da.fch + l * BTC * 4,
                        a.ln2 + l * BTC, p.fcw + lC * 4 * C, B, T, C, 4 * C, model->matmul_scratch);
        layernorm_backward(da.residual2 + l * BTC, g.ln2w + lC, g.ln2b + lC, da.ln2 + l * BTC,
                           a.residual2 + l * BTC, p.ln2w + lC, a.ln2_mean + lBT, a.ln2_rstd + lBT, B, T, C);
        residual_backward(dresidual, da.attproj + l * BTC, da.residual2 + l * BTC, BTC);
        matmul_backward(da.atty + l * BTC, g.attprojw + lC * C, g.attprojb + lC, da.attproj + l * BTC,
                        a.atty + l * BTC, p.attprojw + lC * C, B, T, C, C, model->matmul_scratch);
        attention_backward(da.qkv + l * BTC * 3, da.atty + l * BTC, a.qkv + l * BTC * 3,
                           a.att + (size_t)l * B * NH * T * T, B, T, C, NH);
        matmul_backward(da.ln1 + l * BTC, g.qkvw + lC * 3 * C, g.qkvb + lC * 3, da.qkv + l * BTC * 3,
                        a.ln1 + l * BTC, p.qkvw + lC * 3 * C, B, T, C, 3 * C, model->matmul_scratch);
        layernorm_backward(dresidual, g.ln1w + lC, g.ln1b + lC, da.ln1 + l * BTC, residual, p.ln1w + lC,
                           a.ln1_mean + lBT, a.ln1_rstd + lBT, B, T, C);
    }
    encoder_backward(g.wte, g.wpe, da.encoded, model->inputs.data(), B, T, C);
}

// ----------------------------------------------------------------------------------------------------
// the optimizer: AdamW on this process's shard of the parameters
//
// Data parallelism (llmc/zero.h has the arithmetic, llmc/mpi_cpu.h the MPI calls): every process runs
// forward and backward on its own slice of the global batch, then
//   ZeRO stage 0:  all-reduce (average) the gradients; every process updates every parameter;
//   ZeRO stage 1:  reduce-scatter the gradients, so process r receives the average for its 1/N slice of
//                  the flat parameter buffer; it keeps AdamW's m and v only for that slice and updates only
//                  it; then all-gather the updated slices so every process has the whole model again.
// With one process both are the plain single-process update.
//
// AdamW, per parameter, with g the (clipped) gradient and t the 1-based step:
//   m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
//   mhat = m / (1 - beta1^t)             vhat = v / (1 - beta2^t)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)     (decoupled weight decay, matrices only)
// With -qo 1, m and v are kept as 8-bit codes with one scale per block (llmc/adamw8bit.h).

struct Optimizer {
    int zero_stage = 0;
    ShardLayout layout;                       // which slice of the flat buffer this process updates
    ShardRange ranges[NUM_PARAMETER_TENSORS]; // that slice cut at tensor boundaries
    int num_ranges = 0;
    float* grad_shard = nullptr; // (shard_size) the averaged gradient of the slice
    // fp32 AdamW state (shard_size each)
    float* m = nullptr;
    float* v = nullptr;
    // 8-bit AdamW state: codes (shard_size each), one fp32 absmax per block of each range
    bool use_8bit = false;
    int block_size = 0;
    uint8_t* m_codes = nullptr;
    uint8_t* v_codes = nullptr;
    float* m_absmax = nullptr;
    float* v_absmax = nullptr;
    size_t block_offset[NUM_PARAMETER_TENSORS]; // first block of each range
    size_t num_blocks = 0;
};

// Pads the model's parameter buffer to the layout's length (zeros) and allocates the optimizer state.
void optimizer_init(Optimizer* opt, GPT2* model, const ProcessGroup* pg, int zero_stage, bool use_8bit,
                    int block_size) {
    opt->zero_stage = zero_stage;
    opt->layout = zero_layout(model->num_parameters, pg->rank, pg->num_ranks, zero_stage);
    opt->num_ranges = shard_ranges(model->param_sizes, NUM_PARAMETER_TENSORS, &opt->layout, opt->ranges);
    const size_t P = model->num_parameters, P_pad = opt->layout.padded_params, S = opt->layout.shard_size;
    // every process's slice has the same length, so the flat buffers are padded with zeros to P_pad
    model->params_memory = (float*)realloc(model->params_memory, P_pad * sizeof(float));
    if (model->params_memory == nullptr) fail("out of memory: could not pad the parameters to %zu", P_pad);
    memset(model->params_memory + P, 0, (P_pad - P) * sizeof(float));
    point_parameters(&model->params, model->params_memory, model->param_sizes);
    model->num_parameters_padded = P_pad;
    opt->grad_shard = (zero_stage == 1) ? (float*)calloc_check(S, sizeof(float), "gradient shard") : nullptr;
    opt->use_8bit = use_8bit;
    opt->block_size = block_size;
    if (!use_8bit) {
        opt->m = (float*)calloc_check(S, sizeof(float), "AdamW m");
        opt->v = (float*)calloc_check(S, sizeof(float), "AdamW v");
    } else {
        opt->num_blocks = 0;
        for (int r = 0; r < opt->num_ranges; r++) {
            opt->block_offset[r] = opt->num_blocks;
            opt->num_blocks += ceil_div(opt->ranges[r].count, (size_t)block_size);
        }
        // a block whose absmax is 0 dequantizes to all zeros whatever its codes: m = v = 0 at the start
        opt->m_codes = (uint8_t*)calloc_check(S, 1, "8-bit AdamW m codes");
        opt->v_codes = (uint8_t*)calloc_check(S, 1, "8-bit AdamW v codes");
        opt->m_absmax = (float*)calloc_check(opt->num_blocks, sizeof(float), "8-bit AdamW m scales");
        opt->v_absmax = (float*)calloc_check(opt->num_blocks, sizeof(float), "8-bit AdamW v scales");
    }
}

void optimizer_free(Optimizer* opt) {
    free(opt->grad_shard);
    free(opt->m);
    free(opt->v);
    free(opt->m_codes);
    free(opt->v_codes);
    free(opt->m_absmax);
    free(opt->v_absmax);
}

// Bytes of optimizer state this process holds (the memory line printed at start-up).
size_t optimizer_state_bytes(const Optimizer* opt) {
    const size_t S = opt->layout.shard_size;
    return opt->use_8bit ? 2 * S + 2 * opt->num_blocks * sizeof(float) : 2 * S * sizeof(float);
}

// AdamW on n contiguous parameters (fp32 moments).
void adamw_update(float* p, const float* g, float* m, float* v, size_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int t) {
    const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
        float mhat = m[i] / bc1, vhat = v[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p[i]);
    }
}

// sum of x[i]^2 in double: fixed chunks summed in parallel, then the chunk sums in order, so the result
// does not depend on the number of threads (or on timing)
double sum_of_squares(const float* x, size_t n) {
    const size_t chunk = 1 << 16, num_chunks = ceil_div(n, chunk);
    std::vector<double> partial(num_chunks);
#pragma omp parallel for
    for (size_t c = 0; c < num_chunks; c++) {
        double sum = 0.0;
        for (size_t i = c * chunk; i < std::min(n, (c + 1) * chunk); i++) sum += (double)x[i] * x[i];
        partial[c] = sum;
    }
    double total = 0.0;
    for (double p : partial) total += p;
    return total;
}

// One optimizer step from the gradients accumulated in model->grads (this process's micro-batches).
// Returns the global gradient norm before clipping.
float gpt2_update(GPT2* model, Optimizer* opt, ProcessGroup* pg, float lr, const AdamWConfig& h, int t) {
    const ShardLayout& lay = opt->layout;
    float* grads = model->grads_memory;
    // 1. average the gradients over processes; g = this process's slice of them (shard_size floats)
    float* g = grads;
    if (opt->zero_stage == 0) {
        pg_allreduce_mean(pg, grads, lay.padded_params);
    } else {
        pg_reduce_scatter_sum(pg, grads, opt->grad_shard, lay.shard_size);
        const float inv = 1.0f / pg->num_ranks;
        for (size_t i = 0; i < lay.shard_size; i++) opt->grad_shard[i] *= inv;
        g = opt->grad_shard;
    }
    // 2. global gradient norm: squares summed over the slice (in double, fixed order), then over processes
    double sumsq = 0.0;
    for (int r = 0; r < opt->num_ranges; r++)
        sumsq += sum_of_squares(g + opt->ranges[r].offset_in_shard, opt->ranges[r].count);
    if (opt->zero_stage == 1) sumsq = pg_allreduce_sum_double(pg, sumsq);
    const float norm = (float)sqrt(sumsq);
    // 3. clip: scale the gradient so its norm is at most grad_clip
    if (h.grad_clip > 0.0f && norm > h.grad_clip) {
        const float scale = h.grad_clip / norm;
        for (int r = 0; r < opt->num_ranges; r++) {
            float* gr = g + opt->ranges[r].offset_in_shard;
#pragma omp parallel for
            for (size_t i = 0; i < opt->ranges[r].count; i++) gr[i] *= scale;
        }
    }
    // 4. AdamW, tensor by tensor (weight decay only on matrices)
    for (int r = 0; r < opt->num_ranges; r++) {
        const ShardRange& rg = opt->ranges[r];
        float wd = parameter_is_matrix(rg.tensor) ? h.weight_decay : 0.0f;
        float* p = model->params_memory + rg.global_offset;
        const float* gr = g + rg.offset_in_shard;
        if (!opt->use_8bit) {
            adamw_update(p, gr, opt->m + rg.offset_in_shard, opt->v + rg.offset_in_shard, rg.count, lr,
                         h.beta1, h.beta2, h.eps, wd, t);
        } else {
            size_t b = opt->block_offset[r];
            adamw8bit_update(p, gr, opt->m_codes + rg.offset_in_shard, opt->m_absmax + b,
                             opt->v_codes + rg.offset_in_shard, opt->v_absmax + b, rg.count, opt->block_size,
                             lr, h.beta1, h.beta2, h.eps, wd, t);
        }
    }
    model->param_version++; // cached copies of the parameters (the packed wte) are stale now
    // 5. ZeRO-1: every process gets everyone's updated slice
    if (opt->zero_stage == 1) {
        pg_allgather(pg, model->params_memory + lay.shard_offset, model->params_memory, lay.shard_size);
    }
    return norm;
}

// ----------------------------------------------------------------------------------------------------
// 4. evaluation, sampling, checkpoints

// Mean loss over the first max_batches batches of the validation set (all of it if max_batches < 0),
// averaged over processes (each evaluates its own slice of every batch).
float gpt2_validate(GPT2* model, DataLoader* val_loader, int max_batches, ProcessGroup* pg) {
    dataloader_reset(val_loader);
    int n = (int)dataloader_num_batches(val_loader);
    if (max_batches >= 0 && max_batches < n) n = max_batches;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        dataloader_next_batch(val_loader);
        gpt2_forward(model, val_loader->inputs.data(), val_loader->targets.data(), model->batch_size,
                     model->seq_len);
        sum += model->mean_loss;
    }
    float loss = n > 0 ? (float)(sum / n) : 0.0f;
    return pg_allreduce_sum_float(pg, loss) / pg->num_ranks;
}

// Generates num_tokens tokens after <|endoftext|>, each drawn from softmax(logits / temperature) with
// coins from rng, and prints them (decoded when a tokenizer is loaded, as ids otherwise).
void gpt2_sample(GPT2* model, const TokenDecoder* decoder, Rng* rng, int num_tokens, float temperature) {
    const GPT2Config& c = model->config;
    const int eot = decoder->vocab_size > 0 ? decoder->eot_token : c.vocab_size - 1;
    std::vector<int> tokens(1, eot);
    printf("generating:\n---\n");
    for (int t = 1; t <= num_tokens && t < model->seq_len; t++) {
        gpt2_forward(model, tokens.data(), nullptr, 1, t); // the whole prefix again: simple, not fast
        const float* logits = model->acts.logits + (size_t)(t - 1) * c.padded_vocab_size;
        int next = sample_softmax(logits, c.vocab_size, temperature, rng_uniform(rng));
        tokens.push_back(next);
        if (decoder->vocab_size > 0 && next < decoder->vocab_size) {
            const std::string& piece = token_decoder_piece(decoder, next);
            fwrite(piece.data(), 1, piece.size(), stdout);
        } else {
            printf("%d ", next);
        }
        fflush(stdout);
    }
    printf("\n---\n");
}

// Checkpoints: the model file (process 0) and one state file per process, laid out in llmc/state_file.h.
struct TrainState {
    int step;
    DataLoaderState loader;
    Rng sample_rng;
};

// What this process's state file must say (and says, when written) about the run.
StateHeader state_header_of(const GPT2* model, const Optimizer* opt, const ProcessGroup* pg, int step) {
    StateHeader h;
    h.num_processes = pg->num_ranks;
    h.rank = pg->rank;
    h.zero_stage = opt->zero_stage;
    h.use_8bit = opt->use_8bit;
    h.step = step;
    h.block_size = opt->block_size;
    h.shard_size = opt->layout.shard_size;
    h.shard_offset = opt->layout.shard_offset;
    h.num_parameters = model->num_parameters;
    return h;
}

void save_checkpoint(const char* dir, GPT2* model, const Optimizer* opt, const TrainState& st,
                     ProcessGroup* pg) {
    if (pg->rank == 0) {
        checkpoint_write(checkpoint_path(dir, "model", st.step, -1).c_str(), model->config,
                         model->params_memory, model->num_parameters, false);
    }
    StateHeader h = state_header_of(model, opt, pg, st.step);
    h.loader = st.loader;
    h.sample_rng = st.sample_rng;
    std::string path = checkpoint_path(dir, "state", st.step, pg->rank);
    AtomicFile f(path.c_str());
    state_header_write(&f, h);
    const size_t S = opt->layout.shard_size;
    if (!opt->use_8bit) {
        f.write(opt->m, sizeof(float), S);
        f.write(opt->v, sizeof(float), S);
    } else {
        f.write(opt->m_codes, 1, S);
        f.write(opt->v_codes, 1, S);
        f.write(opt->m_absmax, sizeof(float), opt->num_blocks);
        f.write(opt->v_absmax, sizeof(float), opt->num_blocks);
    }
    f.commit();
    pg_barrier(pg); // every state file is on disk before the checkpoint is declared complete
    if (pg->rank == 0) write_latest_checkpoint(dir, st.step);
}

// Loads this process's optimizer state and the training position; the model file is loaded by the caller.
void load_state(const char* dir, int step, Optimizer* opt, const GPT2* model, TrainState* st,
                ProcessGroup* pg) {
    std::string path = checkpoint_path(dir, "state", step, pg->rank);
    state_check_process_count(dir, step, pg->num_ranks);
    File f(path.c_str(), "rb");
    StateHeader h = state_header_read(&f, state_header_of(model, opt, pg, step));
    if (h.has_master)
        fail("'%s' holds the GPU trainer's fp32 master weights: resume it with train_gpt2cu", path.c_str());
    st->step = step;
    st->loader = h.loader;
    st->sample_rng = h.sample_rng;
    const size_t S = opt->layout.shard_size;
    if (!opt->use_8bit) {
        f.read(opt->m, sizeof(float), S, "AdamW m");
        f.read(opt->v, sizeof(float), S, "AdamW v");
    } else {
        f.read(opt->m_codes, 1, S, "8-bit AdamW m codes");
        f.read(opt->v_codes, 1, S, "8-bit AdamW v codes");
        f.read(opt->m_absmax, sizeof(float), opt->num_blocks, "8-bit AdamW m scales");
        f.read(opt->v_absmax, sizeof(float), opt->num_blocks, "8-bit AdamW v scales");
    }
    if (fgetc(f.fp) != EOF) fail("'%s' has bytes after the optimizer state: wrong file?", path.c_str());
}

// ----------------------------------------------------------------------------------------------------
// 5. main: flags and the training loop

#ifndef TESTING // test_gpt2.cpp includes this file for its functions and has its own main

int main(int argc, char** argv) {
    ProcessGroup pg;
    process_group_init(&pg, &argc, &argv);
    pg_install_abort_on_exit(&pg);
    TrainConfig cfg = train_config_cpu_defaults();
    if (!parse_flags(&cfg, argc, argv, /*gpu=*/false)) {
        if (pg.rank == 0) print_usage("train_gpt2", train_config_cpu_defaults(), /*gpu=*/false);
        process_group_finalize(&pg);
        return 0;
    }
    const bool main_process = pg.rank == 0;
    if (cfg.resume && cfg.output_dir == nullptr) fail("flag -y 1 needs -o <dir> to find the checkpoint in");

    // the model: from a file, or fresh from a descriptor
    GPT2 model;
    GPT2Config desc;
    if (gpt2_config_from_descriptor(cfg.model, &desc)) {
        gpt2_build_from_random(&model, desc, cfg.seed);
    } else {
        if (!file_exists(cfg.model)) {
            fail("flag -e: '%s' is neither a model file nor a descriptor like d12", cfg.model);
        }
        gpt2_build_from_checkpoint(&model, cfg.model);
    }
    const GPT2Config& mc = model.config;
    const int B = cfg.B, T = cfg.T;
    if (T > mc.max_seq_len) {
        fail("flag -t: sequence length %d exceeds the model's maximum %d (maxT in its header)", T,
             mc.max_seq_len);
    }
    if (mc.channels % 16 != 0)
        fail("the CPU matmul needs C to be a multiple of 16; the model has C=%d", mc.channels);

    // batch: total = B * T * processes * accumulation steps
    const long tokens_per_micro = (long)B * T * pg.num_ranks;
    const long total_tokens = cfg.total_batch_tokens < 0 ? tokens_per_micro : cfg.total_batch_tokens;
    if (total_tokens % tokens_per_micro != 0) {
        fail("flag -d: total batch %ld tokens is not a multiple of B*T*processes = %d*%d*%d = %ld",
             total_tokens, B, T, pg.num_ranks, tokens_per_micro);
    }
    const int grad_accum_steps = (int)(total_tokens / tokens_per_micro);

    // data
    DataLoader train_loader, val_loader;
    dataloader_init(&train_loader, cfg.train_pattern, B, T, pg.rank, pg.num_ranks, !cfg.overfit_single_batch,
                    cfg.seed, mc.vocab_size, grad_accum_steps);
    dataloader_init(&val_loader, cfg.val_pattern, B, T, pg.rank, pg.num_ranks, false, cfg.seed,
                    mc.vocab_size);
    int train_steps = cfg.max_steps;
    if (train_steps < 0) train_steps = (int)dataloader_num_batches(&train_loader); // a batch = a step's data
    if (train_steps < 1)
        fail("the training data holds less than one optimizer step of %ld tokens", total_tokens);

    // learning rate: optional batch-size scaling of the peak, then the schedule
    float peak_lr = scale_lr_for_batch(cfg.learning_rate, (size_t)cfg.lr_scale_ref_tokens,
                                       (size_t)total_tokens, cfg.lr_scale_rule);
    train_config_fit_warmup(&cfg, train_steps, main_process);
    LRScheduler sched;
    lr_scheduler_init(&sched, cfg.schedule, peak_lr, cfg.warmup_steps, train_steps, cfg.final_lr_frac,
                      cfg.cooldown_frac);

    Optimizer opt;
    optimizer_init(&opt, &model, &pg, cfg.zero_stage, cfg.use_8bit, cfg.block_size);
    gpt2_allocate_training_state(&model, B, T);

    TokenDecoder decoder; // samples are printed as token ids when the tokenizer file is missing
    if (file_exists(cfg.tokenizer_path) && mc.vocab_size == 50257)
        token_decoder_load(&decoder, cfg.tokenizer_path);

    TrainState st;
    st.step = 0;
    rng_init(&st.sample_rng, cfg.seed ^ 0x5eed5a3b1eULL);
    int resume_step = -1;
    if (cfg.resume) {
        resume_step = find_latest_checkpoint(cfg.output_dir);
        if (resume_step < 0)
            fail("flag -y 1: no checkpoint in '%s' (no checkpoint_latest file)", cfg.output_dir);
        std::string model_path = checkpoint_path(cfg.output_dir, "model", resume_step, -1);
        GPT2Config saved;
        int version;
        checkpoint_read_header(model_path.c_str(), &saved, &version);
        if (memcmp(&saved, &mc, sizeof(saved)) != 0) {
            fail("'%s' holds a different model shape than -e %s", model_path.c_str(), cfg.model);
        }
        checkpoint_read_parameters(model_path.c_str(), version, model.params_memory, model.num_parameters);
        load_state(cfg.output_dir, resume_step, &opt, &model, &st, &pg);
        dataloader_set_state(&train_loader, st.loader);
    }
    if (cfg.output_dir && main_process) make_dir_check(cfg.output_dir);
    Logger logger;
    // on resume, drop log lines from beyond the checkpoint (train lines of steps >= resume_step, val lines at
    // it)
    logger_init(&logger, cfg.output_dir, pg.rank, resume_step >= 0 ? resume_step - 1 : -1);

    if (main_process) {
        printf("model: L=%d C=%d NH=%d V=%d Vp=%d maxT=%d, %zu parameters\n", mc.num_layers, mc.channels,
               mc.num_heads, mc.vocab_size, mc.padded_vocab_size, mc.max_seq_len, model.num_parameters);
        printf("batch: B=%d T=%d x %d processes x %d accumulation steps = %ld tokens per step\n", B, T,
               pg.num_ranks, grad_accum_steps, total_tokens);
        printf("train: %zu tokens in %zu shards, %d steps; val: %zu tokens\n", train_loader.num_tokens_total,
               train_loader.files.size(), train_steps, val_loader.num_tokens_total);
        printf("lr: %s schedule, peak %.3e (base %.3e, batch scaling %s), warmup %d, final fraction %g\n",
               cfg.schedule, (double)peak_lr, (double)cfg.learning_rate, cfg.lr_scale_rule, cfg.warmup_steps,
               (double)cfg.final_lr_frac);
        printf("optimizer: %s AdamW, ZeRO stage %d over %d processes, weight decay %g, clip %g\n",
               cfg.use_8bit ? "8-bit" : "fp32", cfg.zero_stage, pg.num_ranks, (double)cfg.adamw.weight_decay,
               (double)cfg.adamw.grad_clip);
        const double MiB = 1024.0 * 1024.0;
        printf("memory (this process): parameters %.1f MiB, gradients %.1f MiB, optimizer state %.1f MiB, "
               "activations %.1f MiB (+ as much for their gradients)\n",
               model.num_parameters_padded * 4 / MiB, model.num_parameters_padded * 4 / MiB,
               optimizer_state_bytes(&opt) / MiB, model.num_activations * 4 / MiB);
        printf("threads: %d\n", omp_get_max_threads());
        if (resume_step >= 0) printf("resumed from step %d of '%s'\n", resume_step, cfg.output_dir);
    }

    // a batch of every process's micro-batch for -a 1
    if (cfg.overfit_single_batch) dataloader_next_batch(&train_loader);
    const double flops_per_step = 6.0 * model.num_parameters * total_tokens;
    float last_val = -1.0f;
    for (int step = st.step; step <= train_steps; step++) {
        const bool last_step = step == train_steps;
        if (cfg.output_dir && step > st.step &&
            ((cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0) || last_step)) {
            TrainState now{step, dataloader_get_state(&train_loader), st.sample_rng};
            save_checkpoint(cfg.output_dir, &model, &opt, now, &pg);
            if (main_process) printf("saved checkpoint of step %d to %s\n", step, cfg.output_dir);
        }
        if (step % cfg.val_every == 0 || last_step) {
            last_val = gpt2_validate(&model, &val_loader, cfg.val_max_steps, &pg);
            if (main_process) printf("val loss %f\n", last_val);
            logger_log_val(&logger, step, last_val);
        }
        if (main_process && cfg.sample_every > 0 &&
            ((step > 0 && step % cfg.sample_every == 0) || last_step)) {
            gpt2_sample(&model, &decoder, &st.sample_rng, cfg.gen_tokens, cfg.temperature);
        }
        if (last_step) break;

        auto start = std::chrono::steady_clock::now();
        gpt2_zero_grad(&model);
        double loss_sum = 0.0;
        for (int micro = 0; micro < grad_accum_steps; micro++) {
            if (!cfg.overfit_single_batch) dataloader_next_batch(&train_loader);
            gpt2_forward(&model, train_loader.inputs.data(), train_loader.targets.data(), B, T);
            gpt2_backward(&model, 1.0f / grad_accum_steps);
            loss_sum += model.mean_loss;
        }
        float lr = lr_at_step(&sched, step);
        float norm = gpt2_update(&model, &opt, &pg, lr, cfg.adamw, step + 1);
        float loss = pg_allreduce_sum_float(&pg, (float)(loss_sum / grad_accum_steps)) / pg.num_ranks;
        double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        if (main_process) {
            printf("step %4d/%d | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s | %.1f GFLOP/s\n",
                   step + 1, train_steps, loss, (double)lr, norm, ms, total_tokens / (ms / 1000.0),
                   flops_per_step / (ms / 1000.0) / 1e9);
            fflush(stdout);
        }
        logger_log_train(&logger, step, loss, lr, norm); // 0-based step, as llm.c logs it
    }
    if (main_process) printf("final val loss %f\n", last_val);

    logger_free(&logger);
    optimizer_free(&opt);
    gpt2_free(&model);
    process_group_finalize(&pg);
    return 0;
}
#endif
