// mfu.h: model FLOPs utilisation. Host-only (no CUDA), so it compiles and is tested without a GPU.
//
// MFU = (model FLOPs per second actually achieved) / (peak FLOPs per second of the device), where the
// model FLOPs count only the math the model needs (PaLM paper, appendix B), not recomputation.
//
// FLOPs per token for one forward + backward pass of GPT-2:
//     6 N + 6 L C T
// 6 N: each parameter that takes part in a matmul costs 2 FLOPs (multiply + add) per token in the
//      forward pass and 4 in the backward pass (gradient w.r.t. the input and w.r.t. the weight).
//      N counts all parameters of the model, wte included (it is also the classifier matrix, a real
//      (C x V) matmul per token); wpe, LayerNorm and biases are lookups or elementwise and make N
//      over-count the matmul parameters by well under 1%.
// 6 L C T: attention scores Q K^T and the weighted sum A V cost 2 T C FLOPs each per token and layer in
//      the forward pass (4 T C); causal masking halves the useful work (2 T C), and backward is twice
//      forward, so 6 T C per token and layer.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstring>

inline double mfu_flops_per_token(size_t num_parameters, int L, int C, int T) {
    return 6.0 * (double)num_parameters + 6.0 * (double)L * (double)C * (double)T;
}

// Peak dense (no structured sparsity) throughput in FLOP/s. bf16_dense_flops is the bf16 tensor core
// rate with fp32 accumulation; fp32_flops the non-tensor fp32 rate.
// Sources: NVIDIA datasheets (H100, H200, A100, L4, L40S, A10, B200; the datasheets quote bf16 "with
// sparsity", which is twice the dense rate given here) and the Ada / Ampere GeForce architecture
// whitepapers (RTX 4090, RTX 3090: "peak BF16 Tensor TFLOPS with FP32 accumulate", dense).
struct GPUPeak {
    const char* name_substring; // matched against cudaDeviceProp::name, first match wins
    double bf16_dense_flops;
    double fp32_flops;
};

// Order matters: more specific names first ("H100 NVL" before "H100", "GH200" before "H200",
// "A100" before "A10", "L40S" before "L40"). A10G (AWS) has no public datasheet peak we trust, so it is
// listed as unknown (negative) rather than letting it match "A10".
inline const GPUPeak* mfu_peak_table(int* count) {
    static const GPUPeak table[] = {
        {"H100 NVL", 835.0e12, 60.0e12}, {"H100 PCIe", 756.0e12, 51.2e12}, {"H100", 989.4e12, 66.9e12},
        {"GH200", 989.4e12, 67.0e12},    {"H200 NVL", 835.0e12, 60.0e12},  {"H200", 989.4e12, 66.9e12},
        {"B200", 2250.0e12, 80.0e12},    {"A100", 312.0e12, 19.5e12},      {"A10G", -1.0, -1.0},
        {"A10", 125.0e12, 31.2e12},      {"L40S", 362.05e12, 91.6e12},     {"L40", 181.05e12, 90.5e12},
        {"L4", 121.0e12, 30.3e12},       {"RTX 4090", 165.2e12, 82.6e12},  {"RTX 3090", 71.0e12, 35.6e12},
    };
    *count = (int)(sizeof(table) / sizeof(table[0]));
    return table;
}

// Peak FLOP/s of the named device, or a negative number when the device is not in the table.
inline double mfu_peak_flops(const char* device_name, bool bf16) {
    int count = 0;
    const GPUPeak* table = mfu_peak_table(&count);
    for (int i = 0; i < count; i++) {
        if (device_name != nullptr && strstr(device_name, table[i].name_substring) != nullptr) {
            return bf16 ? table[i].bf16_dense_flops : table[i].fp32_flops;
        }
    }
    return -1.0;
}

// MFU as a fraction in [0, ...), or a negative number when the peak is unknown.
inline double mfu_fraction(double flops_per_second, double peak_flops) {
    if (!(peak_flops > 0.0)) return -1.0;
    return flops_per_second / peak_flops;
}

// "41.3%" or "n/a" (unknown peak): never prints a negative percentage.
inline void mfu_format(char* buf, size_t size, double flops_per_second, double peak_flops) {
    double fraction = mfu_fraction(flops_per_second, peak_flops);
    if (fraction < 0.0) {
        snprintf(buf, size, "n/a");
    } else {
        snprintf(buf, size, "%.1f%%", 100.0 * fraction);
    }
}
