// The four ways the direct method sums an image over its output bounding box (small frames,
// ROIs), each emitting the box's pixels in raster order: a densely covered box summed whole
// (convolve_dense_box), one scanned for nonzero sums (convolve_scanned_box, scipy's
// zero-dropping output), a dense input tile correlated with the kernel (convolve_dense_tile)
// and a sparsely covered box with one flag bit a pixel (convolve_sparse_box).
#pragma once

#include <algorithm>
#include <cstdint>

#include "csrc/common/arithmetic.h"
#include "csrc/toeplitz/cpu/direct/axpy_row.h"
#include "csrc/toeplitz/cpu/direct/box.h"
#include "csrc/toeplitz/cpu/direct/compact_sums.h"
#include "csrc/toeplitz/cpu/direct/correlate_rows.h"
#include "csrc/toeplitz/cpu/direct/pixel_split.h"
#include "csrc/toeplitz/cpu/direct/scratch.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {
namespace toeplitz_direct {

// A box the image covers densely (output keeping every covered pixel): the products summed
// over the box, each box row emitted where the footprint's bits (mark_footprint_lines) say.
// Rows start on 64-pixel boundaries, as in convolve_sparse_box, whose sums it shares: every
// product lands on a flagged pixel, which the compaction reads and clears, so the sums stay
// all zero between images and the box is never zeroed first.
template <typename Out, typename scalar_t>
int64_t convolve_dense_box(const int64_t* col, const scalar_t* val, int64_t begin, int64_t end,
                           const scalar_t* kernel, const ToeplitzGeometry& g, Box box,
                           Scratch<scalar_t>& s, typename Out::index* cols, scalar_t* vals) {
  static_assert(!Out::drop_zeros, "outputs dropping zeros go through convolve_scanned_box");
  box.stride = (box.width + 63) & ~int64_t(63);
  const int64_t rows = box.r1 - box.r0 + 1, row_words = box.stride >> 6;
  // Grown with zeros; already zero below the old size.
  if (static_cast<int64_t>(s.box_acc.size()) < rows * box.stride) {
    s.box_acc.resize(rows * box.stride, 0);
  }
  scalar_t* acc = s.box_acc.data();
  scatter_into_box(col, val, begin, end, kernel, g, box, acc, [](int64_t, int64_t) {});
  mark_footprint_lines(col, begin, end, g, box, row_words, s);
  int64_t count = 0;
  for (int64_t r = box.r0, i = 0; r <= box.r1; ++r, i += box.stride) {
    count += compact_marked(acc + i, footprint_row(r, g, box, row_words, s), 1, row_words,
                            g.out_w, /*drop_zeros=*/false, r * g.out_w + box.c0, cols + count,
                            vals + count);
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
  scatter_into_box(col, val, begin, end, kernel, g, box, acc, [](int64_t, int64_t) {});
  int64_t count = 0;
  for (int64_t r = box.r0, i = 0; r <= box.r1; ++r, i += box.width) {
    count += compact_nonzeros_clearing(acc + i, box.width, r * g.out_w + box.c0, cols + count,
                                       vals + count);
  }
  return count;
}

// Whether an image is cheaper through the dense tile: its cost is a multiply-add per tap and
// box pixel (rows padded to whole vectors of `lanes` outputs), at full vector width; the
// scatter's is a few operations per entry and kernel row. Measured on 100x100 images (batch
// 50, float64, 1 thread, Intel Xeon with AVX-512, after correlate_rows kept its loads in
// registers), the tile wins above densities of about 0.045 (3x3 kernels), 0.05 (5x5), 0.095
// (11x11) and 0.17 (21x21), for both output conventions: entries per padded box pixel above
// (kW + 2) / 140.
inline bool dense_tile_pays(int64_t entries, const Box& box, const ToeplitzGeometry& g,
                            int64_t lanes) {
  const int64_t padded_width = ceil_div(box.width, lanes) * lanes;
  const double padded_area = double(box.r1 - box.r0 + 1) * double(padded_width);
  return double(entries) * 140.0 >= padded_area * double(g.kernel_w + 2);
}

// A box the image's entries fill densely (dense frames, filled ROI masks): the entries go into
// a zero-padded dense tile of the input, and each output row is a correlation of the tile
// with the flipped kernel (correlate_rows: whole vectors of outputs kept in registers over all
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
  // i .. i + kh - 1, and columns up to the last vector's end (correlate_rows).
  const int64_t top = box.r0 + g.offset_h - (kh - 1), left = box.c0 + g.offset_w - (kw - 1);
  const int64_t tile_rows = rows + kh - 1;
  const int64_t padded_width = round_up(box.width, kTileLanes<scalar_t>);
  const int64_t stride = padded_width + kw - 1;
  s.tile.assign(tile_rows * stride, scalar_t(0));
  const PixelSplit split(g.in_w);
  for (int64_t e = begin; e < end; ++e) {
    const auto [a, b] = split(col[e]);
    const int64_t i = a - top, j = b - left;
    // Every entry of the box's image lies in the tile; the test only guards memory.
    if (i >= 0 && i < tile_rows && j >= 0 && j < stride) s.tile[i * stride + j] += val[e];
  }
  const int64_t row_words = ceil_div(box.width, 64);
  if (!Out::drop_zeros) mark_footprint_lines(col, begin, end, g, box, row_words, s);
  // Output rows two at a time (correlate_rows shares each tile load between them), the last
  // one alone when the box has an odd number of rows.
  s.tile_row.resize(2 * padded_width);
  int64_t count = 0;
  for (int64_t i = 0; i < rows; i += 2) {
    const int pair_rows = i + 1 < rows ? 2 : 1;
    correlate_rows(s.tile.data() + i * stride, stride, s.flipped_kernel.data(), kh, kw,
                   box.width, pair_rows, s.tile_row.data(), padded_width);
    for (int64_t k = 0; k < pair_rows; ++k) {
      scalar_t* sums = s.tile_row.data() + k * padded_width;
      const int64_t r = box.r0 + i + k, first = r * g.out_w + box.c0;
      count += Out::drop_zeros
                   ? compact_nonzeros(sums, box.width, first, cols + count, vals + count)
                   : compact_marked(sums, footprint_row(r, g, box, row_words, s), 1, row_words,
                                    g.out_w, /*drop_zeros=*/false, first, cols + count,
                                    vals + count);
    }
  }
  return count;
}

// A box the image covers sparsely: one bit a pixel and sums kept all zero between images
// (each image clears what it touched while emitting it), so the cost is the products, the
// touched pixels and one bit per box pixel, not a pass over the box's bytes.
template <typename Out, typename scalar_t>
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
  if (static_cast<int64_t>(s.box_acc.size()) < rows * box.stride) {
    s.box_acc.resize(rows * box.stride, 0);
  }
  uint64_t* bits = s.box_bits.data();
  scalar_t* acc = s.box_acc.data();
  scatter_into_box(col, val, begin, end, kernel, g, box, acc,
                   [bits](int64_t from, int64_t to) { set_bits(bits, from, to); });
  // Marked pixels in raster order, eight at a time, skipping empty words; the bits and sums
  // read are cleared on the way.
  return compact_marked(acc, bits, rows, row_words, g.out_w, Out::drop_zeros,
                        box.r0 * g.out_w + box.c0, cols, vals);
}

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
