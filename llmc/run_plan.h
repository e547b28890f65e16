// run_plan.h: the program both trainers are. train_gpt2.cpp (CPU) and train_gpt2.cu (GPU) are its two
// backends: each builds its model and optimizer, then calls what is here for everything else, so the two
// cannot drift apart in what a run does:
//   - the run plan: what a run derives from its flags and its model (accumulation steps, step count,
//     tokens per step, the peak learning rate with batch scaling, the clamped warmup, the schedule), the
//     flag checks, the data loaders (opened with the accumulation count), the start-up printout;
//   - resume: the model file and the state file of the latest checkpoint;
//   - the training loop, with its checkpoint / validation / sampling cadence and its step line.
//
// The loop calls these functions of the backend, plain overloads on its Trainer struct (which holds the
// model, the optimizer, the process group and the token decoder; no virtual dispatch). The loop reads two
// of its members: model.config and decoder.
//   double trainer_forward_backward(Trainer*, const int* inputs, const int* targets, int num_micro)
//         forward and backward of the step's num_micro micro-batches (micro-batch m's B*T tokens at
//         m*B*T), the gradients summed (each micro-batch's mean loss weighs 1/num_micro); returns the sum of
//         their mean losses (on every rank, also under pipeline parallelism)
//   float trainer_update(Trainer*, float lr, int t)   optimizer step t (1-based); returns the gradient norm
//         (a NaN or inf norm: the update is skipped, the parameters unchanged; see RUN_MAX_SKIPPED_STEPS)
//   float trainer_mean_over_ranks(Trainer*, float x)
//   float trainer_eval_loss(Trainer*, const int* inputs, const int* targets)   forward only; mean loss
//   const float* trainer_next_token_logits(Trainer*, const int* tokens, int t)
//         forward of tokens[0..t) (B = 1); the fp32 logits (Vp, host memory) of the token after them
//   void  trainer_write_model(Trainer*, const std::string& path)          (called on every rank; rank 0
//   writes) StateHeader trainer_state_header(const Trainer*, int step)   what this rank's state file says
//   StateBuffers trainer_state_buffers(Trainer*, const StateHeader& h, const std::string& path)
//         its optimizer buffers, in order, for the state file at path (named in its error messages)
//   void  trainer_barrier(Trainer*)
//   void  trainer_allgather_bytes(Trainer*, const void* mine, void* all, size_t bytes)
//         all (num_ranks * bytes) <- every rank's bytes, rank r's at r * bytes
//   [[noreturn]] void trainer_exit(Trainer*, int status)   finalize the process group and exit
//   void  trainer_print_step_end(Trainer*, double seconds, bool first_step)   the end of the step line
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "llmc/checkpoint.h"
#include "llmc/dataloader.h"
#include "llmc/crc32.h"
#include "llmc/logger.h"
#include "llmc/pipeline.h"
#include "llmc/rand.h"
#include "llmc/run_dir.h"
#include "llmc/sampler.h"
#include "llmc/schedulers.h"
#include "llmc/state_file.h"
#include "llmc/token_decoder.h"
#include "llmc/train_config.h"
#include "llmc/utils.h"
#include "llmc/watchdog.h"

// What a run derives from its flags and its model, the same way on the CPU and the GPU.
struct RunPlan {
    int rank = 0, num_ranks = 1;
    bool main_process = true;        // rank 0: prints, and writes the log, the model files, checkpoint_latest
    bool collective_forward = false; // a forward needs every rank (ZeRO-3 gathers the parameters, a
                                     // pipeline passes it stage to stage): all sample
    int stages = 1;                  // pipeline stages (-pp); rank = replica * stages + stage
    int replica = 0, num_replicas = 1; // data-parallel copy of the model: num_ranks / stages of them,
                                       // each with its own slice of the batch
    int B = 0, T = 0;                  // the micro-batch of each replica
    int grad_accum_steps = 1;          // micro-batches per optimizer step on each replica
    long tokens_per_step = 0;          // B * T * num_replicas * grad_accum_steps (-d)
    int train_steps = 0;               // optimizer steps of the run: -x, or one epoch
    float peak_lr = 0.0f;              // -l, scaled for the batch by -sr / -sb
    LRScheduler sched;                 // -k, with the (clamped) warmup -u
    int resume_step = -1;              // the checkpoint this run resumed from; -1: a fresh run
    std::vector<RunFact> facts;        // what every rank must agree on, and a resume compares (run_facts)
};

// Where the run is: saved in every checkpoint, restored on resume.
struct TrainState {
    int step = 0; // optimizer steps done
    DataLoaderState loader{0, 0, 0};
    Rng sample_rng{0};
};

// Checks of the flags that need no model; before anything is loaded.
inline void run_check_flags(const TrainConfig& cfg) {
    if (cfg.resume && cfg.output_dir == nullptr) fail("flag -y 1 needs -o <dir> to find the checkpoint in");
    if (cfg.resume && cfg.overwrite)
        fail("flags -y 1 and -ow 1 contradict each other: resume, or start over");
    if (cfg.overwrite && cfg.output_dir == nullptr) fail("flag -ow 1 needs -o <dir>");
    if (cfg.lora.nf4 && cfg.lora.rank == 0) fail("flag -lq 1 (QLoRA) needs a LoRA rank: -lo <r>, r >= 1");
    PipeSchedule schedule;
    if (!pipeline_schedule_from_flag(cfg.pipeline_schedule, &schedule))
        fail("flag -pk: expected gpipe or 1f1b, got '%s'", cfg.pipeline_schedule);
    if (cfg.pipeline_stages > 1 && cfg.zero_stage > 1) {
        fail("flags -pp %d and -z %d: a pipeline shards its data-parallel groups with ZeRO-1 at most (the "
             "model is already cut by stages); use -z 0 or -z 1",
             cfg.pipeline_stages, cfg.zero_stage);
    }
    if (cfg.pipeline_stages > 1 && cfg.lora.rank > 0)
        fail("flags -pp %d and -lo %d: LoRA does not run in a pipeline; use -pp 1", cfg.pipeline_stages,
             cfg.lora.rank);
    if (cfg.lora.rank > 0 && cfg.zero_stage > 1) {
        fail("flags -z %d and -lo %d: ZeRO-2/3 shard the model's gradients and parameters, but under LoRA "
             "only "
             "the adapters train (a few MB); use -z 0 or -z 1",
             cfg.zero_stage, cfg.lora.rank);
    }
    // B*T at most 2^24 tokens (GPT-2 trains with 16 x 1024 = 2^14) keeps every activation size below 2^64
    if ((long)cfg.B * cfg.T > (1L << 24)) {
        fail("flags -b and -t: a micro-batch of %d x %d = %ld tokens is more than the %ld this program "
             "supports; use gradient accumulation (-d) for a larger batch",
             cfg.B, cfg.T, (long)cfg.B * cfg.T, 1L << 24);
    }
}

// Before this rank reads or writes anything in -o: its lock on the directory for the whole run, and the
// refusal of a fresh run into a directory that holds one (llmc/run_dir.h). Also starts the watchdog
// (llmc/watchdog.h), which needs the rank.
inline void run_claim_output_dir(const TrainConfig& cfg, int rank, int num_ranks) {
    watchdog_start(rank, num_ranks);
    if (cfg.output_dir != nullptr) run_dir_claim(cfg.output_dir, rank, num_ranks, cfg.resume, cfg.overwrite);
}

// -e names a descriptor (d12: *config set, train from scratch; returns true) or a model file to load
// (returns false).
inline bool run_model_is_descriptor(const TrainConfig& cfg, GPT2Config* config) {
    if (gpt2_config_from_descriptor(cfg.model, config)) return true;
    if (!file_exists(cfg.model))
        fail("flag -e: '%s' is neither a model file nor a descriptor like d12", cfg.model);
    return false;
}

// The batch arithmetic: tokens per step = B * T * ranks * accumulation steps.
inline void run_plan_init(RunPlan* plan, const TrainConfig& cfg, const GPT2Config& mc, int rank,
                          int num_ranks) {
    plan->rank = rank;
    plan->num_ranks = num_ranks;
    plan->main_process = rank == 0;
    plan->collective_forward = cfg.zero_stage == 3 || cfg.pipeline_stages > 1;
    plan->stages = cfg.pipeline_stages;
    if (num_ranks % plan->stages != 0) {
        fail("flag -pp %d: %d processes are not a whole number of pipelines of %d stages", plan->stages,
             num_ranks, plan->stages);
    }
    if (plan->stages > mc.num_layers)
        fail("flag -pp %d: the model has %d layers, fewer than the stages (each needs one)", plan->stages,
             mc.num_layers);
    plan->replica = rank / plan->stages;
    plan->num_replicas = num_ranks / plan->stages;
    plan->B = cfg.B;
    plan->T = cfg.T;
    if (cfg.T > mc.max_seq_len) {
        fail("flag -t: sequence length %d exceeds the model's maximum %d (maxT in its header)", cfg.T,
             mc.max_seq_len);
    }
    const long tokens_per_micro = (long)cfg.B * cfg.T * plan->num_replicas;
    plan->tokens_per_step = cfg.total_batch_tokens < 0 ? tokens_per_micro : cfg.total_batch_tokens;
    if (plan->tokens_per_step % tokens_per_micro != 0) {
        fail("flag -d: total batch %ld tokens is not a multiple of B*T*replicas = %d*%d*%d = %ld",
             plan->tokens_per_step, cfg.B, cfg.T, plan->num_replicas, tokens_per_micro);
    }
    const long accum = plan->tokens_per_step / tokens_per_micro;
    if (accum > (1L << 20)) {
        fail("flag -d: %ld tokens per step is %ld micro-batches of B*T*replicas = %ld tokens; the most "
             "supported is %ld",
             plan->tokens_per_step, accum, tokens_per_micro, 1L << 20);
    }
    plan->grad_accum_steps = (int)accum;
}

// The data loaders (the training one knows the accumulation count, so a step's data does not depend on
// how the step is split into micro-batches), the step count, and the learning rate schedule. A run shorter
// than the warmup warms up over all its steps (cfg->warmup_steps is cut, with a note).
inline void run_open_data(RunPlan* plan, TrainConfig* cfg, const GPT2Config& mc, DataLoader* train,
                          DataLoader* val) {
    // (the stages of a pipeline read the same batches: the first uses the inputs, the last the targets)
    dataloader_init(train, cfg->train_pattern, plan->B, plan->T, plan->replica, plan->num_replicas,
                    !cfg->overfit_single_batch, cfg->seed, mc.vocab_size, plan->grad_accum_steps);
    dataloader_init(val, cfg->val_pattern, plan->B, plan->T, plan->replica, plan->num_replicas, false,
                    cfg->seed, mc.vocab_size);
    plan->train_steps = cfg->max_steps;
    if (plan->train_steps < 0) plan->train_steps = (int)dataloader_num_batches(train); // a batch = a step
    if (plan->train_steps < 1) {
        fail("the training data holds less than one optimizer step of %ld tokens", plan->tokens_per_step);
    }
    plan->peak_lr = scale_lr_for_batch(cfg->learning_rate, (size_t)cfg->lr_scale_ref_tokens,
                                       (size_t)plan->tokens_per_step, cfg->lr_scale_rule);
    if (!(plan->peak_lr <= 10.0f)) {
        fail(
            "flags -l -sr -sb: the peak learning rate %g (-l %g scaled by -sr %s from -sb %ld to %ld tokens) "
            "is out of range [0, 10]",
            (double)plan->peak_lr, (double)cfg->learning_rate, cfg->lr_scale_rule, cfg->lr_scale_ref_tokens,
            plan->tokens_per_step);
    }
    train_config_fit_warmup(cfg, plan->train_steps, plan->main_process);
    // a sample is one sequence: <|endoftext|> and at most T-1 tokens after it
    if (cfg->sample_every > 0 && cfg->gen_tokens > plan->T - 1) {
        if (plan->main_process)
            printf("note: samples cut from -g %d to %d tokens (a sample is one sequence of -t %d, after "
                   "<|endoftext|>)\n",
                   cfg->gen_tokens, plan->T - 1, plan->T);
        cfg->gen_tokens = plan->T - 1;
    }
    lr_scheduler_init(&plan->sched, cfg->schedule, plan->peak_lr, cfg->warmup_steps, plan->train_steps,
                      cfg->final_lr_frac, cfg->cooldown_frac);
}

// The token decoder for the samples: llm.c's gpt2_tokenizer.bin when it exists and the model has GPT-2's
// vocabulary; otherwise samples are printed as token ids.
inline void run_load_decoder(const TrainConfig& cfg, const GPT2Config& mc, TokenDecoder* decoder) {
    if (file_exists(cfg.tokenizer_path) && mc.vocab_size == 50257)
        token_decoder_load(decoder, cfg.tokenizer_path);
}

// The state of a fresh run: step 0, the sampling generator seeded from -sd.
inline TrainState run_initial_state(const TrainConfig& cfg) {
    TrainState st;
    rng_init(&st.sample_rng, cfg.seed ^ 0x5eed5a3b1eULL);
    return st;
}

// With -y 1: finds the latest checkpoint in -o, checks its model file has this run's shape and reads its
// parameters into params (fp32, file order, num_params). Returns whether the run resumes
// (plan->resume_step is then the checkpoint's step; run_load_state reads the rest after the optimizer is
// allocated). With LoRA (params null) the model file is not read: it is the merged export, while the run
// goes on from its frozen base (-e, checked by the run facts) and the adapters in the state file.
inline bool run_resume_model(RunPlan* plan, const TrainConfig& cfg, const GPT2Config& mc, float* params,
                             size_t num_params) {
    if (!cfg.resume) return false;
    plan->resume_step = find_latest_checkpoint(cfg.output_dir);
    if (plan->resume_step < 0)
        fail("flag -y 1: no checkpoint in '%s' (no checkpoint_latest file)", cfg.output_dir);
    if (plan->resume_step > plan->train_steps) {
        fail("flag -y 1: the latest checkpoint in '%s' is of step %d, beyond this run's %d steps (-x): give "
             "-x %d or more",
             cfg.output_dir, plan->resume_step, plan->train_steps, plan->resume_step);
    }
    std::string model_path = checkpoint_path(cfg.output_dir, "model", plan->resume_step, -1);
    GPT2Config saved;
    int version;
    checkpoint_read_header(model_path.c_str(), &saved, &version);
    if (memcmp(&saved, &mc, sizeof(saved)) != 0) {
        fail("'%s' holds a different model shape than -e %s", model_path.c_str(), cfg.model);
    }
    if (params != nullptr) checkpoint_read_parameters(model_path.c_str(), version, params, num_params);
    return true;
}

// The output directory and its main.log. On resume, log lines from beyond the checkpoint are dropped
// (train lines of steps >= resume_step, val lines at it): they are about to be written again.
inline void run_open_log(const RunPlan* plan, const TrainConfig& cfg, Logger* logger) {
    if (cfg.output_dir && plan->main_process) make_dir_check(cfg.output_dir);
    logger_init(logger, cfg.output_dir, plan->rank, plan->resume_step >= 0 ? plan->resume_step - 1 : -1);
}

// The start-up lines both trainers print (rank 0); each backend adds its own after them (threads, device,
// memory).
inline void run_print_plan(const RunPlan* plan, const TrainConfig& cfg, const GPT2Config& mc,
                           size_t num_parameters, const DataLoader* train, const DataLoader* val) {
    printf("model: L=%d C=%d NH=%d V=%d Vp=%d maxT=%d, %zu parameters\n", mc.num_layers, mc.channels,
           mc.num_heads, mc.vocab_size, mc.padded_vocab_size, mc.max_seq_len, num_parameters);
    if (plan->stages > 1) {
        printf("batch: B=%d T=%d x %d replicas (of %d pipeline stages) x %d micro-batches = %ld tokens per "
               "step\n",
               plan->B, plan->T, plan->num_replicas, plan->stages, plan->grad_accum_steps,
               plan->tokens_per_step);
    } else {
        printf("batch: B=%d T=%d x %d processes x %d accumulation steps = %ld tokens per step\n", plan->B,
               plan->T, plan->num_ranks, plan->grad_accum_steps, plan->tokens_per_step);
    }
    printf("train: %zu tokens in %zu shards, %d steps; val: %zu tokens\n", train->num_tokens_total,
           train->files.size(), plan->train_steps, val->num_tokens_total);
    printf("lr: %s schedule, peak %.3e (base %.3e, batch scaling %s), warmup %d, final fraction %g\n",
           cfg.schedule, (double)plan->peak_lr, (double)cfg.learning_rate, cfg.lr_scale_rule,
           cfg.warmup_steps, (double)cfg.final_lr_frac);
    printf("optimizer: %s AdamW, ZeRO stage %d over %d processes, weight decay %g, clip %g\n",
           cfg.use_8bit ? "8-bit" : "fp32", cfg.zero_stage, plan->num_replicas,
           (double)cfg.adamw.weight_decay, (double)cfg.adamw.grad_clip);
    if (cfg.lora.rank > 0) {
        printf(
            "LoRA: rank %d, alpha %g (scale %g) on %s: %zu adapter parameters train; the base is frozen%s\n",
            cfg.lora.rank, (double)cfg.lora.alpha, (double)lora_scale(cfg.lora),
            lora_targets_text(cfg.lora.targets).c_str(), lora_layout(mc, cfg.lora).total,
            cfg.lora.nf4 ? ", its block matrices in NF4 (QLoRA)" : "");
    }
}

// ----------------------------------------------------------------------------------------------------
// what every rank must agree on: the run facts (llmc/state_file.h's RunFact)

inline void run_fact_add(std::vector<RunFact>* facts, const char* name, RunFactRule rule, const char* fmt,
                         ...) __attribute__((format(printf, 4, 5)));
inline void run_fact_add(std::vector<RunFact>* facts, const char* name, RunFactRule rule, const char* fmt,
                         ...) {
    RunFact f;
    memset(&f, 0, sizeof(f));
    snprintf(f.name, sizeof(f.name), "%s", name);
    f.rule = rule;
    va_list args;
    va_start(args, fmt);
    vsnprintf(f.value, sizeof(f.value), fmt, args);
    va_end(args);
    facts->push_back(f);
}

// A float as the shortest of %g / %.9g that reads back as the same float: "0.001", not "0.00100000005".
struct FloatText {
    char text[24];
};
inline FloatText float_text(float x) {
    FloatText t;
    snprintf(t.text, sizeof(t.text), "%g", (double)x);
    if (strtof(t.text, nullptr) != x) snprintf(t.text, sizeof(t.text), "%.9g", (double)x);
    return t;
}

// What identifies a set of token shards without reading all of it: the total tokens, the shard count and
// the CRC-32 of the first 64 KiB of every shard (its header and first 32K tokens), so a different corpus of
// the same size is told apart, at the cost of a 64 KiB read per shard. The checksum first: a fact's value
// is cut at 39 characters.
inline std::string data_fingerprint(const DataLoader* dl) {
    uint32_t crc = 0;
    std::vector<char> head(64 * 1024);
    for (const std::string& path : dl->files) {
        File f(path.c_str(), "rb");
        const size_t n = fread(head.data(), 1, head.size(), f.fp);
        crc = crc32_update(crc, head.data(), n);
    }
    char text[64];
    snprintf(text, sizeof(text), "%08x: %zu tokens in %zu shards", crc, dl->num_tokens_total,
             dl->files.size());
    return text;
}

// Everything that must be the same on every rank, as text, in the order a disagreement is reported (the
// flags first, so ranks started with another -sd are told that, not that their parameters differ). Each
// has its rule for a resume. params_crc: the CRC-32 of the fp32 parameters the run starts from.
inline std::vector<RunFact> run_facts(const RunPlan* plan, const TrainConfig& cfg, const GPT2Config& mc,
                                      const DataLoader* train, const DataLoader* val, uint32_t params_crc) {
    std::vector<RunFact> f;
    const RunFactRule R = FACT_RESUME_REFUSE, W = FACT_RESUME_WARN, A = FACT_RESUME_ANY, S = FACT_THIS_START;
    run_fact_add(&f, "processes", R, "%d", plan->num_ranks);
    run_fact_add(&f, "-e (model shape)", R, "L=%d C=%d NH=%d V=%d Vp=%d maxT=%d", mc.num_layers, mc.channels,
                 mc.num_heads, mc.vocab_size, mc.padded_vocab_size, mc.max_seq_len);
    run_fact_add(&f, "-sd", R, "%llu", (unsigned long long)cfg.seed);
    run_fact_add(&f, "-b", R, "%d", cfg.B);
    run_fact_add(&f, "-t", R, "%d", cfg.T);
    run_fact_add(&f, "-d", R, "%ld", plan->tokens_per_step);
    run_fact_add(&f, "-a", R, "%d", (int)cfg.overfit_single_batch);
    run_fact_add(&f, "-z", R, "%d", cfg.zero_stage);
    run_fact_add(&f, "-pp", R, "%d", cfg.pipeline_stages);
    run_fact_add(&f, "-pk", A, "%s", cfg.pipeline_schedule); // (the same gradients either way)
    run_fact_add(&f, "-qo", R, "%d", (int)cfg.use_8bit);
    run_fact_add(&f, "-qb", R, "%d", cfg.use_8bit ? cfg.quant_block : 0); // only 8-bit AdamW has blocks
    run_fact_add(&f, "-lo", R, "%d", cfg.lora.rank);
    run_fact_add(&f, "-la", R, "%s", float_text(cfg.lora.alpha).text);
    run_fact_add(&f, "-lt", R, "%s", lora_targets_text(cfg.lora.targets).c_str());
    run_fact_add(&f, "-lq", R, "%d", (int)cfg.lora.nf4);
    // a LoRA run goes on from its base on resume (the checkpoint's model file is the merged export)
    if (cfg.lora.rank > 0) run_fact_add(&f, "-e (LoRA base)", R, "CRC-32 %08x", params_crc);
    run_fact_add(&f, "-w", A, "%d", (int)cfg.keep_master);
    run_fact_add(&f, "-r", A, "%d", cfg.recompute);
    run_fact_add(&f, "-ge", A, "%d", (int)cfg.fuse_dgelu);
    run_fact_add(&f, "-i (train data)", R, "%s", data_fingerprint(train).c_str());
    run_fact_add(&f, "-j (val data)", W, "%s", data_fingerprint(val).c_str());
    run_fact_add(&f, "-x", W, "%d", plan->train_steps);
    run_fact_add(&f, "-l", W, "%s", float_text(cfg.learning_rate).text);
    run_fact_add(&f, "-u", W, "%d", cfg.warmup_steps);
    run_fact_add(&f, "-q", W, "%s", float_text(cfg.final_lr_frac).text);
    run_fact_add(&f, "-k", W, "%s", cfg.schedule);
    run_fact_add(&f, "-cf", W, "%s", float_text(cfg.cooldown_frac).text);
    run_fact_add(&f, "-sr", W, "%s", cfg.lr_scale_rule);
    run_fact_add(&f, "-sb", W, "%ld", cfg.lr_scale_ref_tokens);
    run_fact_add(&f, "-c", W, "%s", float_text(cfg.adamw.weight_decay).text);
    run_fact_add(&f, "-gc", W, "%s", float_text(cfg.adamw.grad_clip).text);
    run_fact_add(&f, "-o", A, "%s", cfg.output_dir ? "given" : "none");
    run_fact_add(&f, "-y", S, "%d", (int)cfg.resume);
    run_fact_add(&f, "-ow", S, "%d", (int)cfg.overwrite);
    run_fact_add(&f, "-n", A, "%d", cfg.checkpoint_every);
    run_fact_add(&f, "-v", A, "%d", cfg.val_every);
    run_fact_add(&f, "-m", A, "%d", cfg.val_max_steps);
    run_fact_add(&f, "-s", A, "%d", cfg.sample_every);
    run_fact_add(&f, "-g", A, "%d", cfg.gen_tokens);
    run_fact_add(&f, "-st", A, "%s", float_text(cfg.temperature).text);
    run_fact_add(&f, "resumed from step", S, "%d", plan->resume_step);
    run_fact_add(&f, "model parameters", S, "CRC-32 %08x", params_crc);
    return f;
}

// The checksum of the fp32 parameters a run starts from, for the run facts: only when a peer will compare it
// (it costs a pass over them, ~0.3 s for d12) or a LoRA resume will (the frozen base must be the same).
inline uint32_t run_params_crc(int num_ranks, const TrainConfig& cfg, const float* params,
                               size_t num_params) {
    if (num_ranks == 1 && cfg.lora.rank == 0) return 0;
    return crc32_update(0, params, num_params * sizeof(float));
}

// The run facts of this run (plan->facts), then the start-up check that every rank has the same ones:
// ranks started with other flags or models would otherwise hang in collectives of other sizes, overflow a
// buffer, or train silently apart. On a disagreement every rank stops, and rank 0 prints one message naming
// the first fact that differs and the first rank that differs on it. params_crc: run_params_crc of the
// parameters the run starts from (after a resume, the checkpoint's; with LoRA, the frozen base).
template <class Trainer>
void run_check_agreement(Trainer* tr, RunPlan* plan, const TrainConfig& cfg, const GPT2Config& mc,
                         const DataLoader* train, const DataLoader* val, uint32_t params_crc) {
    plan->facts = run_facts(plan, cfg, mc, train, val, params_crc);
    if (plan->num_ranks == 1) return;
    watchdog_progress("the start-up check of the flags", 0);
    const size_t K = plan->facts.size();
    std::vector<RunFact> all(K * plan->num_ranks);
    trainer_allgather_bytes(tr, plan->facts.data(), all.data(), K * sizeof(RunFact));
    for (size_t i = 0; i < K; i++) {
        for (int r = 1; r < plan->num_ranks; r++) {
            const RunFact &a = all[i], &b = all[(size_t)r * K + i];
            if (memcmp(&a, &b, sizeof(RunFact)) == 0) continue;
            if (plan->main_process) {
                fprintf(stderr,
                        "error: the processes of this run disagree on %s: rank 0 has '%s', rank %d has '%s'; "
                        "start every process with the same flags, model and data\n",
                        a.name, a.value, r, b.value);
                fflush(stderr);
            }
            trainer_exit(tr, EXIT_FAILURE);
        }
    }
}

// On resume: the checkpoint's run facts against this run's. A change that makes the run another one (the
// seed, the data, the batch) is refused; a change of the optimizer or the schedule is allowed with a
// warning naming it (extending -x, lowering -l: deliberate); the rest (how often to validate) is silent.
inline void run_compare_resumed_facts(const RunPlan* plan, const std::vector<RunFact>& saved,
                                      const char* state_path) {
    for (const RunFact& old : saved) {
        for (const RunFact& now : plan->facts) {
            if (strcmp(old.name, now.name) != 0 || strcmp(old.value, now.value) == 0) continue;
            if (now.rule == FACT_RESUME_REFUSE) {
                fail("flag -y 1: the checkpoint's run had %s '%s', this run has '%s' ('%s'): "
                     "a resume continues the same run; to train on from its weights with other settings, "
                     "start a new run with -e <its model file>",
                     now.name, old.value, now.value, state_path);
            }
            if (now.rule == FACT_RESUME_WARN && plan->main_process) {
                printf("warning: resuming with %s '%s'; the checkpoint's run had '%s'\n", now.name, now.value,
                       old.value);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// checkpoints: <dir>/model_<step>.bin (rank 0), <dir>/state_<step>_<rank>.bin (every rank), then
// <dir>/checkpoint_latest (rank 0, once every file is on disk); llmc/state_file.h has the layout.

template <class Trainer>
void run_save_checkpoint(Trainer* tr, const RunPlan* plan, const char* dir, const TrainState& st) {
    trainer_write_model(tr, checkpoint_path(dir, "model", st.step, -1)); // (ZeRO-3: every rank gathers)
    watchdog_progress("a checkpoint", st.step);
    StateHeader h = trainer_state_header(tr, st.step);
    h.loader = st.loader;
    h.sample_rng = st.sample_rng;
    for (const RunFact& f : plan->facts)
        if (f.rule != FACT_THIS_START) h.facts.push_back(f);
    const std::string path = checkpoint_path(dir, "state", st.step, plan->rank);
    const StateBuffers b = trainer_state_buffers(tr, h, path);
    state_file_write(path, h, b);
    trainer_barrier(tr); // every state file is on disk before the checkpoint is declared complete
    if (plan->main_process) write_latest_checkpoint(dir, st.step);
}

// The optimizer state and the position of the run at plan->resume_step (after run_resume_model read the
// parameters and the backend allocated its optimizer); the caller puts st->loader into its data loader.
template <class Trainer>
void run_load_state(Trainer* tr, const RunPlan* plan, const char* dir, TrainState* st) {
    StateHeader expected = trainer_state_header(tr, plan->resume_step);
    expected.facts = plan->facts;
    StateReader r(dir, plan->resume_step, expected);
    run_compare_resumed_facts(plan, r.header.facts, r.file.path.c_str());
    const StateBuffers b = trainer_state_buffers(tr, r.header, r.file.path);
    state_file_read_buffers(&r, b);
    st->step = plan->resume_step;
    st->loader = r.header.loader;
    st->sample_rng = r.header.sample_rng;
}

// ----------------------------------------------------------------------------------------------------
// validation and sampling

// Mean loss over the first max_batches batches of the validation set (all of it if max_batches < 0),
// averaged over ranks (each evaluates its own slice of every batch).
template <class Trainer> float run_validate(Trainer* tr, DataLoader* val, int max_batches) {
    dataloader_reset(val);
    int n = (int)dataloader_num_batches(val);
    if (max_batches >= 0 && max_batches < n) n = max_batches;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        watchdog_progress("validation", -1);
        dataloader_next_batch(val);
        sum += trainer_eval_loss(tr, val->inputs.data(), val->targets.data());
    }
    return trainer_mean_over_ranks(tr, n > 0 ? (float)(sum / n) : 0.0f);
}

// Generates num_tokens tokens after <|endoftext|>, each drawn from softmax(logits / temperature) with
// coins from rng, and prints them (decoded when the tokenizer is loaded, as ids otherwise). Each token
// runs the forward over the whole prefix again: simple, not fast.
template <class Trainer>
void run_sample(Trainer* tr, const RunPlan* plan, Rng* rng, int num_tokens, float temperature) {
    const GPT2Config& c = tr->model.config;
    const TokenDecoder& decoder = tr->decoder;
    const int eot = decoder.vocab_size > 0 ? decoder.eot_token : c.vocab_size - 1;
    std::vector<int> tokens(plan->T, eot); // the prefix, padded with <|endoftext|> to T
    const bool print = plan->main_process; // (ZeRO-3: every rank runs the forwards, rank 0 prints)
    if (print) printf("generating:\n---\n");
    for (int t = 1; t <= num_tokens && t < plan->T; t++) {
        watchdog_progress("sampling", -1);
        const float* logits = trainer_next_token_logits(tr, tokens.data(), t);
        const int next = sample_softmax(logits, c.vocab_size, temperature, rng_uniform(rng));
        tokens[t] = next;
        if (!print) continue;
        if (decoder.vocab_size > 0 && next < decoder.vocab_size) {
            const std::string& piece = token_decoder_piece(&decoder, next);
            fwrite(piece.data(), 1, piece.size(), stdout);
        } else {
            printf("%d ", next);
        }
        fflush(stdout);
    }
    if (print) printf("\n---\n");
}

// ----------------------------------------------------------------------------------------------------
// the training loop

// Cadence of the loop at step (0-based, before training step `step`); first_step is the step the run
// started or resumed at. A checkpoint every -n steps and at the end (not at the step just resumed from);
// validation every -v steps and at the end; a sample every -s steps (not at step 0) and at the end.
inline bool run_checkpoint_due(const RunPlan* plan, const TrainConfig& cfg, int step, int first_step) {
    const bool last = step == plan->train_steps;
    return cfg.output_dir && step > first_step &&
           ((cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0) || last);
}
inline bool run_val_due(const RunPlan* plan, const TrainConfig& cfg, int step) {
    return step % cfg.val_every == 0 || step == plan->train_steps;
}
inline bool run_sample_due(const RunPlan* plan, const TrainConfig& cfg, int step) {
    const bool last = step == plan->train_steps;
    return (plan->main_process || plan->collective_forward) && cfg.sample_every > 0 &&
           ((step > 0 && step % cfg.sample_every == 0) || last);
}

// A step whose gradient norm is NaN or inf is skipped by the backends' update (no parameter changes); this
// many in a row stop the run: the model or the data is broken, or the learning rate far too high.
constexpr int RUN_MAX_SKIPPED_STEPS = 5;

template <class Trainer>
void run_training(Trainer* tr, const RunPlan* plan, const TrainConfig& cfg, DataLoader* train,
                  DataLoader* val, Logger* logger, TrainState* st) {
    if (plan->main_process && plan->resume_step >= 0) {
        printf("resumed from step %d of '%s'\n", plan->resume_step, cfg.output_dir);
    }
    if (cfg.overfit_single_batch) dataloader_next_batch(train); // -a 1: this batch, every micro-step
    const int first_step = st->step;
    float last_val = -1.0f;
    int skipped_in_a_row = 0;
    // the step's micro-batches, all loaded before its first forward (a pipeline runs them interleaved)
    const size_t BT = (size_t)plan->B * plan->T;
    std::vector<int> step_inputs(BT * plan->grad_accum_steps), step_targets(BT * plan->grad_accum_steps);
    for (int step = first_step; step <= plan->train_steps; step++) {
        if (run_checkpoint_due(plan, cfg, step, first_step)) {
            TrainState now{step, dataloader_get_state(train), st->sample_rng};
            run_save_checkpoint(tr, plan, cfg.output_dir, now);
            if (plan->main_process) printf("saved checkpoint of step %d to %s\n", step, cfg.output_dir);
        }
        if (run_val_due(plan, cfg, step)) {
            last_val = run_validate(tr, val, cfg.val_max_steps);
            if (plan->main_process) printf("val loss %f\n", last_val);
            logger_log_val(logger, step, last_val);
        }
        if (run_sample_due(plan, cfg, step))
            run_sample(tr, plan, &st->sample_rng, cfg.gen_tokens, cfg.temperature);
        if (step == plan->train_steps) break;

        // one optimizer step: grad_accum_steps micro-batches, then the update
        auto start = std::chrono::steady_clock::now();
        for (int micro = 0; micro < plan->grad_accum_steps; micro++) {
            if (!cfg.overfit_single_batch) dataloader_next_batch(train);
            std::copy(train->inputs.begin(), train->inputs.end(), step_inputs.begin() + (size_t)micro * BT);
            std::copy(train->targets.begin(), train->targets.end(),
                      step_targets.begin() + (size_t)micro * BT);
        }
        watchdog_progress("a step's forwards and backwards", step + 1);
        const double loss_sum =
            trainer_forward_backward(tr, step_inputs.data(), step_targets.data(), plan->grad_accum_steps);
        watchdog_progress("the optimizer update", step + 1);
        const float lr = lr_at_step(&plan->sched, step);
        const float norm = trainer_update(tr, lr, step + 1);
        const float loss = trainer_mean_over_ranks(tr, (float)(loss_sum / plan->grad_accum_steps));
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (plan->main_process) {
            printf("step %4d/%d | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s", step + 1,
                   plan->train_steps, loss, (double)lr, norm, seconds * 1000.0,
                   plan->tokens_per_step / seconds);
            trainer_print_step_end(tr, seconds, step == first_step);
            fflush(stdout);
        }
        logger_log_train(logger, step, loss, lr, norm); // 0-based step, as llm.c logs it
        skipped_in_a_row = std::isfinite(norm) ? 0 : skipped_in_a_row + 1;
        if (skipped_in_a_row > 0 && plan->main_process) {
            printf("step %d skipped: gradient norm %f, the update was not applied (%d in a row)\n", step + 1,
                   norm, skipped_in_a_row);
        }
        if (skipped_in_a_row == RUN_MAX_SKIPPED_STEPS) {
            fail("%d steps in a row (the last: step %d) had a non-finite gradient norm: stopping. The model "
                 "file or the data holds NaN or inf, or the learning rate is far too high",
                 RUN_MAX_SKIPPED_STEPS, step + 1);
        }
    }
    if (plan->main_process) printf("final val loss %f\n", last_val);
}
