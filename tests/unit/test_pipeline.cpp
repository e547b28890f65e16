// test_pipeline.cpp: checks the pipeline arithmetic of llmc/pipeline.h.
//
//  1. Stages: for every L <= 48 and P <= L, the stages are contiguous, in order, cover the L layers, differ
//     by at most one layer with the larger ones first; with a head on the last stage (0.5 to 16.4 layers
//     of work: d4's classifier), for L <= 12 and P <= 5 the slowest stage has the least work of every
//     split (all of them tried), and GPT-2 small's last stage of 2 takes 3 layers; the first stage alone
//     holds the embedding's wpe, the last alone the final LayerNorm, both wte; the stage pieces, over all
//     stages, cover every element of the whole model's buffer exactly once (wte twice: at the first and the
//     last stage) and agree with pipeline_stage_sizes.
//  2. Schedules: every stage's actions run each micro-batch's forward and backward once, forwards and
//     backwards each in micro-batch order (the receives wait for messages in the order they are sent).
//     A simulator runs the P action lists against each other, an action starting when its stage is free
//     and its message has arrived (forward m of stage s after forward m of s-1, backward m after backward m
//     of s+1), forward time 1, backward time 2, messages free. It must finish (no deadlock), no activation
//     slot may be taken by two micro-batches at once (micro-batch m uses m % slots), the most micro-batches
//     a stage holds must be exactly pipeline_slots, and the step must take (M + P - 1) * 3 units with every
//     stage busy 3M of them: the bubble (P - 1) / (M + P - 1) exactly, for GPipe and 1F1B.
//  3. Messages (pipeline_exchanges, for NCCL, whose send completes only with its receive): the exchanges
//     of every stage, run against each other with such sends, finish for both schedules, P <= 8, M <= 20,
//     every message meeting the receive of its own kind and micro-batch; and posting each send alone
//     before the receive deadlocks 1F1B at P = 2, M = 2 (why the send and the next receive are one group).
// Integer arithmetic: every comparison is exact.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "llmc/pipeline.h"
#include "tests/common/test_common.h"

static void check_stages(int L, int P) {
    int next = 0, extra_seen_small = 0;
    for (int s = 0; s < P; s++) {
        const PipeStage st = pipeline_stage(L, P, s);
        CHECK(st.first_layer == next && st.num_layers >= 1, "L=%d P=%d stage %d starts at %d with %d layers",
              L, P, s, st.first_layer, st.num_layers);
        CHECK(st.num_layers == L / P || st.num_layers == L / P + 1, "L=%d P=%d stage %d: %d layers", L, P, s,
              st.num_layers);
        if (st.num_layers == L / P) extra_seen_small = 1;
        CHECK(!(extra_seen_small && st.num_layers == L / P + 1 && L % P != 0),
              "L=%d P=%d: the extra layers first", L, P);
        CHECK(st.first == (s == 0) && st.last == (s == P - 1) && st.stage == s && st.num_stages == P,
              "L=%d P=%d stage %d flags", L, P, s);
        next += st.num_layers;
    }
    CHECK(next == L, "L=%d P=%d: the stages cover %d layers", L, P, next);
}

// Every element of the whole buffer covered by the stages' pieces: once, wte twice (first and last stage).
// With a head on the last stage (head layers of work): the stages are contiguous and cover the layers,
// and the slowest stage has the least work of any split into P stages of at least one layer (found by
// trying every split).
static void best_split(int L, int P, int stages_left, double head, double worst, double* best) {
    if (stages_left == 1) { // the last stage takes what is left
        *best = std::min(*best, std::max(worst, L + head));
        return;
    }
    for (int n = 1; n <= L - (stages_left - 1); n++)
        best_split(L - n, P, stages_left - 1, head, std::max(worst, (double)n), best);
}
static void check_balanced(int L, int P, double head) {
    int next = 0;
    double worst = 0.0;
    for (int s = 0; s < P; s++) {
        const PipeStage st = pipeline_stage(L, P, s, head);
        CHECK(st.first_layer == next && st.num_layers >= 1,
              "L=%d P=%d head %g: stage %d starts at %d with %d "
              "layers",
              L, P, head, s, st.first_layer, st.num_layers);
        next += st.num_layers;
        worst = std::max(worst, st.num_layers + (st.last ? head : 0.0));
    }
    CHECK(next == L, "L=%d P=%d head %g: the stages cover %d layers", L, P, head, next);
    double best = 1e30;
    best_split(L, P, P, head, 0.0, &best);
    CHECK(worst == best, "L=%d P=%d head %g: the slowest stage has %g layers of work, the best split %g", L,
          P, head, worst, best);
}

static void check_pieces(int L, int P) {
    GPT2Config c;
    c.max_seq_len = 16, c.vocab_size = 10, c.padded_vocab_size = 12, c.num_layers = L, c.num_heads = 1;
    c.channels = 2;
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(c, sizes);
    const size_t total = gpt2_num_parameters(c);
    std::vector<int> covered(total, 0);
    for (int s = 0; s < P; s++) {
        const PipeStage st = pipeline_stage(L, P, s);
        size_t mine[NUM_PARAMETER_TENSORS], n = 0;
        pipeline_stage_sizes(sizes, L, st, mine);
        for (size_t x : mine) n += x;
        size_t held = 0, expect_offset = 0;
        for (const PipePiece& p : pipeline_pieces(sizes, L, st)) {
            CHECK(p.stage_offset == expect_offset, "L=%d P=%d stage %d: pieces back to back", L, P, s);
            expect_offset += p.count;
            held += p.count;
            for (size_t i = 0; i < p.count && p.model_offset + i < total; i++) covered[p.model_offset + i]++;
            CHECK(p.model_offset + p.count <= total, "L=%d P=%d stage %d: piece inside the model", L, P, s);
        }
        CHECK(held == n, "L=%d P=%d stage %d: pieces hold %zu of the %zu sized", L, P, s, held, n);
        CHECK((mine[TENSOR_WTE] > 0) == (st.first || st.last) && (mine[TENSOR_WPE] > 0) == st.first &&
                  (mine[TENSOR_LNFW] > 0) == st.last && (mine[TENSOR_LNFB] > 0) == st.last,
              "L=%d P=%d stage %d: the outer tensors it holds", L, P, s);
        CHECK(mine[TENSOR_QKVW] == sizes[TENSOR_QKVW] / L * st.num_layers, "L=%d P=%d stage %d: qkvw", L, P,
              s);
    }
    int bad = 0;
    for (size_t i = 0; i < total; i++) {
        const int want = (i < sizes[TENSOR_WTE] && P > 1) ? 2 : 1;
        if (covered[i] != want) bad++;
    }
    CHECK(bad == 0, "L=%d P=%d: %d elements covered a wrong number of times", L, P, bad);
}

// Runs the schedule; returns false on a deadlock. *makespan: the step's length; busy: per stage.
struct SimResult {
    bool finished = false;
    long makespan = 0;
    std::vector<long> busy;
    std::vector<int> max_held;
    bool slot_clash = false;
};
static SimResult simulate(PipeSchedule sched, int P, int M) {
    const long TF = 1, TB = 2;
    std::vector<std::vector<PipeAction>> acts(P);
    std::vector<int> slots(P);
    for (int s = 0; s < P; s++) {
        acts[s] = pipeline_actions(sched, P, M, s);
        slots[s] = pipeline_slots(sched, P, M, s);
    }
    // done time of forward/backward (s, m); -1: not yet
    std::vector<std::vector<long>> fdone(P, std::vector<long>(M, -1)), bdone(P, std::vector<long>(M, -1));
    std::vector<size_t> pc(P, 0);
    std::vector<long> free_at(P, 0);
    std::vector<std::vector<int>> slot_of(P);
    SimResult r;
    r.busy.assign(P, 0);
    r.max_held.assign(P, 0);
    for (int s = 0; s < P; s++) slot_of[s].assign(slots[s], -1);
    std::vector<int> held(P, 0);
    bool progress = true;
    while (progress) {
        progress = false;
        for (int s = 0; s < P; s++) {
            if (pc[s] == acts[s].size()) continue;
            const PipeAction a = acts[s][pc[s]];
            long ready;
            if (!a.backward) {
                ready = s == 0 ? 0 : fdone[s - 1][a.micro];
            } else {
                ready = s == P - 1 ? fdone[s][a.micro] : bdone[s + 1][a.micro];
            }
            if (ready < 0) continue; // its message has not been sent yet
            const long start = std::max(ready, free_at[s]);
            const int k = a.micro % std::max(slots[s], 1);
            if (!a.backward) {
                if (slot_of[s][k] != -1) r.slot_clash = true;
                slot_of[s][k] = a.micro;
                held[s]++;
                r.max_held[s] = std::max(r.max_held[s], held[s]);
                fdone[s][a.micro] = start + TF;
            } else {
                if (slot_of[s][k] != a.micro) r.slot_clash = true;
                slot_of[s][k] = -1;
                held[s]--;
                bdone[s][a.micro] = start + TB;
            }
            free_at[s] = start + (a.backward ? TB : TF);
            r.busy[s] += a.backward ? TB : TF;
            pc[s]++;
            progress = true;
        }
    }
    r.finished = true;
    for (int s = 0; s < P; s++) r.finished = r.finished && pc[s] == acts[s].size();
    for (int s = 0; s < P; s++) r.makespan = std::max(r.makespan, free_at[s]);
    return r;
}

static void check_schedule(PipeSchedule sched, int P, int M) {
    const char* name = pipeline_schedule_name(sched);
    for (int s = 0; s < P; s++) {
        const std::vector<PipeAction> a = pipeline_actions(sched, P, M, s);
        int nf = 0, nb = 0;
        bool ordered = true;
        std::vector<int> fseen(M, 0);
        for (const PipeAction& x : a) {
            if (!x.backward) {
                ordered = ordered && x.micro == nf;
                fseen[x.micro]++;
                nf++;
            } else {
                ordered = ordered && x.micro == nb && fseen[x.micro] == 1; // after its own forward
                nb++;
            }
        }
        CHECK(nf == M && nb == M && ordered, "%s P=%d M=%d stage %d: %d forwards, %d backwards, in order: %d",
              name, P, M, s, nf, nb, (int)ordered);
    }
    const SimResult r = simulate(sched, P, M);
    CHECK(r.finished, "%s P=%d M=%d: the stages' schedules finish (no deadlock)", name, P, M);
    if (!r.finished) return;
    CHECK(!r.slot_clash, "%s P=%d M=%d: no activation slot held by two micro-batches", name, P, M);
    for (int s = 0; s < P; s++) {
        CHECK(r.max_held[s] == pipeline_slots(sched, P, M, s),
              "%s P=%d M=%d stage %d holds %d micro-batches, "
              "pipeline_slots says %d",
              name, P, M, s, r.max_held[s], pipeline_slots(sched, P, M, s));
        CHECK(r.busy[s] == 3L * M, "%s P=%d M=%d stage %d busy %ld", name, P, M, s, r.busy[s]);
    }
    // equal stages, F + B = 3: the step takes (M + P - 1) * 3, the bubble (P - 1) / (M + P - 1)
    CHECK(r.makespan == 3L * (M + P - 1), "%s P=%d M=%d: the step takes %ld units, expected %ld", name, P, M,
          r.makespan, 3L * (M + P - 1));
    const double bubble = 1.0 - (double)r.busy[0] / (double)r.makespan;
    CHECK(bubble == pipeline_ideal_bubble(P, M) || std::abs(bubble - pipeline_ideal_bubble(P, M)) < 1e-12,
          "%s P=%d M=%d: bubble %g, ideal %g", name, P, M, bubble, pipeline_ideal_bubble(P, M));
}

// The exchanges (pipeline_exchanges) of every stage run against each other with sends that complete only
// when their receive does (NCCL's rendezvous): a stage's group completes once each of its messages meets
// the matching operation in its peer's current group; then the stage runs its action (no time) and posts
// the next group. Returns false if the stages stop short (a deadlock); *mismatch counts messages met by
// an operation of another kind or micro-batch (NCCL pairs a pair's sends and receives in order, so that
// would deliver the wrong tensor). split: post each group's send and receive one after the other, send
// first, as separate groups (what the grouping exists to avoid).
static bool run_exchanges(PipeSchedule sched, int P, int M, bool split, int* mismatch) {
    struct Op {
        bool send;
        PipeMessage msg;
    };
    std::vector<std::vector<std::vector<Op>>> groups(P); // [stage][group] the operations posted together
    for (int s = 0; s < P; s++) {
        for (const PipeExchange& e : pipeline_exchanges(sched, P, M, s)) {
            std::vector<Op> g;
            if (e.send.kind != PIPE_NONE) g.push_back({true, e.send});
            if (split && !g.empty()) groups[s].push_back(g), g.clear();
            if (e.recv.kind != PIPE_NONE) g.push_back({false, e.recv});
            groups[s].push_back(g);
        }
    }
    std::vector<size_t> at(P, 0);
    std::vector<std::vector<bool>> done(P);
    auto enter = [&](int s) {
        if (at[s] < groups[s].size()) done[s].assign(groups[s][at[s]].size(), false);
    };
    for (int s = 0; s < P; s++) enter(s);
    *mismatch = 0;
    bool progress = true;
    while (progress) {
        progress = false;
        for (int s = 0; s < P; s++) {
            if (at[s] == groups[s].size()) continue;
            const std::vector<Op>& g = groups[s][at[s]];
            for (size_t i = 0; i < g.size(); i++) {
                const int t = g[i].msg.peer;
                if (done[s][i] || t < 0 || t >= P || at[t] == groups[t].size()) continue;
                const std::vector<Op>& h = groups[t][at[t]];
                for (size_t j = 0; j < h.size(); j++) { // the peer's operation on the other end
                    if (done[t][j] || h[j].send == g[i].send || h[j].msg.peer != s) continue;
                    if (h[j].msg.kind != g[i].msg.kind || h[j].msg.micro != g[i].msg.micro) (*mismatch)++;
                    done[s][i] = done[t][j] = true;
                    progress = true;
                    break;
                }
            }
            if (std::all_of(done[s].begin(), done[s].end(), [](bool d) { return d; })) {
                at[s]++;
                enter(s);
                progress = true;
            }
        }
    }
    for (int s = 0; s < P; s++)
        if (at[s] != groups[s].size()) return false;
    return true;
}

static void check_exchanges(PipeSchedule sched, int P, int M) {
    const char* name = pipeline_schedule_name(sched);
    int mismatch = 0;
    CHECK(run_exchanges(sched, P, M, false, &mismatch),
          "%s P=%d M=%d: the grouped exchanges finish with sends that wait for their receive", name, P, M);
    CHECK(mismatch == 0, "%s P=%d M=%d: %d messages met another kind or micro-batch", name, P, M, mismatch);
    for (int s = 0; s < P; s++) { // every stage's sends and receives: one per message its actions make
        int sends = 0, recvs = 0;
        for (const PipeExchange& e : pipeline_exchanges(sched, P, M, s)) {
            sends += e.send.kind != PIPE_NONE;
            recvs += e.recv.kind != PIPE_NONE;
        }
        const int neighbours = (s > 0) + (s < P - 1);
        CHECK(sends == neighbours * M && recvs == neighbours * M,
              "%s P=%d M=%d stage %d: %d sends, %d receives", name, P, M, s, sends, recvs);
    }
}

int main() {
    for (int L = 1; L <= 48; L++)
        for (int P = 1; P <= L; P++) check_stages(L, P);
    for (int L = 1; L <= 13; L++)
        for (int P = 1; P <= L; P++) check_pieces(L, P);
    for (double head : {0.0, 0.5, 3.3, 16.4})
        for (int L = 1; L <= 12; L++)
            for (int P = 1; P <= std::min(L, 5); P++) check_balanced(L, P, head);
    // GPT-2 small on 2 stages: the classifier weighs 5.5 layers, so the last stage takes 3 of the 12
    GPT2Config d12 = {};
    CHECK(gpt2_config_from_descriptor("d12", &d12), "d12 is a descriptor");
    const PipeStage d12_last = pipeline_stage(12, 2, 1, pipeline_head_layers(d12));
    CHECK(d12_last.num_layers == 3 && d12_last.first_layer == 9, "d12 on 2 stages: the last has layers %d-%d",
          d12_last.first_layer, d12_last.first_layer + d12_last.num_layers - 1);
    for (PipeSchedule sched : {PIPE_GPIPE, PIPE_1F1B})
        for (int P = 1; P <= 8; P++)
            for (int M = 1; M <= 20; M++) check_schedule(sched, P, M);
    for (PipeSchedule sched : {PIPE_GPIPE, PIPE_1F1B})
        for (int P = 1; P <= 8; P++)
            for (int M = 1; M <= 20; M++) check_exchanges(sched, P, M);
    { // why the grouping: each send posted alone, before the receive, deadlocks 1F1B (P=2, M=2)
        int mismatch = 0;
        CHECK(!run_exchanges(PIPE_1F1B, 2, 2, true, &mismatch),
              "1F1B P=2 M=2 with ungrouped sends deadlocks");
    }
    // 1F1B holds at most P - s micro-batches whatever M; GPipe all M
    CHECK(pipeline_slots(PIPE_1F1B, 4, 64, 0) == 4 && pipeline_slots(PIPE_1F1B, 4, 64, 3) == 1 &&
              pipeline_slots(PIPE_GPIPE, 4, 64, 0) == 64,
          "slots: 1F1B P-s, GPipe M");
    expect_failure("more stages than layers", [] { pipeline_stage(2, 3, 0); }, {"every stage needs a layer"});
    return test_summary("test_pipeline");
}
