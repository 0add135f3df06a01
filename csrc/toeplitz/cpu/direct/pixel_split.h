// A flattened pixel index split into (row, column) of a W-wide image without a hardware
// division: the direct method splits every entry once or twice per pass, and a 64-bit idiv
// (tens of cycles, and a stall for what depends on it) was the largest part of a pass over
// small dense images such as ROI footprints.
#pragma once

#include <cstdint>
#include <utility>

namespace torch_sparse_conv {
namespace toeplitz_direct {

class PixelSplit {
 public:
  explicit PixelSplit(int64_t width) : width_(width), inverse_(1.0 / double(width)) {}

  // (pixel / width, pixel % width) for pixel >= 0. Below 2^52 the product with the rounded
  // reciprocal is within one of the quotient, so one compare corrects it; beyond that (frames
  // of 2^52 pixels and more) the division.
  std::pair<int64_t, int64_t> operator()(int64_t pixel) const {
    if (pixel < (int64_t(1) << 52)) {
      int64_t row = static_cast<int64_t>(double(pixel) * inverse_);
      int64_t column = pixel - row * width_;
      if (column < 0) {
        --row;
        column += width_;
      } else if (column >= width_) {
        ++row;
        column -= width_;
      }
      return {row, column};
    }
    const int64_t row = pixel / width_;
    return {row, pixel - row * width_};
  }

 private:
  int64_t width_;
  double inverse_;
};

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
