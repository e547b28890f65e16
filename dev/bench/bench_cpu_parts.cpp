// bench_cpu_parts: where a CPU training step's time goes. Trains a fresh model (default d12) at B=4,
// T=64 on fixed random tokens for a few steps with the trainer's own functions (train_gpt2.cpp, built in),
// and prints the median over the steps after the first of: the whole step; the matmuls (forward, both
// gradients and the bias gradients: the time train_gpt2.cpp's SecondsTimer counts into step_part_seconds),
// with their GFLOP/s; attention (forward and backward); and the rest (encoder, layernorms, GELU, residuals,
// softmax and cross-entropy, zeroing the gradients, the gradient norm and AdamW), the step minus the two.
//   build/bench_cpu_parts [model] [steps]      (OMP_NUM_THREADS threads; built by dev/bench/bench_cpu.sh)
#define TESTING
#include "train_gpt2.cpp"

#include <algorithm>
#include <random>

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main(int argc, char** argv) {
    const char* desc = argc > 1 ? argv[1] : "d12";
    const int steps = argc > 2 ? atoi(argv[2]) : 6, B = 4, T = 64;
    GPT2Config config;
    if (!gpt2_config_from_descriptor(desc, &config) || steps < 2) {
        fprintf(stderr, "usage: bench_cpu_parts [model: d12, d4, ...] [steps >= 2]\n");
        return 2;
    }
    GPT2 model;
    gpt2_build_from_random(&model, config, 1337);
    ProcessGroup pg;
    Optimizer opt;
    optimizer_init(&opt, &model, &pg, 0, false, 0);
    gpt2_allocate_training_state(&model, B, T);
    std::mt19937 rng(42);
    std::vector<int> tokens(B * T + 1);
    for (int& t : tokens) t = (int)(rng() % config.vocab_size);

    const double C = config.channels, L = config.num_layers, Vp = config.padded_vocab_size;
    const double matmul_flops = 6.0 * B * T * (L * 12 * C * C + Vp * C); // forward + two gradients
    std::vector<double> step_ms, matmul_ms, attention_ms, rest_ms;
    for (int step = 0; step < steps; step++) {
        double before[NUM_STEP_PARTS];
        memcpy(before, step_part_seconds, sizeof(before));
        const double t0 = omp_get_wtime();
        gpt2_forward(&model, tokens.data(), tokens.data() + 1, B, T);
        gpt2_zero_grad(&model);
        gpt2_backward(&model, 1.0f);
        gpt2_update(&model, &opt, &pg, 1e-4f, AdamWConfig{}, step + 1);
        const double ms = 1e3 * (omp_get_wtime() - t0);
        const double mm = 1e3 * (step_part_seconds[PART_MATMULS] - before[PART_MATMULS]);
        const double at = 1e3 * (step_part_seconds[PART_ATTENTION] - before[PART_ATTENTION]);
        if (step == 0) continue; // the first step also faults in its memory
        step_ms.push_back(ms);
        matmul_ms.push_back(mm);
        attention_ms.push_back(at);
        rest_ms.push_back(ms - mm - at);
    }
    const double s = median(step_ms), m = median(matmul_ms), a = median(attention_ms), r = median(rest_ms);
    printf("%s B=%d T=%d, %d threads, median of %d steps: step %.1f ms\n", desc, B, T, omp_get_max_threads(),
           (int)step_ms.size(), s);
    printf("  matmuls   %7.1f ms  %4.1f%%  %.1f GFLOP/s\n", m, 100 * m / s, matmul_flops / m / 1e6);
    printf("  attention %7.1f ms  %4.1f%%\n", a, 100 * a / s);
    printf("  the rest  %7.1f ms  %4.1f%%\n", r, 100 * r / s);
    optimizer_free(&opt);
    gpt2_free(&model);
    return 0;
}
