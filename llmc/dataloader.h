// dataloader.h: reads llm.c token shards and cuts them into (B,T) batches of inputs and targets.
//
// Shard format (llm.c): a header of 256 little-endian int32 slots (1024 bytes), of which
//   header[0] = 20240520 (magic), header[1] = 1 (version), header[2] = N (number of tokens),
// followed by N little-endian uint16 tokens. So a valid file is exactly 1024 + 2*N bytes.
//
// Batch layout (llm.c's, extended to gradient accumulation). With P = num_ranks and K = micro_steps
// (the gradient-accumulation steps of one optimizer step), one "sample" is one optimizer step's global
// batch: G = K*P*B*T consecutive tokens of a shard, plus one more token so that the last target exists.
// Sample s of a shard starts at token s*G; micro-step k of rank r reads the B*T+1 tokens starting at
// s*G + (k*P + r)*B*T, and row j of that micro-batch is
//   inputs[j, t]  = tok[s*G + (k*P + r)*B*T + j*T + t]
//   targets[j, t] = tok[s*G + (k*P + r)*B*T + j*T + t + 1]      (the next token)
// Hence P ranks with B rows each see exactly the rows of one rank with P*B rows, and K micro-steps of
// B rows exactly those of one micro-step with K*B rows: the data of an optimizer step does not depend on
// how its batch is split across processes and accumulation steps.
// A shard of n tokens holds (n - 1) / G samples; the tail that does not fill one is skipped.
//
// Order. Without shuffling, shards are read in sorted file-name order and samples in order. With
// shuffling, epoch e reads the shards in a permutation drawn from a generator seeded by (seed, e),
// and within the shard at position k of that order the samples in a permutation drawn from
// (seed, e, shard index). Every sample of every shard is seen exactly once per epoch. Because the
// permutations are re-derived from (seed, epoch, shard), the whole position of the loader is the
// three integers of DataLoaderState: a checkpoint saves those and a resumed run produces exactly the
// batches an uninterrupted one would; there is no generator state to save.
//
// Memory. The shard being read is loaded fully into memory when it becomes current (2 bytes per
// token: a 100M-token shard is 200 MB), validated (header, file size, every token < vocab_size),
// and released when the next shard is loaded. Only the headers of the other shards are read at
// init, to count batches and to fail early on a broken dataset rather than hours into a run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <glob.h>
#include <string>
#include <vector>

#include "rand.h"
#include "utils.h"

constexpr int SHARD_MAGIC = 20240520;
constexpr int SHARD_VERSION = 1;
constexpr int SHARD_HEADER_INTS = 256;
constexpr size_t SHARD_HEADER_BYTES = SHARD_HEADER_INTS * sizeof(int32_t); // 1024

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "dataloader.h reads little-endian shards directly into memory; add byte swapping for this host"
#endif

struct DataLoader {
    // config
    size_t B = 0, T = 0;
    int rank = 0, num_ranks = 1;
    bool shuffle = false;
    uint64_t seed = 0;
    int vocab_size = 0;
    std::vector<std::string> files; // sorted glob matches
    // state: the position of the NEXT batch that dataloader_next_batch will produce
    uint64_t epoch = 0;
    size_t shard_pos = 0;  // index into shard_order
    size_t sample_pos = 0; // index into sample_order
    int micro_steps = 1;   // K: micro-batches per sample (gradient accumulation)
    int micro_pos = 0;     // the next micro-batch within the current sample
    std::vector<size_t> shard_order, sample_order;
    // current shard
    std::vector<uint16_t> tokens;
    size_t current_shard = SIZE_MAX; // index into files of the shard in `tokens`, SIZE_MAX if none
    // per-shard facts from the headers (read once at init)
    std::vector<size_t> shard_num_tokens, shard_num_samples;
    // output of dataloader_next_batch, (B,T) each
    std::vector<int> inputs, targets;
    size_t num_tokens_total = 0; // over all shards
};

// Tokens in one global batch (all ranks) and what one sample consumes from a shard.
inline size_t dataloader_global_batch_tokens(const DataLoader* dl) {
    return (size_t)dl->micro_steps * dl->num_ranks * dl->B * dl->T;
}

// Read and check the header of a shard; returns N. Fails naming the file and what was expected.
inline size_t dataloader_read_header_(FILE* fp, const char* path) {
    size_t file_bytes = file_size_check(path);
    if (file_bytes < SHARD_HEADER_BYTES) {
        fail(
            "token shard '%s' has %zu bytes, shorter than the %zu-byte header (expected a llm.c token shard)",
            path, file_bytes, SHARD_HEADER_BYTES);
    }
    int32_t header[SHARD_HEADER_INTS];
    fread_check(header, sizeof(int32_t), SHARD_HEADER_INTS, fp, path, "shard header");
    if (header[0] != SHARD_MAGIC) {
        fail("token shard '%s': expected magic %d, got %d; is this a token shard?", path, SHARD_MAGIC,
             header[0]);
    }
    if (header[1] != SHARD_VERSION) {
        fail("token shard '%s': expected version %d, got %d", path, SHARD_VERSION, header[1]);
    }
    if (header[2] < 0) {
        fail("token shard '%s': header says %d tokens; expected a non-negative count", path, header[2]);
    }
    size_t n = (size_t)header[2];
    size_t expected = SHARD_HEADER_BYTES + 2 * n;
    if (file_bytes != expected) {
        fail("token shard '%s': header says %zu tokens (%zu bytes) but file has %zu bytes", path, n, expected,
             file_bytes);
    }
    return n;
}

// Make files[shard] the current shard: read it all into dl->tokens and check every token.
inline void dataloader_load_shard_(DataLoader* dl, size_t shard) {
    if (dl->current_shard == shard) return; // e.g. a single-shard dataset across epochs
    const char* path = dl->files[shard].c_str();
    File f(path, "rb");
    size_t n = dataloader_read_header_(f.fp, path);
    if (n != dl->shard_num_tokens[shard]) {
        fail("token shard '%s' changed while training: header now says %zu tokens, at startup %zu", path, n,
             dl->shard_num_tokens[shard]);
    }
    dl->tokens.resize(n);
    f.read(dl->tokens.data(), sizeof(uint16_t), n, "tokens");
    for (size_t i = 0; i < n; i++) {
        if ((int)dl->tokens[i] >= dl->vocab_size) {
            fail("token shard '%s': token %d at position %zu is >= vocab size %d (made with another "
                 "tokenizer?)",
                 path, (int)dl->tokens[i], i, dl->vocab_size);
        }
    }
    dl->current_shard = shard;
}

// shard_order for dl->epoch: identity, or a permutation drawn from (seed, epoch).
inline void dataloader_make_shard_order_(DataLoader* dl) {
    size_t n = dl->files.size();
    dl->shard_order.resize(n);
    for (size_t i = 0; i < n; i++) dl->shard_order[i] = i;
    if (dl->shuffle) {
        Rng rng;
        rng_init_derived(&rng, dl->seed, dl->epoch, UINT64_MAX); // UINT64_MAX: "the shard order"
        rng_shuffle(&rng, dl->shard_order.data(), n);
    }
}

// Load the shard at shard_pos and build its sample_order: identity, or a permutation drawn from
// (seed, epoch, shard index in files).
inline void dataloader_enter_shard_(DataLoader* dl) {
    size_t shard = dl->shard_order[dl->shard_pos];
    dataloader_load_shard_(dl, shard);
    size_t n = dl->shard_num_samples[shard];
    dl->sample_order.resize(n);
    for (size_t i = 0; i < n; i++) dl->sample_order[i] = i;
    if (dl->shuffle) {
        Rng rng;
        rng_init_derived(&rng, dl->seed, dl->epoch, shard);
        rng_shuffle(&rng, dl->sample_order.data(), n);
    }
}

inline void dataloader_reset(DataLoader* dl) {
    dl->epoch = 0;
    dl->shard_pos = 0;
    dl->sample_pos = 0;
    dl->micro_pos = 0;
    dataloader_make_shard_order_(dl);
    dataloader_enter_shard_(dl);
}

// filename_pattern: a glob(3) pattern (or one plain path); matches are sorted by name.
// vocab_size: every token must be < vocab_size (the model's real vocabulary, not the padded one).
inline void dataloader_init(DataLoader* dl, const char* filename_pattern, size_t B, size_t T, int rank,
                            int num_ranks, bool shuffle, uint64_t seed, int vocab_size, int micro_steps = 1) {
    if (B == 0 || T == 0) fail("data loader: B and T must be positive, got B=%zu T=%zu", B, T);
    if (num_ranks < 1 || rank < 0 || rank >= num_ranks) {
        fail("data loader: rank %d is not in [0, num_ranks=%d)", rank, num_ranks);
    }
    if (vocab_size <= 0) fail("data loader: vocab_size must be positive, got %d", vocab_size);
    if (micro_steps < 1) fail("data loader: micro_steps must be positive, got %d", micro_steps);
    dl->micro_steps = micro_steps;
    dl->B = B;
    dl->T = T;
    dl->rank = rank;
    dl->num_ranks = num_ranks;
    dl->shuffle = shuffle;
    dl->seed = seed;
    dl->vocab_size = vocab_size;
    dl->current_shard = SIZE_MAX;
    dl->tokens.clear();

    glob_t g;
    int rc = glob(filename_pattern, 0, nullptr, &g);
    if (rc == GLOB_NOMATCH) {
        fail(
            "no token shard matches '%s' (missing file, or a pattern that matches nothing; run `make data`?)",
            filename_pattern);
    }
    if (rc != 0) fail("glob of token shard pattern '%s' failed (code %d)", filename_pattern, rc);
    dl->files.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    globfree(&g);
    std::sort(dl->files.begin(), dl->files.end());

    // Read every header now: count tokens and samples, and fail early on a bad shard. The global batch is
    // a product of flags: checked once here, so dataloader_global_batch_tokens cannot wrap later.
    size_t global_batch = mul_check(mul_check((size_t)micro_steps, (size_t)num_ranks, "data loader batch"),
                                    mul_check(B, T, "data loader B*T"), "data loader global batch");
    size_t need = add_check(global_batch, 1, "data loader global batch");
    dl->shard_num_tokens.clear();
    dl->shard_num_samples.clear();
    dl->num_tokens_total = 0;
    for (const std::string& path : dl->files) {
        File f(path.c_str(), "rb");
        size_t n = dataloader_read_header_(f.fp, path.c_str());
        if (n < need) {
            fail("token shard '%s' has %zu tokens, but one global batch needs "
                 "accumulation_steps*num_ranks*B*T+1 = %d*%d*%zu*%zu+1 = %zu tokens (use a smaller B, T or "
                 "total batch, or a bigger shard)",
                 path.c_str(), n, micro_steps, num_ranks, B, T, need);
        }
        dl->shard_num_tokens.push_back(n);
        dl->shard_num_samples.push_back((n - 1) / dataloader_global_batch_tokens(dl));
        dl->num_tokens_total += n;
    }
    dl->inputs.assign(B * T, 0);
    dl->targets.assign(B * T, 0);
    dataloader_reset(dl);
}

// Number of batches (global batches, i.e. next_batch calls of each rank) in one epoch over all shards.
inline size_t dataloader_num_batches(const DataLoader* dl) {
    size_t total = 0;
    for (size_t n : dl->shard_num_samples) total += n;
    return total;
}

// Fill inputs/targets with the batch at the current position, then advance. The move to the next
// shard (and, after the last shard, to the next epoch with its new shuffle) happens lazily at the
// start of the following call, so the state after a call always names the batch that comes next.
inline void dataloader_next_batch(DataLoader* dl) {
    if (dl->micro_pos == 0 && dl->sample_pos >= dl->sample_order.size()) {
        dl->sample_pos = 0;
        dl->shard_pos++;
        if (dl->shard_pos >= dl->shard_order.size()) {
            dl->shard_pos = 0;
            dl->epoch++;
            dataloader_make_shard_order_(dl);
        }
        dataloader_enter_shard_(dl);
    }
    size_t BT = dl->B * dl->T;
    size_t start = dl->sample_order[dl->sample_pos] * dataloader_global_batch_tokens(dl) +
                   ((size_t)dl->micro_pos * dl->num_ranks + dl->rank) * BT;
    const uint16_t* tok = dl->tokens.data() + start; // B*T+1 tokens, in range by the sample count
    for (size_t i = 0; i < BT; i++) {
        dl->inputs[i] = tok[i];
        dl->targets[i] = tok[i + 1];
    }
    if (++dl->micro_pos == dl->micro_steps) {
        dl->micro_pos = 0;
        dl->sample_pos++;
    }
}

struct DataLoaderState {
    uint64_t epoch, shard_pos, sample_pos;
    uint64_t micro_pos = 0; // 0 between optimizer steps, where checkpoints are taken
};

inline DataLoaderState dataloader_get_state(const DataLoader* dl) {
    return DataLoaderState{dl->epoch, (uint64_t)dl->shard_pos, (uint64_t)dl->sample_pos,
                           (uint64_t)dl->micro_pos};
}

// Resume at a saved position: the permutations of that epoch and shard are re-derived from the seed.
// The loader must be configured as when the state was saved (same files, B, T, ranks, seed).
inline void dataloader_set_state(DataLoader* dl, DataLoaderState s) {
    if (s.shard_pos >= dl->files.size()) {
        fail("data loader state: shard position %llu, but there are only %zu shards (did the data change?)",
             (unsigned long long)s.shard_pos, dl->files.size());
    }
    dl->epoch = s.epoch;
    dl->shard_pos = (size_t)s.shard_pos;
    dataloader_make_shard_order_(dl);
    dataloader_enter_shard_(dl);
    if (s.sample_pos > dl->sample_order.size()) {
        fail("data loader state: sample position %llu, but shard '%s' has only %zu samples of %zu tokens "
             "(did the data, B, T or the number of processes change?)",
             (unsigned long long)s.sample_pos, dl->files[dl->current_shard].c_str(), dl->sample_order.size(),
             dataloader_global_batch_tokens(dl));
    }
    if (s.micro_pos >= (uint64_t)dl->micro_steps) {
        fail("data loader state: micro-step %llu, but a step has only %d", (unsigned long long)s.micro_pos,
             dl->micro_steps);
    }
    dl->sample_pos = (size_t)s.sample_pos;
    dl->micro_pos = (int)s.micro_pos;
}
