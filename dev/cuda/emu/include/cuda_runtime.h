// cuda_runtime.h for the CPU emulator (dev/cuda/emu): the part of CUDA this project's kernels and
// trainers use, implemented on the host, so that the real .cu/.cuh sources compile with a host compiler
// and every kernel runs unchanged on the CPU. Read dev/cuda/emu/README.md for what it proves and what not.
//
// Execution. A launch runs every block of the grid, one block at a time, in an order shuffled by the
// seed (CUDA_EMU_SEED, default 1). The threads of a block are cooperative fibers, each with its own
// threadIdx, on a pool of stacks (a thread that has not started runs on the stack of one that returned).
// A fiber runs until it waits in a barrier (__syncthreads, __syncwarp, a shuffle, a vote) or returns,
// and the next fiber to run is drawn at random from those that can run; in half the blocks (drawn by the
// seed) from the lanes of one warp first, the warps in a random order, so that one warp runs ahead to its
// next __syncthreads before the others start. So between two barriers the threads run in a shuffled
// order: a missing barrier, or a block that depends on another block, changes the result from seed to
// seed. Launches are synchronous: when the launch call returns, the kernel has run (streams and events
// are bookkeeping, and cross-stream races are not emulated).
//
// CUDA's rules are checked; a violation stops the program with a message naming the kernel, the block
// and the thread:
//   launch:   block <= 1024 threads (x, y <= 1024, z <= 64), grid.y/z <= 65535, dynamic shared memory
//             <= 48 KiB unless cudaFuncSetAttribute(MaxDynamicSharedMemorySize) raised it (<= 227 KiB);
//             every pointer argument null or inside a device (or cudaMallocHost) allocation;
//   barriers: each __syncthreads reached by every thread of the block (a thread that returns while
//             others wait, or arrives after another returned, is an error); a __syncwarp / shuffle /
//             vote mask names only lanes that exist and includes the caller; a deadlock is reported;
//   memory:   128-bit loads/stores (int4, float4 copies) 16-byte aligned; wmma pointers 32-byte
//             aligned and ldm a multiple of 16 bytes (mma.h); device memory comes from mmap with a
//             guard page after each allocation, so an access past the end (or after cudaFree: the last 64
//             freed ranges stay reserved with no access, never handed out again meanwhile) faults
//             and is reported with the allocation it missed; a write into the <= 255 bytes of padding
//             after an allocation is found after the kernel; cudaMemcpy/cudaMemset ranges must lie in
//             device allocations;
//   poison:   cudaMalloc'd memory, static __shared__ memory and dynamic shared memory are filled with
//             0xFF bytes (NaN in fp32 and bf16) before first use / before every block, so a read of
//             something nothing wrote shows up as NaN in the result.
#pragma once
#define EMU_CUDA_RUNTIME_H
#define CUDA_EMULATOR 1

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <vector>
#include <sys/mman.h>

#include <cuda_bf16.h>
#include <library_types.h>

// ----------------------------------------------------------------------------------------------------
// keywords: device code is host code; __shared__ variables are statics in one linker section, which
// the emulator poisons before every block (clang places template statics there too; g++ does not, which
// is why the emulated programs are built with clang++ and emu::self_check verifies it at start-up)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
#define __shared__   static __attribute__((section("emu_shared")))
#define __constant__

extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

// CUDA_LAUNCH(kernel, grid, block, smem, stream)(args...) is how this project launches a kernel
// (llmc/cuda_common.h); with nvcc it is kernel<<<grid, block, smem, stream>>>(args...)
#define CUDA_LAUNCH(kernel, grid, block, smem, stream)                                                       \
    ::emu::make_launch(kernel, #kernel, grid, block, smem, stream)
// the launch's dynamic shared memory (CUDA's `extern __shared__ unsigned char name[]`)
#define DYNAMIC_SHARED_MEMORY(name) unsigned char* const name = ::emu::dynamic_shared_memory()

// ----------------------------------------------------------------------------------------------------
// vector types

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

namespace emu {
void check_vector_alignment(const void* address, size_t alignment, const char* what);
// the address, with what the compiler knows about it forgotten: a reference to a 16-byte aligned type is
// aligned by the language's rules, so without this clang folds the alignment check to "aligned" and
// deletes it (and may emit an aligned SSE access, whose fault on a misaligned address has no address)
inline const void* opaque_address(const void* p) {
    asm volatile("" : "+r"(p));
    return p;
}
} // namespace emu

// 16-byte vectors: copying one from (or into) memory is a 128-bit load (store) on the GPU, which must be
// 16-byte aligned; the copy operations check the alignment of the address they read or write.
#define EMU_VECTOR16(Name, T)                                                                                \
    struct alignas(16) Name {                                                                                \
        T x, y, z, w;                                                                                        \
        Name() = default;                                                                                    \
        constexpr Name(T a, T b, T c, T d) : x(a), y(b), z(c), w(d) {}                                       \
        Name(const Name& other) {                                                                            \
            const void* from = emu::opaque_address(&other);                                                  \
            emu::check_vector_alignment(from, 16, "128-bit load of " #Name);                                 \
            memcpy((void*)this, from, 16);                                                                   \
        }                                                                                                    \
        Name& operator=(const Name& other) {                                                                 \
            void* to = (void*)emu::opaque_address(this);                                                     \
            const void* from = emu::opaque_address(&other);                                                  \
            emu::check_vector_alignment(to, 16, "128-bit store of " #Name);                                  \
            emu::check_vector_alignment(from, 16, "128-bit load of " #Name);                                 \
            memcpy(to, from, 16);                                                                            \
            return *this;                                                                                    \
        }                                                                                                    \
    };
EMU_VECTOR16(int4, int)
EMU_VECTOR16(uint4, unsigned)
EMU_VECTOR16(float4, float)
#undef EMU_VECTOR16
struct alignas(8) int2 {
    int x, y;
};
struct alignas(8) float2 {
    float x, y;
};
inline int4 make_int4(int x, int y, int z, int w) {
    return int4(x, y, z, w);
}
inline float4 make_float4(float x, float y, float z, float w) {
    return float4(x, y, z, w);
}

// the built-in variables of the thread that runs (set by the scheduler on every switch)
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ----------------------------------------------------------------------------------------------------
// the runtime's types

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorLaunchFailure = 719,
} cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDefault = 0, cudaEventBlockingSync = 1, cudaEventDisableTiming = 2;

struct emu_stream {
    unsigned flags;
};
struct emu_event {
    unsigned flags;
    bool recorded;
    std::chrono::steady_clock::time_point when;
};
typedef emu_stream* cudaStream_t;
typedef emu_event* cudaEvent_t;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    int regsPerBlock;
    int warpSize;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int clockRate;
    int major, minor;
    int multiProcessorCount;
    int l2CacheSize;
    int memoryBusWidth;
    int memoryClockRate;
};

// ----------------------------------------------------------------------------------------------------
// the emulator

namespace emu {

// the limits of the emulated device: an sm_90 H200
constexpr int MAX_THREADS_PER_BLOCK = 1024;
constexpr unsigned MAX_BLOCK_X = 1024, MAX_BLOCK_Y = 1024, MAX_BLOCK_Z = 64;
constexpr unsigned MAX_GRID_X = 2147483647u, MAX_GRID_YZ = 65535;
constexpr size_t SHARED_MEMORY_DEFAULT = 48 * 1024; // per block without opt-in
constexpr size_t SHARED_MEMORY_OPTIN = 227 * 1024;  // per block with cudaFuncSetAttribute
constexpr size_t DEVICE_MEMORY = 141000000000ull;   // H200: 141 GB (CUDA_EMU_MEMORY: device_memory())
constexpr size_t ALLOCATION_ALIGNMENT = 256;        // cudaMalloc's alignment
constexpr size_t FIBER_STACK_BYTES = 256 * 1024;
constexpr unsigned char POISON = 0xFF; // 0xFFFF.. is NaN in fp32 and bf16

enum class FiberState { Runnable, BlockBarrier, WarpBarrier, Done };

struct Fiber {
    void* sp = nullptr;    // saved stack pointer while switched out
    char* stack = nullptr; // one of the block's stacks (mmap'ed, a guard page at the low end): the pool
    char* stack_in_use = nullptr; // the stack it runs on, once started
    bool started = false;
    uint3 idx{}; // threadIdx
    int tid = 0; // linear thread index in the block
    FiberState state = FiberState::Runnable;
    unsigned warp_mask = 0;     // the mask it waits with in a warp barrier
    bool at_shuffle = false;    // the warp barrier is part of a shuffle/vote (for messages)
    unsigned full_shuffles = 0; // full-warp shuffles so far: picks the slot set
    int runnable_at = -1;       // its index in Emulator::runnable while runnable
};

struct Allocation {
    size_t size;   // bytes asked for
    size_t padded; // rounded up to ALLOCATION_ALIGNMENT: [base, base + padded) ends at a guard page
    char* map;     // the mapping (data pages + one guard page)
    size_t map_bytes;
    bool host; // cudaMallocHost (pinned host memory: kernels may read it too)
};

struct Emulator {
    // device memory: base address -> allocation
    std::map<uintptr_t, Allocation> allocations;
    std::vector<std::pair<uintptr_t, size_t>> freed;  // recently freed ranges, for messages
    std::vector<std::pair<char*, size_t>> quarantine; // their mappings, PROT_NONE: not reused while listed
    size_t allocated_bytes = 0;
    int device = 0;
    cudaError_t last_error = cudaSuccess;
    std::map<const void*, int> max_dynamic_smem; // per kernel: cudaFuncSetAttribute's opt-in
    uint64_t seed = 1;
    uint64_t launches = 0;
    uint64_t rng = 0;

    // the kernel that runs
    const char* kernel = nullptr;
    int block_threads = 0;
    std::vector<Fiber> fibers;
    std::vector<Fiber*> runnable;
    std::vector<char*> free_stacks; // stacks that no started, unfinished thread runs on
    Fiber* current = nullptr;
    void* scheduler_sp = nullptr;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    int exited = 0;             // threads of the block that returned
    int block_arrived = 0;      // threads waiting in __syncthreads
    int block_vote[2] = {0, 0}; // __syncthreads_and/or/count: counts by barrier generation parity
    unsigned block_generation = 0;
    unsigned warp_arrived[32] = {};      // per warp: lanes waiting in a warp barrier
    unsigned warp_done[32] = {};         // per warp: lanes that returned
    uint64_t warp_slot[32][3][32] = {};  // per warp, slot set, lane: the values a shuffle/vote exchanges
    char* dynamic_smem_region = nullptr; // SHARED_MEMORY_OPTIN bytes, a guard page after it
    char* dynamic_smem = nullptr;        // this launch's: ends at the guard page
    size_t dynamic_smem_bytes = 0;
    bool announced = false;
    // a warp-greedy block runs its warps one after another in warp_order: the first warp with a runnable
    // lane runs (a random lane of it), so a warp races ahead to its next __syncthreads while the others
    // have not started, as warps that are not in lockstep can on a GPU; the other blocks draw any
    // runnable thread
    bool warp_greedy = false;
    int warp_order[32] = {};
    int warp_rank[32] = {};          // warp_order's inverse
    int greedy_rank = 0;             // the warps before warp_order[greedy_rank] have no runnable lane
    unsigned warp_runnable[32] = {}; // per warp: its runnable lanes
};

inline Emulator& state() {
    static Emulator e;
    return e;
}

// where we are, for messages: the kernel, block and thread that run
inline int describe_location(char* out, size_t n) {
    Emulator& e = state();
    if (e.kernel == nullptr) return snprintf(out, n, "(in host code)");
    return snprintf(
        out, n, "in kernel %s, block (%u,%u,%u) of grid (%u,%u,%u), thread (%u,%u,%u) of block (%u,%u,%u)",
        e.kernel, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z, threadIdx.x,
        threadIdx.y, threadIdx.z, blockDim.x, blockDim.y, blockDim.z);
}

inline void vreport(const char* fmt, va_list args) {
    char message[1024], where[512];
    vsnprintf(message, sizeof(message), fmt, args);
    describe_location(where, sizeof(where));
    fflush(stdout);
    fprintf(stderr, "CUDA emulator: %s\n  %s\n", message, where);
    fflush(stderr);
}

// A violation: the message, where it happened, exit status 1. exit() runs the atexit handlers (OpenMP's
// removes its file in /dev/shm) on whatever stack we are, a fiber's is fine; a fault handler uses _exit.
[[noreturn]] inline void fatal(const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vreport(fmt, args);
    va_end(args);
    exit(1);
}
[[noreturn]] inline void fatal_in_signal_handler(const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vreport(fmt, args);
    va_end(args);
    _exit(1);
}

// The emulated device's memory in bytes: an H200's DEVICE_MEMORY, or CUDA_EMU_MEMORY (an integer) to see
// what a program does when cudaMalloc runs out.
inline size_t device_memory() {
    static const size_t bytes = [] {
        const char* v = getenv("CUDA_EMU_MEMORY");
        if (v == nullptr || *v == '\0') return DEVICE_MEMORY;
        char* end = nullptr;
        unsigned long long n = strtoull(v, &end, 10);
        if (*end != '\0' || n == 0) fatal("CUDA_EMU_MEMORY expects a positive number of bytes, got '%s'", v);
        return (size_t)n;
    }();
    return bytes;
}

inline void check_vector_alignment(const void* address, size_t alignment, const char* what) {
    if ((uintptr_t)address % alignment != 0) {
        fatal("%s at %p: the address is not %zu-byte aligned", what, address, alignment);
    }
}

// the allocation holding [p, p + bytes), or null
inline const Allocation* find_allocation(const void* p, size_t bytes, uintptr_t* base_out = nullptr) {
    Emulator& e = state();
    const uintptr_t a = (uintptr_t)p;
    auto it = e.allocations.upper_bound(a);
    if (it == e.allocations.begin()) return nullptr;
    --it;
    if (a + bytes > it->first + it->second.size || a < it->first) return nullptr;
    if (base_out) *base_out = it->first;
    return &it->second;
}

inline bool is_device_range(const void* p, size_t bytes) {
    const Allocation* a = find_allocation(p, bytes);
    return a != nullptr && !a->host;
}

// describes an address relative to the allocations, for messages
inline void describe_address(const void* p, char* out, size_t n) {
    Emulator& e = state();
    const uintptr_t a = (uintptr_t)p;
    for (const auto& f : e.freed) {
        if (a >= f.first && a < f.first + f.second) {
            snprintf(out, n, "inside an allocation of %zu bytes at %p that was freed", f.second,
                     (void*)f.first);
            return;
        }
    }
    auto it = e.allocations.upper_bound(a);
    if (it != e.allocations.begin()) {
        --it;
        const uintptr_t end = it->first + it->second.size;
        if (a >= it->first && a < end) {
            snprintf(out, n, "at byte %zu of the allocation of %zu bytes at %p", (size_t)(a - it->first),
                     it->second.size, (void*)it->first);
            return;
        }
        if (a >= end && a < end + 1024 * 1024) {
            snprintf(out, n, "%zu bytes past the end of the allocation of %zu bytes at %p", (size_t)(a - end),
                     it->second.size, (void*)it->first);
            return;
        }
    }
    if (e.dynamic_smem_region != nullptr && a >= (uintptr_t)e.dynamic_smem_region &&
        a < (uintptr_t)e.dynamic_smem_region + SHARED_MEMORY_OPTIN + 4096) {
        snprintf(out, n, "outside this launch's %zu bytes of dynamic shared memory", e.dynamic_smem_bytes);
        return;
    }
    snprintf(out, n, "not in any device allocation");
}

// the device side of a copy/memset/collective must lie in one device allocation
inline void check_device_range(const void* p, size_t bytes, const char* what) {
    if (bytes == 0) return;
    if (find_allocation(p, bytes) == nullptr) {
        char where[256];
        describe_address(p, where, sizeof(where));
        fatal("%s: [%p, +%zu bytes) is not inside one device allocation (%p is %s)", what, p, bytes, p,
              where);
    }
}

// SIGSEGV / SIGBUS: an access outside the allocations, in a kernel or a runtime call
inline void on_fault(int sig, siginfo_t* info, void*) {
    if (sig == SIGSEGV && info->si_code == SI_KERNEL && info->si_addr == nullptr) {
        // x86-64 reports a general-protection fault without an address: in a kernel almost always an
        // aligned 16-byte SSE access (a copy of an alignas(16) type) at an address not 16-byte aligned
        fatal_in_signal_handler("invalid memory access (general-protection fault, no address): most likely a "
                                "128-bit load or store at an address that is not 16-byte aligned");
    }
    char where[256];
    describe_address(info->si_addr, where, sizeof(where));
    fatal_in_signal_handler("invalid memory access (%s) at %p, %s", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS",
                            info->si_addr, where);
}

inline void self_check();

// once per process, before the first CUDA call: the banner, the signal handlers, the seed
inline void init() {
    Emulator& e = state();
    if (e.announced) return;
    e.announced = true;
    const char* seed = getenv("CUDA_EMU_SEED");
    if (seed != nullptr && *seed) e.seed = strtoull(seed, nullptr, 10);
    printf("CUDA emulator: running on the CPU, not a GPU (seed %llu): results are checked, timings are not "
           "GPU timings\n",
           (unsigned long long)e.seed);
    fflush(stdout);
    static char alt_stack[64 * 1024];
    stack_t ss{};
    ss.ss_sp = alt_stack;
    ss.ss_size = sizeof(alt_stack);
    sigaltstack(&ss, nullptr); // a fiber's stack overflow still gets a message
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
    self_check();
}

// a static initialiser prints the banner first, before main prints anything
struct Announce {
    Announce() { init(); }
};
inline Announce announce;

inline uint64_t next_random() { // splitmix64
    uint64_t z = (state().rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ----------------------------------------------------------------------------------------------------
// device memory: mmap'ed so that the padded end of every allocation touches a PROT_NONE guard page

inline void* device_alloc(size_t size, bool host) {
    init();
    Emulator& e = state();
    const size_t page = 4096;
    const size_t padded =
        (std::max<size_t>(size, 1) + ALLOCATION_ALIGNMENT - 1) / ALLOCATION_ALIGNMENT * ALLOCATION_ALIGNMENT;
    const size_t data = (padded + page - 1) / page * page;
    const size_t map_bytes = data + page;
    char* map = (char*)mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) return nullptr;
    mprotect(map + data, page, PROT_NONE);
    char* base = map + data - padded;
    memset(base, POISON, padded);
    e.allocations[(uintptr_t)base] = Allocation{size, padded, map, map_bytes, host};
    if (!host) e.allocated_bytes += padded;
    return base;
}

inline cudaError_t device_free(void* p, bool host) {
    if (p == nullptr) return cudaSuccess;
    Emulator& e = state();
    auto it = e.allocations.find((uintptr_t)p);
    if (it == e.allocations.end() || it->second.host != host) {
        char where[256];
        describe_address(p, where, sizeof(where));
        fatal("%s(%p): not the start of a live %s allocation (%s)", host ? "cudaFreeHost" : "cudaFree", p,
              host ? "cudaMallocHost" : "cudaMalloc", where);
    }
    if (!host) e.allocated_bytes -= it->second.padded;
    // the mapping stays reserved (no access, no memory) while the range is in the freed list, so a later
    // cudaMalloc cannot get the same addresses and an access through a dangling pointer faults
    mprotect(it->second.map, it->second.map_bytes, PROT_NONE);
    madvise(it->second.map, it->second.map_bytes, MADV_DONTNEED);
    e.freed.emplace_back(it->first, it->second.size);
    e.quarantine.emplace_back(it->second.map, it->second.map_bytes);
    if (e.freed.size() > 64) {
        e.freed.erase(e.freed.begin());
        munmap(e.quarantine.front().first, e.quarantine.front().second);
        e.quarantine.erase(e.quarantine.begin());
    }
    e.allocations.erase(it);
    return cudaSuccess;
}

// after a kernel: nothing wrote into the padding behind an allocation
inline void check_padding(const char* kernel) {
    for (const auto& [base, a] : state().allocations) {
        const unsigned char* p = (const unsigned char*)base;
        for (size_t i = a.size; i < a.padded; i++) {
            if (p[i] != POISON) {
                fatal("kernel %s wrote %zu bytes past the end of the allocation of %zu bytes at %p", kernel,
                      i - a.size + 1, a.size, (void*)base);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// fibers: a context switch saves the callee-saved registers on the current stack and swaps stack pointers

} // namespace emu

#if defined(__x86_64__)
extern "C" void emu_switch_stack(void** save_sp, void* load_sp);
asm(R"(
    .text
    .weak emu_switch_stack
    .type emu_switch_stack, @function
emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch_stack, .-emu_switch_stack
)");
#elif defined(__aarch64__)
extern "C" void emu_switch_stack(void** save_sp, void* load_sp);
asm(R"(
    .text
    .weak emu_switch_stack
    .type emu_switch_stack, %function
emu_switch_stack:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mov x2, sp
    str x2, [x0]
    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #176
    ret
    .size emu_switch_stack, .-emu_switch_stack
)");
#else
#error "the CUDA emulator's fibers need x86-64 or aarch64"
#endif

namespace emu {

inline void on_thread_exit(Fiber* f);
inline void yield();
[[noreturn]] inline void fiber_main();

// a fresh stack: what emu_switch_stack pops, then fiber_main as the return address
inline void* fresh_stack(char* stack) {
    uintptr_t top = ((uintptr_t)stack + FIBER_STACK_BYTES) & ~(uintptr_t)15;
    void** sp = (void**)top;
#if defined(__x86_64__)
    *--sp = nullptr;            // fiber_main's (never used) return address: keeps the ABI's alignment
    *--sp = (void*)&fiber_main; // popped by ret
    for (int i = 0; i < 6; i++) *--sp = nullptr; // rbp rbx r12..r15
#else
    sp -= 22; // 176 bytes: x19..x30, d8..d15
    memset(sp, 0, 176);
    sp[11] = (void*)&fiber_main; // x30, the link register: ret jumps there
#endif
    return sp;
}

// Switches from the running code (its stack pointer saved in *save_sp) to `next`: where it waits, or, if
// it has not started, at the top of a free stack.
inline void switch_to(void** save_sp, Fiber* next) {
    Emulator& e = state();
    e.current = next;
    threadIdx = next->idx;
    if (!next->started) {
        next->started = true;
        next->stack_in_use = e.free_stacks.back();
        e.free_stacks.pop_back();
        next->sp = fresh_stack(next->stack_in_use);
    }
    emu_switch_stack(save_sp, next->sp);
}

inline Fiber* pick_runnable();

// Every stack runs this: the current thread's kernel body; when it returns, the next thread. A thread that
// has not started yet runs on right here, on the same stack, so a kernel without barriers costs no
// context switch per thread; a waiting one is switched to, and this stack goes back to the pool.
[[noreturn]] inline void fiber_main() {
    for (;;) {
        Emulator& e = state();
        e.body(e.body_arg);
        Fiber* f = e.current;
        on_thread_exit(f);
        f->state = FiberState::Done;
        void* abandoned_sp; // this stack is left for good
        if (e.runnable.empty()) {
            e.free_stacks.push_back(f->stack_in_use);
            emu_switch_stack(&abandoned_sp, e.scheduler_sp);
        }
        Fiber* next = pick_runnable();
        if (!next->started) {
            next->started = true;
            next->stack_in_use = f->stack_in_use;
            e.current = next;
            threadIdx = next->idx;
            continue;
        }
        e.free_stacks.push_back(f->stack_in_use);
        switch_to(&abandoned_sp, next);
    }
}

inline void ensure_fibers(int n) {
    Emulator& e = state();
    if ((int)e.fibers.size() >= n) return;
    const size_t old = e.fibers.size();
    e.fibers.resize(n);
    for (size_t i = old; i < (size_t)n; i++) {
        char* map = (char*)mmap(nullptr, FIBER_STACK_BYTES + 4096, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (map == MAP_FAILED) fatal("out of memory for %d thread stacks", n);
        mprotect(map, 4096, PROT_NONE); // stacks grow down: the guard page catches an overflow
        e.fibers[i].stack = map + 4096;
    }
    e.runnable.reserve(n);
}

// a random number in [0, n) (multiply-shift: no division, the hot spot of the scheduler)
inline size_t random_below(size_t n) {
    return (size_t)(((unsigned __int128)next_random() * n) >> 64);
}

// the fiber that runs next: drawn at random from the runnable ones, or in a warp-greedy block from the
// runnable lanes of the first warp in warp_order that has any
inline Fiber* pick_runnable() {
    Emulator& e = state();
    size_t pick;
    if (e.warp_greedy) {
        // the first warp in warp_order with a runnable lane (none before greedy_rank has one), and in it
        // the first runnable lane at or after a random lane
        while (e.warp_runnable[e.warp_order[e.greedy_rank]] == 0) e.greedy_rank++;
        const int w = e.warp_order[e.greedy_rank];
        const unsigned lanes = e.warp_runnable[w];
        const unsigned r = (unsigned)random_below(32);
        const unsigned rotated = r == 0 ? lanes : (lanes >> r) | (lanes << (32 - r));
        pick = (size_t)e.fibers[w * 32 + (__builtin_ctz(rotated) + r) % 32].runnable_at;
    } else {
        pick = random_below(e.runnable.size());
    }
    Fiber* f = e.runnable[pick];
    e.runnable[pick] = e.runnable.back();
    e.runnable[pick]->runnable_at = (int)pick;
    e.runnable.pop_back();
    f->runnable_at = -1;
    e.warp_runnable[f->tid / 32] &= ~(1u << (f->tid % 32));
    return f;
}

// The running fiber waits (or has returned): switch straight to the next runnable fiber, or back to the
// scheduler when there is none. It resumes when some fiber makes it runnable and it is drawn.
inline void yield() {
    Emulator& e = state();
    Fiber* f = e.current;
    if (e.runnable.empty()) {
        emu_switch_stack(&f->sp, e.scheduler_sp);
        return;
    }
    switch_to(&f->sp, pick_runnable());
}

inline void make_runnable(Fiber* f) {
    Emulator& e = state();
    f->state = FiberState::Runnable;
    f->runnable_at = (int)e.runnable.size();
    e.runnable.push_back(f);
    e.warp_runnable[f->tid / 32] |= 1u << (f->tid % 32);
    e.greedy_rank = std::min(e.greedy_rank, e.warp_rank[f->tid / 32]);
}

inline const char* state_name(const Fiber& f) {
    switch (f.state) {
    case FiberState::Runnable:
        return "runnable";
    case FiberState::BlockBarrier:
        return "waits in __syncthreads";
    case FiberState::WarpBarrier:
        return f.at_shuffle ? "waits in a warp shuffle/vote" : "waits in __syncwarp";
    case FiberState::Done:
        return "returned";
    }
    return "?";
}

// runs one block: every thread from the start, in a shuffled order, until all have returned
inline void run_block() {
    Emulator& e = state();
    const int n = e.block_threads;
    e.exited = 0;
    e.block_arrived = 0;
    e.block_vote[0] = e.block_vote[1] = 0;
    e.block_generation = 0;
    memset(e.warp_arrived, 0, sizeof(e.warp_arrived));
    memset(e.warp_done, 0, sizeof(e.warp_done));
    e.runnable.clear();
    e.free_stacks.clear();
    memset(e.warp_runnable, 0, sizeof(e.warp_runnable));
    // half the blocks warp-greedy, in a random warp order
    e.warp_greedy = next_random() % 2 == 0;
    for (int w = 0; w < 32; w++) e.warp_order[w] = w;
    for (int w = 31; w > 0; w--) std::swap(e.warp_order[w], e.warp_order[next_random() % (w + 1)]);
    for (int r = 0; r < 32; r++) e.warp_rank[e.warp_order[r]] = r;
    e.greedy_rank = 0;
    for (int t = 0; t < n; t++) {
        Fiber& f = e.fibers[t];
        f.tid = t;
        f.idx = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
        f.warp_mask = 0;
        f.at_shuffle = false;
        f.full_shuffles = 0;
        f.started = false;
        e.free_stacks.push_back(f.stack);
        make_runnable(&f);
    }
    // the fibers switch among themselves, and come back here when none can run
    if (!e.runnable.empty()) switch_to(&e.scheduler_sp, pick_runnable());
    if (e.exited != n) {
        // nothing can run and not every thread returned: a deadlock
        char list[512];
        int len = 0;
        for (int t = 0; t < n && len < (int)sizeof(list) - 64; t++) {
            const Fiber& f = e.fibers[t];
            if (f.state != FiberState::Done && (t < 4 || t == n - 1)) {
                len += snprintf(list + len, sizeof(list) - len, " thread (%u,%u,%u) %s", f.idx.x, f.idx.y,
                                f.idx.z, state_name(f));
                if (f.state == FiberState::WarpBarrier)
                    len += snprintf(list + len, sizeof(list) - len, " (mask 0x%08x)", f.warp_mask);
                len += snprintf(list + len, sizeof(list) - len, ";");
            }
        }
        threadIdx = e.fibers[0].idx;
        fatal("deadlock: %d of %d threads wait in barriers that the others never reach:%s", n - e.exited, n,
              list);
    }
    e.current = nullptr;
}

// ----------------------------------------------------------------------------------------------------
// barriers

inline int lane_id() {
    return state().current->tid % 32;
}
inline int warp_id() {
    return state().current->tid / 32;
}
// the lanes that exist in the calling thread's warp (the last warp of a block may be partial)
inline unsigned warp_lanes() {
    const int left = state().block_threads - warp_id() * 32;
    return left >= 32 ? 0xffffffffu : (1u << left) - 1u;
}

// __syncthreads: every thread of the block arrives, then all go on
inline unsigned block_barrier(int vote) {
    Emulator& e = state();
    Fiber* f = e.current;
    if (e.exited > 0) {
        fatal("__syncthreads reached after %d thread(s) of the block returned: every thread of the block "
              "must reach every __syncthreads",
              e.exited);
    }
    const unsigned generation = e.block_generation;
    e.block_vote[generation & 1] += vote;
    if (++e.block_arrived == e.block_threads) {
        e.block_arrived = 0;
        e.block_generation++;
        e.block_vote[(generation + 1) & 1] = 0;
        for (int t = 0; t < e.block_threads; t++) {
            Fiber& other = e.fibers[t];
            if (&other != f && other.state == FiberState::BlockBarrier) make_runnable(&other);
        }
        return e.block_vote[generation & 1];
    }
    f->state = FiberState::BlockBarrier;
    yield();
    return e.block_vote[generation & 1];
}

// a warp barrier over the lanes of `mask` (__syncwarp, and the rendezvous of shuffles and votes)
inline void warp_barrier(unsigned mask, const char* what, bool shuffle) {
    Emulator& e = state();
    Fiber* f = e.current;
    const int lane = lane_id(), warp = warp_id();
    const unsigned lanes = warp_lanes();
    if ((mask & ~lanes) != 0) {
        fatal("%s with mask 0x%08x names lanes that do not exist (this warp has lanes 0x%08x)", what, mask,
              lanes);
    }
    if ((mask & (1u << lane)) == 0)
        fatal("%s with mask 0x%08x called by lane %d, which is not in the mask", what, mask, lane);
    if ((mask & e.warp_done[warp]) != 0) {
        fatal("%s with mask 0x%08x: lane %d has already returned", what, mask,
              __builtin_ctz(mask & e.warp_done[warp]));
    }
    f->warp_mask = mask;
    f->at_shuffle = shuffle;
    e.warp_arrived[warp] |= 1u << lane;
    // all lanes of the mask here, with the same mask: they go on
    if ((e.warp_arrived[warp] & mask) == mask) {
        bool same = true;
        for (unsigned m = mask; m != 0; m &= m - 1)
            same = same && e.fibers[warp * 32 + __builtin_ctz(m)].warp_mask == mask;
        if (same) {
            e.warp_arrived[warp] &= ~mask;
            for (unsigned m = mask & ~(1u << lane); m != 0; m &= m - 1)
                make_runnable(&e.fibers[warp * 32 + __builtin_ctz(m)]);
            return;
        }
    }
    f->state = FiberState::WarpBarrier;
    yield();
}

// a returning thread must not leave others waiting for it
inline void on_thread_exit(Fiber* f) {
    Emulator& e = state();
    e.exited++;
    if (e.block_arrived > 0) {
        fatal("thread returned while %d thread(s) of its block wait in __syncthreads: every thread of the "
              "block must reach every __syncthreads",
              e.block_arrived);
    }
    const int warp = f->tid / 32, lane = f->tid % 32;
    e.warp_done[warp] |= 1u << lane;
    for (unsigned m = e.warp_arrived[warp]; m != 0; m &= m - 1) {
        const Fiber& other = e.fibers[warp * 32 + __builtin_ctz(m)];
        if ((other.warp_mask >> lane) & 1u) {
            fatal("lane %d returned while lane %d waits for it in %s (mask 0x%08x)", lane, __builtin_ctz(m),
                  other.at_shuffle ? "a warp shuffle/vote" : "__syncwarp", other.warp_mask);
        }
    }
}

// A shuffle: every lane of the mask puts its value in the warp's slots, waits for the others, then reads
// its source lane's. A full-warp shuffle needs one barrier: every lane takes part in every full-warp
// shuffle, so they alternate between two sets of slots, and a lane cannot write a set again before all
// have read it (that takes the next shuffle's barrier). Any other mask uses one set and a second barrier.
template <class T> inline T shuffle(unsigned mask, T value, int src_lane, const char* what) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    Emulator& e = state();
    Fiber* f = e.current;
    const int warp = warp_id();
    const bool full = mask == 0xffffffffu;
    const int set = full ? (f->full_shuffles++ & 1) : 2;
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    e.warp_slot[warp][set][lane_id()] = bits;
    warp_barrier(mask, what, true);
    if (src_lane < 0 || src_lane >= 32 || ((mask >> src_lane) & 1u) == 0) {
        fatal("%s: lane %d reads lane %d, which is not in the mask 0x%08x", what, lane_id(), src_lane, mask);
    }
    T result;
    bits = e.warp_slot[warp][set][src_lane];
    memcpy(&result, &bits, sizeof(T));
    if (!full) warp_barrier(mask, what, true); // nobody overwrites the slots before everyone has read
    return result;
}

// a vote: the bits of the mask's lanes whose predicate is true
inline unsigned ballot(unsigned mask, int predicate, const char* what) {
    Emulator& e = state();
    const int warp = warp_id();
    e.warp_slot[warp][2][lane_id()] = predicate != 0;
    warp_barrier(mask, what, true);
    unsigned result = 0;
    for (int l = 0; l < 32; l++) {
        if (((mask >> l) & 1u) && e.warp_slot[warp][2][l]) result |= 1u << l;
    }
    warp_barrier(mask, what, true);
    return result;
}

inline unsigned char* dynamic_shared_memory() {
    return (unsigned char*)state().dynamic_smem;
}

// ----------------------------------------------------------------------------------------------------
// launches

template <class T> inline void check_pointer_argument(const char* kernel, int index, const T& value) {
    if constexpr (std::is_pointer<T>::value && !std::is_function<std::remove_pointer_t<T>>::value) {
        if (value == nullptr) return;
        // the pointer may sit one past the end of its allocation (an empty range)
        if (find_allocation((const void*)value, 0) == nullptr) {
            char where[256];
            describe_address((const void*)value, where, sizeof(where));
            fatal("kernel %s: argument %d is the pointer %p, which is %s", kernel, index + 1,
                  (const void*)value, where);
        }
    } else {
        (void)kernel, (void)index, (void)value;
    }
}

inline void check_launch(const char* name, const void* fn, dim3 grid, dim3 block, size_t smem) {
    Emulator& e = state();
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (threads == 0 || threads > MAX_THREADS_PER_BLOCK || block.x > MAX_BLOCK_X || block.y > MAX_BLOCK_Y ||
        block.z > MAX_BLOCK_Z) {
        fatal("launch of %s with a block of (%u,%u,%u) threads: at most %d threads, x,y <= %u, z <= %u (and "
              "none 0)",
              name, block.x, block.y, block.z, MAX_THREADS_PER_BLOCK, MAX_BLOCK_X, MAX_BLOCK_Z);
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > MAX_GRID_X || grid.y > MAX_GRID_YZ ||
        grid.z > MAX_GRID_YZ) {
        fatal("launch of %s with a grid of (%u,%u,%u) blocks: x <= %u, y and z <= %u (and none 0)", name,
              grid.x, grid.y, grid.z, MAX_GRID_X, MAX_GRID_YZ);
    }
    if (smem > SHARED_MEMORY_DEFAULT) {
        auto it = e.max_dynamic_smem.find(fn);
        const size_t allowed = it == e.max_dynamic_smem.end() ? SHARED_MEMORY_DEFAULT : (size_t)it->second;
        if (smem > allowed) {
            fatal("launch of %s with %zu bytes of dynamic shared memory: over %zu without "
                  "cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) (at most "
                  "%zu)",
                  name, smem, allowed, SHARED_MEMORY_OPTIN);
        }
    }
}

// runs body(arg) as every thread of every block of the grid
// CUDA_EMU_PROFILE=1: at exit, the emulator's time per kernel (where the emulator spends it, not the GPU)
struct KernelProfile {
    double seconds = 0;
    long launches = 0, threads = 0;
};
inline std::map<std::string, KernelProfile>& kernel_profile() {
    static std::map<std::string, KernelProfile> profile;
    return profile;
}
inline void print_kernel_profile() {
    std::vector<std::pair<std::string, KernelProfile>> rows(kernel_profile().begin(), kernel_profile().end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    fprintf(stderr, "CUDA emulator: time per kernel on the CPU (not GPU timings)\n");
    for (const auto& [name, p] : rows) {
        fprintf(stderr, "  %9.3f s %8ld launches %12ld threads  %s\n", p.seconds, p.launches, p.threads,
                name.c_str());
    }
}

inline void run_kernel(const char* name, dim3 grid, dim3 block, size_t smem, void (*body)(void*), void* arg) {
    Emulator& e = state();
    static const bool profile = [] {
        const char* v = getenv("CUDA_EMU_PROFILE");
        if (v != nullptr && *v && *v != '0') {
            kernel_profile(); // constructed before the handler is registered, so destroyed after it ran
            atexit(print_kernel_profile);
            return true;
        }
        return false;
    }();
    const auto start = std::chrono::steady_clock::now();
    e.launches++;
    e.rng = e.seed * 0x2545F4914F6CDD1Dull + e.launches;
    gridDim = grid;
    blockDim = block;
    e.block_threads = (int)(block.x * block.y * block.z);
    ensure_fibers(e.block_threads);
    if (e.dynamic_smem_region == nullptr) {
        const size_t bytes = (SHARED_MEMORY_OPTIN + 4095) / 4096 * 4096;
        char* map =
            (char*)mmap(nullptr, bytes + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) fatal("out of memory for shared memory");
        mprotect(map + bytes, 4096, PROT_NONE);
        e.dynamic_smem_region = map + bytes - SHARED_MEMORY_OPTIN;
    }
    // this launch's dynamic shared memory ends (128-byte aligned) at the guard page
    const size_t padded = (smem + 127) / 128 * 128;
    e.dynamic_smem = e.dynamic_smem_region + SHARED_MEMORY_OPTIN - padded;
    e.dynamic_smem_bytes = smem;
    e.body = body;
    e.body_arg = arg;
    e.kernel = name;
    // the blocks in a shuffled order
    const size_t blocks = (size_t)grid.x * grid.y * grid.z;
    std::vector<size_t> order(blocks);
    for (size_t i = 0; i < blocks; i++) order[i] = i;
    for (size_t i = blocks; i > 1; i--) std::swap(order[i - 1], order[next_random() % i]);
    const size_t static_smem = (size_t)(__stop_emu_shared - __start_emu_shared);
    for (size_t b : order) {
        blockIdx = uint3{(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y),
                         (unsigned)(b / ((size_t)grid.x * grid.y))};
        if (static_smem > 0) memset(__start_emu_shared, POISON, static_smem);
        memset(e.dynamic_smem, POISON, padded);
        run_block();
    }
    e.kernel = nullptr;
    check_padding(name);
    if (profile) {
        KernelProfile& p = kernel_profile()[name];
        p.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        p.launches++;
        p.threads += (long)(grid.x * grid.y * grid.z) * e.block_threads;
    }
}

template <class... P> struct Launch {
    void (*fn)(P...);
    const char* name;
    dim3 grid, block;
    size_t smem;

    template <class... A> void operator()(A&&... args) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        init();
        check_launch(name, (const void*)fn, grid, block, smem);
        // the kernel's parameters, converted as in a call; each thread gets its own copy (CUDA passes them by
        // value)
        std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
        check_arguments(params, std::index_sequence_for<P...>{});
        auto body = [&]() { std::apply(fn, params); }; // each parameter copied once, by value
        run_kernel(
            name, grid, block, smem, [](void* f) { (*(decltype(body)*)f)(); }, &body);
    }
    template <class Tuple, size_t... I>
    void check_arguments(const Tuple& t, std::index_sequence<I...>) const {
        (check_pointer_argument(name, (int)I, std::get<I>(t)), ...);
    }
};

template <class... P>
inline Launch<P...> make_launch(void (*fn)(P...), const char* name, dim3 grid, dim3 block, size_t smem,
                                cudaStream_t) {
    return Launch<P...>{fn, name, grid, block, smem};
}

// static __shared__ variables must live in the section the emulator poisons; a compiler that ignores the
// section attribute for template statics (g++) would make them escape it
template <int N> inline char* self_check_template_shared() {
    __shared__ char probe[N];
    return probe;
}
inline void self_check() {
    char* p = self_check_template_shared<4>();
    if (p < __start_emu_shared || p >= __stop_emu_shared) {
        fatal("this compiler does not place __shared__ statics of templates in the emu_shared section: build "
              "the emulated programs with clang++");
    }
}

} // namespace emu

// ----------------------------------------------------------------------------------------------------
// device functions

inline void __syncthreads() {
    emu::block_barrier(0);
}
inline int __syncthreads_and(int predicate) {
    return (int)emu::block_barrier(predicate != 0) == emu::state().block_threads;
}
inline int __syncthreads_or(int predicate) {
    return emu::block_barrier(predicate != 0) > 0;
}
inline int __syncthreads_count(int predicate) {
    return (int)emu::block_barrier(predicate != 0);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    emu::warp_barrier(mask, "__syncwarp", false);
}
template <class T> inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
    const int lane = emu::lane_id();
    return emu::shuffle(mask, var, (lane & ~(width - 1)) + (src_lane & (width - 1)), "__shfl_sync");
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
    const int lane = emu::lane_id();
    int src = lane ^ lane_mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane; // outside the segment: own value
    return emu::shuffle(mask, var, src, "__shfl_xor_sync");
}
template <class T> inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    const int lane = emu::lane_id();
    int src = lane + (int)delta;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
    return emu::shuffle(mask, var, src, "__shfl_down_sync");
}
template <class T> inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    const int lane = emu::lane_id();
    int src = lane - (int)delta;
    if (src < (lane & ~(width - 1))) src = lane;
    return emu::shuffle(mask, var, src, "__shfl_up_sync");
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return emu::ballot(mask, predicate, "__ballot_sync");
}
inline int __all_sync(unsigned mask, int predicate) {
    return emu::ballot(mask, predicate, "__all_sync") == mask;
}
inline int __any_sync(unsigned mask, int predicate) {
    return emu::ballot(mask, predicate, "__any_sync") != 0;
}
inline unsigned __activemask() {
    return emu::warp_lanes();
}

// atomics: fibers never preempt each other, so a read-modify-write is atomic as written
template <class T> inline T atomicAdd(T* address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}
template <class T> inline T atomicMin(T* address, T value) {
    T old = *address;
    *address = value < old ? value : old;
    return old;
}
template <class T> inline T atomicMax(T* address, T value) {
    T old = *address;
    *address = value > old ? value : old;
    return old;
}
template <class T> inline T atomicExch(T* address, T value) {
    T old = *address;
    *address = value;
    return old;
}
template <class T> inline T atomicCAS(T* address, T compare, T value) {
    T old = *address;
    if (old == compare) *address = value;
    return old;
}

// cache-hinted loads/stores: plain loads/stores (the copy checks a vector's alignment)
template <class T> inline T __ldcs(const T* address) {
    return *address;
}
template <class T> inline T __ldg(const T* address) {
    return *address;
}
template <class T> inline void __stcs(T* address, T value) {
    *address = value;
}

// a cycle counter that advances fast: spin loops on it end after a few iterations
inline long long clock64() {
    static long long cycles = 0;
    return cycles += 1 << 20;
}

// CUDA's integer/float min and max overloads
template <class A, class B> inline std::common_type_t<A, B> min(A a, B b) {
    return b < a ? b : a;
}
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b) {
    return a < b ? b : a;
}
inline float rsqrtf(float x) {
    return 1.0f / sqrtf(x);
}
inline float __expf(float x) {
    return expf(x);
}
inline float __logf(float x) {
    return logf(x);
}
inline float __fdividef(float a, float b) {
    return a / b;
}

// ----------------------------------------------------------------------------------------------------
// the runtime API

inline const char* cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorInvalidDevice:
        return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
        return "invalid resource handle";
    case cudaErrorNotReady:
        return "device not ready";
    case cudaErrorLaunchFailure:
        return "unspecified launch failure";
    }
    return "unknown error";
}
inline const char* cudaGetErrorName(cudaError_t error) {
    return cudaGetErrorString(error);
}
inline cudaError_t cudaGetLastError() {
    const cudaError_t e = emu::state().last_error;
    emu::state().last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaPeekAtLastError() {
    return emu::state().last_error;
}

// devices: CUDA_EMU_DEVICES of them (default 8, like one H200 node)
inline int emu_device_count() {
    const char* s = getenv("CUDA_EMU_DEVICES");
    return s != nullptr && atoi(s) > 0 ? atoi(s) : 8;
}
inline cudaError_t cudaGetDeviceCount(int* count) {
    emu::init();
    *count = emu_device_count();
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) {
    emu::init();
    if (device < 0 || device >= emu_device_count()) return cudaErrorInvalidDevice;
    emu::state().device = device;
    return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
    *device = emu::state().device;
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (device < 0 || device >= emu_device_count()) return cudaErrorInvalidDevice;
    memset(prop, 0, sizeof(*prop));
    snprintf(prop->name, sizeof(prop->name), "CUDA emulator on the CPU (sm_90 limits)");
    prop->totalGlobalMem = emu::device_memory();
    prop->sharedMemPerBlock = emu::SHARED_MEMORY_DEFAULT;
    prop->sharedMemPerBlockOptin = emu::SHARED_MEMORY_OPTIN;
    prop->regsPerBlock = 65536;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = emu::MAX_THREADS_PER_BLOCK;
    prop->maxThreadsDim[0] = emu::MAX_BLOCK_X;
    prop->maxThreadsDim[1] = emu::MAX_BLOCK_Y;
    prop->maxThreadsDim[2] = emu::MAX_BLOCK_Z;
    prop->maxGridSize[0] = (int)emu::MAX_GRID_X;
    prop->maxGridSize[1] = prop->maxGridSize[2] = (int)emu::MAX_GRID_YZ;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 132;
    prop->l2CacheSize = 50 * 1024 * 1024;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return cudaErrorInvalidDevice;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
        *value = p.maxThreadsPerBlock;
        break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
        *value = (int)p.sharedMemPerBlock;
        break;
    case cudaDevAttrWarpSize:
        *value = p.warpSize;
        break;
    case cudaDevAttrMultiProcessorCount:
        *value = p.multiProcessorCount;
        break;
    case cudaDevAttrComputeCapabilityMajor:
        *value = p.major;
        break;
    case cudaDevAttrComputeCapabilityMinor:
        *value = p.minor;
        break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
        *value = (int)p.sharedMemPerBlockOptin;
        break;
    default:
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}
template <class Kernel>
inline cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    if (value < 0 || (size_t)value > emu::SHARED_MEMORY_OPTIN) return cudaErrorInvalidValue;
    emu::state().max_dynamic_smem[(const void*)kernel] = value;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() {
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
    emu::init();
    *total_bytes = emu::device_memory();
    *free_bytes = emu::device_memory() - emu::state().allocated_bytes;
    return cudaSuccess;
}

// memory
template <class T> inline cudaError_t cudaMalloc(T** pointer, size_t size) {
    if (size > emu::device_memory() - emu::state().allocated_bytes) return cudaErrorMemoryAllocation;
    void* p = emu::device_alloc(size, false);
    if (p == nullptr) return cudaErrorMemoryAllocation;
    *pointer = (T*)p;
    return cudaSuccess;
}
template <class T> inline cudaError_t cudaMallocAsync(T** pointer, size_t size, cudaStream_t) {
    return cudaMalloc(pointer, size);
}
template <class T> inline cudaError_t cudaMallocHost(T** pointer, size_t size) {
    void* p = emu::device_alloc(size, true);
    if (p == nullptr) return cudaErrorMemoryAllocation;
    *pointer = (T*)p;
    return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
    return emu::device_free(p, false);
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
    return emu::device_free(p, false);
}
inline cudaError_t cudaFreeHost(void* p) {
    return emu::device_free(p, true);
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    emu::init();
    if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice)
        emu::check_device_range(dst, bytes, "cudaMemcpy destination");
    if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice)
        emu::check_device_range(src, bytes, "cudaMemcpy source");
    if (kind == cudaMemcpyHostToDevice && emu::is_device_range(src, bytes)) {
        emu::fatal("cudaMemcpy(HostToDevice) with a device source %p", src);
    }
    if (kind == cudaMemcpyDeviceToHost && emu::is_device_range(dst, bytes)) {
        emu::fatal("cudaMemcpy(DeviceToHost) with a device destination %p", dst);
    }
    if (bytes > 0) memmove(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
    return cudaMemcpy(dst, src, bytes, kind);
}
inline cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
    emu::init();
    emu::check_device_range(dst, bytes, "cudaMemset");
    memset(dst, value, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t = nullptr) {
    return cudaMemset(dst, value, bytes);
}

// streams and events: work is done when it is issued, so they only keep time
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
    emu::init();
    *stream = new emu_stream{flags};
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t* stream) {
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    delete stream;
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
    return cudaSuccess;
}
inline cudaError_t cudaStreamQuery(cudaStream_t) {
    return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
    *event = new emu_event{flags, false, {}};
    return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* event) {
    return cudaEventCreateWithFlags(event, cudaEventDefault);
}
inline cudaError_t cudaEventDestroy(cudaEvent_t event) {
    delete event;
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t = nullptr) {
    event->recorded = true;
    event->when = std::chrono::steady_clock::now();
    return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) {
    return cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned = 0) {
    return cudaSuccess;
}
// the host time between two events: the emulator's speed, never a GPU timing
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
    if ((start->flags | end->flags) & cudaEventDisableTiming) return cudaErrorInvalidResourceHandle;
    if (!start->recorded || !end->recorded) return cudaErrorInvalidResourceHandle;
    *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
    return cudaSuccess;
}
