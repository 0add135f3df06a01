// What the direct method shares per thread (toeplitz/cpu/direct/): the buffers every path of
// an image reuses (Scratch).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace torch_sparse_conv {
namespace toeplitz_direct {

template <typename scalar_t>
struct Scratch {
  std::vector<int64_t> order, sorted_pixel;
  std::vector<scalar_t> sorted_value;
  std::vector<int64_t> column;                  // input column of each entry
  std::vector<int64_t> group_row, group_begin;  // input row of each group, first entry
  std::vector<scalar_t> acc;
  std::vector<char> touched;
  // A dense box's or tile's footprint (box.h): a bit per entry and a line of bits per input
  // row, and one output row's flags.
  std::vector<uint64_t> entry_bits, line_bits, row_bits;
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
    release(group_row), release(group_begin), release(acc), release(touched);
    release(entry_bits), release(line_bits), release(row_bits), release(pairs);
    release(box_bits), release(box_acc);
    release(tile), release(tile_row), release(flipped_kernel);
  }
};

// One scratch per thread and dtype, shared by every pass (all of which leave the box
// buffers zero).
template <typename scalar_t>
Scratch<scalar_t>& thread_scratch() {
  static thread_local Scratch<scalar_t> scratch;
  return scratch;
}

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
