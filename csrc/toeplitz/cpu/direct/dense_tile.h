// One output row of a small 2-D correlation over a dense tile: the inner loop of the Toeplitz
// direct kernel's dense-tile path (csrc/toeplitz/cpu/direct/box_paths.h), for images whose entries
// fill their bounding box densely.
//
// Written with GCC's vector extensions and internal linkage, so every instruction-set clone
// of the kernel inlines its own copy at its own vector width (64-byte vectors become one
// AVX-512 register, two AVX2 ones or four SSE2 ones).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace torch_sparse_conv {
namespace {  // internal linkage: each kernel build inlines its own copy

template <typename scalar_t>
struct TileVector {
  typedef scalar_t type __attribute__((vector_size(64)));
  static constexpr int64_t lanes = 64 / sizeof(scalar_t);
};

// Outputs are computed this many at a time, in four vectors that stay in registers over
// every tap: each tap then costs a broadcast, four loads and four multiply-adds, with no
// store in the loop.
template <typename scalar_t>
constexpr int64_t kTileBlock = 4 * TileVector<scalar_t>::lanes;

// out[j] = sum over u < kh, t < kw of taps[u * kw + t] * tile[u * stride + j + t], for
// j < width. Reads columns up to width + kw - 2 + kTileBlock of tile rows 0 .. kh - 1 (the
// caller pads the tile) and writes out[0, width rounded up to kTileBlock).
template <typename scalar_t>
inline void correlate_row(const scalar_t* tile, int64_t stride, const scalar_t* taps,
                          int64_t kh, int64_t kw, int64_t width, scalar_t* out) {
  using vec = typename TileVector<scalar_t>::type;
  constexpr int64_t lanes = TileVector<scalar_t>::lanes;
  for (int64_t j0 = 0; j0 < width; j0 += kTileBlock<scalar_t>) {
    vec a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t u = 0; u < kh; ++u) {
      const scalar_t* row = tile + u * stride + j0;
      const scalar_t* w = taps + u * kw;
      for (int64_t t = 0; t < kw; ++t) {
        vec x0, x1, x2, x3;  // unaligned loads
        std::memcpy(&x0, row + t, sizeof(vec));
        std::memcpy(&x1, row + t + lanes, sizeof(vec));
        std::memcpy(&x2, row + t + 2 * lanes, sizeof(vec));
        std::memcpy(&x3, row + t + 3 * lanes, sizeof(vec));
        a0 += w[t] * x0;
        a1 += w[t] * x1;
        a2 += w[t] * x2;
        a3 += w[t] * x3;
      }
    }
    std::memcpy(out + j0, &a0, sizeof(vec));
    std::memcpy(out + j0 + lanes, &a1, sizeof(vec));
    std::memcpy(out + j0 + 2 * lanes, &a2, sizeof(vec));
    std::memcpy(out + j0 + 3 * lanes, &a3, sizeof(vec));
  }
}

}  // namespace
}  // namespace torch_sparse_conv
