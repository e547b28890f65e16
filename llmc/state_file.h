// state_file.h: the training state beside each model checkpoint, and how a run finds its latest checkpoint.
// Shared by both trainers, so a checkpoint directory reads the same whichever wrote it: each trainer lists
// its optimizer buffers (StateBuffer, in host or device memory); the header, the order, the check for
// trailing bytes and the atomic commit are here, once.
//
// <dir>/model_<step>.bin          the model (llmc/checkpoint.h), written by process 0
// <dir>/state_<step>_<rank>.bin   one per process:
//   int32 header[256]: [0] = STATE_MAGIC, [1] = STATE_VERSION, [2] = ranks (processes), [3] = rank,
//   [4] = ZeRO stage, [5] = optimizer (0 fp32 AdamW, 1 8-bit AdamW), [6] = step, [7] = 8-bit AdamW
//   quantization block (values per absmax scale),
//   [8] = 1 if fp32 master weights follow the optimizer state (GPU trainer), [9] = number of run facts F,
//   [10] = CRC-32 (llmc/crc32.h) of every byte after the header; then 64-bit values at int32
//   slots 16..: [16] shard size, [18] shard offset, [20] number of trained parameters (the model's, or its
//   LoRA adapters), [22] data loader epoch, [24] shard position, [26] sample position, [28] sampling RNG
//   state; then F run facts (RunFact, 64 bytes each: the flags and data the run was started with, which a
//   resume compares with its own, llmc/run_plan.h); then, for a LoRA run, the adapters (fp32, [20] values:
//   the model file is their merged export); then the optimizer state of the process's shard: m and v (fp32,
//   shard size each), or for 8-bit AdamW m codes, v codes (uint8, shard size each), m absmax, v absmax (fp32,
//   one per block); then, if [8] = 1, the shard's fp32 master weights. On reading, the checksum is verified,
//   and so is every value that has a range (m and the master weights finite, v and the absmax scales finite
//   and >= 0): a corrupted or poisoned state is an error naming it.
// <dir>/checkpoint_latest         the step of the newest complete checkpoint, as text. It is written
//   (atomically) only after the model and every process's state are on disk, so a crash mid-save leaves
//   the previous checkpoint as the one a resume finds.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "llmc/checkpoint.h"
#include "llmc/crc32.h"
#include "llmc/dataloader.h"
#include "llmc/rand.h"
#include "llmc/utils.h"

constexpr int STATE_MAGIC = 20240527;
constexpr int STATE_VERSION = 2; // 1: no run facts, no checksum
constexpr int MAX_RUN_FACTS = 64;

// One thing a run was started with, as text: "-l" = "0.001", "train data" = "338025 tokens in 1 shards".
// Every rank of a run must agree on each (llmc/run_plan.h checks at start-up); a resume compares them
// with the checkpoint's, by rule. Fixed size, so it is sent between processes and stored as it is.
enum RunFactRule : char {
    FACT_RESUME_ANY = 'a',    // may change on resume: the cadence of validation and sampling
    FACT_RESUME_WARN = 'w',   // may change, with a warning: the optimizer and the schedule
    FACT_RESUME_REFUSE = 'r', // a resume with another value is not the same run: refused
    FACT_THIS_START = 's', // about this start of the run (-y, the step resumed from): checked across ranks,
                           // not saved, so a resumed run's files equal an uninterrupted run's
};
struct RunFact {
    char name[23];  // the flag ("-l") or what it is ("train data")
    char rule;      // RunFactRule
    char value[40]; // as text, NUL-terminated; longer values are cut
};
static_assert(sizeof(RunFact) == 64, "a run fact is 64 bytes in state files and messages between ranks");

// Everything in a state file's header, and the run facts after it.
struct StateHeader {
    int num_ranks = 1, rank = 0, zero_stage = 0;
    bool use_8bit = false;
    int step = 0, quant_block = 0;
    bool has_master = false;
    uint64_t shard_size = 0, shard_offset = 0, num_parameters = 0;
    DataLoaderState loader{0, 0, 0};
    Rng sample_rng{0};
    std::vector<RunFact> facts;
};

inline std::string checkpoint_path(const char* dir, const char* kind, int step, int rank) {
    char buf[64];
    if (rank < 0)
        snprintf(buf, sizeof(buf), "/%s_%08d.bin", kind, step);
    else
        snprintf(buf, sizeof(buf), "/%s_%08d_%05d.bin", kind, step, rank);
    return std::string(dir) + buf;
}

inline void state_header_fill(int header[HEADER_SLOTS], const StateHeader& h) {
    if (h.loader.micro_pos != 0) fail("state_file_write: a checkpoint must be taken between optimizer steps");
    if (h.facts.size() > MAX_RUN_FACTS) fail("state_file_write: more than %d run facts", MAX_RUN_FACTS);
    memset(header, 0, HEADER_SLOTS * sizeof(int));
    header[0] = STATE_MAGIC;
    header[1] = STATE_VERSION;
    header[2] = h.num_ranks;
    header[3] = h.rank;
    header[4] = h.zero_stage;
    header[5] = h.use_8bit ? 1 : 0;
    header[6] = h.step;
    header[7] = h.quant_block;
    header[8] = h.has_master ? 1 : 0;
    header[9] = (int)h.facts.size();
    const uint64_t wide[7] = {h.shard_size,       h.shard_offset,      h.num_parameters,  h.loader.epoch,
                              h.loader.shard_pos, h.loader.sample_pos, h.sample_rng.state};
    memcpy(header + 16, wide, sizeof(wide));
}

// Reads the header of this process's state file and checks it against what this run expects (process
// count, ZeRO stage, optimizer, shard and model size): a resume with other settings fails with a message
// that names the file and both settings, instead of loading mismatched state.
// stored_crc: header[10], the checksum of the rest of the file, which the caller verifies as it reads on.
inline StateHeader state_header_read(File* f, const StateHeader& expected, uint32_t* stored_crc) {
    const char* path = f->path.c_str();
    int header[HEADER_SLOTS];
    f->read(header, sizeof(int), HEADER_SLOTS, "the 1024-byte state header");
    if (header[0] != STATE_MAGIC) {
        fail("'%s' is not a training state file: expected magic %d, got %d", path, STATE_MAGIC, header[0]);
    }
    if (header[1] != STATE_VERSION) {
        fail(
            "'%s' is a training state file of version %d; this program reads version %d (written since state "
            "files carry a checksum): resume with the program that wrote it, or restart from its model file "
            "with -e",
            path, header[1], STATE_VERSION);
    }
    if (header[9] < 0 || header[9] > MAX_RUN_FACTS) {
        fail("'%s': the header declares %d run facts, expected 0..%d", path, header[9], MAX_RUN_FACTS);
    }
    StateHeader h;
    h.facts.resize((size_t)header[9]);
    f->read(h.facts.data(), sizeof(RunFact), h.facts.size(), "the run facts");
    *stored_crc = (uint32_t)header[10];
    h.num_ranks = header[2];
    h.rank = header[3];
    h.zero_stage = header[4];
    h.use_8bit = header[5] == 1;
    h.step = header[6];
    h.quant_block = header[7];
    h.has_master = header[8] == 1;
    uint64_t wide[7];
    memcpy(wide, header + 16, sizeof(wide));
    h.shard_size = wide[0], h.shard_offset = wide[1], h.num_parameters = wide[2];
    h.loader = DataLoaderState{wide[3], wide[4], wide[5]};
    h.sample_rng.state = wide[6];
    // the pipeline stages (the run fact -pp; absent: 1) cut the model, and so the optimizer state, by
    // layers: named first, as a changed -pp changes the shard sizes too (expected.facts: this run's facts)
    auto stages = [](const std::vector<RunFact>& facts) -> std::string {
        for (const RunFact& fact : facts)
            if (strncmp(fact.name, "-pp", sizeof(fact.name)) == 0)
                return std::string(fact.value, strnlen(fact.value, sizeof(fact.value)));
        return "1";
    };
    if (!expected.facts.empty() && stages(h.facts) != stages(expected.facts)) {
        fail("'%s' was written by a run with -pp %s (pipeline stages) but this run has -pp %s: its optimizer "
             "state is cut by stages; resume with -pp %s, or start a new run from its model file with -e",
             path, stages(h.facts).c_str(), stages(expected.facts).c_str(), stages(h.facts).c_str());
    }
    if (h.num_ranks != expected.num_ranks) {
        fail("'%s' was written by a run with %d processes but this run has %d: resume with the same number "
             "of processes",
             path, h.num_ranks, expected.num_ranks);
    }
    if (h.zero_stage != expected.zero_stage || h.use_8bit != expected.use_8bit ||
        (h.use_8bit && h.quant_block != expected.quant_block)) {
        fail("'%s' holds optimizer state for -z %d -qo %d -qb %d, but this run has -z %d -qo %d -qb %d", path,
             h.zero_stage, (int)h.use_8bit, h.quant_block, expected.zero_stage, (int)expected.use_8bit,
             expected.quant_block);
    }
    if (h.step != expected.step || h.rank != expected.rank || h.shard_size != expected.shard_size ||
        h.num_parameters != expected.num_parameters) {
        fail(
            "'%s' does not match this run: step %d, rank %d, %llu trained parameters, shard of %llu "
            "(expected "
            "step %d, rank %d, %llu, %llu; with LoRA the trained parameters are the adapters of -lo and -lt)",
            path, h.step, h.rank, (unsigned long long)h.num_parameters, (unsigned long long)h.shard_size,
            expected.step, expected.rank, (unsigned long long)expected.num_parameters,
            (unsigned long long)expected.shard_size);
    }
    return h;
}

// Before a process opens its own state file: the checkpoint must have been written by as many processes as
// this run has. Read from process 0's file (every checkpoint has one), so that every process reports the
// real cause, not just "state_<step>_<rank>.bin is missing" on the processes the old run did not have.
inline void state_check_rank_count(const char* dir, int step, int num_ranks) {
    std::string path = checkpoint_path(dir, "state", step, 0);
    File f(path.c_str(), "rb");
    int header[4];
    f.read(header, sizeof(int), 4, "the state header");
    if (header[0] == STATE_MAGIC && header[2] != num_ranks) {
        fail("'%s' was written by a run with %d processes but this run has %d: resume with the same number "
             "of processes",
             path.c_str(), header[2], num_ranks);
    }
}

// ----------------------------------------------------------------------------------------------------
// the optimizer buffers after the header

// One buffer of a state file: count elements of elem_bytes each at data. On reading, data = nullptr skips
// the buffer's bytes (the GPU trainer with -w 0 reading a state that holds master weights).
enum StateValues {
    STATE_ANY,         // bytes with no invalid value (8-bit codes)
    STATE_FINITE,      // fp32, finite (m, master weights)
    STATE_NONNEGATIVE, // fp32, finite and >= 0 (v, absmax scales)
};
struct StateBuffer {
    const char* what; // named in error messages: "AdamW m"
    void* data;
    size_t elem_bytes, count;
    StateValues values;
};
// Copies bytes between device buffers and a host staging buffer (cudaMemcpy); same signature as memcpy:
// (dst, src, bytes).
typedef void* (*StateCopy)(void* dst, const void* src, size_t bytes);

// A state file's buffers, in file order, and how to reach them: in host memory (to_host = to_buffer =
// nullptr) they are written and read directly; in device memory they go through a host staging buffer.
struct StateBuffers {
    StateBuffer list[8];
    int count = 0;
    StateCopy to_host = nullptr, to_buffer = nullptr;
};
inline void state_buffers_add(StateBuffers* b, const char* what, void* data, size_t elem_bytes, size_t count,
                              StateValues values = STATE_ANY) {
    if (b->count == 8) fail("state_buffers_add: more than 8 buffers");
    if (values != STATE_ANY && elem_bytes != sizeof(float)) fail("state_buffers_add: %s is not fp32", what);
    b->list[b->count++] = StateBuffer{what, data, elem_bytes, count, values};
}

// The staging buffer bounds the host memory a save or load of device buffers needs (none for host ones).
inline size_t state_staging_bytes(const StateBuffers& b, StateCopy copy) {
    if (copy == nullptr) return 0;
    size_t largest = 1;
    for (int i = 0; i < b.count; i++) largest = std::max(largest, b.list[i].elem_bytes * b.list[i].count);
    return std::min(largest, (size_t)64 << 20);
}

// Writes a state file atomically (llmc/utils.h's AtomicFile): the header, the run facts, then the buffers in
// order; the checksum of everything after the header goes into the header last.
inline void state_file_write(const std::string& path, const StateHeader& h, const StateBuffers& b) {
    AtomicFile f(path.c_str());
    int header[HEADER_SLOTS];
    state_header_fill(header, h);
    f.write(header, sizeof(int), HEADER_SLOTS);
    f.write(h.facts.data(), sizeof(RunFact), h.facts.size());
    uint32_t crc = crc32_update(0, h.facts.data(), h.facts.size() * sizeof(RunFact));
    std::vector<char> staging(state_staging_bytes(b, b.to_host));
    for (int i = 0; i < b.count; i++) {
        const char* src = (const char*)b.list[i].data;
        const size_t bytes = b.list[i].elem_bytes * b.list[i].count;
        if (b.to_host == nullptr) {
            f.write(src, 1, bytes);
            crc = crc32_update(crc, src, bytes);
            continue;
        }
        for (size_t done = 0; done < bytes; done += staging.size()) {
            const size_t n = std::min(staging.size(), bytes - done);
            b.to_host(staging.data(), src + done, n);
            f.write(staging.data(), 1, n);
            crc = crc32_update(crc, staging.data(), n);
        }
    }
    header[10] = (int)crc;
    fseek_check(f.fp, 10 * sizeof(int), SEEK_SET, f.tmp_path.c_str());
    f.write(&header[10], sizeof(int), 1);
    f.commit();
}

// The path of this rank's state file of `step`, after checking the checkpoint has as many ranks as the run.
inline std::string state_path_to_resume(const char* dir, int step, int rank, int num_ranks) {
    state_check_rank_count(dir, step, num_ranks);
    return checkpoint_path(dir, "state", step, rank);
}

// This rank's state file of `step`, opened, its header and run facts read and checked against what the run
// expects; crc runs over the bytes after the header as they are read, stored_crc is what the header says.
struct StateReader {
    File file;
    uint32_t stored_crc = 0, crc = 0;
    StateHeader header;
    StateReader(const char* dir, int step, const StateHeader& expected)
        : file(state_path_to_resume(dir, step, expected.rank, expected.num_ranks).c_str(), "rb"),
          header(state_header_read(&file, expected, &stored_crc)) {
        crc = crc32_update(0, header.facts.data(), header.facts.size() * sizeof(RunFact));
        for (RunFact& fact : header.facts) { // make the strings safe to print whatever the file held
            fact.name[sizeof(fact.name) - 1] = '\0';
            fact.value[sizeof(fact.value) - 1] = '\0';
        }
    }
};

// Values of buffer buf out of their range (its StateValues), in n bytes of it at bytes: fails naming the
// file, the buffer and the first bad element. first = the element index of bytes[0] in the buffer.
inline void state_check_values(const char* path, const StateBuffer& buf, const char* bytes, size_t n,
                               size_t first) {
    if (buf.values == STATE_ANY) return;
    for (size_t k = 0; k < n / sizeof(float); k++) {
        float x;
        memcpy(&x, bytes + k * sizeof(float), sizeof(float));
        const bool ok = std::isfinite(x) && (buf.values != STATE_NONNEGATIVE || x >= 0.0f);
        if (!ok) {
            fail("'%s' holds an invalid %s value: element %zu is %g (expected a finite number%s)", path,
                 buf.what, first + k, (double)x, buf.values == STATE_NONNEGATIVE ? " >= 0" : "");
        }
    }
}

// Reads the buffers after the header (StateReader) in order, checking their values, then requires the end
// of the file and the checksum the header declares.
inline void state_file_read_buffers(StateReader* r, const StateBuffers& b) {
    File* f = &r->file;
    const char* path = f->path.c_str();
    // a buffer read directly into host memory needs no staging; skipped and device ones go through it
    std::vector<char> staging(std::max(state_staging_bytes(b, b.to_buffer), (size_t)1 << 20));
    for (int i = 0; i < b.count; i++) {
        const StateBuffer& buf = b.list[i];
        char* dst = (char*)buf.data;
        const size_t bytes = buf.elem_bytes * buf.count;
        if (dst != nullptr && b.to_buffer == nullptr) {
            f->read(dst, 1, bytes, buf.what);
            r->crc = crc32_update(r->crc, dst, bytes);
            continue; // its values are checked after the checksum, so corruption is named as such
        }
        const size_t chunk = staging.size() - staging.size() % sizeof(float);
        for (size_t done = 0; done < bytes; done += chunk) {
            const size_t n = std::min(chunk, bytes - done);
            f->read(staging.data(), 1, n, buf.what);
            r->crc = crc32_update(r->crc, staging.data(), n);
            if (dst == nullptr) continue; // read past (its checksum still counts)
            state_check_values(path, buf, staging.data(), n, done / sizeof(float));
            b.to_buffer(dst + done, staging.data(), n);
        }
    }
    if (fgetc(f->fp) != EOF) fail("'%s' has bytes after the optimizer state: wrong file?", path);
    if (r->crc != r->stored_crc) {
        fail("'%s' is corrupted: the CRC-32 of its contents is %08x, its header says %08x", path, r->crc,
             r->stored_crc);
    }
    for (int i = 0; i < b.count; i++) {
        const StateBuffer& buf = b.list[i];
        if (buf.data != nullptr && b.to_buffer == nullptr)
            state_check_values(path, buf, (const char*)buf.data, buf.elem_bytes * buf.count, 0);
    }
}

// Declares the checkpoint of `step` complete (process 0, after every process's files are on disk).
inline void write_latest_checkpoint(const char* dir, int step) {
    std::string latest = std::string(dir) + "/checkpoint_latest";
    AtomicFile lf(latest.c_str());
    char line[32];
    int len = snprintf(line, sizeof(line), "%d\n", step);
    lf.write(line, 1, (size_t)len);
    lf.commit();
}

// The step of the latest complete checkpoint in dir, or -1 if there is none.
inline int find_latest_checkpoint(const char* dir) {
    std::string path = std::string(dir) + "/checkpoint_latest";
    if (!file_exists(path.c_str())) return -1;
    File f(path.c_str(), "r");
    int step = -1;
    if (fscanf(f.fp, "%d", &step) != 1 || step < 0) {
        fail("'%s' should hold the step of the latest checkpoint, a non-negative integer", path.c_str());
    }
    return step;
}
