// test_emu_cublaslt_fp32: test_emu_cublaslt.cpp built with floatX = float (-DENABLE_FP32), for the part that
// runs llmc/matmul.cuh on the emulated cuBLASLt.
#define ENABLE_FP32
#include "tests/emu/test_emu_cublaslt.cpp"
