// zero.h: the ZeRO sharding arithmetic shared by the CPU and GPU trainers. Pure arithmetic: no MPI,
// no CUDA, so it is tested on its own (tests/unit/test_zero.cpp).
//
// Data parallelism keeps one copy of the model per rank; every rank computes gradients on its own
// micro-batch and the gradients are averaged across ranks before the update. ZeRO stage 1 (Rajbhandari
// et al. 2019) notices that the optimizer state (AdamW's m and v, and the fp32 master weights under
// mixed precision) is only needed for the update, so each rank keeps and updates 1/N of it:
//
//   stage 0 (plain data parallel):  all-reduce(grads) -> every rank updates all P parameters
//   stage 1 (optimizer sharding):   reduce-scatter(grads) -> rank r updates its shard -> all-gather(params)
//
// A reduce-scatter followed by an all-gather moves the same bytes as one all-reduce (a ring all-reduce is
// exactly those two phases), so stage 1 costs no extra communication and saves (N-1)/N of the optimizer
// state.
//
// Layout. The parameters are one flat buffer of P floats carved into named tensors by a table of sizes.
// Reduce-scatter and all-gather need every rank's slice to have the same length, so the buffer is padded
// with zeros to
//
//   P_pad = round_up(P, N * ALIGN)        S = P_pad / N        rank r owns [r*S, (r+1)*S)
//
// ALIGN = 128 elements makes every slice start at a multiple of 512 bytes (fp32) / 256 bytes (bf16),
// which keeps the vectorised (128-bit) optimizer kernels and NCCL's fast paths happy. The padding is less
// than N*ALIGN elements, i.e. nothing next to 124M parameters. Parameter and gradient buffers must be
// allocated with P_pad elements and the padding zeroed once; it then stays zero (its gradient is zero).
//
// Per-tensor work. Weight decay applies to some tensors and not others, and the 8-bit optimizer keeps
// per-block scales that must not straddle two tensors, so the optimizer walks its shard tensor by tensor:
// shard_ranges() intersects the rank's slice with every tensor and lists the non-empty pieces in order.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "llmc/checkpoint.h"
#include "llmc/utils.h"

// Slice alignment in elements (see above). A power of two; every shard_size is a multiple of it.
constexpr size_t ZERO_ALIGN = 128;

// Which part of the flat parameter buffer this rank owns.
struct ShardLayout {
    size_t num_params;    // P: real parameters (the sum of the tensor sizes)
    size_t padded_params; // P_pad >= P: length of the parameter / gradient buffers to allocate
    size_t shard_size;    // S: elements this rank owns (== P_pad for stage 0)
    size_t shard_offset;  // first owned element in the flat buffer (rank * S; 0 for stage 0)
    int rank, num_ranks;
};

inline size_t zero_round_up(size_t x, size_t multiple) {
    return ceil_div(x, multiple) * multiple;
}

// ZeRO stage >= 1: rank r of N owns the r-th of N equal, ALIGN-aligned slices of the padded buffer.
// The last rank's slice may hold only padding when P is tiny; that is valid (its pieces list is empty).
inline ShardLayout shard_layout(size_t num_params, int rank, int num_ranks) {
    if (num_ranks < 1 || rank < 0 || rank >= num_ranks) {
        fail("shard_layout: rank %d of %d is not a valid rank", rank, num_ranks);
    }
    ShardLayout layout;
    layout.num_params = num_params;
    layout.padded_params = zero_round_up(num_params, (size_t)num_ranks * ZERO_ALIGN);
    layout.shard_size = layout.padded_params / (size_t)num_ranks;
    layout.shard_offset = (size_t)rank * layout.shard_size;
    layout.rank = rank;
    layout.num_ranks = num_ranks;
    return layout;
}

// ZeRO stage 0 (plain data parallel): every rank owns the whole buffer. The buffer is still padded to a
// multiple of ALIGN so that code which allocates padded_params works unchanged for both stages.
inline ShardLayout shard_layout_replicated(size_t num_params, int rank, int num_ranks) {
    if (num_ranks < 1 || rank < 0 || rank >= num_ranks) {
        fail("shard_layout_replicated: rank %d of %d is not a valid rank", rank, num_ranks);
    }
    ShardLayout layout;
    layout.num_params = num_params;
    layout.padded_params = zero_round_up(num_params, ZERO_ALIGN);
    layout.shard_size = layout.padded_params;
    layout.shard_offset = 0;
    layout.rank = rank;
    layout.num_ranks = num_ranks;
    return layout;
}

// The layout for ZeRO stage 0 (replicated) or 1 (sharded optimizer state). Stages 2 and 3 shard unit by
// unit (zero_units below).
inline ShardLayout zero_layout(size_t num_params, int rank, int num_ranks, int zero_stage) {
    if (zero_stage == 0) return shard_layout_replicated(num_params, rank, num_ranks);
    if (zero_stage == 1) return shard_layout(num_params, rank, num_ranks);
    fail("zero_layout: stage %d has no flat layout (stages 2 and 3 use zero_units)", zero_stage);
}

// One piece of a rank's shard that lies inside one tensor.
struct ShardRange {
    int tensor;              // index into the tensor table
    size_t global_offset;    // first element, in the flat buffer
    size_t offset_in_tensor; // first element, relative to the start of the tensor
    size_t count;            // number of elements (> 0)
    size_t offset_in_shard;  // first element, relative to the start of this rank's shard
};

// Intersect the rank's shard with each tensor (tensors are laid out back to back from offset 0, in table
// order). Writes the non-empty pieces to out (capacity num_tensors: a contiguous slice meets each tensor
// at most once) in increasing offset order and returns how many there are. The pieces exactly cover
// [shard_offset, shard_offset + shard_size) minus the padding at the end of the buffer.
inline int shard_ranges(const size_t* tensor_sizes, int num_tensors, const ShardLayout* layout,
                        ShardRange* out) {
    size_t total = 0;
    for (int t = 0; t < num_tensors; t++) total += tensor_sizes[t];
    if (total != layout->num_params) {
        fail("shard_ranges: the %d tensors hold %zu parameters but the layout was made for %zu", num_tensors,
             total, layout->num_params);
    }
    size_t shard_begin = layout->shard_offset;
    size_t shard_end = layout->shard_offset + layout->shard_size;
    int count = 0;
    size_t tensor_begin = 0;
    for (int t = 0; t < num_tensors; t++) {
        size_t tensor_end = tensor_begin + tensor_sizes[t];
        size_t begin = tensor_begin > shard_begin ? tensor_begin : shard_begin;
        size_t end = tensor_end < shard_end ? tensor_end : shard_end;
        if (begin < end) {
            ShardRange r;
            r.tensor = t;
            r.global_offset = begin;
            r.offset_in_tensor = begin - tensor_begin;
            r.count = end - begin;
            r.offset_in_shard = begin - shard_begin;
            out[count++] = r;
        }
        tensor_begin = tensor_end;
    }
    return count;
}

// ----------------------------------------------------------------------------------------------------
// ZeRO-2 and ZeRO-3: sharding unit by unit
//
// Stage 2 also shards the gradients: each part of the backward reduce-scatters the gradient it has just
// made, so a rank accumulates only its shard and no full-size gradient buffer exists. Stage 3 also shards
// the parameters: each part of the model is all-gathered just before the forward or backward uses it and
// dropped after. Both work on "units", the parameters one part of the pass touches:
//
//   unit 0       wte, wpe                    the embeddings (wte is also the classifier)
//   unit 1 + l   layer l's slice of the 12 per-layer tensors (ln1w[l], ln1b[l], qkvw[l], ... fcprojb[l])
//   unit L + 1   lnfw, lnfb                  the final LayerNorm
//
// A unit's elements in "unit order" are its pieces back to back (layer l's are 12 strided slices of the
// flat buffer, which is in file order, tensor by tensor). Each unit is padded to a multiple of N*ALIGN and
// cut into N equal slices; rank r owns slice r of every unit, and its shard is those slices back to back:
//
//   unit u:   [ slice 0 | slice 1 | ... | slice N-1 ]       slice = padded_u / N   (padding at the end)
//   shard r:  [ slice r of unit 0 | slice r of unit 1 | ... | slice r of unit L+1 ]
//
// so a unit's reduce-scatter delivers exactly rank r's part of its shard, and a unit's all-gather of
// every rank's slice rebuilds the unit. The padding is less than N*ALIGN per unit, (L+2)*N*ALIGN in all.
struct ZeroPiece {
    int tensor;              // index into the tensor table
    size_t global_offset;    // first element, in the flat buffer (file order)
    size_t offset_in_tensor; // first element, relative to the start of the tensor
    size_t count;            // number of elements
    size_t offset_in_unit;   // first element, in unit order
};
struct ZeroUnit {
    std::vector<ZeroPiece> pieces;
    size_t size = 0;         // real elements (the sum of the pieces)
    size_t padded = 0;       // round_up(size, N * ALIGN): the length of a buffer holding the whole unit
    size_t slice = 0;        // padded / N: what each rank owns
    size_t shard_offset = 0; // where this unit's slice starts in every rank's shard
};
struct ZeroUnits {
    std::vector<ZeroUnit> units;
    size_t shard_size = 0; // elements of every rank's shard: the sum of the slices
    int rank = 0, num_ranks = 1;
};

// The units of GPT-2's parameter table (sizes in file order, llmc/checkpoint.h) over num_ranks ranks.
inline ZeroUnits gpt2_zero_units(const size_t sizes[NUM_PARAMETER_TENSORS], int num_layers, int rank,
                                 int num_ranks) {
    if (num_ranks < 1 || rank < 0 || rank >= num_ranks || num_layers < 1) {
        fail("gpt2_zero_units: rank %d of %d with %d layers is not valid", rank, num_ranks, num_layers);
    }
    size_t start[NUM_PARAMETER_TENSORS + 1] = {0};
    for (int t = 0; t < NUM_PARAMETER_TENSORS; t++) start[t + 1] = start[t] + sizes[t];
    ZeroUnits z;
    z.rank = rank;
    z.num_ranks = num_ranks;
    auto add = [&](ZeroUnit* u, int t, size_t offset_in_tensor, size_t count) {
        u->pieces.push_back({t, start[t] + offset_in_tensor, offset_in_tensor, count, u->size});
        u->size += count;
    };
    std::vector<ZeroUnit> units(num_layers + 2);
    add(&units[0], TENSOR_WTE, 0, sizes[TENSOR_WTE]);
    add(&units[0], TENSOR_WPE, 0, sizes[TENSOR_WPE]);
    for (int l = 0; l < num_layers; l++) {
        for (int t = TENSOR_LN1W; t <= TENSOR_FCPROJB; t++) {
            const size_t per_layer = sizes[t] / num_layers;
            add(&units[1 + l], t, (size_t)l * per_layer, per_layer);
        }
    }
    add(&units[num_layers + 1], TENSOR_LNFW, 0, sizes[TENSOR_LNFW]);
    add(&units[num_layers + 1], TENSOR_LNFB, 0, sizes[TENSOR_LNFB]);
    for (ZeroUnit& u : units) {
        u.padded = zero_round_up(u.size, (size_t)num_ranks * ZERO_ALIGN);
        u.slice = u.padded / num_ranks;
        u.shard_offset = z.shard_size;
        z.shard_size += u.slice;
    }
    z.units = std::move(units);
    return z;
}

// The pieces of rank z.rank's shard, unit by unit, cut at tensor boundaries (the same ShardRange as a flat
// layout's: global_offset in the flat buffer, offset_in_shard in the shard), in shard order.
inline std::vector<ShardRange> zero_unit_ranges(const ZeroUnits& z) {
    std::vector<ShardRange> out;
    for (const ZeroUnit& u : z.units) {
        const size_t begin = (size_t)z.rank * u.slice, end = begin + u.slice; // in unit order
        for (const ZeroPiece& p : u.pieces) {
            const size_t b = std::max(begin, p.offset_in_unit), e = std::min(end, p.offset_in_unit + p.count);
            if (b >= e) continue;
            ShardRange r;
            r.tensor = p.tensor;
            r.global_offset = p.global_offset + (b - p.offset_in_unit);
            r.offset_in_tensor = p.offset_in_tensor + (b - p.offset_in_unit);
            r.count = e - b;
            r.offset_in_shard = u.shard_offset + (b - begin);
            out.push_back(r);
        }
    }
    return out;
}

// The optimizer's layout and the ranges it updates, for ZeRO stage `stage` (both trainers). Stages 0 and 1:
// the flat buffer's layout (zero_layout), cut at tensor boundaries (shard_ranges). Stages 2 and 3: this
// rank's slices of the units (zero_unit_ranges); the layout is then the flat buffer's, replicated, with
// shard_size the units' shard and a nominal shard_offset (rank * shard_size: shards in rank order).
inline std::vector<ShardRange> zero_optimizer_ranges(const size_t* sizes, int num_tensors, size_t num_params,
                                                     int stage, const ZeroUnits& units, int rank,
                                                     int num_ranks, ShardLayout* layout) {
    if (stage <= 1) {
        *layout = zero_layout(num_params, rank, num_ranks, stage);
        std::vector<ShardRange> ranges(num_tensors);
        ranges.resize(shard_ranges(sizes, num_tensors, layout, ranges.data()));
        return ranges;
    }
    if (units.shard_size == 0) fail("zero_optimizer_ranges: ZeRO stage %d without its units", stage);
    *layout = shard_layout_replicated(num_params, rank, num_ranks);
    layout->shard_size = units.shard_size;
    layout->shard_offset = (size_t)rank * units.shard_size;
    return zero_unit_ranges(units);
}

// Copies between a unit in unit order (unit_buf, padded elements, the padding left alone) and the flat
// buffer. to_unit: flat -> unit_buf; otherwise unit_buf -> flat.
inline void zero_unit_copy(const ZeroUnit& u, float* unit_buf, float* flat, bool to_unit) {
    for (const ZeroPiece& p : u.pieces) {
        float* a = unit_buf + p.offset_in_unit;
        float* b = flat + p.global_offset;
        if (to_unit) {
            memcpy(a, b, p.count * sizeof(float));
        } else {
            memcpy(b, a, p.count * sizeof(float));
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// Views of a tensor table, for both trainers: Tensors is a trainer's ParameterTensors (one T* per tensor,
// in file order; T is float on the CPU, floatX on the GPU), laid over the flat buffer or over a unit's
// bucket.

// Layer l's slices of the 12 per-layer tensors (the parameters, or their gradients). A tensor that is not
// held (null: the frozen base's gradients under LoRA, an NF4 block matrix) gives null slices.
template <class T> struct LayerTensors {
    T *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
};
template <class T> inline T* tensor_slice(T* tensor, size_t offset) {
    return tensor == nullptr ? nullptr : tensor + offset;
}
template <class Tensors> inline auto layer_params(const Tensors& p, int l, size_t C) {
    const size_t lC = (size_t)l * C;
    LayerTensors<std::remove_pointer_t<decltype(p.wte)>> lp;
    lp.ln1w = tensor_slice(p.ln1w, lC), lp.ln1b = tensor_slice(p.ln1b, lC);
    lp.qkvw = tensor_slice(p.qkvw, lC * 3 * C), lp.qkvb = tensor_slice(p.qkvb, lC * 3);
    lp.attprojw = tensor_slice(p.attprojw, lC * C), lp.attprojb = tensor_slice(p.attprojb, lC);
    lp.ln2w = tensor_slice(p.ln2w, lC), lp.ln2b = tensor_slice(p.ln2b, lC);
    lp.fcw = tensor_slice(p.fcw, lC * 4 * C), lp.fcb = tensor_slice(p.fcb, lC * 4);
    lp.fcprojw = tensor_slice(p.fcprojw, lC * 4 * C), lp.fcprojb = tensor_slice(p.fcprojb, lC);
    return lp;
}

// Points the tensors of unit u (in a bucket, unit order) into t; a layer's slices become its tensors'
// starts, so layer_params(*t, 0, C) names them.
template <class Tensors, class T> inline void unit_point(Tensors* t, T* bucket, const ZeroUnit& u) {
    static_assert(sizeof(Tensors) == NUM_PARAMETER_TENSORS * sizeof(T*), "one pointer per tensor");
    T** ptrs = (T**)t;
    for (const ZeroPiece& piece : u.pieces) ptrs[piece.tensor] = bucket + piece.offset_in_unit;
}

// ----------------------------------------------------------------------------------------------------
// memory accounting: bytes of model state per parameter on each rank (activations not included).
//
// GPU, mixed precision (bf16 = true): bf16 params (2) + bf16 grads (2) + fp32 master weights, m, v (12)
//   stage 0: 2 + 2 + 12          = 16
//   stage 1: 2 + 2 + 12/N        = 4 + 12/N     optimizer state + master weights sharded
//   stage 2: 2 + (2 + 12)/N      = 2 + 14/N     ... and gradients sharded
//   stage 3: (2 + 2 + 12)/N      = 16/N         ... and parameters sharded
// CPU, fp32 (bf16 = false): fp32 params (4) + fp32 grads (4) + m (4) + v (4); the params are the master
// copy, so there is nothing extra to shard:
//   stage 0: 16;  stage 1: 8 + 8/N;  stage 2: 4 + 12/N;  stage 3: 16/N
// (the CPU trainer's stage 1 also keeps its reduce-scattered gradient slice in a buffer of its own, 4/N
// more: 8 + 12/N; the GPU's reduce-scatter is in place)
// Example: GPT-2 124M on 4 GPUs at stage 1: 4 + 3 = 7 bytes/param = 0.87 GB instead of 16 (1.99 GB).
// train_gpt2.cu adds its fp32 gradient accumulation (4, sharded from stage 2: 4/N) and has no bf16
// gradient shard (bf16 gradients live one unit at a time in buckets), but keeps a bf16 parameter shard
// at stage 2: 2 + 18/N there, 18/N at stage 3 (its memory table prints its own formula beside this one).
inline double zero_bytes_per_param(int stage, int num_ranks, bool bf16) {
    if (stage < 0 || stage > 3 || num_ranks < 1) {
        fail("zero_bytes_per_param: stage %d with %d ranks is not defined (stage 0..3, ranks >= 1)", stage,
             num_ranks);
    }
    double param = bf16 ? 2.0 : 4.0;  // the working copy of the parameters
    double grad = bf16 ? 2.0 : 4.0;   // the gradients
    double optim = bf16 ? 12.0 : 8.0; // fp32 master + m + v, or m + v
    double n = (double)num_ranks;
    switch (stage) {
    case 0:
        return param + grad + optim;
    case 1:
        return param + grad + optim / n;
    case 2:
        return param + (grad + optim) / n;
    default:
        return (param + grad + optim) / n;
    }
}
