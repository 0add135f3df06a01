// The three inner loops of the sparse-filter convolution on CPU, compiled once per
// instruction set and picked once per process (csrc/common/cpu_isa.h), so a source build runs
// fast without -march=native.
#pragma once

#include <cstdint>

#include "csrc/sparse_filter/cpu/store_epilogue.h"

namespace torch_sparse_conv {

// Input rows for pointwise_tiles to prefetch into L2 while it computes: `rows` rows,
// `stride` elements apart from `first` (null: none), one tile's bytes of each. A batch-8 1x1
// layer's input streams from memory, 64-256 rows at once: more streams than the hardware
// prefetchers follow.
template <typename scalar_t>
struct PrefetchRows {
  const scalar_t* first = nullptr;
  int64_t rows = 0, stride = 0;
};

// Positions [first, first + length) of dot_runs' runs, in elements.
struct DotSegment {
  int64_t first, length;
};

template <typename scalar_t>
struct SparseFilterSimd {
  // out[p] = (accumulate ? out[p] : init) + sum_k values[k] * sample[offsets[k] + p]
  // for p < count rounded up to whole vectors. The accumulators of a tile of `out` stay in
  // registers across all nonzeros. Rounding up reads and writes at most 64 bytes past
  // count: callers size `out` in multiples of vector_lanes() and leave vector_lanes()
  // elements of slack after the last valid input. Each tap's offset is read from one array
  // (TapPlan::tap_offsets), not looked up through its column: two dependent loads a tap,
  // and with 101 input channels a chunk (512@7 at batch 1) the lookup table and column
  // indices beside the chunk's 32 KiB of input (a stand-alone loop of that shape, Zen 4: 61
  // against 39 GFLOP/s; with 50 channels a chunk the lookup cost little).
  void (*conv_block)(const scalar_t* sample, const int64_t* offsets, const scalar_t* values,
                     int64_t nnz, bool accumulate, scalar_t init, scalar_t* out,
                     int64_t count);
  // The bytes of conv_block's vectors: with AVX-512 32 or 64 by processor (simd.cpp).
  int conv_block_bytes;
  // For output channels i < channels and p < count:
  //   out[i * out_stride + p] = (accumulate ? out[i * out_stride + p] : init_i)
  //       + sum_{k in [tap_bounds[i * bounds_stride], tap_bounds[i * bounds_stride + 1])}
  //             values[k] * x[offsets[k] + p]
  // with init_i = init ? init[i] : 0. x is read in whole vectors of vector_lanes() (count
  // rounded up). Where count is not whole vectors of pointwise_vector positions, channel i's
  // last vector is kept at tail + i * pointwise_vector instead of in out (the caller copies
  // its first count % pointwise_vector positions out after the last call). Positions go in
  // tiles of a few full-width vectors, every channel of a tile before the next tile, so the
  // input a tile reads stays in L1 while all channels read it (pointwise.cpp: 1x1
  // convolutions read in place). While a tile computes, the channels prefetch between them
  // the rows the next tile reads: `rows` (the chunk's input rows, at x) moved on by one tile,
  // or `after` (what the caller computes next) during the last tile. The epilogue is
  // applied to the vectors stored in out (not to the tail's), its residual prefetched a few
  // channels ahead: the caller passes it with the last chunk only. With epilogue.stream those
  // vectors are stored non-temporally (out aligned to 64 bytes, out_stride whole vectors).
  void (*pointwise_tiles)(const scalar_t* x, const int64_t* offsets, const scalar_t* values,
                          const int64_t* tap_bounds, int64_t bounds_stride, int64_t channels,
                          bool accumulate, const scalar_t* init, scalar_t* out,
                          int64_t out_stride, int64_t count, scalar_t* tail,
                          PrefetchRows<scalar_t> rows, PrefetchRows<scalar_t> after,
                          StoreEpilogue<scalar_t> epilogue);
  // Positions per vector and per tile (8 vectors) of pointwise_tiles.
  int64_t pointwise_vector, pointwise_tile;
  // out[t] = sum_s sum_p a[p] * b[t][p] for t < runs, over the positions p of each segment s
  // (DotSegment), in order: each vector of a loaded once for a few runs at a time (the values'
  // gradient: a grad_output band against the taps of one output channel; the segments leave
  // out the zeros of its padding columns). A run's sum has the same bits whichever runs it
  // is computed with.
  void (*dot_runs)(const scalar_t* a, const scalar_t* const* b, int64_t runs,
                   const DotSegment* segments, int64_t segment_count, scalar_t* out);
  // dot_runs with the widest vectors where those measured faster (64 bytes where conv_block's
  // are: Intel), else dot_runs itself: for runs whose rows start on 64-byte boundaries (a
  // 64-byte load at an odd 32-byte offset crosses a cache line). Its sums have bits of their
  // own, the same whichever runs it is computed with.
  void (*dot_runs_wide)(const scalar_t* a, const scalar_t* const* b, int64_t runs,
                        const DotSegment* segments, int64_t segment_count, scalar_t* out);
  // dst[r * dst_stride + i] = src[r * src_stride + i], the epilogue applied
  // (epilogue.residual[r * dst_stride + i] added where given, then ReLU where asked), for
  // r < rows, i < n: the one-sample kernel's rows of sums into the output in one pass (a
  // copy, then the epilogue in 16-byte vectors of the generic build, took 3 % of a fused
  // ResNet-50 forward at batch 1), a block's whole rows in one call (a call a row took 16 %
  // of a batch-1 128x28x28 3x3 forward at 90 %, 2 threads, Zen 4, in calls and stalls);
  // rows contiguous on both sides as one run.
  void (*store_rows)(const scalar_t* src, int64_t src_stride, scalar_t* dst,
                     int64_t dst_stride, int64_t rows, int64_t n,
                     StoreEpilogue<scalar_t> epilogue);
  const char* isa;  // "avx512", "avx2" or "baseline"
};

// Elements in 64 bytes, the widest vector of the kernels above.
template <typename scalar_t>
constexpr int64_t vector_lanes() { return 64 / sizeof(scalar_t); }

template <typename scalar_t>
const SparseFilterSimd<scalar_t>& sparse_filter_simd();

}  // namespace torch_sparse_conv
