// schedulers.h: learning-rate schedules and batch-size scaling of the learning rate, shared by the
// CPU and GPU trainers.
//
// Definitions (step is 0-based, the run has total_steps steps 0 .. total-1, final = final_frac*peak):
//
//   warmup, step < warmup:   lr = peak * (step+1) / warmup
//       (the first step already trains, with peak/warmup; step warmup-1 reaches peak)
//
//   after warmup, progress   p = (step - warmup) / (total-1 - warmup),  clamped to [0, 1]
//       (total-1 in the denominator so that the last step, total-1, has p = 1 exactly and reaches
//       final; when warmup = total-1 the single remaining step has p = 1; steps past the end stay
//       at p = 1)
//
//   cosine:    lr = final + (peak - final) * 0.5 * (1 + cos(pi * p))
//   linear:    lr = peak + (final - peak) * p
//   constant:  lr = peak
//   wsd (warmup-stable-decay): the last K = round(cooldown_frac * total) steps decay, the rest of the
//       post-warmup steps stay at peak. With d = total - K (the first decaying step):
//         step < d:   lr = peak
//         step >= d:  lr = peak + (final - peak) * q,  q = (step - (d-1)) / K,  clamped to [0, 1]
//       i.e. a straight line from peak at the last stable step d-1 to final at the last step total-1
//       (the same "+1" convention as the warmup). K = 0 means no decay at all.
//
// Batch-size scaling (scale_lr_for_batch): when the batch grows by a factor k = batch/ref,
//   "linear": lr * k         the rule for SGD: k small steps ~ one step with a k times bigger batch
//                            and k times the lr (Goyal et al. 2017)
//   "sqrt":   lr * sqrt(k)   the rule for Adam-like optimizers, whose update size is normalized by the
//                            gradient scale: the gradient noise std shrinks as 1/sqrt(k) (Malladi et
//                            al. 2022)
//   "none":   lr
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>

#include "llmc/utils.h"

enum LRScheduleType { LR_COSINE = 0, LR_LINEAR = 1, LR_CONSTANT = 2, LR_WSD = 3 };

struct LRScheduler {
    int type; // LRScheduleType
    float peak_lr;
    int warmup_steps;
    int total_steps;
    float final_frac;
    float cooldown_frac;
};

// Number of decaying steps at the end of a wsd schedule: K = round(cooldown_frac * total).
inline int lr_wsd_cooldown_steps(const LRScheduler* s) {
    return (int)std::lround((double)s->cooldown_frac * (double)s->total_steps);
}

inline void lr_scheduler_init(LRScheduler* s, const char* type, float peak_lr, int warmup_steps,
                              int total_steps, float final_frac, float cooldown_frac) {
    if (strcmp(type, "cosine") == 0) {
        s->type = LR_COSINE;
    } else if (strcmp(type, "linear") == 0) {
        s->type = LR_LINEAR;
    } else if (strcmp(type, "constant") == 0) {
        s->type = LR_CONSTANT;
    } else if (strcmp(type, "wsd") == 0) {
        s->type = LR_WSD;
    } else {
        fail("flag -k: unknown learning-rate schedule '%s'; choices: cosine, linear, constant, wsd", type);
    }
    if (!(peak_lr >= 0.0f) || !std::isfinite(peak_lr)) {
        fail("learning rate must be a finite number >= 0, got %g", (double)peak_lr);
    }
    if (total_steps < 1) fail("learning-rate schedule: total steps must be >= 1, got %d", total_steps);
    if (warmup_steps < 0 || warmup_steps > total_steps) {
        fail("learning-rate schedule: warmup steps must be in [0, total steps = %d], got %d", total_steps,
             warmup_steps);
    }
    if (!(final_frac >= 0.0f && final_frac <= 1.0f)) {
        fail("learning-rate schedule: final lr fraction must be in [0, 1], got %g", (double)final_frac);
    }
    if (!(cooldown_frac >= 0.0f && cooldown_frac <= 1.0f)) {
        fail("learning-rate schedule: cooldown fraction must be in [0, 1], got %g", (double)cooldown_frac);
    }
    s->peak_lr = peak_lr;
    s->warmup_steps = warmup_steps;
    s->total_steps = total_steps;
    s->final_frac = final_frac;
    s->cooldown_frac = cooldown_frac;
    if (s->type == LR_WSD) {
        int K = lr_wsd_cooldown_steps(s);
        if (warmup_steps + K > total_steps) {
            fail("wsd schedule: warmup (%d steps) and cooldown (%g * %d = %d steps) overlap in a %d-step run",
                 warmup_steps, (double)cooldown_frac, total_steps, K, total_steps);
        }
    }
}

inline float lr_at_step(const LRScheduler* s, int step) {
    // computed in double, rounded once at the end
    double peak = s->peak_lr;
    double final_lr = (double)s->final_frac * peak;
    int warmup = s->warmup_steps, total = s->total_steps;
    if (step < 0) step = 0;
    if (step < warmup) return (float)(peak * (double)(step + 1) / (double)warmup);
    double p = 1.0;
    if (total - 1 - warmup > 0) p = std::min(1.0, (double)(step - warmup) / (double)(total - 1 - warmup));
    switch (s->type) {
    case LR_COSINE:
        return (float)(final_lr + (peak - final_lr) * 0.5 * (1.0 + std::cos(M_PI * p)));
    case LR_LINEAR:
        return (float)(peak + (final_lr - peak) * p);
    case LR_WSD: {
        int K = lr_wsd_cooldown_steps(s);
        int d = total - K;
        if (K == 0 || step < d) return (float)peak;
        double q = std::min(1.0, (double)(step - (d - 1)) / (double)K);
        return (float)(peak + (final_lr - peak) * q);
    }
    default:
        return (float)peak; // LR_CONSTANT
    }
}

inline float scale_lr_for_batch(float base_lr, size_t ref_batch_tokens, size_t batch_tokens,
                                const char* rule) {
    if (strcmp(rule, "none") == 0) return base_lr;
    if (ref_batch_tokens == 0) fail("lr batch scaling: the reference batch size must be positive");
    double k = (double)batch_tokens / (double)ref_batch_tokens;
    if (strcmp(rule, "linear") == 0) return (float)((double)base_lr * k);
    if (strcmp(rule, "sqrt") == 0) return (float)((double)base_lr * std::sqrt(k));
    fail("unknown lr batch-scaling rule '%s'; choices: none, linear, sqrt", rule);
}
