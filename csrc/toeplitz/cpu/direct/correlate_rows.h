// The dense-tile path's correlation (csrc/toeplitz/cpu/direct/box_paths.h), one or two output
// rows a call, compiled once per instruction set (correlate_rows.cpp, loops in dense_tile.h)
// and dispatched at run time: its AVX-512 build keeps each loaded vector in a register, which
// needs to know the instruction set at compile time, so it cannot be inlined into the passes.
#pragma once

#include <cstdint>

namespace torch_sparse_conv {
namespace toeplitz_direct {

// Outputs are computed in whole vectors of this many bytes: kTileLanes<scalar_t> outputs.
constexpr int kTileVectorBytes = 64;
template <typename scalar_t>
constexpr int64_t kTileLanes = kTileVectorBytes / sizeof(scalar_t);

// out[j] = sum over u < kh, t < kw of taps[u * kw + t] * tile[u * stride + j + t], for
// j < width; with rows == 2 also out[out_stride + j], the same from tile rows 1 .. kh. Reads
// columns up to round_up(width, kTileLanes) + kw - 2 of tile rows 0 .. kh + rows - 2 (the
// caller pads the tile) and writes out[0, round_up(width, kTileLanes)) of each output row.
void correlate_rows(const double* tile, int64_t stride, const double* taps, int64_t kh,
                    int64_t kw, int64_t width, int rows, double* out, int64_t out_stride);
void correlate_rows(const float* tile, int64_t stride, const float* taps, int64_t kh,
                    int64_t kw, int64_t width, int rows, float* out, int64_t out_stride);

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
