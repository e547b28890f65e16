/*
test_gpt2: checks the CPU trainer (train_gpt2.cpp) against the PyTorch reference (train_gpt2.py).

  ./test_gpt2 <model.bin> <debug_state.bin>
  ./test_gpt2 <base model.bin> <LoRA debug state.bin>      (train_gpt2.py --write-lora-state: see test_lora)

The debug state (written by `train_gpt2.py --write-state`, computed there in float64, read by
tests/common/debug_state.h) holds a batch x, y, the logits, the loss and the gradient of every parameter for
that batch, then the losses of NSTEPS AdamW steps on it. This program runs the same forward, backward and
steps in fp32 and compares:
  - logits, loss and each of the 16 gradient tensors: max |ours - ref| / max |ref| per tensor;
  - the loss after each AdamW step: |ours - ref| / |ref|.
It prints the error of every tensor and exits non-zero if any exceeds its tolerance.

Tolerances, and why they are tight enough. The reference is float64, so what we measure is this file's
fp32 rounding error: sums of at most a few thousand products, ~1e-7 .. 1e-6 of a tensor's scale (the
printout shows each). The tolerances sit ~10x above the largest observed error. The reference states are
made with train_gpt2.py --test-init (random biases and LayerNorm weights, order-1 pre-activations), because
at GPT-2's own init a zero bias or a GELU's cubic term hardly matter. A wrong formula then moves results far
more; tests/model/test_gpt2_mutations.sh builds these mutants and requires each to FAIL (measured on the
tiny configuration):
  - the qkv bias dropped from the forward:                  loss 5e-3 off, wte gradient 2e-1 (29 checks fail)
  - attprojw read transposed (MUTATION=transpose_attprojw): loss off by 4e-2 (29 checks fail)
  - GELU's 0.044715 changed to 0.045 (0.6% off):            gradients off by up to 7.5e-5 (18 checks fail)
*/
#define TESTING
#include "train_gpt2.cpp"

#include "tests/common/debug_state.h"
#include "tests/common/test_common.h"

static const double LOGITS_TOL = 5e-6;    // observed up to ~3e-7
static const double LOSS_TOL = 5e-6;      // observed 0 .. 1e-7
static const double GRAD_TOL = 1e-5;      // observed up to ~9e-7
static const double STEP_LOSS_TOL = 5e-6; // observed 0 .. 1e-7 over 10 steps

// an error against its tolerance (a NaN fails)
static void check(double err, double tol, const char* what) {
    CHECK_LE(err, tol, "%-10s max rel err", what);
}

// Forward and backward on the reference's batch x, y (B, T), the gradients zeroed first: the logits (the
// reference's are (B,T,V), ours (B,T,Vp)) and the loss against it.
void check_forward_backward(GPT2* model, const int* x, const int* y, int B, int T, const float* ref_logits,
                            float ref_loss) {
    const int V = model->config.vocab_size, Vp = model->config.padded_vocab_size;
    gpt2_forward(model, x, y, B, T);
    check(relative_error(model->acts.logits, ref_logits, (size_t)B * T * V, Vp, V, V), LOGITS_TOL, "logits");
    check(fabs(model->mean_loss - ref_loss) / fabs(ref_loss), LOSS_TOL, "loss");
    gpt2_zero_grad(model);
    gpt2_backward(model, 1.0f);
}

// The reference's AdamW steps on its batch x, y (B, T): the loss before each against step_losses.
void check_adamw_steps(GPT2* model, Optimizer* opt, ProcessGroup* pg, const int* x, const int* y, int B,
                       int T, const std::vector<float>& step_losses) {
    for (size_t step = 0; step < step_losses.size(); step++) {
        gpt2_forward(model, x, y, B, T);
        gpt2_zero_grad(model);
        gpt2_backward(model, 1.0f);
        char name[64];
        snprintf(name, sizeof(name), "step %zu (loss %.6f, ref %.6f)", step, model->mean_loss,
                 step_losses[step]);
        check(fabs(model->mean_loss - step_losses[step]) / fabs(step_losses[step]), STEP_LOSS_TOL, name);
        gpt2_update(model, opt, pg, DEBUG_ADAMW_LR, debug_adamw(), (int)step + 1);
    }
}

// The LoRA test: the model file is the frozen base, the state train_gpt2.py's --write-lora-state (its
// adapters random, B included, so every term of the forward and of the gradients is non-zero). Checks
//   - fresh adapters (B = 0) give the base model's logits bit for bit (fp32 base);
//   - logits, loss and the gradient of every adapter tensor against the reference, and its 10 AdamW steps;
//   - the merged model file (W + s.B.A, a plain fp32 llm.c file) gives the logits of base + adapters.
// With an NF4 base (the reference dequantizes with its own NF4 in numpy) the same tolerances hold.
// Mutants (MUTATION=...), each must FAIL: lora_scale_twice (s^2 instead of s), lora_b_random (fresh B not
// zero), nf4_ignored (the base left in fp32 when the state's is NF4).
static const double MERGE_TOL = 1e-5; // observed ~1e-7: the same sums in another order
int test_lora(const char* model_path, const char* state_path, const char* mutation) {
    GPT2 base, model;
    gpt2_build_from_checkpoint(&base, model_path);
    gpt2_build_from_checkpoint(&model, model_path);
    const GPT2Config& c = model.config;
    const int V = c.vocab_size, Vp = c.padded_vocab_size;
    LoraDebugState d;
    lora_debug_state_read(&d, state_path, c);
    const int B = d.B, T = d.T;
    LoraConfig lc = d.lora;
    if (mutation && strcmp(mutation, "lora_scale_twice") == 0) lc.alpha = lc.alpha * lc.alpha / lc.rank;
    if (mutation && strcmp(mutation, "nf4_ignored") == 0) lc.nf4 = false;
    gpt2_setup_lora(&model, lc, 1337);
    ProcessGroup pg;
    Optimizer opt;
    optimizer_init(&opt, &model, &pg, 0, false, 0);
    gpt2_allocate_training_state(&model, B, T);
    gpt2_allocate_training_state(&base, B, T);
    printf("LoRA r=%d alpha=%g on %s, %s base; model L=%d C=%d V=%d; B=%d T=%d; %d AdamW steps\n", lc.rank,
           (double)lc.alpha, lora_targets_text(lc.targets).c_str(), lc.nf4 ? "NF4" : "fp32", c.num_layers,
           c.channels, V, B, T, d.nsteps);
    test_list_checks();
    const size_t logits_n = (size_t)B * T * Vp;

    // fresh adapters: B = 0, so exactly the base's logits
    if (mutation && strcmp(mutation, "lora_b_random") == 0) {
        for (int i = 0; i < model.lora_layout.num_tensors; i++) {
            if (!model.lora_layout.tensor_is_b[i]) continue;
            size_t off = 0;
            for (int k = 0; k < i; k++) off += model.lora_layout.sizes[k];
            Rng rng;
            rng_init(&rng, 7);
            rng_fill_normal(&rng, model.lora_memory + off, model.lora_layout.sizes[i], 0.0f, 0.01f);
        }
    }
    gpt2_forward(&base, d.x.data(), d.y.data(), B, T);
    gpt2_forward(&model, d.x.data(), d.y.data(), B, T);
    if (!lc.nf4) {
        size_t differ = 0;
        for (size_t i = 0; i < logits_n; i++) differ += model.acts.logits[i] != base.acts.logits[i];
        CHECK(differ == 0, "fresh adapters (B = 0): the base's logits bit for bit (%zu of %zu differ)",
              differ, logits_n);
    }

    // the reference's adapters: logits, loss, gradients
    memcpy(model.lora_memory, d.adapters.data(), d.adapters.size() * sizeof(float));
    check_forward_backward(&model, d.x.data(), d.y.data(), B, T, d.logits.data(), d.loss);
    size_t offset = 0;
    for (int i = 0; i < model.lora_layout.num_tensors; i++) {
        const std::string name = "d" + lora_tensor_name(model.lora_layout, i);
        check(
            relative_error(model.grads_memory + offset, d.grads.data() + offset, model.lora_layout.sizes[i]),
            GRAD_TOL, name.c_str());
        offset += model.lora_layout.sizes[i];
    }

    // the merged model file: a plain model whose logits are base + adapters'
    const std::string merged_path = std::string(state_path) + ".merged.bin";
    gpt2_write_merged(&model, merged_path.c_str());
    GPT2 merged;
    gpt2_build_from_checkpoint(&merged, merged_path.c_str());
    gpt2_allocate_training_state(&merged, B, T);
    gpt2_forward(&merged, d.x.data(), d.y.data(), B, T);
    check(relative_error(merged.acts.logits, model.acts.logits, logits_n), MERGE_TOL, "merged model logits");
    remove(merged_path.c_str());

    check_adamw_steps(&model, &opt, &pg, d.x.data(), d.y.data(), B, T, d.step_losses);
    optimizer_free(&opt);
    gpt2_free(&model);
    gpt2_free(&base);
    gpt2_free(&merged);
    return test_summary("test_gpt2 (LoRA)");
}

int main(int argc, char** argv) {
    program_init();
    if (argc != 3) {
        fprintf(stderr, "usage: %s <model.bin> <debug_state.bin or LoRA debug state>\n", argv[0]);
        return 2;
    }
    const char* model_path = argv[1];
    const char* state_path = argv[2];
    if (debug_state_magic(state_path) == LORA_DEBUG_STATE_MAGIC)
        return test_lora(model_path, state_path, getenv("MUTATION"));
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

    DebugState d;
    debug_state_read(&d, state_path, c);
    const int B = d.B, T = d.T;

    ProcessGroup pg; // single process
    Optimizer opt;
    optimizer_init(&opt, &model, &pg, 0, false, 0);
    gpt2_allocate_training_state(&model, B, T);
    printf("model L=%d C=%d NH=%d V=%d Vp=%d; batch B=%d T=%d; %d AdamW steps\n", c.num_layers, C,
           c.num_heads, V, Vp, B, T, d.nsteps);

    // each error against its tolerance (a NaN fails)
    test_list_checks();

    check_forward_backward(&model, d.x.data(), d.y.data(), B, T, d.logits.data(), d.loss);
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        check(relative_error(model.grads_memory + offset, d.grads.data() + offset, model.param_sizes[i]),
              GRAD_TOL, PARAMETER_NAMES[i]);
        offset += model.param_sizes[i];
    }

    check_adamw_steps(&model, &opt, &pg, d.x.data(), d.y.data(), B, T, d.step_losses);
    optimizer_free(&opt);
    gpt2_free(&model);
    return test_summary("test_gpt2");
}
