// The host side of the sparse-filter CUDA kernels (cuda/sparse_filter/kernels.cuh): the tile
// plan that sizes a launch of the tiled 'direct' kernel, its environment knobs, and the tap
// tables the kernels read (built on every call from the packed filter as it is now). Plain of
// ATen's CUDA parts, like the kernels, so the emulated tests run it too.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "csrc/common/arithmetic.h"
#include "csrc/common/csr_check.h"
#include "csrc/sparse_filter/geometry.h"
#include "cuda/sparse_filter/kernels.cuh"

namespace torch_sparse_conv {

// Splits n into the fewest pieces of at most `most`, as even as possible.
inline int64_t even_piece(int64_t n, int64_t most) { return ceil_div(n, ceil_div(n, most)); }

// Output channels per pass: more reuse each staged window, fewer let more blocks share an
// SM (registers). TSC_CUDA_OC_BLOCK=8|16|32 overrides, for tuning.
inline int choose_oc_block(int64_t out_channels_per_group) {
  static const int forced = [] {
    const char* env = std::getenv("TSC_CUDA_OC_BLOCK");
    return env ? std::atoi(env) : 0;
  }();
  if (forced == 8 || forced == 16 || forced == 32) return forced;
  return out_channels_per_group <= 8 ? 8 : out_channels_per_group <= 16 ? 16 : 32;
}

// Whether a one-window plan may take more than kWindowBytes: TSC_CUDA_MERGED_WINDOW=0 turns
// it off (for comparisons on a GPU).
inline bool merged_window_allowed() {
  static const bool allowed = [] {
    const char* env = std::getenv("TSC_CUDA_MERGED_WINDOW");
    return !(env && std::string(env) == "0");
  }();
  return allowed;
}

// Fills `t` for a GPU with `multiprocessors` SMs that lets a block opt in to
// `optin_shared_bytes` of shared memory; false when the shape needs the fallback kernel.
// Passes are merged into one block only while the grid keeps at least four blocks per SM,
// and a window beyond kWindowBytes is taken only when passes merge.
inline bool plan_tiles(const SparseFilterGeometry& g, size_t element_bytes,
                       int64_t multiprocessors, int64_t optin_shared_bytes, TileGeometry& t) {
  const int64_t tw = even_piece(g.out_w, 32);
  const int64_t th = even_piece(g.out_h, std::max<int64_t>(1, kCudaThreads / tw));
  const int64_t nb = std::min<int64_t>(g.batch, std::max<int64_t>(1, kCudaThreads / (th * tw)));
  const int64_t in_th = (th - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1;
  const int64_t in_tw = (tw - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1;
  const int64_t plane_bytes = nb * in_th * in_tw * int64_t(element_bytes);
  const int64_t cin_g = g.in_channels_per_group();
  if (plane_bytes > kWindowBytes || cin_g == 0 || nb == 0) return false;
  t.nb = int(nb);
  t.th = int(th);
  t.tw = int(tw);
  t.in_th = int(in_th);
  t.in_tw = int(in_tw);
  t.tiles_n = ceil_div(g.batch, nb);
  t.tiles_h = ceil_div(g.out_h, th);
  t.tiles_w = ceil_div(g.out_w, tw);
  t.oc_block = choose_oc_block(g.out_channels_per_group());
  t.oc_blocks_per_group = ceil_div(g.out_channels_per_group(), t.oc_block);
  // Passes one block could take while the grid keeps four blocks per SM.
  const int64_t wanted_per_group =
      ceil_div(4 * std::max<int64_t>(1, multiprocessors), t.tiles() * g.groups);
  const int64_t mergeable = std::max<int64_t>(1, t.oc_blocks_per_group / wanted_per_group);
  const int64_t merged_limit = merged_window_allowed()
                                   ? std::min(kMergedWindowBytes, optin_shared_bytes)
                                   : kWindowBytes;
  const int64_t one_window = cin_g * plane_bytes;
  if (one_window <= kWindowBytes || (mergeable > 1 && one_window <= merged_limit)) {
    t.chunk = int(cin_g);
    t.oc_loops = int(mergeable);
  } else {
    t.chunk = int(even_piece(cin_g, kWindowBytes / plane_bytes));
    t.oc_loops = 1;
  }
  t.chunks = int(ceil_div(cin_g, t.chunk));
  t.y_blocks_per_group = ceil_div(t.oc_blocks_per_group, t.oc_loops);
  // Window offsets are int: every channel's plane of the group must fit.
  return t.tiles() < std::numeric_limits<int>::max() &&
         g.groups * t.y_blocks_per_group <= 65535 &&
         cin_g * nb * in_th * in_tw < std::numeric_limits<int>::max();
}

// Shared memory of one window: nb images x chunk channels x in_th x in_tw.
inline size_t window_bytes(const TileGeometry& t, size_t element_bytes) {
  return size_t(t.nb) * t.chunk * t.in_th * t.in_tw * element_bytes;
}

// How many of `keys` (int64, each in [0, n)) equal each value: at::bincount's counts without
// its host wait (it reads the largest key back to size its output), so that the tables build
// inside a captured CUDA graph too.
inline at::Tensor count_keys(const at::Tensor& keys, int64_t n) {
  return at::zeros({n}, keys.options()).index_add_(0, keys, at::ones_like(keys));
}

// The taps sorted by (output channel, input channel): tap_ptr[oc * cin_g + c] is where the
// taps of output channel oc reading input channel c begin. Built on every call.
inline std::vector<at::Tensor> build_tap_table(const at::Tensor& row_ptr,
                                               const at::Tensor& col_idx,
                                               const at::Tensor& values,
                                               const SparseFilterGeometry& g) {
  const int64_t nnz = col_idx.size(0), cin_g = g.in_channels_per_group();
  const int64_t taps_per_channel = g.kernel_h * g.kernel_w;
  const at::Tensor row_of = row_of_entries(row_ptr, g.out_channels, nnz);
  const at::Tensor channel = at::div(col_idx, taps_per_channel, "floor");
  const at::Tensor key = row_of * cin_g + channel;
  const at::Tensor order = std::get<1>(at::sort(key, /*stable=*/true, 0, false));
  at::Tensor tap_ptr = at::zeros({g.out_channels * cin_g + 1}, row_ptr.options());
  if (nnz > 0) {
    tap_ptr.narrow(0, 1, g.out_channels * cin_g)
        .copy_(at::cumsum(count_keys(key, g.out_channels * cin_g), 0));
  }
  return {tap_ptr, channel.index_select(0, order),
          col_idx.remainder(taps_per_channel).index_select(0, order),
          values.detach().index_select(0, order).contiguous()};
}

// Each tap's offset in the window (int32): c * (nb * in_th * in_tw) + ki * dilation_h * in_tw
// + kj * dilation_w, for a window shape.
inline at::Tensor window_offsets(const std::vector<at::Tensor>& table,
                                 const SparseFilterGeometry& g, const TileGeometry& t) {
  const at::Tensor& channel = table[1];
  const at::Tensor& tap = table[2];
  const at::Tensor ki = at::div(tap, g.kernel_w, "floor"), kj = tap.remainder(g.kernel_w);
  return (channel * (int64_t(t.nb) * t.in_th * t.in_tw) + ki * (g.dilation_h * t.in_tw) +
          kj * g.dilation_w)
      .to(at::kInt);
}

// The weight sorted by (group, column), as grad_input_kernel reads it: {csc_ptr, csc_row,
// csc_value}, csc_ptr[group * taps + column] beginning the output channels of that column.
inline std::vector<at::Tensor> sort_weight_by_column(const at::Tensor& row_of,
                                                     const at::Tensor& col_idx,
                                                     const at::Tensor& values,
                                                     const SparseFilterGeometry& g) {
  const int64_t taps = g.taps_per_filter();
  const at::Tensor key = at::div(row_of, g.out_channels_per_group(), "floor") * taps + col_idx;
  const at::Tensor order = std::get<1>(at::sort(key, /*stable=*/true, 0, false));
  at::Tensor csc_ptr = at::zeros({g.groups * taps + 1}, col_idx.options());
  if (key.numel() > 0) {
    csc_ptr.narrow(0, 1, g.groups * taps)
        .copy_(at::cumsum(count_keys(key, g.groups * taps), 0));
  }
  return {csc_ptr, row_of.index_select(0, order), values.index_select(0, order)};
}

}  // namespace torch_sparse_conv
