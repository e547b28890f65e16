// mma.h for the CPU emulator (dev/cuda/emu): nvcuda::wmma m16n16k16 with bf16 (or half-free fp32
// storage) operands and fp32 accumulators, as documented:
//   matrix_a / matrix_b row_major: element (r, c) at p[r * ldm + c]; col_major: at p[c * ldm + r]
//   accumulator load/store, mem_row_major: (r, c) at p[r * ldm + c]; mem_col_major: at p[c * ldm + r]
//   mma_sync: d = a b + c, products of the operands summed in fp32, k ascending
// On the GPU a fragment is spread over the 32 lanes in an unspecified layout; here every lane holds the
// whole 16x16 tile (num_elements = 256), which is all that code that does not depend on the layout can
// observe. Like the PTX wmma instructions, loads, stores and mma_sync are warp-collective: each one is a
// warp barrier, and the lanes of a load or store must pass the same pointer and ldm (fill_fragment is
// per lane). Checked: pointers 32-byte (256-bit) aligned, ldm a multiple of 8 elements for 16-bit types
// and of 4 for 32-bit types. Not emulated: the tensor cores' own rounding inside a sum (the GPU may
// differ in the last bits of fp32).
#pragma once

#include <cuda_runtime.h>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator implements m16n16k16 only");
    static constexpr int num_elements = 256;
    float x[256]; // the row-major 16x16 tile, every lane the whole of it
};

// the rules of a tile load/store, and that the whole warp passes the same arguments
inline void check_tile(const void* p, unsigned ldm, size_t element_size, const char* what) {
    if ((uintptr_t)p % 32 != 0) emu::fatal("%s: pointer %p is not 32-byte (256-bit) aligned", what, p);
    const unsigned multiple = element_size == 2 ? 8 : 4;
    if (ldm % multiple != 0) {
        emu::fatal("%s: ldm %u is not a multiple of %u (%zu-byte elements)", what, ldm, multiple,
                   element_size);
    }
    const uint64_t mine = (uint64_t)(uintptr_t)p ^ ((uint64_t)ldm << 48);
    const uint64_t lane0 = __shfl_sync(0xffffffffu, mine, 0);
    if (lane0 != mine) emu::fatal("%s: the lanes of the warp pass different pointers or ldm", what);
}

template <class Use, class T, class Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
    static_assert(!std::is_same<Use, accumulator>::value, "an accumulator load takes a layout_t");
    check_tile(p, ldm, sizeof(T), "wmma::load_matrix_sync");
    const bool row = std::is_same<Layout, row_major>::value;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = (float)(row ? p[r * ldm + c] : p[c * ldm + r]);
}
template <class T>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* p, unsigned ldm,
                             layout_t layout) {
    check_tile(p, ldm, sizeof(T), "wmma::load_matrix_sync (accumulator)");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] = (float)(layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]);
}
template <class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm,
                              layout_t layout) {
    check_tile(p, ldm, sizeof(T), "wmma::store_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = (T)f.x[r * 16 + c];
    __syncwarp();
}
template <class Fragment> inline void fill_fragment(Fragment& f, float value) {
    for (float& v : f.x) v = value;
}
template <class A, class B, class C>
inline void mma_sync(fragment<accumulator, 16, 16, 16, C>& d, const A& a, const B& b,
                     const fragment<accumulator, 16, 16, 16, C>& c) {
    __syncwarp();
    float result[256];
    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < 16; j++) {
            float sum = c.x[i * 16 + j];
            for (int k = 0; k < 16; k++) sum += a.x[i * 16 + k] * b.x[k * 16 + j];
            result[i * 16 + j] = sum;
        }
    }
    for (int i = 0; i < 256; i++) d.x[i] = result[i];
}

} // namespace wmma
} // namespace nvcuda
