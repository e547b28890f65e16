/*
test_gpt2cu: checks the GPU trainer (train_gpt2.cu) against the PyTorch reference (train_gpt2.py), as
test_gpt2.cpp checks the CPU trainer, and checks that recomputation and resume change nothing.

  ./test_gpt2cu <model.bin> <debug_state.bin> [-r mode] [-q]

The debug state (`train_gpt2.py --write-state`, float64; tests/common/debug_state.h reads it) holds a batch
x, y, the logits, the loss, the gradient of every parameter, then the losses of NSTEPS AdamW steps (lr 1e-4,
betas 0.9/0.999, eps 1e-8, weight decay 0.01 on matrices, no clipping) on that batch. Checks, each printed,
exit 1 on any failure:
  1. with recompute mode -r (default 0): logits, loss and each of the 16 gradient tensors (max |ours - ref|
     / max |ref| per tensor), and the loss of every AdamW step (|ours - ref| / |ref|);
  2. every recompute mode 0..3: the first step's loss and gradients and 3 steps' losses bit-identical to -r 0
     (recomputation runs the same kernels on the same inputs, so it must not change a single bit);
  3. resume, fp32 AdamW and 8-bit AdamW: 10 steps straight, against 5 steps, a checkpoint (model file + state
     with the fp32 master weights) in a temporary directory, a fresh model loaded from it and 5 more steps:
     the losses of steps 6..10 and the final parameters bit-identical.
-q runs check 1 only (the CPU emulator's run on the GPT-2 vocabulary, where checks 2 and 3 cost minutes).
The flash attention kernels need head size 64 or 128: dev/cuda/bringup.sh runs this on states with
C/NH = 64 and 128 (the Makefile's gpu_reference_states) in both builds and every -r mode on a GPU;
tests/gpu/test_emu_gpt2cu.sh runs it on the CPU emulator (dev/cuda/emu: every kernel's own code, cuBLASLt
emulated) in `make test`.

Tolerances. The reference is float64.
  FP32 build (-DENABLE_FP32): every matmul is exact fp32 (CUBLAS_COMPUTE_32F, TF32 never requested) and the
  kernels accumulate in fp32, so the error is fp32 rounding as on the CPU (test_gpt2.cpp measures ~1e-6 of
  a tensor's scale); 1e-4 leaves room for different summation orders (cuBLAS, tiled attention), and a
  wrong formula moves results by 1e-3 .. 1e-1 (see test_gpt2.cpp's mutations).
  BF16 build: parameters, activations and gradients are rounded to bf16, unit roundoff u = 2^-8 = 3.9e-3.
  Each rounding is a relative error <= u; a tensor's error collects the roundings of the 2L+1 matmuls and
  LayerNorms before (forward) or after (backward) it, largely independent, so a few u: 2e-2 for logits
  and gradients (~5u). The loss is a mean over B*T positions, where the roundings average out: 2e-3, and
  the same for the step losses (the updates are kept in the fp32 master weights; the bf16 copy is rounded
  stochastically, without bias). On the CPU emulator (dev/cuda/emu: every kernel's own code, the tensor-core
  attention emulated with bf16 operands and fp32 sums, cuBLASLt emulated with fp32 sums) this build measures
  on the tiny state: logits 3.5e-3, gradients 3.2e-3 .. 8.7e-3, loss 2.8e-5, step losses <= 1e-4.
*/
#define TESTING
#include "train_gpt2.cu"

#include <filesystem>
#include <stdlib.h>

#include "tests/common/debug_state.h"
#include "tests/common/test_common.h"

#if defined(ENABLE_FP32)
static const double LOGITS_TOL = 1e-4, LOSS_TOL = 1e-4, GRAD_TOL = 1e-4, STEP_LOSS_TOL = 1e-4;
#else
static const double LOGITS_TOL = 2e-2, LOSS_TOL = 2e-3, GRAD_TOL = 2e-2, STEP_LOSS_TOL = 2e-3;
#endif

// LoRA in the BF16 build: each adapter adds two roundings to its matmul's output (u = x.A^T stored in bf16,
// and the output rounded again after the adapter's += ), so a few more u than the full model's: 3e-2 (~8u)
// for logits and gradients (measured on the emulator: up to 2.1e-2). A wrong formula (alpha/r applied
// twice) is off by 1e-1 and more.
#if defined(ENABLE_FP32)
static const double LORA_TOL = 1e-4;
#else
static const double LORA_TOL = 3e-2;
#endif

static const uint64_t TEST_SEED = 1337; // stochastic rounding
static const int TEST_BLOCK = 256;      // 8-bit AdamW block size (the test models are small)

// A model and its optimizer (the trainer's Trainer: its checkpoints go through llmc/run_plan.h as in a
// training run), fresh from model_path, or resumed from the checkpoint of resume_step in dir. With lora, the
// model is a frozen base with adapters (given, or fresh: B = 0); a resumed LoRA run starts from model_path
// too (the checkpoint's model file is the merged export) and reads the adapters from the state.
using Run = Trainer;

struct RunLora {
    LoraConfig config;
    const std::vector<float>* adapters = nullptr; // the initial adapters (null: fresh ones)
};

static void run_init(Run* run, const char* model_path, int B, int T, int recompute, bool use_8bit,
                     MultiGpuConfig* mgc, const RunLora* lora = nullptr, const char* dir = nullptr,
                     int resume_step = 0) {
    std::string path =
        dir && !lora ? checkpoint_path(dir, "model", resume_step, -1) : std::string(model_path);
    gpt2_build_from_checkpoint(&run->model, path.c_str());
    if (lora) {
        gpt2_setup_lora(&run->model, lora->config, TEST_SEED);
        if (lora->adapters) run->model.lora_host = *lora->adapters;
    }
    optimizer_init(&run->opt, &run->model, mgc, 0, use_8bit, TEST_BLOCK, true, TEST_SEED);
    gpt2_allocate(&run->model, run->opt.layout.padded_params, B, T, recompute);
    optimizer_allocate(&run->opt, &run->model);
    if (dir) {
        RunPlan plan;
        plan.resume_step = resume_step;
        TrainState st;
        run_load_state(run, &plan, dir, &st);
        gpt2_lora_resumed(&run->model);
    }
}

static void run_free(Run* run) {
    optimizer_free(&run->opt);
    gpt2_free(&run->model);
}

// One AdamW step (t 1-based) on the batch x, y (B, T); returns the loss before the update. grads_out, when
// given, receives this step's floatX gradients of what trains (raw bytes, num_trained values).
static float train_step(Run* run, const int* x, const int* y, int B, int T, int t, MultiGpuConfig* mgc,
                        std::vector<uint8_t>* grads_out = nullptr) {
    GPT2* m = &run->model;
    gpt2_zero_grad(m);
    gpt2_forward(m, x, y, B, T, 1.0f / (B * T));
    gpt2_backward(m, mgc, false);
    float loss = gpt2_wait_loss(m, B, T);
    if (grads_out) {
        grads_out->resize(m->num_trained * sizeof(floatX));
        cudaCheck(
            cudaMemcpy(grads_out->data(), m->micro_grads_memory, grads_out->size(), cudaMemcpyDeviceToHost));
    }
    gpt2_update(m, &run->opt, mgc, DEBUG_ADAMW_LR, debug_adamw(), t);
    return loss;
}

static float train_step(Run* run, const DebugState& d, int t, MultiGpuConfig* mgc,
                        std::vector<uint8_t>* grads_out = nullptr) {
    return train_step(run, d.x.data(), d.y.data(), d.B, d.T, t, mgc, grads_out);
}

// the bytes of what trains: the parameters, or the adapters
static std::vector<uint8_t> params_bytes(const GPT2* m) {
    std::vector<uint8_t> bytes(m->num_trained * sizeof(floatX));
    cudaCheck(cudaMemcpy(bytes.data(), m->trained, bytes.size(), cudaMemcpyDeviceToHost));
    return bytes;
}

static std::vector<float> bytes_to_floats(const std::vector<uint8_t>& bytes) {
    const size_t n = bytes.size() / sizeof(floatX);
    std::vector<float> out(n);
#if defined(ENABLE_FP32)
    memcpy(out.data(), bytes.data(), n * sizeof(float));
#else
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, bytes.data() + 2 * i, 2);
        out[i] = bf16_to_float(h);
    }
#endif
    return out;
}

// an error against its tolerance (a NaN fails)
static void check(const char* what, double err, double tol) {
    CHECK_LE(err, tol, "%-12s max rel err", what);
}
static void check_identical(const char* what, bool same) {
    CHECK(same, "%s: bit-identical", what);
}

// 2. every recompute mode gives the bits of -r 0: the first step's loss and gradients, 3 steps' losses
static void check_recompute_modes(const char* model_path, int B, int T, const int* x, const int* y,
                                  const RunLora* lora, MultiGpuConfig* mgc) {
    printf("-- recompute modes against -r 0 (first step's loss and gradients, 3 steps' losses)\n");
    const int steps = 3;
    std::vector<float> losses0;
    std::vector<uint8_t> grads0;
    for (int r = 0; r <= 3; r++) {
        Run run;
        run_init(&run, model_path, B, T, r, false, mgc, lora);
        std::vector<float> losses;
        std::vector<uint8_t> grads;
        for (int step = 0; step < steps; step++)
            losses.push_back(train_step(&run, x, y, B, T, step + 1, mgc, step == 0 ? &grads : nullptr));
        run_free(&run);
        if (r == 0) {
            losses0 = losses;
            grads0 = grads;
            continue;
        }
        char what[64];
        snprintf(what, sizeof(what), "-r %d losses", r);
        check_identical(what, memcmp(losses.data(), losses0.data(), steps * sizeof(float)) == 0);
        snprintf(what, sizeof(what), "-r %d gradients", r);
        check_identical(what, grads == grads0);
    }
}

// 3. save at step 5, resume in a fresh model, continue: the same bits as an uninterrupted run (the losses
// and the trained parameters), with fp32 and 8-bit AdamW
static void check_resume(const char* model_path, int B, int T, const int* x, const int* y,
                         const RunLora* lora, MultiGpuConfig* mgc) {
    printf("-- resume (10 steps straight vs 5 + checkpoint + 5)\n");
    for (int use_8bit = 0; use_8bit <= 1; use_8bit++) {
        const int total = 10, save_at = 5;
        char dir_template[] = "/tmp/test_gpt2cu_XXXXXX";
        const char* dir = mkdtemp(dir_template);
        if (dir == nullptr) fail("could not create a temporary directory under /tmp");
        std::vector<float> straight, resumed;
        std::vector<uint8_t> params_straight, params_resumed;
        {
            Run run;
            run_init(&run, model_path, B, T, 0, use_8bit == 1, mgc, lora);
            for (int step = 0; step < total; step++) {
                if (step == save_at) {
                    Rng rng;
                    rng_init(&rng, 1);
                    RunPlan plan; // one process, rank 0
                    run_save_checkpoint(&run, &plan, dir, TrainState{step, DataLoaderState{0, 0, 0}, rng});
                }
                float loss = train_step(&run, x, y, B, T, step + 1, mgc);
                if (step >= save_at) straight.push_back(loss);
            }
            params_straight = params_bytes(&run.model);
            run_free(&run);
        }
        {
            if (find_latest_checkpoint(dir) != save_at)
                fail("checkpoint_latest in '%s' does not name step %d", dir, save_at);
            Run run;
            run_init(&run, model_path, B, T, 0, use_8bit == 1, mgc, lora, dir, save_at);
            for (int step = save_at; step < total; step++)
                resumed.push_back(train_step(&run, x, y, B, T, step + 1, mgc));
            params_resumed = params_bytes(&run.model);
            run_free(&run);
        }
        std::filesystem::remove_all(dir);
        const char* opt_name = use_8bit ? "8-bit AdamW" : "AdamW";
        char what[80];
        snprintf(what, sizeof(what), "%s: losses of steps 6..10", opt_name);
        check_identical(what,
                        straight.size() == resumed.size() &&
                            memcmp(straight.data(), resumed.data(), straight.size() * sizeof(float)) == 0);
        snprintf(what, sizeof(what), "%s: final %s", opt_name, lora ? "adapters" : "parameters");
        check_identical(what, params_straight == params_resumed);
    }
}

// The logits (B, T, Vp) of a forward without targets, as fp32.
static std::vector<float> forward_logits(Run* run, const int* x, int B, int T) {
    GPT2* m = &run->model;
    gpt2_forward(m, x, nullptr, B, T, 0.0f);
    std::vector<float> logits((size_t)B * T * m->config.padded_vocab_size);
    download_floatX(logits.data(), m->acts.logits, logits.size());
    return logits;
}

// LoRA: the state of train_gpt2.py --write-lora-state (the model file is its frozen base; the adapters
// random, B included), as test_gpt2.cpp checks the CPU trainer:
//   1. with -r: logits, loss, the gradient of every adapter tensor and the losses of the AdamW steps against
//      the reference; fresh adapters (B = 0) give the base model's logits bit for bit (not for an NF4 base);
//      the merged model file (W + s.B.A, a plain llm.c file) gives the logits of base + adapters;
//   2. and 3. (not with -q): every recompute mode bit-identical to -r 0, resume bit-exact.
// MUTATION=lora_scale_twice (s^2 instead of s) must fail 1.
static int test_lora(const char* model_path, const char* state_path, int recompute, bool reference_only) {
    MultiGpuConfig mgc;
    test_list_checks();
    GPT2Config c;
    int version;
    checkpoint_read_header(model_path, &c, &version);
    LoraDebugState d;
    lora_debug_state_read(&d, state_path, c);
    const char* mutation = getenv("MUTATION");
    if (mutation && strcmp(mutation, "lora_scale_twice") == 0)
        d.lora.alpha = d.lora.alpha * d.lora.alpha / d.lora.rank;
    const int V = c.vocab_size, Vp = c.padded_vocab_size, B = d.B, T = d.T;
    const size_t BT = (size_t)B * T;
    printf("%s build; LoRA r=%d alpha=%g on %s, %s base; model L=%d C=%d V=%d; B=%d T=%d; %d AdamW steps\n",
           PRECISION_NAME, d.lora.rank, (double)d.lora.alpha, lora_targets_text(d.lora.targets).c_str(),
           d.lora.nf4 ? "NF4" : PRECISION_NAME, c.num_layers, c.channels, V, B, T, d.nsteps);
    RunLora fresh{d.lora, nullptr}, ref{d.lora, &d.adapters};

    printf("-- against the reference (-r %d)\n", recompute);
    if (!d.lora.nf4) {
        Run base, lora;
        run_init(&base, model_path, B, T, recompute, false, &mgc);
        run_init(&lora, model_path, B, T, recompute, false, &mgc, &fresh);
        const std::vector<float> a = forward_logits(&base, d.x.data(), B, T),
                                 b = forward_logits(&lora, d.x.data(), B, T);
        size_t differ = 0;
        for (size_t i = 0; i < a.size(); i++) differ += a[i] != b[i];
        CHECK(differ == 0, "fresh adapters (B = 0): the base's logits bit for bit (%zu of %zu differ)",
              differ, a.size());
        run_free(&base);
        run_free(&lora);
    }
    {
        Run run;
        run_init(&run, model_path, B, T, recompute, false, &mgc, &ref);
        const std::vector<float> logits = forward_logits(&run, d.x.data(), B, T);
        check("logits", relative_error(logits.data(), d.logits.data(), BT * V, Vp, V, V), LORA_TOL);
        // the merged model file
        char dir_template[] = "/tmp/test_gpt2cu_XXXXXX";
        const char* dir = mkdtemp(dir_template);
        if (dir == nullptr) fail("could not create a temporary directory under /tmp");
        const std::string merged_path = std::string(dir) + "/merged.bin";
        trainer_write_model(&run, merged_path);
        Run merged;
        run_init(&merged, merged_path.c_str(), B, T, recompute, false, &mgc);
        const std::vector<float> merged_logits = forward_logits(&merged, d.x.data(), B, T);
        // against the reference, like the LoRA model's own logits (in the BF16 build the merged weights are
        // rounded to bf16 once more, so the two models differ by about as much as each differs from it)
        check("merged logits", relative_error(merged_logits.data(), d.logits.data(), BT * V, Vp, V, V),
              LORA_TOL);
        run_free(&merged);
        std::filesystem::remove_all(dir);
        std::vector<uint8_t> grads_bytes;
        for (int step = 0; step < d.nsteps; step++) {
            float loss = train_step(&run, d.x.data(), d.y.data(), B, T, step + 1, &mgc,
                                    step == 0 ? &grads_bytes : nullptr);
            if (step == 0) {
                check("loss", fabs(loss - d.loss) / fabs(d.loss), LOSS_TOL);
                const std::vector<float> grads = bytes_to_floats(grads_bytes);
                size_t off = 0;
                for (int i = 0; i < run.model.lora_layout.num_tensors; i++) {
                    const std::string name = "d" + lora_tensor_name(run.model.lora_layout, i);
                    const size_t n = run.model.lora_layout.sizes[i];
                    check(name.c_str(), relative_error(grads.data() + off, d.grads.data() + off, n),
                          LORA_TOL);
                    off += n;
                }
            }
            char name[64];
            snprintf(name, sizeof(name), "step %d (loss %.6f, ref %.6f)", step, loss, d.step_losses[step]);
            check(name, fabs(loss - d.step_losses[step]) / fabs(d.step_losses[step]), STEP_LOSS_TOL);
        }
        run_free(&run);
    }
    if (reference_only) return test_summary("test_gpt2cu LoRA (reference only)");
    check_recompute_modes(model_path, B, T, d.x.data(), d.y.data(), &ref, &mgc);
    check_resume(model_path, B, T, d.x.data(), d.y.data(), &ref, &mgc);
    return test_summary("test_gpt2cu LoRA");
}

int main(int argc, char** argv) {
    program_init();
    int recompute = 0;
    bool reference_only = false; // -q: check 1 only (the CPU emulator's GPT-2-vocabulary run)
    bool usage_ok = argc >= 3;
    for (int i = 3; usage_ok && i < argc; i++) {
        if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) {
            recompute = (int)parse_long_flag("-r", argv[++i]);
        } else if (strcmp(argv[i], "-q") == 0) {
            reference_only = true;
        } else {
            usage_ok = false;
        }
    }
    if (!usage_ok) {
        fprintf(stderr, "usage: %s <model.bin> <debug_state.bin> [-r 0..3] [-q: only the reference check]\n",
                argv[0]);
        return 2;
    }
    const char* model_path = argv[1];
    const char* state_path = argv[2];
    if (recompute < 0 || recompute > 3) fail("flag -r expects 0..3, got %d", recompute);
    if (debug_state_magic(state_path) == LORA_DEBUG_STATE_MAGIC)
        return test_lora(model_path, state_path, recompute, reference_only);
    MultiGpuConfig mgc; // one process: every collective is a no-op
    test_list_checks();

    GPT2Config c;
    int version;
    checkpoint_read_header(model_path, &c, &version);
    DebugState d;
    debug_state_read(&d, state_path, c);
    if (d.nsteps < 1) fail("'%s' has no AdamW steps: the gradients are checked after the first", state_path);
    const int V = c.vocab_size, Vp = c.padded_vocab_size;
    const size_t BT = (size_t)d.B * d.T;
    printf("%s build; model L=%d C=%d NH=%d V=%d Vp=%d; batch B=%d T=%d; %d AdamW steps\n", PRECISION_NAME,
           c.num_layers, c.channels, c.num_heads, V, Vp, d.B, d.T, d.nsteps);

    // 1. against the reference, in mode -r
    printf("-- against the reference (-r %d)\n", recompute);
    {
        Run run;
        run_init(&run, model_path, d.B, d.T, recompute, false, &mgc);
        GPT2* m = &run.model;
        gpt2_forward(m, d.x.data(), nullptr, d.B, d.T, 0.0f);
        std::vector<float> logits(BT * Vp);
        download_floatX(logits.data(), m->acts.logits, BT * Vp);
        check("logits", relative_error(logits.data(), d.logits.data(), BT * V, Vp, V, V), LOGITS_TOL);
        std::vector<uint8_t> grads_bytes;
        for (int step = 0; step < d.nsteps; step++) {
            float loss = train_step(&run, d, step + 1, &mgc, step == 0 ? &grads_bytes : nullptr);
            if (step == 0) {
                check("loss", fabs(loss - d.loss) / fabs(d.loss), LOSS_TOL);
                std::vector<float> grads = bytes_to_floats(grads_bytes);
                for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
                    check(PARAMETER_NAMES[i],
                          relative_error(grads.data() + m->param_offsets[i],
                                         d.grads.data() + m->param_offsets[i], m->param_sizes[i]),
                          GRAD_TOL);
                }
            }
            char name[64];
            snprintf(name, sizeof(name), "step %d (loss %.6f, ref %.6f)", step, loss, d.step_losses[step]);
            check(name, fabs(loss - d.step_losses[step]) / fabs(d.step_losses[step]), STEP_LOSS_TOL);
        }
        run_free(&run);
    }

    if (reference_only) return test_summary("test_gpt2cu (reference only)");

    check_recompute_modes(model_path, d.B, d.T, d.x.data(), d.y.data(), nullptr, &mgc);
    check_resume(model_path, d.B, d.T, d.x.data(), d.y.data(), nullptr, &mgc);
    return test_summary("test_gpt2cu");
}
