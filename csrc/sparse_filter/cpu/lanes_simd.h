// The inner loops of the batch-in-lanes 'direct' forward (direct_lanes.cpp): a block of
// lanes<scalar_t>() samples sits in the lanes of one 32-byte pixel, so the input of every
// tap at every output pixel is one vector load. AVX-512's tiles load 64-byte vectors, two
// adjacent pixels each: taps at odd column offsets (a third of a 3x3's) then cross a cache
// line. The tile's loop from L1 at 1 thread, 28 accumulators: 104-114 GFLOP/s with 32-byte
// vectors, 129 (crossing) to 158 (aligned) with 64-byte ones. Compiled per instruction set
// (csrc/common/cpu_isa.h); there is no baseline variant: without AVX2 the 'direct' method
// keeps its one-sample layout.
#pragma once

#include <cstdint>

#include "csrc/sparse_filter/cpu/store_epilogue.h"

namespace torch_sparse_conv {

// Samples per vector: 8 float32, 4 float64.
template <typename scalar_t>
constexpr int64_t lanes() { return 32 / sizeof(scalar_t); }

template <typename scalar_t>
struct LaneKernels {
  // An output tile of `rows` x `pixel_cols` pixels of the block's samples, stored row-major
  // at out (rows * pixel_cols * lanes elements); with e = (r * row_stride + c) * lanes:
  //   out[r][c] = (accumulate ? out[r][c] : init)
  //               + sum_k values[k] * x[offsets[k] + e .. + lanes]
  // The accumulators, ceil(pixel_cols / pixels_per_vector) vectors a row (the last one half
  // wide where pixel_cols is odd and a vector holds two pixels), stay in registers across
  // all taps. rows * ceil(pixel_cols / pixels_per_vector) <= max_tile, rows <= max_rows.
  void (*tile)(const scalar_t* x, int64_t row_stride, const int64_t* offsets,
               const scalar_t* values, int64_t taps, bool accumulate, scalar_t init,
               scalar_t* out, int rows, int pixel_cols);
  // dst[q * dst_stride + s] = s < samples ? src[s * src_stride + q] : 0 for q < len,
  // s < lanes, samples <= lanes. dst_stride is lanes for a run of pixels; a channels-last
  // pixel's channels go to one pixel of each channel's plane (dst_stride: a plane apart).
  void (*interleave)(const scalar_t* src, int64_t src_stride, int64_t samples, int64_t len,
                     scalar_t* dst, int64_t dst_stride);
  // interleave's pixels dealt out in turn to `phases` places: pixel q, where q + offset = j *
  // phases + b, to the lanes at dst + b * phase_step + j * column_step. A strided layer's
  // input row into its phase planes (phase_step a plane, column_step lanes); rows of `phases`
  // pixels into longer rows (phase_step lanes, column_step a row).
  void (*interleave_phases)(const scalar_t* src, int64_t src_stride, int64_t samples,
                            int64_t len, scalar_t* dst, int64_t phases, int64_t phase_step,
                            int64_t column_step, int64_t offset);
  // dst[s * dst_stride + q] = src[q * src_stride + s] for q < len, s < samples (<= lanes):
  // the inverse (src_stride lanes for a run of pixels, a plane apart for a pixel's channels),
  // with the epilogue applied (its residual laid out as dst).
  void (*deinterleave)(const scalar_t* src, int64_t src_stride, int64_t len, int64_t samples,
                       scalar_t* dst, int64_t dst_stride, StoreEpilogue<scalar_t> epilogue);
  int max_tile;  // accumulators that fit the vector registers with room to spare
  int max_rows;
  // Pixels in one of the tile's vectors: 2 where the machine's widest vectors (64 bytes,
  // AVX-512) hold two 32-byte pixels, else 1.
  int pixels_per_vector;
};

// The kernels for this process's instruction set; nullptr where it lacks AVX2.
template <typename scalar_t>
const LaneKernels<scalar_t>* lane_kernels();

}  // namespace torch_sparse_conv
