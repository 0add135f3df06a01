// The direct method's row path (toeplitz/cpu/direct/image.h picks it for images spread too
// widely for a box): the stored entries, sorted by pixel, are grouped by input row, and only
// output rows within kH - 1 of an input row are visited, so the work never depends on the
// frame size. Each such row sums its contributions over its touched column span: in a dense
// buffer when the span is small next to the contributions, else by sorting (column, value)
// pairs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "csrc/toeplitz/cpu/direct/axpy_row.h"
#include "csrc/toeplitz/cpu/direct/compact_sums.h"
#include "csrc/toeplitz/cpu/direct/pixel_split.h"
#include "csrc/toeplitz/cpu/direct/scratch.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {
namespace toeplitz_direct {

// A row's span is summed in a dense buffer when it is at most this many times the number of
// contributions (plus a little), else by sorting (column, value) pairs. Sorting is the slower
// of the two until the span is far wider (measured on sparse_convolution's grid); the bound
// keeps the buffer proportional to the row's work.
constexpr int64_t kDenseSpanFactor = 8;
constexpr int64_t kDenseSpanSlack = 256;

// Sorts one image's entries by pixel (only if needed) and groups them by input row.
template <typename scalar_t>
void gather_image(const int64_t* col, const scalar_t* val, int64_t begin, int64_t end,
                  int64_t width, Scratch<scalar_t>& s) {
  const int64_t n = end - begin;
  s.pixel = col + begin;
  s.value = val + begin;
  if (!std::is_sorted(col + begin, col + end)) {
    s.order.resize(n);
    std::iota(s.order.begin(), s.order.end(), 0);
    std::stable_sort(s.order.begin(), s.order.end(),
                     [&](int64_t x, int64_t y) { return col[begin + x] < col[begin + y]; });
    s.sorted_pixel.resize(n);
    s.sorted_value.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      s.sorted_pixel[i] = col[begin + s.order[i]];
      s.sorted_value[i] = val[begin + s.order[i]];
    }
    s.pixel = s.sorted_pixel.data();
    s.value = s.sorted_value.data();
  }
  s.column.resize(n);
  s.group_row.clear();
  s.group_begin.clear();
  const PixelSplit split(width);
  for (int64_t i = 0; i < n; ++i) {
    const auto [row, column] = split(s.pixel[i]);
    s.column[i] = column;
    if (s.group_row.empty() || s.group_row.back() != row) {
      s.group_row.push_back(row);
      s.group_begin.push_back(i);
    }
  }
  s.group_begin.push_back(n);
}

// Output row r from the groups [lo, hi) (the input rows within reach): writes its entries,
// sorted, to cols / vals and returns how many.
template <typename Out, typename scalar_t>
int64_t convolve_output_row(int64_t r, int64_t lo, int64_t hi, const scalar_t* kernel,
                            const ToeplitzGeometry& g, Scratch<scalar_t>& s,
                            typename Out::index* cols, scalar_t* vals) {
  int64_t first_col = INT64_MAX, last_col = INT64_MIN, contributions = 0;
  for (int64_t gi = lo; gi < hi; ++gi) {
    first_col = std::min(first_col, s.column[s.group_begin[gi]]);
    last_col = std::max(last_col, s.column[s.group_begin[gi + 1] - 1]);
    contributions += (s.group_begin[gi + 1] - s.group_begin[gi]) * g.kernel_w;
  }
  const int64_t cmin = std::max<int64_t>(0, first_col - g.offset_w);
  const int64_t cmax = std::min<int64_t>(g.out_w - 1, last_col + g.kernel_w - 1 - g.offset_w);
  if (cmin > cmax) return 0;
  const int64_t span = cmax - cmin + 1;
  const int64_t row_base = r * g.out_w;
  const bool dense = span <= kDenseSpanFactor * contributions + kDenseSpanSlack;
  if (dense) {
    // Each by its own size: the box paths size acc and touched independently.
    if (static_cast<int64_t>(s.acc.size()) < span) s.acc.resize(span);
    if (static_cast<int64_t>(s.touched.size()) < span) s.touched.resize(span);
    std::fill(s.acc.begin(), s.acc.begin() + span, scalar_t(0));
    if (!Out::drop_zeros) std::fill(s.touched.begin(), s.touched.begin() + span, 0);
  } else {
    s.pairs.clear();
  }
  for (int64_t gi = lo; gi < hi; ++gi) {
    const scalar_t* krow = kernel + (r + g.offset_h - s.group_row[gi]) * g.kernel_w;
    for (int64_t i = s.group_begin[gi]; i < s.group_begin[gi + 1]; ++i) {
      const int64_t c0 = s.column[i] - g.offset_w;  // output column of kernel column 0
      const int64_t t_lo = std::max<int64_t>(0, cmin - c0);
      const int64_t t_hi = std::min<int64_t>(g.kernel_w, cmax + 1 - c0);
      const scalar_t v = s.value[i];
      if (dense) {
        scalar_t* a = s.acc.data() + (c0 - cmin);
        if (t_lo < t_hi) axpy_row(a + t_lo, krow + t_lo, v, t_hi - t_lo);
        if (t_lo < t_hi && !Out::drop_zeros) {  // dropping zeros needs no flags
          std::fill(s.touched.begin() + (c0 - cmin + t_lo), s.touched.begin() + (c0 - cmin + t_hi),
                    1);
        }
      } else {
        for (int64_t t = t_lo; t < t_hi; ++t) {
          s.pairs.emplace_back(c0 + t, v * krow[t]);
        }
      }
    }
  }
  int64_t count = 0;
  if (dense) {
    if (Out::drop_zeros) return compact_nonzeros(s.acc.data(), span, row_base + cmin, cols, vals);
    return compact_flagged(s.acc.data(), s.touched.data(), span, row_base + cmin, cols, vals);
  }
  std::sort(s.pairs.begin(), s.pairs.end(),
            [](const auto& x, const auto& y) { return x.first < y.first; });
  for (size_t i = 0; i < s.pairs.size();) {
    const int64_t c = s.pairs[i].first;
    scalar_t sum = 0;
    for (; i < s.pairs.size() && s.pairs[i].first == c; ++i) sum += s.pairs[i].second;
    cols[count] = static_cast<typename Out::index>(row_base + c);
    vals[count] = sum;
    count += Out::keeps(sum);
  }
  return count;
}

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
