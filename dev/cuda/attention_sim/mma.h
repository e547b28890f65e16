// Stand-in for CUDA's <mma.h> used only by the CPU simulation (attention_sim.cpp): nvcuda::wmma
// m16n16k16 with the documented semantics, every thread of the warp holding the whole 16x16 tile.
//   matrix_a/matrix_b row_major: element (r, c) at p[r * ld + c];  col_major: at p[c * ld + r]
//   accumulator load/store with mem_row_major: element (r, c) at p[r * ld + c];  d = a b + c in fp32
// Like the PTX wmma instructions (".sync": every thread waits for the whole warp), each operation is
// bracketed by warp barriers. The GPU's requirements are checked: pointers 32-byte aligned, ld a multiple
// of 16 bytes.
#pragma once

#include <type_traits>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static constexpr int num_elements = M * N;
    float x[M * N]; // row-major 16x16 tile
};

inline void sim_check_tile(const void* p, unsigned ld, size_t element_size) {
    if ((uintptr_t)p % 32 != 0) fail("simulation: wmma pointer %p is not 32-byte aligned", p);
    if ((ld * element_size) % 16 != 0) fail("simulation: wmma ld %u is not a multiple of 16 bytes", ld);
}

template <class Use, class T, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ld) {
    __syncwarp();
    sim_check_tile(p, ld, sizeof(T));
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] = (float)(std::is_same<Layout, row_major>::value ? p[r * ld + c] : p[c * ld + r]);
    __syncwarp();
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ld,
                             layout_t l) {
    __syncwarp();
    sim_check_tile(p, ld, sizeof(float));
    if (l != mem_row_major) fail("simulation: only mem_row_major is simulated");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = p[r * ld + c];
    __syncwarp();
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ld,
                              layout_t l) {
    __syncwarp();
    sim_check_tile(p, ld, sizeof(float));
    if (l != mem_row_major) fail("simulation: only mem_row_major is simulated");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) p[r * ld + c] = f.x[r * 16 + c];
    __syncwarp();
}
template <class Fragment> void fill_fragment(Fragment& f, float value) {
    for (float& x : f.x) x = value;
}
template <class A, class B>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const A& a, const B& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
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
