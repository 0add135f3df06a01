// The kept taps of a packed filter as the CPU 'direct' kernels read them: per output
// channel, sorted by input channel and cut into chunks of input channels, each tap an offset
// into the (interleaved) polyphase layout of one sample or sample block.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "csrc/common/arithmetic.h"
#include "csrc/sparse_filter/geometry.h"

namespace torch_sparse_conv {

// The taps of each output channel sorted by input channel, as offsets into the (interleaved)
// polyphase layout, with the boundaries of each input-channel chunk.
template <typename scalar_t>
struct SortedTaps {
  std::vector<int64_t> offsets;
  std::vector<scalar_t> values;
  std::vector<int64_t> chunk_ptr;  // out_channels x (chunks + 1)
  int64_t chunks = 1;

  const int64_t* bounds(int64_t oc) const { return chunk_ptr.data() + oc * (chunks + 1); }
};

// `values` in scalar_t, the dtype computed in; chunks of `chunk_channels` input channels;
// offsets in elements of a layout that interleaves `interleave` samples per position.
template <typename scalar_t>
SortedTaps<scalar_t> sort_taps(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                               const at::Tensor& values, const SparseFilterGeometry& g,
                               int64_t chunk_channels, int64_t interleave) {
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const int64_t* ci = col_idx.data_ptr<int64_t>();
  const scalar_t* val = values.data_ptr<scalar_t>();
  const int64_t nnz = col_idx.size(0);
  const int64_t cin_g = g.in_channels_per_group();
  const int64_t taps_per_channel = g.kernel_h * g.kernel_w;
  const int64_t group_block = cin_g * g.channel_block();
  const std::vector<int64_t> column_offset = g.column_offsets();
  // The chunk of each filter column, looked up per tap (no division per tap).
  std::vector<int64_t> chunk_of(g.taps_per_filter());
  for (int64_t col = 0; col < g.taps_per_filter(); ++col) {
    chunk_of[col] = col / taps_per_channel / chunk_channels;
  }
  SortedTaps<scalar_t> sorted;
  sorted.chunks = ceil_div(cin_g, chunk_channels);
  sorted.offsets.resize(nnz);
  sorted.values.resize(nnz);
  sorted.chunk_ptr.resize(g.out_channels * (sorted.chunks + 1));
  // Output channels are independent: each writes only its own range of the arrays.
  at::parallel_for(0, g.out_channels, 16, [&](int64_t oc_begin, int64_t oc_end) {
    std::vector<int64_t> order;
    for (int64_t oc = oc_begin; oc < oc_end; ++oc) {
      const int64_t begin = rp[oc], end = rp[oc + 1];
      // pack_sparse_filter emits sorted columns; only hand-made CSR needs the sort.
      const bool in_order = std::is_sorted(ci + begin, ci + end);
      if (!in_order) {
        order.resize(end - begin);
        std::iota(order.begin(), order.end(), begin);
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t x, int64_t y) { return ci[x] < ci[y]; });
      }
      int64_t* bounds = sorted.chunk_ptr.data() + oc * (sorted.chunks + 1);
      const int64_t group_base = oc / g.out_channels_per_group() * group_block;
      int64_t j = 0;  // bounds[j]: the first tap of chunk j or later
      for (int64_t i = begin; i < end; ++i) {
        const int64_t source = in_order ? i : order[i - begin];
        const int64_t col = ci[source];
        while (j <= chunk_of[col]) bounds[j++] = i;
        sorted.offsets[i] = (group_base + column_offset[col]) * interleave;
        sorted.values[i] = val[source];
      }
      while (j <= sorted.chunks) bounds[j++] = end;
    }
  });
  return sorted;
}

}  // namespace torch_sparse_conv
