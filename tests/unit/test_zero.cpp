// test_zero.cpp: checks the ZeRO sharding arithmetic of llmc/zero.h.
//
// For many (P, N) pairs, including sizes that are and are not multiples of N*ALIGN: the N shards are
// equal, ALIGN-aligned, disjoint and together cover [0, P_pad) ⊇ [0, P) with less than N*ALIGN padding;
// shard_ranges() splits every rank's shard into per-tensor pieces that are consistent with an
// independently computed tensor table and, over all ranks, cover every element of every tensor exactly
// once (checked element by element for small P, interval by interval for GPT-2 124M). The memory
// formulas are compared with values worked out by hand in the comments. Everything is integer
// arithmetic, so every comparison is exact.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "llmc/zero.h"
#include "tests/common/test_common.h"

// The layout of every rank for (P, N): equal, aligned, disjoint, covering, little padding.
static void check_layout(size_t P, int N) {
    std::vector<ShardLayout> layouts;
    for (int r = 0; r < N; r++) layouts.push_back(shard_layout(P, r, N));
    size_t S = layouts[0].shard_size;
    size_t P_pad = layouts[0].padded_params;
    CHECK(P_pad >= P && P_pad - P < (size_t)N * ZERO_ALIGN, "P=%zu N=%d P_pad=%zu", P, N, P_pad);
    CHECK(P_pad % ((size_t)N * ZERO_ALIGN) == 0, "P=%zu N=%d P_pad=%zu", P, N, P_pad);
    CHECK(S * (size_t)N == P_pad, "P=%zu N=%d S=%zu P_pad=%zu", P, N, S, P_pad);
    size_t next = 0; // the shards must tile [0, P_pad) in rank order
    for (int r = 0; r < N; r++) {
        const ShardLayout& l = layouts[r];
        CHECK(l.rank == r && l.num_ranks == N && l.num_params == P, "P=%zu N=%d r=%d", P, N, r);
        CHECK(l.shard_size == S && l.padded_params == P_pad, "P=%zu N=%d r=%d: unequal shards", P, N, r);
        CHECK(l.shard_offset % ZERO_ALIGN == 0 && l.shard_size % ZERO_ALIGN == 0, "P=%zu N=%d r=%d", P, N, r);
        CHECK(l.shard_offset == next, "P=%zu N=%d r=%d offset %zu, expected %zu", P, N, r, l.shard_offset,
              next);
        next = l.shard_offset + l.shard_size;
    }
    CHECK(next == P_pad, "P=%zu N=%d: shards end at %zu, not P_pad=%zu", P, N, next, P_pad);
    // element-level ownership count for small buffers: every element of [0, P_pad) owned exactly once
    if (P_pad <= 200000) {
        std::vector<int> owners(P_pad, 0);
        for (const ShardLayout& l : layouts) {
            for (size_t i = l.shard_offset; i < l.shard_offset + l.shard_size && i < P_pad; i++) owners[i]++;
        }
        bool ok = true;
        for (size_t i = 0; i < P_pad; i++) ok = ok && owners[i] == 1;
        CHECK(ok, "P=%zu N=%d: some element is not owned by exactly one rank", P, N);
    }
    // stage 0: every rank owns everything
    for (int r = 0; r < N; r++) {
        ShardLayout l = zero_layout(P, r, N, 0);
        CHECK(l.shard_offset == 0 && l.shard_size == l.padded_params && l.padded_params >= P &&
                  l.padded_params - P < ZERO_ALIGN,
              "stage 0 P=%zu N=%d r=%d", P, N, r);
        ShardLayout l1 = zero_layout(P, r, N, 1);
        CHECK(l1.shard_offset == layouts[r].shard_offset && l1.shard_size == S, "stage 1 P=%zu N=%d", P, N);
    }
}

// shard_ranges() for a tensor table, for all ranks of a layout made by make_layout.
static void check_ranges(const std::vector<size_t>& sizes, int N, int stage, bool elementwise) {
    int T = (int)sizes.size();
    std::vector<size_t> tensor_begin(T); // independent prefix sums
    size_t P = 0;
    for (int t = 0; t < T; t++) {
        tensor_begin[t] = P;
        P += sizes[t];
    }
    std::vector<int> owners(elementwise ? P : 0, 0);
    std::vector<size_t> covered(T, 0); // elements of each tensor covered, summed over ranks
    std::vector<ShardRange> out(T);
    for (int r = 0; r < N; r++) {
        ShardLayout l = zero_layout(P, r, N, stage);
        int n = shard_ranges(sizes.data(), T, &l, out.data());
        CHECK(n >= 0 && n <= T, "n=%d T=%d", n, T);
        // the pieces tile the shard's real part [shard_offset, min(shard_end, P)) in order
        size_t expect_in_shard = 0;
        int prev_tensor = -1;
        for (int k = 0; k < n; k++) {
            const ShardRange& s = out[k];
            CHECK(s.tensor > prev_tensor && s.tensor < T, "P=%zu N=%d r=%d piece %d", P, N, r, k);
            if (s.tensor < 0 || s.tensor >= T) break;
            prev_tensor = s.tensor;
            CHECK(s.count > 0, "P=%zu N=%d r=%d piece %d is empty", P, N, r, k);
            CHECK(s.offset_in_shard == expect_in_shard, "P=%zu N=%d r=%d piece %d: gap or overlap", P, N, r,
                  k);
            CHECK(s.global_offset == l.shard_offset + s.offset_in_shard, "P=%zu N=%d r=%d piece %d", P, N, r,
                  k);
            CHECK(s.global_offset == tensor_begin[s.tensor] + s.offset_in_tensor, "P=%zu N=%d r=%d piece %d",
                  P, N, r, k);
            CHECK(s.offset_in_tensor + s.count <= sizes[s.tensor],
                  "P=%zu N=%d r=%d piece %d leaves its tensor", P, N, r, k);
            expect_in_shard += s.count;
            covered[s.tensor] += s.count;
            if (elementwise) {
                for (size_t i = s.global_offset; i < s.global_offset + s.count; i++) owners[i]++;
            }
        }
        size_t shard_end = l.shard_offset + l.shard_size;
        size_t real = l.shard_offset >= P ? 0 : (shard_end < P ? shard_end : P) - l.shard_offset;
        CHECK(expect_in_shard == real, "P=%zu N=%d r=%d: pieces cover %zu of the %zu real elements", P, N, r,
              expect_in_shard, real);
    }
    size_t owners_per_element = stage == 0 ? (size_t)N : 1; // stage 0: every rank owns everything
    for (int t = 0; t < T; t++) {
        CHECK(covered[t] == sizes[t] * owners_per_element, "P=%zu N=%d stage %d tensor %d covered %zu of %zu",
              P, N, stage, t, covered[t], sizes[t]);
    }
    if (elementwise) {
        bool ok = true;
        for (size_t i = 0; i < P; i++) ok = ok && owners[i] == (int)owners_per_element;
        CHECK(ok, "P=%zu N=%d stage %d: some element is not covered the right number of times", P, N, stage);
    }
}

// GPT-2's parameter table (the same 16 tensors, in the same order, as the trainers).
static std::vector<size_t> gpt2_sizes(size_t Vp, size_t maxT, size_t L, size_t C) {
    return {Vp * C, maxT * C, L * C,         L * C,     L * 3 * C * C, L * 3 * C, L * C * C, L * C,
            L * C,  L * C,    L * 4 * C * C, L * 4 * C, L * C * 4 * C, L * C,     C,         C};
}

// ZeRO-2/3 units of a GPT-2 table over N ranks: unit 0 = wte, wpe; unit 1+l = layer l's slice of the 12
// per-layer tensors, in tensor order; unit L+1 = lnfw, lnfb. Checked against the definition, element by
// element: over all ranks the ranges own every parameter exactly once; every range lies in one tensor and
// in the unit (and layer) the definition puts that element in; each rank's slices of a unit are equal,
// 128-aligned and back to back in its shard; zero_unit_copy there and back is the identity on the pieces.
static void check_units(size_t Vp, size_t maxT, size_t L, size_t C, int N) {
    std::vector<size_t> sizes = gpt2_sizes(Vp, maxT, L, C);
    size_t start[NUM_PARAMETER_TENSORS + 1] = {0};
    for (int t = 0; t < NUM_PARAMETER_TENSORS; t++) start[t + 1] = start[t] + sizes[t];
    const size_t P = start[NUM_PARAMETER_TENSORS];
    // the unit of element i by the definition above
    auto unit_of = [&](size_t i) {
        int t = 0;
        while (i >= start[t + 1]) t++;
        if (t == TENSOR_WTE || t == TENSOR_WPE) return 0;
        if (t == TENSOR_LNFW || t == TENSOR_LNFB) return (int)L + 1;
        return 1 + (int)((i - start[t]) / (sizes[t] / L));
    };
    std::vector<int> owners(P, 0);
    size_t shard_size = 0;
    for (int r = 0; r < N; r++) {
        ZeroUnits z = gpt2_zero_units(sizes.data(), (int)L, r, N);
        CHECK((int)z.units.size() == (int)L + 2, "N=%d: %zu units", N, z.units.size());
        if (r == 0) shard_size = z.shard_size;
        CHECK(z.shard_size == shard_size, "N=%d r=%d: unequal shards", N, r);
        size_t off = 0;
        for (const ZeroUnit& u : z.units) {
            CHECK(u.padded % ((size_t)N * ZERO_ALIGN) == 0 && u.padded >= u.size &&
                      u.padded - u.size < (size_t)N * ZERO_ALIGN && u.slice * N == u.padded,
                  "N=%d: unit of %zu padded to %zu", N, u.size, u.padded);
            CHECK(u.shard_offset == off, "N=%d: slices not back to back", N);
            off += u.slice;
        }
        CHECK(off == z.shard_size, "N=%d: shard size", N);
        for (const ShardRange& g : zero_unit_ranges(z)) {
            CHECK(g.global_offset >= start[g.tensor] && g.global_offset + g.count <= start[g.tensor + 1] &&
                      g.offset_in_tensor == g.global_offset - start[g.tensor],
                  "N=%d r=%d: a range leaves its tensor", N, r);
            const int u = unit_of(g.global_offset);
            CHECK(unit_of(g.global_offset + g.count - 1) == u, "N=%d r=%d: a range spans two units", N, r);
            const ZeroUnit& unit = z.units[u];
            CHECK(g.offset_in_shard >= unit.shard_offset &&
                      g.offset_in_shard + g.count <= unit.shard_offset + unit.slice,
                  "N=%d r=%d: a range is outside its unit's slice", N, r);
            for (size_t i = 0; i < g.count; i++) owners[g.global_offset + i]++;
        }
        // copy round trip: flat -> unit -> a fresh flat, on the pieces
        std::vector<float> flat(P), back(P, -1.0f);
        for (size_t i = 0; i < P; i++) flat[i] = (float)(i % 1000);
        bool same = true;
        for (const ZeroUnit& u : z.units) {
            std::vector<float> buf(u.padded, 0.0f);
            zero_unit_copy(u, buf.data(), flat.data(), true);
            zero_unit_copy(u, buf.data(), back.data(), false);
        }
        for (size_t i = 0; i < P; i++) same = same && back[i] == flat[i];
        CHECK(same, "N=%d r=%d: zero_unit_copy round trip", N, r);
    }
    bool once = true;
    for (size_t i = 0; i < P; i++) once = once && owners[i] == 1;
    CHECK(once, "Vp=%zu L=%zu C=%zu N=%d: some parameter is not owned by exactly one rank", Vp, L, C, N);
}

static void check_memory() {
    // GPU mixed precision, N = 4: stage 0 = 2+2+12 = 16; stage 1 = 2+2+12/4 = 7; stage 2 = 2+(2+12)/4 = 5.5;
    // stage 3 = 16/4 = 4.
    CHECK(zero_bytes_per_param(0, 4, true) == 16.0, "%g", zero_bytes_per_param(0, 4, true));
    CHECK(zero_bytes_per_param(1, 4, true) == 7.0, "%g", zero_bytes_per_param(1, 4, true));
    CHECK(zero_bytes_per_param(2, 4, true) == 5.5, "%g", zero_bytes_per_param(2, 4, true));
    CHECK(zero_bytes_per_param(3, 4, true) == 4.0, "%g", zero_bytes_per_param(3, 4, true));
    // CPU fp32, N = 4: stage 0 = 4+4+4+4 = 16; stage 1 = 4+4+(4+4)/4 = 10; stage 2 = 4+(4+8)/4 = 7; 3 = 4.
    CHECK(zero_bytes_per_param(0, 4, false) == 16.0, "%g", zero_bytes_per_param(0, 4, false));
    CHECK(zero_bytes_per_param(1, 4, false) == 10.0, "%g", zero_bytes_per_param(1, 4, false));
    CHECK(zero_bytes_per_param(2, 4, false) == 7.0, "%g", zero_bytes_per_param(2, 4, false));
    CHECK(zero_bytes_per_param(3, 4, false) == 4.0, "%g", zero_bytes_per_param(3, 4, false));
    // one rank: every stage is 16 bytes/param
    for (int stage = 0; stage <= 3; stage++) {
        CHECK(zero_bytes_per_param(stage, 1, true) == 16.0 && zero_bytes_per_param(stage, 1, false) == 16.0,
              "stage %d N=1", stage);
    }
    // GPT-2 124M (Vp=50304, maxT=1024, L=12, C=768): P = 124,475,904 = 512 * 243,117, so with N=4 there is
    // no padding and S = 31,118,976.
    std::vector<size_t> sizes = gpt2_sizes(50304, 1024, 12, 768);
    size_t P = 0;
    for (size_t s : sizes) P += s;
    CHECK(P == 124475904, "GPT-2 124M has %zu parameters", P);
    ShardLayout l = shard_layout(P, 3, 4);
    CHECK(l.padded_params == 124475904 && l.shard_size == 31118976 && l.shard_offset == 93356928,
          "%zu %zu %zu", l.padded_params, l.shard_size, l.shard_offset);
    printf("memory formulas: 124M on 4 ranks, stage 1: %.0f bytes/param (GPU bf16), %.0f (CPU fp32)\n",
           zero_bytes_per_param(1, 4, true), zero_bytes_per_param(1, 4, false));
}

int main() {
    // layouts: sizes around the alignment boundaries, odd sizes, GPT-2 sizes; rank counts 1..9, 16, 64
    std::vector<size_t> Ps = {0,    1,      2,         127,       128,        129,
                              383,  384,    385,       1000,      4095,       4096,
                              4097, 123457, 124475904, 124475905, 1557611200, (size_t)5000000000ULL};
    std::vector<int> Ns = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 64};
    for (size_t P : Ps) {
        for (int N : Ns) check_layout(P, N);
    }
    printf("layouts: %zu sizes x %zu rank counts checked\n", Ps.size(), Ns.size());

    // per-tensor ranges: random tables (with empty tensors and tensors smaller than ALIGN), element-wise
    std::mt19937 rng(1234);
    int tables = 0;
    for (int trial = 0; trial < 300; trial++) {
        int T = 1 + (int)(rng() % 20);
        std::vector<size_t> sizes(T);
        for (int t = 0; t < T; t++) {
            int kind = (int)(rng() % 4);
            sizes[t] = kind == 0 ? 0 : kind == 1 ? rng() % 200 : kind == 2 ? rng() % 3000 : 1 + rng() % 40000;
        }
        int N = Ns[rng() % Ns.size()];
        check_ranges(sizes, N, 1, true);
        check_ranges(sizes, N, 0, true);
        tables++;
    }
    printf("shard ranges: %d random tensor tables checked element by element (stages 0 and 1)\n", tables);
    // GPT-2 124M and a padded variant (Vp = 50257 is not a multiple of anything), interval-level
    for (int N : Ns) {
        check_ranges(gpt2_sizes(50304, 1024, 12, 768), N, 1, false);
        check_ranges(gpt2_sizes(50257, 1024, 12, 768), N, 1, false);
    }
    // a tiny model whose last ranks own only padding
    check_ranges(gpt2_sizes(64, 8, 1, 8), 64, 1, true);
    printf("shard ranges: GPT-2 124M tables checked for every rank count\n");

    for (int N : {1, 2, 3, 4, 7}) {
        check_units(64, 8, 2, 16, N);   // tiny: a layer's unit is smaller than the padding
        check_units(257, 32, 3, 32, N); // an odd vocabulary
    }
    printf("ZeRO-2/3 units: checked element by element\n");

    check_memory();

    return test_summary("test_zero");
}
