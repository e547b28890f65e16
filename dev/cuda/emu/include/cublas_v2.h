// cublas_v2.h for the CPU emulator (dev/cuda/emu): the handle and the one BLAS-1 call the trainer uses.
//     cublasSscal: x[i * incx] *= alpha for i < n, fp32, on the host at call time (the stream is recorded
//     and ignored). n <= 0 or incx <= 0 does nothing, as in cuBLAS. alpha is a host pointer (the default
//     pointer mode). x must lie inside one emulated cudaMalloc allocation (emu::fatal otherwise).
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <library_types.h>
#include <cublas_api.h>

#include <cstdint>

struct cublasContext {
    cudaStream_t stream = nullptr;
};
typedef cublasContext* cublasHandle_t;

inline cublasStatus_t cublasCreate(cublasHandle_t* handle) {
    *handle = new cublasContext();
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasSscal(cublasHandle_t handle, int n, const float* alpha, float* x, int incx) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (alpha == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if (n <= 0 || incx <= 0) return CUBLAS_STATUS_SUCCESS;
    const size_t bytes = ((size_t)(n - 1) * incx + 1) * sizeof(float);
    if (!emu::is_device_range(x, bytes)) {
        emu::fatal("cublasSscal: x at %p (%zu bytes) is not inside one cudaMalloc allocation", (void*)x,
                   bytes);
    }
    const float a = *alpha;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) x[(size_t)i * incx] *= a;
    return CUBLAS_STATUS_SUCCESS;
}
