#include "csrc/sparse_filter/pattern.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "csrc/common/output_buffer_cache.h"
#include "csrc/sparse_filter/checks.h"
#include "csrc/sparse_filter/pattern_cache.h"

namespace torch_sparse_conv {

std::vector<std::vector<int64_t>> kept_columns(const at::Tensor& row_ptr,
                                               const at::Tensor& col_idx,
                                               const SparseFilterGeometry& g) {
  const at::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const int64_t* r = rp.data_ptr<int64_t>();
  const int64_t* c = ci.data_ptr<int64_t>();
  const int64_t taps = g.taps_per_filter();
  const int64_t ocpg = g.out_channels_per_group();
  std::vector<char> seen(taps);
  std::vector<std::vector<int64_t>> kept(g.groups);
  for (int64_t group = 0; group < g.groups; ++group) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t k = r[group * ocpg]; k < r[(group + 1) * ocpg]; ++k) seen[c[k]] = 1;
    for (int64_t col = 0; col < taps; ++col) {
      if (seen[col]) kept[group].push_back(col);
    }
  }
  return kept;
}

double union_fraction(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                      const SparseFilterGeometry& g, double stop_above) {
  const int64_t* r = row_ptr.data_ptr<int64_t>();
  const int64_t* c = col_idx.data_ptr<int64_t>();
  const int64_t taps = g.taps_per_filter();
  const int64_t ocpg = g.out_channels_per_group();
  const double pairs = double(g.groups * taps);
  if (pairs == 0) return 0.0;
  std::vector<char> seen(taps);
  int64_t union_size = 0;
  for (int64_t group = 0; group < g.groups; ++group) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t oc = group * ocpg; oc < (group + 1) * ocpg; ++oc) {
      for (int64_t k = r[oc]; k < r[oc + 1]; ++k) {
        union_size += !seen[c[k]];
        seen[c[k]] = 1;
      }
      // Checked per channel: no branch per tap.
      if (double(union_size) > stop_above * pairs) return double(union_size) / pairs;
    }
  }
  return double(union_size) / pairs;
}

at::Tensor dense_weight_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                            const at::Tensor& values, at::IntArrayRef weight_size) {
  const int64_t rows = weight_size[0];
  const int64_t cols = weight_size[1] * weight_size[2] * weight_size[3];
  // Memory reused from earlier calls' freed weights (csrc/common/output_buffer_cache.h): a fresh
  // one of megabytes costs a page fault per 4 KiB, measured 6 ms a call on 512x512x3x3 (five times
  // the 1.4 ms convolution at batch 1), where the unpacking itself takes 0.15 ms.
  at::Tensor dense = empty_output(rows * cols, values.scalar_type()).view(weight_size);
  const int64_t* r = row_ptr.data_ptr<int64_t>();
  const int64_t* c = col_idx.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "dense_weight_cpu", [&] {
    const scalar_t* v = values.data_ptr<scalar_t>();
    scalar_t* out = dense.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        scalar_t* w = out + row * cols;
        std::fill(w, w + cols, scalar_t(0));
        for (int64_t k = r[row]; k < r[row + 1]; ++k) w[c[k]] += v[k];
      }
    });
  });
  return dense;
}

at::Tensor output_without_taps(const at::Tensor& input, const c10::optional<at::Tensor>& bias,
                               const SparseFilterGeometry& g) {
  at::Tensor output = at::zeros({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (bias.has_value() && bias->defined()) output.add_(bias->view({1, -1, 1, 1}));
  return output;
}

SparseFilterGeometry check_sparse_filter_backward_args(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const SparseFilterGeometry g =
      check_sparse_filter_conv2d_args(input, row_ptr, col_idx, values, weight_size,
                                      c10::nullopt, stride, padding, dilation, groups);
  check_csr_contents(row_ptr, col_idx, g.taps_per_filter());
  check_grad_output(grad_output, input, g);
  return g;
}

namespace {

// The kept taps regrouped into a CSR over blocks x C_in rows: the tap of output channel oc at
// filter column col goes to row block_of[col] * C_in + (the first input channel of oc's group)
// + col / (kH kW), at column (oc mod C_out/groups) * out_kernel + column_of[col], and its
// source is its index k in the forward's CSR. A counting sort in parallel: each part of the
// output channels counts its taps per row, then writes them from its own offsets, so every
// row keeps output-channel order whatever the threads.
// Each channel's taps go backwards: the flips reverse their order inside a channel pair, so
// a row sorted by column gives rows sorted by column (the forward then need not sort them).
// The sort's stores scatter over every row of memory just allocated (512 runs on 512x7x7),
// each its own stream, and missed the caches in turn: the writing loop prefetches each row's
// next line, and reads through restrict-qualified locals (with plain pointers the compiler
// reloaded the row bounds and spilled pointers after every store). 512x7x7 at 10 %, batch
// 8: the transposed filter took 2.4-2.6 ms of the input's gradient at 1 thread (1.3-1.5 at 2
// threads), then 1.2-1.6 (0.8-1.3); it is now kept between calls (pattern_cache.h). Sorting
// in two passes, into bundles of rows first, and giving each thread a share of the rows (all
// taps read, its rows written) were both slower.
RegroupedPattern regroup_pattern(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                 const SparseFilterGeometry& g,
                                 const std::vector<int64_t>& block_of,
                                 const std::vector<int64_t>& column_of, int64_t blocks,
                                 int64_t out_kernel) {
  const int64_t* __restrict r = row_ptr.data_ptr<int64_t>();
  const int64_t* __restrict c = col_idx.data_ptr<int64_t>();
  const int64_t nnz = col_idx.size(0);
  const int64_t kernel = g.kernel_h * g.kernel_w;
  const int64_t ocpg = g.out_channels_per_group(), icpg = g.in_channels_per_group();
  const int64_t rows = blocks * g.in_channels;
  // Per filter column, its row apart from the group's first input channel.
  std::vector<int64_t> row_of_column(g.taps_per_filter());
  for (int64_t col = 0; col < g.taps_per_filter(); ++col) {
    row_of_column[col] = block_of[col] * g.in_channels + col / kernel;
  }
  const int64_t* __restrict row_of = row_of_column.data();
  const int64_t* __restrict flipped_column = column_of.data();
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(),
                                                               g.out_channels / 16));
  const int64_t per_part = (g.out_channels + parts - 1) / parts;
  std::vector<int64_t> offset(parts * rows, 0);  // offset[p * rows + row]
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      int64_t* __restrict count = offset.data() + p * rows;
      const int64_t last_oc = std::min(g.out_channels, (p + 1) * per_part);
      for (int64_t oc = p * per_part; oc < last_oc; ++oc) {
        const int64_t first_channel = oc / ocpg * icpg, k_end = r[oc + 1];
        for (int64_t k = r[oc]; k < k_end; ++k) ++count[first_channel + row_of[c[k]]];
      }
    }
  });
  RegroupedPattern t;
  t.row_ptr = at::empty({rows + 1}, row_ptr.options());
  int64_t* start = t.row_ptr.data_ptr<int64_t>();
  int64_t running = 0;
  for (int64_t row = 0; row < rows; ++row) {
    start[row] = running;
    for (int64_t p = 0; p < parts; ++p) {
      const int64_t count = offset[p * rows + row];
      offset[p * rows + row] = running;
      running += count;
    }
  }
  start[rows] = running;
  t.col_idx = at::empty({nnz}, col_idx.options());
  t.source = at::empty({nnz}, col_idx.options());
  int64_t* __restrict tc = t.col_idx.data_ptr<int64_t>();
  int64_t* __restrict ts = t.source.data_ptr<int64_t>();
  constexpr int64_t kAhead = 64 / sizeof(int64_t);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      int64_t* __restrict fill = offset.data() + p * rows;
      const int64_t last_oc = std::min(g.out_channels, (p + 1) * per_part);
      for (int64_t oc = p * per_part; oc < last_oc; ++oc) {
        const int64_t first_channel = oc / ocpg * icpg, first_column = oc % ocpg * out_kernel;
        const int64_t k_begin = r[oc];
        for (int64_t k = r[oc + 1] - 1; k >= k_begin; --k) {
          const int64_t col = c[k];
          const int64_t slot = fill[first_channel + row_of[col]]++;
          // The row's next cache line, for writing: each row's run is its own stream,
          // too many for the hardware prefetcher, into memory just allocated.
          __builtin_prefetch(tc + slot + kAhead, 1, 3);
          __builtin_prefetch(ts + slot + kAhead, 1, 3);
          tc[slot] = first_column + flipped_column[col];
          ts[slot] = k;
        }
      }
    }
  });
  return t;
}

// The regrouped filter of `values`: the kept (or built) pattern, each tap's value gathered
// from its source.
TransposedFilter regrouped_filter(const RegroupedPattern& pattern, const at::Tensor& values) {
  TransposedFilter t;
  t.row_ptr = pattern.row_ptr;
  t.col_idx = pattern.col_idx;
  const int64_t nnz = pattern.source.size(0);
  t.values = empty_output(nnz, values.scalar_type());
  const int64_t* __restrict source = pattern.source.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "regrouped_filter", [&] {
    const scalar_t* __restrict v = values.data_ptr<scalar_t>();
    scalar_t* __restrict tv = t.values.data_ptr<scalar_t>();
    at::parallel_for(0, nnz, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) tv[j] = v[source[j]];
    });
  });
  return t;
}

// What a regrouping of g's filter depends on besides row_ptr and col_idx.
RegroupKey regroup_key(int64_t kind, const SparseFilterGeometry& g) {
  return {kind,         g.in_channels, g.out_channels, g.groups,     g.kernel_h,
          g.kernel_w,   g.stride_h,    g.stride_w,     g.dilation_h, g.dilation_w};
}
constexpr int64_t kTransposed = 0, kPhases = 1, kChecked = 2;

}  // namespace

std::shared_ptr<const RegroupedPattern> checked_pattern(const at::Tensor& row_ptr,
                                                        const at::Tensor& col_idx,
                                                        const SparseFilterGeometry& g) {
  // What the check depends on: the rows (output channels) and the columns' bound (the
  // channels per group and the kernel); not the stride, padding or dilation.
  const RegroupKey key = {kChecked, g.in_channels, g.out_channels, g.groups, g.kernel_h,
                          g.kernel_w, 0, 0, 0, 0};
  return regrouped_pattern(
      key, row_ptr, col_idx,
      [&](const at::Tensor& rp, const at::Tensor& ci) {
        check_csr_contents(rp, ci, g.taps_per_filter());
        RegroupedPattern same;
        same.row_ptr = rp;
        same.col_idx = ci;
        return same;
      },
      PlanRoom::kForward);
}

TransposedFilter transposed_filter(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                   const at::Tensor& values, const SparseFilterGeometry& g) {
  const int64_t kernel = g.kernel_h * g.kernel_w;
  // The per-column tables only where the pattern is built, not on every step that finds it
  // kept (two divisions a column took about 1 % of a training step of 512x7x7 at 95 %).
  const auto pattern = regrouped_pattern(
      regroup_key(kTransposed, g), row_ptr, col_idx,
      [&](const at::Tensor& rp, const at::Tensor& ci) {
        // Per filter column: its tap flipped in both dimensions.
        std::vector<int64_t> flipped_of(g.taps_per_filter());
        for (int64_t col = 0; col < g.taps_per_filter(); ++col) {
          const int64_t tap = col % kernel;
          flipped_of[col] = (g.kernel_h - 1 - tap / g.kernel_w) * g.kernel_w +
                            (g.kernel_w - 1 - tap % g.kernel_w);
        }
        return regroup_pattern(rp, ci, g, std::vector<int64_t>(g.taps_per_filter(), 0),
                               flipped_of, 1, kernel);
      },
      PlanRoom::kBackward);
  TransposedFilter t = regrouped_filter(*pattern, values);
  t.weight_size = {g.in_channels, g.out_channels_per_group(), g.kernel_h, g.kernel_w};
  t.pattern = pattern;
  return t;
}

std::array<int64_t, 2> transposed_padding(const SparseFilterGeometry& g) {
  return {g.dilation_h * (g.kernel_h - 1) - g.pad_h, g.dilation_w * (g.kernel_w - 1) - g.pad_w};
}

std::array<int64_t, 2> phase_padding(const SparseFilterGeometry& g) {
  return {g.dilation_h * (g.kernel_h - 1) / g.stride_h,
          g.dilation_w * (g.kernel_w - 1) / g.stride_w};
}

std::vector<TransposedFilter> phase_filters(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                            const at::Tensor& values,
                                            const SparseFilterGeometry& g) {
  const int64_t kernel = g.kernel_h * g.kernel_w;
  const std::array<int64_t, 2> shift = phase_padding(g);
  const int64_t rows = shift[0] + 1, cols = shift[1] + 1;  // each phase filter's kernel
  // The phases the kernel's taps read (a stride far above the kernel leaves most empty).
  std::vector<int64_t> phase_of_tap(kernel);
  for (int64_t tap = 0; tap < kernel; ++tap) {
    const int64_t row = tap / g.kernel_w * g.dilation_h, column = tap % g.kernel_w * g.dilation_w;
    phase_of_tap[tap] = row % g.stride_h * g.stride_w + column % g.stride_w;
  }
  std::vector<int64_t> phase_ids(phase_of_tap);
  std::sort(phase_ids.begin(), phase_ids.end());
  phase_ids.erase(std::unique(phase_ids.begin(), phase_ids.end()), phase_ids.end());
  const int64_t phases = static_cast<int64_t>(phase_ids.size());
  // One CSR over (phase, input channel) rows; each phase's filter is its run of rows.
  const auto pattern = regrouped_pattern(
      regroup_key(kPhases, g), row_ptr, col_idx,
      [&](const at::Tensor& rp, const at::Tensor& ci) {
        // Per filter column: its phase (an index into phase_ids) and its (flipped) column in
        // the phase filter; only where the pattern is built (as transposed_filter's).
        std::vector<int64_t> phase_of(g.taps_per_filter()), column_of(g.taps_per_filter());
        for (int64_t col = 0; col < g.taps_per_filter(); ++col) {
          const int64_t tap = col % kernel;
          const int64_t row = tap / g.kernel_w * g.dilation_h;
          const int64_t column = tap % g.kernel_w * g.dilation_w;
          phase_of[col] =
              std::lower_bound(phase_ids.begin(), phase_ids.end(), phase_of_tap[tap]) -
              phase_ids.begin();
          column_of[col] = (shift[0] - row / g.stride_h) * cols + (shift[1] - column / g.stride_w);
        }
        return regroup_pattern(rp, ci, g, phase_of, column_of, phases, rows * cols);
      },
      PlanRoom::kNone);  // its filters are narrowed views, trusted for one call only
  const TransposedFilter all = regrouped_filter(*pattern, values);
  const int64_t* start = all.row_ptr.data_ptr<int64_t>();
  std::vector<TransposedFilter> filters(phases);
  for (int64_t phase = 0; phase < phases; ++phase) {
    TransposedFilter& f = filters[phase];
    const int64_t first = start[phase * g.in_channels];
    const int64_t taps = start[(phase + 1) * g.in_channels] - first;
    f.row_ptr = all.row_ptr.narrow(0, phase * g.in_channels, g.in_channels + 1) - first;
    f.col_idx = all.col_idx.narrow(0, first, taps);
    f.values = all.values.narrow(0, first, taps);
    f.weight_size = {g.in_channels, g.out_channels_per_group(), rows, cols};
    f.phase = phase_ids[phase];
  }
  return filters;
}

FilterTaps make_filter_taps(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                            const SparseFilterGeometry& g) {
  auto rp = row_ptr.contiguous();
  auto ci = col_idx.contiguous();
  const int64_t* r = rp.data_ptr<int64_t>();
  const int64_t* c = ci.data_ptr<int64_t>();
  const int64_t nnz = col_idx.size(0);
  const int64_t group_block = g.in_channels_per_group() * g.channel_block();
  const std::vector<int64_t> column_offset = g.column_offsets();
  FilterTaps taps;
  taps.out_channel.reset(new int64_t[nnz]);
  taps.input_offset.reset(new int64_t[nnz]);
  int64_t* out_channel = taps.out_channel.get();
  int64_t* input_offset = taps.input_offset.get();
  // Each output channel fills only its own range of the arrays.
  at::parallel_for(0, g.out_channels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      const int64_t group = oc / g.out_channels_per_group();
      const int64_t group_offset = group * group_block;
      for (int64_t k = r[oc]; k < r[oc + 1]; ++k) {
        input_offset[k] = group_offset + column_offset[c[k]];
      }
      std::fill(out_channel + r[oc], out_channel + r[oc + 1], oc);
    }
  });
  return taps;
}

}  // namespace torch_sparse_conv
