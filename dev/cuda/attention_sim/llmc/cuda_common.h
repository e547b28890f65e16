// Stand-in for llmc/cuda_common.h used only by the CPU simulation (attention_sim.cpp): the same names
// (floatX, Packed128, load128/store128, warp reductions, cudaCheck) implemented for the host, with one
// cooperative fiber per CUDA thread (attention_sim.cpp schedules them). __syncthreads and __syncwarp
// are barriers over the block's threads and the warp's 32 threads: a fiber waits in them by yielding to
// the scheduler; __shfl_xor_sync exchanges values through a per-warp array between two warp barriers.
// The simulation runs one block at a time, so shared memory is one global array.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "llmc/utils.h"

#define __global__
#define __device__
#define __host__
#define __shared__
#define __launch_bounds__(threads)
#define __align__(n) __attribute__((aligned(n)))

// bf16 as the GPU rounds it: round to nearest even on conversion from float
struct __nv_bfloat16 {
    uint16_t bits;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) {
        uint32_t u;
        memcpy(&u, &f, 4);
        if ((u & 0x7fffffff) > 0x7f800000) {
            bits = 0x7fc0; // NaN stays NaN
            return;
        }
        u += 0x7fff + ((u >> 16) & 1);
        bits = (uint16_t)(u >> 16);
    }
    operator float() const {
        const uint32_t u = (uint32_t)bits << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
};

#if defined(ENABLE_FP32)
typedef float floatX;
#define PRECISION_NAME "FP32"
#else
typedef __nv_bfloat16 floatX;
#define PRECISION_NAME "BF16"
#endif

constexpr int WARP_SIZE = 32;

struct alignas(16) int4 {
    int x, y, z, w;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline dim3 threadIdx, blockIdx, gridDim, blockDim; // threadIdx is set by the scheduler on every switch

// the runtime calls the launchers make (the launchers themselves are never run by the simulation)
typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr int cudaSuccess = 0;
constexpr int cudaDevAttrMaxSharedMemoryPerBlockOptin = 0, cudaFuncAttributeMaxDynamicSharedMemorySize = 0;
#define cudaCheck(err) ((void)(err))
inline int cudaGetDevice(int* device) {
    *device = 0;
    return 0;
}
inline int cudaDeviceGetAttribute(int* value, int, int) {
    *value = 1 << 20;
    return 0;
}
template <class Kernel> int cudaFuncSetAttribute(Kernel, int, int) {
    return 0;
}
inline int cudaGetLastError() {
    return 0;
}

// barriers of the block being simulated; sim_yield (attention_sim.cpp) switches back to the scheduler
struct SimBarrier {
    int expected = 0, arrived = 0;
    unsigned generation = 0;
};
void sim_yield();
inline unsigned long sim_progress = 0; // arrivals so far: the scheduler detects a deadlock by it
inline void sim_arrive_and_wait(SimBarrier& barrier) {
    const unsigned generation = barrier.generation;
    sim_progress++;
    if (++barrier.arrived == barrier.expected) {
        barrier.arrived = 0;
        barrier.generation++;
        return;
    }
    while (barrier.generation == generation) sim_yield();
}
inline SimBarrier sim_block_barrier;
inline SimBarrier sim_warp_barrier[32];
inline float sim_shuffle[32][WARP_SIZE];

inline void __syncthreads() {
    sim_arrive_and_wait(sim_block_barrier);
}
inline void __syncwarp() {
    sim_arrive_and_wait(sim_warp_barrier[threadIdx.x / WARP_SIZE]);
}
inline float __shfl_xor_sync(unsigned, float value, int lane_mask) {
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    sim_shuffle[warp][lane] = value;
    __syncwarp();
    const float other = sim_shuffle[warp][lane ^ lane_mask];
    __syncwarp();
    return other;
}

template <class ElementType> struct alignas(16) Packed128 {
    static constexpr int size = sizeof(int4) / sizeof(ElementType);
    ElementType payload[size];

    Packed128() = default;
    explicit Packed128(int4 bits) { memcpy(&payload, &bits, sizeof(bits)); }
    static Packed128 constant(ElementType value) {
        Packed128 result;
        for (int k = 0; k < size; ++k) result.payload[k] = value;
        return result;
    }
    static Packed128 zeros() { return constant(ElementType(0.f)); }
    ElementType& operator[](int index) { return payload[index]; }
    const ElementType& operator[](int index) const { return payload[index]; }
    int4 get_bits() const {
        int4 bits;
        memcpy(&bits, &payload, sizeof(bits));
        return bits;
    }
};
typedef Packed128<float> f128;
typedef Packed128<floatX> x128;

// 128-bit accesses must be 16-byte aligned on the GPU: the simulation checks it
inline void sim_check_aligned(const void* address, const char* what) {
    if ((uintptr_t)address % 16 != 0) fail("simulation: %s of %p is not 16-byte aligned", what, address);
}
template <class ElementType> Packed128<ElementType> load128(const ElementType* address) {
    sim_check_aligned(address, "load128");
    return Packed128<ElementType>{*reinterpret_cast<const int4*>(address)};
}
template <class ElementType> Packed128<ElementType> load128cs(const ElementType* address) {
    return load128(address);
}
template <class ElementType> void store128(ElementType* target, Packed128<ElementType> value) {
    sim_check_aligned(target, "store128");
    *reinterpret_cast<int4*>(target) = value.get_bits();
}
template <class ElementType> void store128cs(ElementType* target, Packed128<ElementType> value) {
    store128(target, value);
}

inline float warp_reduce_sum(float val) {
    for (int offset = 16; offset > 0; offset /= 2) val += __shfl_xor_sync(0xffffffff, val, offset);
    return val;
}
inline float warp_reduce_max(float val) {
    for (int offset = 16; offset > 0; offset /= 2) val = fmaxf(val, __shfl_xor_sync(0xffffffff, val, offset));
    return val;
}
