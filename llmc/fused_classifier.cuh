// fused_classifier.cuh: softmax + cross-entropy loss + its gradient, fused, in place on the logits.
//
// Per row (position) of logits x (Vp columns, of which the first V are real tokens), target y:
//     lse      = log sum_{i<V} exp(x_i)                    (max-shifted: m + log sum exp(x_i - m))
//     loss     = lse - x_y
//     dx_i     = (exp(x_i - lse) - [i == y]) * scale        for i < V
//     dx_i     = 0                                          for V <= i < Vp (padding)
// scale = dloss_scale = 1 / (B*T*grad_accum_steps): the mean over positions and micro-steps.
//
// One block per row. Pass 1 streams the row once, each thread keeping an online softmax state
// (running max and sum, see kernel_math.h) over a strided set of 128-bit chunks; the block combines
// the states in a fixed tree (deterministic). Pass 2 re-reads the row (mostly from L2) and overwrites
// it with the gradient. The probabilities are never stored: the (B*T,Vp) buffer holds logits on entry
// and dlogits on exit, which saves a (B*T,Vp) tensor, the largest activation of GPT-2.
// A target outside [0, V) gives a NaN loss (visible) and no one-hot term.
#pragma once

#include "llmc/cuda_common.h"
#include "llmc/kernel_math.h"

constexpr int CLASSIFIER_BLOCK_SIZE = 1024;

__device__ inline SoftmaxState warp_reduce_softmax_state(SoftmaxState s) {
    for (int offset = 16; offset > 0; offset /= 2) {
        SoftmaxState other{__shfl_xor_sync(0xffffffff, s.max, offset),
                           __shfl_xor_sync(0xffffffff, s.sum, offset)};
        s = softmax_state_combine(s, other);
    }
    return s;
}

__global__ void __launch_bounds__(CLASSIFIER_BLOCK_SIZE)
    fused_classifier_kernel(floatX* logits, float* losses, const int* targets, float dloss_scale, int V,
                            int Vp, bool write_dlogits) {
    __shared__ float shared_max[WARP_SIZE];
    __shared__ float shared_sum[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int num_warps = blockDim.x / WARP_SIZE;
    floatX* x = logits + (size_t)blockIdx.x * Vp;
    const int target = targets[blockIdx.x];
    const bool target_valid = target >= 0 && target < V;
    // read before the __syncthreads below: pass 2 overwrites the row
    const float target_logit = (threadIdx.x == 0 && target_valid) ? (float)x[target] : 0.0f;

    // pass 1: online max and sum over the V valid columns
    SoftmaxState s = softmax_state_init();
    for (int c = threadIdx.x * x128::size; c < V; c += blockDim.x * x128::size) {
        x128 v = load128(x + c);
        for (int k = 0; k < x128::size; k++) {
            if (c + k < V) s = softmax_state_update(s, (float)v[k]);
        }
    }
    s = warp_reduce_softmax_state(s);
    if (lane == 0) {
        shared_max[warp] = s.max;
        shared_sum[warp] = s.sum;
    }
    __syncthreads();
    if (warp == 0) {
        s = lane < num_warps ? SoftmaxState{shared_max[lane], shared_sum[lane]} : softmax_state_init();
        s = warp_reduce_softmax_state(s);
        if (lane == 0) {
            shared_max[0] = s.max;
            shared_sum[0] = s.sum;
        }
    }
    __syncthreads();
    s = SoftmaxState{shared_max[0], shared_sum[0]};

    if (threadIdx.x == 0) {
        losses[blockIdx.x] = target_valid ? s.max + logf(s.sum) - target_logit : NAN;
    }
    if (!write_dlogits) return;

    // pass 2: dlogits in place, zeros in the padding
    for (int c = threadIdx.x * x128::size; c < Vp; c += blockDim.x * x128::size) {
        x128 v = load128cs(x + c);
        x128 d;
        for (int k = 0; k < x128::size; k++) {
            d[k] = (floatX)classifier_dlogit((float)v[k], c + k, target, V, s, dloss_scale);
        }
        store128cs(x + c, d);
    }
}

// logits_in_dlogits_out (BT,Vp): logits in, dloss/dlogits * dloss_scale out (if write_dlogits);
// targets (BT); losses (BT) get the per-position loss.
inline void fused_classifier(floatX* logits_in_dlogits_out, float* losses, const int* targets,
                             float dloss_scale, int BT, int V, int Vp, bool write_dlogits,
                             cudaStream_t stream) {
    if (Vp % x128::size != 0 || V > Vp || V <= 0) {
        fail("fused_classifier: need 0 < V <= Vp and Vp a multiple of %d, got V = %d, Vp = %d", x128::size, V,
             Vp);
    }
    if (BT == 0) return;
    CUDA_LAUNCH(fused_classifier_kernel, BT, CLASSIFIER_BLOCK_SIZE, 0, stream)
    (logits_in_dlogits_out, losses, targets, dloss_scale, V, Vp, write_dlogits);
    cudaCheck(cudaGetLastError());
}
