// train_config.h: the flags both trainers take, their usage text and their parser.
//
// One struct, one usage text, one parser for train_gpt2 (CPU) and train_gpt2cu (GPU), so the two trainers
// cannot drift apart: a user switches between them with the same command line. The letters are llm.c's
// where llm.c has the feature. The GPU-only flags (-r, -w, -ge and the multi-node ones) are listed and
// accepted only by the GPU trainer; the CPU trainer rejects them with a message that says so. The usage text
// and the parser are kept side by side: every flag listed is read, and only those
// (tests/train/test_trainer_errors.sh checks it for the CPU trainer).
#pragma once

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "llmc/adamw8bit.h"
#include "llmc/lora.h"
#include "llmc/utils.h"

// AdamW hyperparameters; weight decay applies to the 2-D matrices only (parameter_is_matrix).
struct AdamWConfig {
    float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
    float grad_clip = 1.0f; // global-norm clipping threshold; 0 disables
};

struct TrainConfig {
    const char* train_pattern = "data/tinyshakespeare/tiny_shakespeare_train.bin";
    const char* val_pattern = "data/tinyshakespeare/tiny_shakespeare_val.bin";
    const char* model = "d4";
    const char* output_dir = nullptr;
    const char* tokenizer_path = "data/gpt2_tokenizer.bin";
    int B = 8, T = 64;
    long total_batch_tokens = -1; // -1: one micro-batch per process, no accumulation
    float learning_rate = 1e-3f;
    int warmup_steps = 20;
    float final_lr_frac = 0.1f;
    const char* schedule = "cosine";
    float cooldown_frac = 0.2f;
    const char* lr_scale_rule = "none";
    long lr_scale_ref_tokens = 0;
    AdamWConfig adamw;
    int max_steps = 300; // -1: one epoch
    int val_every = 50, val_max_steps = 20, sample_every = 100, gen_tokens = 64;
    float temperature = 1.0f;
    int checkpoint_every = 0;
    bool resume = false, overfit_single_batch = false;
    bool overwrite = false; // -ow 1: a fresh run may replace the run in -o (its files are deleted)
    int zero_stage = 0;
    int pipeline_stages = 1;                // -pp: the layers cut into this many stages, a process each
    const char* pipeline_schedule = "1f1b"; // -pk: gpipe or 1f1b (llmc/pipeline.h)
    bool use_8bit = false;
    int quant_block = ADAMW8BIT_DEFAULT_BLOCK; // 8-bit AdamW: values per absmax scale
    uint64_t seed = 1337;
    LoraConfig lora; // -lo -la -lt -lq: LoRA / QLoRA fine-tuning (llmc/lora.h)
    // GPU trainer only
    int recompute = 0;       // -r: 0 nothing, 1 GELU, 2 + LayerNorm, 3 whole blocks
    bool fuse_dgelu = false; // -ge: the fc backward's GELU in cuBLASLt's DGELU epilogue
    bool keep_master = true; // -w: fp32 master weights
    const char* init_method = "mpi";
    const char* server = "127.0.0.1";
    const char* fs_path = nullptr;
    int num_processes = 1, process_rank = 0, gpus_per_node = 0;
};

// The defaults of each trainer: the CPU's main job is a small model on 2 cores for a few minutes; the
// GPU's is GPT-2 small (d12) at T=1024.
inline TrainConfig train_config_cpu_defaults() {
    return TrainConfig();
}
inline TrainConfig train_config_gpu_defaults() {
    TrainConfig c;
    c.model = "d12";
    c.B = 16;
    c.T = 1024;
    c.learning_rate = 6e-4f;
    c.warmup_steps = 10;
    c.max_steps = 100;
    c.val_every = 20;
    c.sample_every = 50;
    return c;
}

inline void print_usage(const char* program, const TrainConfig& d, bool gpu) {
    printf("usage: %s [flags]   (several processes: mpirun -np N %s [flags]%s)\n", program, program,
           gpu ? ", or -pi tcp|fs" : "");
    printf("data and model\n"
           "  -i <pattern>  train token shards (glob)               default %s\n"
           "  -j <pattern>  validation token shards (glob)          default %s\n"
           "  -e <model>    model file (.bin, fp32 or bf16) or descriptor d2, d4, d6, d12, d24, d36, d48 to\n"
           "                train from scratch                      default %s\n"
           "  -o <dir>      output directory for log and checkpoints (none: no log, no checkpoints)\n"
           "  -tk <file>    gpt2_tokenizer.bin to decode samples    default %s\n",
           d.train_pattern, d.val_pattern, d.model, d.tokenizer_path);
    printf("batch\n"
           "  -b <int>      micro-batch size per process            default %d\n"
           "  -t <int>      sequence length                         default %d\n"
           "  -d <int>      total batch size in tokens (all processes; gradient accumulation makes up the\n"
           "                rest); -1 = one micro-batch per process default %ld\n",
           d.B, d.T, d.total_batch_tokens);
    printf("optimizer\n"
           "  -l <float>    peak learning rate                      default %g\n"
           "  -u <int>      warmup steps                            default %d\n"
           "  -q <float>    final learning rate, fraction of peak   default %g\n"
           "  -k <name>     schedule: cosine, linear, constant, wsd default %s\n"
           "  -cf <float>   wsd cooldown fraction of the steps      default %g\n"
           "  -sr <rule>    scale the peak lr from a reference batch: none, linear, sqrt  default %s\n"
           "  -sb <int>     reference batch size in tokens for -sr\n"
           "  -c <float>    weight decay (matrices only)            default %g\n"
           "  -gc <float>   gradient clipping global norm (0: off)  default %g\n"
           "  -qo <0|1>     8-bit AdamW (m and v as 8-bit codes)    default %d\n"
           "  -qb <int>     8-bit AdamW quantization block, values per scale (64..4096)  default %d\n"
           "  -z <0..3>     ZeRO stage: 0 data parallel, 1 optimizer state sharded, 2 + gradients, 3 + "
           "parameters  default %d\n"
           "  -pp <int>     pipeline stages: the layers cut into P stages, one process each (CPU trainer;\n"
           "                processes = P x data-parallel replicas)  default %d\n"
           "  -pk <name>    pipeline schedule: gpipe or 1f1b       default %s\n",
           (double)d.learning_rate, d.warmup_steps, (double)d.final_lr_frac, d.schedule,
           (double)d.cooldown_frac, d.lr_scale_rule, (double)d.adamw.weight_decay, (double)d.adamw.grad_clip,
           (int)d.use_8bit, d.quant_block, d.zero_stage, d.pipeline_stages, d.pipeline_schedule);
    printf("LoRA fine-tuning (llmc/lora.h): the model of -e frozen, low-rank adapters trained\n"
           "  -lo <int>     LoRA rank r (0: off, the whole model trains)  default %d\n"
           "  -la <float>   LoRA alpha: the adapters' output is scaled by alpha/r  default %g\n"
           "  -lt <list>    matrices with adapters: qkv,attproj,fc,fcproj or all  default %s\n"
           "  -lq <0|1>     QLoRA: the frozen block matrices stored in NF4, double-quantized  default %d\n",
           d.lora.rank, (double)d.lora.alpha, lora_targets_text(d.lora.targets).c_str(), (int)d.lora.nf4);
    if (gpu) {
        printf("  -w <0|1>      keep fp32 master weights (-w 0 only in the FP32 build)  default %d\n"
               "  -r <0..3>     recompute in the backward: 0 nothing, 1 GELU, 2 + LayerNorm, 3 whole blocks"
               "  default %d\n"
               "  -ge <0|1>     fc backward GELU: 1 DGELU epilogue, 0 own kernel  default %d\n",
               (int)d.keep_master, d.recompute, (int)d.fuse_dgelu);
    }
    printf("schedule of the run\n"
           "  -x <int>      training steps (-1: one epoch)          default %d\n"
           "  -v <int>      validation every N steps                default %d\n"
           "  -m <int>      validation batches (-1: all)            default %d\n"
           "  -s <int>      sample every N steps (0: never)         default %d\n"
           "  -g <int>      tokens to sample                        default %d\n"
           "  -st <float>   sampling temperature                    default %g\n"
           "  -n <int>      checkpoint every N steps (0: only at the end, when -o is given)  default %d\n"
           "  -y <0|1>      resume from the latest checkpoint in -o default %d\n"
           "  -ow <0|1>     a fresh run into an -o that holds a run deletes that run's files (else refused)\n"
           "  -a <0|1>      overfit a single batch                  default %d\n"
           "  -sd <int>     random seed (init, data order, sampling%s)  default %llu\n",
           d.max_steps, d.val_every, d.val_max_steps, d.sample_every, d.gen_tokens, (double)d.temperature,
           d.checkpoint_every, (int)d.resume, (int)d.overfit_single_batch, gpu ? ", rounding" : "",
           (unsigned long long)d.seed);
    if (gpu) {
        printf("multi-GPU without mpirun (llmc/nccl_gpu.cuh)\n"
               "  -pi <method>  bootstrap: mpi (under mpirun), tcp, fs  default %s\n"
               "  -ps <host>    tcp: rank 0's host[:port]               default %s\n"
               "  -pf <dir>     fs: a directory every node shares\n"
               "  -pn <int>     tcp/fs: number of processes             default %d\n"
               "  -pr <int>     tcp/fs: this process's rank             default %d\n"
               "  -pg <int>     tcp/fs: GPUs per node (0: all)          default %d\n",
               d.init_method, d.server, d.num_processes, d.process_rank, d.gpus_per_node);
    }
    printf("  -h            this text\n");
}

inline bool parse_bool_flag(const char* flag, const char* text) {
    long v = parse_long_flag(flag, text);
    if (v != 0 && v != 1) fail("flag %s expects 0 or 1, got '%s'", flag, text);
    return v == 1;
}

inline long parse_long_range(const char* flag, const char* text, long lo, long hi) {
    long v = parse_long_flag(flag, text);
    if (v < lo || v > hi) fail("flag %s expects an integer in [%ld, %ld], got %ld", flag, lo, hi, v);
    return v;
}
inline int parse_int_flag(const char* flag, const char* text, long lo, long hi) {
    return (int)parse_long_range(flag, text, lo, hi);
}
// -1 (a special meaning: "all", "none") or an integer in [lo, hi]; 0 and other negatives are errors.
inline long parse_minus_one_or(const char* flag, const char* text, long lo, long hi, const char* minus_one) {
    long v = parse_long_flag(flag, text);
    if (v != -1 && (v < lo || v > hi))
        fail("flag %s expects -1 (%s) or an integer in [%ld, %ld], got %ld", flag, minus_one, lo, hi, v);
    return v;
}
// A finite number in [lo, hi] (open at lo when lo_open: a temperature of 0 divides by zero).
inline float parse_float_range(const char* flag, const char* text, float lo, float hi, bool lo_open = false) {
    float v = parse_float_flag(flag, text);
    if (v < lo || v > hi || (lo_open && v == lo))
        fail("flag %s expects a number in %s%g, %g], got %s", flag, lo_open ? "(" : "[", (double)lo,
             (double)hi, text);
    return v;
}

// Reads the flags into c (which holds the trainer's defaults). Returns false when -h was given.
inline bool parse_flags(TrainConfig* c, int argc, char** argv, bool gpu) {
    for (int i = 1; i < argc; i += 2) {
        const char* f = argv[i];
        if (strcmp(f, "-h") == 0 || strcmp(f, "--help") == 0) return false;
        if (f[0] != '-' || f[1] == '\0') fail("expected a flag like -b, got '%s' (see -h)", f);
        if (i + 1 >= argc) fail("flag %s expects a value (see -h)", f);
        const char* v = argv[i + 1];
        const char* k = f + 1;
        // one line per flag reads as a table:
        // clang-format off
        if (!strcmp(k, "i")) c->train_pattern = v;
        else if (!strcmp(k, "j")) c->val_pattern = v;
        else if (!strcmp(k, "e")) c->model = v;
        else if (!strcmp(k, "o")) c->output_dir = v;
        else if (!strcmp(k, "tk")) c->tokenizer_path = v;
        else if (!strcmp(k, "b")) c->B = parse_int_flag(f, v, 1, 1 << 20);
        else if (!strcmp(k, "t")) c->T = parse_int_flag(f, v, 1, 1 << 20);
        else if (!strcmp(k, "d")) c->total_batch_tokens = parse_minus_one_or(f, v, 1, 1L << 40, "no accumulation");
        else if (!strcmp(k, "l")) c->learning_rate = parse_float_range(f, v, 0.0f, 10.0f);
        else if (!strcmp(k, "u")) c->warmup_steps = parse_int_flag(f, v, 0, 1 << 30);
        else if (!strcmp(k, "q")) c->final_lr_frac = parse_float_range(f, v, 0.0f, 1.0f);
        else if (!strcmp(k, "k")) c->schedule = v;
        else if (!strcmp(k, "cf")) c->cooldown_frac = parse_float_range(f, v, 0.0f, 1.0f);
        else if (!strcmp(k, "sr")) c->lr_scale_rule = v;
        else if (!strcmp(k, "sb")) c->lr_scale_ref_tokens = parse_long_range(f, v, 1, 1L << 40);
        else if (!strcmp(k, "c")) c->adamw.weight_decay = parse_float_range(f, v, 0.0f, 10.0f);
        else if (!strcmp(k, "gc")) c->adamw.grad_clip = parse_float_range(f, v, 0.0f, 1e9f);
        else if (!strcmp(k, "qo")) c->use_8bit = parse_bool_flag(f, v);
        else if (!strcmp(k, "qb")) c->quant_block = parse_int_flag(f, v, 64, 4096);
        else if (!strcmp(k, "z")) c->zero_stage = parse_int_flag(f, v, 0, 3);
        else if (!strcmp(k, "pp")) c->pipeline_stages = parse_int_flag(f, v, 1, 1 << 10);
        else if (!strcmp(k, "pk")) c->pipeline_schedule = v;
        else if (!strcmp(k, "x")) c->max_steps = (int)parse_minus_one_or(f, v, 1, 1 << 30, "one epoch");
        else if (!strcmp(k, "v")) c->val_every = parse_int_flag(f, v, 1, 1 << 30);
        else if (!strcmp(k, "m")) c->val_max_steps = (int)parse_minus_one_or(f, v, 1, 1 << 30, "all");
        else if (!strcmp(k, "s")) c->sample_every = parse_int_flag(f, v, 0, 1 << 30);
        else if (!strcmp(k, "g")) c->gen_tokens = parse_int_flag(f, v, 1, 1 << 20);
        else if (!strcmp(k, "st")) c->temperature = parse_float_range(f, v, 0.0f, 100.0f, /*lo_open=*/true);
        else if (!strcmp(k, "n")) c->checkpoint_every = parse_int_flag(f, v, 0, 1 << 30);
        else if (!strcmp(k, "y")) c->resume = parse_bool_flag(f, v);
        else if (!strcmp(k, "a")) c->overfit_single_batch = parse_bool_flag(f, v);
        else if (!strcmp(k, "ow")) c->overwrite = parse_bool_flag(f, v);
        else if (!strcmp(k, "sd")) c->seed = (uint64_t)parse_long_range(f, v, 0, LONG_MAX);
        else if (!strcmp(k, "lo")) c->lora.rank = parse_int_flag(f, v, 0, 1024);
        else if (!strcmp(k, "la")) c->lora.alpha = parse_float_range(f, v, 0.0f, 1e6f, /*lo_open=*/true);
        else if (!strcmp(k, "lt")) c->lora.targets = lora_parse_targets(f, v);
        else if (!strcmp(k, "lq")) c->lora.nf4 = parse_bool_flag(f, v);
        else {
            // GPU trainer only
            const char* gpu_flags[] = {"w", "r", "ge", "pi", "ps", "pf", "pn", "pr", "pg"};
            bool is_gpu_flag = false;
            for (const char* g : gpu_flags) is_gpu_flag |= strcmp(k, g) == 0;
            if (!is_gpu_flag) fail("unknown flag %s (see -h)", f);
            if (!gpu) fail("flag %s is a flag of the GPU trainer (train_gpt2cu), not of this one", f);
            if (!strcmp(k, "w")) c->keep_master = parse_bool_flag(f, v);
            else if (!strcmp(k, "r")) c->recompute = parse_int_flag(f, v, 0, 3);
            else if (!strcmp(k, "ge")) c->fuse_dgelu = parse_bool_flag(f, v);
            else if (!strcmp(k, "pi")) c->init_method = v;
            else if (!strcmp(k, "ps")) c->server = v;
            else if (!strcmp(k, "pf")) c->fs_path = v;
            else if (!strcmp(k, "pn")) c->num_processes = parse_int_flag(f, v, 1, 1 << 20);
            else if (!strcmp(k, "pr")) c->process_rank = parse_int_flag(f, v, 0, 1 << 20);
            else c->gpus_per_node = parse_int_flag(f, v, 0, 1 << 10); // pg
        }
        // clang-format on
    }
    return true;
}

// A run shorter than the warmup (a smoke run, -x 5, with the default -u) warms up over all its steps;
// the main process says so.
inline void train_config_fit_warmup(TrainConfig* c, int train_steps, bool main_process) {
    if (c->warmup_steps <= train_steps) return;
    if (main_process)
        printf("note: warmup (-u %d) cut to the %d training steps\n", c->warmup_steps, train_steps);
    c->warmup_steps = train_steps;
}
