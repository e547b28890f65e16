// debug_state.h: the reader of train_gpt2.py's debug state (--write-state), shared by test_gpt2.cpp (the
// CPU trainer) and test_gpt2.cu (the GPU trainer), with the AdamW the state's steps were taken with and the
// error measure both tests report.
//
// The file: an int32 header of 256 slots (magic 20240327, version 2, B, T, NSTEPS), then int32 inputs x
// (B,T) and targets y (B,T), float32 logits (B,T,V) (V, not the padded Vp), the loss, the gradient of every
// parameter (gpt2_num_parameters values, in the model file's order, padded wte rows included), and the
// losses of NSTEPS AdamW steps on the same batch (debug_adamw() below, learning rate DEBUG_ADAMW_LR).
// train_gpt2.py computes them in float64 and writes them rounded to float32.
#pragma once

#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "llmc/checkpoint.h"
#include "llmc/lora.h"
#include "llmc/train_config.h"
#include "llmc/utils.h"

constexpr int DEBUG_STATE_MAGIC = 20240327, DEBUG_STATE_VERSION = 2;

// the AdamW of the state's steps: train_gpt2.py's ADAMW_* constants, no gradient clipping
constexpr float DEBUG_ADAMW_LR = 1e-4f;
inline AdamWConfig debug_adamw() {
    AdamWConfig h;
    h.beta1 = 0.9f;
    h.beta2 = 0.999f;
    h.eps = 1e-8f;
    h.weight_decay = 0.01f;
    h.grad_clip = 0.0f;
    return h;
}

struct DebugState {
    int B = 0, T = 0, nsteps = 0;
    std::vector<int> x, y;          // (B,T)
    std::vector<float> logits;      // (B,T,V)
    float loss = 0.0f;              // mean cross-entropy of the logits against y
    std::vector<float> grads;       // gpt2_num_parameters(c) values
    std::vector<float> step_losses; // (nsteps): the loss before each AdamW step
};

// Reads path, checking it against the model's configuration c: the header's B, T, NSTEPS give the size the
// file must have, compared before anything is allocated (a header claiming B = 2^30 is a message, not a
// 1 TB allocation), and every input and target is a token id of the model (the forward indexes wte and
// the logits with them).
inline void debug_state_read(DebugState* d, const char* path, const GPT2Config& c) {
    File f(path, "rb");
    const size_t file_bytes = file_size_check(path);
    int header[HEADER_SLOTS];
    f.read(header, sizeof(int), HEADER_SLOTS, "the debug state header");
    if (header[0] != DEBUG_STATE_MAGIC || header[1] != DEBUG_STATE_VERSION) {
        fail("'%s' is not a debug state: expected magic %d version %d, got %d version %d", path,
             DEBUG_STATE_MAGIC, DEBUG_STATE_VERSION, header[0], header[1]);
    }
    d->B = header[2], d->T = header[3], d->nsteps = header[4];
    if (d->B <= 0 || d->T <= 0 || d->T > c.max_seq_len || d->nsteps < 0 || d->nsteps > 1000) {
        fail("'%s': bad header B=%d T=%d steps=%d, expected B >= 1, 1 <= T <= %d (the model's maxT) and "
             "0 <= steps <= 1000",
             path, d->B, d->T, d->nsteps, c.max_seq_len);
    }
    // after the header, 4-byte values: x, y (B,T), logits (B,T,V), the loss, the gradients, the step losses
    const size_t BT = mul_check((size_t)d->B, (size_t)d->T, "debug state B*T");
    const size_t num_logits = mul_check(BT, (size_t)c.vocab_size, "debug state logits B*T*V");
    const size_t num_params = gpt2_num_parameters(c);
    const size_t values = add_check(add_check(2 * BT, num_logits, "debug state size"), // BT < 2^62
                                    1 + num_params + (size_t)d->nsteps, "debug state size");
    const size_t expected =
        add_check(mul_check(values, 4, "debug state size"), sizeof(header), "debug state size");
    if (file_bytes != expected) {
        fail("'%s': header says B=%d T=%d steps=%d, which with this model (V=%d, %zu parameters) is a "
             "%zu-byte debug state, but the file has %zu bytes (a state of another model, or truncated?)",
             path, d->B, d->T, d->nsteps, c.vocab_size, num_params, expected, file_bytes);
    }
    d->x.resize(BT);
    d->y.resize(BT);
    d->logits.resize(num_logits);
    d->grads.resize(num_params);
    d->step_losses.resize(d->nsteps);
    f.read(d->x.data(), sizeof(int), BT, "inputs x");
    f.read(d->y.data(), sizeof(int), BT, "targets y");
    f.read(d->logits.data(), sizeof(float), d->logits.size(), "logits");
    f.read(&d->loss, sizeof(float), 1, "loss");
    f.read(d->grads.data(), sizeof(float), d->grads.size(), "parameter gradients");
    f.read(d->step_losses.data(), sizeof(float), d->step_losses.size(), "AdamW step losses");
    if (fgetc(f.fp) != EOF) fail("'%s' has bytes after the step losses: does it match the model?", path);
    for (const auto& [tokens, what] : {std::make_pair(&d->x, "input"), std::make_pair(&d->y, "target")}) {
        for (size_t i = 0; i < BT; i++) {
            int tok = (*tokens)[i];
            if (tok < 0 || tok >= c.vocab_size) {
                fail("'%s': %s token %d at position %zu is outside the model's vocab [0, %d)", path, what,
                     tok, i, c.vocab_size);
            }
        }
    }
}

// max |a - b| / max |b| over n values (b the reference): a scale-free error for a whole tensor. With
// row > 0, the first `row` columns of rows of strides stride_a and stride_b (logits (B,T,Vp) against the
// state's (B,T,V)).
inline double relative_error(const float* a, const float* b, size_t n, size_t stride_a = 0,
                             size_t stride_b = 0, size_t row = 0) {
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        size_t ia = i, ib = i;
        if (row > 0) {
            ia = (i / row) * stride_a + i % row;
            ib = (i / row) * stride_b + i % row;
        }
        max_diff = std::fmax(max_diff, std::fabs((double)a[ia] - (double)b[ib]));
        max_ref = std::fmax(max_ref, std::fabs((double)b[ib]));
    }
    return max_ref > 0 ? max_diff / max_ref : max_diff;
}

// ----------------------------------------------------------------------------------------------------
// The LoRA debug state (train_gpt2.py --write-lora-state): the model file is the frozen base. Header
// (int32, 256 slots): magic 20240328, version 1, B, T, NSTEPS, r, targets (bits of LoraTarget), 1 for an
// NF4 base, alpha (float32 bits); then x, y (B,T) int32, logits (B,T,V), the loss, the adapters
// (llmc/lora.h's layout, lora_layout(c, lora).total values), their gradients (as many) and NSTEPS step
// losses, float32.
constexpr int LORA_DEBUG_STATE_MAGIC = 20240328, LORA_DEBUG_STATE_VERSION = 1;

struct LoraDebugState {
    int B = 0, T = 0, nsteps = 0;
    LoraConfig lora;
    std::vector<int> x, y;
    std::vector<float> logits;
    float loss = 0.0f;
    std::vector<float> adapters, grads, step_losses;
};

// The first int32 of a file (which kind of debug state it is); 0 when it has none.
inline int debug_state_magic(const char* path) {
    File f(path, "rb");
    int magic = 0;
    if (fread(&magic, sizeof(int), 1, f.fp) != 1) return 0;
    return magic;
}

inline void lora_debug_state_read(LoraDebugState* d, const char* path, const GPT2Config& c) {
    File f(path, "rb");
    const size_t file_bytes = file_size_check(path);
    int header[HEADER_SLOTS];
    f.read(header, sizeof(int), HEADER_SLOTS, "the LoRA debug state header");
    if (header[0] != LORA_DEBUG_STATE_MAGIC || header[1] != LORA_DEBUG_STATE_VERSION) {
        fail("'%s' is not a LoRA debug state: expected magic %d version %d, got %d version %d", path,
             LORA_DEBUG_STATE_MAGIC, LORA_DEBUG_STATE_VERSION, header[0], header[1]);
    }
    d->B = header[2], d->T = header[3], d->nsteps = header[4];
    d->lora.rank = header[5];
    d->lora.targets = (unsigned)header[6];
    d->lora.nf4 = header[7] != 0;
    memcpy(&d->lora.alpha, &header[8], sizeof(float));
    if (d->B <= 0 || d->T <= 0 || d->T > c.max_seq_len || d->nsteps < 0 || d->nsteps > 1000 ||
        d->lora.rank < 1 || d->lora.rank > 1024 || d->lora.targets == 0 ||
        d->lora.targets > LORA_ALL_TARGETS || !(d->lora.alpha > 0.0f)) {
        fail("'%s': bad header B=%d T=%d steps=%d r=%d targets=%u alpha=%g", path, d->B, d->T, d->nsteps,
             d->lora.rank, d->lora.targets, (double)d->lora.alpha);
    }
    const size_t BT = (size_t)d->B * d->T, num_logits = BT * c.vocab_size;
    const size_t n = lora_layout(c, d->lora).total;
    const size_t expected = sizeof(header) + 4 * (2 * BT + num_logits + 1 + 2 * n + d->nsteps);
    if (file_bytes != expected) {
        fail("'%s': a LoRA state of B=%d T=%d steps=%d with %zu adapter parameters has %zu bytes, the file "
             "%zu",
             path, d->B, d->T, d->nsteps, n, expected, file_bytes);
    }
    d->x.resize(BT);
    d->y.resize(BT);
    d->logits.resize(num_logits);
    d->adapters.resize(n);
    d->grads.resize(n);
    d->step_losses.resize(d->nsteps);
    f.read(d->x.data(), sizeof(int), BT, "inputs x");
    f.read(d->y.data(), sizeof(int), BT, "targets y");
    f.read(d->logits.data(), sizeof(float), num_logits, "logits");
    f.read(&d->loss, sizeof(float), 1, "loss");
    f.read(d->adapters.data(), sizeof(float), n, "adapters");
    f.read(d->grads.data(), sizeof(float), n, "adapter gradients");
    f.read(d->step_losses.data(), sizeof(float), d->nsteps, "AdamW step losses");
    for (size_t i = 0; i < BT; i++) {
        if (d->x[i] < 0 || d->x[i] >= c.vocab_size || d->y[i] < 0 || d->y[i] >= c.vocab_size)
            fail("'%s': token %zu is outside the model's vocab [0, %d)", path, i, c.vocab_size);
    }
}
