// Tests of the skeleton both trainers share: the run plan (llmc/run_plan.h), the random initialisation
// (llmc/checkpoint.h) and the state file writer and reader (llmc/state_file.h). The two mains are compared
// end to end by tests/gpu/test_emu_trainer.sh; this checks the pieces against numbers worked out by hand.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

#include "llmc/run_plan.h"
#include "tests/common/test_common.h"

static std::string tmp_dir;

static GPT2Config d2_config() {
    GPT2Config c;
    if (!gpt2_config_from_descriptor("d2", &c)) fail("d2 is a descriptor");
    return c;
}

// A token shard of n tokens (0, 1, 2, ... mod 50257), in llm.c's format.
static void write_shard(const std::string& path, int n) {
    int32_t header[256] = {20240520, 1, n};
    std::vector<uint16_t> tokens(n);
    for (int i = 0; i < n; i++) tokens[i] = (uint16_t)(i % 50257);
    File f(path.c_str(), "wb");
    f.write(header, sizeof(int32_t), 256);
    f.write(tokens.data(), sizeof(uint16_t), tokens.size());
}

// tokens per step = B * T * ranks * accumulation steps; the flags that break it are named
static void test_batch_arithmetic() {
    const GPT2Config mc = d2_config();
    TrainConfig cfg;
    cfg.B = 4, cfg.T = 64, cfg.total_batch_tokens = 2048;
    RunPlan plan;
    run_plan_init(&plan, cfg, mc, 1, 2);
    CHECK(plan.grad_accum_steps == 4 && plan.tokens_per_step == 2048,
          "-d 2048 at B=4 T=64 over 2 ranks: 4 accumulation steps (got %d, %ld tokens)",
          plan.grad_accum_steps, plan.tokens_per_step);
    CHECK(plan.rank == 1 && plan.num_ranks == 2 && !plan.main_process, "rank 1 of 2 is not the main process");
    cfg.total_batch_tokens = -1;
    run_plan_init(&plan, cfg, mc, 0, 3);
    CHECK(plan.grad_accum_steps == 1 && plan.tokens_per_step == 4 * 64 * 3,
          "-d -1: one micro-batch per rank (got %d, %ld tokens)", plan.grad_accum_steps,
          plan.tokens_per_step);
    expect_failure("-d not a multiple of B*T*ranks",
                   [&] {
                       TrainConfig c = cfg;
                       c.total_batch_tokens = 1000;
                       RunPlan p;
                       run_plan_init(&p, c, mc, 0, 2);
                   },
                   {"flag -d", "1000", "4*64*2 = 512"});
    expect_failure("-t longer than the model's maxT",
                   [&] {
                       TrainConfig c = cfg;
                       c.T = 2048;
                       RunPlan p;
                       run_plan_init(&p, c, mc, 0, 1);
                   },
                   {"flag -t", "2048", "1024"});
    expect_failure("-y 1 without -o",
                   [&] {
                       TrainConfig c = cfg;
                       c.resume = true;
                       run_check_flags(c);
                   },
                   {"-y 1 needs -o"});
}

// The loaders get the accumulation count (a step reads the same tokens however it is split), a run shorter
// than the warmup warms up over its steps, -x -1 is one epoch, and the peak lr is scaled for the batch.
static void test_open_data() {
    const GPT2Config mc = d2_config();
    const std::string train_path = tmp_dir + "/train.bin", val_path = tmp_dir + "/val.bin";
    write_shard(train_path, 20 * 512 + 1); // 20 steps of 512 tokens
    write_shard(val_path, 3 * 256 + 1);
    TrainConfig cfg;
    cfg.train_pattern = train_path.c_str();
    cfg.val_pattern = val_path.c_str();
    cfg.B = 4, cfg.T = 64, cfg.total_batch_tokens = 512, cfg.max_steps = 3, cfg.warmup_steps = 10;
    cfg.learning_rate = 1e-3f, cfg.lr_scale_rule = "sqrt", cfg.lr_scale_ref_tokens = 128;
    RunPlan plan;
    run_plan_init(&plan, cfg, mc, 0, 1);
    DataLoader train, val;
    run_open_data(&plan, &cfg, mc, &train, &val);
    CHECK(train.micro_steps == 2, "the training loader knows the 2 accumulation steps (got %d)",
          train.micro_steps);
    CHECK(val.micro_steps == 1, "the validation loader reads one batch at a time (got %d)", val.micro_steps);
    CHECK(plan.train_steps == 3 && cfg.warmup_steps == 3,
          "-x 3 with -u 10: warmup cut to 3 (got %d steps, warmup %d)", plan.train_steps, cfg.warmup_steps);
    // sqrt rule: 1e-3 * sqrt(512 / 128) = 2e-3
    CHECK(std::fabs(plan.peak_lr - 2e-3f) < 1e-9f, "sqrt batch scaling: peak 2e-3 (got %.9g)",
          (double)plan.peak_lr);
    CHECK(std::fabs(lr_at_step(&plan.sched, 0) - 2e-3f / 3) < 1e-9f,
          "warmup step 0 of 3: peak / 3 (got %.9g)", (double)lr_at_step(&plan.sched, 0));
    // one epoch: 20 steps of 512 tokens
    TrainConfig epoch = cfg;
    epoch.max_steps = -1;
    DataLoader train2, val2;
    run_open_data(&plan, &epoch, mc, &train2, &val2);
    CHECK(plan.train_steps == 20, "-x -1: one epoch of 20 steps (got %d)", plan.train_steps);
    CHECK(epoch.warmup_steps == 3, "warmup 3 <= 20 steps: kept (got %d)", epoch.warmup_steps);
}

// checkpoints every -n and at the end, never at the step just resumed from; validation every -v and at the
// end; samples every -s, not at step 0, at the end, on the main process only
static void test_cadence() {
    TrainConfig cfg;
    cfg.output_dir = "somewhere";
    cfg.checkpoint_every = 3, cfg.val_every = 4, cfg.sample_every = 5;
    RunPlan plan;
    plan.train_steps = 10;
    std::string ckpt, val, sample;
    for (int step = 3; step <= 10; step++) {
        if (run_checkpoint_due(&plan, cfg, step, 3)) ckpt += std::to_string(step) + " ";
        if (run_val_due(&plan, cfg, step)) val += std::to_string(step) + " ";
        if (run_sample_due(&plan, cfg, step)) sample += std::to_string(step) + " ";
    }
    CHECK(ckpt == "6 9 10 ", "resumed at 3, -n 3, 10 steps: checkpoints at 6 9 10 (got %s)", ckpt.c_str());
    CHECK(val == "4 8 10 ", "-v 4: validation at 4 8 10 (got %s)", val.c_str());
    CHECK(sample == "5 10 ", "-s 5: samples at 5 10 (got %s)", sample.c_str());
    CHECK(run_val_due(&plan, cfg, 0) && !run_sample_due(&plan, cfg, 0), "step 0: validation, no sample");
    plan.main_process = false;
    CHECK(!run_sample_due(&plan, cfg, 10), "only the main process samples");
    cfg.output_dir = nullptr;
    CHECK(!run_checkpoint_due(&plan, cfg, 10, 0), "no -o: no checkpoint");
    cfg.output_dir = "somewhere", cfg.checkpoint_every = 0;
    CHECK(run_checkpoint_due(&plan, cfg, 10, 0) && !run_checkpoint_due(&plan, cfg, 9, 0),
          "-n 0: a checkpoint at the end only");
}

// the fresh model both trainers start from: exact values where the rule fixes them, the standard
// deviations within 5 standard errors of the sample std (about 5 / sqrt(2n) relative)
static void test_init_random() {
    const GPT2Config c = d2_config();
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(c, sizes);
    const size_t P = gpt2_num_parameters(c);
    std::vector<float> a(P, -7.0f), b(P, -7.0f), other(P);
    gpt2_init_random(a.data(), c, 1337);
    gpt2_init_random(b.data(), c, 1337);
    gpt2_init_random(other.data(), c, 1338);
    CHECK(a == b, "the same seed gives the same model");
    CHECK(a != other, "another seed gives another model");
    size_t offset = 0;
    const double residual_std = 0.02 / std::sqrt(2.0 * c.num_layers);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        const float* p = a.data() + offset;
        size_t n = sizes[i];
        if (i == TENSOR_WTE) {
            const size_t real = (size_t)c.vocab_size * c.channels;
            bool padding_zero = true;
            for (size_t j = real; j < n; j++) padding_zero = padding_zero && p[j] == 0.0f;
            CHECK(padding_zero, "wte: the padded vocabulary rows are 0");
            n = real;
        }
        bool all_one = true, all_zero = true;
        double sum2 = 0.0;
        for (size_t j = 0; j < n; j++) {
            all_one = all_one && p[j] == 1.0f;
            all_zero = all_zero && p[j] == 0.0f;
            sum2 += (double)p[j] * p[j];
        }
        if (i == TENSOR_LN1W || i == TENSOR_LN2W || i == TENSOR_LNFW) {
            CHECK(all_one, "%s: LayerNorm weights are 1", PARAMETER_NAMES[i]);
        } else if (!parameter_is_matrix(i)) {
            CHECK(all_zero, "%s: biases are 0", PARAMETER_NAMES[i]);
        } else {
            const double expect = (i == TENSOR_ATTPROJW || i == TENSOR_FCPROJW) ? residual_std : 0.02;
            const double std = std::sqrt(sum2 / n), rel = std::fabs(std / expect - 1.0);
            CHECK_LE(rel, 5.0 / std::sqrt(2.0 * n), "%s: std %.5f vs %.5f, relative error",
                     PARAMETER_NAMES[i], std, expect);
        }
        offset += sizes[i];
    }
    CHECK(parameter_is_per_layer(TENSOR_LN1W) && parameter_is_per_layer(TENSOR_FCPROJB) &&
              !parameter_is_per_layer(TENSOR_WPE) && !parameter_is_per_layer(TENSOR_LNFW),
          "per-layer tensors: ln1w .. fcprojb");
}

// stands in for cudaMemcpy in the staged state-file path
static int test_copies = 0;
static void* test_copy(void* dst, const void* src, size_t bytes) {
    test_copies++;
    return memcpy(dst, src, bytes);
}
static std::vector<char> read_file_bytes(const std::string& path) {
    std::vector<char> bytes(file_size_check(path.c_str()));
    File f(path.c_str(), "rb");
    f.read(bytes.data(), 1, bytes.size(), "the file");
    return bytes;
}

static StateHeader test_header() {
    StateHeader h;
    h.num_ranks = 2, h.rank = 1, h.zero_stage = 1, h.use_8bit = false, h.step = 7, h.quant_block = 2048;
    h.shard_size = 5, h.shard_offset = 5, h.num_parameters = 9;
    h.loader = DataLoaderState{3, 4, 5};
    h.sample_rng.state = 0x1234567890abcdefULL;
    return h;
}

// the state file: header and buffers round-trip; a skipped buffer; truncated and overlong files and a
// different rank count are refused with the file named
static void test_state_file() {
    const std::string dir = tmp_dir;
    const StateHeader h = test_header();
    std::vector<float> m = {1, 2, 3, 4, 5}, v = {6, 7, 8, 9, 10};
    std::vector<uint8_t> codes = {11, 12, 13};
    StateBuffers out;
    state_buffers_add(&out, "AdamW m", m.data(), sizeof(float), m.size());
    state_buffers_add(&out, "codes", codes.data(), 1, codes.size());
    state_buffers_add(&out, "AdamW v", v.data(), sizeof(float), v.size());
    // rank 0's file is where the rank count is read first
    StateHeader h0 = h;
    h0.rank = 0;
    state_file_write(checkpoint_path(dir.c_str(), "state", 7, 0), h0, out);
    const std::string path = checkpoint_path(dir.c_str(), "state", 7, 1);
    state_file_write(path, h, out);
    CHECK(file_size_check(path.c_str()) == 1024 + 20 + 3 + 20,
          "1024-byte header + 43 bytes of buffers (got %zu)", file_size_check(path.c_str()));
    CHECK(!file_exists((path + ".tmp").c_str()), "no temporary left after the commit");

    std::vector<float> m2(5), v2(5);
    std::vector<uint8_t> codes2(3);
    {
        StateReader r(dir.c_str(), 7, h);
        StateBuffers in;
        state_buffers_add(&in, "AdamW m", m2.data(), sizeof(float), m2.size());
        state_buffers_add(&in, "codes", codes2.data(), 1, codes2.size());
        state_buffers_add(&in, "AdamW v", v2.data(), sizeof(float), v2.size());
        state_file_read_buffers(&r, in);
        CHECK(m2 == m && v2 == v && codes2 == codes, "the buffers read back as written");
        CHECK(r.header.loader.epoch == 3 && r.header.loader.shard_pos == 4 &&
                  r.header.loader.sample_pos == 5 && r.header.sample_rng.state == 0x1234567890abcdefULL &&
                  r.header.shard_offset == 5,
              "the header's data loader position, sampling state and shard offset read back");
    }
    {
        // the staged path device buffers take (a copy function instead of direct file I/O): the same bytes
        const std::string staged = tmp_dir + "/staged.bin";
        StateBuffers via = out;
        via.to_host = via.to_buffer = test_copy;
        state_file_write(staged, h, via);
        CHECK(read_file_bytes(staged) == read_file_bytes(path),
              "a staged write: the same file as a direct one");
        StateReader r(dir.c_str(), 7, h);
        std::fill(m2.begin(), m2.end(), 0.0f);
        StateBuffers in;
        state_buffers_add(&in, "AdamW m", m2.data(), sizeof(float), m2.size());
        state_buffers_add(&in, "codes", codes2.data(), 1, codes2.size());
        state_buffers_add(&in, "AdamW v", v2.data(), sizeof(float), v2.size());
        in.to_host = in.to_buffer = test_copy;
        state_file_read_buffers(&r, in);
        CHECK(m2 == m && test_copies > 0, "a staged read: the buffers read back, through the copy function");
    }
    {
        StateReader r(dir.c_str(), 7, h); // the middle buffer skipped (data = nullptr)
        std::fill(v2.begin(), v2.end(), 0.0f);
        StateBuffers in;
        state_buffers_add(&in, "AdamW m", m2.data(), sizeof(float), m2.size());
        state_buffers_add(&in, "codes", nullptr, 1, codes2.size());
        state_buffers_add(&in, "AdamW v", v2.data(), sizeof(float), v2.size());
        state_file_read_buffers(&r, in);
        CHECK(v2 == v, "a skipped buffer: the next one still reads right");
    }
    expect_failure("a reader that expects one buffer more",
                   [&] {
                       StateReader r(dir.c_str(), 7, h);
                       std::vector<float> extra(2);
                       StateBuffers in = out;
                       state_buffers_add(&in, "fp32 master weights", extra.data(), sizeof(float),
                                         extra.size());
                       state_file_read_buffers(&r, in);
                   },
                   {path, "fp32 master weights"});
    expect_failure("a reader that expects one buffer less",
                   [&] {
                       StateReader r(dir.c_str(), 7, h);
                       StateBuffers fewer = out;
                       fewer.count--;
                       state_file_read_buffers(&r, fewer);
                   },
                   {path, "bytes after the optimizer state"});
    expect_failure("a resume with 4 ranks of a 2-rank checkpoint",
                   [&] {
                       StateHeader e = h;
                       e.num_ranks = 4;
                       StateReader r(dir.c_str(), 7, e);
                   },
                   {"state_00000007_00000.bin", "2 processes but this run has 4"});
    expect_failure("a resume with 8-bit AdamW of an fp32 state",
                   [&] {
                       StateHeader e = h;
                       e.use_8bit = true;
                       StateReader r(dir.c_str(), 7, e);
                   },
                   {path, "-qo 0", "-qo 1"});
}

int main() {
    char tmpl[] = "/tmp/test_run_plan_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) fail("mkdtemp failed");
    tmp_dir = tmpl;
    test_batch_arithmetic();
    test_open_data();
    test_cadence();
    test_init_random();
    test_state_file();
    (void)!system(("rm -rf '" + tmp_dir + "'").c_str());
    return test_summary("test_run_plan");
}
