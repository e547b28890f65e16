// lora.h: LoRA and QLoRA, the parts both trainers share: which matrices get adapters, the layout of the
// adapter buffer, their initialisation, the NF4 storage of a frozen base, and the merge back into W.
//
// LoRA (Hu et al. 2021) fine-tunes a pretrained W (out, in) without changing it: the layer computes
//   out = x.W^T + b + s.(x.A^T).B^T        s = alpha / r,  A (r, in),  B (out, r)
// and only A and B train. B starts at zero, so the first forward is exactly the base model's; A starts
// as nn.Linear's default (uniform in +-1/sqrt(in)). With r << in, out the adapters hold r.(in + out)
// parameters instead of in.out, and only they need gradients and optimizer state. After training,
// W' = W + s.B.A is a plain weight again (lora_merge_matrix): the merged model costs nothing extra.
//
// The backward of one adapted matmul, with u = x.A^T (BT, r) kept from the forward and d = dout:
//   dB += s.d^T.u (out, r)      du = s.d.B (BT, r)      dA += du^T.x (r, in)      dx += d.W + du.A
// There is no dW and no db: the base is frozen. Nothing else of the base trains either (LayerNorms,
// embeddings), so a LoRA backward computes no parameter gradient but those of the adapters.
//
// QLoRA (Dettmers et al. 2023) also stores the frozen base in 4 bits: the four per-layer matrices (qkvw,
// attprojw, fcw, fcprojw of every layer, adapted or not) as NF4 in blocks of 64 with the block scales
// double-quantized (llmc/quantize.h: 8-bit codes in groups of 256, one fp32 scale per group, one mean
// per matrix). A layer's matrix is dequantized into a scratch buffer just before the matmul that needs it
// (forward and backward) and never held dequantized for the whole model. The embeddings, biases and
// LayerNorms (wte is also the classifier) stay in the trainer's precision, as QLoRA keeps them.
//
// The adapter buffer, one flat fp32 array, for each target in the order qkv, attproj, fc, fcproj that is
// enabled: A (L, r, in), then B (L, out, r). train_gpt2.py writes its reference adapters in this order.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "llmc/checkpoint.h"
#include "llmc/quantize.h"
#include "llmc/rand.h"
#include "llmc/utils.h"

// The matrices of a block that can get an adapter, in the order of the adapter buffer.
enum LoraTarget { LORA_QKV, LORA_ATTPROJ, LORA_FC, LORA_FCPROJ, NUM_LORA_TARGETS };
inline const char* const LORA_TARGET_NAMES[NUM_LORA_TARGETS] = {"qkv", "attproj", "fc", "fcproj"};
inline const ParameterTensor LORA_BASE_TENSOR[NUM_LORA_TARGETS] = {TENSOR_QKVW, TENSOR_ATTPROJW, TENSOR_FCW,
                                                                   TENSOR_FCPROJW};
constexpr int LORA_MAX_TENSORS = 2 * NUM_LORA_TARGETS;
constexpr unsigned LORA_ALL_TARGETS = (1u << NUM_LORA_TARGETS) - 1;
constexpr unsigned LORA_DEFAULT_TARGETS = (1u << LORA_QKV) | (1u << LORA_ATTPROJ); // the LoRA paper's choice

// What the flags -lo, -la, -lt, -lq ask for.
struct LoraConfig {
    int rank = 0;                            // r; 0: no LoRA, the whole model trains
    float alpha = 16.0f;                     // the adapters' output is scaled by alpha / r
    unsigned targets = LORA_DEFAULT_TARGETS; // bit LoraTarget: the matrices with an adapter
    bool nf4 = false;                        // QLoRA: the base's four block matrices stored as NF4
};

inline float lora_scale(const LoraConfig& lc) {
    return lc.alpha / (float)lc.rank;
}
inline bool lora_has(const LoraConfig& lc, int target) {
    return lc.rank > 0 && (lc.targets >> target & 1u);
}

// "qkv,attproj", "all" -> bit mask; an unknown or empty name is an error naming the flag.
inline unsigned lora_parse_targets(const char* flag, const char* text) {
    if (strcmp(text, "all") == 0) return LORA_ALL_TARGETS;
    unsigned mask = 0;
    const char* p = text;
    while (true) {
        const char* end = strchr(p, ',');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        int found = -1;
        for (int t = 0; t < NUM_LORA_TARGETS; t++)
            if (strlen(LORA_TARGET_NAMES[t]) == len && strncmp(p, LORA_TARGET_NAMES[t], len) == 0) found = t;
        if (found < 0) {
            fail("flag %s expects a comma-separated list of qkv, attproj, fc, fcproj (or all), got '%s'",
                 flag, text);
        }
        mask |= 1u << found;
        if (!end) break;
        p = end + 1;
    }
    return mask;
}

// "qkv,attproj" from a mask (for the printout and the run facts)
inline std::string lora_targets_text(unsigned mask) {
    std::string s;
    for (int t = 0; t < NUM_LORA_TARGETS; t++) {
        if (!(mask >> t & 1u)) continue;
        if (!s.empty()) s += ",";
        s += LORA_TARGET_NAMES[t];
    }
    return s;
}

// in and out features of a target's base matrix W (out, in)
inline void lora_target_shape(const GPT2Config& c, int target, int* in, int* out) {
    const int C = c.channels;
    switch (target) {
    case LORA_QKV:
        *in = C, *out = 3 * C;
        break;
    case LORA_ATTPROJ:
        *in = C, *out = C;
        break;
    case LORA_FC:
        *in = C, *out = 4 * C;
        break;
    default:
        *in = 4 * C, *out = C;
        break; // fcproj
    }
}

// The adapter buffer's tensor table: A then B of each enabled target.
struct LoraLayout {
    int num_tensors = 0;
    size_t sizes[LORA_MAX_TENSORS];
    size_t total = 0;                    // adapter parameters
    size_t a_offset[NUM_LORA_TARGETS];   // where target t's A (L, r, in) starts in the buffer
    size_t b_offset[NUM_LORA_TARGETS];   // and its B (L, out, r)
    int tensor_target[LORA_MAX_TENSORS]; // which target tensor i belongs to
    bool tensor_is_b[LORA_MAX_TENSORS];
};

inline LoraLayout lora_layout(const GPT2Config& c, const LoraConfig& lc) {
    LoraLayout lay;
    if (lc.rank <= 0) return lay;
    const size_t L = c.num_layers, r = lc.rank;
    for (int t = 0; t < NUM_LORA_TARGETS; t++) {
        if (!lora_has(lc, t)) continue;
        int in, out;
        lora_target_shape(c, t, &in, &out);
        for (int is_b = 0; is_b < 2; is_b++) {
            const int i = lay.num_tensors++;
            (is_b ? lay.b_offset : lay.a_offset)[t] = lay.total;
            lay.sizes[i] = L * r * (size_t)(is_b ? out : in);
            lay.tensor_target[i] = t;
            lay.tensor_is_b[i] = is_b;
            lay.total += lay.sizes[i];
        }
    }
    return lay;
}

// "A qkv", "B fcproj": the name of adapter tensor i, for messages
inline std::string lora_tensor_name(const LoraLayout& lay, int i) {
    return std::string(lay.tensor_is_b[i] ? "B " : "A ") + LORA_TARGET_NAMES[lay.tensor_target[i]];
}

// Fresh adapters (the same on every rank and in both trainers for one seed): every A uniform in
// +-1/sqrt(in) (nn.Linear's default init), every B zero, so base + adapters = base exactly.
inline void lora_init_random(float* adapters, const LoraLayout& lay, const GPT2Config& c, uint64_t seed) {
    Rng rng;
    rng_init_derived(&rng, seed, 0x4c6f5241 /* "LoRA" */, 0);
    size_t off = 0;
    for (int i = 0; i < lay.num_tensors; i++) {
        float* p = adapters + off;
        if (lay.tensor_is_b[i]) {
            memset(p, 0, lay.sizes[i] * sizeof(float));
        } else {
            int in, out;
            lora_target_shape(c, lay.tensor_target[i], &in, &out);
            const float bound = 1.0f / sqrtf((float)in);
            for (size_t j = 0; j < lay.sizes[i]; j++) p[j] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
        }
        off += lay.sizes[i];
    }
}

// W (out, in) += s.B.A with B (out, r), A (r, in): the merged weight of one layer, each element
// W + s * sum_j B[o,j] A[j,i] in fp32. The merged model's logits equal base + adapters to fp32 rounding
// (the forward sums the same products in another order).
inline void lora_merge_matrix(float* W, const float* A, const float* B, float s, int out, int in, int r) {
#pragma omp parallel for
    for (int o = 0; o < out; o++) {
        for (int i = 0; i < in; i++) {
            float sum = 0.0f;
            for (int j = 0; j < r; j++) sum += B[(size_t)o * r + j] * A[(size_t)j * in + i];
            W[(size_t)o * in + i] += s * sum;
        }
    }
}

// The merged model file of a LoRA run (both trainers): a plain fp32 llm.c file, written tensor by tensor
// (llmc/checkpoint.h's ModelFileWriter), one layer's block matrix at a time: held(i) gives tensor i when it
// is not a block matrix (fp32, its param size), base(t, l, W) writes layer l's matrix of target t as the
// trainer used it (fp32 (out, in) into W); an adapted one gets + s.B.A from adapters (fp32, the layout).
template <class HeldTensor, class BaseMatrix>
void lora_write_merged(const char* path, const GPT2Config& c, const LoraConfig& lc, const LoraLayout& lay,
                       const float* adapters, HeldTensor held, BaseMatrix base) {
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(c, sizes);
    ModelFileWriter w(path, c, /*bf16=*/false);
    std::vector<float> W((size_t)4 * c.channels * c.channels);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        int t = -1;
        for (int k = 0; k < NUM_LORA_TARGETS; k++)
            if (LORA_BASE_TENSOR[k] == i) t = k;
        if (t < 0) {
            w.write(held(i), sizes[i]);
            continue;
        }
        int in, out;
        lora_target_shape(c, t, &in, &out);
        for (int l = 0; l < c.num_layers; l++) {
            base(t, l, W.data());
            if (lora_has(lc, t)) {
                const float* A = adapters + lay.a_offset[t] + (size_t)l * lc.rank * in;
                const float* B = adapters + lay.b_offset[t] + (size_t)l * lc.rank * out;
                lora_merge_matrix(W.data(), A, B, lora_scale(lc), out, in, lc.rank);
            }
            w.write(W.data(), (size_t)out * in);
        }
    }
    w.finish();
}

// ----------------------------------------------------------------------------------------------------
// the NF4 base (QLoRA)

// One layer's matrix (n values, row-major (out, in)) in NF4: two 4-bit codes per byte, one absmax per
// NF4_BLOCK values, and the absmax values themselves double-quantized (int8 codes, one fp32 scale per
// DQ_BLOCK of them, one mean).
struct Nf4Matrix {
    size_t n = 0;
    std::vector<uint8_t> codes;       // (n / 2)
    std::vector<int8_t> absmax_codes; // (n / NF4_BLOCK)
    std::vector<float> group_absmax;  // (n / NF4_BLOCK / DQ_BLOCK, rounded up)
    float absmax_mean = 0.0f;
};

// Bytes of an NF4 matrix of n values: n/2 codes + n/64 absmax codes + 4 per 256 absmax + the mean; per
// parameter 4 + 8/64 + 32/(64.256) = 4.127 bits (without double quantization, 4 + 32/64 = 4.5).
inline size_t nf4_matrix_bytes(size_t n) {
    const size_t blocks = quant_num_blocks(n, NF4_BLOCK);
    return ceil_div(n, (size_t)2) + blocks + sizeof(float) * dq_num_groups(blocks) + sizeof(float);
}
inline size_t nf4_matrix_bytes(const Nf4Matrix& m) {
    return m.codes.size() + m.absmax_codes.size() + m.group_absmax.size() * sizeof(float) + sizeof(float);
}

// w (n) -> NF4. what names the matrix in the message when it holds a NaN or inf.
inline Nf4Matrix nf4_quantize_matrix(const float* w, size_t n, const char* what) {
    Nf4Matrix m;
    m.n = n;
    const size_t blocks = quant_num_blocks(n, NF4_BLOCK);
    m.codes.resize(ceil_div(n, (size_t)2));
    m.absmax_codes.resize(blocks);
    m.group_absmax.resize(dq_num_groups(blocks));
    std::vector<float> absmax(blocks);
    quantize_check_status(quantize_nf4(w, n, NF4_BLOCK, m.codes.data(), absmax.data()), what);
    quantize_check_status(double_quantize_absmax(absmax.data(), blocks, &m.absmax_mean, m.absmax_codes.data(),
                                                 m.group_absmax.data()),
                          what);
    return m;
}

// NF4 -> out (n): the absmax values first (blocks floats of absmax_scratch), then the weights.
inline void nf4_dequantize_matrix(const Nf4Matrix& m, float* out, float* absmax_scratch) {
    const size_t blocks = m.absmax_codes.size();
    double_dequantize_absmax(m.absmax_codes.data(), m.group_absmax.data(), m.absmax_mean, blocks,
                             absmax_scratch);
    dequantize_nf4(m.codes.data(), absmax_scratch, m.n, NF4_BLOCK, out);
}

// The frozen base's four block matrices of every layer in NF4: matrix[t][l] is layer l's matrix of
// target t (qkvw, attprojw, fcw, fcprojw).
struct Nf4Base {
    std::vector<Nf4Matrix> matrix[NUM_LORA_TARGETS];
};

// From the fp32 parameters (file order): every layer's four matrices quantized.
inline void nf4_base_quantize(Nf4Base* base, const GPT2Config& c, const float* params) {
    size_t sizes[NUM_PARAMETER_TENSORS], offsets[NUM_PARAMETER_TENSORS], off = 0;
    gpt2_parameter_sizes(c, sizes);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) offsets[i] = off, off += sizes[i];
    for (int t = 0; t < NUM_LORA_TARGETS; t++) {
        const int tensor = LORA_BASE_TENSOR[t];
        const size_t n = sizes[tensor] / c.num_layers;
        base->matrix[t].clear();
        for (int l = 0; l < c.num_layers; l++) {
            char what[64];
            snprintf(what, sizeof(what), "NF4 base: %s of layer %d", PARAMETER_NAMES[tensor], l);
            base->matrix[t].push_back(nf4_quantize_matrix(params + offsets[tensor] + l * n, n, what));
        }
    }
}

// The memory table's prediction for a frozen base: fp32, or NF4 for the four block matrices at
// 4 + 8/64 + 32/(64.256) bits a value (the partial blocks and the per-matrix means left out).
inline double lora_base_bytes_predicted(const GPT2Config& c, bool nf4) {
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(c, sizes);
    double fp32 = 0.0, matrices = 0.0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) fp32 += (double)sizes[i];
    for (int t = 0; t < NUM_LORA_TARGETS; t++) matrices += (double)sizes[LORA_BASE_TENSOR[t]];
    if (!nf4) return 4.0 * fp32;
    const double bits = 4.0 + 8.0 / NF4_BLOCK + 32.0 / (NF4_BLOCK * DQ_BLOCK);
    return 4.0 * (fp32 - matrices) + matrices * bits / 8.0;
}

inline size_t nf4_base_bytes(const Nf4Base& base) {
    size_t b = 0;
    for (const auto& ms : base.matrix)
        for (const Nf4Matrix& m : ms) b += nf4_matrix_bytes(m);
    return b;
}

// The largest absmax array of one matrix (the dequantize scratch's size), in floats
inline size_t nf4_base_max_blocks(const GPT2Config& c) {
    return quant_num_blocks((size_t)4 * c.channels * c.channels, NF4_BLOCK);
}
