// Output rows of a small 2-D correlation over a dense tile: the inner loops of the Toeplitz
// direct kernel's dense-tile path (csrc/toeplitz/cpu/direct/box_paths.h), for images whose
// entries fill their bounding box densely. Included only by correlate_rows.cpp, which compiles
// them once per instruction set.
//
// Written with GCC's vector extensions and internal linkage, so every instruction-set clone
// inlines its own copy at its own vector width (64-byte vectors become one AVX-512 register,
// two AVX2 ones or four SSE2 ones).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "csrc/toeplitz/cpu/direct/correlate_rows.h"

namespace torch_sparse_conv {
namespace toeplitz_direct {
namespace {  // internal linkage: each kernel build inlines its own copy

template <typename scalar_t>
struct TileVector {
  typedef scalar_t type __attribute__((vector_size(kTileVectorBytes)));
  static constexpr int64_t lanes = kTileLanes<scalar_t>;
};

// Outputs are computed up to four vectors at a time, kept in registers over every tap: each
// tap then costs a broadcast and, per vector, a load and a multiply-add, with no store in
// the loop. A row's last block takes only the vectors it needs: ROI boxes are 10-35 pixels
// wide, and four vectors (32 doubles) for all of them wasted a third to a half of the work.

// Outputs [0, kVectors * lanes) of one block (see correlate_row).
template <int kVectors, typename scalar_t>
inline void correlate_block(const scalar_t* tile, int64_t stride, const scalar_t* taps,
                            int64_t kh, int64_t kw, scalar_t* out) {
  using vec = typename TileVector<scalar_t>::type;
  constexpr int64_t lanes = TileVector<scalar_t>::lanes;
  vec acc[kVectors] = {};
  for (int64_t u = 0; u < kh; ++u) {
    const scalar_t* row = tile + u * stride;
    const scalar_t* w = taps + u * kw;
    for (int64_t t = 0; t < kw; ++t) {
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) {
        vec x;  // an unaligned load
        std::memcpy(&x, row + t + v * lanes, sizeof(vec));
        acc[v] += w[t] * x;
      }
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < kVectors; ++v) std::memcpy(out + v * lanes, &acc[v], sizeof(vec));
}

// One tile row's contribution to a block of two output rows (see correlate_block_pair):
// through taps row w0 to the first row's sums and through w1 to the second's, each only where
// the template says the tile row reaches that output row.
//
// kPinLoads keeps each loaded vector in a register for both multiply-adds. Left alone, GCC
// folds the load into each of them, two loads where one does, and seven in eight of these
// unaligned 64-byte loads cross a cache line: the loads, not the multiply-adds, were the
// limit. Pinning needs the vector to be one register (the AVX-512 build).
template <bool kFirst, bool kSecond, bool kPinLoads, int kVectors, typename scalar_t,
          typename vec>
inline void accumulate_tile_row(const scalar_t* row, const scalar_t* w0, const scalar_t* w1,
                                int64_t kw, vec* acc0, vec* acc1) {
  constexpr int64_t lanes = TileVector<scalar_t>::lanes;
  for (int64_t t = 0; t < kw; ++t) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) {
      vec x;  // an unaligned load, shared by both rows
      std::memcpy(&x, row + t + v * lanes, sizeof(vec));
      if constexpr (kFirst && kSecond && kPinLoads) asm("" : "+v"(x));
      if constexpr (kFirst) acc0[v] += w0[t] * x;
      if constexpr (kSecond) acc1[v] += w1[t] * x;
    }
  }
}

// Outputs [0, kVectors * lanes) of two consecutive output rows, out and out + out_stride.
// Tile row q feeds the first through taps row q and the second through taps row q - 1, so each
// loaded vector serves both, and the 2 * kVectors sums are independent chains (one row's four
// chains are bound by the multiply-add's latency). Each load feeds two multiply-adds only if
// it stays in a register (kPinLoads, accumulate_tile_row).
template <bool kPinLoads, int kVectors, typename scalar_t>
inline void correlate_block_pair(const scalar_t* tile, int64_t stride, const scalar_t* taps,
                                 int64_t kh, int64_t kw, scalar_t* out, int64_t out_stride) {
  using vec = typename TileVector<scalar_t>::type;
  constexpr int64_t lanes = TileVector<scalar_t>::lanes;
  vec acc0[kVectors] = {}, acc1[kVectors] = {};
  accumulate_tile_row<true, false, kPinLoads, kVectors>(tile, taps, taps, kw, acc0, acc1);
  for (int64_t q = 1; q < kh; ++q) {
    accumulate_tile_row<true, true, kPinLoads, kVectors>(tile + q * stride, taps + q * kw,
                                                         taps + (q - 1) * kw, kw, acc0, acc1);
  }
  accumulate_tile_row<false, true, kPinLoads, kVectors>(tile + kh * stride, taps,
                                                        taps + (kh - 1) * kw, kw, acc0, acc1);
#pragma GCC unroll 4
  for (int v = 0; v < kVectors; ++v) {
    std::memcpy(out + v * lanes, &acc0[v], sizeof(vec));
    std::memcpy(out + out_stride + v * lanes, &acc1[v], sizeof(vec));
  }
}

// Calls block(j0, std::integral_constant<int, V>{}) over a row of `width` outputs: blocks of
// four vectors from j0 = 0, then one of the one to three vectors left.
template <typename scalar_t, typename Block>
inline void for_each_row_block(int64_t width, const Block& block) {
  constexpr int64_t lanes = kTileLanes<scalar_t>;
  int64_t j0 = 0;
  for (; width - j0 > 3 * lanes; j0 += 4 * lanes) block(j0, std::integral_constant<int, 4>{});
  switch ((width - j0 + lanes - 1) / lanes) {
    case 3: return block(j0, std::integral_constant<int, 3>{});
    case 2: return block(j0, std::integral_constant<int, 2>{});
    case 1: return block(j0, std::integral_constant<int, 1>{});
    default: return;
  }
}

// out[j] = sum over u < kh, t < kw of taps[u * kw + t] * tile[u * stride + j + t], for
// j < width. Reads columns up to round_up(width, lanes) + kw - 2 of tile rows 0 .. kh - 1 (the
// caller pads the tile) and writes out[0, round_up(width, lanes)).
template <typename scalar_t>
inline void correlate_row(const scalar_t* tile, int64_t stride, const scalar_t* taps,
                          int64_t kh, int64_t kw, int64_t width, scalar_t* out) {
  for_each_row_block<scalar_t>(width, [&](int64_t j0, auto vectors) {
    correlate_block<decltype(vectors)::value>(tile + j0, stride, taps, kh, kw, out + j0);
  });
}

// correlate_row for two consecutive output rows: the first from tile rows 0 .. kh - 1 into
// out, the second from tile rows 1 .. kh into out + out_stride.
template <bool kPinLoads, typename scalar_t>
inline void correlate_row_pair(const scalar_t* tile, int64_t stride, const scalar_t* taps,
                               int64_t kh, int64_t kw, int64_t width, scalar_t* out,
                               int64_t out_stride) {
  for_each_row_block<scalar_t>(width, [&](int64_t j0, auto vectors) {
    correlate_block_pair<kPinLoads, decltype(vectors)::value>(tile + j0, stride, taps, kh, kw,
                                                              out + j0, out_stride);
  });
}

}  // namespace
}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
