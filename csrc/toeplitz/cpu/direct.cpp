// toeplitz_conv2d forward on CPU: method 'direct' here ('precomputed' in csrc/toeplitz/cpu/spgemm.cpp).
//
// Per image (in parallel), one of two ways, both with memory bounded by the image's own work:
// * its output bounding box is small next to its contributions (small frames, ROIs): summed
//   over the box and emitted in raster order. Entries that fill the box densely go into a
//   dense input tile correlated with the kernel at full vector width; otherwise the entries
//   are scattered into sums over the box, with flags in bytes cleared per image when the
//   products cover the box, else in bits (sums and bits stay zero between images, so a
//   sparsely covered box costs a bit a pixel); zero-dropping outputs need no flags at all;
// * otherwise the stored entries, sorted by pixel, are grouped by input row and only output
//   rows within kH - 1 of an input row are visited, in increasing order, so the work never
//   depends on the frame size. Each such row sums the contributions of the (at most kH)
//   input rows that reach it over its touched column span: in a dense buffer when the span
//   is small next to the contributions, else by sorting (column, value) pairs.
// A count pass (footprints only, no arithmetic), a prefix sum and a fill pass write the
// exact-size CSR with no intermediate buffer.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "csrc/toeplitz/cpu/axpy_row.h"
#include "csrc/toeplitz/cpu/compact_sums.h"
#include "csrc/toeplitz/cpu/dense_tile.h"
#include "csrc/common/output_buffer_cache.h"
#include "csrc/toeplitz/geometry.h"
#include "csrc/toeplitz/cpu/direct.h"
#include "csrc/toeplitz/cpu/precomputed.h"

namespace torch_sparse_conv {
namespace {

// A row's span is summed in a dense buffer when it is at most this many times the number of
// contributions (plus a little), else by sorting (column, value) pairs. Sorting is the slower
// of the two until the span is far wider (measured on sparse_convolution's grid); the bound
// keeps the buffer proportional to the row's work.
constexpr int64_t kDenseSpanFactor = 8;
constexpr int64_t kDenseSpanSlack = 256;
// An image whose output bounding box is at most this many times its products (plus a
// little) is summed over the box, as small ROIs and small frames are; wider spread images go
// row by row, so memory stays bounded by the work. Boxes the products cover sparsely cost one
// bit a pixel (convolve_sparse_box), which is why the bound can be this loose; measured on
// sparse_convolution's grid (1 thread), 16 and 4096 beat 4 and 256 on its density-0.001
// cells by 1.3-1.8x and match them elsewhere.
constexpr int64_t kBoxFactor = 16;
constexpr int64_t kBoxSlack = 4096;
// Where the fill pass writes: the column index type, and whether outputs that are exactly
// zero are dropped (scipy's convention) or kept (the operator's: every covered pixel).
template <typename index_t, bool kDropZeros>
struct Sink {
  using index = index_t;
  static constexpr bool drop_zeros = kDropZeros;
  template <typename scalar_t>
  static int64_t keeps(scalar_t value) {
    return kDropZeros ? value != scalar_t(0) : 1;
  }
};
using KeepAll = Sink<int64_t, false>;

template <typename scalar_t>
struct Scratch {
  std::vector<int64_t> order, sorted_pixel;
  std::vector<scalar_t> sorted_value;
  std::vector<int64_t> column;                  // input column of each entry
  std::vector<int64_t> group_row, group_begin;  // input row of each group, first entry
  std::vector<scalar_t> acc;
  std::vector<char> touched;
  std::vector<char> lines;  // a dense box's footprints, one line per input row
  std::vector<std::pair<int64_t, scalar_t>> pairs;
  // The box path's flags (one bit a pixel) and sums, all zero between images: each image
  // clears what it touched while emitting it, so it never pays for the box's untouched area
  // beyond one bit a pixel.
  std::vector<uint64_t> box_bits;
  std::vector<scalar_t> box_acc;
  // The dense-tile path's input tile, flipped kernel and one output row. The flipped kernel
  // is set once per fill pass (prepare_tile_kernel), which also says whether the path may be
  // taken at all.
  std::vector<scalar_t> tile, flipped_kernel, tile_row;
  bool tile_kernel_ready = false;
  const int64_t* pixel = nullptr;  // the image's entries sorted by pixel
  const scalar_t* value = nullptr;

  // The kernel flipped in both directions for correlate_row; the tile needs it finite, since
  // 0 * inf would turn pixels no entry reaches into NaN.
  void prepare_tile_kernel(const scalar_t* kernel, int64_t kh, int64_t kw) {
    tile_kernel_ready = std::all_of(kernel, kernel + kh * kw,
                                    [](scalar_t w) { return std::isfinite(w); });
    flipped_kernel.resize(kh * kw);
    for (int64_t u = 0; u < kh; ++u) {
      for (int64_t t = 0; t < kw; ++t) {
        flipped_kernel[u * kw + t] = kernel[(kh - 1 - u) * kw + (kw - 1 - t)];
      }
    }
  }

  // Frees the buffers that grew past max_bytes (the rest stay for the next call; freed
  // box buffers keep the all-zero rule trivially).
  void release_large(size_t max_bytes) {
    auto release = [max_bytes](auto& v) {
      if (v.capacity() * sizeof(v[0]) > max_bytes) std::decay_t<decltype(v)>().swap(v);
    };
    release(order), release(sorted_pixel), release(sorted_value), release(column);
    release(group_row), release(group_begin), release(acc), release(touched), release(lines);
    release(pairs), release(box_bits), release(box_acc), release(tile), release(tile_row);
    release(flipped_kernel);
  }
};

// One scratch per thread and dtype, shared by every pass (all of which leave the box
// buffers zero).
template <typename scalar_t>
Scratch<scalar_t>& thread_scratch() {
  static thread_local Scratch<scalar_t> scratch;
  return scratch;
}

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
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = s.pixel[i] / width;
    s.column[i] = s.pixel[i] - row * width;
    if (s.group_row.empty() || s.group_row.back() != row) {
      s.group_row.push_back(row);
      s.group_begin.push_back(i);
    }
  }
  s.group_begin.push_back(n);
}

// Output row r from the groups [lo, hi) (the input rows within reach). The count pass
// (kFill false) only returns how many entries the row has; the fill pass also writes them,
// sorted, to cols / vals.
template <bool kFill, typename Out, typename scalar_t>
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
    if (kFill) std::fill(s.acc.begin(), s.acc.begin() + span, scalar_t(0));
    if (!(kFill && Out::drop_zeros)) std::fill(s.touched.begin(), s.touched.begin() + span, 0);
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
        if (kFill) {
          scalar_t* a = s.acc.data() + (c0 - cmin);
          if (t_lo < t_hi) axpy_row(a + t_lo, krow + t_lo, v, t_hi - t_lo);
        }
        if (t_lo < t_hi && !(kFill && Out::drop_zeros)) {  // dropping zeros needs no flags
          std::fill(s.touched.begin() + (c0 - cmin + t_lo), s.touched.begin() + (c0 - cmin + t_hi),
                    1);
        }
      } else {
        for (int64_t t = t_lo; t < t_hi; ++t) {
          s.pairs.emplace_back(c0 + t, kFill ? v * krow[t] : scalar_t(0));
        }
      }
    }
  }
  int64_t count = 0;
  if (dense) {
    if (!kFill) return std::count(s.touched.begin(), s.touched.begin() + span, 1);
    if (Out::drop_zeros) return compact_nonzeros(s.acc.data(), span, row_base + cmin, cols, vals);
    return compact_flagged(s.acc.data(), s.touched.data(), span, row_base + cmin, cols, vals);
  }
  std::sort(s.pairs.begin(), s.pairs.end(),
            [](const auto& x, const auto& y) { return x.first < y.first; });
  for (size_t i = 0; i < s.pairs.size();) {
    const int64_t c = s.pairs[i].first;
    scalar_t sum = 0;
    for (; i < s.pairs.size() && s.pairs[i].first == c; ++i) sum += s.pairs[i].second;
    if (kFill) {
      cols[count] = static_cast<typename Out::index>(row_base + c);
      vals[count] = sum;
      count += Out::keeps(sum);
    } else {
      ++count;
    }
  }
  return count;
}

// Sets bits [from, to) of a bit array.
inline void set_bits(uint64_t* bits, int64_t from, int64_t to) {
  if (from >= to) return;
  const int64_t first = from >> 6, last = (to - 1) >> 6;
  const uint64_t head = ~uint64_t(0) << (from & 63);
  const uint64_t tail = ~uint64_t(0) >> (63 - ((to - 1) & 63));
  if (first == last) {
    bits[first] |= head & tail;
    return;
  }
  bits[first] |= head;
  for (int64_t w = first + 1; w < last; ++w) bits[w] = ~uint64_t(0);
  bits[last] |= tail;
}

// An image's output bounding box: rows [r0, r1], columns [c0, c1].
struct Box {
  int64_t r0, r1, c0, c1, width, area;
  int64_t stride;  // distance between box rows in the sums and flags (width, or more)
  int64_t a0, a1;  // the image's first and last input rows
};

// Adds the products of the image's entries into acc (laid out over the box; fill pass only)
// and calls mark(from, to) for every run of box pixels they touch.
template <bool kFill, typename scalar_t, typename Mark>
void scatter_into_box(const int64_t* col, const scalar_t* val, int64_t begin, int64_t end,
                      const scalar_t* kernel, const ToeplitzGeometry& g, const Box& box,
                      scalar_t* acc, Mark mark) {
  for (int64_t e = begin; e < end; ++e) {
    const int64_t a = col[e] / g.in_w, b = col[e] - a * g.in_w;
    const int64_t top = a - g.offset_h, left = b - g.offset_w;  // output pixel of tap (0, 0)
    const int64_t u_lo = std::max<int64_t>(0, box.r0 - top);
    const int64_t u_hi = std::min<int64_t>(g.kernel_h, box.r1 + 1 - top);
    const int64_t t_lo = std::max<int64_t>(0, box.c0 - left);
    const int64_t t_hi = std::min<int64_t>(g.kernel_w, box.c1 + 1 - left);
    if (t_lo >= t_hi) continue;
    for (int64_t u = u_lo; u < u_hi; ++u) {
      const int64_t base = (top + u - box.r0) * box.stride + (left - box.c0);
      mark(base + t_lo, base + t_hi);
      if (kFill) {
        const scalar_t v = val[e];
        const scalar_t* krow = kernel + u * g.kernel_w;
        scalar_t* row = acc + base;
        axpy_row(row + t_lo, krow + t_lo, v, t_hi - t_lo);
      }
    }
  }
}

// Touched flags of a densely covered box from the entries' footprints rather than from every
// product: each entry marks the kW box columns it reaches on its input row's line once, and
// output row r's flags are the OR of the lines of the (at most kH) input rows that reach it,
// a few vector passes per row.
template <typename scalar_t>
void mark_lines(const int64_t* col, int64_t begin, int64_t end, const ToeplitzGeometry& g,
                const Box& box, Scratch<scalar_t>& s) {
  s.lines.assign((box.a1 - box.a0 + 1) * box.width, 0);
  if (static_cast<int64_t>(s.touched.size()) < box.width) s.touched.resize(box.width);
  for (int64_t e = begin; e < end; ++e) {
    const int64_t a = col[e] / g.in_w, b = col[e] - a * g.in_w;
    const int64_t lo = std::max<int64_t>(b - g.offset_w, box.c0);
    const int64_t hi = std::min<int64_t>(b - g.offset_w + g.kernel_w, box.c1 + 1);
    char* line = s.lines.data() + (a - box.a0) * box.width;
    for (int64_t c = lo; c < hi; ++c) line[c - box.c0] = 1;
  }
}

// Output row r's touched flags (after mark_lines), box.width of them, in s.touched.
template <typename scalar_t>
const char* touched_in_row(int64_t r, const ToeplitzGeometry& g, const Box& box,
                           Scratch<scalar_t>& s) {
  // Input rows a reach output row r when r + offset_h - kH < a <= r + offset_h.
  const int64_t a_lo = std::max<int64_t>(box.a0, r + g.offset_h - g.kernel_h + 1);
  const int64_t a_hi = std::min<int64_t>(box.a1, r + g.offset_h);
  char* row = s.touched.data();
  std::fill(row, row + box.width, 0);
  for (int64_t a = a_lo; a <= a_hi; ++a) {
    const char* line = s.lines.data() + (a - box.a0) * box.width;
    for (int64_t j = 0; j < box.width; ++j) row[j] |= line[j];
  }
  return row;
}

// Whether a dense box's flags come cheaper from footprints (mark_lines, touched_in_row: a
// mark per entry, then kH vector ORs per box row) than from a mark per entry and kernel row.
// Measured on sparse_convolution's grid: footprints win where entries are dense along rows
// (density 0.1), per-row marks where a few entries fall in a large box.
inline bool flags_by_lines(int64_t entries, const Box& box) {
  return 2 * entries > (box.r1 - box.r0 + 1) * (box.width / 32 + 2);
}

// A box the image covers densely (pass keeping every covered pixel): sums over the whole box,
// then a vectorized compaction of each box row keeping its touched pixels.
template <bool kFill, typename Out, typename scalar_t>
int64_t convolve_dense_box(const int64_t* col, const scalar_t* val, int64_t begin, int64_t end,
                           const scalar_t* kernel, const ToeplitzGeometry& g, const Box& box,
                           Scratch<scalar_t>& s, typename Out::index* cols, scalar_t* vals) {
  static_assert(!Out::drop_zeros, "outputs dropping zeros go through convolve_scanned_box");
  const bool by_lines = flags_by_lines(end - begin, box);
  if (!by_lines) s.touched.assign(box.area, 0);
  if (kFill) s.acc.assign(box.area, scalar_t(0));
  char* touched = s.touched.data();
  if (kFill || !by_lines) {
    scatter_into_box<kFill>(col, val, begin, end, kernel, g, box, s.acc.data(),
                            [touched, by_lines](int64_t from, int64_t to) {
                              if (!by_lines) std::fill(touched + from, touched + to, 1);
                            });
  }
  if (by_lines) mark_lines(col, begin, end, g, box, s);
  int64_t count = 0;
  for (int64_t r = box.r0, i = 0; r <= box.r1; ++r, i += box.width) {
    const char* flags = by_lines ? touched_in_row(r, g, box, s) : s.touched.data() + i;
    if (!kFill) {
      for (int64_t j = 0; j < box.width; ++j) count += flags[j];
      continue;
    }
    count += compact_flagged(s.acc.data() + i, flags, box.width, r * g.out_w + box.c0,
                             cols + count, vals + count);
  }
  return count;
}

// A box whose exact zeros are dropped (scipy's convention), covered densely enough that
// scanning every box pixel costs less than flags for the touched ones: untouched pixels sum
// to exactly zero, so no flags are needed at all. The sums stay all zero between images (the
// sparse box's buffer and rule): each row is compacted eight sums at a time and cleared on
// the way, with no pass to zero the box first.
template <typename Out, typename scalar_t>
int64_t convolve_scanned_box(const int64_t* col, const scalar_t* val, int64_t begin,
                             int64_t end, const scalar_t* kernel, const ToeplitzGeometry& g,
                             const Box& box, Scratch<scalar_t>& s, typename Out::index* cols,
                             scalar_t* vals) {
  // Grown with zeros; already zero below the old size.
  if (static_cast<int64_t>(s.box_acc.size()) < box.area) s.box_acc.resize(box.area, 0);
  scalar_t* acc = s.box_acc.data();
  scatter_into_box<true>(col, val, begin, end, kernel, g, box, acc, [](int64_t, int64_t) {});
  int64_t count = 0;
  for (int64_t r = box.r0, i = 0; r <= box.r1; ++r, i += box.width) {
    count += compact_nonzeros_clearing(acc + i, box.width, r * g.out_w + box.c0, cols + count,
                                       vals + count);
  }
  return count;
}

// Whether an image is cheaper through the dense tile: its cost is a multiply-add per tap and
// box pixel (rows padded to whole blocks of `block` outputs), at full vector width; the
// scatter's is a few operations per entry and kernel row. Measured on 100x100 images (batch
// 50, float64, 1 thread; rows padded to 128), the tile wins above densities of about 0.07
// (3x3 kernels), 0.09 (5x5), 0.14 (11x11) and 0.22 (21x21): entries per padded box pixel
// above (kW + 6) / 160.
inline bool dense_tile_pays(int64_t entries, const Box& box, const ToeplitzGeometry& g,
                            int64_t block) {
  const int64_t padded_width = (box.width + block - 1) / block * block;
  const double padded_area = double(box.r1 - box.r0 + 1) * double(padded_width);
  return double(entries) * 160.0 >= padded_area * double(g.kernel_w + 6);
}

// A box the image's entries fill densely (dense frames, filled ROI masks): the entries go into
// a zero-padded dense tile of the input, and each output row is a correlation of the tile
// with the flipped kernel (correlate_row: whole vectors of outputs kept in registers over all
// taps). That is more multiply-adds than the products, but none of the scatter's
// read-modify-writes of overlapping sums, which stall on each other. Kept pixels are the
// nonzero sums, or (keeping every covered pixel) the entries' footprints. Needs the pass's
// flipped, finite kernel (Scratch::prepare_tile_kernel).
template <typename Out, typename scalar_t>
int64_t convolve_dense_tile(const int64_t* col, const scalar_t* val, int64_t begin, int64_t end,
                            const scalar_t* kernel, const ToeplitzGeometry& g, const Box& box,
                            Scratch<scalar_t>& s, typename Out::index* cols, scalar_t* vals) {
  const int64_t kh = g.kernel_h, kw = g.kernel_w, rows = box.r1 - box.r0 + 1;
  // Tile pixel (i, j) is input pixel (top + i, left + j): output row r0 + i reads tile rows
  // i .. i + kh - 1, and columns run kTileBlock past the last one read (correlate_row).
  const int64_t top = box.r0 + g.offset_h - (kh - 1), left = box.c0 + g.offset_w - (kw - 1);
  const int64_t tile_rows = rows + kh - 1;
  const int64_t stride = box.width + kw - 1 + kTileBlock<scalar_t>;
  s.tile.assign(tile_rows * stride, scalar_t(0));
  for (int64_t e = begin; e < end; ++e) {
    const int64_t a = col[e] / g.in_w, b = col[e] - a * g.in_w;
    const int64_t i = a - top, j = b - left;
    // Every entry of the box's image lies in the tile; the test only guards memory.
    if (i >= 0 && i < tile_rows && j >= 0 && j < stride) s.tile[i * stride + j] += val[e];
  }
  if (!Out::drop_zeros) mark_lines(col, begin, end, g, box, s);
  const int64_t blocks = (box.width + kTileBlock<scalar_t> - 1) / kTileBlock<scalar_t>;
  s.tile_row.resize(blocks * kTileBlock<scalar_t>);
  int64_t count = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t r = box.r0 + i, first = r * g.out_w + box.c0;
    correlate_row(s.tile.data() + i * stride, stride, s.flipped_kernel.data(), kh, kw,
                  box.width, s.tile_row.data());
    count += Out::drop_zeros
                 ? compact_nonzeros(s.tile_row.data(), box.width, first, cols + count,
                                    vals + count)
                 : compact_flagged(s.tile_row.data(), touched_in_row(r, g, box, s), box.width,
                                   first, cols + count, vals + count);
  }
  return count;
}

// A box the image covers sparsely: one bit a pixel and sums kept all zero between images
// (each image clears what it touched while emitting it), so the cost is the products, the
// touched pixels and one bit per box pixel, not a pass over the box's bytes.
template <bool kFill, typename Out, typename scalar_t>
int64_t convolve_sparse_box(const int64_t* col, const scalar_t* val, int64_t begin,
                            int64_t end, const scalar_t* kernel, const ToeplitzGeometry& g,
                            Box box, Scratch<scalar_t>& s, typename Out::index* cols,
                            scalar_t* vals) {
  // Rows start on 64-pixel boundaries, so each box row is whole words of flags.
  box.stride = (box.width + 63) & ~int64_t(63);
  const int64_t rows = box.r1 - box.r0 + 1, row_words = box.stride >> 6;
  const int64_t words = rows * row_words;
  // Grown with zeros; already zero below the old size.
  if (static_cast<int64_t>(s.box_bits.size()) < words) s.box_bits.resize(words, 0);
  if (kFill && static_cast<int64_t>(s.box_acc.size()) < rows * box.stride) {
    s.box_acc.resize(rows * box.stride, 0);
  }
  uint64_t* bits = s.box_bits.data();
  scalar_t* acc = s.box_acc.data();
  scatter_into_box<kFill>(col, val, begin, end, kernel, g, box, acc,
                          [bits](int64_t from, int64_t to) { set_bits(bits, from, to); });
  int64_t count = 0;
  if (!kFill) {
    for (int64_t w = 0; w < words; ++w) {
      count += __builtin_popcountll(bits[w]);
      bits[w] = 0;
    }
    return count;
  }
  // Marked pixels in raster order, eight at a time, skipping empty words; the bits and sums
  // read are cleared on the way.
  return compact_marked(acc, bits, rows, row_words, g.out_w, Out::drop_zeros,
                        box.r0 * g.out_w + box.c0, cols, vals);
}

// One image whose output bounding box is small next to its work, summed over the box and
// emitted in raster order (sorted): no sorting or grouping needed. Returns -1, touching
// nothing, when the box is too large; the caller then goes row by row.
template <bool kFill, typename Out, typename scalar_t>
int64_t convolve_image_in_box(const int64_t* col, const scalar_t* val, int64_t begin,
                              int64_t end, const scalar_t* kernel, const ToeplitzGeometry& g,
                              Scratch<scalar_t>& s, typename Out::index* cols,
                              scalar_t* vals) {
  int64_t amin = INT64_MAX, amax = INT64_MIN, bmin = INT64_MAX, bmax = INT64_MIN;
  for (int64_t e = begin; e < end; ++e) {
    const int64_t a = col[e] / g.in_w, b = col[e] - a * g.in_w;
    amin = std::min(amin, a);
    amax = std::max(amax, a);
    bmin = std::min(bmin, b);
    bmax = std::max(bmax, b);
  }
  Box box;
  box.r0 = std::max<int64_t>(0, amin - g.offset_h);
  box.r1 = std::min<int64_t>(g.out_h - 1, amax - g.offset_h + g.kernel_h - 1);
  box.c0 = std::max<int64_t>(0, bmin - g.offset_w);
  box.c1 = std::min<int64_t>(g.out_w - 1, bmax - g.offset_w + g.kernel_w - 1);
  if (box.r0 > box.r1 || box.c0 > box.c1) return 0;
  box.a0 = amin;
  box.a1 = amax;
  box.width = box.c1 - box.c0 + 1;
  box.stride = box.width;
  box.area = (box.r1 - box.r0 + 1) * box.width;
  int64_t products = 0, bound = 0;  // saturated: an overflow only means "large"
  if (__builtin_mul_overflow(end - begin, g.kernel_h * g.kernel_w, &products)) {
    products = INT64_MAX;
  }
  if (__builtin_mul_overflow(products, kBoxFactor, &bound) || bound > INT64_MAX - kBoxSlack) {
    bound = INT64_MAX - kBoxSlack;
  }
  if (box.area > bound + kBoxSlack) return -1;
  if constexpr (kFill) {
    if (s.tile_kernel_ready && dense_tile_pays(end - begin, box, g, kTileBlock<scalar_t>)) {
      return convolve_dense_tile<Out>(col, val, begin, end, kernel, g, box, s, cols, vals);
    }
  }
  if (products >= box.area) {
    if constexpr (kFill && Out::drop_zeros) {
      return convolve_scanned_box<Out>(col, val, begin, end, kernel, g, box, s, cols, vals);
    } else {
      return convolve_dense_box<kFill, Out>(col, val, begin, end, kernel, g, box, s, cols,
                                            vals);
    }
  }
  // The sparse box pads rows to 64 pixels: its buffers, not just its pixels, must stay
  // within a bound of the work (a tall box one pixel wide would otherwise take 64 times its
  // area). Four times the pixel bound leaves every box of 16 or more columns alone.
  const int64_t padded_area = (box.r1 - box.r0 + 1) * ((box.width + 63) & ~int64_t(63));
  if (padded_area / 4 > bound + kBoxSlack) return -1;
  return convolve_sparse_box<kFill, Out>(col, val, begin, end, kernel, g, box, s, cols, vals);
}

// One image: returns its number of output entries (count pass) or writes them (fill pass).
template <bool kFill, typename Out, typename scalar_t>
int64_t convolve_image(const int64_t* col, const scalar_t* val, int64_t begin, int64_t end,
                       const scalar_t* kernel, const ToeplitzGeometry& g, Scratch<scalar_t>& s,
                       typename Out::index* cols, scalar_t* vals) {
  if (begin == end) return 0;
  const int64_t in_box = convolve_image_in_box<kFill, Out>(col, val, begin, end, kernel, g, s,
                                                           cols, vals);
  if (in_box >= 0) return in_box;
  int64_t written = 0;
  gather_image(col, val, begin, end, g.in_w, s);
  const int64_t groups = static_cast<int64_t>(s.group_row.size());
  int64_t last_row = -1, lo = 0, hi = 0;
  for (int64_t gi = 0; gi < groups; ++gi) {
    const int64_t a = s.group_row[gi];
    const int64_t from = std::max<int64_t>({0, a - g.offset_h, last_row + 1});
    const int64_t to = std::min<int64_t>(g.out_h - 1, a - g.offset_h + g.kernel_h - 1);
    for (int64_t r = from; r <= to; ++r) {
      // Input rows a reach output row r when r + offset_h - kH < a <= r + offset_h.
      while (hi < groups && s.group_row[hi] <= r + g.offset_h) ++hi;
      while (lo < hi && s.group_row[lo] < r + g.offset_h - g.kernel_h + 1) ++lo;
      written += convolve_output_row<kFill, Out>(r, lo, hi, kernel, g, s,
                                            kFill ? cols + written : nullptr,
                                            kFill ? vals + written : nullptr);
      last_row = r;
    }
  }
  return written;
}

// Images [begin, end): the count pass stores each image's entry count in counts[n]; the
// fill pass writes its entries at cols / vals + offsets[n] and, when it drops zeros, how many
// it kept in counts[n].
template <bool kFill, typename Out, typename scalar_t>
void convolve_images(const int64_t* crow, const int64_t* col, const scalar_t* val,
                     const scalar_t* kernel, const ToeplitzGeometry& g, int64_t begin,
                     int64_t end, const int64_t* offsets, int64_t* counts,
                     typename Out::index* cols, scalar_t* vals) {
  // Kept per thread between calls: allocating and zeroing it was a visible part of a batch-1
  // call. Whatever grew past 1 MiB is freed afterwards, so what stays is small.
  Scratch<scalar_t>& scratch = thread_scratch<scalar_t>();
  if (kFill) scratch.prepare_tile_kernel(kernel, g.kernel_h, g.kernel_w);
  for (int64_t n = begin; n < end; ++n) {
    const int64_t written = convolve_image<kFill, Out>(
        col, val, crow[n], crow[n + 1], kernel, g, scratch,
        kFill ? cols + offsets[n] : nullptr, kFill ? vals + offsets[n] : nullptr);
    if (!kFill || Out::drop_zeros) counts[n] = written;
  }
  scratch.release_large(size_t(1) << 20);
}

// One entry point per pass and dtype, compiled for several instruction sets by GCC's function
// multi-versioning and picked when the library loads; flatten inlines the whole image loop
// into each version, so the loops over kernel columns use the widest vectors available.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TSC_MULTIVERSIONED \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define TSC_MULTIVERSIONED
#endif

#define TSC_DEFINE_PASS(NAME, FILL, OUT, SCALAR)                                               \
  TSC_MULTIVERSIONED void NAME(const int64_t* crow, const int64_t* col, const SCALAR* val,     \
                               const SCALAR* kernel, const ToeplitzGeometry& g, int64_t begin, \
                               int64_t end, const int64_t* offsets, int64_t* counts,           \
                               OUT::index* cols, SCALAR* vals) {                               \
    convolve_images<FILL, OUT, SCALAR>(crow, col, val, kernel, g, begin, end, offsets, counts,  \
                                       cols, vals);                                            \
  }
using DropZeros32 = Sink<int32_t, true>;
using DropZeros64 = Sink<int64_t, true>;
TSC_DEFINE_PASS(count_pass_f32, false, KeepAll, float)
TSC_DEFINE_PASS(fill_pass_f32, true, KeepAll, float)
TSC_DEFINE_PASS(fill_pass_dz32_f32, true, DropZeros32, float)
TSC_DEFINE_PASS(fill_pass_dz64_f32, true, DropZeros64, float)
TSC_DEFINE_PASS(count_pass_f64, false, KeepAll, double)
TSC_DEFINE_PASS(fill_pass_f64, true, KeepAll, double)
TSC_DEFINE_PASS(fill_pass_dz32_f64, true, DropZeros32, double)
TSC_DEFINE_PASS(fill_pass_dz64_f64, true, DropZeros64, double)
#undef TSC_DEFINE_PASS

}  // namespace

#define TSC_PASSES(SCALAR, SUFFIX)                                                             \
  void direct_count_pass(const int64_t* crow, const int64_t* col, const SCALAR* val,           \
                         const SCALAR* kernel, const ToeplitzGeometry& g, int64_t begin,       \
                         int64_t end, int64_t* counts) {                                       \
    count_pass_##SUFFIX(crow, col, val, kernel, g, begin, end, nullptr, counts, nullptr,       \
                        nullptr);                                                              \
  }                                                                                            \
  void direct_fill_pass(const int64_t* crow, const int64_t* col, const SCALAR* val,            \
                        const SCALAR* kernel, const ToeplitzGeometry& g, int64_t begin,        \
                        int64_t end, const int64_t* offsets, int64_t* cols, SCALAR* vals) {    \
    fill_pass_##SUFFIX(crow, col, val, kernel, g, begin, end, offsets, nullptr, cols, vals);   \
  }                                                                                            \
  void direct_fill_pass_dropping_zeros(const int64_t* crow, const int64_t* col,                \
                                       const SCALAR* val, const SCALAR* kernel,                \
                                       const ToeplitzGeometry& g, int64_t begin, int64_t end,  \
                                       const int64_t* offsets, int32_t* cols, SCALAR* vals,    \
                                       int64_t* kept) {                                        \
    fill_pass_dz32_##SUFFIX(crow, col, val, kernel, g, begin, end, offsets, kept, cols, vals); \
  }                                                                                            \
  void direct_fill_pass_dropping_zeros(const int64_t* crow, const int64_t* col,                \
                                       const SCALAR* val, const SCALAR* kernel,                \
                                       const ToeplitzGeometry& g, int64_t begin, int64_t end,  \
                                       const int64_t* offsets, int64_t* cols, SCALAR* vals,    \
                                       int64_t* kept) {                                        \
    fill_pass_dz64_##SUFFIX(crow, col, val, kernel, g, begin, end, offsets, kept, cols, vals); \
  }
TSC_PASSES(float, f32)
TSC_PASSES(double, f64)
#undef TSC_PASSES

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_cpu(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    c10::string_view method) {
  const ToeplitzGeometry g = check_toeplitz_args(crow, col, values, kernel, image_shape, mode);
  // 'auto' is 'direct'. Measured on sparse_convolution's 36-cell grid (50x50 and 100x100,
  // kernels 5x5 and 11x11, batch 1/50/500, density 0.001/0.01/0.1; 1 thread, BENCHMARKS.md),
  // x @ T with T already built took 1.15x to 5.6x the direct kernel's time in every cell: both
  // do the same products, but the product reads each tap's column and value from T where
  // direct computes them, and T's span bounds its buffers less tightly than direct's boxes.
  // Building T per call only adds to that, so nothing here chooses 'precomputed'.
  if (parse_toeplitz_method(method) == ToeplitzMethod::Precomputed) {
    const auto [t_crow, t_col, t_values] = build_toeplitz_matrix_cpu(kernel.contiguous(), g);
    return sparse_times_toeplitz_cpu(crow, col, values, t_crow, t_col, t_values,
                                     g.out_h * g.out_w);
  }
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous();
  const at::Tensor cv = values.contiguous(), ck = kernel.contiguous();
  at::Tensor out_crow = at::zeros({g.batch + 1}, crow.options());
  at::Tensor out_col, out_values;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "toeplitz_conv2d_cpu", [&] {
    const int64_t* r = cr.data_ptr<int64_t>();
    const int64_t* c = cc.data_ptr<int64_t>();
    const scalar_t* v = cv.data_ptr<scalar_t>();
    const scalar_t* k = ck.data_ptr<scalar_t>();
    // Count pass, prefix sum, fill pass: the output is allocated once at its exact size.
    int64_t* oc = out_crow.data_ptr<int64_t>();
    for_image_ranges(g.batch, cc.size(0), g, [&](int64_t begin, int64_t end) {
      direct_count_pass(r, c, v, k, g, begin, end, oc + 1);
    });
    for (int64_t n = 0; n < g.batch; ++n) oc[n + 1] += oc[n];
    out_col = empty_output(oc[g.batch], at::kLong);
    out_values = empty_output(oc[g.batch], values.scalar_type());
    int64_t* dst_col = out_col.data_ptr<int64_t>();
    scalar_t* dst_val = out_values.data_ptr<scalar_t>();
    for_image_ranges(g.batch, cc.size(0), g, [&](int64_t begin, int64_t end) {
      direct_fill_pass(r, c, v, k, g, begin, end, oc, dst_col, dst_val);
    });
  });
  return {out_crow, out_col, out_values};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  m.impl("toeplitz_conv2d", &torch_sparse_conv::toeplitz_conv2d_cpu);
}
