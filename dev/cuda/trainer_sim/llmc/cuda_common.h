// Stand-in for llmc/cuda_common.h in the CPU simulation of the GPU trainer (see llmc/sim_layers.h):
// floatX is fp32 (-DENABLE_FP32) or a software bf16, "device" memory is host memory, streams and events do
// nothing, every call succeeds. Fresh "device" allocations are filled with 0xff bytes (NaN as float) so that
// a read of memory the trainer never wrote shows up as a NaN loss or gradient.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "llmc/kernel_math.h"
#include "llmc/utils.h"

#if defined(ENABLE_FP32)
typedef float floatX;
#define PRECISION_NAME "FP32 (CPU simulation)"
#else
// bf16 in software: 2 bytes (the top half of an fp32), rounded to nearest even from float, so the
// simulation rounds wherever the GPU stores bf16 (every floatX store), not in between.
struct SimBF16 {
    uint16_t bits;
    SimBF16() = default;
    SimBF16(float x) : bits(float_to_bf16_bits_rne(x)) {}
    operator float() const { return bf16_bits_to_float(bits); }
    SimBF16& operator+=(float x) { return *this = SimBF16((float)*this + x); }
    SimBF16& operator*=(float x) { return *this = SimBF16((float)*this * x); }
};
static_assert(sizeof(SimBF16) == 2, "bf16 is 2 bytes");
typedef SimBF16 floatX;
#define PRECISION_NAME "BF16 (CPU simulation)"
#endif
constexpr int WARP_SIZE = 32;

typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
typedef struct SimStream* cudaStream_t;
typedef struct SimEvent* cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
struct cudaDeviceProp {
    char name[256];
};

inline const char* cudaGetErrorString(cudaError_t) {
    return "simulated CUDA error";
}
inline void cuda_check(cudaError_t err, const char* file, int line) {
    if (err != cudaSuccess) fail("CUDA error at %s:%d: %s", file, line, cudaGetErrorString(err));
}
#define cudaCheck(err) (cuda_check((err), __FILE__, __LINE__))

template <class T> cudaError_t cudaMalloc(T** p, size_t bytes) {
    *p = (T*)malloc_check(bytes > 0 ? bytes : 1, "simulated device memory");
    memset((void*)*p, 0xff, bytes);
    return cudaSuccess;
}
template <class T> cudaError_t cudaMallocHost(T** p, size_t bytes) {
    return cudaMalloc(p, bytes);
}
inline cudaError_t cudaFree(void* p) {
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* p) {
    return cudaFree(p);
}
inline cudaError_t cudaMemset(void* p, int value, size_t bytes) {
    memset(p, value, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
    return cudaMemset(p, value, bytes);
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
    memmove(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
    return cudaMemcpy(dst, src, bytes, kind);
}
inline cudaError_t cudaStreamCreate(cudaStream_t* s) {
    *s = nullptr;
    return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) {
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
    snprintf(p->name, sizeof(p->name), "CPU simulation");
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
    *free_bytes = 0, *total_bytes = 0;
    return cudaSuccess;
}

typedef int cublasStatus_t;
constexpr cublasStatus_t CUBLAS_STATUS_SUCCESS = 0;
inline void cublas_check(cublasStatus_t status, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLAS error at %s:%d: status %d", file, line, (int)status);
}
#define cublasCheck(status) (cublas_check((status), __FILE__, __LINE__))
