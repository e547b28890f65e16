// cuda_common.h: what every CUDA file of the project needs: the activation dtype, checked CUDA calls,
// 128-bit packed loads/stores and warp reductions.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cstdio>
#include <cstdlib>

#include "llmc/utils.h"

// ----------------------------------------------------------------------------------------------------
// floatX: the precision of parameters, activations and gradients on the GPU.
// BF16 is the default (mixed precision: fp32 master weights and optimizer state live elsewhere);
// `make PRECISION=FP32` defines ENABLE_FP32 so the GPU path can be compared with the CPU tightly.
#if defined(ENABLE_FP32)
typedef float floatX;
#define PRECISION_NAME "FP32"
#else
typedef __nv_bfloat16 floatX;
#define PRECISION_NAME "BF16"
#endif

constexpr int WARP_SIZE = 32;

// ----------------------------------------------------------------------------------------------------
// Launches and dynamic shared memory, written so that the same source also compiles for the CPU emulator
// (dev/cuda/emu, `make emu`), whose headers define both macros itself:
//   CUDA_LAUNCH(kernel, grid, block, smem_bytes, stream)(args...)
//       is kernel<<<grid, block, smem_bytes, stream>>>(args...)
//   DYNAMIC_SHARED_MEMORY(name);
//       declares the launch's dynamic shared memory as `unsigned char name[]`
#if !defined(CUDA_EMULATOR)
#define CUDA_LAUNCH(kernel, grid, block, smem_bytes, stream) kernel<<<grid, block, smem_bytes, stream>>>
#define DYNAMIC_SHARED_MEMORY(name)                          extern __shared__ __align__(128) unsigned char name[]
#endif

// ----------------------------------------------------------------------------------------------------
// checked CUDA calls: the message names the call site and the CUDA error string.

inline void cuda_check(cudaError_t err, const char* file, int line) {
    if (err != cudaSuccess) {
        fail("CUDA error at %s:%d: %s", file, line, cudaGetErrorString(err));
    }
}
#define cudaCheck(err) (cuda_check((err), __FILE__, __LINE__))

// ----------------------------------------------------------------------------------------------------
// Packed128: 16 bytes of one element type, loaded and stored with a single 128-bit instruction
// (8 bf16 or 4 fp32). Every elementwise kernel works on these so global memory traffic is vectorised.

template <class ElementType> struct alignas(16) Packed128 {
    static constexpr int size = sizeof(int4) / sizeof(ElementType);
    ElementType payload[size];

    Packed128() = default;
    __device__ explicit Packed128(int4 bits) { memcpy(&payload, &bits, sizeof(bits)); }
    __device__ static Packed128 constant(ElementType value) {
        Packed128 result;
        for (int k = 0; k < size; ++k) result.payload[k] = value;
        return result;
    }
    __device__ static Packed128 zeros() { return constant(ElementType(0.f)); }
    __device__ ElementType& operator[](int index) { return payload[index]; }
    __device__ const ElementType& operator[](int index) const { return payload[index]; }
    __device__ int4 get_bits() const {
        int4 bits;
        memcpy(&bits, &payload, sizeof(bits));
        return bits;
    }
};
typedef Packed128<float> f128;
typedef Packed128<floatX> x128;

// load/store 16 bytes; the "cs" variants use the streaming cache hint for data read/written once
template <class ElementType> __device__ Packed128<ElementType> load128(const ElementType* address) {
    return Packed128<ElementType>{*reinterpret_cast<const int4*>(address)};
}
template <class ElementType> __device__ Packed128<ElementType> load128cs(const ElementType* address) {
    return Packed128<ElementType>{__ldcs(reinterpret_cast<const int4*>(address))};
}
template <class ElementType> __device__ void store128(ElementType* target, Packed128<ElementType> value) {
    *reinterpret_cast<int4*>(target) = value.get_bits();
}
template <class ElementType> __device__ void store128cs(ElementType* target, Packed128<ElementType> value) {
    __stcs(reinterpret_cast<int4*>(target), value.get_bits());
}

// ----------------------------------------------------------------------------------------------------
// warp reductions (all lanes get the result)

__device__ inline float warp_reduce_sum(float val) {
    for (int offset = 16; offset > 0; offset /= 2) val += __shfl_xor_sync(0xffffffff, val, offset);
    return val;
}
__device__ inline float warp_reduce_max(float val) {
    for (int offset = 16; offset > 0; offset /= 2) val = fmaxf(val, __shfl_xor_sync(0xffffffff, val, offset));
    return val;
}

// ----------------------------------------------------------------------------------------------------
// block reductions (added by the layer kernels). Every thread of the block gets the result. The
// order of the additions is fixed by the block shape (warp butterflies, then warp 0 sums the warp
// results in warp order), so the result is bit-identical run to run. `shared` must hold WARP_SIZE
// floats; blockDim.x must be a multiple of WARP_SIZE. Ends with a __syncthreads so the shared
// buffer can be reused by the caller right away.

__device__ inline float block_reduce_sum(float val, float* shared) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int num_warps = blockDim.x / WARP_SIZE;
    val = warp_reduce_sum(val);
    if (lane == 0) shared[warp] = val;
    __syncthreads();
    val = (lane < num_warps) ? shared[lane] : 0.0f;
    val = warp_reduce_sum(val);
    __syncthreads();
    return val;
}

// ----------------------------------------------------------------------------------------------------
// checked cuBLAS / cuBLASLt calls: the message names the call site and the status.

#include <cublasLt.h>

inline void cublas_check(cublasStatus_t status, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) {
        fail("cuBLAS error at %s:%d: %s (status %d)", file, line, cublasLtGetStatusString(status),
             (int)status);
    }
}
#define cublasCheck(status) (cublas_check((status), __FILE__, __LINE__))
