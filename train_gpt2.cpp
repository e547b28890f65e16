/*
GPT-2 training on the CPU, in fp32: the reference implementation of this project.

Everything the GPU trainer does is tested against this file, and it is meant to be read top to bottom once:
  1. each layer's forward and backward pass, side by side (encoder, layernorm, matmul, attention, GELU,
     residual, softmax + cross-entropy), with the math in the comments;
  2. the model: parameters and activations as named slices of one buffer each, carved by a table of sizes;
  3. forward, backward, the AdamW update (with global-norm clipping, weight decay on matrices only, and the
     data-parallel / ZeRO-1/2/3 sharding when run under mpirun);
  4. the program: the functions llmc/run_plan.h calls (a micro-step, the update, evaluation, the logits
     for sampling, the checkpoint's buffers) and main. The run plan, resume and the training loop are
     in llmc/run_plan.h, shared with the GPU trainer train_gpt2.cu: the two are backends of one program.
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
#include <omp.h>

#include "llmc/utils.h"
#include "llmc/checkpoint.h"
#include "llmc/matmul_cpu.h"
#include "llmc/exp_cpu.h"
#include "llmc/dataloader.h"
#include "llmc/logger.h"
#include "llmc/token_decoder.h"
#include "llmc/zero.h"
#include "llmc/mpi_cpu.h"
#include "llmc/pipeline.h"
#include "llmc/adamw8bit.h"
#include "llmc/train_config.h"
#include "llmc/state_file.h"
#include "llmc/run_plan.h"

// ----------------------------------------------------------------------------------------------------
// 1. layers: forward and backward
// Backward functions ADD into their gradient outputs (+=): gradients of shared tensors (the residual
// stream, the tied token embedding) and of successive micro-steps accumulate.

// Wall time spent in the matmuls and in attention since the start, for the breakdown of a step that
// dev/bench/bench_cpu_parts.cpp prints (the rest of the step is the other layers and the optimizer).
enum StepPart { PART_MATMULS, PART_ATTENTION, NUM_STEP_PARTS };
double step_part_seconds[NUM_STEP_PARTS];
struct SecondsTimer { // adds the wall seconds from its construction to its destruction to *into
    double* into;
    double start = omp_get_wtime();
    ~SecondsTimer() { *into += omp_get_wtime() - start; }
};

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
//   dbias += dout, dweight += dout * norm       (dweight, dbias null: a frozen LayerNorm, under LoRA)
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
    if (dweight == nullptr) return;
        // the parameter gradients sum over all positions: parallel over channels, so no two threads share a
        // sum
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
// inp (B,T,C), weight (OC,C), bias (OC) or null -> out (B,T,OC). Any OC: the classifier's is the model
// file's Vp. One call of llmc/matmul_cpu.h's blocked kernel, A = inp, B = weight^T: it packs the weight
// slice by slice as it goes, or takes it packed ahead in weight_packed (matmul_pack_b_all of weight^T: the
// classifier packs wte once per update, not once per forward), or null.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C,
                    int OC, const float* weight_packed) {
    SecondsTimer timer{&step_part_seconds[PART_MATMULS]};
    matmul_cpu(out, OC, MatrixView{inp, (size_t)C, 1}, MatrixView{weight, 1, (size_t)C}, weight_packed, B * T,
               OC, C, bias, /*accumulate=*/false);
}

// dinp += dout . weight      (BT,OC).(OC,C)
// dweight += dout^T . inp    (OC,BT).(BT,C)
// dbias += column sums of dout
// dweight and dbias may be null: a frozen weight (LoRA) costs only the dinp product, a third of the work.
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC) {
    SecondsTimer timer{&step_part_seconds[PART_MATMULS]};
    const int BT = B * T;
    matmul_cpu(dinp, C, MatrixView{dout, (size_t)OC, 1}, MatrixView{weight, (size_t)C, 1}, nullptr, BT, C, OC,
               nullptr, /*accumulate=*/true);
    if (dweight != nullptr)
        matmul_cpu(dweight, C, MatrixView{dout, 1, (size_t)OC}, MatrixView{inp, (size_t)C, 1}, nullptr, OC, C,
                   BT, nullptr, /*accumulate=*/true);
    if (dbias != nullptr) { // in blocks of 64 columns, rows in order: each column's sum runs over bt in order
#pragma omp parallel for
        for (int o0 = 0; o0 < OC; o0 += 64) {
            const int width = std::min(64, OC - o0);
            float sum[64] = {};
            for (int bt = 0; bt < BT; bt++)
                for (int j = 0; j < width; j++) sum[j] += dout[(size_t)bt * OC + o0 + j];
            for (int j = 0; j < width; j++) dbias[o0 + j] += sum[j];
        }
    }
}

// LoRA adapter of a matmul (llmc/lora.h): out += s.(inp.A^T).B^T, s = alpha/r
// inp (BT,IN), A (r,IN), B (OC,r) -> u = inp.A^T (BT,r), kept for the backward; out (BT,OC) added into.
// Two thin matmuls through the rank-r bottleneck: 2.BT.r.(IN + OC) FLOPs against the base's 2.BT.IN.OC.
// With B = 0 every addend is exactly 0, so out is the base's, bit for bit.
void lora_forward(float* out, float* u, const float* inp, const float* A, const float* B, float s, int BT,
                  int IN, int OC, int r) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        const float* x = inp + (size_t)bt * IN;
        float* u_bt = u + (size_t)bt * r;
        for (int j = 0; j < r; j++) {
            const float* a = A + (size_t)j * IN;
            float sum = 0.0f;
            for (int i = 0; i < IN; i++) sum += x[i] * a[i];
            u_bt[j] = sum;
        }
        float* o = out + (size_t)bt * OC;
        for (int k = 0; k < OC; k++) {
            const float* b = B + (size_t)k * r;
            float sum = 0.0f;
            for (int j = 0; j < r; j++) sum += u_bt[j] * b[j];
            o[k] += s * sum;
        }
    }
}

// With d = dout (BT,OC):
//   du = s.d.B (BT,r)   dinp += du.A (BT,IN)   dB += s.d^T.u (OC,r)   dA += du^T.inp (r,IN)
// du (BT*r floats) is scratch. Every sum over positions runs in bt order in one thread: deterministic.
void lora_backward(float* dinp, float* dA, float* dB, float* du, const float* dout, const float* inp,
                   const float* u, const float* A, const float* B, float s, int BT, int IN, int OC, int r) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        const float* d = dout + (size_t)bt * OC;
        float* du_bt = du + (size_t)bt * r;
        for (int j = 0; j < r; j++) {
            float sum = 0.0f;
            for (int k = 0; k < OC; k++) sum += d[k] * B[(size_t)k * r + j];
            du_bt[j] = s * sum;
        }
        float* dx = dinp + (size_t)bt * IN;
        for (int j = 0; j < r; j++) {
            const float* a = A + (size_t)j * IN;
            for (int i = 0; i < IN; i++) dx[i] += du_bt[j] * a[i];
        }
    }
    // dB: blocks of 16 rows per thread (the rows of dout it reads stay in cache), positions in order
    const int num_blocks = (OC + 15) / 16;
#pragma omp parallel for
    for (int blk = 0; blk < num_blocks; blk++) {
        const int k1 = std::min(OC, blk * 16 + 16);
        for (int bt = 0; bt < BT; bt++) {
            const float* u_bt = u + (size_t)bt * r;
            for (int k = blk * 16; k < k1; k++) {
                const float sd = s * dout[(size_t)bt * OC + k];
                for (int j = 0; j < r; j++) dB[(size_t)k * r + j] += sd * u_bt[j];
            }
        }
    }
    // dA: one row j per thread
#pragma omp parallel for
    for (int j = 0; j < r; j++) {
        float* da = dA + (size_t)j * IN;
        for (int bt = 0; bt < BT; bt++) {
            const float g = du[(size_t)bt * r + j];
            const float* x = inp + (size_t)bt * IN;
            for (int i = 0; i < IN; i++) da[i] += g * x[i];
        }
    }
}

// causal multi-head self-attention
// inp (B,T,3C) holds q, k, v for each position (each (NH,hs)); per head h and query position t:
//   score[t2] = q_t . k_t2 / sqrt(hs) for t2 <= t   (causal: a position sees only itself and the past)
//   att[t2]   = softmax(score)[t2]                  (stored (B,NH,T,T), zero above the diagonal)
//   out_t     = sum_t2 att[t2] * v_t2               -> out (B,T,C), heads concatenated
void attention_forward(float* out, float* att, const float* inp, int B, int T, int C, int NH) {
    SecondsTimer timer{&step_part_seconds[PART_ATTENTION]};
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
    SecondsTimer timer{&step_part_seconds[PART_ATTENTION]};
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
// tanh through one exp, tanh(u) = 1 - 2 / (exp(2u) + 1), and the absolute error (~1e-7) is below what
// 1 + tanh(u) resolves in fp32 anyway.
static inline float tanh_via_exp(float u) {
    return 1.0f - 2.0f / (exp_poly(2.0f * u) + 1.0f);
}
void gelu_forward(float* out, const float* inp, size_t N) {
#pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float u = GELU_SCALING_FACTOR * (x + 0.044715f * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanh_via_exp(u));
    }
}

// gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
#pragma omp parallel for simd
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
        // the max, in vectors (a max is exact in any order; the compiler will not reorder it itself)
        vecf maxv = vecf{} - INFINITY;
        int j = 0;
        for (; j + MATMUL_VW <= V; j += MATMUL_VW) {
            const vecf zj = load_vec(z + j);
            maxv = zj > maxv ? zj : maxv;
        }
        float maxval = -INFINITY;
        for (int l = 0; l < MATMUL_VW; l++) maxval = fmaxf(maxval, maxv[l]);
        for (; j < V; j++) maxval = fmaxf(maxval, z[j]);
        for (int i = 0; i < V; i++) p[i] = exp_poly(z[i] - maxval); // (vectorizes: apart from the sum)
        // the sum in MATMUL_VW running sums (element i to sum i % VW), added in a fixed order at the end:
        // independent adds instead of one chain of V
        vecf sumv = {};
        j = 0;
        for (; j + MATMUL_VW <= V; j += MATMUL_VW) sumv += load_vec(p + j);
        float sum = 0.0f;
        for (int l = 0; l < MATMUL_VW; l++) sum += sumv[l];
        for (; j < V; j++) sum += p[j];
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

// head: the final LayerNorm, the logits and the probabilities (a pipeline stage other than the last has
// none: size 0).
void activation_sizes(size_t sizes[NUM_ACTIVATION_TENSORS], const GPT2Config& c, size_t B, size_t T,
                      bool head = true) {
    size_t C = c.channels, NH = c.num_heads, L = c.num_layers, Vp = c.padded_vocab_size;
    size_t i = 0;
    sizes[i++] = B * T * C;                                                     // encoded
    sizes[i++] = L * B * T * C;                                                 // ln1
    sizes[i++] = L * B * T;                                                     // ln1_mean
    sizes[i++] = L * B * T;                                                     // ln1_rstd
    sizes[i++] = L * B * T * 3 * C;                                             // qkv
    sizes[i++] = L * B * T * C;                                                 // atty
    sizes[i++] = mul_check(L * B * NH, T * T, "attention scores (L*B*NH*T*T)"); // att
    sizes[i++] = L * B * T * C;                                                 // attproj
    sizes[i++] = L * B * T * C;                                                 // residual2
    sizes[i++] = L * B * T * C;                                                 // ln2
    sizes[i++] = L * B * T;                                                     // ln2_mean
    sizes[i++] = L * B * T;                                                     // ln2_rstd
    sizes[i++] = L * B * T * 4 * C;                                             // fch
    sizes[i++] = L * B * T * 4 * C;                                             // fch_gelu
    sizes[i++] = L * B * T * C;                                                 // fcproj
    sizes[i++] = L * B * T * C;                                                 // residual3
    sizes[i++] = B * T * C;                                                     // lnf
    sizes[i++] = B * T;                                                         // lnf_mean
    sizes[i++] = B * T;                                                         // lnf_rstd
    sizes[i++] = B * T * Vp;                                                    // logits
    sizes[i++] = B * T * Vp;                                                    // probs
    if (!head) // the last five: lnf, lnf_mean, lnf_rstd, logits, probs
        for (int j = NUM_ACTIVATION_TENSORS - 5; j < NUM_ACTIVATION_TENSORS; j++) sizes[j] = 0;
}

void point_activations(ActivationTensors* a, float* memory, const size_t sizes[NUM_ACTIVATION_TENSORS]) {
    float** ptrs = (float**)a;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) {
        ptrs[i] = memory;
        memory += sizes[i];
    }
}

// Layer l's slices of the per-layer tensors, for a forward or backward over (B, T): the same struct names
// the slices of the parameters and of their gradients (LayerParams), and of the activations and of their
// gradients (LayerActs). A tensor that is not held gives null slices: the parameter gradients under LoRA
// (the base is frozen), the block matrices of an NF4 base (base_matrix dequantizes them).
// (layer_params(tensors, l, C), llmc/zero.h, makes a LayerParams)
using LayerParams = LayerTensors<float>;

struct LayerActs {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *attproj, *residual2;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *residual3;
};
LayerActs layer_acts(const ActivationTensors& a, int l, size_t B, size_t T, size_t C, size_t NH) {
    const size_t BT = B * T, BTC = BT * C;
    LayerActs la;
    la.ln1 = a.ln1 + l * BTC, la.ln1_mean = a.ln1_mean + l * BT, la.ln1_rstd = a.ln1_rstd + l * BT;
    la.qkv = a.qkv + l * 3 * BTC;
    la.atty = a.atty + l * BTC, la.att = a.att + l * B * NH * T * T;
    la.attproj = a.attproj + l * BTC, la.residual2 = a.residual2 + l * BTC;
    la.ln2 = a.ln2 + l * BTC, la.ln2_mean = a.ln2_mean + l * BT, la.ln2_rstd = a.ln2_rstd + l * BT;
    la.fch = a.fch + l * 4 * BTC, la.fch_gelu = a.fch_gelu + l * 4 * BTC;
    la.fcproj = a.fcproj + l * BTC, la.residual3 = a.residual3 + l * BTC;
    return la;
}

// The input of layer l: the embeddings for layer 0, the output residual3 of layer l-1 otherwise (l = L:
// the input of the final LayerNorm).
float* layer_input(const ActivationTensors& a, int l, size_t B, size_t T, size_t C) {
    return l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * B * T * C;
}

// ZeRO-2 and ZeRO-3 (llmc/zero.h): what this process holds when the gradients (stage 2), and the parameters
// too (stage 3), are sharded unit by unit. Stages 0 and 1 leave it unused (stage 0): they hold both whole.
// A bucket holds one unit in unit order: a gradient as the backward makes it, or gathered parameters.
struct ZeroBucket {
    float* data = nullptr; // (the largest unit it serves, padded)
    int unit = -1;         // the unit whose parameters it holds (stage 3), -1 for none
    int version = 0;       // ... gathered at this param_version (an update makes it stale)
    PgRequest gather;      // its all-gather, while in flight
};
struct ZeroShards {
    int stage = 0; // 2 or 3 when in use
    ProcessGroup* pg = nullptr;
    ZeroUnits units;
    float* grad_shard =
        nullptr; // (shard_size) this rank's slice of every unit's gradient, summed over micro-steps
    float* grad_embed = nullptr; // (unit 0 padded) wte, wpe's gradient: the classifier's, then the encoder's
    float* grad_unit = nullptr;  // (largest other unit, padded) one layer's or the final LayerNorm's gradient
    // stage 3
    float* param_shard = nullptr; // (shard_size) this rank's slice of every unit: its only copy of the model
    ZeroBucket embed, final_ln;   // units 0 and L+1, gathered once per update
    ZeroBucket layer[2];          // layer l in layer[l % 2]: one is used while the next one is gathered
    size_t bucket_floats = 0;     // every bucket's length together (the memory table)
};

void zero_shards_free(ZeroShards* z) {
    free(z->grad_shard);
    free(z->grad_embed);
    free(z->grad_unit);
    free(z->param_shard);
    free(z->embed.data);
    free(z->final_ln.data);
    for (ZeroBucket& b : z->layer) free(b.data);
}

struct GPT2 {
    GPT2Config config;
    size_t param_sizes[NUM_PARAMETER_TENSORS];
    size_t num_parameters;
    float* params_memory = nullptr; // (params_floats) fp32: the parameters, the padding zero
    size_t params_floats = 0;       // num_parameters, padded to equal slices per process when they train
                                    // (llmc/zero.h); with an NF4 base only the tensors held in fp32
    ParameterTensors params;
    // what the optimizer trains: the parameters, or with LoRA only the adapters
    float* trained = nullptr;      // params_memory or lora_memory
    size_t num_trained = 0;        // num_parameters or the adapters' lora_layout.total
    size_t num_trained_padded = 0; // >= num_trained: equal slices per process (llmc/zero.h)
    float* grads_memory = nullptr; // (num_trained_padded) fp32 gradient of `trained`, summed over micro-steps
    ParameterTensors grads;        // its tensors when the whole model trains; all null under LoRA
    // LoRA (llmc/lora.h): adapters on the block matrices lora.targets names; the base above is frozen
    LoraConfig lora;
    LoraLayout lora_layout;
    float* lora_memory = nullptr; // (num_trained_padded) fp32 adapters: A and B of each target
    float* lora_u = nullptr;  // (NUM_LORA_TARGETS, L, B, T, r) u = x.A^T of each adapter, for the backward
    float* lora_du = nullptr; // (B, T, r) the backward's du
    Nf4Base nf4;              // QLoRA: the four block matrices of every layer (not held in fp32)
    float* dequant = nullptr; // (4C*C) one block matrix dequantized from nf4
    float* dequant_absmax = nullptr; // (4C*C / 64) its block scales
    // pipeline parallelism (llmc/pipeline.h, gpt2_take_stage): the model is one stage's part of the whole,
    // config.num_layers its layers and param_sizes 0 for the outer tensors it does not hold
    PipeStage stage; // the whole model when not pipelined
    // activations, sized for batch_size x seq_len; the forward may run on smaller B, T (sampling). A
    // pipeline stage holds them for num_slots micro-batches at once; acts names slot `slot`'s
    size_t act_sizes[NUM_ACTIVATION_TENSORS];
    size_t num_activations = 0; // floats of one slot
    int num_slots = 1, slot = 0;
    float* acts_memory = nullptr; // (num_slots * num_activations)
    ActivationTensors acts;
    float* grads_acts_memory = nullptr; // (num_activations) the gradients of one micro-batch's
    ActivationTensors grads_acts;
    int batch_size = 0, seq_len = 0;
    // inputs of the last forward of each slot (num_slots * B * T)
    std::vector<int> inputs, targets;
    float* wte_packed = nullptr; // (matmul_packed_b_size(Vp, C)) wte^T packed for the classifier
    int param_version = 1;       // incremented by every update of the parameters
    int wte_packed_version = 0;  // the param_version wte_packed was made from
    float* losses = nullptr;     // (B, T) per-position loss of the last forward
    float mean_loss = -1.0f;     // mean over (B, T), or -1 when the forward ran without targets
    ZeroShards zero;             // ZeRO-2/3; under it grads_memory is not allocated (and at stage 3,
                                 // after zero_shard_parameters, nor is params_memory)
};

void gpt2_allocate_parameters(GPT2* model) {
    gpt2_parameter_sizes(model->config, model->param_sizes);
    model->num_parameters = gpt2_num_parameters(model->config);
    model->params_floats = model->num_parameters;
    model->params_memory = (float*)calloc_check(model->num_parameters, sizeof(float), "parameters");
    point_parameters(&model->params, model->params_memory, model->param_sizes);
    model->trained = model->params_memory;
    model->num_trained = model->num_trained_padded = model->num_parameters;
}

// Load an llm.c model file (fp32 v3 or bf16 v5).
void gpt2_build_from_checkpoint(GPT2* model, const char* path) {
    int version;
    checkpoint_read_header(path, &model->config, &version);
    gpt2_allocate_parameters(model);
    checkpoint_read_parameters(path, version, model->params_memory, model->num_parameters);
}

// A fresh model (llmc/checkpoint.h: N(0, 0.02) weights, scaled residual projections, unit LayerNorm
// weights, zero biases), the same as the GPU trainer makes from the same seed.
void gpt2_build_from_random(GPT2* model, const GPT2Config& config, uint64_t seed) {
    model->config = config;
    gpt2_allocate_parameters(model);
    gpt2_init_random(model->params_memory, config, seed);
}

// LoRA on a built model: the adapters (fresh from seed: A random, B zero) become what trains. With an NF4
// base (QLoRA) the four block matrices of every layer are quantized and their fp32 copies dropped: the
// parameter buffer shrinks to the tensors held in fp32, and their pointers in model->params become null.
void gpt2_setup_lora(GPT2* model, const LoraConfig& lc, uint64_t seed) {
    if (lc.rank <= 0) return;
    const GPT2Config& c = model->config;
    model->lora = lc;
    model->lora_layout = lora_layout(c, lc);
    const size_t n = model->lora_layout.total;
    model->lora_memory = (float*)malloc_check(n * sizeof(float), "LoRA adapters");
    lora_init_random(model->lora_memory, model->lora_layout, c, seed);
    model->trained = model->lora_memory;
    model->num_trained = model->num_trained_padded = n;
    if (!lc.nf4) return;
    nf4_base_quantize(&model->nf4, c, model->params_memory);
    size_t held[NUM_PARAMETER_TENSORS];
    memcpy(held, model->param_sizes, sizeof(held));
    for (int t = 0; t < NUM_LORA_TARGETS; t++) held[LORA_BASE_TENSOR[t]] = 0;
    size_t total = 0;
    for (size_t h : held) total += h;
    float* kept = (float*)malloc_check(total * sizeof(float), "parameters held in fp32");
    const float* src = model->params_memory;
    float* dst = kept;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        memcpy(dst, src, held[i] * sizeof(float));
        src += model->param_sizes[i];
        dst += held[i];
    }
    free(model->params_memory);
    model->params_memory = kept;
    model->params_floats = total;
    point_parameters(&model->params, kept, held);
    float** ptrs = (float**)&model->params;
    for (int t = 0; t < NUM_LORA_TARGETS; t++) ptrs[LORA_BASE_TENSOR[t]] = nullptr;
    const size_t C = c.channels;
    model->dequant = (float*)malloc_check(4 * C * C * sizeof(float), "dequantized block matrix");
    model->dequant_absmax =
        (float*)malloc_check(nf4_base_max_blocks(c) * sizeof(float), "dequantized block scales");
}

void gpt2_allocate_training_state(GPT2* model, int B, int T, int num_slots = 1) {
    const GPT2Config& c = model->config;
    model->batch_size = B;
    model->seq_len = T;
    model->num_slots = num_slots;
    activation_sizes(model->act_sizes, c, B, T, model->stage.last);
    model->num_activations = 0;
    for (size_t s : model->act_sizes) model->num_activations += s;
    model->acts_memory =
        (float*)malloc_check(num_slots * model->num_activations * sizeof(float), "activations");
    point_activations(&model->acts, model->acts_memory, model->act_sizes);
    model->grads_acts_memory =
        (float*)calloc_check(model->num_activations, sizeof(float), "activation gradients");
    point_activations(&model->grads_acts, model->grads_acts_memory, model->act_sizes);
    if (model->zero.stage < 2) // (ZeRO-2/3: only the shard and the buckets of zero_shards_init)
        model->grads_memory = (float*)calloc_check(model->num_trained_padded, sizeof(float), "gradients");
    if (model->lora.rank == 0) {
        if (model->grads_memory) point_parameters(&model->grads, model->grads_memory, model->param_sizes);
    } else {
        memset(&model->grads, 0, sizeof(model->grads));
        const size_t r = model->lora.rank;
        model->lora_u = (float*)calloc_check(NUM_LORA_TARGETS * c.num_layers * (size_t)B * T * r,
                                             sizeof(float), "LoRA activations u");
        model->lora_du = (float*)calloc_check((size_t)B * T * r, sizeof(float), "LoRA du");
    }
    model->losses = (float*)malloc_check((size_t)B * T * sizeof(float), "losses");
    const size_t C = c.channels, Vp = c.padded_vocab_size;
    if (model->stage.last) // (the classifier's)
        model->wte_packed = (float*)malloc_check(matmul_packed_b_size(Vp, C) * sizeof(float), "packed wte");
    model->inputs.resize((size_t)num_slots * B * T);
    model->targets.resize((size_t)num_slots * B * T);
}

// Points acts (and the saved inputs and targets) at activation slot k.
void gpt2_use_slot(GPT2* model, int k) {
    point_activations(&model->acts, model->acts_memory + (size_t)k * model->num_activations,
                      model->act_sizes);
    model->slot = k;
}
int* gpt2_slot_tokens(GPT2* model, std::vector<int>* tokens) {
    return tokens->data() + (size_t)model->slot * model->batch_size * model->seq_len;
}

// Pipeline parallelism: keeps only stage st's part of the whole model just built or loaded (llmc/pipeline.h):
// its layers, and the outer tensors it runs. The model becomes one of st.num_layers layers whose tensors
// it does not hold have size 0; the forward and backward run it as they run a whole model.
void gpt2_take_stage(GPT2* model, const PipeStage& st) {
    const int L = model->config.num_layers;
    size_t sizes[NUM_PARAMETER_TENSORS];
    pipeline_stage_sizes(model->param_sizes, L, st, sizes);
    size_t total = 0;
    for (size_t n : sizes) total += n;
    float* mine = (float*)malloc_check(total * sizeof(float), "this pipeline stage's parameters");
    pipeline_copy(pipeline_pieces(model->param_sizes, L, st), mine, model->params_memory, /*to_stage=*/true);
    free(model->params_memory);
    model->config.num_layers = st.num_layers;
    memcpy(model->param_sizes, sizes, sizeof(sizes));
    model->num_parameters = model->params_floats = total;
    model->params_memory = model->trained = mine;
    model->num_trained = model->num_trained_padded = total;
    point_parameters(&model->params, mine, sizes);
    model->stage = st;
}

void gpt2_free(GPT2* model) {
    free(model->params_memory);
    free(model->grads_memory);
    free(model->acts_memory);
    free(model->grads_acts_memory);
    free(model->losses);
    free(model->wte_packed);
    free(model->lora_memory);
    free(model->lora_u);
    free(model->lora_du);
    free(model->dequant);
    free(model->dequant_absmax);
    zero_shards_free(&model->zero);
}

// ----------------------------------------------------------------------------------------------------
// 3. forward, backward, update

// Layer l's base matrix of LoRA target t (qkvw, attprojw, fcw, fcprojw) in fp32: the parameter itself, or
// under QLoRA dequantized from NF4 into model->dequant (valid until the next call).
const float* base_matrix(GPT2* model, const LayerParams& lp, int l, int t) {
    if (model->lora.nf4) {
        nf4_dequantize_matrix(model->nf4.matrix[t][l], model->dequant, model->dequant_absmax);
        return model->dequant;
    }
    const float* w[NUM_LORA_TARGETS] = {lp.qkvw, lp.attprojw, lp.fcw, lp.fcprojw};
    return w[t];
}

// Target t's adapter of layer l: A (r, IN), B (OC, r) in the adapter buffer, or in its gradient (from =
// grads_memory); u (B*T, r) in lora_u.
float* lora_a(const GPT2* m, const float* from, int t, int l) {
    int in, out;
    lora_target_shape(m->config, t, &in, &out);
    return (float*)from + m->lora_layout.a_offset[t] + (size_t)l * m->lora.rank * in;
}
float* lora_b(const GPT2* m, const float* from, int t, int l) {
    int in, out;
    lora_target_shape(m->config, t, &in, &out);
    return (float*)from + m->lora_layout.b_offset[t] + (size_t)l * m->lora.rank * out;
}
float* lora_u(const GPT2* m, int t, int l) {
    const size_t BTr = (size_t)m->batch_size * m->seq_len * m->lora.rank;
    return m->lora_u + ((size_t)t * m->config.num_layers + l) * BTr;
}

// One of a block's four matmuls, target t of layer l: out = inp.W^T + bias, plus the adapter's
// s.(inp.A^T).B^T when the matrix has one. inp (B,T,IN) -> out (B,T,OC).
void block_matmul_forward(GPT2* model, const LayerParams& lp, int l, int t, float* out, const float* inp,
                          const float* bias, int B, int T, int IN, int OC) {
    matmul_forward(out, inp, base_matrix(model, lp, l, t), bias, B, T, IN, OC, nullptr);
    if (lora_has(model->lora, t)) {
        const float* a = model->lora_memory;
        lora_forward(out, lora_u(model, t, l), inp, lora_a(model, a, t, l), lora_b(model, a, t, l),
                     lora_scale(model->lora), B * T, IN, OC, model->lora.rank);
    }
}
// Its backward: dinp through W (and the adapter), dweight and dbias unless frozen (null), the adapter's
// dA and dB.
void block_matmul_backward(GPT2* model, const LayerParams& lp, int l, int t, float* dinp, float* dweight,
                           float* dbias, const float* dout, const float* inp, int B, int T, int IN, int OC) {
    matmul_backward(dinp, dweight, dbias, dout, inp, base_matrix(model, lp, l, t), B, T, IN, OC);
    if (lora_has(model->lora, t)) {
        const float *a = model->lora_memory, *g = model->grads_memory;
        lora_backward(dinp, lora_a(model, g, t, l), lora_b(model, g, t, l), model->lora_du, dout, inp,
                      lora_u(model, t, l), lora_a(model, a, t, l), lora_b(model, a, t, l),
                      lora_scale(model->lora), B * T, IN, OC, model->lora.rank);
    }
}

// ----------------------------------------------------------------------------------------------------
// ZeRO-2/3: where the forward and backward find a unit's parameters and put its gradient. At stages 0 and
// 1 these are the whole buffers. At stage 2 the backward adds each unit's gradient into a zeroed bucket and
// reduce-scatters it as soon as the unit is done (zero_grads_done), so only this rank's slice is summed
// over the micro-steps; at stage 3 the parameters are gathered from every rank's slice into a bucket
// before use as well, the next layer's gather running while this one computes. A gathered unit is kept
// until the next update: the forward's last two layers are the backward's first two, and the embeddings
// are gathered once per update.

// (unit_point, llmc/zero.h, lays a ParameterTensors over a unit's bucket.)

// Starts gathering unit u into bucket b, unless b already holds it at the current param_version.
void zero_fetch_start(GPT2* m, ZeroBucket* b, int u) {
    ZeroShards& z = m->zero;
    if (b->unit == u && b->version == m->param_version) return;
    pg_wait(z.pg, &b->gather); // the bucket's previous gather (its unit has been used by now)
    const ZeroUnit& unit = z.units.units[u];
    pg_allgather_start(z.pg, z.param_shard + unit.shard_offset, b->data, unit.slice, &b->gather);
    b->unit = u;
    b->version = m->param_version;
}
// Unit u's parameters in bucket b, complete.
float* zero_fetch(GPT2* m, ZeroBucket* b, int u) {
    zero_fetch_start(m, b, u);
    pg_wait(m->zero.pg, &b->gather);
    return b->data;
}
// MPI moves a non-blocking transfer only inside MPI calls: the layers call this between their big pieces
// of work so that the next layer's gather proceeds while they compute.
void zero_progress(GPT2* m) {
    if (m->zero.stage < 3) return;
    for (ZeroBucket& b : m->zero.layer) pg_progress(m->zero.pg, &b.gather);
}

// The parameters of layer l for a pass that goes on to layer `next` (l + 1 forward, l - 1 backward): at
// stage 3 gathered, and next's gather started.
LayerParams gpt2_layer_params(GPT2* m, int l, int next) {
    const size_t C = m->config.channels;
    if (m->zero.stage < 3) return layer_params(m->params, l, C);
    ZeroShards& z = m->zero;
    float* bucket = zero_fetch(m, &z.layer[l % 2], 1 + l);
    if (next >= 0 && next < m->config.num_layers) zero_fetch_start(m, &z.layer[next % 2], 1 + next);
    ParameterTensors t = {};
    unit_point(&t, bucket, z.units.units[1 + l]);
    return layer_params(t, 0, C);
}
// The tensors outside the layers (wte, wpe, lnfw, lnfb; at stage 3 the others are null), for a pass whose
// first layer is first_layer (its gather is started first).
ParameterTensors gpt2_outer_params(GPT2* m, int first_layer) {
    if (m->zero.stage < 3) return m->params;
    ZeroShards& z = m->zero;
    const int L = m->config.num_layers;
    zero_fetch_start(m, &z.layer[first_layer % 2], 1 + first_layer);
    ParameterTensors t = {};
    unit_point(&t, zero_fetch(m, &z.embed, 0), z.units.units[0]);
    unit_point(&t, zero_fetch(m, &z.final_ln, L + 1), z.units.units[L + 1]);
    return t;
}

// Where the backward adds the gradients of wte, wpe, lnfw, lnfb: at stages 2 and 3 zeroed buckets.
ParameterTensors gpt2_outer_grads(GPT2* m) {
    if (m->zero.stage < 2) return m->grads;
    ZeroShards& z = m->zero;
    const ZeroUnit &ue = z.units.units[0], &uf = z.units.units[m->config.num_layers + 1];
    memset(z.grad_embed, 0, ue.padded * sizeof(float));
    memset(z.grad_unit, 0, uf.padded * sizeof(float));
    ParameterTensors g = {};
    unit_point(&g, z.grad_embed, ue);
    unit_point(&g, z.grad_unit, uf);
    return g;
}
// Where it adds layer l's: at stages 2 and 3 a zeroed bucket (so the final LayerNorm's must be done).
LayerParams gpt2_layer_grads(GPT2* m, int l) {
    const size_t C = m->config.channels;
    if (m->zero.stage < 2) return layer_params(m->grads, l, C);
    ZeroShards& z = m->zero;
    const ZeroUnit& u = z.units.units[1 + l];
    memset(z.grad_unit, 0, u.padded * sizeof(float));
    ParameterTensors g = {};
    unit_point(&g, z.grad_unit, u);
    return layer_params(g, 0, C);
}
// Unit u's gradient of this micro-step is complete (stages 2 and 3): reduce-scatter it and add this rank's
// slice, averaged over ranks, into grad_shard.
void zero_grads_done(GPT2* m, int u) {
    ZeroShards& z = m->zero;
    if (z.stage < 2) return;
    const ZeroUnit& unit = z.units.units[u];
    float* bucket = u == 0 ? z.grad_embed : z.grad_unit;
    float* mine = bucket + (size_t)z.pg->rank * unit.slice;
    pg_reduce_scatter_sum(z.pg, bucket, mine, unit.slice);
    float* acc = z.grad_shard + unit.shard_offset;
    const float scale = 1.0f / (float)z.pg->num_ranks;
#pragma omp parallel for
    for (size_t i = 0; i < unit.slice; i++) acc[i] += mine[i] * scale;
}

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
    memcpy(gpt2_slot_tokens(model, &model->inputs), inputs, (size_t)B * T * sizeof(int));
    if (targets) memcpy(gpt2_slot_tokens(model, &model->targets), targets, (size_t)B * T * sizeof(int));

    const ParameterTensors p = gpt2_outer_params(model, 0); // (ZeRO-3: gathered)
    const ActivationTensors& a = model->acts;
    const size_t BTC = (size_t)B * T * C;
    // (a later pipeline stage: a.encoded holds the previous stage's output, received)
    if (model->stage.first) encoder_forward(a.encoded, inputs, p.wte, p.wpe, B, T, C);
    for (int l = 0; l < L; l++) {
        const float* residual = layer_input(a, l, B, T, C);
        const LayerParams lp = gpt2_layer_params(model, l, l + 1);
        const LayerActs la = layer_acts(a, l, B, T, C, NH);
        layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, residual, lp.ln1w, lp.ln1b, B, T, C);
        block_matmul_forward(model, lp, l, LORA_QKV, la.qkv, la.ln1, lp.qkvb, B, T, C, 3 * C);
        zero_progress(model);
        attention_forward(la.atty, la.att, la.qkv, B, T, C, NH);
        block_matmul_forward(model, lp, l, LORA_ATTPROJ, la.attproj, la.atty, lp.attprojb, B, T, C, C);
        residual_forward(la.residual2, residual, la.attproj, BTC);
        layernorm_forward(la.ln2, la.ln2_mean, la.ln2_rstd, la.residual2, lp.ln2w, lp.ln2b, B, T, C);
        zero_progress(model);
        block_matmul_forward(model, lp, l, LORA_FC, la.fch, la.ln2, lp.fcb, B, T, C, 4 * C);
        gelu_forward(la.fch_gelu, la.fch, BTC * 4);
        block_matmul_forward(model, lp, l, LORA_FCPROJ, la.fcproj, la.fch_gelu, lp.fcprojb, B, T, 4 * C, C);
        residual_forward(la.residual3, la.residual2, la.fcproj, BTC);
    }
    if (!model->stage.last) { // a pipeline stage before the last: its output goes on to the next stage
        model->mean_loss = targets ? 0.0f : -1.0f; // (the loss is the last stage's)
        return;
    }
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, layer_input(a, L, B, T, C), p.lnfw, p.lnfb, B, T, C);
    // the classifier, tied to wte; its packed copy is made once per update, not once per forward
    if (model->wte_packed_version != model->param_version) {
        matmul_pack_b_all(model->wte_packed, MatrixView{p.wte, 1, (size_t)C}, Vp, C);
        model->wte_packed_version = model->param_version;
    }
    matmul_forward(a.logits, a.lnf, p.wte, nullptr, B, T, C, Vp, model->wte_packed);
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

// x[0..n) = 0 on every thread: one core alone writes zeros at about half the rate the memory takes (d12's
// 500 MB of gradients: 48 ms on one core, 25 on two, on the AVX-512 Xeon of dev/results/).
void zero_floats(float* x, size_t n) {
    const size_t chunk = 1 << 18;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < ceil_div(n, chunk); c++)
        memset(x + c * chunk, 0, std::min(chunk, n - c * chunk) * sizeof(float));
}

void gpt2_zero_grad(GPT2* model) {
    if (model->zero.stage >= 2) {
        zero_floats(model->zero.grad_shard, model->zero.units.shard_size);
    } else {
        zero_floats(model->grads_memory, model->num_trained_padded);
    }
}

// Backward pass of the last forward of the current slot (which must have had targets), adding into the
// parameter gradients. loss_scale = d(objective)/d(mean loss of this micro-batch): 1/grad_accum_steps when
// micro-batches are averaged into one optimizer step. A pipeline stage before the last starts from
// doutput (B,T,C), the gradient of its output that the next stage sent; a stage after the first leaves the
// gradient of its input in grads_acts.encoded for the previous stage.
void gpt2_backward(GPT2* model, float loss_scale, const float* doutput = nullptr) {
    if (model->mean_loss < 0) fail("gpt2_backward: the last forward ran without targets");
    const GPT2Config& cfg = model->config;
    const int B = model->batch_size, T = model->seq_len;
    const int V = cfg.vocab_size, Vp = cfg.padded_vocab_size, L = cfg.num_layers, NH = cfg.num_heads,
              C = cfg.channels;
    const size_t BTC = (size_t)B * T * C;
    // (ZeRO-2/3: the gradients go to buckets, reduce-scattered unit by unit; ZeRO-3: parameters gathered)
    const ParameterTensors p = gpt2_outer_params(model, L - 1), g = gpt2_outer_grads(model);
    const ActivationTensors &a = model->acts, &da = model->grads_acts; // da: d loss / d activation
    zero_floats(model->grads_acts_memory, model->num_activations);

    if (model->stage.last) {
        crossentropy_softmax_backward(da.logits, a.probs, gpt2_slot_tokens(model, &model->targets),
                                      loss_scale / (B * T), B, T, V, Vp);
        matmul_backward(da.lnf, g.wte, nullptr, da.logits, a.lnf, p.wte, B, T, C, Vp);
        layernorm_backward(layer_input(da, L, B, T, C), g.lnfw, g.lnfb, da.lnf, layer_input(a, L, B, T, C),
                           p.lnfw, a.lnf_mean, a.lnf_rstd, B, T, C);
        zero_grads_done(model, L + 1);
    } else {
        if (doutput == nullptr) fail("gpt2_backward: a pipeline stage before the last needs doutput");
        memcpy(layer_input(da, L, B, T, C), doutput, BTC * sizeof(float));
    }

    // the layers in reverse, each in reverse of its forward:
    // ln1 -> qkv -> attention -> attproj -> + residual -> ln2 -> fc -> gelu -> fcproj -> + residual2
    for (int l = L - 1; l >= 0; l--) {
        const float* residual = layer_input(a, l, B, T, C);
        float* dresidual = layer_input(da, l, B, T, C);
        const LayerParams lp = gpt2_layer_params(model, l, l - 1), lg = gpt2_layer_grads(model, l);
        const LayerActs la = layer_acts(a, l, B, T, C, NH), dla = layer_acts(da, l, B, T, C, NH);
        residual_backward(dla.residual2, dla.fcproj, dla.residual3, BTC);
        block_matmul_backward(model, lp, l, LORA_FCPROJ, dla.fch_gelu, lg.fcprojw, lg.fcprojb, dla.fcproj,
                              la.fch_gelu, B, T, 4 * C, C);
        gelu_backward(dla.fch, la.fch, dla.fch_gelu, BTC * 4);
        zero_progress(model);
        block_matmul_backward(model, lp, l, LORA_FC, dla.ln2, lg.fcw, lg.fcb, dla.fch, la.ln2, B, T, C,
                              4 * C);
        layernorm_backward(dla.residual2, lg.ln2w, lg.ln2b, dla.ln2, la.residual2, lp.ln2w, la.ln2_mean,
                           la.ln2_rstd, B, T, C);
        residual_backward(dresidual, dla.attproj, dla.residual2, BTC);
        block_matmul_backward(model, lp, l, LORA_ATTPROJ, dla.atty, lg.attprojw, lg.attprojb, dla.attproj,
                              la.atty, B, T, C, C);
        zero_progress(model);
        attention_backward(dla.qkv, dla.atty, la.qkv, la.att, B, T, C, NH);
        block_matmul_backward(model, lp, l, LORA_QKV, dla.ln1, lg.qkvw, lg.qkvb, dla.qkv, la.ln1, B, T, C,
                              3 * C);
        layernorm_backward(dresidual, lg.ln1w, lg.ln1b, dla.ln1, residual, lp.ln1w, la.ln1_mean, la.ln1_rstd,
                           B, T, C);
        zero_grads_done(model, 1 + l);
    }
    if (g.wte != nullptr && model->stage.first) // (not LoRA; a later stage sends da.encoded back)
        encoder_backward(g.wte, g.wpe, da.encoded, gpt2_slot_tokens(model, &model->inputs), B, T, C);
    zero_grads_done(model, 0);
}

// ----------------------------------------------------------------------------------------------------
// the optimizer: AdamW on this process's shard of the trained parameters (the model, or the LoRA adapters)
//
// Data parallelism (llmc/zero.h has the arithmetic, llmc/mpi_cpu.h the MPI calls): every process runs
// forward and backward on its own slice of the global batch, then
//   ZeRO stage 0:  all-reduce (average) the gradients; every process updates every parameter;
//   ZeRO stage 1:  reduce-scatter the gradients, so process r receives the average for its 1/N slice of
//                  the flat parameter buffer; it keeps AdamW's m and v only for that slice and updates only
//                  it; then all-gather the updated slices so every process has the whole model again.
//   ZeRO stage 2:  the backward has already reduce-scattered the gradients unit by unit (zero_grads_done):
//                  process r holds the averaged gradient of its slice of every unit; it updates those
//                  slices, then each unit is all-gathered so every process has the whole model again.
//   ZeRO stage 3:  the same, but the parameters stay sharded: the update writes this process's slices,
//                  and the next forward gathers each unit when it needs it.
// With one process every stage is the plain single-process update.
//
// AdamW, per parameter, with g the (clipped) gradient and t the 1-based step:
//   m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
//   mhat = m / (1 - beta1^t)             vhat = v / (1 - beta2^t)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)     (decoupled weight decay, matrices only)
// With -qo 1, m and v are kept as 8-bit codes with one scale per block (llmc/adamw8bit.h).

struct Optimizer {
    int zero_stage = 0;
    // pipeline parallelism: the optimizer of one stage, its data-parallel group the pg of gpt2_update
    ProcessGroup* pipe = nullptr; // this replica's stages: the gradient norm sums over them
    ProcessGroup* tie = nullptr;  // its first and last stage, which both hold wte (the embedding and the
                                  // tied classifier): wte's gradient is their two parts summed; the first
                                  // stage updates wte, the last receives it (its ranges leave wte out)
    ShardLayout layout; // which slice of the trained buffer this process updates; at stages 2 and 3 only
                        // its shard_size (the sum of its unit slices) and a nominal shard_offset
    std::vector<ShardRange> ranges;    // that shard cut at tensor (and unit) boundaries
    bool decay[NUM_PARAMETER_TENSORS]; // weight decay on tensor i (the matrices: every LoRA tensor)
    float* grad_shard = nullptr;       // (shard_size) the averaged gradient of the shard (stage 1; stages 2
                                       // and 3: model->zero.grad_shard, which the backward fills)
    // fp32 AdamW state (shard_size each)
    float* m = nullptr;
    float* v = nullptr;
    // 8-bit AdamW state: codes (shard_size each), one fp32 absmax per block of each range
    bool use_8bit = false;
    int quant_block = 0; // values per absmax scale (-qb)
    uint8_t* m_codes = nullptr;
    uint8_t* v_codes = nullptr;
    float* m_absmax = nullptr;
    float* v_absmax = nullptr;
    std::vector<size_t> block_offset; // first block of each range
    size_t num_blocks = 0;
};

// ZeRO-2/3: the units, the gradient shard and buckets, and at stage 3 the parameter buckets.
void zero_shards_init(GPT2* model, ProcessGroup* pg, int stage) {
    ZeroShards& z = model->zero;
    const int L = model->config.num_layers;
    z.stage = stage;
    z.pg = pg;
    z.units = gpt2_zero_units(model->param_sizes, L, pg->rank, pg->num_ranks);
    size_t largest_layer = 0, largest_other = 0;
    for (int u = 1; u <= L + 1; u++) largest_other = std::max(largest_other, z.units.units[u].padded);
    for (int u = 1; u <= L; u++) largest_layer = std::max(largest_layer, z.units.units[u].padded);
    const size_t S = z.units.shard_size, E = z.units.units[0].padded, F = z.units.units[L + 1].padded;
    z.grad_shard = (float*)calloc_check(S, sizeof(float), "ZeRO gradient shard");
    z.grad_embed = (float*)calloc_check(E, sizeof(float), "ZeRO embedding gradient bucket");
    z.grad_unit = (float*)calloc_check(largest_other, sizeof(float), "ZeRO layer gradient bucket");
    z.bucket_floats = E + largest_other;
    if (stage < 3) return;
    z.embed.data = (float*)calloc_check(E, sizeof(float), "ZeRO-3 embedding bucket");
    z.final_ln.data = (float*)calloc_check(F, sizeof(float), "ZeRO-3 final LayerNorm bucket");
    for (ZeroBucket& b : z.layer)
        b.data = (float*)calloc_check(largest_layer, sizeof(float), "ZeRO-3 layer bucket");
    z.bucket_floats += E + F + 2 * largest_layer;
}

// ZeRO-3, once the whole model has been loaded and checked: keep only this rank's slices of it.
void zero_shard_parameters(GPT2* model, const Optimizer* opt) {
    ZeroShards& z = model->zero;
    z.param_shard = (float*)calloc_check(z.units.shard_size, sizeof(float), "ZeRO-3 parameter shard");
    for (const ShardRange& r : opt->ranges)
        memcpy(z.param_shard + r.offset_in_shard, model->params_memory + r.global_offset,
               r.count * sizeof(float));
    free(model->params_memory);
    model->params_memory = model->trained = nullptr;
    model->params_floats = 0;
    model->params = ParameterTensors{};
}

// ZeRO-2/3: all-gathers unit u's slices (the parameter shard at stage 3, or the slice of the flat buffer
// at stage 2) into a gradient bucket (free outside the backward) and returns it, in unit order.
float* zero_gather_unit(GPT2* model, int u) {
    ZeroShards& z = model->zero;
    const ZeroUnit& unit = z.units.units[u];
    float* bucket = u == 0 ? z.grad_embed : z.grad_unit;
    float* mine = bucket + (size_t)z.pg->rank * unit.slice;
    if (z.stage == 3) {
        memcpy(mine, z.param_shard + unit.shard_offset, unit.slice * sizeof(float));
    } else {
        zero_unit_copy(unit, bucket, model->params_memory, /*to_unit=*/true);
    }
    pg_allgather(z.pg, mine, bucket, unit.slice);
    return bucket;
}

// Pads the model's trained buffer (the parameters, or with LoRA the adapters) to the layout's length
// (zeros) and allocates the optimizer state for it.
void optimizer_init(Optimizer* opt, GPT2* model, ProcessGroup* pg, int zero_stage, bool use_8bit,
                    int quant_block) {
    const bool lora = model->lora.rank > 0;
    const size_t* sizes = lora ? model->lora_layout.sizes : model->param_sizes;
    const int num_tensors = lora ? model->lora_layout.num_tensors : NUM_PARAMETER_TENSORS;
    for (int i = 0; i < num_tensors; i++) opt->decay[i] = lora || parameter_is_matrix(i);
    opt->zero_stage = zero_stage;
    if (zero_stage >= 2) zero_shards_init(model, pg, zero_stage);
    opt->ranges = zero_optimizer_ranges(sizes, num_tensors, model->num_trained, zero_stage, model->zero.units,
                                        pg->rank, pg->num_ranks, &opt->layout);
    // the last of several pipeline stages does not update its copy of wte: the first stage sends it
    if (model->stage.last && !model->stage.first) {
        std::vector<ShardRange> kept;
        for (const ShardRange& r : opt->ranges)
            if (r.tensor != TENSOR_WTE) kept.push_back(r);
        opt->ranges = kept;
    }
    const size_t P = model->num_trained, P_pad = opt->layout.padded_params, S = opt->layout.shard_size;
    // every process's slice has the same length, so the flat buffers are padded with zeros to P_pad
    // (a new buffer rather than realloc, which would give up malloc_check's huge pages)
    float* padded = (float*)malloc_check(P_pad * sizeof(float), "the trained parameters, padded");
    memcpy(padded, model->trained, P * sizeof(float));
    memset(padded + P, 0, (P_pad - P) * sizeof(float));
    free(model->trained);
    model->trained = padded;
    model->num_trained_padded = P_pad;
    if (lora) {
        model->lora_memory = padded;
    } else {
        model->params_memory = padded;
        model->params_floats = P_pad;
        point_parameters(&model->params, padded, model->param_sizes);
    }
    opt->grad_shard = (zero_stage == 1) ? (float*)calloc_check(S, sizeof(float), "gradient shard") : nullptr;
    opt->use_8bit = use_8bit;
    opt->quant_block = quant_block;
    if (!use_8bit) {
        opt->m = (float*)calloc_check(S, sizeof(float), "AdamW m");
        opt->v = (float*)calloc_check(S, sizeof(float), "AdamW v");
    } else {
        opt->num_blocks = 0;
        opt->block_offset.resize(opt->ranges.size());
        for (size_t r = 0; r < opt->ranges.size(); r++) {
            opt->block_offset[r] = opt->num_blocks;
            opt->num_blocks += ceil_div(opt->ranges[r].count, (size_t)quant_block);
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

// AdamW on n contiguous parameters (fp32 moments), of the gradient grad_scale * g (the clipping scale,
// applied as g is read: one pass over the gradients fewer than scaling them first).
void adamw_update(float* p, const float* g, float* m, float* v, size_t n, float grad_scale, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int t) {
    const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        const float gi = g[i] * grad_scale;
        m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        float mhat = m[i] / bc1, vhat = v[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p[i]);
    }
}

// sum of x[i]^2 in double: fixed chunks summed in parallel, then the chunk sums in order, so the result
// does not depend on the number of threads (or on timing). Within a chunk, 32 running sums (four vectors
// of 8 doubles; element i goes to sum i % 32) keep the adds independent, so the loop runs at memory speed
// instead of one dependent add at a time (8 sums, and no prefetch, ran 35% slower on the AVX-512 Xeon).
double sum_of_squares(const float* x, size_t n) {
    typedef float vec8f __attribute__((vector_size(32)));
    typedef double vec8d __attribute__((vector_size(64)));
    const size_t chunk = 1 << 16, num_chunks = ceil_div(n, chunk);
    std::vector<double> partial(num_chunks);
#pragma omp parallel for
    for (size_t c = 0; c < num_chunks; c++) {
        const size_t end = std::min(n, (c + 1) * chunk);
        vec8d acc[4] = {};
        size_t i = c * chunk;
        for (; i + 32 <= end; i += 32) {
            __builtin_prefetch(x + i +
                               2048); // (8 KiB ahead: one stream a thread is too few misses in flight)
            __builtin_prefetch(x + i + 2048 + 16);
            for (int h = 0; h < 4; h++) {
                vec8f xf;
                memcpy(&xf, x + i + 8 * h, sizeof(xf));
                const vec8d xd = __builtin_convertvector(xf, vec8d);
                acc[h] += xd * xd;
            }
        }
        const vec8d a = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        double sum = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        for (; i < end; i++) sum += (double)x[i] * x[i];
        partial[c] = sum;
    }
    double total = 0.0;
    for (double p : partial) total += p;
    return total;
}

// One optimizer step from the gradients accumulated in model->grads (this process's micro-batches).
// Returns the global gradient norm before clipping; a non-finite norm skips the update.
float gpt2_update(GPT2* model, Optimizer* opt, ProcessGroup* pg, float lr, const AdamWConfig& h, int t) {
    const ShardLayout& lay = opt->layout;
    float* grads = model->grads_memory;
    float* params = model->trained;
    // 1. average the gradients over processes; g = this process's slice of them (shard_size floats)
    //    (stages 2 and 3: the backward did, unit by unit)
    float* g = grads;
    // (a pipeline: the first and the last stage each made part of wte's gradient; the first gets the sum)
    if (opt->tie) pg_allreduce_sum(opt->tie, model->grads.wte, model->param_sizes[TENSOR_WTE]);
    if (opt->zero_stage == 0) {
        pg_allreduce_mean(pg, grads, lay.padded_params);
    } else if (opt->zero_stage == 1) {
        pg_reduce_scatter_mean(pg, grads, opt->grad_shard, lay.shard_size);
        g = opt->grad_shard;
    } else {
        g = model->zero.grad_shard;
    }
    // 2. global gradient norm: squares summed over the slice (in double, fixed order), then over processes
    //    (a pipeline: then over the stages; wte is in the first stage's ranges only)
    double sumsq = 0.0;
    for (const ShardRange& rg : opt->ranges) sumsq += sum_of_squares(g + rg.offset_in_shard, rg.count);
    if (opt->zero_stage >= 1) sumsq = pg_allreduce_sum_double(pg, sumsq);
    if (opt->pipe) sumsq = pg_allreduce_sum_double(opt->pipe, sumsq);
    const float norm = (float)sqrt(sumsq);
    // a non-finite norm (a NaN or inf in the model, the data or an overflow; every rank has the same norm):
    // no update at all, so one bad batch cannot turn the parameters into NaN; the loop counts the skips
    if (!std::isfinite(norm)) return norm;
    // 3. clip: scale the gradient so its norm is at most grad_clip (AdamW applies the scale as it reads the
    //    gradient: one pass over the gradients fewer than scaling them first)
    const float grad_scale = (h.grad_clip > 0.0f && norm > h.grad_clip) ? h.grad_clip / norm : 1.0f;
    // 4. AdamW, tensor by tensor (weight decay only on matrices)
    for (size_t r = 0; r < opt->ranges.size(); r++) {
        const ShardRange& rg = opt->ranges[r];
        float wd = opt->decay[rg.tensor] ? h.weight_decay : 0.0f;
        // (stage 3: the parameter shard is laid out like the gradient shard)
        float* p =
            opt->zero_stage == 3 ? model->zero.param_shard + rg.offset_in_shard : params + rg.global_offset;
        const float* gr = g + rg.offset_in_shard;
        if (!opt->use_8bit) {
            adamw_update(p, gr, opt->m + rg.offset_in_shard, opt->v + rg.offset_in_shard, rg.count,
                         grad_scale, lr, h.beta1, h.beta2, h.eps, wd, t);
        } else {
            size_t b = opt->block_offset[r];
            adamw8bit_update(p, gr, opt->m_codes + rg.offset_in_shard, opt->m_absmax + b,
                             opt->v_codes + rg.offset_in_shard, opt->v_absmax + b, rg.count, opt->quant_block,
                             lr, h.beta1, h.beta2, h.eps, wd, t, grad_scale);
        }
    }
    // cached copies of the parameters (the packed wte) are stale now; not so under LoRA (a frozen wte)
    if (model->lora.rank == 0) model->param_version++;
    // 5. ZeRO-1 and 2: every process gets everyone's updated slices (stage 2 unit by unit, into the flat
    //    buffer); ZeRO-3 gathers them when the next pass needs them
    if (opt->zero_stage == 1) pg_allgather(pg, params + lay.shard_offset, params, lay.shard_size);
    if (opt->tie) pg_broadcast(opt->tie, model->params.wte, model->param_sizes[TENSOR_WTE], 0);
    if (opt->zero_stage == 2) {
        for (size_t u = 0; u < model->zero.units.units.size(); u++) {
            const float* bucket = zero_gather_unit(model, (int)u);
            zero_unit_copy(model->zero.units.units[u], (float*)bucket, params, /*to_unit=*/false);
        }
    }
    return norm;
}

// ----------------------------------------------------------------------------------------------------
// 4. the program: this backend's side of llmc/run_plan.h (which has the run plan, resume, validation,
// sampling and the training loop), and main

// Pipeline parallelism (llmc/pipeline.h has the stages and the schedules): this process runs one stage of
// one replica. pipe holds the replica's stages, stage s its rank s. A forward sends the stage's output
// (B,T,C) to the next stage, a backward the gradient of its input (B,T,C) to the previous one; the sends
// are non-blocking (two neighbours may send to each other at once under 1F1B), the receives block, and
// the time this stage spends blocked is its idle time: the bubble.
constexpr int TAG_ACTIVATION = 1, TAG_GRADIENT = 2;
struct Pipeline {
    PipeSchedule schedule = PIPE_1F1B;
    ProcessGroup pipe;                    // this replica's stages
    ProcessGroup tie;                     // its first and last stage (both hold wte)
    std::vector<PgRequest> forward_sends; // one per activation slot: the slot's output, until received
    PgRequest backward_send;              // grads_acts.encoded, until received
    float* grad_output = nullptr;         // (B,T,C) the gradient of this stage's output, received
    std::vector<float> logits;            // (Vp) the next-token logits, sent from the last stage
    std::vector<double> bubble;           // each stage's idle fraction in the last step's schedule
    int num_micro = 0;                    // of its micro-batches
};

struct Trainer {
    GPT2 model;
    Optimizer opt;
    ProcessGroup pg; // the whole job
    ProcessGroup dp; // this stage's data-parallel group: pg itself without a pipeline
    Pipeline pipeline;
    int whole_layers = 0; // the whole model's (model.config has the stage's)
    TokenDecoder decoder;
    AdamWConfig adamw;
    double flops_per_step = 0.0; // 6 * parameters * tokens per step: the matmuls of forward and backward
};

// One micro-batch's forward on this stage: its input from the previous stage (a later stage), its output
// sent on (all but the last). Slot `slot`'s activations keep it for the backward.
void pipeline_forward(Trainer* tr, int slot, const int* inputs, const int* targets, int B, int T,
                      double* idle) {
    GPT2& m = tr->model;
    Pipeline& pl = tr->pipeline;
    const size_t BTC = (size_t)B * T * m.config.channels;
    const int s = m.stage.stage;
    {
        SecondsTimer waiting{idle};
        pg_wait(&pl.pipe, &pl.forward_sends[slot]); // the slot's previous output has arrived
        if (!m.stage.first)
            pg_recv(&pl.pipe, m.acts_memory + (size_t)slot * m.num_activations, BTC, s - 1,
                    TAG_ACTIVATION); // (acts.encoded of the slot: its first tensor)
    }
    gpt2_use_slot(&m, slot);
    gpt2_forward(&m, inputs, targets, B, T);
    if (!m.stage.last) {
        const float* out = layer_input(m.acts, m.config.num_layers, B, T, m.config.channels);
        pg_send_start(&pl.pipe, out, BTC, s + 1, TAG_ACTIVATION, &pl.forward_sends[slot]);
    }
}

// One micro-batch's backward on this stage: the gradient of its output from the next stage (all but the
// last), the gradient of its input sent back (all but the first).
void pipeline_backward(Trainer* tr, int slot, float loss_scale, double* idle) {
    GPT2& m = tr->model;
    Pipeline& pl = tr->pipeline;
    const size_t BTC = (size_t)m.batch_size * m.seq_len * m.config.channels;
    const int s = m.stage.stage;
    {
        SecondsTimer waiting{idle};
        if (!m.stage.last) pg_recv(&pl.pipe, pl.grad_output, BTC, s + 1, TAG_GRADIENT);
        pg_wait(&pl.pipe, &pl.backward_send); // grads_acts is about to be overwritten
    }
    gpt2_use_slot(&m, slot);
    gpt2_backward(&m, loss_scale, m.stage.last ? nullptr : pl.grad_output);
    if (!m.stage.first)
        pg_send_start(&pl.pipe, m.grads_acts.encoded, BTC, s - 1, TAG_GRADIENT, &pl.backward_send);
}

// The sum over the replica's stages of x (the loss is the last stage's; the others give 0).
double pipeline_from_last(Trainer* tr, double x) {
    return pg_allreduce_sum_double(&tr->pipeline.pipe, tr->model.stage.last ? x : 0.0);
}

// A step's forwards and backwards: one after the other in one process; on a pipeline stage, in the order
// of its schedule, each stage's idle fraction gathered for the step line. Each micro-batch's mean loss
// weighs 1/num_micro in the step's objective.
double trainer_forward_backward(Trainer* tr, const int* inputs, const int* targets, int num_micro) {
    GPT2& m = tr->model;
    const int B = m.batch_size, T = m.seq_len;
    const size_t BT = (size_t)B * T;
    gpt2_zero_grad(&m);
    double loss_sum = 0.0;
    if (tr->model.stage.num_stages == 1) {
        for (int micro = 0; micro < num_micro; micro++) {
            watchdog_progress("a training micro-step", -1);
            gpt2_forward(&m, inputs + micro * BT, targets + micro * BT, B, T);
            gpt2_backward(&m, 1.0f / num_micro);
            loss_sum += m.mean_loss;
        }
        return loss_sum;
    }
    Pipeline& pl = tr->pipeline;
    const int P = m.stage.num_stages, s = m.stage.stage, slots = m.num_slots;
    if (pipeline_slots(pl.schedule, P, num_micro, s) != slots)
        fail("pipeline: %d micro-batches need %d activation slots, %d allocated", num_micro,
             pipeline_slots(pl.schedule, P, num_micro, s), slots);
    const double start = omp_get_wtime();
    double idle = 0.0;
    for (const PipeAction& a : pipeline_actions(pl.schedule, P, num_micro, s)) {
        watchdog_progress(a.backward ? "a pipeline backward" : "a pipeline forward", -1);
        if (!a.backward) {
            pipeline_forward(tr, a.micro % slots, inputs + a.micro * BT, targets + a.micro * BT, B, T, &idle);
            if (m.stage.last) loss_sum += m.mean_loss;
        } else {
            pipeline_backward(tr, a.micro % slots, 1.0f / num_micro, &idle);
        }
    }
    { // (the barrier: a stage that is done waits for the others, so every stage's window is the step's)
        SecondsTimer waiting{&idle};
        for (PgRequest& r : pl.forward_sends) pg_wait(&pl.pipe, &r);
        pg_wait(&pl.pipe, &pl.backward_send);
        pg_barrier(&pl.pipe);
    }
    const double seconds = omp_get_wtime() - start;
    const double mine = seconds > 0.0 ? idle / seconds : 0.0;
    pl.bubble.assign(P, 0.0);
    pl.num_micro = num_micro;
    pg_allgather_bytes(&pl.pipe, &mine, pl.bubble.data(), sizeof(double));
    return pipeline_from_last(tr, loss_sum);
}
float trainer_update(Trainer* tr, float lr, int t) {
    return gpt2_update(&tr->model, &tr->opt, &tr->dp, lr, tr->adamw, t);
}
float trainer_mean_over_ranks(Trainer* tr, float x) {
    return pg_allreduce_mean_float(&tr->pg, x);
}
// A forward without a backward through every stage (validation, sampling): the loss and the logits are
// the last stage's.
void pipeline_forward_only(Trainer* tr, const int* inputs, const int* targets, int B, int T) {
    double idle = 0.0;
    pipeline_forward(tr, 0, inputs, targets, B, T, &idle);
    pg_wait(&tr->pipeline.pipe, &tr->pipeline.forward_sends[0]);
}
float trainer_eval_loss(Trainer* tr, const int* inputs, const int* targets) {
    GPT2& m = tr->model;
    if (tr->model.stage.num_stages == 1) {
        gpt2_forward(&m, inputs, targets, m.batch_size, m.seq_len);
        return m.mean_loss;
    }
    pipeline_forward_only(tr, inputs, targets, m.batch_size, m.seq_len);
    return (float)pipeline_from_last(tr, m.mean_loss);
}
// the forward runs on the prefix only (B=1, T=t)
const float* trainer_next_token_logits(Trainer* tr, const int* tokens, int t) {
    GPT2& m = tr->model;
    const size_t Vp = m.config.padded_vocab_size;
    if (tr->model.stage.num_stages == 1) {
        gpt2_forward(&m, tokens, nullptr, 1, t);
        return m.acts.logits + (size_t)(t - 1) * Vp;
    }
    Pipeline& pl = tr->pipeline;
    pipeline_forward_only(tr, tokens, nullptr, 1, t);
    if (m.stage.last) memcpy(pl.logits.data(), m.acts.logits + (size_t)(t - 1) * Vp, Vp * sizeof(float));
    pg_broadcast(&pl.pipe, pl.logits.data(), Vp, m.stage.num_stages - 1);
    return pl.logits.data();
}
void trainer_barrier(Trainer* tr) {
    pg_barrier(&tr->pg);
}
void trainer_allgather_bytes(Trainer* tr, const void* mine, void* all, size_t bytes) {
    pg_allgather_bytes(&tr->pg, mine, all, bytes);
}
[[noreturn]] void trainer_exit(Trainer* tr, int status) {
    process_group_finalize(&tr->pg);
    exit(status);
}
void trainer_print_step_end(Trainer* tr, double seconds, bool) {
    printf(" | %.1f GFLOP/s", tr->flops_per_step / seconds / 1e9);
    const std::vector<double>& b = tr->pipeline.bubble;
    if (!b.empty()) pipeline_print_bubble(b, tr->pipeline.num_micro); // a pipeline's idle time
    printf("\n");
}

// Checkpoints (llmc/state_file.h): the model file, and this rank's state: the header, then m and v (fp32),
// or for 8-bit AdamW the m and v codes and their scales.
// With LoRA the model file is the merged model, W + s.B.A in every adapted matrix (from the dequantized
// NF4 base under QLoRA): a plain fp32 llm.c file (llmc/lora.h's lora_write_merged).
void gpt2_write_merged(GPT2* m, const char* path) {
    const GPT2Config& c = m->config;
    const float** held = (const float**)&m->params;
    auto base = [&](int t, int l, float* W) {
        int in, out;
        lora_target_shape(c, t, &in, &out);
        memcpy(W, base_matrix(m, layer_params(m->params, l, c.channels), l, t),
               (size_t)out * in * sizeof(float));
    };
    lora_write_merged(
        path, c, m->lora, m->lora_layout, m->lora_memory, [&](int i) { return held[i]; }, base);
}

// Called on every rank; rank 0 writes. At ZeRO-3 every rank takes part in gathering the model unit by unit
// into rank 0's temporary fp32 copy (4 bytes per parameter, for the length of the write).
void trainer_write_model(Trainer* tr, const std::string& path) {
    GPT2& m = tr->model;
    const int stages = m.stage.num_stages;
    if (stages > 1) { // the first replica's stages send their parts to rank 0, which writes them whole
        if (tr->pg.rank >= stages) return;
        Pipeline& pl = tr->pipeline;
        if (m.stage.stage > 0) {
            PgRequest sent;
            pg_send_start(&pl.pipe, m.params_memory, m.num_parameters, 0, TAG_ACTIVATION, &sent);
            pg_wait(&pl.pipe, &sent);
            return;
        }
        GPT2Config whole_config = m.config;
        whole_config.num_layers = tr->whole_layers;
        size_t whole_sizes[NUM_PARAMETER_TENSORS];
        gpt2_parameter_sizes(whole_config, whole_sizes);
        std::vector<float> whole(gpt2_num_parameters(whole_config)), part;
        for (int s = 0; s < stages; s++) {
            const PipeStage st = pipeline_model_stage(whole_config, stages, s);
            const size_t n = pipeline_stage_num_params(whole_sizes, tr->whole_layers, st);
            part.resize(n);
            if (s == 0) {
                memcpy(part.data(), m.params_memory, n * sizeof(float));
            } else {
                pg_recv(&pl.pipe, part.data(), n, s, TAG_ACTIVATION);
            }
            pipeline_copy(pipeline_pieces(whole_sizes, tr->whole_layers, st), part.data(), whole.data(),
                          /*to_stage=*/false);
        }
        checkpoint_write(path.c_str(), whole_config, whole.data(), whole.size(), false);
        return;
    }
    if (m.zero.stage == 3) {
        std::vector<float> whole(tr->pg.rank == 0 ? m.num_parameters : 0);
        for (size_t u = 0; u < m.zero.units.units.size(); u++) {
            float* bucket = zero_gather_unit(&m, (int)u);
            if (tr->pg.rank == 0)
                zero_unit_copy(m.zero.units.units[u], bucket, whole.data(), /*to_unit=*/false);
        }
        if (tr->pg.rank == 0) checkpoint_write(path.c_str(), m.config, whole.data(), m.num_parameters, false);
        return;
    }
    if (tr->pg.rank != 0) return;
    if (m.lora.rank > 0) {
        gpt2_write_merged(&m, path.c_str());
    } else {
        checkpoint_write(path.c_str(), m.config, m.params_memory, m.num_parameters, false);
    }
}
StateHeader trainer_state_header(const Trainer* tr, int step) {
    const Optimizer& opt = tr->opt;
    StateHeader h;
    h.num_ranks = tr->pg.num_ranks;
    h.rank = tr->pg.rank;
    h.zero_stage = opt.zero_stage;
    h.use_8bit = opt.use_8bit;
    h.step = step;
    h.quant_block = opt.quant_block;
    h.shard_size = opt.layout.shard_size;
    h.shard_offset = opt.layout.shard_offset;
    h.num_parameters = tr->model.num_trained;
    return h;
}
StateBuffers trainer_state_buffers(Trainer* tr, const StateHeader& h, const std::string& path) {
    if (h.has_master)
        fail("'%s' holds the GPU trainer's fp32 master weights: resume it with train_gpt2cu", path.c_str());
    Optimizer& opt = tr->opt;
    const size_t S = opt.layout.shard_size;
    StateBuffers b;
    // under LoRA the model file is the merged export: the adapters themselves are saved here (every rank
    // holds all of them)
    if (tr->model.lora.rank > 0)
        state_buffers_add(&b, "LoRA adapters", tr->model.lora_memory, sizeof(float), tr->model.num_trained,
                          STATE_FINITE);
    if (!opt.use_8bit) {
        state_buffers_add(&b, "AdamW m", opt.m, sizeof(float), S, STATE_FINITE);
        state_buffers_add(&b, "AdamW v", opt.v, sizeof(float), S, STATE_NONNEGATIVE);
    } else {
        state_buffers_add(&b, "8-bit AdamW m codes", opt.m_codes, 1, S);
        state_buffers_add(&b, "8-bit AdamW v codes", opt.v_codes, 1, S);
        state_buffers_add(&b, "8-bit AdamW m scales", opt.m_absmax, sizeof(float), opt.num_blocks,
                          STATE_NONNEGATIVE);
        state_buffers_add(&b, "8-bit AdamW v scales", opt.v_absmax, sizeof(float), opt.num_blocks,
                          STATE_NONNEGATIVE);
    }
    return b;
}

#ifndef TESTING // test_gpt2.cpp includes this file for its functions and has its own main

// The memory of this process by category, in bytes: predicted from the model's shape and the flags before
// anything is allocated (check_cpu_memory), and counted from the buffers once they are (the table printed
// at start-up, beside the prediction and the process's resident size).
// The model state follows the ZeRO formulas (llmc/zero.h's zero_bytes_per_param for fp32: 16, 8 + 8/N,
// 4 + 12/N, 16/N bytes per parameter), predicted from P itself; what is allocated is padded to equal
// slices, less than N*ALIGN elements per buffer (stage 1) or per unit (stages 2, 3) more. ZeRO-2/3 also
// hold their buckets, one unit each, which the formulas leave out.
struct CpuMemory {
    double base = 0;    // the frozen base under LoRA (fp32, or NF4 + its fp32 tensors), with its scratch
    double trained = 0; // what the optimizer trains: the parameters, or the adapters (ZeRO-3: a shard)
    double grads = 0;   // their gradients (ZeRO-2/3: a shard)
    double optim = 0;   // AdamW's m and v (fp32, or 8-bit codes and their scales), the ZeRO-1 gradient slice
    double buckets = 0; // ZeRO-2/3: the gradient buckets, and at stage 3 the gathered-parameter buckets
    double acts = 0;    // activations and their gradients (and the adapters' u)
    double total() const { return base + trained + grads + optim + buckets + acts; }
};

// ZeRO-2/3's buckets in floats (zero_shards_init allocates them): the embeddings' gradient and the largest
// other unit's; stage 3 adds the embeddings, the final LayerNorm and two of the largest layer.
double zero_bucket_floats(const GPT2Config& config, int stage, int num_ranks) {
    if (stage < 2) return 0.0;
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(config, sizes);
    const int L = config.num_layers;
    const ZeroUnits z = gpt2_zero_units(sizes, L, 0, num_ranks);
    const double E = (double)z.units[0].padded, F = (double)z.units[L + 1].padded;
    const double layer = (double)z.units[1].padded; // every layer's unit has the same size
    return E + std::max(layer, F) + (stage == 3 ? E + F + 2.0 * layer : 0.0);
}

// num_ranks: the data-parallel group's processes. A pipeline stage st (the whole model: pipeline_stage(L,
// 1, 0)) holds its part of the parameters (llmc/pipeline.h), and the activations of `slots` micro-batches
// (their gradients for one), plus the gradient it receives (B,T,C).
CpuMemory predict_cpu_memory(const GPT2Config& whole, const TrainConfig& cfg, int num_ranks,
                             const PipeStage& st, int slots) {
    GPT2Config config = whole;
    config.num_layers = st.num_layers;
    size_t act[NUM_ACTIVATION_TENSORS];
    activation_sizes(act, config, cfg.B, cfg.T, st.last);
    CpuMemory m;
    for (size_t a : act) m.acts += 4.0 * (slots + 1.0) * (double)a;
    const LoraConfig& lc = cfg.lora;
    const double C = config.channels, BT = (double)cfg.B * cfg.T;
    if (!st.last) m.acts += 4.0 * BT * C;
    size_t whole_sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(whole, whole_sizes);
    double P = (double)pipeline_stage_num_params(whole_sizes, whole.num_layers, st);
    if (lc.rank > 0) {
        m.base = lora_base_bytes_predicted(config, lc.nf4);
        if (lc.nf4) m.base += 4.0 * 4 * C * C * (1.0 + 1.0 / NF4_BLOCK); // one dequantized matrix
        P = (double)lora_layout(config, lc).total;
        m.acts += 4.0 * lc.rank * BT * (NUM_LORA_TARGETS * config.num_layers + 1); // u, du
    }
    const int z = cfg.zero_stage;
    const double N = num_ranks, shard = z >= 1 ? P / N : P;
    m.trained = 4.0 * (z == 3 ? shard : P);
    m.grads = 4.0 * (z >= 2 ? shard : P);
    m.optim = (cfg.use_8bit ? 2.0 * (1.0 + 4.0 / cfg.quant_block) : 8.0) * shard;
    if (z == 1) m.optim += 4.0 * shard;
    m.buckets = 4.0 * zero_bucket_floats(config, z, num_ranks);
    return m;
}

CpuMemory measure_cpu_memory(const GPT2& model, const Optimizer& opt) {
    CpuMemory m;
    const bool lora = model.lora.rank > 0;
    if (lora) {
        m.base = 4.0 * model.params_floats + (double)nf4_base_bytes(model.nf4);
        if (model.lora.nf4)
            m.base += 4.0 * (4.0 * model.config.channels * model.config.channels +
                             nf4_base_max_blocks(model.config));
    }
    const ZeroShards& z = model.zero;
    m.trained = 4.0 * (z.param_shard ? z.units.shard_size : model.num_trained_padded);
    m.grads = 4.0 * (z.grad_shard ? z.units.shard_size : model.num_trained_padded);
    m.optim = (double)optimizer_state_bytes(&opt) + (opt.grad_shard ? 4.0 * opt.layout.shard_size : 0.0);
    m.buckets = 4.0 * z.bucket_floats;
    m.acts = 4.0 * (model.num_slots + 1.0) * model.num_activations;
    if (!model.stage.last) m.acts += 4.0 * model.batch_size * model.seq_len * model.config.channels;
    if (lora) {
        const double BTr = (double)model.batch_size * model.seq_len * model.lora.rank;
        m.acts += 4.0 * BTr * (NUM_LORA_TARGETS * model.config.num_layers + 1);
    }
    return m;
}

void print_memory_table(const CpuMemory& predicted, const CpuMemory& allocated, const GPT2& model,
                        int zero_stage, int num_ranks) {
    const double MiB = 1024.0 * 1024.0;
    const char* base = !model.lora.rank ? "frozen base (none: all trains)"
                       : model.lora.nf4 ? "frozen base (NF4 + fp32 rest)"
                                        : "frozen base (fp32)";
    const char* names[6] = {base,
                            model.lora.rank ? "trained: LoRA adapters" : "trained: parameters",
                            "gradients",
                            "optimizer state",
                            zero_stage == 3 ? "ZeRO buckets (grads, params)" : "ZeRO buckets (gradients)",
                            "activations + their gradients"};
    const double p[6] = {predicted.base,  predicted.trained, predicted.grads,
                         predicted.optim, predicted.buckets, predicted.acts};
    const double a[6] = {allocated.base,  allocated.trained, allocated.grads,
                         allocated.optim, allocated.buckets, allocated.acts};
    char title[64];
    snprintf(title, sizeof(title), "memory (this process, ZeRO-%d)", zero_stage);
    printf("%-33s predicted MiB   allocated MiB   (%d process%s)\n", title, num_ranks,
           num_ranks > 1 ? "es" : "");
    for (int i = 0; i < 6; i++) {
        if (i == 4 && zero_stage < 2) continue;
        printf("  %-31s %13.2f %15.2f\n", names[i], p[i] / MiB, a[i] / MiB);
    }
    printf("  %-31s %13.2f %15.2f\n", "total", predicted.total() / MiB, allocated.total() / MiB);
}

// A pipeline's memory stage by stage, as every stage of rank 0's replica counted it (mem: predicted then
// allocated, of each stage): the parameters, gradients and optimizer state of its layers, and the
// activations of the micro-batches its schedule holds at once (slots; their gradients for one more).
void print_pipeline_table(const std::vector<CpuMemory>& mem, const GPT2Config& whole, const RunPlan& plan,
                          PipeSchedule schedule) {
    std::vector<PipeStageMemory> rows;
    for (int s = 0; s < plan.stages; s++) {
        const CpuMemory &p = mem[2 * s], &a = mem[2 * s + 1];
        rows.push_back({a.trained, a.grads, a.optim, a.acts, a.total(), p.total()});
    }
    pipeline_print_memory(rows, whole, schedule, plan.grad_accum_steps, "the buffers' sizes");
}

// What the run will allocate, checked against the memory left on the machine before any of it is
// allocated. Processes of one machine share it: each may use its share. An NF4 base is first loaded whole
// in fp32 and then quantized, so its peak is the fp32 model beside its NF4 copy; a pipeline stage's is
// the whole fp32 model beside its part.
void check_cpu_memory(const GPT2Config& config, const TrainConfig& cfg, int num_ranks, const PipeStage& st,
                      int slots) {
    const CpuMemory m = predict_cpu_memory(config, cfg, num_ranks, st, slots);
    double need = m.total();
    if (cfg.lora.nf4) need = std::max(need, lora_base_bytes_predicted(config, false) + m.base);
    // a pipeline stage loads the whole model (fp32) before it keeps its part
    if (st.num_stages > 1) need = std::max(need, 4.0 * (double)gpt2_num_parameters(config) + m.trained);
    const char* local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const int here = local != nullptr && atoi(local) > 0 ? atoi(local) : 1;
    const double GiB = 1024.0 * 1024.0 * 1024.0;
    char parts[320];
    snprintf(parts, sizeof(parts),
             "frozen base %.2f GiB, trained parameters and gradients %.2f GiB, optimizer state %.2f GiB, "
             "activations and their gradients %.2f GiB at -b %d -t %d; %d process(es) on this machine",
             m.base / GiB, (m.trained + m.grads) / GiB, m.optim / GiB, m.acts / GiB, cfg.B, cfg.T, here);
    check_memory_fits(
        need, host_memory_available_bytes() / here, "host memory", parts,
        "reduce -b or -t (-d keeps the batch with gradient accumulation), or use a smaller model");
}

// OpenMP's threads spin at a barrier before they sleep (libgomp: GOMP_SPINCOUNT, 300000 spins by default,
// about a millisecond). A step has thousands of barriers; on a machine whose cores are taken by other
// processes, a spinning thread burns the time slice that the thread it waits for needs: beside three busy
// loops on 2 cores d12 measured 4.06x its idle step time with libgomp's spins and 2.82x with 3000 (fair
// share 2.5x; dev/results/cpu_bench.txt), and the idle step time did not change beyond run-to-run noise
// (d4 and d12, measured by hand with GOMP_SPINCOUNT set both ways). libgomp reads its environment before
// main, so the program sets GOMP_SPINCOUNT and starts itself again, unless the user set it (or
// OMP_WAIT_POLICY) already.
constexpr const char* OPENMP_SPINCOUNT = "3000";
void prefer_short_openmp_spins(char** argv) {
    if (getenv("GOMP_SPINCOUNT") != nullptr || getenv("OMP_WAIT_POLICY") != nullptr) return;
    setenv("GOMP_SPINCOUNT", OPENMP_SPINCOUNT, 1);
    execv("/proc/self/exe", argv); // returns only if it failed: then run on with libgomp's spins
    unsetenv("GOMP_SPINCOUNT");
}
const char* openmp_wait_note() {
    static char note[96];
    const char *spin = getenv("GOMP_SPINCOUNT"), *policy = getenv("OMP_WAIT_POLICY");
    if (policy) {
        snprintf(note, sizeof(note), " (OMP_WAIT_POLICY=%s)", policy);
    } else if (spin) {
        snprintf(note, sizeof(note), " (GOMP_SPINCOUNT=%s%s)", spin,
                 strcmp(spin, OPENMP_SPINCOUNT) == 0 ? ": spin briefly, then sleep, at a barrier" : "");
    } else {
        snprintf(note, sizeof(note), " (libgomp's default spins)");
    }
    return note;
}

int main(int argc, char** argv) {
    prefer_short_openmp_spins(argv);
    program_init();
    Trainer tr;
    ProcessGroup& pg = tr.pg;
    process_group_init(&pg, &argc, &argv);
    pg_install_abort_on_exit(&pg);
    TrainConfig cfg = train_config_cpu_defaults();
    if (!parse_flags(&cfg, argc, argv, /*gpu=*/false)) {
        if (pg.rank == 0) print_usage("train_gpt2", train_config_cpu_defaults(), /*gpu=*/false);
        process_group_finalize(&pg);
        return 0;
    }
    run_check_flags(cfg);
    run_claim_output_dir(cfg, pg.rank, pg.num_ranks);

    // the model: fresh from a descriptor, or from a file; its shape first, to check the memory it needs
    GPT2& model = tr.model;
    GPT2Config shape;
    const bool fresh = run_model_is_descriptor(cfg, &shape);
    int version;
    if (!fresh) checkpoint_read_header(cfg.model, &shape, &version);
    if (shape.channels % 16 != 0)
        fail("the CPU matmul needs C to be a multiple of 16; the model has C=%d", shape.channels);
    RunPlan plan;
    run_plan_init(&plan, cfg, shape, pg.rank, pg.num_ranks);
    // pipeline parallelism (-pp): this process's stage, and the activation slots its schedule needs
    const PipeStage stage = pipeline_model_stage(shape, plan.stages, pg.rank % plan.stages);
    pipeline_schedule_from_flag(cfg.pipeline_schedule, &tr.pipeline.schedule); // (checked by run_check_flags)
    const int slots = pipeline_slots(tr.pipeline.schedule, plan.stages, plan.grad_accum_steps, stage.stage);
    check_cpu_memory(shape, cfg, plan.num_replicas, stage, plan.stages > 1 ? slots : 1);
    if (fresh) {
        gpt2_build_from_random(&model, shape, cfg.seed);
    } else {
        gpt2_build_from_checkpoint(&model, cfg.model);
    }
    const GPT2Config& mc = model.config;
    // LoRA: the adapters, and under QLoRA the NF4 base; the checksum of the base first, before it is
    // quantized (the run facts hold it: a resume must start from the same base)
    const bool lora = cfg.lora.rank > 0;
    const uint32_t base_crc =
        lora ? run_params_crc(pg.num_ranks, cfg, model.params_memory, model.num_parameters) : 0;
    gpt2_setup_lora(&model, cfg.lora, cfg.seed);

    DataLoader train_loader, val_loader;
    run_open_data(&plan, &cfg, mc, &train_loader, &val_loader);
    tr.adamw = cfg.adamw;
    // 6 FLOPs per parameter and token: 2 in the forward, 2 for the input gradient, 2 for the weight
    // gradient, which a frozen LoRA base skips (its adapters take 6 per adapter parameter)
    tr.flops_per_step =
        (lora ? 4.0 * model.num_parameters + 6.0 * model.num_trained : 6.0 * model.num_parameters) *
        plan.tokens_per_step;
    run_load_decoder(cfg, mc, &tr.decoder);

    TrainState st = run_initial_state(cfg);
    const bool resuming =
        run_resume_model(&plan, cfg, mc, lora ? nullptr : model.params_memory, model.num_parameters);
    // every rank has the same flags, model and data, or all stop (before the first collective that sizes by
    // them)
    const uint32_t crc =
        lora ? base_crc : run_params_crc(pg.num_ranks, cfg, model.params_memory, model.num_parameters);
    run_check_agreement(&tr, &plan, cfg, mc, &train_loader, &val_loader, crc);
    const GPT2Config whole = mc; // (a pipeline stage's model.config has its own layers only)
    const size_t whole_parameters = model.num_parameters;
    tr.whole_layers = whole.num_layers;
    if (plan.stages > 1) {
        // the groups: this replica's stages (ranked by stage), this stage's replicas (the data-parallel
        // group), and the first and last stage of the replica (wte's two copies; the middle stages of a
        // replica form a group that is never used)
        Pipeline& pl = tr.pipeline;
        pg_split(&pg, plan.replica, stage.stage, &pl.pipe);
        pg_split(&pg, stage.stage, plan.replica, &tr.dp);
        const bool ends = stage.first || stage.last;
        pg_split(&pg, ends ? plan.replica : plan.num_replicas + plan.replica, stage.stage, &pl.tie);
        tr.opt.pipe = &pl.pipe;
        if (ends) tr.opt.tie = &pl.tie;
        gpt2_take_stage(&model, stage); // the whole model is not needed any more
    } else {
        tr.dp = pg;
        model.stage = stage;
    }
    optimizer_init(&tr.opt, &model, &tr.dp, cfg.zero_stage, cfg.use_8bit, cfg.quant_block);
    gpt2_allocate_training_state(&model, cfg.B, cfg.T, plan.stages > 1 ? slots : 1);
    if (plan.stages > 1) {
        Pipeline& pl = tr.pipeline;
        pl.forward_sends.resize(slots);
        if (!stage.last)
            pl.grad_output = (float*)malloc_check((size_t)cfg.B * cfg.T * mc.channels * sizeof(float),
                                                  "the gradient of the stage's output");
        pl.logits.resize(mc.padded_vocab_size);
    }
    if (cfg.zero_stage == 3) zero_shard_parameters(&model, &tr.opt); // the whole model is not needed any more
    if (resuming) {
        run_load_state(&tr, &plan, cfg.output_dir, &st);
        dataloader_set_state(&train_loader, st.loader);
    }
    Logger logger;
    run_open_log(&plan, cfg, &logger);
    const CpuMemory predicted = predict_cpu_memory(whole, cfg, plan.num_replicas, stage, model.num_slots);
    const CpuMemory allocated = measure_cpu_memory(model, tr.opt);
    std::vector<CpuMemory> stage_memory(2 * plan.stages); // (predicted, allocated) of each stage
    if (plan.stages > 1) {
        const CpuMemory mine[2] = {predicted, allocated};
        pg_allgather_bytes(&tr.pipeline.pipe, mine, stage_memory.data(), sizeof(mine));
    }
    if (plan.main_process) {
        run_print_plan(&plan, cfg, whole, whole_parameters, &train_loader, &val_loader);
        print_memory_table(predicted, allocated, model, cfg.zero_stage, plan.num_replicas);
        if (plan.stages > 1) print_pipeline_table(stage_memory, whole, plan, tr.pipeline.schedule);
        if (lora && cfg.output_dir) {
            printf("checkpoints: model_<step>.bin is the merged model, W + (alpha/r) B.A%s; the adapters and "
                   "their optimizer state are in state_<step>_<rank>.bin\n",
                   cfg.lora.nf4 ? " on the dequantized NF4 base (not the fp32 base of -e)" : "");
        }
        printf("threads: %d%s\n", omp_get_max_threads(), openmp_wait_note());
    }

    run_training(&tr, &plan, cfg, &train_loader, &val_loader, &logger, &st);
    if (plan.main_process)
        printf("peak resident memory of this process: %.2f MiB (VmHWM)\n",
               process_status_bytes("VmHWM") / 1048576.0);

    logger_free(&logger);
    free(tr.pipeline.grad_output);
    optimizer_free(&tr.opt);
    gpt2_free(&model);
    process_group_finalize(&pg);
    return 0;
}
#endif
