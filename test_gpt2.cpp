/*
test_gpt2: checks the CPU trainer (train_gpt2.cpp) against the PyTorch reference (train_gpt2.py).

  ./test_gpt2 <model.bin> <debug_state.bin>

The debug state (written by `train_gpt2.py --write-state`, computed there in float64) holds a batch x, y,
the logits, the loss and the gradient of every parameter for that batch, then the losses of NSTEPS AdamW
steps on it. This program runs the same forward, backward and steps in fp32 and compares:
  - logits, loss and each of the 16 gradient tensors: max |ours - ref| / max |ref| per tensor;
  - the loss after each AdamW step: |ours - ref| / |ref|.
It prints the error of every tensor and exits non-zero if any exceeds its tolerance.

Tolerances, and why they are tight enough. The reference is float64, so what we measure is this file's
fp32 rounding error: sums of at most a few thousand products, ~1e-7 .. 1e-6 of a tensor's scale (the
printout shows each). The tolerances sit ~10x above the largest observed error. The reference states are
made with train_gpt2.py --test-init (random biases and LayerNorm weights, order-1 pre-activations), because
at GPT-2's own init a zero bias or a GELU's cubic term hardly matter. A wrong formula then moves results far
more; tests/test_gpt2_mutations.sh builds these mutants and requires each to FAIL (measured on the tiny
configuration):
  - the qkv bias dropped from the forward:               loss off by 5e-3, wte gradient by 2e-1 (29 checks
fail)
  - attprojw read transposed (MUTATION=transpose_attprojw): loss off by 4e-2 (29 checks fail)
  - GELU's 0.044715 changed to 0.045 (0.6% off):           gradients off by up to 7.5e-5 (18 checks fail)
*/
#define TESTING
#include "train_gpt2.cpp"

// max |a - b| / max |b| over n values (b the reference); a scale-free error for a whole tensor
static double relative_error(const float* a, const float* b, size_t n, size_t stride_a = 0,
                             size_t stride_b = 0, size_t row = 0) {
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        size_t ia = i, ib = i;
        if (row > 0) { // compare the first `row` columns of rows with different strides
            ia = (i / row) * stride_a + i % row;
            ib = (i / row) * stride_b + i % row;
        }
        max_diff = fmax(max_diff, fabs((double)a[ia] - (double)b[ib]));
        max_ref = fmax(max_ref, fabs((double)b[ib]));
    }
    return max_ref > 0 ? max_diff / max_ref : max_diff;
}

static const double LOGITS_TOL = 5e-6;    // observed up to ~3e-7
static const double LOSS_TOL = 5e-6;      // observed 0 .. 1e-7
static const double GRAD_TOL = 1e-5;      // observed up to ~9e-7
static const double STEP_LOSS_TOL = 5e-6; // observed 0 .. 1e-7 over 10 steps

// the AdamW of the reference's 10 steps (train_gpt2.py uses the same constants)
static const float TEST_LR = 1e-4f, TEST_BETA1 = 0.9f, TEST_BETA2 = 0.999f, TEST_EPS = 1e-8f, TEST_WD = 0.01f;

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <model.bin> <debug_state.bin>\n", argv[0]);
        return 2;
    }
    const char* model_path = argv[1];
    const char* state_path = argv[2];
    GPT2 model;
    gpt2_build_from_checkpoint(&model, model_path);
    const GPT2Config& c = model.config;
    const int V = c.vocab_size, Vp = c.padded_vocab_size, C = c.channels;

    const char* mutation = getenv("MUTATION");
    if (mutation && strcmp(mutation, "transpose_attprojw") == 0) { // see the comment at the top
        std::vector<float> tmp((size_t)C * C);
        for (int l = 0; l < c.num_layers; l++) {
            float* w = model.params.attprojw + (size_t)l * C * C;
            for (int i = 0; i < C; i++)
                for (int j = 0; j < C; j++) tmp[(size_t)j * C + i] = w[(size_t)i * C + j];
            memcpy(w, tmp.data(), tmp.size() * sizeof(float));
        }
    }

    // the debug state
    File f(state_path, "rb");
    int header[HEADER_SLOTS];
    f.read(header, sizeof(int), HEADER_SLOTS, "the debug state header");
    if (header[0] != 20240327 || header[1] != 2) {
        fail("'%s' is not a debug state: expected magic 20240327 version 2, got %d version %d", state_path,
             header[0], header[1]);
    }
    const int B = header[2], T = header[3], nsteps = header[4];
    if (B <= 0 || T <= 0 || T > c.max_seq_len || nsteps < 0 || nsteps > 1000) {
        fail("'%s': bad header B=%d T=%d steps=%d for a model with maxT=%d", state_path, B, T, nsteps,
             c.max_seq_len);
    }
    std::vector<int> x((size_t)B * T), y((size_t)B * T);
    std::vector<float> ref_logits((size_t)B * T * V), ref_grads(model.num_parameters),
        ref_step_losses(nsteps);
    float ref_loss;
    f.read(x.data(), sizeof(int), x.size(), "inputs x");
    f.read(y.data(), sizeof(int), y.size(), "targets y");
    f.read(ref_logits.data(), sizeof(float), ref_logits.size(), "logits");
    f.read(&ref_loss, sizeof(float), 1, "loss");
    f.read(ref_grads.data(), sizeof(float), ref_grads.size(), "parameter gradients");
    f.read(ref_step_losses.data(), sizeof(float), ref_step_losses.size(), "AdamW step losses");
    if (fgetc(f.fp) != EOF)
        fail("'%s' has bytes after the step losses: does it match the model?", state_path);

    ProcessGroup pg; // single process
    Optimizer opt;
    optimizer_init(&opt, &model, &pg, 0, false, 0);
    gpt2_allocate_training_state(&model, B, T);
    printf("model L=%d C=%d NH=%d V=%d Vp=%d; batch B=%d T=%d; %d AdamW steps\n", c.num_layers, C,
           c.num_heads, V, Vp, B, T, nsteps);

    int failures = 0;
    auto check = [&](const char* what, double err, double tol) {
        bool ok = err <= tol && std::isfinite(err);
        printf("%-10s max rel err %.3e (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
        if (!ok) failures++;
    };

    gpt2_forward(&model, x.data(), y.data(), B, T);
    check("logits", relative_error(model.acts.logits, ref_logits.data(), (size_t)B * T * V, Vp, V, V),
          LOGITS_TOL);
    check("loss", fabs(model.mean_loss - ref_loss) / fabs(ref_loss), LOSS_TOL);
    gpt2_zero_grad(&model);
    gpt2_backward(&model, 1.0f);
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        check(PARAMETER_NAMES[i],
              relative_error(model.grads_memory + offset, ref_grads.data() + offset, model.param_sizes[i]),
              GRAD_TOL);
        offset += model.param_sizes[i];
    }

    AdamWConfig h;
    h.beta1 = TEST_BETA1;
    h.beta2 = TEST_BETA2;
    h.eps = TEST_EPS;
    h.weight_decay = TEST_WD;
    h.grad_clip = 0.0f;
    for (int step = 0; step < nsteps; step++) {
        gpt2_forward(&model, x.data(), y.data(), B, T);
        gpt2_zero_grad(&model);
        gpt2_backward(&model, 1.0f);
        char name[32];
        snprintf(name, sizeof(name), "step %d", step);
        printf("  loss %.6f ref %.6f  ", model.mean_loss, ref_step_losses[step]);
        check(name, fabs(model.mean_loss - ref_step_losses[step]) / fabs(ref_step_losses[step]),
              STEP_LOSS_TOL);
        gpt2_update(&model, &opt, &pg, TEST_LR, h, step + 1);
    }
    optimizer_free(&opt);
    gpt2_free(&model);
    printf(failures == 0 ? "all checks passed\n" : "%d checks FAILED\n", failures);
    return failures == 0 ? 0 : 1;
}
