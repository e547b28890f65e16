/*
GPT-2 training on NVIDIA GPUs: the same model, flags, files and log as the CPU reference train_gpt2.cpp,
with mixed precision (bf16 parameters, activations and gradients; fp32 master weights, optimizer state and
gradient accumulation), flash attention, activation recomputation, multi-GPU data parallelism (NCCL,
ZeRO-1, 2 and 3) and pipeline parallelism (GPipe and 1F1B over NCCL send/receive, llmc/pipeline.h). `make
train_gpt2cu PRECISION=FP32` (or train_gpt2fp32cu) builds everything in fp32 instead.

Reading order, as in the CPU file:
  1. the model: parameters and activations as named slices of one allocation each, carved by a table of
     sizes that depends on the recompute mode (-r);
  2. forward, backward (calling the launchers in llmc/, the .cuh files: this file has no kernel of its own);
  3. the optimizer: gradient averaging over GPUs, global-norm clipping, fused AdamW on this rank's ZeRO shard;
  4. the program: the functions llmc/run_plan.h calls (as in the CPU file), the memory table and main.
     The run plan, resume and the training loop are llmc/run_plan.h's, shared with the CPU trainer.
Shapes: B batch, T sequence length, C channels, NH heads, HS = C/NH head size, V vocab, Vp padded vocab,
L layers, BT = B*T.

Determinism: every kernel on the training path reduces in a fixed order (no atomics), cuBLASLt plans are
cached per shape, and stochastic rounding draws its bits from a hash of (seed, step, index): two runs with
the same flags print bit-identical losses, and a resumed run continues bit for bit.
*/
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <algorithm>

#include "llmc/utils.h"
#include "llmc/checkpoint.h"
#include "llmc/rand.h"
#include "llmc/dataloader.h"
#include "llmc/logger.h"
#include "llmc/token_decoder.h"
#include "llmc/zero.h"
#include "llmc/mfu.h"
#include "llmc/cuda_common.h"
#include "llmc/encoder.cuh"
#include "llmc/layernorm.cuh"
#include "llmc/gelu.cuh"
#include "llmc/matmul.cuh"
#include "llmc/attention.cuh"
#include "llmc/fused_classifier.cuh"
#include "llmc/adamw.cuh"
#include "llmc/adamw8bit.cuh"
#include "llmc/global_norm.cuh"
#include "llmc/lora.cuh"
#include "llmc/nccl_gpu.cuh"
#include "llmc/train_config.h"
#include "llmc/state_file.h"
#include "llmc/run_plan.h"
#include "llmc/pipeline.h"

#if defined(ENABLE_FP32)
constexpr bool BF16_BUILD = false;
#else
constexpr bool BF16_BUILD = true;
#endif

// ----------------------------------------------------------------------------------------------------
// 1. the model

// Named slices of the one floatX parameter buffer, in checkpoint order (llmc/checkpoint.h has the sizes).
struct ParameterTensors {
    floatX* wte;      // (Vp, C)
    floatX* wpe;      // (maxT, C)
    floatX* ln1w;     // (L, C)
    floatX* ln1b;     // (L, C)
    floatX* qkvw;     // (L, 3C, C)
    floatX* qkvb;     // (L, 3C)
    floatX* attprojw; // (L, C, C)
    floatX* attprojb; // (L, C)
    floatX* ln2w;     // (L, C)
    floatX* ln2b;     // (L, C)
    floatX* fcw;      // (L, 4C, C)
    floatX* fcb;      // (L, 4C)
    floatX* fcprojw;  // (L, C, 4C)
    floatX* fcprojb;  // (L, C)
    floatX* lnfw;     // (C)
    floatX* lnfb;     // (C)
};
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(floatX*), "one pointer per tensor");

void point_parameters(ParameterTensors* p, floatX* memory, const size_t sizes[NUM_PARAMETER_TENSORS]) {
    floatX** ptrs = (floatX**)p;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        ptrs[i] = memory;
        memory += sizes[i];
    }
}

// Recompute modes (-r): what the forward keeps for the backward, and what the backward recomputes.
//   0  keep everything
//   1  recompute GELU: keep the pre-GELU fch, recompute fch_gelu = gelu(fch) in the backward (saves L*BT*4C)
//   2  also recompute LayerNorm: keep mean and rstd, recompute ln1 and ln2 (saves another 2*L*BT*C)
//   3  keep only each block's input residual: the backward re-runs the block's forward (one layer's worth
//      of everything but residual3)
// A recomputed tensor has one layer's slot (reused by every layer) instead of L. Recomputation runs the
// same kernels on the same inputs, so the results are bit-identical to -r 0 (test_gpt2cu checks this).
// For that reason the forward runs GELU as its own kernel in every mode instead of cuBLASLt's GELU
// epilogue, whose rounding need not match gelu_forward bit for bit.
constexpr int NUM_ACTIVATION_TENSORS = 23;
struct ActivationTensors {
    floatX* encoded;   // (B, T, C)                 input of layer 0
    floatX* ln1;       // (L or 1, B, T, C)         1 for -r >= 2
    float* ln1_mean;   // (L or 1, B, T)            1 for -r 3
    float* ln1_rstd;   // (L or 1, B, T)
    floatX* qkv;       // (L or 1, B, T, 3C)        1 for -r 3
    floatX* atty;      // (L or 1, B, T, C)         attention output (heads concatenated)
    float* lse;        // (L or 1, B, NH, T)        attention log-sum-exp, read by its backward
    floatX* residual2; // (L or 1, B, T, C)         residual + attproj
    floatX* ln2;       // (L or 1, B, T, C)         1 for -r >= 2
    float* ln2_mean;   // (L or 1, B, T)
    float* ln2_rstd;   // (L or 1, B, T)
    floatX* fch;       // (L or 1, B, T, 4C)        fc output before GELU
    floatX* fch_gelu;  // (L or 1, B, T, 4C)        1 for -r >= 1
    floatX* residual3; // (L, B, T, C)              residual2 + fcproj: the input of the next layer
    floatX* lnf;       // (B, T, C)
    float* lnf_mean;   // (B, T)
    float* lnf_rstd;   // (B, T)
    floatX* logits;    // (B, T, Vp)                logits; with targets in training, dlogits in place
    float* losses;     // (B, T)
    // scratch of the backward, reused by every layer
    floatX* dresidual;   // (B, T, C)  gradient of the residual stream: one buffer, added to layer by layer
    floatX* scratch_btc; // (B, T, C)  forward: attproj/fcproj outputs before the residual add;
                         //            backward: dlnf, dln2, datty, dln1 in turn
    floatX* dqkv;        // (B, T, 3C)
    floatX* dfch;        // (B, T, 4C) gradient of the pre-GELU fc output
};
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(void*), "one pointer per tensor");

// Every tensor, and every layer's slot of a per-layer tensor, starts on a 256-byte boundary: the 128-bit
// kernels need 16, and cuBLASLt's algorithm choice looks at the alignment of the GELU aux pointer, which
// must not change with the layer or the recompute mode (-r 3 recomputes into slot 0) or the bits would.
inline size_t align256(size_t bytes) {
    return (bytes + 255) / 256 * 256;
}
// elements of one layer's slot of a tensor with n elements per layer of elem_bytes each
inline size_t slot(size_t n, size_t elem_bytes) {
    return align256(n * elem_bytes) / elem_bytes;
}

// Pipeline parallelism (llmc/pipeline.h) keeps the forwards of several micro-batches for their backwards at
// once: an activation slot each. What a backward reads from its own forward is per slot; the backward's
// scratch, and what the recompute mode keeps one layer of (the backward recomputes it before use), serve
// every slot. A stage before the last has no final LayerNorm, logits or losses.
struct ActivationTable {
    size_t count[NUM_ACTIVATION_TENSORS]; // elements
    size_t elem[NUM_ACTIVATION_TENSORS];  // bytes per element
    bool per_slot[NUM_ACTIVATION_TENSORS];
    int slots = 1;
};

// The activation tensors for recompute mode r, a stage with (last) or without the classifier, and slots
// activation slots.
ActivationTable activation_table(const GPT2Config& c, size_t B, size_t T, int r, bool last = true,
                                 int slots = 1) {
    const size_t C = c.channels, NH = c.num_heads, L = c.num_layers, Vp = c.padded_vocab_size, BT = B * T;
    const size_t L0 = r >= 1 ? 1 : L, L1 = r >= 2 ? 1 : L, L3 = r >= 3 ? 1 : L;
    const size_t X = sizeof(floatX), F = sizeof(float), H = last ? 1 : 0;
    ActivationTable t;
    t.slots = slots;
    size_t i = 0;
    auto add = [&](size_t n, size_t bytes, bool per_slot) {
        t.count[i] = n;
        t.elem[i] = bytes;
        t.per_slot[i++] = per_slot;
    };
    add(BT * C, X, true);                    // encoded
    add(L1 * slot(BT * C, X), X, r < 2);     // ln1
    add(L3 * slot(BT, F), F, r < 3);         // ln1_mean
    add(L3 * slot(BT, F), F, r < 3);         // ln1_rstd
    add(L3 * slot(BT * 3 * C, X), X, r < 3); // qkv
    add(L3 * slot(BT * C, X), X, r < 3);     // atty
    add(L3 * slot(BT * NH, F), F, r < 3);    // lse
    add(L3 * slot(BT * C, X), X, r < 3);     // residual2
    add(L1 * slot(BT * C, X), X, r < 2);     // ln2
    add(L3 * slot(BT, F), F, r < 3);         // ln2_mean
    add(L3 * slot(BT, F), F, r < 3);         // ln2_rstd
    add(L3 * slot(BT * 4 * C, X), X, r < 3); // fch
    add(L0 * slot(BT * 4 * C, X), X, r < 1); // fch_gelu
    add(L * slot(BT * C, X), X, true);       // residual3
    add(H * BT * C, X, true);                // lnf
    add(H * BT, F, true);                    // lnf_mean
    add(H * BT, F, true);                    // lnf_rstd
    add(H * BT * Vp, X, true);               // logits (dlogits for the backward)
    add(H * BT, F, false);                   // losses (read right after the forward)
    add(BT * C, X, false);                   // dresidual
    add(BT * C, X, false);                   // scratch_btc
    add(BT * 3 * C, X, false);               // dqkv
    add(BT * 4 * C, X, false);               // dfch
    return t;
}

// bytes of tensor i for one slot, and of all of them
size_t activation_tensor_bytes(const ActivationTable& t, int i) {
    return align256(t.count[i] * t.elem[i]);
}
size_t activation_bytes(const ActivationTable& t) {
    size_t total = 0;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++)
        total += activation_tensor_bytes(t, i) * (t.per_slot[i] ? t.slots : 1);
    return total;
}

// The tensors of slot k in memory: tensor after tensor, a per-slot tensor's slots one after the other.
ActivationTensors activation_slot(const ActivationTable& t, char* memory, int k) {
    ActivationTensors a;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) {
        const size_t bytes = activation_tensor_bytes(t, i);
        void* p = memory + (t.per_slot[i] ? (size_t)k * bytes : 0);
        memcpy((char*)&a + i * sizeof(void*), &p, sizeof(void*)); // the i-th pointer of the struct
        memory += bytes * (t.per_slot[i] ? t.slots : 1);
    }
    return a;
}

// ZeRO-2/3 (section 2 has the functions; llmc/zero.h the units: the embeddings, each layer, the final
// LayerNorm, each padded and cut into one slice per rank). Stage 2: no full-size gradient buffer; each
// unit's micro-step gradients go to a floatX bucket, are converted to fp32 and reduce-scattered, and this
// rank's slice is added into grad_shard. AdamW updates param_shard, and every unit is all-gathered into
// the full parameters after the update. Stage 3: no full-size parameters either; each unit is gathered
// into a bucket before use and kept until the next update.
struct ZeroGpuBucket {
    floatX* data = nullptr;         // (the unit's padded length) the gathered parameters
    int unit = -1;                  // which unit it holds
    int version = -1;               // of which update (ZeroGpu::version): stale after the next one
    bool waited = false;            // the compute stream already waits for its gather
    cudaEvent_t gathered = nullptr; // on the NCCL stream, after its gather
};
struct ZeroGpu {
    int stage = 0;                 // the run's ZeRO stage; nothing here is allocated below stage 2
    MultiGpuConfig* mgc = nullptr; // the collectives'
    ZeroUnits units;               // this rank's slices of every unit
    floatX* param_shard = nullptr; // (units.shard_size) this rank's slices of the parameters (AdamW's)
    float* grad_shard = nullptr;   // (units.shard_size) fp32: those of the step's gradients
    floatX* grad_embed = nullptr;  // (unit 0 padded) one micro-step's gradients of wte, wpe
    floatX* grad_unit = nullptr;   // (largest other unit) those of the final LayerNorm, then each layer
    float* grad_f32 = nullptr;     // (largest unit) one unit's gradients in fp32, reduce-scattered in place
    cudaEvent_t grad_reduced = nullptr; // on the NCCL stream, after grad_f32's reduce-scatter
    int pending = -1; // the unit whose slice in grad_f32 is still to be added into grad_shard
    // stage 3: the gathered units
    ZeroGpuBucket embed, final_ln, layer[2]; // units 0 and L+1; layer l in layer[l % 2]
    int version = 0;                         // updates so far (a gathered unit is valid until the next)
};

struct GPT2 {
    GPT2Config config;
    size_t param_sizes[NUM_PARAMETER_TENSORS];
    size_t param_offsets[NUM_PARAMETER_TENSORS];
    size_t num_parameters;
    size_t held_sizes[NUM_PARAMETER_TENSORS]; // of the tensors in params_memory (0: a QLoRA NF4 matrix)
    size_t params_floats = 0;        // length of params_memory: what the ZeRO layout pads to when the
                                     // parameters train (llmc/zero.h), the held tensors under LoRA
    std::vector<float> params_host;  // (num_parameters, or held) fp32, as loaded or initialised
    floatX* params_memory = nullptr; // (params_floats) the padding zero
    ParameterTensors params;
    // what the optimizer trains: the parameters, or with LoRA (llmc/lora.h) only the adapters
    size_t num_trained = 0;               // num_parameters, or the adapters' lora_layout.total
    size_t num_trained_padded = 0;        // >= num_trained: equal slices per process
    floatX* trained = nullptr;            // params_memory or lora_memory
    floatX* micro_grads_memory = nullptr; // (num_trained_padded) one micro-step's gradients of `trained`
    ParameterTensors micro_grads;         // its tensors when the whole model trains; all null under LoRA
    // The gradients of the step, as in the CPU trainer: the micro-steps' gradients summed in fp32 (4
    // bytes/param): adding many bf16 micro-step gradients in bf16 would round the running sum to 8
    // significant bits at every micro-step.
    float* grads_memory = nullptr; // (num_trained_padded)
    // LoRA: adapters A, B on the block matrices of lora.targets; the base above is frozen
    LoraConfig lora;
    LoraLayout lora_layout;
    std::vector<float> lora_host;  // (num_trained) fp32 adapters: fresh, resumed or downloaded for a save
    floatX* lora_memory = nullptr; // (num_trained_padded) the adapters
    floatX* lora_u = nullptr;      // (NUM_LORA_TARGETS, L, B*T*r) u = x.A^T of each adapter
    floatX* lora_du = nullptr;     // (B*T*r) the backward's du
    Nf4Base nf4_host;              // QLoRA: the four block matrices of every layer in NF4 (host copy)
    std::vector<Nf4MatrixDevice> nf4[NUM_LORA_TARGETS]; // the same on the device, [target][layer]
    floatX* dequant = nullptr;                          // (4C*C) one block matrix dequantized
    // activations, sized for batch_size x seq_len; the forward may run on smaller B (sampling)
    int recompute = 0;
    ActivationTable act_table;
    size_t act_bytes = 0;
    char* acts_memory = nullptr;
    ActivationTensors acts; // slot `slot`'s (gpt2_use_slot)
    int slot = 0;
    int batch_size = 0, seq_len = 0;
    int* inputs = nullptr;        // (slots, B, T) device: each slot's, for the encoder backward
    int* targets = nullptr;       // (B, T) device
    std::vector<int> inputs_host; // (slots, B, T) the encoder backward buckets tokens on the host
    // pipeline parallelism (llmc/pipeline.h, gpt2_take_stage): the model is one stage's part of the whole
    PipeStage stage;               // the whole model when not pipelined
    floatX* grad_output = nullptr; // (B, T, C) a stage before the last: the gradient of its output, received
    float* losses_host = nullptr;  // (B, T) pinned
    float mean_loss = -1.0f;       // of the last forward with targets
    // workspaces
    MatmulContext matmul;
    EncoderBackwardScratch encoder_scratch;
    char* workspace = nullptr; // the scratch below, one allocation
    size_t workspace_bytes = 0;
    float* ln_scratch = nullptr;    // layernorm backward partial sums
    float* dbias_scratch = nullptr; // matmul backward bias partial sums
    float* att_scratch = nullptr;   // attention backward D
    float* norm_scratch = nullptr;  // global norm partials
    float* norm_device = nullptr;   // 1 float: the squared gradient norm
    float* norm_host = nullptr;     // 1 float, pinned
    cudaStream_t stream = nullptr;
    ZeroGpu zero;
};

// Parameter table and the host copy, fp32. First refuses, naming source ('file' or descriptor dN), a shape
// the kernels cannot run: flash attention is built for head sizes HS = C/NH of 64 and 128 (so C is a
// multiple of 64); every row of a tensor is read with 128-bit loads and given to cuBLASLt 16-byte aligned,
// so Vp, the row length of the logits and the leading dimension of the classifier's matmuls, must be a
// multiple of 8. V may be anything up to Vp: the fused classifier masks the columns V..Vp-1.
void gpt2_init_host(GPT2* model, const GPT2Config& config, const char* source) {
    const int C = config.channels, NH = config.num_heads, HS = C / NH, V = config.vocab_size,
              Vp = config.padded_vocab_size;
    if (HS != 64 && HS != 128) {
        fail("%s: the GPU trainer's flash attention kernels support head size C/NH = 64 or 128; this "
             "model has C=%d NH=%d (head size %d)",
             source, C, NH, HS);
    }
    if (Vp % 8 != 0) {
        fail("%s: the GPU kernels need the padded vocabulary Vp to be a multiple of 8; this model has V=%d "
             "Vp=%d (pad wte to Vp=%d, or to %d as GPT-2 does: V rounded up to 128)",
             source, V, Vp, (Vp + 7) / 8 * 8, (V + 127) / 128 * 128);
    }
    model->config = config;
    gpt2_parameter_sizes(config, model->param_sizes);
    model->num_parameters = gpt2_num_parameters(config);
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        model->param_offsets[i] = offset;
        offset += model->param_sizes[i];
    }
    model->params_host.assign(model->num_parameters, 0.0f);
    memcpy(model->held_sizes, model->param_sizes, sizeof(model->held_sizes));
    model->params_floats = model->num_trained = model->num_trained_padded = model->num_parameters;
}

// LoRA on a built model (host side, before the optimizer's layout): the adapters, fresh from seed (A
// random, B zero: llmc/lora.h), become what trains. With an NF4 base (QLoRA) the four block matrices of
// every layer are quantized on the host and dropped from the parameters (held_sizes 0): the device holds
// them only in NF4.
void gpt2_setup_lora(GPT2* model, const LoraConfig& lc, uint64_t seed) {
    if (lc.rank <= 0) return;
    lora_check_rank(lc.rank);
    const GPT2Config& c = model->config;
    model->lora = lc;
    model->lora_layout = lora_layout(c, lc);
    model->lora_host.assign(model->lora_layout.total, 0.0f);
    lora_init_random(model->lora_host.data(), model->lora_layout, c, seed);
    model->num_trained = model->num_trained_padded = model->lora_layout.total;
    if (!lc.nf4) return;
    nf4_base_quantize(&model->nf4_host, c, model->params_host.data());
    for (int t = 0; t < NUM_LORA_TARGETS; t++) model->held_sizes[LORA_BASE_TENSOR[t]] = 0;
    std::vector<float> held;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        const float* src = model->params_host.data() + model->param_offsets[i];
        held.insert(held.end(), src, src + model->held_sizes[i]);
    }
    model->params_host.swap(held);
    model->params_floats = model->params_host.size();
}

// Load an llm.c model file (fp32 v3 or bf16 v5) into the host copy.
void gpt2_build_from_checkpoint(GPT2* model, const char* path) {
    int version;
    GPT2Config config;
    checkpoint_read_header(path, &config, &version);
    gpt2_init_host(model, config, ("'" + std::string(path) + "'").c_str());
    checkpoint_read_parameters(path, version, model->params_host.data(), model->num_parameters);
}

// A fresh model (llmc/checkpoint.h), exactly as the CPU trainer makes it from the same seed.
void gpt2_build_from_random(GPT2* model, const GPT2Config& config, uint64_t seed) {
    gpt2_init_host(model, config, ("descriptor d" + std::to_string(config.num_layers)).c_str());
    gpt2_init_random(model->params_host.data(), config, seed);
}

// fp32 (host) -> floatX (device), round to nearest even; n values at dst.
void upload_floatX(floatX* dst, const float* src, size_t n) {
#if defined(ENABLE_FP32)
    cudaCheck(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice));
#else
    std::vector<uint16_t> tmp(n);
    for (size_t i = 0; i < n; i++) tmp[i] = float_to_bf16(src[i]);
    cudaCheck(cudaMemcpy(dst, tmp.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
#endif
}

// floatX (device) -> fp32 (host), exact
void download_floatX(float* dst, const floatX* src, size_t n) {
#if defined(ENABLE_FP32)
    cudaCheck(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost));
#else
    std::vector<uint16_t> tmp(n);
    cudaCheck(cudaMemcpy(tmp.data(), src, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_float(tmp[i]);
#endif
}

// Device buffers: parameters (from the host copy), gradients, activations and workspaces for (B, T).
// padded_params comes from the optimizer's ZeRO layout (every rank's slice the same length).
// The kernels' scratch, one allocation, in this order: the layernorm and bias backward partial sums,
// attention's backward scratch, the global norm's partial sums, and its result (256 bytes).
struct WorkspaceLayout {
    size_t ln, dbias, att, norm;
    size_t total() const { return ln + dbias + att + norm + 256; }
};
WorkspaceLayout gpt2_workspace_layout(const GPT2Config& c, int B, int T) {
    const int C = c.channels, NH = c.num_heads;
    WorkspaceLayout w;
    w.ln = align256(layernorm_backward_scratch_bytes(B, T, C));
    w.dbias = align256(matmul_dbias_scratch_bytes(B * T, 4 * C)); // the widest biased matmul
    w.att = align256(attention_backward_scratch_bytes(B, T, NH, C / NH));
    w.norm = align256(GLOBAL_NORM_MAX_BLOCKS * sizeof(float)); // enough for a norm over any length
    return w;
}

// ZeRO-2/3's units (host side, before optimizer_init, which takes its ranges from them); below stage 2
// nothing. LoRA trains only its adapters: run_check_flags refuses -z 2 and 3 with -lo.
void gpt2_zero_init(GPT2* model, MultiGpuConfig* mgc, int stage) {
    ZeroGpu& z = model->zero;
    z.stage = stage;
    z.mgc = mgc;
    if (stage < 2) return;
    if (model->lora.rank > 0) fail("ZeRO stage %d with LoRA: use -z 0 or -z 1", stage);
    z.units = gpt2_zero_units(model->param_sizes, model->config.num_layers, mgc->rank, mgc->num_ranks);
}

// The bucket lengths (elements) of ZeRO-2/3, from the units: the embeddings' unit, the final LayerNorm's,
// the largest layer's, the largest of those two (the gradient bucket after the embeddings'), the largest of
// all (the fp32 bucket).
struct ZeroBucketSizes {
    size_t embed = 0, final_ln = 0, layer = 0, other = 0, largest = 0;
};
ZeroBucketSizes zero_bucket_sizes(const ZeroUnits& z) {
    ZeroBucketSizes b;
    const size_t n = z.units.size(); // L + 2
    b.embed = z.units[0].padded;
    b.final_ln = z.units[n - 1].padded;
    for (size_t u = 1; u + 1 < n; u++) b.layer = std::max(b.layer, z.units[u].padded);
    b.other = std::max(b.layer, b.final_ln);
    b.largest = std::max(b.other, b.embed);
    return b;
}

static void zero_bucket_allocate(ZeroGpuBucket* b, size_t n) {
    cudaCheck(cudaMalloc(&b->data, n * sizeof(floatX)));
    cudaCheck(cudaMemset(b->data, 0, n * sizeof(floatX)));
    cudaCheck(cudaEventCreateWithFlags(&b->gathered, cudaEventDisableTiming));
}
static void zero_bucket_free(ZeroGpuBucket* b) {
    cudaCheck(cudaFree(b->data));
    if (b->gathered) cudaCheck(cudaEventDestroy(b->gathered));
    *b = ZeroGpuBucket();
}

// The shards and buckets; the parameter shard starts as this rank's slices of the host copy (the
// resumed model file's when resuming).
void zero_allocate(GPT2* model) {
    ZeroGpu& z = model->zero;
    if (z.stage < 2) return;
    const ZeroBucketSizes b = zero_bucket_sizes(z.units);
    const size_t S = z.units.shard_size;
    cudaCheck(cudaMalloc(&z.param_shard, S * sizeof(floatX)));
    cudaCheck(cudaMemset(z.param_shard, 0, S * sizeof(floatX))); // the padding stays 0
    for (const ShardRange& r : zero_unit_ranges(z.units))
        upload_floatX(z.param_shard + r.offset_in_shard, model->params_host.data() + r.global_offset,
                      r.count);
    cudaCheck(cudaMalloc(&z.grad_shard, S * sizeof(float)));
    cudaCheck(cudaMemset(z.grad_shard, 0, S * sizeof(float)));
    cudaCheck(cudaMalloc(&z.grad_embed, b.embed * sizeof(floatX)));
    cudaCheck(cudaMalloc(&z.grad_unit, b.other * sizeof(floatX)));
    cudaCheck(cudaMalloc(&z.grad_f32, b.largest * sizeof(float)));
    cudaCheck(cudaMemset(z.grad_embed, 0, b.embed * sizeof(floatX)));
    cudaCheck(cudaMemset(z.grad_unit, 0, b.other * sizeof(floatX)));
    cudaCheck(cudaMemset(z.grad_f32, 0, b.largest * sizeof(float)));
    cudaCheck(cudaEventCreateWithFlags(&z.grad_reduced, cudaEventDisableTiming));
    if (z.stage < 3) return;
    zero_bucket_allocate(&z.embed, b.embed);
    zero_bucket_allocate(&z.final_ln, b.final_ln);
    for (ZeroGpuBucket& lb : z.layer) zero_bucket_allocate(&lb, b.layer);
}

void zero_free(GPT2* model) {
    ZeroGpu& z = model->zero;
    cudaCheck(cudaFree(z.param_shard));
    cudaCheck(cudaFree(z.grad_shard));
    cudaCheck(cudaFree(z.grad_embed));
    cudaCheck(cudaFree(z.grad_unit));
    cudaCheck(cudaFree(z.grad_f32));
    if (z.grad_reduced) cudaCheck(cudaEventDestroy(z.grad_reduced));
    z.param_shard = z.grad_embed = z.grad_unit = nullptr;
    z.grad_shard = z.grad_f32 = nullptr;
    z.grad_reduced = nullptr;
    zero_bucket_free(&z.embed);
    zero_bucket_free(&z.final_ln);
    for (ZeroGpuBucket& lb : z.layer) zero_bucket_free(&lb);
}

// padded_params: the optimizer layout's length of the trained buffer (the parameters, or the adapters).
// ZeRO-2 holds the unpadded parameters (plus its shard), ZeRO-3 none but its shard (zero_allocate).
// slots: the activation slots of a pipeline stage's schedule (pipeline_slots), 1 otherwise.
void gpt2_allocate(GPT2* model, size_t padded_params, int B, int T, int recompute, int slots = 1) {
    const GPT2Config& c = model->config;
    const size_t P_pad = padded_params, BT = (size_t)B * T;
    const bool lora = model->lora.rank > 0;
    const int stage = model->zero.stage;
    model->num_trained_padded = P_pad;
    if (!lora) model->params_floats = stage == 3 ? 0 : stage == 2 ? model->num_parameters : P_pad;
    cudaCheck(cudaStreamCreate(&model->stream));
    model->params = {};
    if (model->params_floats > 0) {
        cudaCheck(cudaMalloc(&model->params_memory, model->params_floats * sizeof(floatX)));
        cudaCheck(cudaMemset(model->params_memory, 0, model->params_floats * sizeof(floatX)));
        upload_floatX(model->params_memory, model->params_host.data(), model->params_host.size());
        point_parameters(&model->params, model->params_memory, model->held_sizes);
    }
    floatX** held = (floatX**)&model->params;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++)
        if (model->held_sizes[i] == 0) held[i] = nullptr;
    model->trained = model->params_memory;
    if (lora) {
        cudaCheck(cudaMalloc(&model->lora_memory, P_pad * sizeof(floatX)));
        cudaCheck(cudaMemset(model->lora_memory, 0, P_pad * sizeof(floatX)));
        upload_floatX(model->lora_memory, model->lora_host.data(), model->num_trained);
        model->trained = model->lora_memory;
        const size_t r = model->lora.rank;
        cudaCheck(cudaMalloc(&model->lora_u, NUM_LORA_TARGETS * c.num_layers * BT * r * sizeof(floatX)));
        cudaCheck(cudaMalloc(&model->lora_du, BT * r * sizeof(floatX)));
        for (int t = 0; t < NUM_LORA_TARGETS; t++) {
            model->nf4[t].clear();
            for (const Nf4Matrix& m : model->nf4_host.matrix[t])
                model->nf4[t].push_back(nf4_matrix_upload(m));
        }
        if (model->lora.nf4)
            cudaCheck(cudaMalloc(&model->dequant, (size_t)4 * c.channels * c.channels * sizeof(floatX)));
    }
    memset(&model->micro_grads, 0, sizeof(model->micro_grads));
    if (stage < 2) { // ZeRO-2/3: the gradients are in the units' buckets and the shard (zero_allocate)
        cudaCheck(cudaMalloc(&model->micro_grads_memory, P_pad * sizeof(floatX)));
        cudaCheck(cudaMemset(model->micro_grads_memory, 0, P_pad * sizeof(floatX)));
        if (!lora) point_parameters(&model->micro_grads, model->micro_grads_memory, model->param_sizes);
        cudaCheck(cudaMalloc(&model->grads_memory, P_pad * sizeof(float)));
        cudaCheck(cudaMemset(model->grads_memory, 0, P_pad * sizeof(float)));
    }
    zero_allocate(model);

    model->recompute = recompute;
    model->batch_size = B;
    model->seq_len = T;
    model->act_table = activation_table(c, B, T, recompute, model->stage.last, slots);
    model->act_bytes = activation_bytes(model->act_table);
    cudaCheck(cudaMalloc(&model->acts_memory, model->act_bytes));
    model->acts = activation_slot(model->act_table, model->acts_memory, 0);
    if (!model->stage.last) cudaCheck(cudaMalloc(&model->grad_output, BT * c.channels * sizeof(floatX)));
    cudaCheck(cudaMalloc(&model->inputs, slots * BT * sizeof(int)));
    cudaCheck(cudaMalloc(&model->targets, BT * sizeof(int)));
    model->inputs_host.assign(slots * BT, 0);
    cudaCheck(cudaMallocHost(&model->losses_host, BT * sizeof(float)));

    matmul_context_init(&model->matmul);
    encoder_backward_scratch_init(&model->encoder_scratch, (int)BT);
    const WorkspaceLayout w = gpt2_workspace_layout(c, B, T);
    model->workspace_bytes = w.total();
    cudaCheck(cudaMalloc(&model->workspace, model->workspace_bytes));
    model->ln_scratch = (float*)model->workspace;
    model->dbias_scratch = (float*)(model->workspace + w.ln);
    model->att_scratch = (float*)(model->workspace + w.ln + w.dbias);
    model->norm_scratch = (float*)(model->workspace + w.ln + w.dbias + w.att);
    model->norm_device = (float*)(model->workspace + w.ln + w.dbias + w.att + w.norm);
    cudaCheck(cudaMallocHost(&model->norm_host, sizeof(float)));
}

// Points acts (and the saved input tokens) at activation slot k.
void gpt2_use_slot(GPT2* model, int k) {
    if (k < 0 || k >= model->act_table.slots) fail("activation slot %d of %d", k, model->act_table.slots);
    model->acts = activation_slot(model->act_table, model->acts_memory, k);
    model->slot = k;
}
// this slot's input tokens, on the device and on the host
int* gpt2_slot_inputs(GPT2* model) {
    return model->inputs + (size_t)model->slot * model->batch_size * model->seq_len;
}
int* gpt2_slot_inputs_host(GPT2* model) {
    return model->inputs_host.data() + (size_t)model->slot * model->batch_size * model->seq_len;
}

// Pipeline parallelism: keeps only stage st's part of the host copy of the whole model just built or loaded
// (llmc/pipeline.h), before anything is sized by it: its layers, and the outer tensors it runs. The model
// becomes one of st.num_layers layers whose tensors it does not hold have size 0; the forward and backward
// run it as they run a whole model, but for the stage's ends (gpt2_forward, gpt2_backward).
void gpt2_take_stage(GPT2* model, const PipeStage& st) {
    model->stage = st;
    if (st.num_stages == 1) return;
    const int L = model->config.num_layers;
    size_t sizes[NUM_PARAMETER_TENSORS];
    pipeline_stage_sizes(model->param_sizes, L, st, sizes);
    std::vector<float> mine(pipeline_stage_num_params(model->param_sizes, L, st));
    pipeline_copy(pipeline_pieces(model->param_sizes, L, st), mine.data(), model->params_host.data(),
                  /*to_stage=*/true);
    model->params_host.swap(mine);
    model->config.num_layers = st.num_layers;
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        model->param_sizes[i] = model->held_sizes[i] = sizes[i];
        model->param_offsets[i] = offset;
        offset += sizes[i];
    }
    model->num_parameters = model->params_floats = model->num_trained = model->num_trained_padded = offset;
}

void gpt2_free(GPT2* model) {
    zero_free(model);
    matmul_context_free(&model->matmul);
    encoder_backward_scratch_free(&model->encoder_scratch);
    cudaCheck(cudaFree(model->params_memory));
    cudaCheck(cudaFree(model->micro_grads_memory));
    cudaCheck(cudaFree(model->grads_memory));
    cudaCheck(cudaFree(model->lora_memory));
    cudaCheck(cudaFree(model->lora_u));
    cudaCheck(cudaFree(model->lora_du));
    cudaCheck(cudaFree(model->dequant));
    for (auto& ms : model->nf4)
        for (Nf4MatrixDevice& m : ms) cudaCheck(cudaFree((void*)m.codes));
    cudaCheck(cudaFree(model->acts_memory));
    cudaCheck(cudaFree(model->grad_output));
    cudaCheck(cudaFree(model->inputs));
    cudaCheck(cudaFree(model->targets));
    cudaCheck(cudaFree(model->workspace));
    cudaCheck(cudaFreeHost(model->losses_host));
    cudaCheck(cudaFreeHost(model->norm_host));
    cudaCheck(cudaStreamDestroy(model->stream));
}

// Layer l's slices of the per-layer activations: a tensor kept for every layer has L slots, a recomputed
// one a single slot. Slot strides use the B, T of the call (the forward may run on B < batch_size).
struct LayerActs {
    floatX *ln1, *qkv, *atty, *residual2, *ln2, *fch, *fch_gelu;
    float *ln1_mean, *ln1_rstd, *lse, *ln2_mean, *ln2_rstd;
};

LayerActs layer_acts(const GPT2* model, int l, int B, int T) {
    const ActivationTensors& a = model->acts;
    const size_t BT = (size_t)B * T, C = model->config.channels, NH = model->config.num_heads;
    const int r = model->recompute;
    const size_t l0 = r >= 1 ? 0 : l, l1 = r >= 2 ? 0 : l, l3 = r >= 3 ? 0 : l;
    const size_t X = sizeof(floatX), F = sizeof(float);
    LayerActs la;
    la.ln1 = a.ln1 + l1 * slot(BT * C, X);
    la.ln1_mean = a.ln1_mean + l3 * slot(BT, F);
    la.ln1_rstd = a.ln1_rstd + l3 * slot(BT, F);
    la.qkv = a.qkv + l3 * slot(BT * 3 * C, X);
    la.atty = a.atty + l3 * slot(BT * C, X);
    la.lse = a.lse + l3 * slot(BT * NH, F);
    la.residual2 = a.residual2 + l3 * slot(BT * C, X);
    la.ln2 = a.ln2 + l1 * slot(BT * C, X);
    la.ln2_mean = a.ln2_mean + l3 * slot(BT, F);
    la.ln2_rstd = a.ln2_rstd + l3 * slot(BT, F);
    la.fch = a.fch + l3 * slot(BT * 4 * C, X);
    la.fch_gelu = a.fch_gelu + l0 * slot(BT * 4 * C, X);
    return la;
}

// the input of layer l: the embeddings for layer 0, the output residual3 of layer l-1 otherwise (l = L:
// the input of the final LayerNorm)
floatX* layer_input(const GPT2* model, int l, int B, int T) {
    const size_t BTC = (size_t)B * T * model->config.channels;
    return l == 0 ? model->acts.encoded : model->acts.residual3 + (size_t)(l - 1) * slot(BTC, sizeof(floatX));
}

// ----------------------------------------------------------------------------------------------------
// 2. forward, backward

// Layer l's slices of the per-layer tensors of a table (the parameters or their gradients): made by
// layer_params(tensors, l, C) (llmc/zero.h, shared with the CPU trainer).
using LayerParams = LayerTensors<floatX>;

// ----------------------------------------------------------------------------------------------------
// ZeRO-2/3: where the forward and backward find a unit's parameters and put its gradients, as in the CPU
// trainer. Below stage 2 (stage 3 for the parameters) these are the whole buffers. Ordering: a collective
// runs on the NCCL stream after everything queued so far on the compute stream, so a bucket's gather starts
// only once the kernels that read its previous unit are done, and a reduce-scatter once its unit's
// gradients are written; the compute stream waits for that one collective's event (not for all of them)
// before it reads what the collective wrote. So the next layer's gather and the last layer's
// reduce-scatter run while this layer computes. A gathered unit is kept until the next update: the
// forward's last two layers are the backward's first two, and the embeddings are gathered once.

// (unit_point, llmc/zero.h, lays a ParameterTensors over a unit's bucket.)

// Starts gathering unit u into bucket b, unless b holds it already (gathered since the last update).
void zero_fetch_start(GPT2* m, ZeroGpuBucket* b, int u) {
    ZeroGpu& z = m->zero;
    if (b->unit == u && b->version == z.version) return;
    const ZeroUnit& unit = z.units.units[u];
    multi_gpu_all_gather(z.mgc, m->stream, z.param_shard + unit.shard_offset, b->data, unit.slice);
    multi_gpu_mark(z.mgc, b->gathered);
    b->unit = u;
    b->version = z.version;
    b->waited = false;
}
// Unit u's parameters in bucket b, for the kernels queued next.
floatX* zero_fetch(GPT2* m, ZeroGpuBucket* b, int u) {
    zero_fetch_start(m, b, u);
    if (!b->waited) multi_gpu_wait_mark(m->zero.mgc, m->stream, b->gathered);
    b->waited = true;
    return b->data;
}

// The parameters of layer l for a pass that goes on to layer `next` (l + 1 forward, l - 1 backward; -1:
// none): at stage 3 gathered, and next's gather started.
LayerParams gpt2_layer_params(GPT2* m, int l, int next) {
    const size_t C = m->config.channels;
    if (m->zero.stage < 3) return layer_params(m->params, l, C);
    ZeroGpu& z = m->zero;
    floatX* bucket = zero_fetch(m, &z.layer[l % 2], 1 + l);
    if (next >= 0 && next < m->config.num_layers) zero_fetch_start(m, &z.layer[next % 2], 1 + next);
    ParameterTensors t = {};
    unit_point(&t, bucket, z.units.units[1 + l]);
    return layer_params(t, 0, C);
}
// The tensors outside the layers (wte, wpe, lnfw, lnfb; at stage 3 the others null), for a pass whose
// first layer is first_layer (its gather is queued first).
ParameterTensors gpt2_outer_params(GPT2* m, int first_layer) {
    if (m->zero.stage < 3) return m->params;
    ZeroGpu& z = m->zero;
    const int L = m->config.num_layers;
    zero_fetch_start(m, &z.layer[first_layer % 2], 1 + first_layer);
    ParameterTensors t = {};
    unit_point(&t, zero_fetch(m, &z.embed, 0), z.units.units[0]);
    unit_point(&t, zero_fetch(m, &z.final_ln, L + 1), z.units.units[L + 1]);
    return t;
}

// Where the backward writes this micro-step's gradients of wte, wpe, lnfw, lnfb, zeroed (the launchers
// add into them: the tied wte, dbias): the whole floatX gradient buffer (also the LoRA adapters'), or at
// stages 2 and 3 the embeddings' and the final LayerNorm's buckets.
ParameterTensors gpt2_outer_grads(GPT2* m) {
    cudaStream_t s = m->stream;
    if (m->zero.stage < 2) {
        cudaCheck(cudaMemsetAsync(m->micro_grads_memory, 0, m->num_trained_padded * sizeof(floatX), s));
        return m->micro_grads;
    }
    ZeroGpu& z = m->zero;
    const ZeroUnit &ue = z.units.units[0], &uf = z.units.units[m->config.num_layers + 1];
    cudaCheck(cudaMemsetAsync(z.grad_embed, 0, ue.padded * sizeof(floatX), s));
    cudaCheck(cudaMemsetAsync(z.grad_unit, 0, uf.padded * sizeof(floatX), s));
    ParameterTensors g = {};
    unit_point(&g, z.grad_embed, ue);
    unit_point(&g, z.grad_unit, uf);
    return g;
}
// Where it writes layer l's: at stages 2 and 3 the zeroed bucket (the final LayerNorm's must be done).
LayerParams gpt2_layer_grads(GPT2* m, int l) {
    const size_t C = m->config.channels;
    if (m->zero.stage < 2) return layer_params(m->micro_grads, l, C);
    ZeroGpu& z = m->zero;
    const ZeroUnit& u = z.units.units[1 + l];
    cudaCheck(cudaMemsetAsync(z.grad_unit, 0, u.padded * sizeof(floatX), m->stream));
    ParameterTensors g = {};
    unit_point(&g, z.grad_unit, u);
    return layer_params(g, 0, C);
}

// Unit u gathered from every rank's slice into a gradient bucket (free outside the backward: the stage-2
// update and the model file use them), complete for what is queued next on the compute stream.
floatX* zero_gather_unit(GPT2* m, int u) {
    ZeroGpu& z = m->zero;
    const ZeroUnit& unit = z.units.units[u];
    floatX* bucket = u == 0 ? z.grad_embed : z.grad_unit;
    multi_gpu_all_gather(z.mgc, m->stream, z.param_shard + unit.shard_offset, bucket, unit.slice);
    multi_gpu_sync(z.mgc, m->stream);
    return bucket;
}
// Stage 2, after the update: unit u's parameters, gathered, into the full buffer.
void zero_gather_into_params(GPT2* m, int u) {
    const floatX* bucket = zero_gather_unit(m, u);
    for (const ZeroPiece& p : m->zero.units.units[u].pieces) {
        cudaCheck(cudaMemcpyAsync(m->params_memory + p.global_offset, bucket + p.offset_in_unit,
                                  p.count * sizeof(floatX), cudaMemcpyDeviceToDevice, m->stream));
    }
}

// The last unit's reduce-scatter is done: add this rank's slice of it into grad_shard.
void zero_grads_flush(GPT2* m) {
    ZeroGpu& z = m->zero;
    if (z.pending < 0) return;
    const ZeroUnit& unit = z.units.units[z.pending];
    multi_gpu_wait_mark(z.mgc, m->stream, z.grad_reduced);
    accumulate_grads_fp32(z.grad_shard + unit.shard_offset, z.grad_f32 + (size_t)z.mgc->rank * unit.slice,
                          unit.slice, m->stream);
    z.pending = -1;
}
// Unit u's gradients of this micro-step are complete (stages 2 and 3): converted to fp32 in grad_f32,
// averaged over ranks by a reduce-scatter in place, and this rank's slice added into grad_shard when the
// next unit comes (zero_grads_flush), so that the reduce-scatter runs during the next layer's backward.
void zero_grads_done(GPT2* m, int u) {
    ZeroGpu& z = m->zero;
    if (z.stage < 2) return;
    zero_grads_flush(m);
    cudaStream_t s = m->stream;
    const ZeroUnit& unit = z.units.units[u];
    cudaCheck(cudaMemsetAsync(z.grad_f32, 0, unit.padded * sizeof(float), s));
    accumulate_grads_fp32(z.grad_f32, u == 0 ? z.grad_embed : z.grad_unit, unit.padded, s); // padding: 0
    multi_gpu_reduce_scatter(z.mgc, s, z.grad_f32, z.grad_f32 + (size_t)z.mgc->rank * unit.slice, unit.slice,
                             true);
    multi_gpu_mark(z.mgc, z.grad_reduced);
    z.pending = u;
}

// Layer l's base matrix of LoRA target t (qkvw, attprojw, fcw, fcprojw): the parameter itself, or under
// QLoRA dequantized from NF4 into model->dequant (stream-ordered: valid for the matmuls queued next).
const floatX* base_matrix(GPT2* model, const LayerParams& lp, int l, int t) {
    if (model->lora.nf4) {
        nf4_dequantize_floatX(model->dequant, model->nf4[t][l], model->stream);
        return model->dequant;
    }
    const floatX* w[NUM_LORA_TARGETS] = {lp.qkvw, lp.attprojw, lp.fcw, lp.fcprojw};
    return w[t];
}

// Target t's adapter of layer l: A (r, IN), B (OC, r) in `from` (the adapters or their gradients), u (BT, r).
floatX* lora_a(const GPT2* m, floatX* from, int t, int l) {
    int in, out;
    lora_target_shape(m->config, t, &in, &out);
    return from + m->lora_layout.a_offset[t] + (size_t)l * m->lora.rank * in;
}
floatX* lora_b(const GPT2* m, floatX* from, int t, int l) {
    int in, out;
    lora_target_shape(m->config, t, &in, &out);
    return from + m->lora_layout.b_offset[t] + (size_t)l * m->lora.rank * out;
}
floatX* lora_u(const GPT2* m, int t, int l) {
    const size_t BTr = (size_t)m->batch_size * m->seq_len * m->lora.rank;
    return m->lora_u + ((size_t)t * m->config.num_layers + l) * BTr;
}

// One of a block's four matmuls, target t of layer l (parameters lp): out = inp.W^T + bias, plus the
// adapter's s.(inp.A^T).B^T when the matrix has one. inp (BT, IN) -> out (BT, OC).
void block_matmul_forward(GPT2* model, const LayerParams& lp, int l, int t, floatX* out, const floatX* inp,
                          const floatX* bias, int BT, int IN, int OC) {
    matmul_forward(&model->matmul, out, inp, base_matrix(model, lp, l, t), bias, BT, IN, OC, model->stream);
    if (lora_has(model->lora, t)) {
        floatX* a = model->lora_memory;
        lora_forward(&model->matmul, out, lora_u(model, t, l), inp, lora_a(model, a, t, l),
                     lora_b(model, a, t, l), lora_scale(model->lora), BT, IN, OC, model->lora.rank,
                     model->stream);
    }
}
// Its backward: dinp (overwritten) through W and the adapter, then the GELU backward when pre_gelu is given
// (fcproj: dinp is d fch); dweight, dbias unless frozen (null); the adapter's dA, dB (added).
void block_matmul_backward(GPT2* model, const LayerParams& lp, int l, int t, floatX* dinp, floatX* dweight,
                           floatX* dbias, const floatX* dout, const floatX* inp, const floatX* pre_gelu,
                           int BT, int IN, int OC) {
    const bool adapted = lora_has(model->lora, t);
    // with an adapter the GELU backward waits until its du.A is in dinp
    matmul_backward(&model->matmul, dinp, dweight, dbias, dout, inp, base_matrix(model, lp, l, t), BT, IN, OC,
                    adapted ? nullptr : pre_gelu, model->dbias_scratch, model->stream);
    if (!adapted) return;
    floatX *a = model->lora_memory, *g = model->micro_grads_memory;
    lora_backward(&model->matmul, dinp, lora_a(model, g, t, l), lora_b(model, g, t, l), model->lora_du, dout,
                  inp, lora_u(model, t, l), lora_a(model, a, t, l), lora_b(model, a, t, l),
                  lora_scale(model->lora), BT, IN, OC, model->lora.rank, model->stream);
    if (pre_gelu != nullptr) gelu_backward_inplace(dinp, pre_gelu, (size_t)BT * IN, model->stream);
}

// Layer l's forward up to the fc GELU: everything but fcproj and its residual add, which the caller fuses
// with the next LayerNorm. compute_ln1: ln1 = LayerNorm(residual) here (layer 0, and the -r 3 recompute);
// otherwise the previous layer's fused residual + LayerNorm has written it.
void block_forward(GPT2* model, const LayerParams& lp, int l, int B, int T, const floatX* residual,
                   const LayerActs& la, bool compute_ln1) {
    const GPT2Config& c = model->config;
    const int C = c.channels, NH = c.num_heads, BT = B * T;
    cudaStream_t s = model->stream;
    floatX* scratch = model->acts.scratch_btc;
    if (compute_ln1)
        layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, residual, lp.ln1w, lp.ln1b, BT, C, s);
    block_matmul_forward(model, lp, l, LORA_QKV, la.qkv, la.ln1, lp.qkvb, BT, C, 3 * C);
    attention_forward(la.atty, la.lse, la.qkv, B, T, NH, C / NH, s);
    block_matmul_forward(model, lp, l, LORA_ATTPROJ, scratch, la.atty, lp.attprojb, BT, C, C);
    fused_residual_layernorm_forward(la.residual2, la.ln2, la.ln2_mean, la.ln2_rstd, residual, scratch,
                                     lp.ln2w, lp.ln2b, BT, C, s);
    block_matmul_forward(model, lp, l, LORA_FC, la.fch, la.ln2, lp.fcb, BT, C, 4 * C);
    gelu_forward(la.fch_gelu, la.fch, (size_t)BT * 4 * C, s);
}

// Forward pass over inputs (B,T) (host). Without targets it leaves the logits in acts.logits. With
// targets it computes the per-position losses (model->mean_loss, after gpt2_wait_loss) and, when
// dloss_scale > 0 (training), overwrites the logits with dloss/dlogits * dloss_scale for the backward.
// dloss_scale = 1 / (B*T*grad_accum_steps): the mean over positions and micro-steps.
void gpt2_forward(GPT2* model, const int* inputs, const int* targets, int B, int T, float dloss_scale) {
    const GPT2Config& c = model->config;
    const int V = c.vocab_size, Vp = c.padded_vocab_size, L = c.num_layers, C = c.channels, BT = B * T;
    if (B > model->batch_size || T != model->seq_len) {
        fail("forward with B=%d T=%d, but the model was allocated for B<=%d T=%d", B, T, model->batch_size,
             model->seq_len);
    }
    for (int i = 0; i < BT; i++) {
        if (inputs[i] < 0 || inputs[i] >= V)
            fail("input token %d at position %d is outside [0, %d)", inputs[i], i, V);
        if (targets && (targets[i] < 0 || targets[i] >= V)) {
            fail("target token %d at position %d is outside [0, %d)", targets[i], i, V);
        }
    }
    cudaStream_t s = model->stream;
    int* inputs_device = gpt2_slot_inputs(model);
    memcpy(gpt2_slot_inputs_host(model), inputs, (size_t)BT * sizeof(int));
    cudaCheck(cudaMemcpyAsync(inputs_device, inputs, (size_t)BT * sizeof(int), cudaMemcpyHostToDevice, s));
    if (targets) {
        cudaCheck(
            cudaMemcpyAsync(model->targets, targets, (size_t)BT * sizeof(int), cudaMemcpyHostToDevice, s));
    }
    const ParameterTensors p = gpt2_outer_params(model, 0); // (ZeRO-3: gathered)
    const ActivationTensors& a = model->acts;
    // (a later pipeline stage: a.encoded holds the previous stage's output, received)
    if (model->stage.first) encoder_forward(a.encoded, inputs_device, p.wte, p.wpe, B, T, C, s);
    for (int l = 0; l < L; l++) {
        LayerActs la = layer_acts(model, l, B, T);
        const LayerParams lp = gpt2_layer_params(model, l, l + 1);
        block_forward(model, lp, l, B, T, layer_input(model, l, B, T), la, l == 0);
        block_matmul_forward(model, lp, l, LORA_FCPROJ, a.scratch_btc, la.fch_gelu, lp.fcprojb, BT, 4 * C, C);
        // residual3 = residual2 + fcproj, fused with the next LayerNorm (the next layer's ln1, or lnf)
        floatX* residual3 = layer_input(model, l + 1, B, T);
        if (l + 1 < L) {
            LayerActs next = layer_acts(model, l + 1, B, T);
            const LayerParams np = gpt2_layer_params(model, l + 1, -1); // (ZeRO-3: its gather began with l's)
            fused_residual_layernorm_forward(residual3, next.ln1, next.ln1_mean, next.ln1_rstd, la.residual2,
                                             a.scratch_btc, np.ln1w, np.ln1b, BT, C, s);
        } else if (model->stage.last) {
            fused_residual_layernorm_forward(residual3, a.lnf, a.lnf_mean, a.lnf_rstd, la.residual2,
                                             a.scratch_btc, p.lnfw, p.lnfb, BT, C, s);
        } else { // a stage before the last: its output goes to the next stage, whose first layer norms it
            residual_forward(residual3, la.residual2, a.scratch_btc, (size_t)BT * C, s);
        }
    }
    model->mean_loss = -1.0f;
    if (!model->stage.last) return;
    matmul_forward(&model->matmul, a.logits, a.lnf, p.wte, nullptr, BT, C, Vp, s); // tied to wte
    if (targets) {
        fused_classifier(a.logits, a.losses, model->targets, dloss_scale, BT, V, Vp, dloss_scale > 0.0f, s);
        cudaCheck(cudaMemcpyAsync(model->losses_host, a.losses, (size_t)BT * sizeof(float),
                                  cudaMemcpyDeviceToHost, s));
    }
}

// Waits for the last forward (with targets) and returns its mean loss: a fixed-order sum in double, so
// the printed loss is reproducible.
float gpt2_wait_loss(GPT2* model, int B, int T) {
    cudaCheck(cudaStreamSynchronize(model->stream));
    double sum = 0.0;
    for (int i = 0; i < B * T; i++) sum += model->losses_host[i];
    model->mean_loss = (float)(sum / (B * T));
    return model->mean_loss;
}

// This micro-step's floatX gradients of the tensors of layer l (l < 0: the non-layer tensors) are final:
// add them into the fp32 accumulation buffer and, on the last micro-step of a multi-GPU ZeRO-0 step, start
// their all-reduce (average) on the NCCL stream, overlapping the backward of the layers below.
void gpt2_grads_ready(GPT2* model, MultiGpuConfig* mgc, int l, bool reduce) {
    const int L = model->config.num_layers;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        if (parameter_is_per_layer(i) != (l >= 0)) continue;
        const size_t count = l >= 0 ? model->param_sizes[i] / L : model->param_sizes[i];
        const size_t offset = model->param_offsets[i] + (l >= 0 ? (size_t)l * count : 0);
        accumulate_grads_fp32(model->grads_memory + offset, model->micro_grads_memory + offset, count,
                              model->stream);
        if (reduce) multi_gpu_allreduce_mean(mgc, model->stream, model->grads_memory + offset, count);
    }
}

// The step's fp32 gradients start from zero (before its first micro-step's backward, as on the CPU).
void gpt2_zero_grad(GPT2* model) {
    if (model->zero.stage >= 2) {
        cudaCheck(cudaMemsetAsync(model->zero.grad_shard, 0, model->zero.units.shard_size * sizeof(float),
                                  model->stream));
        return;
    }
    cudaCheck(
        cudaMemsetAsync(model->grads_memory, 0, model->num_trained_padded * sizeof(float), model->stream));
}

// Backward pass of the last training forward (dloss_scale > 0) of the current slot: adds its gradients into
// grads_memory (fp32). A pipeline stage before the last starts from doutput (B,T,C), the gradient of its
// output that the next stage sent; a stage after the first leaves the gradient of its input in
// acts.dresidual, for the previous stage.
// overlap_reduce: this is the last micro-step of a multi-GPU ZeRO-0 step; the gradients are averaged over
// processes layer by layer as they become final. Otherwise the whole buffer is accumulated at the end.
// ZeRO-2/3: each unit's gradients are reduce-scattered as soon as they are complete, and this rank's
// slice is added into the fp32 shard (zero_grads_done).
void gpt2_backward(GPT2* model, MultiGpuConfig* mgc, bool overlap_reduce, const floatX* doutput = nullptr) {
    const GPT2Config& c = model->config;
    const int B = model->batch_size, T = model->seq_len, BT = B * T;
    const int Vp = c.padded_vocab_size, L = c.num_layers, NH = c.num_heads, C = c.channels;
    const ActivationTensors& a = model->acts;
    cudaStream_t s = model->stream;
    MatmulContext* mm = &model->matmul;
    floatX* dres = a.dresidual;
    floatX* scratch = a.scratch_btc;
    // (ZeRO-3: p gathered; ZeRO-2/3: g in buckets) the floatX gradients hold this micro-step only
    const ParameterTensors p = gpt2_outer_params(model, L - 1), g = gpt2_outer_grads(model);
    if (model->stage.last) {
        cudaCheck(cudaMemsetAsync(dres, 0, (size_t)BT * C * sizeof(floatX), s));
        // classifier (logits = lnf wte^T; a.logits holds dlogits) and the final LayerNorm
        matmul_backward(mm, scratch, g.wte, nullptr, a.logits, a.lnf, p.wte, BT, C, Vp, nullptr, nullptr, s);
        layernorm_backward(dres, g.lnfw, g.lnfb, model->ln_scratch, scratch, layer_input(model, L, B, T),
                           p.lnfw, a.lnf_mean, a.lnf_rstd, B, T, C, s);
        zero_grads_done(model, L + 1); // the final LayerNorm's unit
    } else {
        if (doutput == nullptr) fail("gpt2_backward: a pipeline stage before the last needs doutput");
        cudaCheck(
            cudaMemcpyAsync(dres, doutput, (size_t)BT * C * sizeof(floatX), cudaMemcpyDeviceToDevice, s));
    }

    for (int l = L - 1; l >= 0; l--) {
        const floatX* residual = layer_input(model, l, B, T);
        LayerActs la = layer_acts(model, l, B, T);
        const LayerParams lp = gpt2_layer_params(model, l, l - 1), lg = gpt2_layer_grads(model, l);
        // recompute what the forward did not keep (same kernels, same inputs: the same bits)
        if (model->recompute == 3) {
            block_forward(model, lp, l, B, T, residual, la, true);
        } else {
            if (model->recompute == 2) {
                layernorm_forward(la.ln1, nullptr, nullptr, residual, lp.ln1w, lp.ln1b, BT, C, s);
                layernorm_forward(la.ln2, nullptr, nullptr, la.residual2, lp.ln2w, lp.ln2b, BT, C, s);
            }
            if (model->recompute >= 1) gelu_forward(la.fch_gelu, la.fch, (size_t)BT * 4 * C, s);
        }
        // dres holds dL/d residual3 of this layer. residual3 = residual2 + fcproj(gelu(fch)):
        block_matmul_backward(model, lp, l, LORA_FCPROJ, a.dfch, lg.fcprojw, lg.fcprojb, dres, la.fch_gelu,
                              la.fch, BT, 4 * C, C); // dfch: pre-GELU
        block_matmul_backward(model, lp, l, LORA_FC, scratch, lg.fcw, lg.fcb, a.dfch, la.ln2, nullptr, BT, C,
                              4 * C); // scratch = dln2
        layernorm_backward(dres, lg.ln2w, lg.ln2b, model->ln_scratch, scratch, la.residual2, lp.ln2w,
                           la.ln2_mean, la.ln2_rstd, B, T, C, s); // dres = dL/d residual2
        // residual2 = residual + attproj(attention(qkv(ln1(residual)))):
        block_matmul_backward(model, lp, l, LORA_ATTPROJ, scratch, lg.attprojw, lg.attprojb, dres, la.atty,
                              nullptr, BT, C, C); // scratch = datty
        attention_backward(a.dqkv, scratch, la.qkv, la.atty, la.lse, model->att_scratch, B, T, NH, C / NH, s);
        // scratch = dln1
        block_matmul_backward(model, lp, l, LORA_QKV, scratch, lg.qkvw, lg.qkvb, a.dqkv, la.ln1, nullptr, BT,
                              C, 3 * C);
        layernorm_backward(dres, lg.ln1w, lg.ln1b, model->ln_scratch, scratch, residual, lp.ln1w, la.ln1_mean,
                           la.ln1_rstd, B, T, C, s); // dres = dL/d residual (layer input)
        if (overlap_reduce && model->lora.rank == 0) gpt2_grads_ready(model, mgc, l, true);
        zero_grads_done(model, 1 + l);
    }
    if (model->lora.rank > 0) { // no embedding gradients; the adapters' are averaged as one buffer
        accumulate_grads_fp32(model->grads_memory, model->micro_grads_memory, model->num_trained_padded, s);
        if (overlap_reduce) multi_gpu_allreduce_mean(mgc, s, model->grads_memory, model->num_trained_padded);
        return;
    }
    if (model->stage.first) { // (a later stage sends dres, the gradient of its input, back)
        encoder_backward(g.wte, g.wpe, dres, gpt2_slot_inputs(model), gpt2_slot_inputs_host(model),
                         &model->encoder_scratch, B, T, C, s);
    }
    if (model->zero.stage >= 2) {
        zero_grads_done(model, 0);
        zero_grads_flush(model);
    } else if (overlap_reduce) {
        gpt2_grads_ready(model, mgc, -1, true);
    } else {
        accumulate_grads_fp32(model->grads_memory, model->micro_grads_memory, model->num_trained_padded, s);
    }
}

// ----------------------------------------------------------------------------------------------------
// 3. the optimizer: AdamW on this process's shard of the parameters
//
// Data parallelism (llmc/zero.h has the arithmetic, llmc/nccl_gpu.cuh the collectives):
//   ZeRO stage 0: the fp32 gradients are all-reduced (averaged) layer by layer during the last micro-step's
//                 backward; every process updates every parameter (same gradients, same seed: same result).
//   ZeRO stage 1: reduce-scatter (average) of the fp32 gradients, so process r holds the average of its 1/N
//                 slice; it keeps the fp32 master weights, m and v only for that slice and updates only it;
//                 then all-gather of the updated floatX parameters.
//   ZeRO stages 2 and 3: the slices are llmc/zero.h's units' (section 2: the backward reduce-scattered
//                 each unit into the fp32 grad shard); AdamW writes the floatX parameter shard; stage 2
//                 then all-gathers every unit into the full parameters, stage 3 leaves them sharded (the
//                 next forward gathers them).
// One process: every collective returns at once (in place), no communication at all.
// AdamW, with the math in llmc/adamw.cuh; gradient clipping passes clip/norm as grad_scale. The floatX
// parameters are written from the fp32 master with stochastic rounding, its bits a hash of (seed, step,
// index); the seed mixes in each range's global offset so that two tensors do not share rounding bits.
// With -qo 1, m and v are 8-bit codes with one scale per block (llmc/adamw8bit.cuh; round to nearest).

struct Optimizer {
    int zero_stage = 0;
    // pipeline parallelism: the optimizer of one stage, its data-parallel group the mgc of gpt2_update
    MultiGpuConfig* pipe = nullptr; // this replica's stages: the gradient norm sums over them
    MultiGpuConfig* tie = nullptr;  // its first and last stage, which both hold wte (the embedding and the
                                    // classifier): wte's gradient is summed over the two, the first
                                    // stage updates wte and sends it to the last (whose ranges leave it out)
    ShardLayout layout; // which slice of the flat buffer this process updates (stage 2/3: the size of
                        // its shard of the units)
    std::vector<ShardRange> ranges;    // that slice (those slices) cut at tensor boundaries
    bool decay[NUM_PARAMETER_TENSORS]; // weight decay on tensor i (the matrices: every LoRA tensor)
    bool keep_master = true;           // fp32 master weights (needed in the BF16 build)
    float* master = nullptr;           // (shard_size) fp32
    float* m = nullptr;                // (shard_size) fp32 AdamW state
    float* v = nullptr;
    // 8-bit AdamW state: codes (shard_size each), one fp32 absmax per block of each range
    bool use_8bit = false;
    int quant_block = 0; // values per absmax scale (-qb)
    uint8_t* m_codes = nullptr;
    uint8_t* v_codes = nullptr;
    float* m_absmax = nullptr;
    float* v_absmax = nullptr;
    std::vector<size_t> block_offset; // first block of each range
    size_t num_blocks = 0;
    uint64_t seed = 0; // of the stochastic rounding
};

// The layout only (the model's buffers are sized from it); optimizer_allocate after gpt2_allocate. It is
// the layout of the trained buffer: the parameters, or with LoRA the adapters. Stages 2 and 3 take the
// units of gpt2_zero_init.
void optimizer_init(Optimizer* opt, const GPT2* model, const MultiGpuConfig* mgc, int zero_stage,
                    bool use_8bit, int quant_block, bool keep_master, uint64_t seed) {
#if !defined(ENABLE_FP32)
    if (!keep_master)
        fail("flag -w 0: the BF16 build needs the fp32 master weights (-w 0 is for the FP32 build)");
#endif
    const bool lora = model->lora.rank > 0;
    const size_t* sizes = lora ? model->lora_layout.sizes : model->param_sizes;
    const int num_tensors = lora ? model->lora_layout.num_tensors : NUM_PARAMETER_TENSORS;
    for (int i = 0; i < num_tensors; i++) opt->decay[i] = lora || parameter_is_matrix(i);
    opt->zero_stage = zero_stage;
    opt->ranges = zero_optimizer_ranges(sizes, num_tensors, model->num_trained, zero_stage, model->zero.units,
                                        mgc->rank, mgc->num_ranks, &opt->layout);
    // the last of several pipeline stages does not update its copy of wte: the first stage sends it
    if (model->stage.last && !model->stage.first) {
        std::vector<ShardRange> kept;
        for (const ShardRange& r : opt->ranges)
            if (r.tensor != TENSOR_WTE) kept.push_back(r);
        opt->ranges = kept;
    }
    opt->use_8bit = use_8bit;
    opt->quant_block = quant_block;
    opt->keep_master = keep_master;
    opt->seed = seed;
    opt->num_blocks = 0;
    opt->block_offset.assign(opt->ranges.size(), 0);
    for (size_t r = 0; r < opt->ranges.size(); r++) {
        opt->block_offset[r] = opt->num_blocks;
        if (use_8bit) opt->num_blocks += ceil_div(opt->ranges[r].count, (size_t)quant_block);
    }
}

// Allocates the state; the master weights start as this shard of the trained buffer's fp32 host copy.
void optimizer_allocate(Optimizer* opt, const GPT2* model) {
    const size_t S = opt->layout.shard_size;
    const float* host = model->lora.rank > 0 ? model->lora_host.data() : model->params_host.data();
    if (opt->keep_master) {
        std::vector<float> shard(S, 0.0f); // the padding stays 0
        for (const ShardRange& rg : opt->ranges) {
            memcpy(shard.data() + rg.offset_in_shard, host + rg.global_offset, rg.count * sizeof(float));
        }
        cudaCheck(cudaMalloc(&opt->master, S * sizeof(float)));
        cudaCheck(cudaMemcpy(opt->master, shard.data(), S * sizeof(float), cudaMemcpyHostToDevice));
    }
    if (!opt->use_8bit) {
        cudaCheck(cudaMalloc(&opt->m, S * sizeof(float)));
        cudaCheck(cudaMalloc(&opt->v, S * sizeof(float)));
        cudaCheck(cudaMemset(opt->m, 0, S * sizeof(float)));
        cudaCheck(cudaMemset(opt->v, 0, S * sizeof(float)));
    } else {
        // a block whose absmax is 0 dequantizes to all zeros whatever its codes: m = v = 0 at the start
        const size_t nb = opt->num_blocks > 0 ? opt->num_blocks : 1;
        cudaCheck(cudaMalloc(&opt->m_codes, S));
        cudaCheck(cudaMalloc(&opt->v_codes, S));
        cudaCheck(cudaMalloc(&opt->m_absmax, nb * sizeof(float)));
        cudaCheck(cudaMalloc(&opt->v_absmax, nb * sizeof(float)));
        cudaCheck(cudaMemset(opt->m_codes, 0, S));
        cudaCheck(cudaMemset(opt->v_codes, 0, S));
        cudaCheck(cudaMemset(opt->m_absmax, 0, nb * sizeof(float)));
        cudaCheck(cudaMemset(opt->v_absmax, 0, nb * sizeof(float)));
    }
}

void optimizer_free(Optimizer* opt) {
    cudaCheck(cudaFree(opt->master));
    cudaCheck(cudaFree(opt->m));
    cudaCheck(cudaFree(opt->v));
    cudaCheck(cudaFree(opt->m_codes));
    cudaCheck(cudaFree(opt->v_codes));
    cudaCheck(cudaFree(opt->m_absmax));
    cudaCheck(cudaFree(opt->v_absmax));
}

// Bytes of optimizer state (master weights + moments) this process holds.
size_t optimizer_state_bytes(const Optimizer* opt) {
    const size_t S = opt->layout.shard_size;
    size_t bytes = opt->keep_master ? S * sizeof(float) : 0;
    return bytes + (opt->use_8bit ? 2 * S + 2 * opt->num_blocks * sizeof(float) : 2 * S * sizeof(float));
}

// The floatX parameters of a range that AdamW writes: in the trained buffer, or at ZeRO-2/3 the shard.
floatX* optimizer_params(GPT2* model, const Optimizer* opt, const ShardRange& rg) {
    if (opt->zero_stage >= 2) return model->zero.param_shard + rg.offset_in_shard;
    return model->trained + rg.global_offset;
}
// The fp32 copy of a range that AdamW updates: the master shard, or (FP32 build, -w 0) the parameters.
float* optimizer_master(GPT2* model, Optimizer* opt, const ShardRange& rg) {
    if (opt->master != nullptr) return opt->master + rg.offset_in_shard;
#if defined(ENABLE_FP32)
    return optimizer_params(model, opt, rg);
#else
    (void)model;
    fail("optimizer: the BF16 build needs the fp32 master weights");
#endif
}

// One optimizer step from the gradients accumulated in model->grads_memory, on the trained buffer (the
// parameters, or the LoRA adapters). t is 1-based. Returns the global gradient norm before clipping.
float gpt2_update(GPT2* model, Optimizer* opt, MultiGpuConfig* mgc, float lr, const AdamWConfig& h, int t) {
    const ShardLayout& lay = opt->layout;
    cudaStream_t s = model->stream;
    // 1. average over processes (stage 0: queued by the backward; stages 2 and 3: done by it, unit by unit,
    //    into the shard); g = this process's slice
    float* g = opt->zero_stage >= 2 ? model->zero.grad_shard : model->grads_memory + lay.shard_offset;
    //    (a pipeline: the first and the last stage each made part of wte's gradient; both get the sum, and
    //    the last stage's copy is zeroed, so that the norm counts it once: the first stage updates wte.
    //    ZeRO-0 is averaged here, not during the backward: two communicators at once could deadlock)
    if (opt->tie) {
        float* wte = model->grads_memory + model->param_offsets[TENSOR_WTE];
        const size_t n = model->param_sizes[TENSOR_WTE];
        multi_gpu_allreduce_sum(opt->tie, s, wte, n);
        multi_gpu_sync(opt->tie, s);
        if (model->stage.last) cudaCheck(cudaMemsetAsync(wte, 0, n * sizeof(float), s));
    }
    if (opt->zero_stage == 0 && opt->pipe)
        multi_gpu_allreduce_mean(mgc, s, model->grads_memory, model->num_trained_padded);
    if (opt->zero_stage == 1) multi_gpu_reduce_scatter(mgc, s, model->grads_memory, g, lay.shard_size, true);
    multi_gpu_sync(mgc, s);
    // 2. global norm: squares summed over the slice (padding is 0), then over processes (and stages)
    global_norm_squared(model->norm_device, g, lay.shard_size, model->norm_scratch, s);
    if (opt->zero_stage >= 1) {
        multi_gpu_allreduce_sum(mgc, s, model->norm_device, 1);
        multi_gpu_sync(mgc, s);
    }
    if (opt->pipe) {
        multi_gpu_allreduce_sum(opt->pipe, s, model->norm_device, 1);
        multi_gpu_sync(opt->pipe, s);
    }
    cudaCheck(
        cudaMemcpyAsync(model->norm_host, model->norm_device, sizeof(float), cudaMemcpyDeviceToHost, s));
    multi_gpu_wait(opt->pipe ? opt->pipe : mgc, s, step_timeout_s());
    const float norm = sqrtf(*model->norm_host);
    // a non-finite norm (the same on every rank): no AdamW, no all-gather. The loop (llmc/run_plan.h)
    // counts the skipped steps.
    if (!std::isfinite(norm)) return norm;
    // 3. clip: scale the gradient so its norm is at most grad_clip
    const float scale = (h.grad_clip > 0.0f && norm > h.grad_clip) ? h.grad_clip / norm : 1.0f;
    // 4. AdamW, range by range (weight decay only on matrices)
    for (size_t r = 0; r < opt->ranges.size(); r++) {
        const ShardRange& rg = opt->ranges[r];
        const float wd = opt->decay[rg.tensor] ? h.weight_decay : 0.0f;
        floatX* params = optimizer_params(model, opt, rg);
        float* master = optimizer_master(model, opt, rg);
        const float* gr = g + rg.offset_in_shard;
        if (!opt->use_8bit) {
            const unsigned int seed = (unsigned int)rng_mix64(opt->seed ^ rng_mix64(rg.global_offset));
            adamw_update(params, opt->master ? master : nullptr, gr, opt->m + rg.offset_in_shard,
                         opt->v + rg.offset_in_shard, rg.count, lr, h.beta1, h.beta2, h.eps, wd, scale, t,
                         seed, s);
        } else {
            const size_t b = opt->block_offset[r];
            adamw8bit_update_cuda(master, opt->master ? params : nullptr, gr,
                                  opt->m_codes + rg.offset_in_shard, opt->m_absmax + b,
                                  opt->v_codes + rg.offset_in_shard, opt->v_absmax + b, rg.count,
                                  opt->quant_block, lr, h.beta1, h.beta2, h.eps, wd, t, scale, s);
        }
    }
    // 5. ZeRO-1, 2: every process gets everyone's updated slices; ZeRO-3: the gathered units are stale
    if (opt->zero_stage == 1) {
        multi_gpu_all_gather(mgc, s, model->trained + lay.shard_offset, model->trained, lay.shard_size);
        multi_gpu_sync(mgc, s);
    }
    if (opt->tie) { // the first stage's updated wte to the last (tie ranks: first 0, last 1)
        const size_t n = model->param_sizes[TENSOR_WTE];
        const bool first = model->stage.first;
        multi_gpu_exchange(opt->tie, s, first ? model->params.wte : nullptr, n, 1,
                           first ? nullptr : model->params.wte, n, 0);
    }
    if (opt->zero_stage == 2) {
        for (size_t u = 0; u < model->zero.units.units.size(); u++) zero_gather_into_params(model, (int)u);
    }
    model->zero.version++;
    return norm;
}

// ----------------------------------------------------------------------------------------------------
// 4. the program: this backend's side of llmc/run_plan.h (which has the run plan, resume, validation,
// sampling and the training loop), and main; the memory table

// Pipeline parallelism (llmc/pipeline.h has the stages, the schedules and the order of the messages): this
// process runs one stage of one replica; pipe holds the replica's stages, stage s its rank s. A forward
// sends the stage's output (B,T,C) to the next stage, a backward the gradient of its input to the previous
// one. NCCL's send completes only when its receive does, so each send goes out together with the receive
// of the next action (pipeline_exchanges). The time the stage's stream spends in those exchanges, and
// waiting for the others at the end of the step, is its idle time: the bubble.
struct Pipeline {
    PipeSchedule schedule = PIPE_1F1B;
    MultiGpuConfig pipe;            // this replica's stages
    MultiGpuConfig dp;              // this stage's replicas: the data-parallel group
    MultiGpuConfig tie;             // the replica's first and last stage (both hold wte)
    std::vector<cudaEvent_t> marks; // around each exchange of a step, on the compute stream
    std::vector<float> logits;      // (P * Vp) the next-token logits, gathered from the last stage
    std::vector<double> bubble;     // each stage's idle fraction in the last step
    int num_micro = 0;              // of its micro-batches
};

struct Trainer {
    GPT2 model;
    Optimizer opt;
    MultiGpuConfig mgc;        // the whole job
    MultiGpuConfig* dp = &mgc; // the data-parallel group: the whole job, or a stage's replicas
    Pipeline pipeline;
    GPT2Config whole; // the whole model's (model.config has a pipeline stage's layers)
    TokenDecoder decoder;
    AdamWConfig adamw;
    bool overlap_reduce = false;    // ZeRO-0 on several GPUs: all-reduce during the last backward
    double flops_per_step = 0.0;    // llmc/mfu.h's count, for the MFU of the step line
    double peak_flops = 0.0;        // of this GPU (0: unknown)
    size_t free_at_start = 0;       // cudaMemGetInfo before any allocation
    std::vector<float> logits_host; // (Vp) one row of logits, for sampling
};

// The step's micro-batches one after the other: forward (the classifier writes dlogits scaled by
// 1 / (B*T*num_micro), the mean over positions and micro-steps), backward adding into grads_memory (zeroed
// first); waits for each mean loss and returns their sum.
// A pipeline stage's messages before action i of its schedule (or after the last): the send of the
// previous action's result and the receive of this one's input, in one group. An activation goes out of
// its slot's last layer and into the slot's encoded; a gradient out of dresidual and into grad_output.
void pipeline_exchange(Trainer* tr, const PipeExchange& e) {
    GPT2& m = tr->model;
    const size_t BTC = (size_t)m.batch_size * m.seq_len * m.config.channels;
    const int slots = m.act_table.slots, L = m.config.num_layers;
    const floatX* send = nullptr;
    floatX* recv = nullptr;
    if (e.send.kind == PIPE_ACTIVATION) {
        const ActivationTensors a = activation_slot(m.act_table, m.acts_memory, e.send.micro % slots);
        send = a.residual3 + (size_t)(L - 1) * slot(BTC, sizeof(floatX)); // (layer_input(L) of that slot)
    }
    if (e.send.kind == PIPE_GRADIENT) send = m.acts.dresidual;
    if (e.recv.kind == PIPE_ACTIVATION)
        recv = activation_slot(m.act_table, m.acts_memory, e.recv.micro % slots).encoded;
    if (e.recv.kind == PIPE_GRADIENT) recv = m.grad_output;
    multi_gpu_exchange(&tr->pipeline.pipe, m.stream, send, BTC, e.send.peer, recv, BTC, e.recv.peer);
}

// The replica's value of x, from the stage that has it: every stage gets `from`'s (exact: bytes).
template <class T> T pipeline_from(Trainer* tr, T x, int from) {
    std::vector<T> all(tr->model.stage.num_stages);
    multi_gpu_allgather_bytes(&tr->pipeline.pipe, &x, all.data(), sizeof(T), step_timeout_s());
    return all[from];
}

// A step's micro-batches on a pipeline stage, in the order of its schedule: the exchanges around each
// action timed with events on the compute stream (their time, and the wait for the other stages at the
// end, is idle), every stage's idle fraction gathered for the step line. Returns the replica's loss sum
// (the last stage's).
double pipeline_forward_backward(Trainer* tr, const int* inputs, const int* targets, int num_micro) {
    GPT2* m = &tr->model;
    Pipeline& pl = tr->pipeline;
    const int B = m->batch_size, T = m->seq_len, P = m->stage.num_stages, s = m->stage.stage;
    const size_t BT = (size_t)B * T;
    const int slots = m->act_table.slots;
    if (pipeline_slots(pl.schedule, P, num_micro, s) != slots)
        fail("pipeline: %d micro-batches need %d activation slots, %d allocated", num_micro,
             pipeline_slots(pl.schedule, P, num_micro, s), slots);
    const std::vector<PipeAction> actions = pipeline_actions(pl.schedule, P, num_micro, s);
    const std::vector<PipeExchange> exchanges = pipeline_exchanges(pl.schedule, P, num_micro, s);
    // marks: 2 per exchange (before, after), then before and after the closing barrier
    const size_t num_marks = 2 * exchanges.size() + 2;
    while (pl.marks.size() < num_marks) {
        cudaEvent_t e;
        cudaCheck(cudaEventCreate(&e));
        pl.marks.push_back(e);
    }
    gpt2_zero_grad(m);
    double loss_sum = 0.0;
    for (size_t i = 0; i < exchanges.size(); i++) {
        cudaCheck(cudaEventRecord(pl.marks[2 * i], m->stream));
        pipeline_exchange(tr, exchanges[i]);
        cudaCheck(cudaEventRecord(pl.marks[2 * i + 1], m->stream));
        if (i == actions.size()) break;
        const PipeAction& a = actions[i];
        watchdog_progress(a.backward ? "a pipeline backward" : "a pipeline forward", -1);
        gpt2_use_slot(m, a.micro % slots);
        if (!a.backward) {
            gpt2_forward(m, inputs + a.micro * BT, targets + a.micro * BT, B, T,
                         1.0f / ((float)B * T * num_micro));
            if (m->stage.last) loss_sum += gpt2_wait_loss(m, B, T);
        } else {
            gpt2_backward(m, tr->dp, false, m->grad_output);
        }
    }
    // the stages wait for each other (an all-reduce of the zero scratch, on the stream), so that every
    // stage's window is the step's
    cudaCheck(cudaEventRecord(pl.marks[num_marks - 2], m->stream));
    multi_gpu_allreduce_sum(&pl.pipe, m->stream, pl.pipe.scratch, 1);
    multi_gpu_sync(&pl.pipe, m->stream);
    cudaCheck(cudaEventRecord(pl.marks[num_marks - 1], m->stream));
    multi_gpu_wait(&pl.pipe, m->stream, step_timeout_s());
    float idle_ms = 0.0f, step_ms = 0.0f, ms = 0.0f;
    for (size_t i = 0; i < num_marks; i += 2) {
        cudaCheck(cudaEventElapsedTime(&ms, pl.marks[i], pl.marks[i + 1]));
        idle_ms += ms;
    }
    cudaCheck(cudaEventElapsedTime(&step_ms, pl.marks[0], pl.marks[num_marks - 1]));
    const double mine = step_ms > 0.0f ? idle_ms / step_ms : 0.0;
    pl.bubble.assign(P, 0.0);
    pl.num_micro = num_micro;
    multi_gpu_allgather_bytes(&pl.pipe, &mine, pl.bubble.data(), sizeof(double), step_timeout_s());
    return pipeline_from(tr, loss_sum, P - 1);
}

double trainer_forward_backward(Trainer* tr, const int* inputs, const int* targets, int num_micro) {
    GPT2* m = &tr->model;
    if (m->stage.num_stages > 1) return pipeline_forward_backward(tr, inputs, targets, num_micro);
    const int B = m->batch_size, T = m->seq_len;
    gpt2_zero_grad(m);
    double loss_sum = 0.0;
    for (int micro = 0; micro < num_micro; micro++) {
        watchdog_progress("a training micro-step", -1);
        const size_t at = (size_t)micro * B * T;
        gpt2_forward(m, inputs + at, targets + at, B, T, 1.0f / ((float)B * T * num_micro));
        gpt2_backward(m, tr->dp, tr->overlap_reduce && micro == num_micro - 1);
        loss_sum += gpt2_wait_loss(m, B, T);
    }
    return loss_sum;
}
// The update; returns once the GPU has finished the step.
float trainer_update(Trainer* tr, float lr, int t) {
    const float norm = gpt2_update(&tr->model, &tr->opt, tr->dp, lr, tr->adamw, t);
    multi_gpu_wait(&tr->mgc, tr->model.stream, step_timeout_s());
    return norm;
}
float trainer_mean_over_ranks(Trainer* tr, float x) {
    return multi_gpu_allreduce_mean_float(&tr->mgc, x, step_timeout_s());
}
// A forward without a backward through every stage of a pipeline (validation, sampling), in slot 0: the
// loss and the logits are the last stage's.
void pipeline_forward_only(Trainer* tr, const int* inputs, const int* targets, int B, int T) {
    GPT2& m = tr->model;
    const int s = m.stage.stage, L = m.config.num_layers;
    const size_t BTC = (size_t)B * T * m.config.channels;
    gpt2_use_slot(&m, 0);
    MultiGpuConfig* pipe = &tr->pipeline.pipe;
    if (!m.stage.first)
        multi_gpu_exchange(pipe, m.stream, (floatX*)nullptr, 0, -1, m.acts.encoded, BTC, s - 1);
    gpt2_forward(&m, inputs, targets, B, T, 0.0f);
    if (!m.stage.last)
        multi_gpu_exchange(pipe, m.stream, layer_input(&m, L, B, T), BTC, s + 1, (floatX*)nullptr, 0, -1);
}
float trainer_eval_loss(Trainer* tr, const int* inputs, const int* targets) {
    GPT2* m = &tr->model;
    if (m->stage.num_stages == 1) {
        gpt2_forward(m, inputs, targets, m->batch_size, m->seq_len, 0.0f);
        return gpt2_wait_loss(m, m->batch_size, m->seq_len);
    }
    pipeline_forward_only(tr, inputs, targets, m->batch_size, m->seq_len);
    const float loss = m->stage.last ? gpt2_wait_loss(m, m->batch_size, m->seq_len) : 0.0f;
    return pipeline_from(tr, loss, m->stage.num_stages - 1);
}
// A B=1 forward over the whole sequence length T (the prefix, padded; causal attention keeps the padding
// from reaching the row we read): one matmul shape for every token, so cuBLASLt plans are not rebuilt per
// prefix length. The logits row is downloaded to tr->logits_host.
// A pipeline: every stage gets the last stage's row (gathered over the stages).
const float* trainer_next_token_logits(Trainer* tr, const int* tokens, int t) {
    GPT2* m = &tr->model;
    const int Vp = m->config.padded_vocab_size, P = m->stage.num_stages;
    if (P == 1) {
        gpt2_forward(m, tokens, nullptr, 1, m->seq_len, 0.0f);
    } else {
        pipeline_forward_only(tr, tokens, nullptr, 1, m->seq_len);
    }
    cudaCheck(cudaStreamSynchronize(m->stream));
    tr->logits_host.assign(Vp, 0.0f);
    if (m->stage.last) download_floatX(tr->logits_host.data(), m->acts.logits + (size_t)(t - 1) * Vp, Vp);
    if (P == 1) return tr->logits_host.data();
    std::vector<float>& all = tr->pipeline.logits;
    all.resize((size_t)P * Vp);
    multi_gpu_allgather_bytes(&tr->pipeline.pipe, tr->logits_host.data(), all.data(), Vp * sizeof(float),
                              step_timeout_s());
    return all.data() + (size_t)(P - 1) * Vp;
}
void trainer_barrier(Trainer* tr) {
    multi_gpu_barrier(&tr->mgc, step_timeout_s());
}
void trainer_allgather_bytes(Trainer* tr, const void* mine, void* all, size_t bytes) {
    multi_gpu_allgather_bytes(&tr->mgc, mine, all, bytes, step_timeout_s());
}
[[noreturn]] void trainer_exit(Trainer* tr, int status) {
    multi_gpu_config_free(&tr->mgc);
    exit(status);
}
void print_memory_after_first_step(const Trainer* tr);
void trainer_print_step_end(Trainer* tr, double seconds, bool first_step) {
    char mfu[32];
    mfu_format(mfu, sizeof(mfu), tr->flops_per_step / tr->mgc.num_ranks / seconds, tr->peak_flops);
    printf(" | MFU %s", mfu);
    const std::vector<double>& b = tr->pipeline.bubble;
    if (!b.empty()) pipeline_print_bubble(b, tr->pipeline.num_micro); // a pipeline's idle time
    printf("\n");
    if (first_step) print_memory_after_first_step(tr); // every buffer (cuBLASLt, NCCL) is allocated now
}

// Checkpoints, as the CPU trainer writes them (llmc/state_file.h has the layout):
//   <dir>/model_<step>.bin      the floatX parameters as an fp32 (v3) model file (exact: bf16 -> fp32 is
//                               lossless), readable by both trainers
//   <dir>/state_<step>_<rank>.bin  the shared state header, the moments (fp32 m, v or the 8-bit codes and
//                               scales), then this rank's fp32 master shard (has_master = 1; always in
//                               the BF16 build, none with -w 0 in the FP32 build)
// The master weights make the resume bit-exact: the bf16 parameters alone lose what stochastic rounding
// dropped. A CPU state (no master) loads too: the master weights then start from the model file.
// With LoRA the model file is the merged model (llmc/lora.h's lora_write_merged): W + s.B.A with W the
// base as the GPU used it (bf16, or the NF4 matrix dequantized and rounded to floatX) and the adapters'
// floatX values.
// Called on every rank; rank 0 writes. At ZeRO-3 every rank takes part in gathering the units (one at a
// time, through a gradient bucket), and rank 0 holds the fp32 model on the host for the write.
// A pipeline: the stages of rank 0's replica send their parts to rank 0 (stage 0), which writes them whole.
void trainer_write_model(Trainer* tr, const std::string& path) {
    GPT2& m = tr->model;
    const int stages = m.stage.num_stages;
    if (stages > 1) {
        if (tr->mgc.rank >= stages) return; // (rank = replica * stages + stage)
        MultiGpuConfig* pipe = &tr->pipeline.pipe;
        cudaCheck(cudaStreamSynchronize(m.stream));
        if (!m.stage.first) {
            multi_gpu_exchange(pipe, m.stream, m.params_memory, m.num_parameters, 0, (floatX*)nullptr, 0, -1);
            multi_gpu_wait(pipe, m.stream, step_timeout_s());
            return;
        }
        const GPT2Config& whole = tr->whole;
        size_t whole_sizes[NUM_PARAMETER_TENSORS];
        gpt2_parameter_sizes(whole, whole_sizes);
        std::vector<float> params(gpt2_num_parameters(whole)), part;
        for (int s = 0; s < stages; s++) {
            const PipeStage st = pipeline_model_stage(whole, stages, s);
            const size_t n = pipeline_stage_num_params(whole_sizes, whole.num_layers, st);
            part.resize(n);
            if (s == 0) {
                download_floatX(part.data(), m.params_memory, n);
            } else { // (received into a device buffer of its size, for the length of the copy)
                floatX* received = nullptr;
                cudaCheck(cudaMalloc(&received, n * sizeof(floatX)));
                multi_gpu_exchange(pipe, m.stream, (floatX*)nullptr, 0, -1, received, n, s);
                multi_gpu_wait(pipe, m.stream, step_timeout_s());
                download_floatX(part.data(), received, n);
                cudaCheck(cudaFree(received));
            }
            pipeline_copy(pipeline_pieces(whole_sizes, whole.num_layers, st), part.data(), params.data(),
                          /*to_stage=*/false);
        }
        checkpoint_write(path.c_str(), whole, params.data(), params.size(), false);
        return;
    }
    if (m.zero.stage == 3) {
        std::vector<float> whole(tr->mgc.rank == 0 ? m.num_parameters : 0), unit;
        for (size_t u = 0; u < m.zero.units.units.size(); u++) {
            const ZeroUnit& zu = m.zero.units.units[u];
            const floatX* bucket = zero_gather_unit(&m, (int)u);
            multi_gpu_wait(&tr->mgc, m.stream, step_timeout_s());
            if (tr->mgc.rank != 0) continue;
            unit.resize(zu.padded);
            download_floatX(unit.data(), bucket, zu.padded);
            zero_unit_copy(zu, unit.data(), whole.data(), /*to_unit=*/false);
        }
        if (tr->mgc.rank == 0)
            checkpoint_write(path.c_str(), m.config, whole.data(), m.num_parameters, false);
        return;
    }
    if (tr->mgc.rank != 0) return;
    cudaCheck(cudaStreamSynchronize(m.stream));
    std::vector<float> params(m.params_floats);
    download_floatX(params.data(), m.params_memory, m.params_floats);
    if (m.lora.rank == 0) {
        checkpoint_write(path.c_str(), m.config, params.data(), m.num_parameters, false);
        return;
    }
    const GPT2Config& c = m.config;
    download_floatX(m.lora_host.data(), m.lora_memory, m.num_trained);
    size_t held_offset[NUM_PARAMETER_TENSORS], off = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) held_offset[i] = off, off += m.held_sizes[i];
    std::vector<float> absmax(nf4_base_max_blocks(c));
    auto base = [&](int t, int l, float* W) {
        const int tensor = LORA_BASE_TENSOR[t];
        const size_t n = m.param_sizes[tensor] / c.num_layers;
        if (!m.lora.nf4) {
            memcpy(W, params.data() + held_offset[tensor] + l * n, n * sizeof(float));
            return;
        }
        nf4_dequantize_matrix(m.nf4_host.matrix[t][l], W, absmax.data());
        if (BF16_BUILD)
            for (size_t i = 0; i < n; i++) W[i] = bf16_to_float(float_to_bf16(W[i]));
    };
    lora_write_merged(
        path.c_str(), c, m.lora, m.lora_layout, m.lora_host.data(),
        [&](int i) { return (const float*)params.data() + held_offset[i]; }, base);
}
StateHeader trainer_state_header(const Trainer* tr, int step) {
    const Optimizer& opt = tr->opt;
    StateHeader h;
    h.num_ranks = tr->mgc.num_ranks;
    h.rank = tr->mgc.rank;
    h.zero_stage = opt.zero_stage;
    h.use_8bit = opt.use_8bit;
    h.step = step;
    h.quant_block = opt.quant_block;
    h.has_master = opt.keep_master;
    h.shard_size = opt.layout.shard_size;
    h.shard_offset = opt.layout.shard_offset;
    h.num_parameters = tr->model.num_trained;
    return h;
}
// the state buffers are in device memory, but for the LoRA adapters' fp32 host copy: cudaMemcpyDefault
// tells them apart (unified addressing)
void* copy_device_to_host(void* dst, const void* src, size_t bytes) {
    cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return dst;
}
void* copy_host_to_device(void* dst, const void* src, size_t bytes) {
    cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return dst;
}
// h.has_master: the file holds (or will hold) master weights; with -w 0 they are read past, since the
// model file has the parameters.
StateBuffers trainer_state_buffers(Trainer* tr, const StateHeader& h, const std::string&) {
    Optimizer& opt = tr->opt;
    cudaCheck(cudaStreamSynchronize(tr->model.stream));
    const size_t S = opt.layout.shard_size;
    StateBuffers b;
    b.to_host = copy_device_to_host;
    b.to_buffer = copy_host_to_device;
    // under LoRA the model file is the merged export: the adapters' floatX values are saved here, in fp32
    // (exact), as the CPU trainer saves its adapters; gpt2_lora_resumed uploads them after a load
    GPT2& m = tr->model;
    if (m.lora.rank > 0) {
        download_floatX(m.lora_host.data(), m.lora_memory, m.num_trained);
        state_buffers_add(&b, "LoRA adapters", m.lora_host.data(), sizeof(float), m.num_trained,
                          STATE_FINITE);
    }
    if (!opt.use_8bit) {
        state_buffers_add(&b, "AdamW m", opt.m, sizeof(float), S, STATE_FINITE);
        state_buffers_add(&b, "AdamW v", opt.v, sizeof(float), S, STATE_NONNEGATIVE);
    } else {
        state_buffers_add(&b, "8-bit AdamW m codes", opt.m_codes, 1, S);
        state_buffers_add(&b, "8-bit AdamW v codes", opt.v_codes, 1, S);
        state_buffers_add(&b, "8-bit AdamW m scales", opt.m_absmax, sizeof(float), opt.num_blocks,
                          STATE_NONNEGATIVE);
        state_buffers_add(&b, "8-bit AdamW v scales", opt.v_absmax, sizeof(float), opt.num_blocks,
                          STATE_NONNEGATIVE);
    }
    if (h.has_master)
        state_buffers_add(&b, "fp32 master weights", opt.keep_master ? opt.master : nullptr, sizeof(float), S,
                          STATE_FINITE);
    return b;
}

// After a LoRA run's state is read (its adapters into lora_host): the adapters on the device.
void gpt2_lora_resumed(GPT2* model) {
    if (model->lora.rank > 0) upload_floatX(model->lora_memory, model->lora_host.data(), model->num_trained);
}

// Device bytes this process allocates, by category (the memory table and the check after the first step).
struct MemoryUse {
    size_t params, grads, grad_acc, master, moments, activations, workspaces;
    size_t adapters; // LoRA: the adapters (floatX); params is then the frozen base (floatX, and NF4)
    size_t buckets;  // ZeRO-2/3: the units' buckets
    size_t total() const {
        return params + adapters + grads + grad_acc + master + moments + buckets + activations + workspaces;
    }
};

// From the sizes gpt2_allocate and optimizer_allocate allocate by, so it is known before they run (the
// check that the run fits, check_gpu_memory) and after (the memory table, the check after the first step).
// A pipeline stage: c has its layers; last: it runs the classifier; slots: its activation slots.
MemoryUse memory_plan(const GPT2Config& c, const LoraConfig& lc, const Optimizer* opt, int B, int T,
                      int recompute, bool last = true, int slots = 1) {
    const size_t P_pad = opt->layout.padded_params, S = opt->layout.shard_size, BT = (size_t)B * T;
    MemoryUse u;
    u.params = P_pad * sizeof(floatX);
    u.adapters = 0;
    size_t lora_acts = 0, lora_scratch = 0;
    if (lc.rank > 0) { // the base: floatX, but for the NF4 block matrices (their device allocations)
        size_t sizes[NUM_PARAMETER_TENSORS];
        gpt2_parameter_sizes(c, sizes);
        u.params = 0;
        for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) u.params += sizes[i] * sizeof(floatX);
        if (lc.nf4) {
            for (int t = 0; t < NUM_LORA_TARGETS; t++) {
                const size_t n = sizes[LORA_BASE_TENSOR[t]] / c.num_layers;
                u.params -= sizes[LORA_BASE_TENSOR[t]] * sizeof(floatX);
                u.params += c.num_layers * nf4_matrix_device_bytes(n);
            }
            lora_scratch = (size_t)4 * c.channels * c.channels * sizeof(floatX);
        }
        u.adapters = P_pad * sizeof(floatX);
        lora_acts = (NUM_LORA_TARGETS * c.num_layers + 1) * BT * lc.rank * sizeof(floatX);
    }
    u.grads = P_pad * sizeof(floatX);
    u.grad_acc = P_pad * sizeof(float);
    u.buckets = 0;
    if (opt->zero_stage >= 2) { // zero_allocate's buffers; gpt2_allocate's whole parameters at stage 2
        size_t sizes[NUM_PARAMETER_TENSORS];
        gpt2_parameter_sizes(c, sizes);
        const ZeroUnits z = gpt2_zero_units(sizes, c.num_layers, opt->layout.rank, opt->layout.num_ranks);
        const ZeroBucketSizes b = zero_bucket_sizes(z);
        const size_t X = sizeof(floatX);
        u.params = ((opt->zero_stage == 2 ? opt->layout.num_params : 0) + z.shard_size) * X;
        u.grads = 0;
        u.grad_acc = z.shard_size * sizeof(float);
        u.buckets = (b.embed + b.other) * X + b.largest * sizeof(float);
        if (opt->zero_stage == 3) u.buckets += (b.embed + b.final_ln + 2 * b.layer) * X;
    }
    u.master = opt->keep_master ? S * sizeof(float) : 0;
    u.moments = optimizer_state_bytes(opt) - u.master;
    // (a stage before the last: and the gradient of its output, received)
    u.activations = activation_bytes(activation_table(c, B, T, recompute, last, slots)) + lora_acts +
                    (last ? 0 : BT * c.channels * sizeof(floatX));
    // cuBLASLt's workspace, the kernels' scratch, the input tokens of each slot, the targets and the loss
    // scalar
    u.workspaces = gpt2_workspace_layout(c, B, T).total() + MATMUL_WORKSPACE_BYTES +
                   ((slots + 1) * BT + 1) * sizeof(int) + lora_scratch;
    return u;
}
MemoryUse memory_use(const GPT2* model, const Optimizer* opt) {
    return memory_plan(model->config, model->lora, opt, model->batch_size, model->seq_len, model->recompute,
                       model->stage.last, model->act_table.slots);
}

// The memory table: each category from the buffer sizes, next to the per-parameter formula, and the
// activation memory of every recompute mode (the memory side of the -r trade-off).
void print_memory_table(const GPT2* model, const Optimizer* opt, int num_ranks) {
    const double MiB = 1024.0 * 1024.0, P = (double)model->num_parameters, N = num_ranks;
    const int B = model->batch_size, T = model->seq_len;
    const MemoryUse u = memory_use(model, opt);
    const int z = opt->zero_stage;
    auto row = [&](const char* what, size_t bytes, const char* note) {
        printf("  %-34s %10.1f MiB%s%s\n", what, bytes / MiB, note[0] ? "  " : "", note);
    };
    char shard[48], label[64], note[96];
    snprintf(shard, sizeof(shard), "ZeRO-%d: this rank's shard", z);
    if (z == 0) shard[0] = '\0';
    printf("memory (this GPU, predicted from the buffer sizes):\n");
    const bool lora = model->lora.rank > 0;
    snprintf(label, sizeof(label), "%s (%s%s)", lora ? "frozen base" : "parameters",
             BF16_BUILD ? "bf16" : "fp32", model->lora.nf4 ? ", block matrices NF4" : "");
    row(label, u.params, z == 2 ? "ZeRO-2: all of them, and this rank's shard" : z == 3 ? shard : "");
    if (lora) {
        snprintf(label, sizeof(label), "LoRA adapters (%s)", BF16_BUILD ? "bf16" : "fp32");
        row(label, u.adapters, "");
    }
    snprintf(label, sizeof(label), "gradients (%s)%s", BF16_BUILD ? "bf16" : "fp32",
             lora ? " of the adapters" : "");
    row(label, u.grads, z >= 2 ? "none: one unit at a time, in the buckets" : "");
    row("gradient accumulation (fp32)", u.grad_acc, z >= 2 ? shard : "");
    row("master weights (fp32)", u.master, opt->keep_master ? shard : "none (-w 0)");
    row(opt->use_8bit ? "AdamW m, v (8-bit codes + scales)" : "AdamW m, v (fp32)", u.moments, shard);
    if (z >= 2) {
        row("ZeRO buckets", u.buckets,
            z == 2 ? "gradients: wte+wpe's and one unit's, and one unit in fp32"
                   : "those of ZeRO-2, and the gathered wte+wpe, final LayerNorm, two layers");
    }
    snprintf(label, sizeof(label), "activations (-r %d)", model->recompute);
    snprintf(note, sizeof(note), "B=%d T=%d", B, T);
    row(label, u.activations, note);
    snprintf(note, sizeof(note), "cuBLASLt %.0f MiB; attention, layernorm, bias, norm, encoder scratch",
             model->matmul.workspace_bytes / MiB);
    row("workspaces", u.workspaces, note);
    row("total", u.total(), "");
    if (lora) {
        printf(
            "  LoRA: %zu adapter parameters train (%.2f MiB of adapters, gradients and optimizer state); the "
            "frozen base is %.2f B/param\n",
            model->num_trained, (u.adapters + u.grads + u.grad_acc + u.master + u.moments) / MiB,
            u.params / P);
        return;
    }
    // the formula: the working parameters, gradients, fp32 accumulation and optimizer state per parameter,
    // each divided by N from the stage that shards it (stage 2 keeps all parameters and its shard)
    const double state = (double)(u.params + u.adapters + u.grads + u.grad_acc + u.master + u.moments);
    const double optim = (opt->keep_master ? 4.0 : 0.0) + (opt->use_8bit ? 2.0 : 8.0), X = sizeof(floatX);
    const double fp = z == 3 ? X / N : z == 2 ? X + X / N : X, fg = z >= 2 ? 0.0 : X;
    const double fa = z >= 2 ? 4.0 / N : 4.0, fo = z >= 1 ? optim / N : optim;
    printf(
        "  model state: %.2f B/param (without the buckets); formula %.3g + %.3g + %.3g (fp32 accumulation) + "
        "%.3g (optimizer) = %.2f",
        state / P, fp, fg, fa, fo, fp + fg + fa + fo);
    if (BF16_BUILD && opt->keep_master && !opt->use_8bit) {
        // the ZeRO paper's count (bf16 gradients sharded from stage 2) has no fp32 accumulation buffer
        printf(" (ZeRO's mixed-precision Adam: %.2f, + %s fp32 accumulation)",
               zero_bytes_per_param(opt->zero_stage, num_ranks, true), z >= 2 ? "4/N" : "4");
    }
    printf("\n  activations by recompute mode:");
    for (int r = 0; r <= 3; r++) {
        const ActivationTable t =
            activation_table(model->config, B, T, r, model->stage.last, model->act_table.slots);
        printf("  -r %d: %.1f MiB", r, activation_bytes(t) / MiB);
    }
    printf("\n");
}

void print_memory_after_first_step(const Trainer* tr) {
    size_t free_now = 0, total = 0;
    cudaCheck(cudaMemGetInfo(&free_now, &total));
    const double MiB = 1024.0 * 1024.0;
    const double used = (double)(tr->free_at_start - free_now);
    const double predicted = (double)memory_use(&tr->model, &tr->opt).total();
    printf("memory after the first step: %.1f MiB used (cudaMemGetInfo), %.1f MiB predicted, %.1f MiB "
           "difference (allocator rounding and fragmentation, library and NCCL buffers, temporaries)\n",
           used / MiB, predicted / MiB, (used - predicted) / MiB);
}

// A pipeline's memory stage by stage: what each stage predicts from its buffer sizes (memory_use) and
// what cudaMemGetInfo says it allocated, gathered over the replica's stages.
struct StageMemory {
    MemoryUse predicted;
    double measured; // bytes: free memory at start-up less free memory now
};
std::vector<StageMemory> pipeline_stage_memory(Trainer* tr) {
    size_t free_now = 0, total = 0;
    cudaCheck(cudaMemGetInfo(&free_now, &total));
    StageMemory mine = {memory_use(&tr->model, &tr->opt), (double)(tr->free_at_start - free_now)};
    std::vector<StageMemory> all(tr->model.stage.num_stages);
    multi_gpu_allgather_bytes(&tr->pipeline.pipe, &mine, all.data(), sizeof(StageMemory), step_timeout_s());
    return all;
}
void print_pipeline_table(const std::vector<StageMemory>& mem, const GPT2Config& whole, const RunPlan& plan,
                          PipeSchedule schedule) {
    std::vector<PipeStageMemory> rows;
    for (const StageMemory& m : mem) {
        const MemoryUse& u = m.predicted;
        rows.push_back({(double)u.params, (double)(u.grads + u.grad_acc), (double)(u.master + u.moments),
                        (double)u.activations, m.measured, (double)u.total()});
    }
    pipeline_print_memory(rows, whole, schedule, plan.grad_accum_steps,
                          "cudaMemGetInfo after allocation; the totals have the workspaces too");
}

#ifndef TESTING // test_gpt2.cu includes this file for its functions and has its own main

// What the run will allocate on the GPU (memory_plan, before any of it is), checked against the free memory.
void check_gpu_memory(const GPT2Config& c, const Optimizer* opt, const TrainConfig& cfg, size_t free_bytes,
                      bool last, int slots) {
    const MemoryUse u = memory_plan(c, cfg.lora, opt, cfg.B, cfg.T, cfg.recompute, last, slots);
    const double GiB = 1024.0 * 1024.0 * 1024.0;
    char parts[256];
    snprintf(
        parts, sizeof(parts),
        "parameters, gradients and their fp32 accumulation %.2f GiB, optimizer state %.2f GiB, activations "
        "%.2f GiB at -b %d -t %d -r %d, workspaces %.2f GiB",
        (u.params + u.adapters + u.grads + u.grad_acc) / GiB, (u.master + u.moments) / GiB,
        u.activations / GiB, cfg.B, cfg.T, cfg.recompute, u.workspaces / GiB);
    check_memory_fits(
        (double)u.total(), (double)free_bytes, "GPU memory", parts,
        "reduce -b (-d keeps the batch with gradient accumulation), recompute more (-r 3), shard "
        "the optimizer state over GPUs (-z 1), or use 8-bit AdamW (-qo 1)");
}

int main(int argc, char** argv) {
    program_init();
    TrainConfig cfg = train_config_gpu_defaults();
    if (!parse_flags(&cfg, argc, argv, /*gpu=*/true)) {
        print_usage("train_gpt2cu", train_config_gpu_defaults(), /*gpu=*/true);
        return 0;
    }
    Trainer tr;
    MultiGpuConfig& mgc = tr.mgc;
    mgc = multi_gpu_config_init(&argc, &argv, cfg.init_method, cfg.server, cfg.fs_path, cfg.num_processes,
                                cfg.process_rank, cfg.gpus_per_node);
    run_check_flags(cfg);
    run_claim_output_dir(cfg, mgc.rank, mgc.num_ranks);
    cudaCheck(cudaFree(nullptr)); // create the CUDA context now, so the memory baseline excludes it
    size_t total_memory = 0;
    cudaCheck(cudaMemGetInfo(&tr.free_at_start, &total_memory));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, mgc.local_device_idx));

    // the model: fresh from a descriptor, or from a file (into the fp32 host copy)
    GPT2& model = tr.model;
    GPT2Config desc;
    if (run_model_is_descriptor(cfg, &desc)) {
        gpt2_build_from_random(&model, desc, cfg.seed);
    } else {
        gpt2_build_from_checkpoint(&model, cfg.model);
    }
    const GPT2Config& mc = model.config;
    // LoRA: the adapters, and under QLoRA the NF4 base; the checksum of the base first, before it is
    // quantized (the run facts hold it: a resume must start from the same base)
    const bool lora = cfg.lora.rank > 0;
    const uint32_t base_crc =
        lora ? run_params_crc(mgc.num_ranks, cfg, model.params_host.data(), model.num_parameters) : 0;
    gpt2_setup_lora(&model, cfg.lora, cfg.seed);

    RunPlan plan;
    run_plan_init(&plan, cfg, mc, mgc.rank, mgc.num_ranks);
    DataLoader train_loader, val_loader;
    run_open_data(&plan, &cfg, mc, &train_loader, &val_loader);
    run_load_decoder(cfg, mc, &tr.decoder);
    TrainState st = run_initial_state(cfg);
    const bool resuming =
        run_resume_model(&plan, cfg, mc, lora ? nullptr : model.params_host.data(), model.num_parameters);
    // every rank has the same flags, model and data, or all stop (before the first collective that sizes by
    // them)
    run_check_agreement(
        &tr, &plan, cfg, mc, &train_loader, &val_loader,
        lora ? base_crc
             : run_params_crc(plan.num_ranks, cfg, model.params_host.data(), model.num_parameters));

    // pipeline parallelism (-pp): this process's stage, the groups, and the activation slots its schedule
    // needs; the stage keeps its part of the host copy
    tr.whole = mc;
    const size_t whole_parameters = model.num_parameters;
    const PipeStage stage = pipeline_model_stage(tr.whole, plan.stages, mgc.rank % plan.stages);
    Pipeline& pl = tr.pipeline;
    pipeline_schedule_from_flag(cfg.pipeline_schedule, &pl.schedule); // (checked by run_check_flags)
    int slots = 1;
    if (plan.stages > 1) {
        slots = pipeline_slots(pl.schedule, plan.stages, plan.grad_accum_steps, stage.stage);
        // the groups: this replica's stages (ranked by stage), this stage's replicas (the data-parallel
        // group), and the replica's first and last stage (wte's two copies; a middle stage is a group of
        // its own, with no communicator)
        const double timeout = step_timeout_s();
        pl.pipe = multi_gpu_subgroup(&mgc, plan.replica, stage.stage, timeout);
        pl.dp = multi_gpu_subgroup(&mgc, stage.stage, plan.replica, timeout);
        const bool ends = stage.first || stage.last;
        pl.tie = multi_gpu_subgroup(&mgc, ends ? plan.replica : plan.num_replicas + mgc.rank, stage.stage,
                                    timeout);
        tr.dp = &pl.dp;
        tr.opt.pipe = &pl.pipe;
        if (ends) tr.opt.tie = &pl.tie;
    }
    gpt2_take_stage(&model, stage);

    // device buffers: the optimizer's ZeRO layout sizes the model's; the master weights start from the
    // host copy (the resumed model file's parameters when resuming)
    const uint64_t rounding_seed = rng_mix64(cfg.seed ^ 0xad4a3bULL);
    gpt2_zero_init(&model, tr.dp, cfg.zero_stage);
    optimizer_init(&tr.opt, &model, tr.dp, cfg.zero_stage, cfg.use_8bit, cfg.quant_block, cfg.keep_master,
                   rounding_seed);
    check_gpu_memory(model.config, &tr.opt, cfg, tr.free_at_start, stage.last, slots);
    gpt2_allocate(&model, tr.opt.layout.padded_params, cfg.B, cfg.T, cfg.recompute, slots);
    model.matmul.fuse_gelu = cfg.fuse_dgelu;
    optimizer_allocate(&tr.opt, &model);
    if (resuming) {
        run_load_state(&tr, &plan, cfg.output_dir, &st);
        gpt2_lora_resumed(&model);
        dataloader_set_state(&train_loader, st.loader);
    }
    tr.adamw = cfg.adamw;
    tr.overlap_reduce = cfg.zero_stage == 0 && tr.dp->num_ranks > 1 && plan.stages == 1;
    // a frozen LoRA base skips its weight gradients, 2 of the 6 FLOPs per parameter and token; the adapters
    // take 6 per adapter parameter
    const double lora_flops = lora ? -2.0 * model.num_parameters + 6.0 * model.num_trained : 0.0;
    tr.flops_per_step =
        (mfu_flops_per_token(whole_parameters, tr.whole.num_layers, tr.whole.channels, cfg.T) + lora_flops) *
        (double)plan.tokens_per_step;
    tr.peak_flops = mfu_peak_flops(prop.name, BF16_BUILD);

    std::vector<StageMemory> stage_memory;
    if (plan.stages > 1) stage_memory = pipeline_stage_memory(&tr);
    Logger logger;
    run_open_log(&plan, cfg, &logger);
    if (plan.main_process) {
        printf("device: %s, %.1f GiB, %s build, %d GPU process(es)\n", prop.name, total_memory / 1073741824.0,
               PRECISION_NAME, mgc.num_ranks);
        run_print_plan(&plan, cfg, tr.whole, whole_parameters, &train_loader, &val_loader);
        print_memory_table(&model, &tr.opt, tr.dp->num_ranks);
        if (plan.stages > 1) print_pipeline_table(stage_memory, tr.whole, plan, pl.schedule);
        if (lora && cfg.output_dir) {
            printf(
                "checkpoints: model_<step>.bin is the merged model, W + (alpha/r) B.A on the base as this "
                "GPU used it (%s); the adapters and their optimizer state are in state_<step>_<rank>.bin\n",
                cfg.lora.nf4 ? "the NF4 matrices dequantized, not the base of -e" : PRECISION_NAME);
        }
    }

    run_training(&tr, &plan, cfg, &train_loader, &val_loader, &logger, &st);

    logger_free(&logger);
    optimizer_free(&tr.opt);
    gpt2_free(&model);
    for (cudaEvent_t e : pl.marks) cudaCheck(cudaEventDestroy(e));
    multi_gpu_config_free(&pl.pipe);
    multi_gpu_config_free(&pl.dp);
    multi_gpu_config_free(&pl.tie);
    multi_gpu_config_free(&mgc);
    return 0;
}
#endif
