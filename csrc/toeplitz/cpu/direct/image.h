// One image of the direct method, and a range of images: the choice between the box paths
// (an output bounding box small next to the image's products) and the row path.
#pragma once

#include <algorithm>
#include <cstdint>

#include "csrc/toeplitz/cpu/direct/box_paths.h"
#include "csrc/toeplitz/cpu/direct/destination.h"
#include "csrc/toeplitz/cpu/direct/row_path.h"
#include "csrc/toeplitz/cpu/direct/pixel_split.h"
#include "csrc/toeplitz/cpu/direct/scratch.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {
namespace toeplitz_direct {

// An image whose output bounding box is at most this many times its products (plus a
// little) is summed over the box, as small ROIs and small frames are; wider spread images go
// row by row, so memory stays bounded by the work. Boxes the products cover sparsely cost one
// bit a pixel (convolve_sparse_box), which is why the bound can be this loose; measured on
// sparse_convolution's grid (1 thread), 16 and 4096 beat 4 and 256 on its density-0.001
// cells by 1.3-1.8x and match them elsewhere.
constexpr int64_t kBoxFactor = 16;
constexpr int64_t kBoxSlack = 4096;

// One image whose output bounding box is small next to its work, summed over the box and
// emitted in raster order (sorted): no sorting or grouping needed. Returns -1, touching
// nothing, when the box is too large; the caller then goes row by row.
template <typename Out, typename scalar_t>
int64_t convolve_image_in_box(const int64_t* col, const scalar_t* val, int64_t begin,
                              int64_t end, const scalar_t* kernel, const ToeplitzGeometry& g,
                              Scratch<scalar_t>& s, typename Out::index* cols,
                              scalar_t* vals) {
  int64_t amin = INT64_MAX, amax = INT64_MIN, bmin = INT64_MAX, bmax = INT64_MIN;
  const PixelSplit split(g.in_w);
  for (int64_t e = begin; e < end; ++e) {
    const auto [a, b] = split(col[e]);
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
  if (s.tile_kernel_ready && dense_tile_pays(end - begin, box, g, kTileLanes<scalar_t>)) {
    return convolve_dense_tile<Out>(col, val, begin, end, kernel, g, box, s, cols, vals);
  }
  if (products >= box.area) {
    if constexpr (Out::drop_zeros) {
      return convolve_scanned_box<Out>(col, val, begin, end, kernel, g, box, s, cols, vals);
    } else {
      return convolve_dense_box<Out>(col, val, begin, end, kernel, g, box, s, cols, vals);
    }
  }
  // The sparse box pads rows to 64 pixels: its buffers, not just its pixels, must stay
  // within a bound of the work (a tall box one pixel wide would otherwise take 64 times its
  // area). Four times the pixel bound leaves every box of 16 or more columns alone.
  const int64_t padded_area = (box.r1 - box.r0 + 1) * ((box.width + 63) & ~int64_t(63));
  if (padded_area / 4 > bound + kBoxSlack) return -1;
  return convolve_sparse_box<Out>(col, val, begin, end, kernel, g, box, s, cols, vals);
}

// One image: writes its output entries, sorted, to cols / vals and returns how many.
template <typename Out, typename scalar_t>
int64_t convolve_image(const int64_t* col, const scalar_t* val, int64_t begin, int64_t end,
                       const scalar_t* kernel, const ToeplitzGeometry& g, Scratch<scalar_t>& s,
                       typename Out::index* cols, scalar_t* vals) {
  if (begin == end) return 0;
  const int64_t in_box =
      convolve_image_in_box<Out>(col, val, begin, end, kernel, g, s, cols, vals);
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
      written +=
          convolve_output_row<Out>(r, lo, hi, kernel, g, s, cols + written, vals + written);
      last_row = r;
    }
  }
  return written;
}

// Images [begin, end), each written to its slot or after the staging's used entries (dst);
// counts[n]: how many entries image n wrote.
template <typename Out, typename scalar_t>
void convolve_images(const int64_t* crow, const int64_t* col, const scalar_t* val,
                     const scalar_t* kernel, const ToeplitzGeometry& g, int64_t begin,
                     int64_t end, const ImageDestination<typename Out::index, scalar_t>& dst,
                     int64_t* counts) {
  using index_t = typename Out::index;
  // Kept per thread between calls: allocating and zeroing it was a visible part of a batch-1
  // call. Whatever grew past 1 MiB is freed afterwards, so what stays is small.
  Scratch<scalar_t>& scratch = thread_scratch<scalar_t>();
  scratch.prepare_tile_kernel(kernel, g.kernel_h, g.kernel_w);
  for (int64_t n = begin; n < end; ++n) {
    index_t* cols;
    scalar_t* vals;
    if (dst.offsets != nullptr) {
      cols = dst.cols + dst.offsets[n];
      vals = dst.vals + dst.offsets[n];
    } else {
      dst.staging->make_room(image_output_bound(crow[n + 1] - crow[n], g), crow[n] - crow[begin]);
      cols = dst.staging->template cols<index_t>() + dst.staging->used();
      vals = dst.staging->template vals<scalar_t>() + dst.staging->used();
    }
    counts[n] = convolve_image<Out>(col, val, crow[n], crow[n + 1], kernel, g, scratch, cols,
                                    vals);
    if (dst.offsets == nullptr) dst.staging->advance(counts[n]);
  }
  scratch.release_large(size_t(1) << 20);
}

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
