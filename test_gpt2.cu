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

static const uint64_t TEST_SEED = 1337; // stochastic rounding
static const int TEST_BLOCK = 256;      // 8-bit AdamW block size (the test models are small)

// A model and its optimizer (the trainer's Trainer: its checkpoints go through llmc/run_plan.h as in a
// training run), fresh from model_path, or resumed from the checkpoint of resume_step in dir.
using Run = Trainer;

static void run_init(Run* run, const char* model_path, const DebugState& d, int recompute, bool use_8bit,
                     MultiGpuConfig* mgc, const char* dir = nullptr, int resume_step = 0) {
    std::string path = dir ? checkpoint_path(dir, "model", resume_step, -1) : std::string(model_path);
    gpt2_build_from_checkpoint(&run->model, path.c_str());
    optimizer_init(&run->opt, &run->model, mgc, 0, use_8bit, TEST_BLOCK, true, TEST_SEED);
    gpt2_allocate(&run->model, run->opt.layout.padded_params, d.B, d.T, recompute);
    optimizer_allocate(&run->opt, &run->model);
    if (dir) {
        RunPlan plan;
        plan.resume_step = resume_step;
        TrainState st;
        run_load_state(run, &plan, dir, &st);
    }
}

static void run_free(Run* run) {
    optimizer_free(&run->opt);
    gpt2_free(&run->model);
}

// One AdamW step (t 1-based) on the debug batch; returns the loss before the update. grads_out, when
// given, receives this step's floatX gradients (raw bytes, num_parameters values).
static float train_step(Run* run, const DebugState& d, int t, MultiGpuConfig* mgc,
                        std::vector<uint8_t>* grads_out = nullptr) {
    GPT2* m = &run->model;
    gpt2_zero_grad(m);
    gpt2_forward(m, d.x.data(), d.y.data(), d.B, d.T, 1.0f / (d.B * d.T));
    gpt2_backward(m, mgc, false);
    float loss = gpt2_wait_loss(m, d.B, d.T);
    if (grads_out) {
        grads_out->resize(m->num_parameters * sizeof(floatX));
        cudaCheck(
            cudaMemcpy(grads_out->data(), m->micro_grads_memory, grads_out->size(), cudaMemcpyDeviceToHost));
    }
    gpt2_update(m, &run->opt, mgc, DEBUG_ADAMW_LR, debug_adamw(), t);
    return loss;
}

static std::vector<uint8_t> params_bytes(const GPT2* m) {
    std::vector<uint8_t> bytes(m->num_parameters * sizeof(floatX));
    cudaCheck(cudaMemcpy(bytes.data(), m->params_memory, bytes.size(), cudaMemcpyDeviceToHost));
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
        run_init(&run, model_path, d, recompute, false, &mgc);
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

    // 2. every recompute mode gives the bits of -r 0
    printf("-- recompute modes against -r 0 (first step's loss and gradients, 3 steps' losses)\n");
    {
        const int steps = 3;
        std::vector<float> losses0;
        std::vector<uint8_t> grads0;
        for (int r = 0; r <= 3; r++) {
            Run run;
            run_init(&run, model_path, d, r, false, &mgc);
            std::vector<float> losses;
            std::vector<uint8_t> grads;
            for (int step = 0; step < steps; step++) {
                losses.push_back(train_step(&run, d, step + 1, &mgc, step == 0 ? &grads : nullptr));
            }
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

    // 3. save at step 5, resume in a fresh model, continue: the same bits as an uninterrupted run
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
            run_init(&run, model_path, d, 0, use_8bit == 1, &mgc);
            for (int step = 0; step < total; step++) {
                if (step == save_at) {
                    Rng rng;
                    rng_init(&rng, 1);
                    RunPlan plan; // one process, rank 0
                    run_save_checkpoint(&run, &plan, dir, TrainState{step, DataLoaderState{0, 0, 0}, rng});
                }
                float loss = train_step(&run, d, step + 1, &mgc);
                if (step >= save_at) straight.push_back(loss);
            }
            params_straight = params_bytes(&run.model);
            run_free(&run);
        }
        {
            if (find_latest_checkpoint(dir) != save_at)
                fail("checkpoint_latest in '%s' does not name step %d", dir, save_at);
            Run run;
            run_init(&run, model_path, d, 0, use_8bit == 1, &mgc, dir, save_at);
            for (int step = save_at; step < total; step++)
                resumed.push_back(train_step(&run, d, step + 1, &mgc));
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
        snprintf(what, sizeof(what), "%s: final parameters", opt_name);
        check_identical(what, params_straight == params_resumed);
    }

    return test_summary("test_gpt2cu");
}
