// Stand-in for cuBLAS in the CPU simulation of the GPU trainer: the one call the trainer makes.
#pragma once
#include "llmc/cuda_common.h"
typedef struct SimCublas* cublasHandle_t;
inline cublasStatus_t cublasCreate(cublasHandle_t* h) {
    *h = nullptr;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t) {
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) {
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSscal(cublasHandle_t, int n, const float* alpha, float* x, int incx) {
    for (int i = 0; i < n; i++) x[(size_t)i * incx] *= *alpha;
    return CUBLAS_STATUS_SUCCESS;
}
