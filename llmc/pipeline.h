// pipeline.h: pipeline parallelism's arithmetic: which layers a stage runs, which parameters it holds, the
// order in which it runs its micro-batches and sends its messages. Arithmetic only (no MPI, no NCCL), tested
// on its own (tests/unit/test_pipeline.cpp); both trainers run it (train_gpt2.cpp over MPI, train_gpt2.cu
// over NCCL).
//
// The L layers are cut into P contiguous stages, one process each: stage 0 also runs the embedding, the
// last stage the final LayerNorm, the classifier and the loss (so it takes fewer layers: pipeline_stage). A
// stage sends the output of its last layer (B*T*C floats) to the next one and receives the gradient of that
// output back. The micro-batches of one optimizer step (the gradient accumulation steps) flow through the
// stages, so that stages work at once:
//
//   GPipe (Huang et al. 2019): every forward, then every backward. Stage s holds the activations of all M
//   micro-batches at the turn.
//   1F1B (PipeDream-Flush, Narayanan et al. 2019/2021): stage s runs P-s-1 forwards to fill the pipe, then
//   alternates one forward and one backward, then drains the backwards. It holds at most P-s micro-batches'
//   activations, whatever M.
//
// Both run each micro-batch's forward and backward once, so the summed gradients, and the losses, are those
// of one process over the same batch (to the order of fp32 sums). Both leave the same idle time: with
// equal stages and a forward plus backward of time t per micro-batch, the step takes (M + P - 1) t, of which
// each stage works M t:  bubble = (P - 1) / (M + P - 1).
//
// With data parallelism too, the world is P x N_d processes: rank = replica * P + stage, so the stages of a
// replica are neighbours (on one machine first) and every stage's N_d copies form a data-parallel group.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <vector>

#include "llmc/checkpoint.h"
#include "llmc/utils.h"

enum PipeSchedule { PIPE_GPIPE = 0, PIPE_1F1B = 1 };

// The part of the model one stage runs.
struct PipeStage {
    int stage = 0, num_stages = 1;
    int first_layer = 0, num_layers = 0; // layers [first_layer, first_layer + num_layers) of the model
    bool first = true, last = true;      // runs the embedding / the final LayerNorm, classifier and loss
};

// The classifier's work in layers: its matmul has Vp*C weights against a layer's 12*C*C (qkv 3, attproj 1,
// fc 4, fcproj 4; the attention itself, 2*T*C per position against 12*C*C, is left out: 1% at T=64 and
// C=768), so it costs Vp / (12 C) layers: 5.5 for GPT-2 small (d12), 16.4 for d4.
inline double pipeline_head_layers(const GPT2Config& c) {
    return (double)c.padded_vocab_size / (12.0 * (double)c.channels);
}

// Stage s of P over L layers, the last stage also running a head that costs head_layers layers (the
// classifier: pipeline_head_layers): the split whose slowest stage has the least work. The last stage takes
// n layers, the first P - 1 share the other L - n evenly (L - n over P - 1 each, the first (L - n) mod
// (P - 1) one more), and n minimizes the slowest stage's work, max(ceil((L - n) / (P - 1)), n +
// head_layers); of several such n, the one whose idlest stage has the most work, then the smallest. With
// head_layers 0 that is the even split, the extra layers at the front. Every stage has a layer.
inline PipeStage pipeline_stage(int num_layers, int num_stages, int s, double head_layers = 0.0) {
    if (num_stages < 1 || num_stages > num_layers || s < 0 || s >= num_stages) {
        fail("pipeline_stage: stage %d of %d over %d layers (every stage needs a layer)", s, num_stages,
             num_layers);
    }
    PipeStage st;
    st.stage = s;
    st.num_stages = num_stages;
    st.first = s == 0;
    st.last = s == num_stages - 1;
    if (num_stages == 1) {
        st.num_layers = num_layers;
        return st;
    }
    const int front = num_stages - 1;
    int last_layers = 1;
    double best_max = 0.0, best_min = 0.0;
    for (int n = 1; n <= num_layers - front; n++) {
        const double most = std::max((double)ceil_div(num_layers - n, front), n + head_layers);
        const double least = std::min((double)((num_layers - n) / front), n + head_layers);
        if (n == 1 || most < best_max || (most == best_max && least > best_min)) {
            best_max = most, best_min = least, last_layers = n;
        }
    }
    if (st.last) {
        st.num_layers = last_layers;
        st.first_layer = num_layers - last_layers;
        return st;
    }
    const int base = (num_layers - last_layers) / front, extra = (num_layers - last_layers) % front;
    st.num_layers = base + (s < extra ? 1 : 0);
    st.first_layer = s * base + std::min(s, extra);
    return st;
}

// Stage s of P of a GPT-2 model: its classifier is the last stage's head.
inline PipeStage pipeline_model_stage(const GPT2Config& c, int num_stages, int s) {
    return pipeline_stage(c.num_layers, num_stages, s, pipeline_head_layers(c));
}

// The stage's parameters, in file order like the whole model's: the 12 per-layer tensors hold its layers
// only; wte is held by the first stage (the embedding) and the last (the tied classifier), wpe by the first,
// lnfw and lnfb by the last; what a stage does not hold has size 0. sizes: the whole model's.
inline void pipeline_stage_sizes(const size_t sizes[NUM_PARAMETER_TENSORS], int num_layers,
                                 const PipeStage& st, size_t out[NUM_PARAMETER_TENSORS]) {
    for (int t = 0; t < NUM_PARAMETER_TENSORS; t++) out[t] = sizes[t];
    for (int t = TENSOR_LN1W; t <= TENSOR_FCPROJB; t++) out[t] = sizes[t] / num_layers * st.num_layers;
    if (!st.first && !st.last) out[TENSOR_WTE] = 0;
    if (!st.first) out[TENSOR_WPE] = 0;
    if (!st.last) out[TENSOR_LNFW] = out[TENSOR_LNFB] = 0;
}
// How many parameters the stage holds: the sum of those sizes.
inline size_t pipeline_stage_num_params(const size_t sizes[NUM_PARAMETER_TENSORS], int num_layers,
                                        const PipeStage& st) {
    size_t mine[NUM_PARAMETER_TENSORS], n = 0;
    pipeline_stage_sizes(sizes, num_layers, st, mine);
    for (size_t x : mine) n += x;
    return n;
}

// Where the stage's parameters lie in the whole model's flat buffer: one piece per held tensor.
struct PipePiece {
    size_t stage_offset, model_offset, count;
};
inline std::vector<PipePiece> pipeline_pieces(const size_t sizes[NUM_PARAMETER_TENSORS], int num_layers,
                                              const PipeStage& st) {
    size_t mine[NUM_PARAMETER_TENSORS];
    pipeline_stage_sizes(sizes, num_layers, st, mine);
    std::vector<PipePiece> pieces;
    size_t model_offset = 0, stage_offset = 0;
    for (int t = 0; t < NUM_PARAMETER_TENSORS; t++) {
        const bool per_layer = t >= TENSOR_LN1W && t <= TENSOR_FCPROJB;
        const size_t skip = per_layer ? sizes[t] / num_layers * st.first_layer : 0;
        if (mine[t] > 0) pieces.push_back({stage_offset, model_offset + skip, mine[t]});
        model_offset += sizes[t];
        stage_offset += mine[t];
    }
    return pieces;
}

// Copies between the stage's buffer and the whole model's (to_stage: model -> stage).
inline void pipeline_copy(const std::vector<PipePiece>& pieces, float* stage_buf, float* model_buf,
                          bool to_stage) {
    for (const PipePiece& p : pieces) {
        if (to_stage) {
            memcpy(stage_buf + p.stage_offset, model_buf + p.model_offset, p.count * sizeof(float));
        } else {
            memcpy(model_buf + p.model_offset, stage_buf + p.stage_offset, p.count * sizeof(float));
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// schedules

// One step of a stage's schedule: the forward or the backward of micro-batch `micro`.
struct PipeAction {
    bool backward;
    int micro;
};

// Stage s's actions for one optimizer step of M micro-batches, in order. Forwards and backwards each run
// in micro-batch order, so the messages between two stages arrive in the order they are waited for.
inline std::vector<PipeAction> pipeline_actions(PipeSchedule schedule, int num_stages, int M, int s) {
    std::vector<PipeAction> a;
    if (schedule == PIPE_GPIPE) {
        for (int m = 0; m < M; m++) a.push_back({false, m});
        for (int m = 0; m < M; m++) a.push_back({true, m});
        return a;
    }
    const int warmup = std::min(num_stages - s - 1, M);
    int f = 0, b = 0;
    for (; f < warmup; f++) a.push_back({false, f});
    for (; f < M; f++, b++) {
        a.push_back({false, f});
        a.push_back({true, b});
    }
    for (; b < M; b++) a.push_back({true, b});
    return a;
}

// The messages of a step, for a transport whose send completes only when its receiver takes it (NCCL's
// ncclSend; the CPU trainer's MPI_Isend does not wait, so it needs none of this). Two neighbours that
// each send before they receive wait for each other for ever: under 1F1B stage s sends forward m+1's
// output to s+1 while s+1 sends backward m's gradient to s. So a stage posts the send its action produced
// together with the receive its next action needs, as one group (ncclGroupStart / ncclGroupEnd), which
// completes when both have: then every step of every stage's schedule finishes (tests/unit/
// test_pipeline.cpp runs them against each other with sends that wait for their receive).
enum PipeMessageKind { PIPE_NONE = 0, PIPE_ACTIVATION = 1, PIPE_GRADIENT = 2 };
struct PipeMessage {
    PipeMessageKind kind = PIPE_NONE; // an activation goes from stage s to s+1, a gradient back
    int micro = -1;                   // of which micro-batch
    int peer = -1;                    // the other stage
};
// What a stage posts as one group before an action: the previous action's send and this one's receive.
struct PipeExchange {
    PipeMessage send, recv;
};
// Stage s's exchanges for pipeline_actions(schedule, P, M, s): exchange i comes before action i, and one
// more after the last action sends its result.
inline std::vector<PipeExchange> pipeline_exchanges(PipeSchedule schedule, int num_stages, int M, int s) {
    const std::vector<PipeAction> actions = pipeline_actions(schedule, num_stages, M, s);
    std::vector<PipeExchange> ex(actions.size() + 1);
    const bool first = s == 0, last = s == num_stages - 1;
    for (size_t i = 0; i < actions.size(); i++) {
        const PipeAction& a = actions[i];
        if (!a.backward) {
            if (!first) ex[i].recv = {PIPE_ACTIVATION, a.micro, s - 1};    // its input
            if (!last) ex[i + 1].send = {PIPE_ACTIVATION, a.micro, s + 1}; // its output
        } else {
            if (!last) ex[i].recv = {PIPE_GRADIENT, a.micro, s + 1};      // the gradient of its output
            if (!first) ex[i + 1].send = {PIPE_GRADIENT, a.micro, s - 1}; // that of its input
        }
    }
    return ex;
}

// The most micro-batches whose activations stage s holds at once (forward done, backward not yet): the
// activation slots it allocates. Micro-batch m uses slot m % slots: GPipe M slots, 1F1B min(M, P - s).
inline int pipeline_slots(PipeSchedule schedule, int num_stages, int M, int s) {
    return schedule == PIPE_GPIPE ? M : std::min(M, num_stages - s);
}

// The idle fraction of a stage with equal stages (see the top of the file).
inline double pipeline_ideal_bubble(int num_stages, int M) {
    return (double)(num_stages - 1) / (double)(M + num_stages - 1);
}

// The step line's part for a pipeline: each stage's idle fraction of the step (idle), their mean, and the
// ideal for M micro-batches: " | bubble 0.071 (stages 0.072 0.070; ideal 0.059)".
inline void pipeline_print_bubble(const std::vector<double>& idle, int M) {
    double mean = 0.0;
    for (double x : idle) mean += x / idle.size();
    printf(" | bubble %.3f (stages", mean);
    for (double x : idle) printf(" %.3f", x);
    printf("; ideal %.3f)", pipeline_ideal_bubble((int)idle.size(), M));
}

inline const char* pipeline_schedule_name(PipeSchedule s);

// The per-stage memory table both trainers print at start-up: each stage of rank 0's replica, its layers,
// what it holds (bytes) and the micro-batches its schedule keeps. note: how `allocated` was counted.
struct PipeStageMemory {
    double params, grads, optim, acts; // its parameters, gradients, optimizer state, activations
    double allocated, predicted;       // in all
};
inline void pipeline_print_memory(const std::vector<PipeStageMemory>& mem, const GPT2Config& whole,
                                  PipeSchedule schedule, int M, const char* note) {
    const double MiB = 1024.0 * 1024.0;
    const int P = (int)mem.size();
    printf("pipeline: %d stages, the layers split by work (llmc/pipeline.h: the classifier counts as %.1f "
           "layers)\n",
           P, pipeline_head_layers(whole));
    printf("memory per pipeline stage (%s, %d micro-batches; MiB; allocated: %s)\n",
           pipeline_schedule_name(schedule), M, note);
    printf("  stage  layers  parameters  gradients  optimizer  activations  slots  allocated  predicted\n");
    for (int s = 0; s < P; s++) {
        const PipeStage st = pipeline_model_stage(whole, P, s);
        const PipeStageMemory& m = mem[s];
        char layers[24];
        snprintf(layers, sizeof(layers), "%d-%d", st.first_layer, st.first_layer + st.num_layers - 1);
        printf("  %5d  %6s  %10.2f  %9.2f  %9.2f  %11.2f  %5d  %9.2f  %9.2f\n", s, layers, m.params / MiB,
               m.grads / MiB, m.optim / MiB, m.acts / MiB, pipeline_slots(schedule, P, M, s),
               m.allocated / MiB, m.predicted / MiB);
    }
}

inline const char* pipeline_schedule_name(PipeSchedule s) {
    return s == PIPE_GPIPE ? "GPipe" : "1F1B";
}
// The schedule -pk names: gpipe or 1f1b; false for any other name.
inline bool pipeline_schedule_from_flag(const char* name, PipeSchedule* out) {
    if (strcmp(name, "gpipe") == 0)
        *out = PIPE_GPIPE;
    else if (strcmp(name, "1f1b") == 0)
        *out = PIPE_1F1B;
    else
        return false;
    return true;
}
