// quantize_check.cu: GPU check of llmc/quantize.cuh against the CPU reference llmc/quantize.h.
//
//   make dev/cuda/quantize_check && ./dev/cuda/quantize_check
//
// 1. Correctness: for several sizes (1 value, partial blocks, ~16M values: int8 only and one block size
//    on the CPU emulator) and block sizes (64 ... 4096), every scheme (int8 blockwise, per-tensor,
//    signed / unsigned dynamic map, NF4, double quantization) is run on the CPU and the GPU on the same
//    random data (normal, with planted outliers, an all-zero block, a repeated-value block and, in one
//    case, a NaN). The GPU output buffers are poisoned (0xAB bytes) and padded; codes, absmax and
//    dequantized values must be bit-identical to the CPU's (a NaN matches any NaN: payloads are
//    unspecified) and the padding untouched. Exit 1 on any mismatch.
// 2. Timing: quantize and dequantize of 64M values against the memory-bandwidth floor (bytes moved /
//    peak bandwidth measured with a device-to-device cudaMemcpy). Skipped on the CPU emulator.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "dev/cuda/check_common.h"
#include "dev/cuda/quantize_codebook.h"
#include "llmc/cuda_common.h"
#include "llmc/quantize.cuh"
#include "llmc/quantize.h"

// the array codebook quantizers of dev/cuda/quantize_codebook.h on the GPU: llmc/quantize.cuh's blockwise
// kernels with the one-byte codebook scheme
inline void quantize_codebook_cuda(const float* x, size_t n, size_t block_size, const Codebook& cb,
                                   uint8_t* codes, float* absmax, unsigned int* d_bad_block,
                                   cudaStream_t stream) {
    quantize_blockwise_cuda<QUANT_CODEBOOK>(x, n, block_size, cb, codes, absmax, d_bad_block, stream,
                                            "quantize_codebook_cuda");
}
inline void dequantize_codebook_cuda(const uint8_t* codes, const float* absmax, size_t n, size_t block_size,
                                     const Codebook& cb, float* out, cudaStream_t stream) {
    quant_check_block_size(block_size, "dequantize_codebook_cuda");
    dequantize_blockwise_cuda<QUANT_CODEBOOK>(codes, absmax, n, block_size, cb, out, stream);
}

static int g_failures = 0;
static const size_t PAD = 256; // bytes past each GPU output that must stay poisoned
static const unsigned char POISON = 0xAB;

// device buffer of `bytes` (+ PAD poisoned bytes), poisoned
struct DeviceBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    explicit DeviceBuffer(size_t b) : bytes(b) {
        cudaCheck(cudaMalloc(&ptr, bytes + PAD));
        cudaCheck(cudaMemset(ptr, POISON, bytes + PAD));
    }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    template <class T> T* as() { return (T*)ptr; }
};

static std::vector<float> make_data(size_t n, size_t block_size, uint32_t seed, bool with_nan) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(n);
    for (size_t i = 0; i < n; i++) x[i] = normal(rng) * ((rng() % 1000 == 0) ? 100.0f : 1.0f);
    if (n >= 3 * block_size) {
        for (size_t i = 0; i < block_size; i++) x[i] = 0.0f;               // block 0 all zero
        for (size_t i = block_size; i < 2 * block_size; i++) x[i] = 0.75f; // block 1 repeated
    }
    if (with_nan) x[n / 2] = NAN;
    return x;
}

// compare the first `bytes` of the device buffer with the host bytes and check the padding. Float
// buffers (is_float) compare bit for bit too, except that any NaN matches any NaN: the NaN payload of an
// operation on a NaN is not specified (x86 keeps the input's, NVIDIA GPUs return a canonical NaN), and
// only the blocks the NaN convention poisons hold NaNs.
static void compare(DeviceBuffer& d, const void* host, size_t bytes, const char* what,
                    bool is_float = false) {
    std::vector<unsigned char> got(bytes + PAD);
    cudaCheck(cudaMemcpy(got.data(), d.ptr, bytes + PAD, cudaMemcpyDeviceToHost));
    const unsigned char* want = (const unsigned char*)host;
    const size_t unit = is_float ? 4 : 1;
    size_t diff = 0, first = 0;
    for (size_t i = 0; i < bytes; i += unit) {
        if (memcmp(&got[i], &want[i], unit) == 0) continue;
        if (is_float) {
            float a, b;
            memcpy(&a, &got[i], 4);
            memcpy(&b, &want[i], 4);
            if (std::isnan(a) && std::isnan(b)) continue;
        }
        if (diff == 0) first = i;
        diff++;
    }
    bool pad_ok = true;
    for (size_t i = bytes; i < bytes + PAD; i++) pad_ok = pad_ok && got[i] == POISON;
    if (diff != 0 || !pad_ok) {
        printf("FAIL %s: %zu of %zu %s differ (first at byte %zu)%s\n", what, diff, bytes / unit,
               is_float ? "floats" : "bytes", first, pad_ok ? "" : ", padding overwritten");
        g_failures++;
    }
}

// int8_only: only the int8 scheme (the emulator's grid-stride case, see main)
static void check_case(size_t n, size_t bs, uint32_t seed, bool with_nan, bool int8_only = false) {
    std::vector<float> x = make_data(n, bs, seed, with_nan);
    const size_t nb = quant_num_blocks(n, bs);
    DeviceBuffer d_x(n * 4), d_bad(4);
    cudaCheck(cudaMemcpy(d_x.ptr, x.data(), n * 4, cudaMemcpyHostToDevice));
    char what[160];
    const int failures_before = g_failures;

    // int8 blockwise
    {
        std::vector<int8_t> codes(n);
        std::vector<float> absmax(nb), deq(n);
        int64_t bad = quantize_absmax_int8(x.data(), n, bs, codes.data(), absmax.data());
        dequantize_absmax_int8(codes.data(), absmax.data(), n, bs, deq.data());
        DeviceBuffer d_codes(n), d_absmax(nb * 4), d_deq(n * 4);
        quantize_absmax_int8_cuda(d_x.as<float>(), n, bs, d_codes.as<int8_t>(), d_absmax.as<float>(),
                                  d_bad.as<unsigned>(), 0);
        dequantize_absmax_int8_cuda(d_codes.as<int8_t>(), d_absmax.as<float>(), n, bs, d_deq.as<float>(), 0);
        snprintf(what, sizeof(what), "int8 n=%zu block=%zu", n, bs);
        compare(d_codes, codes.data(), n, what);
        compare(d_absmax, absmax.data(), nb * 4, what, true);
        compare(d_deq, deq.data(), n * 4, what, true);
        if (quantize_read_bad_block(d_bad.as<unsigned>()) != bad) {
            printf("FAIL %s: bad block GPU %lld CPU %lld\n", what,
                   (long long)quantize_read_bad_block(d_bad.as<unsigned>()), (long long)bad);
            g_failures++;
        }
    }
    // dynamic maps
    for (int sgn = 0; sgn < 2 && !int8_only; sgn++) {
        const Codebook& cb = sgn ? dynamic_map_signed() : dynamic_map_unsigned();
        std::vector<uint8_t> codes(n);
        std::vector<float> absmax(nb), deq(n);
        quantize_codebook(x.data(), n, bs, cb, codes.data(), absmax.data());
        dequantize_codebook(codes.data(), absmax.data(), n, bs, cb, deq.data());
        DeviceBuffer d_codes(n), d_absmax(nb * 4), d_deq(n * 4);
        quantize_codebook_cuda(d_x.as<float>(), n, bs, cb, d_codes.as<uint8_t>(), d_absmax.as<float>(),
                               nullptr, 0);
        dequantize_codebook_cuda(d_codes.as<uint8_t>(), d_absmax.as<float>(), n, bs, cb, d_deq.as<float>(),
                                 0);
        snprintf(what, sizeof(what), "%s map n=%zu block=%zu", sgn ? "signed" : "unsigned", n, bs);
        compare(d_codes, codes.data(), n, what);
        compare(d_absmax, absmax.data(), nb * 4, what, true);
        compare(d_deq, deq.data(), n * 4, what, true);
    }
    // NF4 (even block sizes) and double quantization of its absmax
    if (bs % 2 == 0 && !int8_only) {
        std::vector<uint8_t> packed((n + 1) / 2);
        std::vector<float> absmax(nb), deq(n);
        quantize_nf4(x.data(), n, bs, packed.data(), absmax.data());
        dequantize_nf4(packed.data(), absmax.data(), n, bs, deq.data());
        DeviceBuffer d_packed((n + 1) / 2), d_absmax(nb * 4), d_deq(n * 4);
        quantize_nf4_cuda(d_x.as<float>(), n, bs, d_packed.as<uint8_t>(), d_absmax.as<float>(), nullptr, 0);
        dequantize_nf4_cuda(d_packed.as<uint8_t>(), d_absmax.as<float>(), n, bs, d_deq.as<float>(), 0);
        snprintf(what, sizeof(what), "nf4 n=%zu block=%zu", n, bs);
        compare(d_packed, packed.data(), (n + 1) / 2, what);
        compare(d_absmax, absmax.data(), nb * 4, what, true);
        compare(d_deq, deq.data(), n * 4, what, true);

        const size_t ng = dq_num_groups(nb);
        float mean;
        std::vector<int8_t> qa(nb);
        std::vector<float> ga(ng), a2(nb);
        double_quantize_absmax(absmax.data(), nb, &mean, qa.data(), ga.data());
        double_dequantize_absmax(qa.data(), ga.data(), mean, nb, a2.data());
        DeviceBuffer d_mean(4), d_qa(nb), d_ga(ng * 4), d_a2(nb * 4);
        double_quantize_absmax_cuda(d_absmax.as<float>(), nb, d_mean.as<float>(), d_qa.as<int8_t>(),
                                    d_ga.as<float>(), nullptr, 0);
        double_dequantize_absmax_cuda(d_qa.as<int8_t>(), d_ga.as<float>(), d_mean.as<float>(), nb,
                                      d_a2.as<float>(), 0);
        snprintf(what, sizeof(what), "double quant of %zu absmax", nb);
        compare(d_mean, &mean, 4, what, true);
        compare(d_qa, qa.data(), nb, what);
        compare(d_ga, ga.data(), ng * 4, what, true);
        compare(d_a2, a2.data(), nb * 4, what, true);
    }
    // per-tensor (one thread block: only moderate sizes)
    if (n <= (1u << 20) && !int8_only) {
        std::vector<int8_t> codes(n);
        float absmax;
        quantize_absmax_int8(x.data(), n, n, codes.data(), &absmax); // one block: the whole tensor
        DeviceBuffer d_codes(n), d_absmax(4);
        quantize_absmax_int8_cuda(d_x.as<float>(), n, n, d_codes.as<int8_t>(), d_absmax.as<float>(), nullptr,
                                  0);
        snprintf(what, sizeof(what), "per-tensor int8 n=%zu", n);
        compare(d_codes, codes.data(), n, what);
        compare(d_absmax, &absmax, 4, what, true);
    }
    cudaCheck(cudaDeviceSynchronize());
    printf("%-4s n=%-9zu block=%-5zu%s: %s\n", g_failures == failures_before ? "ok" : "FAIL", n, bs,
           with_nan ? " (with a NaN)" : "",
           int8_only ? "int8" : "int8, signed/unsigned map, NF4 + double quant, per-tensor");
}

// ----------------------------------------------------------------------------------------------------
// timing

// (name, time, bytes moved, copy bandwidth) -> check_common.h's report_bandwidth
static void report_bw(const char* name, float ms, double bytes, double peak_gbs) {
    report_bandwidth(name, bytes, ms, peak_gbs);
}

static void timing() {
    const size_t n = (size_t)1 << 26;
    DeviceBuffer d_x(n * 4), d_y(n * 4), d_codes(n), d_absmax(n / 64 * 4);
    std::vector<float> x = make_data(n, 4096, 99, false);
    cudaCheck(cudaMemcpy(d_x.ptr, x.data(), n * 4, cudaMemcpyHostToDevice));
    const double peak = measure_copy_bandwidth_gbs(); // read + write of a device-to-device copy
    printf("timing, n = %zu values; peak bandwidth from a D2D cudaMemcpy: %.1f GB/s\n", n, peak);
    for (size_t bs : {64, 2048}) {
        const double absmax_bytes = 4.0 * n / bs;
        char name[64];
        snprintf(name, sizeof(name), "int8 quantize, block %zu", bs);
        report_bw(name, median_ms([&] {
                      quantize_absmax_int8_cuda(d_x.as<float>(), n, bs, d_codes.as<int8_t>(),
                                                d_absmax.as<float>(), nullptr, 0);
                  }),
                  5.0 * n + absmax_bytes, peak);
        snprintf(name, sizeof(name), "int8 dequantize, block %zu", bs);
        report_bw(name, median_ms([&] {
                      dequantize_absmax_int8_cuda(d_codes.as<int8_t>(), d_absmax.as<float>(), n, bs,
                                                  d_y.as<float>(), 0);
                  }),
                  5.0 * n + absmax_bytes, peak);
        snprintf(name, sizeof(name), "signed map quantize, block %zu", bs);
        report_bw(name, median_ms([&] {
                      quantize_codebook_cuda(d_x.as<float>(), n, bs, dynamic_map_signed(),
                                             d_codes.as<uint8_t>(), d_absmax.as<float>(), nullptr, 0);
                  }),
                  5.0 * n + absmax_bytes, peak);
        snprintf(name, sizeof(name), "signed map dequantize, block %zu", bs);
        report_bw(name, median_ms([&] {
                      dequantize_codebook_cuda(d_codes.as<uint8_t>(), d_absmax.as<float>(), n, bs,
                                               dynamic_map_signed(), d_y.as<float>(), 0);
                  }),
                  5.0 * n + absmax_bytes, peak);
    }
    report_bw("nf4 quantize, block 64", median_ms([&] {
                  quantize_nf4_cuda(d_x.as<float>(), n, 64, d_codes.as<uint8_t>(), d_absmax.as<float>(),
                                    nullptr, 0);
              }),
              4.5 * n + 4.0 * n / 64, peak);
    report_bw("nf4 dequantize, block 64", median_ms([&] {
                  dequantize_nf4_cuda(d_codes.as<uint8_t>(), d_absmax.as<float>(), n, 64, d_y.as<float>(), 0);
              }),
              4.5 * n + 4.0 * n / 64, peak);
}

int main() {
    int dev;
    cudaCheck(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    printf("device: %s\n", prop.name);
    // 2^24 + 17 values: the dequantize grid (at most 65536 blocks of 256 threads) strides a second time,
    // over the last 17 values. On the CPU emulator every scheme at every block size would take minutes;
    // there the large size runs once, int8 only (the grid-stride loop is the same in every scheme).
    const size_t n_large = ((size_t)1 << 24) + 17;
    for (size_t bs : {64, 256, 2048, 4096}) {
        for (size_t n : {(size_t)1, (size_t)1000, (size_t)100003, 3 * bs + 1, n_large}) {
            if (!(ON_EMULATOR && n == n_large)) check_case(n, bs, (uint32_t)(n * 31 + bs), false);
        }
    }
    if (ON_EMULATOR) check_case(n_large, 4096, (uint32_t)(n_large * 31 + 4096), false, true);
    check_case(100003, 64, 5, true);
    check_case(100003, 2048, 6, true);
    if (g_failures) {
        printf("quantize_check: %d mismatch(es)\n", g_failures);
        return 1;
    }
    printf("quantize_check: GPU codes bit-identical to the CPU reference in every case\n");
    if (timing_enabled()) timing();
    return 0;
}
