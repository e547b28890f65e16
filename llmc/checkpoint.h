// checkpoint.h: the GPT-2 model file (llm.c's format), the model's configuration and its parameter table.
//
// Model file = int32 header of 256 slots, then the parameters:
//   header[0] = 20240326 (magic)   header[1] = 3 (fp32 parameters) or 5 (bf16 parameters)
//   header[2] = maxT   header[3] = V   header[4] = L   header[5] = NH   header[6] = C   header[7] = Vp
//   header[8] = MODEL_CHECKSUM_MARK and header[9] = CRC-32 (llmc/crc32.h) of the parameter bytes, in files
//   this project writes; llm.c leaves both 0 and ignores them, so each program reads the other's files
//   (a file without the mark is read unchecked).
//   then, little-endian, in this order and shape (Linear weights stored (out, in)):
//   wte (Vp,C) wpe (maxT,C) ln1w (L,C) ln1b (L,C) qkvw (L,3C,C) qkvb (L,3C) attprojw (L,C,C) attprojb (L,C)
//   ln2w (L,C) ln2b (L,C) fcw (L,4C,C) fcb (L,4C) fcprojw (L,C,4C) fcprojb (L,C) lnfw (C) lnfb (C)
// Rows V..Vp-1 of wte are padding: zero, never indexed by a token, ignored by the loss.
//
// Both trainers use the table below, so the CPU and GPU lay out parameters identically.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "llmc/crc32.h"
#include "llmc/rand.h"
#include "llmc/utils.h"

constexpr int MODEL_MAGIC = 20240326;
constexpr int MODEL_CHECKSUM_MARK = 0x43524343; // "CCRC" little-endian: header[9] holds the CRC-32
constexpr int MODEL_VERSION_FP32 = 3;
constexpr int MODEL_VERSION_BF16 = 5;
constexpr int HEADER_SLOTS = 256;
constexpr int MODEL_MAX_T = 1 << 20, MODEL_MAX_V = 1 << 24, MODEL_MAX_L = 1 << 10, MODEL_MAX_C = 1 << 16;

struct GPT2Config {
    int max_seq_len;       // maxT: the longest sequence the position embedding covers
    int vocab_size;        // V: real vocabulary (50257 for GPT-2)
    int padded_vocab_size; // Vp: V rounded up to a multiple of 128 (50304), for aligned matmuls
    int num_layers;        // L
    int num_heads;         // NH
    int channels;          // C
};

// The 16 parameter tensors, in file order. Code that treats one tensor specially names it (TENSOR_LN1W),
// never by its index.
// clang-format off
enum ParameterTensor {
    TENSOR_WTE, TENSOR_WPE, TENSOR_LN1W, TENSOR_LN1B, TENSOR_QKVW, TENSOR_QKVB, TENSOR_ATTPROJW,
    TENSOR_ATTPROJB, TENSOR_LN2W, TENSOR_LN2B, TENSOR_FCW, TENSOR_FCB, TENSOR_FCPROJW, TENSOR_FCPROJB,
    TENSOR_LNFW, TENSOR_LNFB, NUM_PARAMETER_TENSORS
};
// clang-format on
inline const char* const PARAMETER_NAMES[NUM_PARAMETER_TENSORS] = {
    "wte",  "wpe",  "ln1w", "ln1b", "qkvw",    "qkvb",    "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw",     "lnfb"};

// Number of elements of each parameter tensor, in file order.
inline void gpt2_parameter_sizes(const GPT2Config& c, size_t sizes[NUM_PARAMETER_TENSORS]) {
    size_t Vp = c.padded_vocab_size, C = c.channels, maxT = c.max_seq_len, L = c.num_layers;
    sizes[TENSOR_WTE] = Vp * C;
    sizes[TENSOR_WPE] = maxT * C;
    sizes[TENSOR_LN1W] = L * C;
    sizes[TENSOR_LN1B] = L * C;
    sizes[TENSOR_QKVW] = L * (3 * C) * C;
    sizes[TENSOR_QKVB] = L * (3 * C);
    sizes[TENSOR_ATTPROJW] = L * C * C;
    sizes[TENSOR_ATTPROJB] = L * C;
    sizes[TENSOR_LN2W] = L * C;
    sizes[TENSOR_LN2B] = L * C;
    sizes[TENSOR_FCW] = L * (4 * C) * C;
    sizes[TENSOR_FCB] = L * (4 * C);
    sizes[TENSOR_FCPROJW] = L * C * (4 * C);
    sizes[TENSOR_FCPROJB] = L * C;
    sizes[TENSOR_LNFW] = C;
    sizes[TENSOR_LNFB] = C;
}

inline size_t gpt2_num_parameters(const GPT2Config& c) {
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(c, sizes);
    size_t n = 0;
    for (size_t s : sizes) n += s;
    return n;
}

// Weight decay applies to the 2-D weight matrices only: wte, wpe, qkvw, attprojw, fcw, fcprojw.
inline bool parameter_is_matrix(int tensor) {
    return tensor == TENSOR_WTE || tensor == TENSOR_WPE || tensor == TENSOR_QKVW ||
           tensor == TENSOR_ATTPROJW || tensor == TENSOR_FCW || tensor == TENSOR_FCPROJW;
}

// The per-layer tensors (ln1w .. fcprojb, L slices each) and the others (wte, wpe, lnfw, lnfb).
inline bool parameter_is_per_layer(int tensor) {
    return tensor >= TENSOR_LN1W && tensor <= TENSOR_FCPROJB;
}

// A fresh model into params (fp32, gpt2_num_parameters(c) values, file order), the same for both trainers
// from the same seed: weights ~ N(0, 0.02); the two projections into the residual stream (attprojw,
// fcprojw) get std 0.02/sqrt(2L) so the residual stream's variance does not grow with depth; biases 0,
// LayerNorm weights 1; padded vocabulary rows 0. The tensors draw from one generator in file order.
inline void gpt2_init_random(float* params, const GPT2Config& c, uint64_t seed) {
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(c, sizes);
    Rng rng;
    rng_init(&rng, seed);
    const float residual_std = 0.02f / sqrtf(2.0f * c.num_layers);
    float* p = params;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        const size_t n = sizes[i];
        if (i == TENSOR_LN1W || i == TENSOR_LN2W || i == TENSOR_LNFW) {
            for (size_t j = 0; j < n; j++) p[j] = 1.0f;
        } else if (parameter_is_matrix(i)) {
            const float std = (i == TENSOR_ATTPROJW || i == TENSOR_FCPROJW) ? residual_std : 0.02f;
            const size_t real = (i == TENSOR_WTE) ? (size_t)c.vocab_size * c.channels : n; // not the padding
            rng_fill_normal(&rng, p, real, 0.0f, std);
            for (size_t j = real; j < n; j++) p[j] = 0.0f;
        } else {
            for (size_t j = 0; j < n; j++) p[j] = 0.0f; // biases
        }
        p += n;
    }
}

// ----------------------------------------------------------------------------------------------------
// model descriptors for training from scratch: "d12" etc.
// Width rule: the GPT-2 family for d12/d24/d36/d48 (C = 768/1024/1280/1600, head size 64); any other
// depth L gets C = 64*L and NH = L (head size 64), e.g. d2 -> C=128, NH=2; d6 -> C=384, NH=6.
inline bool gpt2_config_from_descriptor(const char* desc, GPT2Config* c) {
    if (desc[0] != 'd' || desc[1] == '\0') return false;
    char* end = nullptr;
    long depth = strtol(desc + 1, &end, 10);
    if (*end != '\0' || depth < 1 || depth > 96) return false;
    c->num_layers = (int)depth;
    switch (depth) {
    case 12:
        c->channels = 768, c->num_heads = 12;
        break;
    case 24:
        c->channels = 1024, c->num_heads = 16;
        break;
    case 36:
        c->channels = 1280, c->num_heads = 20;
        break;
    case 48:
        c->channels = 1600, c->num_heads = 25;
        break;
    default:
        c->channels = 64 * (int)depth, c->num_heads = (int)depth;
    }
    c->max_seq_len = 1024;
    c->vocab_size = 50257;
    c->padded_vocab_size = 50304;
    return true;
}

// ----------------------------------------------------------------------------------------------------
// bf16 <-> fp32 on the host (bf16 = the top 16 bits of an fp32)

inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

// round to nearest, ties to even; NaN stays NaN
inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof(bits));
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

// ----------------------------------------------------------------------------------------------------
// reading and writing model files

// The shape in a model file's header (slots 2..7; fill_model_header below writes them).
inline GPT2Config model_config_from_header(const int header[HEADER_SLOTS]) {
    GPT2Config c;
    c.max_seq_len = header[2];
    c.vocab_size = header[3];
    c.num_layers = header[4];
    c.num_heads = header[5];
    c.channels = header[6];
    c.padded_vocab_size = header[7];
    return c;
}

// Reads and validates the header; fails with a message naming the file on any inconsistency,
// including a file whose size disagrees with the sizes the header declares.
inline void checkpoint_read_header(const char* path, GPT2Config* config, int* version) {
    int header[HEADER_SLOTS];
    {
        File f(path, "rb");
        f.read(header, sizeof(int), HEADER_SLOTS, "the 1024-byte model header");
    }
    if (header[0] != MODEL_MAGIC) {
        fail("'%s' is not a GPT-2 model file: expected magic %d, got %d", path, MODEL_MAGIC, header[0]);
    }
    if (header[1] != MODEL_VERSION_FP32 && header[1] != MODEL_VERSION_BF16) {
        fail("'%s': unsupported model file version %d (expected %d for fp32 or %d for bf16)", path, header[1],
             MODEL_VERSION_FP32, MODEL_VERSION_BF16);
    }
    *version = header[1];
    *config = model_config_from_header(header);
    const GPT2Config& c = *config;
    if (c.max_seq_len <= 0 || c.vocab_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.channels <= 0 ||
        c.padded_vocab_size < c.vocab_size || c.channels % c.num_heads != 0) {
        fail("'%s': inconsistent model header: maxT=%d V=%d L=%d NH=%d C=%d Vp=%d (expected all positive, Vp "
             ">= V and C divisible by NH)",
             path, c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads, c.channels, c.padded_vocab_size);
    }
    // Bounds far above any GPT-2 (maxT 1024, V 50257, L 48, C 1600) that keep every size computed from the
    // header (Vp*C, L*4C*C, B*T*4C*L...) far from 64-bit overflow.
    if (c.max_seq_len > MODEL_MAX_T || c.padded_vocab_size > MODEL_MAX_V || c.num_layers > MODEL_MAX_L ||
        c.channels > MODEL_MAX_C) {
        fail("'%s': model header out of range: maxT=%d V=%d Vp=%d L=%d C=%d (at most maxT %d, Vp %d, L %d, C "
             "%d)",
             path, c.max_seq_len, c.vocab_size, c.padded_vocab_size, c.num_layers, c.channels, MODEL_MAX_T,
             MODEL_MAX_V, MODEL_MAX_L, MODEL_MAX_C);
    }
    if (header[8] != 0 && header[8] != MODEL_CHECKSUM_MARK) {
        fail("'%s': header slot 8 holds %d, expected 0 (llm.c) or the checksum mark %d: not a model file of "
             "this format",
             path, header[8], MODEL_CHECKSUM_MARK);
    }
    size_t bytes_per = (*version == MODEL_VERSION_FP32) ? 4 : 2;
    size_t expected = HEADER_SLOTS * sizeof(int) + gpt2_num_parameters(c) * bytes_per;
    size_t actual = file_size_check(path);
    if (actual != expected) {
        fail(
            "'%s': the header declares %zu parameters (%zu bytes with the header) but the file has %zu bytes",
            path, gpt2_num_parameters(c), expected, actual);
    }
}

// The first non-finite value of params (file order): whether there is one, its position in params, and
// its tensor and index in that tensor (for the message).
inline bool parameters_find_nonfinite(const GPT2Config& c, const float* params, size_t num_params, size_t* at,
                                      int* tensor, size_t* index) {
    size_t k = 0;
    while (k < num_params && std::isfinite(params[k])) k++;
    if (k == num_params) return false;
    *at = k;
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(c, sizes);
    *tensor = 0;
    while (*tensor < NUM_PARAMETER_TENSORS - 1 && k >= sizes[*tensor]) k -= sizes[(*tensor)++];
    *index = k;
    return true;
}

// Reads all parameters as fp32 (converting from bf16 for version 5 files) into params[num_params], checks
// the checksum when the file has one (a corrupted file is an error naming it) and that every value is
// finite (a NaN or inf weight would only show up later as a NaN loss).
inline void checkpoint_read_parameters(const char* path, int version, float* params, size_t num_params) {
    File f(path, "rb");
    int header[HEADER_SLOTS];
    f.read(header, sizeof(int), HEADER_SLOTS, "the 1024-byte model header");
    const GPT2Config c = model_config_from_header(header);
    uint32_t crc = 0;
    if (version == MODEL_VERSION_FP32) {
        f.read(params, sizeof(float), num_params, "fp32 parameters");
        crc = crc32_update(0, params, num_params * sizeof(float));
    } else {
        uint16_t* tmp = (uint16_t*)malloc_check(num_params * sizeof(uint16_t), "bf16 parameters");
        f.read(tmp, sizeof(uint16_t), num_params, "bf16 parameters");
        crc = crc32_update(0, tmp, num_params * sizeof(uint16_t));
        for (size_t i = 0; i < num_params; i++) params[i] = bf16_to_float(tmp[i]);
        free(tmp);
    }
    if (header[8] == MODEL_CHECKSUM_MARK && (uint32_t)header[9] != crc) {
        fail("'%s' is corrupted: the CRC-32 of its parameters is %08x, its header says %08x", path, crc,
             (uint32_t)header[9]);
    }
    int tensor;
    size_t at, index;
    if (parameters_find_nonfinite(c, params, num_params, &at, &tensor, &index)) {
        fail("'%s' holds a non-finite parameter: %s[%zu] = %f", path, PARAMETER_NAMES[tensor], index,
             (double)params[at]);
    }
}

inline void fill_model_header(int header[HEADER_SLOTS], const GPT2Config& c, int version) {
    memset(header, 0, HEADER_SLOTS * sizeof(int));
    header[0] = MODEL_MAGIC;
    header[1] = version;
    header[2] = c.max_seq_len;
    header[3] = c.vocab_size;
    header[4] = c.num_layers;
    header[5] = c.num_heads;
    header[6] = c.channels;
    header[7] = c.padded_vocab_size;
    header[8] = MODEL_CHECKSUM_MARK;
}

// A model file written tensor by tensor (a merged LoRA model is made one layer's matrix at a time):
// the header, then the parameters in file order as fp32 (version 3) or bf16 (version 5), the checksum of
// their bytes summed as they go and written into header[9] at the end; atomic (temporary name + rename),
// so a crash mid-write leaves no half-written file under the name.
struct ModelFileWriter {
    AtomicFile file;
    int header[HEADER_SLOTS];
    bool bf16;
    uint32_t crc = 0;
    std::vector<uint16_t> bf16_chunk;
    ModelFileWriter(const char* path, const GPT2Config& c, bool to_bf16) : file(path), bf16(to_bf16) {
        fill_model_header(header, c, bf16 ? MODEL_VERSION_BF16 : MODEL_VERSION_FP32);
        file.write(header, sizeof(int), HEADER_SLOTS); // header[9] is filled in by finish()
    }
    // the next n parameters (fp32; rounded to bf16 in a bf16 file)
    void write(const float* params, size_t n) {
        if (!bf16) {
            crc = crc32_update(crc, params, n * sizeof(float));
            file.write(params, sizeof(float), n);
            return;
        }
        const size_t chunk = 1 << 16;
        bf16_chunk.resize(chunk);
        for (size_t i = 0; i < n; i += chunk) {
            const size_t m = std::min(chunk, n - i);
            for (size_t j = 0; j < m; j++) bf16_chunk[j] = float_to_bf16(params[i + j]);
            crc = crc32_update(crc, bf16_chunk.data(), m * sizeof(uint16_t));
            file.write(bf16_chunk.data(), sizeof(uint16_t), m);
        }
    }
    void finish() {
        header[9] = (int)crc;
        if (fseek(file.fp, 0, SEEK_SET) != 0) fail("could not seek in '%s'", file.tmp_path.c_str());
        file.write(header, sizeof(int), HEADER_SLOTS);
        file.commit();
    }
};

// Writes a whole model file from params (fp32, file order): fp32 (version 3) or bf16 (version 5).
inline void checkpoint_write(const char* path, const GPT2Config& c, const float* params, size_t num_params,
                             bool bf16) {
    ModelFileWriter w(path, c, bf16);
    w.write(params, num_params);
    w.finish();
}
