// nccl_none.h: the part of NCCL's API that llmc/nccl_gpu.cuh uses, with no library behind it, for
// single-GPU builds (make NO_MULTI_GPU=1, which defines NO_MULTI_GPU): the program then needs neither
// libnccl.so (hundreds of MB, often not on the library path of a machine with one GPU) nor MPI, and runs
// the same code as the default build with one process, where nccl_gpu.cuh calls no NCCL function at all.
// multi_gpu_config_init refuses more than one process before any of these could be reached; should one
// be called anyway, it returns an error that ncclCheck reports with the message below.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

typedef enum { ncclSuccess = 0, ncclInvalidUsage = 5 } ncclResult_t;
typedef enum { ncclUint8 = 1, ncclFloat32 = 7, ncclBfloat16 = 9 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclAvg = 4 } ncclRedOp_t;
typedef struct ncclComm* ncclComm_t;
typedef struct {
    char internal[128];
} ncclUniqueId;

inline const char* ncclGetErrorString(ncclResult_t) {
    return "this program was built with NO_MULTI_GPU=1 (no NCCL): it runs one process on one GPU";
}
inline ncclResult_t ncclGetUniqueId(ncclUniqueId*) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclCommInitRank(ncclComm_t*, int, ncclUniqueId, int) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclCommDestroy(ncclComm_t) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclCommAbort(ncclComm_t) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t*) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclAllReduce(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                                  cudaStream_t) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclReduceScatter(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                                      cudaStream_t) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclAllGather(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclSend(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclRecv(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclGroupStart() {
    return ncclInvalidUsage;
}
inline ncclResult_t ncclGroupEnd() {
    return ncclInvalidUsage;
}
