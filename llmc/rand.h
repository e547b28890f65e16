// rand.h: a small, fast, seedable random number generator whose whole state is one uint64_t.
//
// Generator: splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number generators", 2014).
// The state is a counter that advances by the "golden gamma" 0x9e3779b97f4a7c15 (an odd constant near
// 2^64 / phi) on every draw; the output is the counter passed through a bijective 64-bit mixer
// (xor-shift, multiply, xor-shift, multiply, xor-shift). Because the counter visits all 2^64 values
// before repeating, the period is 2^64, and every seed (including 0) is a valid seed. The output
// passes BigCrush; it is not cryptographic, which we do not need.
//
// Why this one: the whole state is a plain struct Rng { uint64_t state; }, so a checkpoint saves it
// with one fwrite and a resumed run continues the exact same stream. There is no cached second
// Box-Muller value or other hidden state anywhere in this file.
//
// The mixer rng_mix64 is also useful on its own: it turns (seed, epoch, shard) tuples into
// independent-looking seeds for derived generators (see rng_init_derived), which is how the data
// loader re-creates its shuffles from the seed alone.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

struct Rng {
    uint64_t state;
};

// The splitmix64 output function: a bijection on 64-bit integers with good avalanche (every input bit
// flips each output bit with probability ~1/2).
inline uint64_t rng_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

inline void rng_init(Rng* rng, uint64_t seed) {
    rng->state = seed;
}

// A generator for the tuple (seed, a, b): each component goes through the mixer before being
// combined, so nearby tuples (epoch 3 vs 4, shard 0 vs 1) give unrelated streams.
inline void rng_init_derived(Rng* rng, uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t h = rng_mix64(seed + 0x9e3779b97f4a7c15ULL);
    h = rng_mix64(h ^ (a + 0x632be59bd9b4e019ULL));
    h = rng_mix64(h ^ (b + 0x85157af5ULL));
    rng->state = h;
}

inline uint64_t rng_u64(Rng* rng) {
    rng->state += 0x9e3779b97f4a7c15ULL;
    return rng_mix64(rng->state);
}

// The high 32 bits: in a multiply-based mixer the high bits are the best mixed.
inline uint32_t rng_u32(Rng* rng) {
    return (uint32_t)(rng_u64(rng) >> 32);
}

// Uniform in [0, 1) with 24 random bits: k * 2^-24 for k in [0, 2^24), exactly representable in fp32
// (a float has a 24-bit significand), so the result can never round up to 1.0f.
inline float rng_uniform(Rng* rng) {
    return (float)(rng_u32(rng) >> 8) * (1.0f / 16777216.0f);
}

// Uniform in (0, 1] with 53 bits, in double: the Box-Muller log needs a strictly positive argument.
inline double rng_uniform_open0_double(Rng* rng) {
    return ((double)(rng_u64(rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

// Uniform in [0, 1) with 53 bits, in double.
inline double rng_uniform_double(Rng* rng) {
    return (double)(rng_u64(rng) >> 11) * (1.0 / 9007199254740992.0);
}

// Box-Muller: for independent u1 in (0,1] and u2 in [0,1),
//   r = sqrt(-2 ln u1),  z0 = r cos(2 pi u2),  z1 = r sin(2 pi u2)
// are two independent standard normals. The math is done in double (so the tails near u1 -> 0 are
// accurate) and only the result is rounded to fp32. rng_normal returns z0 and discards z1, so that
// no second value has to be cached in hidden state.
inline float rng_normal(Rng* rng, float mean, float std) {
    double u1 = rng_uniform_open0_double(rng);
    double u2 = rng_uniform_double(rng);
    double z0 = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
    return (float)((double)mean + (double)std * z0);
}

// n normals; here both Box-Muller outputs are used (out[i] = z0, out[i+1] = z1), so filling a
// parameter tensor costs one log/sqrt per two values. For odd n the last value is a z0.
inline void rng_fill_normal(Rng* rng, float* out, size_t n, float mean, float std) {
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        double u1 = rng_uniform_open0_double(rng);
        double u2 = rng_uniform_double(rng);
        double r = std::sqrt(-2.0 * std::log(u1));
        out[i] = (float)((double)mean + (double)std * r * std::cos(2.0 * M_PI * u2));
        out[i + 1] = (float)((double)mean + (double)std * r * std::sin(2.0 * M_PI * u2));
    }
    if (i < n) out[i] = rng_normal(rng, mean, std);
}

// Uniform integer in [0, bound), bound > 0, without modulo bias: values of the 64-bit draw in the
// incomplete last block [2^64 - (2^64 mod bound), 2^64) are rejected and redrawn (probability below
// bound / 2^64, so in practice never).
inline uint64_t rng_below(Rng* rng, uint64_t bound) {
    uint64_t threshold = (0 - bound) % bound; // = 2^64 mod bound
    for (;;) {
        uint64_t x = rng_u64(rng);
        if (x >= threshold) return x % bound;
    }
}

// Fisher-Yates shuffle: for i = n-1 down to 1 swap arr[i] with arr[j], j uniform in [0, i]. Every one
// of the n! permutations is equally likely (given an unbiased rng_below).
inline void rng_shuffle(Rng* rng, size_t* arr, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(rng, (uint64_t)i); // j in [0, i-1]
        size_t tmp = arr[i - 1];
        arr[i - 1] = arr[j];
        arr[j] = tmp;
    }
}
