// zero.h: the ZeRO-1 sharding arithmetic shared by the CPU and GPU trainers. Pure arithmetic: no MPI,
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

#include <cstddef>

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

// The layout for a ZeRO stage: 0 -> replicated, 1 -> sharded optimizer state. Stages 2 and 3 are not
// implemented by the trainers (they appear only in the memory accounting below).
inline ShardLayout zero_layout(size_t num_params, int rank, int num_ranks, int zero_stage) {
    if (zero_stage == 0) return shard_layout_replicated(num_params, rank, num_ranks);
    if (zero_stage == 1) return shard_layout(num_params, rank, num_ranks);
    fail("ZeRO stage %d is not supported (flag -z expects 0 or 1)", zero_stage);
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
