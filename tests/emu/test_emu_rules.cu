// test_emu_rules.cu: the CPU emulator of CUDA (dev/cuda/emu/include/cuda_runtime.h, mma.h) enforces every
// rule its top comment lists, and does not refuse correct code.
//
// Each broken kernel breaks one rule and runs in a forked child, which must exit non-zero with the
// emulator's message ("CUDA emulator: ..."), naming the kernel, on stderr:
//   launch:   a block of 1025 / 2048 threads, block.z = 65, grid.y / grid.z = 65536, dynamic shared memory
//             over 48 KiB without cudaFuncSetAttribute, over the attribute, over 227 KiB; pointer arguments
//             on the host stack, in malloc'ed memory, in an allocation's padding, freed;
//   barriers: a __syncthreads skipped by an early return, a thread returning while others wait in one, a
//             deadlock (half a warp in __syncthreads, half in __syncwarp), a __syncwarp / shuffle mask
//             naming lanes that do not exist (a block of 16 or 48 threads with mask 0xffffffff), a mask
//             without the caller, shuffles reading lanes outside the mask;
//   memory:   misaligned 128-bit loads and stores (load128 / store128 of llmc/cuda_common.h, float4), a read
//             one element past an allocation that ends at a page (the guard page), a write into the
//             padding after a 100-byte allocation, a read through a freed pointer (also after the next
//             cudaMalloc, which must not get the freed addresses back), cudaMemcpy / cudaMemset
//             ranges outside the allocation, a read past the dynamic shared memory, wmma with a
//             misaligned pointer and with ldm not a multiple of 8 (bf16) or 4 (fp32).
// Poison: uninitialised cudaMalloc memory (fp32 and bf16), static __shared__ and dynamic shared memory
// read as NaN, and shared memory starts poisoned again in every block.
// Correct code that must pass: the largest legal launches, block reductions with __syncthreads and shuffles
// for every block size 1..1024 (partial warps with a computed mask, checked against __activemask),
// block_reduce_sum of cuda_common.h, the shuffle variants' lane arithmetic, __syncthreads_and/or/count,
// __ballot_sync / __all_sync / __any_sync, atomics over many blocks, a grid-stride loop, 3D blocks and grids
// (every index exactly once), a wmma m16n16k16 product.
// Schedules: the program re-executes itself with CUDA_EMU_SEED = 1..8. A kernel missing the __syncthreads
// between thread 0's shared-memory write and the other threads' reads must give a wrong result for at
// least one seed while the same kernel with the barrier is right for all; a kernel whose blocks read what
// other blocks wrote must give different results for different seeds.
// Prints one line per check; exits 1 if any failed.
#include <mma.h>

#include <cmath>
#include <cstdarg>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "llmc/cuda_common.h"
#include "tests/common/test_common.h"

extern char** environ;

// fn must stop the program with the emulator's message: exit status 1, "CUDA emulator: " and every needle
// on stderr. Prints the first line of the message.
static void expect_error(const char* what, const std::function<void()>& fn,
                         const std::vector<std::string>& needles) {
    ChildResult r = run_child(fn);
    bool ok = r.exit_code >= 1 && r.err.find("CUDA emulator: ") != std::string::npos;
    std::string missing;
    for (const std::string& n : needles) {
        if (r.err.find(n) == std::string::npos) {
            ok = false;
            missing += " '" + n + "'";
        }
    }
    const std::string first = r.err.substr(0, r.err.find('\n'));
    if (ok) {
        CHECK(true, "%s -> %s", what, first.c_str());
    } else {
        CHECK(false, "%s: exit %d, message lacks%s; stderr: %s", what, r.exit_code,
              missing.empty() ? " nothing" : missing.c_str(), r.err.c_str());
    }
}

// fn must run to the end (exit 0) with nothing on stderr
static void expect_pass(const char* what, const std::function<void()>& fn) {
    ChildResult r = run_child(fn);
    CHECK(r.exit_code == 0 && r.err.empty(), "%s runs (exit %d%s%s)", what, r.exit_code,
          r.err.empty() ? "" : "; ", r.err.c_str());
}

template <class T> static T* device_buffer(size_t n) {
    T* p = nullptr;
    cudaCheck(cudaMalloc(&p, n * sizeof(T)));
    return p;
}
template <class T> static std::vector<T> download(const T* device, size_t n) {
    std::vector<T> host(n);
    cudaCheck(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}

// ----------------------------------------------------------------------------------------------------
// kernels that break a rule

__global__ void launch_probe_kernel(unsigned* count) {
    atomicAdd(count, 1u);
}

__global__ void smem_probe_kernel(unsigned* result, int bytes) {
    // result[0] += bytes that are poison on entry, result[1] += bytes read back wrong (written by another
    // thread)
    DYNAMIC_SHARED_MEMORY(smem);
    unsigned poisoned = 0, wrong = 0;
    for (int i = threadIdx.x; i < bytes; i += blockDim.x) poisoned += smem[i] == 0xFF;
    __syncthreads();
    for (int i = threadIdx.x; i < bytes; i += blockDim.x) smem[i] = (unsigned char)(i & 0x7F);
    __syncthreads();
    for (int i = threadIdx.x; i < bytes; i += blockDim.x)
        wrong += smem[bytes - 1 - i] != ((bytes - 1 - i) & 0x7F);
    atomicAdd(&result[0], poisoned);
    atomicAdd(&result[1], wrong);
}

__global__ void write_one_kernel(int* out) {
    *out = 1;
}
__global__ void copy_one_kernel(int* out, const int* in) {
    *out = *in;
}
__global__ void null_or_end_kernel(int* maybe_null, const int* end) {
    // neither pointer is dereferenced: a null pointer and a one-past-the-end pointer are legal arguments
    if (maybe_null != nullptr && end == nullptr) *maybe_null = 0;
}

__global__ void early_return_kernel(float* out) {
    if (threadIdx.x >= 16) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

__global__ void return_while_waiting_kernel(float* out) {
    __syncthreads();
    if (threadIdx.x == 0) return; // the others wait for it in the next __syncthreads
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

__global__ void deadlock_kernel(float* out) {
    // lanes 0..15 wait for the block in __syncthreads, lanes 16..31 wait for the whole warp in __syncwarp
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncwarp();
    }
    out[threadIdx.x] = 1.0f;
}

__global__ void syncwarp_full_mask_kernel(float* out) {
    __syncwarp(0xffffffffu);
    out[threadIdx.x] = 1.0f;
}
__global__ void shuffle_full_mask_kernel(float* out) {
    out[threadIdx.x] = warp_reduce_sum(1.0f);
}
__global__ void block_reduce_kernel(float* out) {
    __shared__ float partial[WARP_SIZE];
    out[threadIdx.x] = block_reduce_sum((float)(threadIdx.x + 1), partial);
}
__global__ void syncwarp_without_caller_kernel(float* out) {
    __syncwarp(0x1u);
    out[threadIdx.x] = 1.0f;
}
__global__ void shuffle_outside_mask_kernel(float* out) {
    const int lane = threadIdx.x % 32;
    if (lane >= 16) return;
    out[lane] = __shfl_sync(0x0000ffffu, (float)lane, lane + 16); // lanes 16..31 are not in the mask
}
__global__ void shuffle_down_partial_warp_kernel(float* out) {
    // a partial warp (20 lanes): lane 4 + 16 = 20 does not exist
    float v = 1.0f;
    v += __shfl_down_sync(__activemask(), v, 16);
    out[threadIdx.x] = v;
}

__global__ void misaligned_load128_kernel(float* out, const float* in) {
    const f128 v = load128(in + 1);
    for (int k = 0; k < f128::size; k++) out[k] = v[k];
}
__global__ void misaligned_store128_kernel(float* out) {
    store128(out + 1, f128::constant(2.0f));
}
__global__ void misaligned_float4_kernel(float* out, const float* in) {
    const float4 v = *reinterpret_cast<const float4*>(in + 2);
    out[0] = v.x + v.y + v.z + v.w;
}

__global__ void read_one_kernel(float* out, const float* in, int index) {
    *out = in[index];
}
__global__ void write_byte_kernel(unsigned char* p, int index, unsigned char value) {
    p[index] = value;
}
struct DevicePointer {
    const float* p; // hidden from the launch's pointer check: only the guard pages can catch it
};
__global__ void read_through_struct_kernel(float* out, DevicePointer in) {
    *out = in.p[threadIdx.x];
}
__global__ void read_smem_kernel(float* out, int index) {
    DYNAMIC_SHARED_MEMORY(smem);
    *out = (float)smem[index];
}

// one warp: a wmma m16n16k16 bf16 product (a row-major with lda, b col-major with ldb), c stored fp32 with
// ldc
__global__ void wmma_kernel(float* c, const __nv_bfloat16* a, const __nv_bfloat16* b, int lda, int ldb,
                            int ldc) {
    namespace wmma = nvcuda::wmma;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a, lda);
    wmma::load_matrix_sync(fb, b, ldb);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, ldc, wmma::mem_row_major);
}

// ----------------------------------------------------------------------------------------------------
// kernels that read what nothing wrote

__global__ void copy_floats_kernel(float* out, const float* in, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = in[i];
}
__global__ void copy_bf16_kernel(float* out, const __nv_bfloat16* in, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = (float)in[i];
}
// only block `writer` writes its static shared array; every block reads it (blockDim.x <= 128)
__global__ void static_smem_kernel(float* out, int writer) {
    __shared__ float s[128];
    if ((int)blockIdx.x == writer) s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
__global__ void dynamic_smem_kernel(float* out, int writer) {
    DYNAMIC_SHARED_MEMORY(smem);
    float* s = (float*)smem;
    if ((int)blockIdx.x == writer) s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

// ----------------------------------------------------------------------------------------------------
// correct kernels

// the sum of v over the first `lanes` lanes of the warp (mask = those lanes) into lane 0: a shuffle tree
// whose every source lane is in the mask
__device__ unsigned partial_warp_sum(unsigned v, unsigned mask, int lanes) {
    const int lane = threadIdx.x % 32;
    for (int offset = 16; offset > 0; offset /= 2) {
        const int src = lane + offset;
        const unsigned other = __shfl_sync(mask, v, src < lanes ? src : lane);
        if (src < lanes) v += other;
    }
    return v;
}
// out[t] = 1 + 2 + .. + blockDim.x for every thread t; mask_ok[t] = the computed mask equals __activemask()
__global__ void block_sum_kernel(unsigned* out, int* mask_ok) {
    __shared__ unsigned warp_sums[32];
    __shared__ unsigned total;
    const int t = threadIdx.x, n = blockDim.x, lane = t % 32, warp = t / 32;
    const int lanes = min(32, n - 32 * warp);
    const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    mask_ok[t] = __activemask() == mask;
    const unsigned sum = partial_warp_sum((unsigned)(t + 1), mask, lanes);
    if (lane == 0) warp_sums[warp] = sum;
    __syncthreads();
    if (warp == 0) {
        const int num_warps = (n + 31) / 32;
        const unsigned s = partial_warp_sum(lane < num_warps ? warp_sums[lane] : 0u, mask, lanes);
        if (lane == 0) total = s;
    }
    __syncthreads();
    out[t] = total;
}

// every shuffle variant's source lane, full warp (32 threads)
__global__ void shuffle_lanes_kernel(long long* out) {
    const int lane = threadIdx.x;
    const unsigned full = 0xffffffffu;
    long long* o = out + lane * 9;
    o[0] = __shfl_sync(full, lane * 10, (lane + 1) % 32);
    o[1] = __shfl_down_sync(full, lane, 1);
    o[2] = __shfl_up_sync(full, lane, 2);
    o[3] = __shfl_xor_sync(full, lane, 5);
    o[4] = __shfl_sync(full, lane, 3, 8);
    o[5] = __shfl_down_sync(full, lane, 4, 8);
    o[6] = __shfl_up_sync(full, lane, 1, 16);
    o[7] = __shfl_sync(full, (long long)lane << 40, 7) >> 40;   // 64-bit values
    o[8] = (long long)__shfl_sync(full, lane + 0.5, 31 - lane); // double
}

__global__ void votes_kernel(int* out) {
    const int t = threadIdx.x, n = blockDim.x;
    int* o = out + t * 6;
    o[0] = __syncthreads_count(t % 3 == 0);
    o[1] = __syncthreads_and(t < n);
    o[2] = __syncthreads_and(t != n / 2);
    o[3] = __syncthreads_or(t == n - 1);
    o[4] = __syncthreads_or(0);
    o[5] = __syncthreads_count(1);
}

__global__ void ballot_kernel(unsigned* out) {
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    const int lanes = min(32, (int)blockDim.x - 32 * warp);
    const unsigned mask = __activemask();
    unsigned* o = out + t * 6;
    o[0] = __ballot_sync(mask, lane % 2);
    o[1] = __all_sync(mask, 1);
    o[2] = __all_sync(mask, lane != lanes - 1);
    o[3] = __any_sync(mask, lane == lanes - 1);
    o[4] = __any_sync(mask, 0);
    o[5] = lane < 8 && lanes >= 8 ? __ballot_sync(0xffu, lane >= 4) : 0u; // a vote of the first 8 lanes only
}

__global__ void atomics_kernel(unsigned* counts, float* sum) {
    const unsigned id = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(&counts[0], 1u);
    atomicMax(&counts[1], id);
    atomicMin(&counts[2], id);
    atomicAdd(sum, 0.5f);
}

__global__ void grid_stride_kernel(float* out, int* hits, const float* in, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = 2.0f * in[i];
        hits[i] += 1;
    }
}

// every thread records its indices and the launch shape at its global linear id, and counts itself there
__global__ void indices_kernel(unsigned* record, unsigned* count) {
    const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const unsigned id = block * (blockDim.x * blockDim.y * blockDim.z) + thread;
    unsigned* r = record + (size_t)id * 12;
    r[0] = threadIdx.x, r[1] = threadIdx.y, r[2] = threadIdx.z;
    r[3] = blockIdx.x, r[4] = blockIdx.y, r[5] = blockIdx.z;
    r[6] = blockDim.x, r[7] = blockDim.y, r[8] = blockDim.z;
    r[9] = gridDim.x, r[10] = gridDim.y, r[11] = gridDim.z;
    atomicAdd(&count[id], 1u);
}

// ----------------------------------------------------------------------------------------------------
// kernels whose result depends on the schedule

// thread 0 writes a shared value that every thread reads; without the barrier a thread that runs before
// thread 0 reads the poison
template <bool BARRIER> __global__ void broadcast_kernel(float* out) {
    __shared__ float value;
    if (threadIdx.x == 0) value = 42.0f;
    if (BARRIER) __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = value;
}
// block b reads what block b - 1 wrote (0 if it has not run yet), then writes b + 1
__global__ void chain_kernel(int* seen, int* published) {
    const int b = blockIdx.x;
    seen[b] = b > 0 ? published[b - 1] : 0;
    published[b] = b + 1;
}

// the child of the schedule checks, run as `test_emu_rules --schedule` with CUDA_EMU_SEED set: prints
// "result <name> <value>" lines
static int run_schedule_case() {
    const int blocks = 4, threads = 64;
    float* out = device_buffer<float>(blocks * threads);
    for (int barrier = 0; barrier < 2; barrier++) {
        if (barrier) {
            CUDA_LAUNCH(broadcast_kernel<true>, blocks, threads, 0, 0)(out);
        } else {
            CUDA_LAUNCH(broadcast_kernel<false>, blocks, threads, 0, 0)(out);
        }
        int wrong = 0, nan = 0;
        for (float v : download(out, blocks * threads)) {
            wrong += v != 42.0f;
            nan += std::isnan(v);
        }
        printf("result broadcast_%s %d wrong (%d NaN)\n", barrier ? "with_barrier" : "without_barrier", wrong,
               nan);
    }
    const int chain = 8;
    int* seen = device_buffer<int>(chain);
    int* published = device_buffer<int>(chain);
    cudaCheck(cudaMemset(published, 0, chain * sizeof(int)));
    CUDA_LAUNCH(chain_kernel, chain, 1, 0, 0)(seen, published);
    std::string pattern;
    for (int v : download(seen, chain)) pattern += std::to_string(v) + ",";
    printf("result chain %s\n", pattern.c_str());
    return 0;
}

// runs this program again as `--schedule` with CUDA_EMU_SEED=seed; returns its stdout
static std::string run_with_seed(int seed) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; e++) {
        if (strncmp(*e, "CUDA_EMU_SEED=", 14) != 0) env_strings.push_back(*e);
    }
    env_strings.push_back("CUDA_EMU_SEED=" + std::to_string(seed));
    std::vector<char*> envp;
    for (std::string& s : env_strings) envp.push_back(&s[0]);
    envp.push_back(nullptr);
    char self[] = "/proc/self/exe", flag[] = "--schedule";
    char* argv[] = {self, flag, nullptr};
    fflush(stdout);
    int fds[2];
    if (pipe(fds) != 0) fail("pipe failed");
    const pid_t pid = fork();
    if (pid < 0) fail("fork failed");
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        execve(self, argv, envp.data());
        _exit(127);
    }
    close(fds[1]);
    std::string out;
    char buf[4096];
    ssize_t got;
    while ((got = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, (size_t)got);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) out += "(exit status " + std::to_string(status) + ")";
    return out;
}
// the value of "result <name> <value>" in a child's output, or "" if missing
static std::string result_of(const std::string& out, const std::string& name) {
    const std::string key = "result " + name + " ";
    const size_t at = out.find(key);
    if (at == std::string::npos) return "";
    const size_t start = at + key.size();
    return out.substr(start, out.find('\n', start) - start);
}

// ----------------------------------------------------------------------------------------------------

static void test_launch_rules() {
    printf("--- launch\n");
    unsigned* count = device_buffer<unsigned>(1);
    auto launch = [&](dim3 grid, dim3 block) {
        return [=] { CUDA_LAUNCH(launch_probe_kernel, grid, block, 0, 0)(count); };
    };
    expect_error("block of 1025 threads", launch(1, 1025),
                 {"launch of launch_probe_kernel", "block of (1025,1,1) threads"});
    expect_error("block of 32x32x2 threads", launch(1, dim3(32, 32, 2)),
                 {"launch of launch_probe_kernel", "block of (32,32,2)"});
    expect_error("block.z = 65", launch(1, dim3(1, 1, 65)),
                 {"launch of launch_probe_kernel", "block of (1,1,65)", "z <= 64"});
    expect_error("block of 0 threads", launch(1, dim3(0, 1, 1)),
                 {"launch of launch_probe_kernel", "block of (0,1,1)"});
    expect_error("grid.y = 65536", launch(dim3(1, 65536, 1), 1),
                 {"launch of launch_probe_kernel", "grid of (1,65536,1)"});
    expect_error("grid.z = 65536", launch(dim3(1, 1, 65536), 1),
                 {"launch of launch_probe_kernel", "grid of (1,1,65536)"});

    // the largest legal shapes run every thread and block once
    struct Legal {
        dim3 grid, block;
    } legal[] = {{1, 1024},
                 {1, dim3(1, 1024, 1)},
                 {1, dim3(16, 1, 64)},
                 {dim3(1, 65535, 1), 1},
                 {dim3(70000, 1, 1), 1}};
    for (const Legal& l : legal) {
        cudaCheck(cudaMemset(count, 0, sizeof(unsigned)));
        CUDA_LAUNCH(launch_probe_kernel, l.grid, l.block, 0, 0)(count);
        const unsigned expected = l.grid.x * l.grid.y * l.grid.z * l.block.x * l.block.y * l.block.z;
        const unsigned got = download(count, 1)[0];
        CHECK(got == expected, "grid (%u,%u,%u) x block (%u,%u,%u) runs %u threads (expected %u)", l.grid.x,
              l.grid.y, l.grid.z, l.block.x, l.block.y, l.block.z, got, expected);
    }

    printf("--- dynamic shared memory\n");
    unsigned* result = device_buffer<unsigned>(2);
    // without the attribute: 48 KiB runs, one byte more does not; the blocks of a launch start poisoned
    auto run_smem = [&](int bytes, int blocks) {
        cudaCheck(cudaMemset(result, 0, 2 * sizeof(unsigned)));
        CUDA_LAUNCH(smem_probe_kernel, blocks, 256, bytes, 0)(result, bytes);
        return download(result, 2);
    };
    std::vector<unsigned> r = run_smem(48 * 1024, 3);
    CHECK(r[0] == 3u * 48 * 1024 && r[1] == 0,
          "48 KiB without cudaFuncSetAttribute: every byte poisoned in each of 3 blocks (%u of %u) and "
          "written / read back (%u wrong)",
          r[0], 3u * 48 * 1024, r[1]);
    expect_error("48 KiB + 1 without cudaFuncSetAttribute", [&] { run_smem(48 * 1024 + 1, 1); },
                 {"launch of smem_probe_kernel with 49153 bytes of dynamic shared memory", "over 49152",
                  "cudaFuncSetAttribute"});
    expect_error("100 KiB + 16 over an attribute of 100 KiB",
                 [&] {
                     cudaCheck(cudaFuncSetAttribute(smem_probe_kernel,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024));
                     run_smem(100 * 1024 + 16, 1);
                 },
                 {"launch of smem_probe_kernel with 102416 bytes", "over 102400"});
    expect_error("227 KiB + 16 over an attribute of 227 KiB",
                 [&] {
                     cudaCheck(cudaFuncSetAttribute(smem_probe_kernel,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
                     run_smem(227 * 1024 + 16, 1);
                 },
                 {"launch of smem_probe_kernel with 232464 bytes", "over 232448", "at most 232448"});
    CHECK(cudaFuncSetAttribute(smem_probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               227 * 1024 + 1) == cudaErrorInvalidValue,
          "cudaFuncSetAttribute(227 KiB + 1) is refused with cudaErrorInvalidValue");
    cudaCheck(
        cudaFuncSetAttribute(smem_probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
    for (int bytes : {100 * 1024, 227 * 1024 - 4, 227 * 1024}) {
        r = run_smem(bytes, 2);
        CHECK(r[0] == 2u * bytes && r[1] == 0,
              "%d bytes with the attribute 227 KiB: poisoned (%u of %u), written / read back to the last "
              "byte (%u wrong)",
              bytes, r[0], 2u * bytes, r[1]);
    }
    float* one = device_buffer<float>(1);
    expect_error("read one byte past 1024 bytes of dynamic shared memory",
                 [&] {
                     CUDA_LAUNCH(read_smem_kernel, 1, 1, 1024, 0)
                     (one, 1024);
                 },
                 {"invalid memory access", "outside this launch's 1024 bytes of dynamic shared memory",
                  "in kernel read_smem_kernel"});

    printf("--- pointer arguments\n");
    int* d_int = device_buffer<int>(25); // 100 bytes
    expect_error("pointer to the host stack",
                 [&] {
                     int on_stack = 0;
                     CUDA_LAUNCH(write_one_kernel, 1, 1, 0, 0)(&on_stack);
                 },
                 {"kernel write_one_kernel: argument 1 is the pointer", "not in any device allocation"});
    expect_error("pointer to malloc'ed memory (argument 2)",
                 [&] {
                     int* heap = (int*)malloc(64);
                     CUDA_LAUNCH(copy_one_kernel, 1, 1, 0, 0)(d_int, heap);
                 },
                 {"kernel copy_one_kernel: argument 2 is the pointer", "not in any device allocation"});
    expect_error(
        "pointer into the padding after 100 bytes",
        [&] {
            CUDA_LAUNCH(write_one_kernel, 1, 1, 0, 0)
            (d_int + 26);
        },
        {"kernel write_one_kernel: argument 1", "4 bytes past the end of the allocation of 100 bytes"});
    expect_error("freed pointer",
                 [&] {
                     int* freed = device_buffer<int>(4);
                     cudaCheck(cudaFree(freed));
                     CUDA_LAUNCH(write_one_kernel, 1, 1, 0, 0)(freed);
                 },
                 {"kernel write_one_kernel: argument 1", "that was freed"});
    expect_pass("a null pointer, a one-past-the-end pointer and a cudaMallocHost pointer as arguments", [&] {
        int* pinned = nullptr;
        cudaCheck(cudaMallocHost(&pinned, sizeof(int)));
        CUDA_LAUNCH(null_or_end_kernel, 1, 1, 0, 0)((int*)nullptr, d_int + 25);
        CUDA_LAUNCH(copy_one_kernel, 1, 1, 0, 0)(pinned, d_int);
    });
}

static void test_barrier_rules() {
    printf("--- barriers\n");
    float* out = device_buffer<float>(1024);
    expect_error(
        "__syncthreads skipped by an early return",
        [&] {
            CUDA_LAUNCH(early_return_kernel, 1, 32, 0, 0)
            (out);
        },
        {"every thread of the block must reach every __syncthreads", "in kernel early_return_kernel"});
    expect_error("a thread returns while 1023 wait in __syncthreads",
                 [&] {
                     CUDA_LAUNCH(return_while_waiting_kernel, 1, 1024, 0, 0)
                     (out);
                 },
                 {"thread returned while", "wait in __syncthreads",
                  "in kernel return_while_waiting_kernel, block (0,0,0)", "thread (0,0,0)"});
    expect_error("deadlock: half a warp in __syncthreads, half in __syncwarp",
                 [&] {
                     CUDA_LAUNCH(deadlock_kernel, 1, 32, 0, 0)
                     (out);
                 },
                 {"deadlock: 32 of 32 threads wait in barriers", "waits in __syncthreads",
                  "waits in __syncwarp (mask 0xffffffff)", "in kernel deadlock_kernel"});
    expect_error(
        "__syncwarp(0xffffffff) in a block of 16",
        [&] {
            CUDA_LAUNCH(syncwarp_full_mask_kernel, 1, 16, 0, 0)
            (out);
        },
        {"__syncwarp with mask 0xffffffff names lanes that do not exist (this warp has lanes 0x0000ffff)",
         "in kernel syncwarp_full_mask_kernel"});
    expect_error("warp_reduce_sum (mask 0xffffffff) in a block of 16",
                 [&] {
                     CUDA_LAUNCH(shuffle_full_mask_kernel, 1, 16, 0, 0)
                     (out);
                 },
                 {"__shfl_xor_sync with mask 0xffffffff names lanes that do not exist",
                  "in kernel shuffle_full_mask_kernel"});
    expect_error(
        "block_reduce_sum in a block of 48 (second warp partial)",
        [&] {
            CUDA_LAUNCH(block_reduce_kernel, 1, 48, 0, 0)
            (out);
        },
        {"names lanes that do not exist (this warp has lanes 0x0000ffff)", "in kernel block_reduce_kernel"});
    expect_error("__syncwarp(0x1) called by other lanes",
                 [&] {
                     CUDA_LAUNCH(syncwarp_without_caller_kernel, 1, 32, 0, 0)
                     (out);
                 },
                 {"__syncwarp with mask 0x00000001 called by lane", "which is not in the mask",
                  "in kernel syncwarp_without_caller_kernel"});
    expect_error("__shfl_sync reading a lane outside the mask",
                 [&] {
                     CUDA_LAUNCH(shuffle_outside_mask_kernel, 1, 32, 0, 0)
                     (out);
                 },
                 {"__shfl_sync: lane", "which is not in the mask 0x0000ffff",
                  "in kernel shuffle_outside_mask_kernel"});
    expect_error("__shfl_down_sync past the end of a partial warp",
                 [&] {
                     CUDA_LAUNCH(shuffle_down_partial_warp_kernel, 1, 20, 0, 0)
                     (out);
                 },
                 {"__shfl_down_sync: lane", "which is not in the mask 0x000fffff",
                  "in kernel shuffle_down_partial_warp_kernel"});
}

static void test_memory_rules() {
    printf("--- memory\n");
    float* page = device_buffer<float>(1024); // 4096 bytes: the allocation ends at its guard page
    float* out = device_buffer<float>(16);
    expect_error("load128 at an address offset by 4 bytes",
                 [&] {
                     CUDA_LAUNCH(misaligned_load128_kernel, 1, 1, 0, 0)
                     (out, page);
                 },
                 {"128-bit load of int4", "is not 16-byte aligned", "in kernel misaligned_load128_kernel"});
    expect_error("store128 at an address offset by 4 bytes",
                 [&] {
                     CUDA_LAUNCH(misaligned_store128_kernel, 1, 1, 0, 0)
                     (out);
                 },
                 {"128-bit store of int4", "is not 16-byte aligned", "in kernel misaligned_store128_kernel"});
    expect_error("float4 load at an address offset by 8 bytes",
                 [&] {
                     CUDA_LAUNCH(misaligned_float4_kernel, 1, 1, 0, 0)
                     (out, page);
                 },
                 {"128-bit load of float4", "is not 16-byte aligned", "in kernel misaligned_float4_kernel"});
    expect_error("read one float past a 4096-byte allocation (guard page)",
                 [&] {
                     CUDA_LAUNCH(read_one_kernel, 1, 1, 0, 0)
                     (out, page, 1024);
                 },
                 {"invalid memory access (SIGSEGV)", "0 bytes past the end of the allocation of 4096 bytes",
                  "in kernel read_one_kernel"});
    unsigned char* bytes100 = device_buffer<unsigned char>(100);
    expect_error("write byte 101 of a 100-byte allocation (padding)",
                 [&] {
                     CUDA_LAUNCH(write_byte_kernel, 1, 1, 0, 0)
                     (bytes100, 100, (unsigned char)0);
                 },
                 {"kernel write_byte_kernel wrote 1 bytes past the end of the allocation of 100 bytes"});
    expect_error("write byte 256 of a 100-byte allocation (the last byte of padding)",
                 [&] {
                     CUDA_LAUNCH(write_byte_kernel, 1, 1, 0, 0)
                     (bytes100, 255, (unsigned char)7);
                 },
                 {"kernel write_byte_kernel wrote 156 bytes past the end of the allocation of 100 bytes"});
    expect_error("read through a freed pointer hidden in a struct",
                 [&] {
                     float* freed = device_buffer<float>(1024);
                     cudaCheck(cudaFree(freed));
                     CUDA_LAUNCH(read_through_struct_kernel, 1, 32, 0, 0)(out, DevicePointer{freed});
                 },
                 {"invalid memory access (SIGSEGV)", "inside an allocation of 4096 bytes", "that was freed",
                  "in kernel read_through_struct_kernel"});
    expect_error(
        "read through a freed pointer after the next cudaMalloc of the same size",
        [&] {
            float* freed = device_buffer<float>(1024);
            cudaCheck(cudaFree(freed));
            float* next = device_buffer<float>(1024); // must not get the freed addresses back
            CUDA_LAUNCH(read_through_struct_kernel, 1, 32, 0, 0)(next, DevicePointer{freed});
        },
        {"invalid memory access (SIGSEGV)", "that was freed", "in kernel read_through_struct_kernel"});
    std::vector<unsigned char> host(256, 0);
    expect_error("cudaMemcpy of 101 bytes into 100",
                 [&] { cudaCheck(cudaMemcpy(bytes100, host.data(), 101, cudaMemcpyHostToDevice)); },
                 {"cudaMemcpy destination", "+101 bytes) is not inside one device allocation"});
    expect_error("cudaMemcpy of 100 bytes from byte 1 of 100",
                 [&] { cudaCheck(cudaMemcpy(host.data(), bytes100 + 1, 100, cudaMemcpyDeviceToHost)); },
                 {"cudaMemcpy source", "+100 bytes) is not inside one device allocation"});
    expect_error("cudaMemcpy DeviceToDevice from host memory",
                 [&] { cudaCheck(cudaMemcpy(bytes100, host.data(), 16, cudaMemcpyDeviceToDevice)); },
                 {"cudaMemcpy source", "not in any device allocation"});
    expect_error("cudaMemcpy from a freed allocation",
                 [&] {
                     float* freed = device_buffer<float>(4);
                     cudaCheck(cudaFree(freed));
                     cudaCheck(cudaMemcpy(host.data(), freed, 16, cudaMemcpyDeviceToHost));
                 },
                 {"cudaMemcpy source", "that was freed"});
    expect_error("cudaMemset of 101 bytes of 100", [&] { cudaCheck(cudaMemset(bytes100, 0, 101)); },
                 {"cudaMemset", "is not inside one device allocation"});
    expect_pass("cudaMemcpy / cudaMemset of exactly 100 bytes, a kernel writing byte 100 of 100", [&] {
        cudaCheck(cudaMemcpy(bytes100, host.data(), 100, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemset(bytes100, 1, 100));
        CUDA_LAUNCH(write_byte_kernel, 1, 1, 0, 0)(bytes100, 99, (unsigned char)0);
    });

    printf("--- wmma\n");
    // a (16, lda) row-major, b (16 columns of ldb) col-major: fill both with small integers, exact in bf16
    const int ld = 24; // a multiple of 8 bf16 (48 bytes), not of 16 elements: legal
    std::vector<__nv_bfloat16> a(16 * ld + 16), b(16 * ld + 16);
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 16; k++) {
            a[i * ld + k] = __nv_bfloat16((float)((i + 2 * k) % 5 - 2));
            b[i * ld + k] = __nv_bfloat16((float)((3 * i + k) % 7 - 3)); // column i, row k
        }
    __nv_bfloat16* d_a = device_buffer<__nv_bfloat16>(a.size());
    __nv_bfloat16* d_b = device_buffer<__nv_bfloat16>(b.size());
    float* d_c = device_buffer<float>(16 * 20 + 8);
    cudaCheck(cudaMemcpy(d_a, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_b, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
    CUDA_LAUNCH(wmma_kernel, 1, 32, 0, 0)(d_c, d_a, d_b, ld, ld, 20);
    std::vector<float> c = download(d_c, 16 * 20);
    int wrong = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float ref = 0.0f;
            for (int k = 0; k < 16; k++) ref += (float)a[i * ld + k] * (float)b[j * ld + k];
            wrong += c[i * 20 + j] != ref;
        }
    CHECK(wrong == 0, "wmma m16n16k16 bf16 product with ldm 24 / 24 / 20: exact (%d of 256 wrong)", wrong);
    expect_error(
        "wmma load_matrix_sync from a pointer 16 bytes off 32",
        [&] {
            CUDA_LAUNCH(wmma_kernel, 1, 32, 0, 0)
            (d_c, d_a + 8, d_b, ld, ld, 20);
        },
        {"wmma::load_matrix_sync: pointer", "is not 32-byte (256-bit) aligned", "in kernel wmma_kernel"});
    expect_error("wmma load_matrix_sync with ldm 12 (bf16)",
                 [&] {
                     CUDA_LAUNCH(wmma_kernel, 1, 32, 0, 0)
                     (d_c, d_a, d_b, 12, ld, 20);
                 },
                 {"wmma::load_matrix_sync: ldm 12 is not a multiple of 8", "in kernel wmma_kernel"});
    expect_error("wmma store_matrix_sync with ldm 18 (fp32)",
                 [&] {
                     CUDA_LAUNCH(wmma_kernel, 1, 32, 0, 0)
                     (d_c, d_a, d_b, ld, ld, 18);
                 },
                 {"wmma::store_matrix_sync: ldm 18 is not a multiple of 4", "in kernel wmma_kernel"});
    expect_error("wmma in a warp of 16 lanes",
                 [&] {
                     CUDA_LAUNCH(wmma_kernel, 1, 16, 0, 0)
                     (d_c, d_a, d_b, ld, ld, 20);
                 },
                 {"names lanes that do not exist", "in kernel wmma_kernel"});
}

static void test_poison() {
    printf("--- poison\n");
    const int n = 300;
    float* in = device_buffer<float>(n);
    float* out = device_buffer<float>(4 * 128);
    CUDA_LAUNCH(copy_floats_kernel, 1, 64, 0, 0)(out, in, n);
    int nan = 0;
    for (float v : download(out, n)) nan += std::isnan(v);
    CHECK(nan == n, "uninitialised cudaMalloc fp32 read in a kernel: NaN (%d of %d)", nan, n);
    std::vector<float> host = download(in, n);
    nan = 0;
    for (float v : host) nan += std::isnan(v);
    CHECK(nan == n, "uninitialised cudaMalloc fp32 copied to the host: NaN (%d of %d)", nan, n);
    __nv_bfloat16* in_bf16 = device_buffer<__nv_bfloat16>(n);
    CUDA_LAUNCH(copy_bf16_kernel, 1, 64, 0, 0)(out, in_bf16, n);
    nan = 0;
    for (float v : download(out, n)) nan += std::isnan(v);
    CHECK(nan == n, "uninitialised cudaMalloc bf16 read in a kernel: NaN (%d of %d)", nan, n);

    // shared memory: only block 2 of 4 writes it; the others (run before or after it) read poison
    for (int dynamic = 0; dynamic < 2; dynamic++) {
        if (dynamic) {
            CUDA_LAUNCH(dynamic_smem_kernel, 4, 128, 128 * sizeof(float), 0)(out, 2);
        } else {
            CUDA_LAUNCH(static_smem_kernel, 4, 128, 0, 0)(out, 2);
        }
        std::vector<float> got = download(out, 4 * 128);
        int writer_ok = 0, others_nan = 0;
        for (int b = 0; b < 4; b++)
            for (int t = 0; t < 128; t++) {
                const float v = got[b * 128 + t];
                if (b == 2)
                    writer_ok += v == 1.0f;
                else
                    others_nan += std::isnan(v);
            }
        CHECK(writer_ok == 128 && others_nan == 3 * 128,
              "uninitialised %s shared memory: NaN in the 3 blocks that did not write it (%d of 384), the "
              "written values in the one that did (%d of 128)",
              dynamic ? "dynamic" : "static __shared__", others_nan, writer_ok);
    }
}

static void test_correct_code() {
    printf("--- correct code\n");
    unsigned* sums = device_buffer<unsigned>(1024);
    int* mask_ok = device_buffer<int>(1024);
    int bad_sizes = 0, bad_masks = 0, first_bad = 0;
    for (int n = 1; n <= 1024; n++) {
        CUDA_LAUNCH(block_sum_kernel, 1, n, 0, 0)(sums, mask_ok);
        const unsigned expected = (unsigned)n * (n + 1) / 2;
        bool ok = true;
        for (unsigned v : download(sums, n)) ok = ok && v == expected;
        int masks = 0;
        for (int m : download(mask_ok, n)) masks += m;
        bad_masks += masks != n;
        if (!ok && bad_sizes++ == 0) first_bad = n;
    }
    CHECK(bad_sizes == 0 && bad_masks == 0,
          "block sum with __syncthreads and partial-warp shuffles, every block size 1..1024: %d sizes wrong "
          "(first %d), %d with __activemask() != the computed mask",
          bad_sizes, first_bad, bad_masks);

    float* fsums = device_buffer<float>(1024);
    bad_sizes = 0;
    for (int n = 32; n <= 1024; n += 32) {
        CUDA_LAUNCH(block_reduce_kernel, 1, n, 0, 0)(fsums);
        for (float v : download(fsums, n)) bad_sizes += v != (float)n * (n + 1) / 2;
    }
    CHECK(bad_sizes == 0, "block_reduce_sum (cuda_common.h), block sizes 32, 64, .., 1024: %d wrong results",
          bad_sizes);

    long long* lanes = device_buffer<long long>(32 * 9);
    CUDA_LAUNCH(shuffle_lanes_kernel, 1, 32, 0, 0)(lanes);
    std::vector<long long> got = download(lanes, 32 * 9);
    int wrong = 0;
    for (int l = 0; l < 32; l++) {
        const long long expect[9] = {((l + 1) % 32) * 10,
                                     l < 31 ? l + 1 : l,
                                     l >= 2 ? l - 2 : l,
                                     l ^ 5,
                                     (l & ~7) + 3,
                                     l % 8 + 4 < 8 ? l + 4 : l,
                                     l % 16 >= 1 ? l - 1 : l,
                                     7,
                                     31 - l};
        for (int k = 0; k < 9; k++) {
            if (got[l * 9 + k] != expect[k] && wrong++ < 5)
                printf("     lane %d value %d: got %lld, expected %lld\n", l, k, got[l * 9 + k], expect[k]);
        }
    }
    CHECK(wrong == 0,
          "__shfl_sync / _down / _up / _xor source lanes, with width 8 and 16, 64-bit values: %d wrong",
          wrong);

    int* votes = device_buffer<int>(1024 * 6);
    wrong = 0;
    for (int n : {1, 2, 31, 33, 100, 1000, 1024}) {
        CUDA_LAUNCH(votes_kernel, 1, n, 0, 0)(votes);
        std::vector<int> v = download(votes, (size_t)n * 6);
        const int expect[6] = {(n + 2) / 3, 1, 0, 1, 0, n}; // thread n / 2 always exists: the second and is 0
        for (int t = 0; t < n; t++)
            for (int k = 0; k < 6; k++) wrong += v[t * 6 + k] != expect[k];
    }
    CHECK(wrong == 0, "__syncthreads_count / _and / _or, six in a row, blocks of 1..1024: %d wrong results",
          wrong);

    unsigned* ballots = device_buffer<unsigned>(1024 * 6);
    wrong = 0;
    for (int n : {1, 7, 8, 20, 32, 45, 1024}) {
        CUDA_LAUNCH(ballot_kernel, 1, n, 0, 0)(ballots);
        std::vector<unsigned> v = download(ballots, (size_t)n * 6);
        for (int t = 0; t < n; t++) {
            const int lane = t % 32, lanes = std::min(32, n - 32 * (t / 32));
            const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
            const unsigned expect[6] = {
                0xaaaaaaaau & mask, 1u, 0u, 1u, 0u, lane < 8 && lanes >= 8 ? 0xf0u : 0u};
            for (int k = 0; k < 6; k++) wrong += v[t * 6 + k] != expect[k];
        }
    }
    CHECK(wrong == 0,
          "__ballot_sync / __all_sync / __any_sync over full and partial warps and an 8-lane mask: %d wrong",
          wrong);

    unsigned* counts = device_buffer<unsigned>(3);
    float* fsum = device_buffer<float>(1);
    const unsigned init[3] = {0u, 0u, 0xffffffffu};
    cudaCheck(cudaMemcpy(counts, init, sizeof(init), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemset(fsum, 0, sizeof(float)));
    const int blocks = 500, threads = 256;
    CUDA_LAUNCH(atomics_kernel, blocks, threads, 0, 0)(counts, fsum);
    std::vector<unsigned> cnt = download(counts, 3);
    const float fs = download(fsum, 1)[0];
    CHECK(cnt[0] == blocks * threads && cnt[1] == blocks * threads - 1 && cnt[2] == 0 &&
              fs == blocks * threads * 0.5f,
          "atomicAdd / atomicMax / atomicMin over %d blocks of %d: count %u, max %u, min %u, float sum %g",
          blocks, threads, cnt[0], cnt[1], cnt[2], fs);

    const int n = 100003;
    std::vector<float> in_h(n);
    for (int i = 0; i < n; i++) in_h[i] = (float)(i % 1000);
    float* in = device_buffer<float>(n);
    float* out = device_buffer<float>(n);
    int* hits = device_buffer<int>(n);
    cudaCheck(cudaMemcpy(in, in_h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemset(hits, 0, n * sizeof(int)));
    CUDA_LAUNCH(grid_stride_kernel, 7, 96, 0, 0)(out, hits, in, n);
    std::vector<float> out_h = download(out, n);
    std::vector<int> hits_h = download(hits, n);
    wrong = 0;
    for (int i = 0; i < n; i++) wrong += out_h[i] != 2.0f * in_h[i] || hits_h[i] != 1;
    CHECK(wrong == 0,
          "grid-stride loop, %d elements over 7 blocks of 96: %d written wrong or not exactly once", n,
          wrong);

    struct Shape {
        dim3 grid, block;
    } shapes[] = {
        {dim3(3, 2, 5), dim3(4, 3, 2)}, {dim3(2, 1, 3), dim3(8, 8, 16)}, {dim3(1, 3, 1), dim3(1, 16, 64)}};
    for (const Shape& s : shapes) {
        const size_t total = (size_t)s.grid.x * s.grid.y * s.grid.z * s.block.x * s.block.y * s.block.z;
        unsigned* record = device_buffer<unsigned>(total * 12);
        unsigned* count = device_buffer<unsigned>(total);
        cudaCheck(cudaMemset(count, 0, total * sizeof(unsigned)));
        CUDA_LAUNCH(indices_kernel, s.grid, s.block, 0, 0)(record, count);
        std::vector<unsigned> rec = download(record, total * 12), cnt3 = download(count, total);
        size_t bad = 0;
        const unsigned per_block = s.block.x * s.block.y * s.block.z;
        for (size_t id = 0; id < total; id++) {
            const unsigned t = (unsigned)(id % per_block), b = (unsigned)(id / per_block);
            const unsigned expect[12] = {t % s.block.x,
                                         t / s.block.x % s.block.y,
                                         t / (s.block.x * s.block.y),
                                         b % s.grid.x,
                                         b / s.grid.x % s.grid.y,
                                         b / (s.grid.x * s.grid.y),
                                         s.block.x,
                                         s.block.y,
                                         s.block.z,
                                         s.grid.x,
                                         s.grid.y,
                                         s.grid.z};
            bool ok = cnt3[id] == 1;
            for (int k = 0; k < 12; k++) ok = ok && rec[id * 12 + k] == expect[k];
            bad += !ok;
        }
        CHECK(bad == 0,
              "grid (%u,%u,%u) x block (%u,%u,%u): every (blockIdx, threadIdx) exactly once, blockDim / "
              "gridDim right (%zu of %zu ids wrong)",
              s.grid.x, s.grid.y, s.grid.z, s.block.x, s.block.y, s.block.z, bad, total);
        cudaCheck(cudaFree(record));
        cudaCheck(cudaFree(count));
    }
}

static void test_schedules() {
    printf("--- schedules (CUDA_EMU_SEED = 1..8)\n");
    int seeds_wrong = 0, seeds_barrier_wrong = 0, seeds_ran = 0;
    std::set<std::string> chains;
    for (int seed = 1; seed <= 8; seed++) {
        const std::string out = run_with_seed(seed);
        const bool banner = out.find("(seed " + std::to_string(seed) + ")") != std::string::npos;
        const std::string without = result_of(out, "broadcast_without_barrier");
        const std::string with = result_of(out, "broadcast_with_barrier");
        const std::string chain = result_of(out, "chain");
        if (!banner || without.empty() || with.empty() || chain.empty()) {
            CHECK(false, "seed %d: the child's output lacks the banner with its seed or a result:\n%s", seed,
                  out.c_str());
            continue;
        }
        seeds_ran++;
        seeds_wrong += atoi(without.c_str()) > 0;
        seeds_barrier_wrong += atoi(with.c_str()) > 0;
        chains.insert(chain);
        printf("     seed %d: without the barrier %s, with it %s; blocks saw %s\n", seed, without.c_str(),
               with.c_str(), chain.c_str());
    }
    CHECK(seeds_ran == 8, "the program re-run with CUDA_EMU_SEED=1..8 announces each seed (%d of 8)",
          seeds_ran);
    CHECK(seeds_wrong >= 1,
          "missing __syncthreads after thread 0's shared write: wrong for %d of 8 seeds (need >= 1)",
          seeds_wrong);
    CHECK(seeds_barrier_wrong == 0, "the same kernel with the __syncthreads: right for every seed (%d wrong)",
          seeds_barrier_wrong);
    CHECK(chains.size() >= 2,
          "blocks reading what other blocks wrote: %zu different results over 8 seeds (need >= 2)",
          chains.size());
}

int main(int argc, char** argv) {
    test_list_checks();
    if (argc == 2 && strcmp(argv[1], "--schedule") == 0) return run_schedule_case();
    if (argc != 1) fail("usage: %s   (--schedule: the child of the schedule checks)", argv[0]);
    test_launch_rules();
    test_barrier_rules();
    test_memory_rules();
    test_poison();
    test_correct_code();
    test_schedules();
    return test_summary("test_emu_rules");
}
