// encoder.cuh: token + position embedding, forward and backward.
//
// forward:   out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
//            inp (B,T) token ids, wte (Vp,C), wpe (maxT,C) -> out (B,T,C)
// backward:  dwte[v,:] += sum over the (b,t) with inp[b,t] == v of dout[b,t,:]
//            dwpe[t,:] += sum over b of dout[b,t,:]
//
// The backward is deterministic: a token that occurs many times in the batch is summed by ONE thread
// per 128-bit chunk of channels, over its positions in increasing (b,t) order, in fp32, and added to
// dwte once. There are no atomics, so the result is bit-identical run to run. The grouping of positions
// by token ("buckets") is done on the host from the host copy of the tokens (the data loader has it
// anyway), then uploaded: offsets[num_buckets + 1] followed by positions[B*T], positions sorted by
// (token, b*T+t).
// Requires C to be a multiple of x128::size (one 128-bit load per thread: 8 bf16, or 4 fp32 in the FP32
// build).
#pragma once

#include <algorithm>
#include <vector>

#include "llmc/cuda_common.h"

// ----------------------------------------------------------------------------------------------------
// kernels

// one thread per (b, t, x128 chunk of C)
__global__ void encoder_forward_kernel(floatX* out, const int* inp, const floatX* wte, const floatX* wpe,
                                       int B, int T, int C) {
    const int chunks = C / x128::size;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * chunks) return;
    int bt = (int)(idx / chunks);
    int c = (int)(idx % chunks) * x128::size;
    int t = bt % T;
    int token = inp[bt];
    x128 w = load128(wte + (size_t)token * C + c);
    x128 p = load128(wpe + (size_t)t * C + c);
    x128 o;
    for (int k = 0; k < x128::size; k++) o[k] = (floatX)((float)w[k] + (float)p[k]);
    store128(out + (size_t)bt * C + c, o);
}

// one thread per (bucket, x128 chunk of C): sums the bucket's positions in order, adds into dwte once
__global__ void encoder_backward_wte_kernel(floatX* dwte, const floatX* dout, const int* inp,
                                            const int* offsets, const int* positions, int num_buckets,
                                            int C) {
    const int chunks = C / x128::size;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)num_buckets * chunks) return;
    int bucket = (int)(idx / chunks);
    int c = (int)(idx % chunks) * x128::size;
    int start = offsets[bucket];
    int end = offsets[bucket + 1];
    int token = inp[positions[start]];
    float acc[x128::size] = {};
    for (int i = start; i < end; i++) {
        x128 d = load128(dout + (size_t)positions[i] * C + c);
        for (int k = 0; k < x128::size; k++) acc[k] += (float)d[k];
    }
    floatX* target = dwte + (size_t)token * C + c;
    x128 g = load128(target);
    for (int k = 0; k < x128::size; k++) g[k] = (floatX)((float)g[k] + acc[k]);
    store128(target, g);
}

// one thread per (t, x128 chunk of C): sums over b in order, adds into dwpe once
__global__ void encoder_backward_wpe_kernel(floatX* dwpe, const floatX* dout, int B, int T, int C) {
    const int chunks = C / x128::size;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)T * chunks) return;
    int t = (int)(idx / chunks);
    int c = (int)(idx % chunks) * x128::size;
    float acc[x128::size] = {};
    for (int b = 0; b < B; b++) {
        x128 d = load128(dout + ((size_t)b * T + t) * C + c);
        for (int k = 0; k < x128::size; k++) acc[k] += (float)d[k];
    }
    floatX* target = dwpe + (size_t)t * C + c;
    x128 g = load128(target);
    for (int k = 0; k < x128::size; k++) g[k] = (floatX)((float)g[k] + acc[k]);
    store128(target, g);
}

// ----------------------------------------------------------------------------------------------------
// launchers

inline void encoder_check_shapes(int C, const char* who) {
    if (C % x128::size != 0) fail("%s: C = %d must be a multiple of %d", who, C, x128::size);
}

inline void encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe, int B, int T,
                            int C, cudaStream_t stream) {
    encoder_check_shapes(C, "encoder_forward");
    const int block_size = 256;
    size_t threads = (size_t)B * T * (C / x128::size);
    unsigned int grid = (unsigned int)((threads + block_size - 1) / block_size);
    CUDA_LAUNCH(encoder_forward_kernel, grid, block_size, 0, stream)(out, inp, wte, wpe, B, T, C);
    cudaCheck(cudaGetLastError());
}

// Scratch of the backward: the bucket table, built on the host in pinned memory and uploaded. The
// event guards the pinned buffer: the next call waits until the previous upload has been read.
struct EncoderBackwardScratch {
    int max_BT = 0;
    int* workload_device = nullptr; // 2 max_BT + 1 ints: offsets[num_buckets + 1] then positions[B*T]
    int* workload_host = nullptr;   // pinned, same layout
    cudaEvent_t upload_done = nullptr;
    std::vector<int> order; // host sort buffer
};

inline void encoder_backward_scratch_init(EncoderBackwardScratch* s, int max_BT) {
    s->max_BT = max_BT;
    size_t bytes = (2 * (size_t)max_BT + 1) * sizeof(int);
    cudaCheck(cudaMalloc(&s->workload_device, bytes));
    cudaCheck(cudaMallocHost(&s->workload_host, bytes));
    cudaCheck(cudaEventCreateWithFlags(&s->upload_done, cudaEventDisableTiming));
    s->order.resize(max_BT);
}

inline void encoder_backward_scratch_free(EncoderBackwardScratch* s) {
    cudaCheck(cudaFree(s->workload_device));
    cudaCheck(cudaFreeHost(s->workload_host));
    cudaCheck(cudaEventDestroy(s->upload_done));
    *s = EncoderBackwardScratch{};
}

// Adds the gradients into dwte (Vp,C) and dwpe (maxT,C). dout (B,T,C); inp (B,T) on the device and
// inp_cpu the same tokens on the host.
inline void encoder_backward(floatX* dwte, floatX* dwpe, const floatX* dout, const int* inp,
                             const int* inp_cpu, EncoderBackwardScratch* scratch, int B, int T, int C,
                             cudaStream_t stream) {
    encoder_check_shapes(C, "encoder_backward");
    const int BT = B * T;
    if (BT > scratch->max_BT) {
        fail("encoder_backward: B*T = %d exceeds the scratch size %d it was initialised for", BT,
             scratch->max_BT);
    }
    // bucket the positions by token: stable sort of 0..BT-1 by token keeps (b,t) order within a token
    std::vector<int>& order = scratch->order;
    for (int i = 0; i < BT; i++) order[i] = i;
    std::stable_sort(order.begin(), order.begin() + BT,
                     [&](int a, int b) { return inp_cpu[a] < inp_cpu[b]; });

    // the previous call's upload must have finished reading the pinned buffer before we overwrite it
    cudaCheck(cudaEventSynchronize(scratch->upload_done));
    int* offsets = scratch->workload_host;
    int num_buckets = 0;
    for (int i = 0; i < BT; i++) {
        if (i == 0 || inp_cpu[order[i]] != inp_cpu[order[i - 1]]) offsets[num_buckets++] = i;
    }
    offsets[num_buckets] = BT;
    int* positions = offsets + num_buckets + 1;
    for (int i = 0; i < BT; i++) positions[i] = order[i];
    size_t upload = ((size_t)num_buckets + 1 + BT) * sizeof(int);
    cudaCheck(cudaMemcpyAsync(scratch->workload_device, scratch->workload_host, upload,
                              cudaMemcpyHostToDevice, stream));
    cudaCheck(cudaEventRecord(scratch->upload_done, stream));

    const int block_size = 256;
    const int chunks = C / x128::size;
    size_t threads = (size_t)num_buckets * chunks;
    unsigned int grid = (unsigned int)((threads + block_size - 1) / block_size);
    const int* offsets_device = scratch->workload_device;
    const int* positions_device = scratch->workload_device + num_buckets + 1;
    CUDA_LAUNCH(encoder_backward_wte_kernel, grid, block_size, 0, stream)
    (dwte, dout, inp, offsets_device, positions_device, num_buckets, C);
    cudaCheck(cudaGetLastError());

    threads = (size_t)T * chunks;
    grid = (unsigned int)((threads + block_size - 1) / block_size);
    CUDA_LAUNCH(encoder_backward_wpe_kernel, grid, block_size, 0, stream)(dwpe, dout, B, T, C);
    cudaCheck(cudaGetLastError());
}
