/*
test_zero_sim: the GPU trainer's data-parallel paths (train_gpt2.cu) with 2 simulated processes (threads;
the collectives of dev/cuda/trainer_sim/llmc/sim_layers.h stand in for NCCL), FP32 build.

  test_zero_sim <model.bin> <debug_state.bin>

The debug state's batch (B rows) is split: process r takes rows [r*B/2, (r+1)*B/2). Two processes averaging
their gradients must train like one process on the whole batch, up to fp32 rounding (the mean over B*T
positions is taken in two halves). Checked over 5 AdamW steps with clipping at 1.0 (so the global norm and
the clip factor matter):
  ZeRO-0: the per-layer all-reduce of the last micro-step's backward (gpt2_grads_ready's offsets) and the
          update of the full buffer on every process;
  ZeRO-1: reduce-scatter, the norm summed over shards, AdamW on each shard (shard_ranges), all-gather;
  ZeRO-1 with 8-bit AdamW: the per-shard block layout (blocks differ from one process's: looser tolerance).
Each: mean loss and norm of every step within 1e-5 relative of one process (8-bit: 1e-3), and the two
processes' parameters bit-identical after the last step.
*/
#define TESTING
#include "train_gpt2.cu"

#include <thread>

static int failures = 0;
static void check(bool ok, const char* fmt, double a, double b) {
    printf(fmt, a, b);
    printf(" %s\n", ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

struct RunOut {
    std::vector<float> losses, norms;
    std::vector<float> params;
};

// one process's training: rows [row0, row0 + B) of the batch, 5 steps
static void train(RunOut* out, const char* model_path, const std::vector<int>& x, const std::vector<int>& y,
                  int row0, int B, int T, int zero, bool use_8bit, MultiGpuConfig mgc) {
    GPT2 model;
    Optimizer opt;
    gpt2_build_from_checkpoint(&model, model_path);
    optimizer_init(&opt, &model, &mgc, zero, use_8bit, 256, true, 1337);
    gpt2_allocate(&model, opt.layout.padded_params, B, T, 0);
    optimizer_allocate(&opt, &model);
    AdamWConfig h;
    h.beta1 = 0.9f, h.beta2 = 0.999f, h.eps = 1e-8f, h.weight_decay = 0.01f, h.grad_clip = 1.0f;
    for (int step = 0; step < 5; step++) {
        const int* xs = x.data() + (size_t)row0 * T;
        const int* ys = y.data() + (size_t)row0 * T;
        gpt2_forward(&model, xs, ys, B, T, 1.0f / (B * T));
        gpt2_backward(&model, &mgc,
                      zero == 0 && mgc.num_processes > 1); // as main: overlap on the last micro-step
        float loss = gpt2_wait_loss(&model, B, T);
        float norm = gpt2_update(&model, &opt, &mgc, 1e-3f, h, step + 1);
        out->losses.push_back(multi_gpu_sum_host(&mgc, loss, 0) / mgc.num_processes);
        out->norms.push_back(norm);
    }
    out->params.resize(model.num_parameters);
    download_floatX(out->params.data(), model.params_memory, model.num_parameters);
    optimizer_free(&opt);
    gpt2_free(&model);
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <model.bin> <debug_state.bin>\n", argv[0]);
        return 2;
    }
    File f(argv[2], "rb");
    int header[HEADER_SLOTS];
    f.read(header, sizeof(int), HEADER_SLOTS, "the debug state header");
    const int B = header[2], T = header[3];
    if (header[0] != 20240327 || B % 2 != 0) fail("'%s': need a debug state with an even B", argv[2]);
    std::vector<int> x((size_t)B * T), y((size_t)B * T);
    f.read(x.data(), sizeof(int), x.size(), "inputs x");
    f.read(y.data(), sizeof(int), y.size(), "targets y");

    for (int use_8bit = 0; use_8bit <= 1; use_8bit++) {
        RunOut one;
        train(&one, argv[1], x, y, 0, B, T, 0, use_8bit == 1, MultiGpuConfig{});
        for (int zero = use_8bit ? 1 : 0; zero <= 1; zero++) {
            printf("-- 2 processes, ZeRO-%d, %s AdamW, against 1 process\n", zero,
                   use_8bit ? "8-bit" : "fp32");
            SimComm comm(2);
            RunOut two[2];
            std::vector<std::thread> threads;
            for (int r = 0; r < 2; r++) {
                MultiGpuConfig mgc{r, 2, r, &comm};
                threads.emplace_back(train, &two[r], argv[1], std::cref(x), std::cref(y), r * B / 2, B / 2, T,
                                     zero, use_8bit == 1, mgc);
            }
            for (auto& t : threads) t.join();
            const double tol = use_8bit ? 1e-3 : 1e-5;
            for (size_t s = 0; s < one.losses.size(); s++) {
                printf("step %zu: ", s + 1);
                check(fabs(two[0].losses[s] - one.losses[s]) <= tol * fabs(one.losses[s]),
                      "loss %.6f vs %.6f", two[0].losses[s], one.losses[s]);
                printf("        ");
                check(fabs(two[0].norms[s] - one.norms[s]) <= tol * fabs(one.norms[s]), "norm %.6f vs %.6f",
                      two[0].norms[s], one.norms[s]);
            }
            const bool same =
                memcmp(two[0].params.data(), two[1].params.data(), two[0].params.size() * 4) == 0;
            printf("the two processes' parameters after 5 steps: %s\n",
                   same ? "bit-identical" : "DIFFERENT: FAIL");
            if (!same) failures++;
        }
    }
    printf(failures == 0 ? "all checks passed\n" : "%d checks FAILED\n", failures);
    return failures == 0 ? 0 : 1;
}
