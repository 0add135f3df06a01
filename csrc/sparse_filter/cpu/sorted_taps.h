// The kept taps of a packed filter as the CPU 'direct' kernels read them: in place, from the
// packed arrays. The plan costs a walk along each output channel's columns (are they sorted?
// where does each chunk start?), not a copy per tap: at batch 1 on small planes (512@7) a
// per-tap copy cost as much as the convolution. It is kept with the pattern where the
// pattern is kept (pattern_cache.h), and built per call where it is not.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <numeric>
#include <vector>

#include "csrc/common/arithmetic.h"
#include "csrc/sparse_filter/geometry.h"
#include "csrc/sparse_filter/pattern_cache.h"

namespace torch_sparse_conv {

// Where output channel oc's group of input channels starts in a layout: each group of
// out_channels_per_group output channels reads its own group_block elements.
inline int64_t group_start(int64_t oc, int64_t out_channels_per_group, int64_t group_block) {
  return oc / out_channels_per_group * group_block;
}

// int64s left uninitialised for a walk that writes every one (a zeroed std::vector cost a
// pass of its own: about 5 % of the lanes forward on 512@7, batch 8, 2 threads).
struct UninitializedInt64s {
  std::unique_ptr<int64_t[]> data;
  int64_t size = 0;
  void allocate(int64_t n) {
    data.reset(new int64_t[n]);
    size = n;
  }
};

// What sort_taps derives from the pattern and the layout's geometry, not from the values:
// kept with the pattern between calls where it is kept (pattern_cache.h, DerivedPlans).
struct TapPlan {
  int64_t chunks = 1;
  std::vector<int64_t> chunk_ptr;  // out_channels x (chunks + 1)
  // Per tap its group's start + column_offset[cols[k]] (TapLayout) in one array, which every
  // 'direct' kernel reads instead of looking each column up in its inner loop: the lanes
  // tile (8 % of 256@14 at batch 8, 2 threads), the one-sample conv_block (0.67-0.93x the
  // time at batch 1, simd.h) and the 1x1 kernels. Written by find_chunk_bounds.
  UninitializedInt64s tap_offsets;
  int64_t bytes() const {
    return int64_t((chunk_ptr.size() + tap_offsets.size) * sizeof(int64_t));
  }
};

// The part of a plan's key that says which layout its offsets are in: each column's offset
// follows from the first channel's (its kernel taps) and the channel block.
inline void append_layout_key(std::vector<int64_t>& key, const SparseFilterGeometry& g,
                              const std::vector<int64_t>& column_offset, int64_t interleave) {
  key.push_back(g.taps_per_filter());
  key.push_back(g.channel_block() * interleave);
  const int64_t kernel = std::min(g.kernel_h * g.kernel_w, g.taps_per_filter());
  key.insert(key.end(), column_offset.begin(), column_offset.begin() + kernel);
}

// Tap k of output channel oc (k in [row_ptr[oc], row_ptr[oc + 1])) reads the layout at
// tap_offsets()[k] with weight values[k]; each channel's taps are sorted by column, and
// bounds(oc)[j] is its first tap of input-channel chunk j.
template <typename scalar_t>
struct SortedTaps {
  const scalar_t* values = nullptr;
  std::shared_ptr<const TapPlan> plan;
  int64_t chunks = 1;  // plan->chunks

  const int64_t* chunk_ptr() const { return plan->chunk_ptr.data(); }
  const int64_t* bounds(int64_t oc) const { return chunk_ptr() + oc * (chunks + 1); }
  // The taps' offsets (TapPlan::tap_offsets).
  const int64_t* tap_offsets() const { return plan->tap_offsets.data.get(); }

  // What values points to: the packed values, or a copy in the sorted columns' order.
  at::Tensor values_tensor;
};

// The layout whose offsets find_chunk_bounds writes for each tap (TapPlan::tap_offsets):
// tap k of output channel oc is at group_start(oc, out_channels_per_group, group_block) +
// column_offset[cols[k]].
struct TapLayout {
  const int64_t* column_offset;
  int64_t group_block, out_channels_per_group;
};

// Input channels per chunk: as many as fit L1 (l1_channels), but at least enough for an
// output channel of average density to have 8 taps in each chunk. Every chunk reloads and
// stores an output tile's partial sums; with fewer taps that overhead outweighs reading the
// input from L2. Measured at batch 8, 2 threads, against L1-sized chunks: 1x1 512->2048 @7 at
// 90 % 2.5-2.9 -> 1.7-2.4 ms, 1x1 256->64 @56 4.8-6.0 -> 4.4-4.5 ms, 3x3 layers at 90 % and
// 95 % unchanged (16 taps cost the 3x3 layers at 90 % 5-10 %).
inline int64_t chunk_channels_for(const SparseFilterGeometry& g, int64_t nnz,
                                  int64_t l1_channels) {
  constexpr double kMinTapsPerChunk = 8;
  const double taps_per_channel =
      double(nnz) / double(std::max<int64_t>(1, g.out_channels * g.in_channels_per_group()));
  const double for_taps = kMinTapsPerChunk / std::max(taps_per_channel, 1e-9);
  return std::max<int64_t>(
      {1, l1_channels,
       static_cast<int64_t>(std::min(for_taps, double(g.in_channels_per_group())))});
}

// Each filter column's chunk of chunk_channels input channels (of its group), looked up by
// find_chunk_bounds (a division per tap cost more than the walk).
inline std::vector<int32_t> chunk_of_columns(const SparseFilterGeometry& g,
                                             int64_t chunk_channels) {
  const int64_t chunk_columns = chunk_channels * g.kernel_h * g.kernel_w;
  std::vector<int32_t> chunk_of(g.taps_per_filter());
  for (int64_t column = 0, chunk = 0; column < g.taps_per_filter(); chunk++) {
    const int64_t end = std::min(column + chunk_columns, g.taps_per_filter());
    std::fill(chunk_of.begin() + column, chunk_of.begin() + end, static_cast<int32_t>(chunk));
    column = end;
  }
  return chunk_of;
}

// bounds[oc * (chunks + 1) + j]: output channel oc's first tap in chunk j (chunk_of_columns),
// bounds[.. + chunks] its end, in one pass over each channel's columns; returns whether every
// channel's columns are sorted (pack_sparse_filter emits sorted columns; only a hand-made CSR
// has others, and then the bounds mean nothing). Branch-free: each tap stores its index + 1
// as the bound of the chunk after its own (the last tap of a chunk wins), and a running
// maximum then fills the bounds of chunks without taps. A loop that advanced to each chunk's
// first tap mispredicted at every chunk; with a sortedness check of its own that plan cost
// 20 % of a batch-1 512@7 call at 90 %. Each output channel's taps' offsets in `layout` are
// written to offsets_out in the same parallel task, before its bounds (a parallel pass of
// their own into a zeroed std::vector cost the lanes forward on 512@7, batch 8, 2 threads,
// about 5 % of its time: 0.947x / 0.953x without at 90 % / 95 %).
inline bool find_chunk_bounds(const int64_t* row_ptr, const int64_t* cols, int64_t out_channels,
                              const std::vector<int32_t>& chunk_of, int64_t chunks,
                              int64_t* bounds_out, const TapLayout& layout,
                              int64_t* offsets_out) {
  std::atomic<bool> in_order{true};
  at::parallel_for(0, out_channels, 64, [&](int64_t oc_begin, int64_t oc_end) {
    bool ordered = true;
    for (int64_t oc = oc_begin; oc < oc_end; ++oc) {
      int64_t* bounds = bounds_out + oc * (chunks + 1);
      std::fill(bounds, bounds + chunks + 1, row_ptr[oc]);
      int64_t previous = 0;
      const int64_t end = row_ptr[oc + 1];
      const int64_t base = group_start(oc, layout.out_channels_per_group, layout.group_block);
      for (int64_t k = row_ptr[oc]; k < end; ++k) {
        offsets_out[k] = base + layout.column_offset[cols[k]];
      }
      for (int64_t k = row_ptr[oc]; k < end; ++k) {
        const int64_t column = cols[k];
        ordered &= column >= previous;
        previous = column;
        bounds[chunk_of[column] + 1] = k + 1;
      }
      for (int64_t j = 1; j <= chunks; ++j) bounds[j] = std::max(bounds[j], bounds[j - 1]);
      bounds[chunks] = row_ptr[oc + 1];
    }
    if (!ordered) in_order = false;
  });
  return in_order.load();
}

// The TapPlan of the nnz taps in `cols` (row_ptr's rows) for chunks of chunk_channels input
// channels, and each tap's offset in `layout`, from one walk
// (find_chunk_bounds); `sorted` says whether every output channel's columns are sorted
// (where they are not, the bounds mean nothing). The offsets are not zeroed first: the walk
// writes every tap's (check_csr_contents: the row pointers cover all of cols).
inline TapPlan plan_taps(const int64_t* row_ptr, const int64_t* cols, int64_t nnz,
                         const SparseFilterGeometry& g, int64_t chunk_channels,
                         const TapLayout& layout, bool& sorted) {
  TapPlan plan;
  plan.chunks = ceil_div(g.in_channels_per_group(), chunk_channels);
  plan.chunk_ptr.resize(g.out_channels * (plan.chunks + 1));
  plan.tap_offsets.allocate(nnz);
  sorted = find_chunk_bounds(row_ptr, cols, g.out_channels, chunk_of_columns(g, chunk_channels),
                             plan.chunks, plan.chunk_ptr.data(), layout,
                             plan.tap_offsets.data.get());
  return plan;
}

// `values` of the dtype computed in (scalar_t); chunks of `chunk_channels` input channels;
// each tap's offset (TapPlan::tap_offsets) in elements of a layout that interleaves
// `interleave` samples per position. row_ptr and col_idx must have passed
// check_csr_contents. Where they are a kept pattern's (trusted_pattern: the forward's checked
// pattern, or the transposed filter's of the backward's convolution) and its columns are
// sorted, the plan is kept with it and found again by the geometry it was built for.
template <typename scalar_t>
SortedTaps<scalar_t> sort_taps(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                               const at::Tensor& values, const SparseFilterGeometry& g,
                               int64_t chunk_channels, int64_t interleave) {
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  SortedTaps<scalar_t> sorted;
  sorted.values_tensor = values;
  // Each filter column's offset in elements of the layout; a group's input channels span
  // group_block elements.
  std::vector<int64_t> column_offset = g.column_offsets();
  for (int64_t& offset : column_offset) offset *= interleave;
  const TapLayout layout{column_offset.data(),
                         g.in_channels_per_group() * g.channel_block() * interleave,
                         g.out_channels_per_group()};
  auto walk = [&](const int64_t* cols, bool& in_order) {
    return std::make_shared<TapPlan>(
        plan_taps(rp, cols, col_idx.size(0), g, chunk_channels, layout, in_order));
  };
  // The walk over the pattern as it is: kept with a trusted pattern where its columns are
  // sorted, else the sorting below starts from it.
  std::shared_ptr<const TapPlan> plan;
  bool in_order = false;
  if (const RegroupedPattern* kept = trusted_pattern(row_ptr, col_idx)) {
    // Everything the walk reads besides the pattern: the chunks, the groups, the layout.
    std::vector<int64_t> key = {int64_t(PlanType::kSortedTaps), chunk_channels,
                                layout.group_block,              layout.out_channels_per_group,
                                g.out_channels,                  g.kernel_h * g.kernel_w};
    append_layout_key(key, g, column_offset, interleave);
    sorted.plan = kept->plans->get<TapPlan>(key, [&] {
      // Not kept where the columns are not sorted (a hand-made CSR; regroup_pattern keeps
      // each forward row's order, so its unsorted rows give unsorted rows): sorted below.
      plan = walk(col_idx.data_ptr<int64_t>(), in_order);
      return in_order ? plan : nullptr;
    });
    if (sorted.plan != nullptr) {
      sorted.chunks = sorted.plan->chunks;
      sorted.values = values.data_ptr<scalar_t>();
      return sorted;
    }
  }
  if (plan == nullptr) plan = walk(col_idx.data_ptr<int64_t>(), in_order);
  if (!in_order) {
    const int64_t* ci = col_idx.data_ptr<int64_t>();
    std::vector<int64_t> order(col_idx.size(0));
    std::iota(order.begin(), order.end(), 0);
    for (int64_t oc = 0; oc < g.out_channels; ++oc) {
      std::stable_sort(order.begin() + rp[oc], order.begin() + rp[oc + 1],
                       [&](int64_t x, int64_t y) { return ci[x] < ci[y]; });
    }
    const at::Tensor index = at::tensor(order, col_idx.options());
    const at::Tensor sorted_cols = col_idx.index_select(0, index);
    sorted.values_tensor = values.index_select(0, index);
    plan = walk(sorted_cols.data_ptr<int64_t>(), in_order);
  }
  sorted.plan = std::move(plan);
  sorted.chunks = sorted.plan->chunks;
  sorted.values = sorted.values_tensor.template data_ptr<scalar_t>();
  return sorted;
}

}  // namespace torch_sparse_conv
