// Where the direct method writes a range of images' entries (toeplitz/cpu/direct/image.h):
// which entries and index type (Sink), and where: slots known beforehand (dense outputs'
// upper bounds), or a staging buffer that grows as the images are written, one image after
// another, with no count pass before it.
#pragma once

#include <c10/core/Allocator.h>

#include <algorithm>
#include <cstdint>

#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {
namespace toeplitz_direct {

// What the direct method writes: the column index type, and whether outputs that are exactly
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

// Columns and values written one image after another. Memory comes from the output cache
// (csrc/common/output_buffer_cache.h), so a buffer of the previous call's size is reused
// without page faults; it is grown (contents kept) before each image by the image's bound.
// Each thread's staging has a cache line of its own, so the counts every image updates never
// share a line with another thread's (a small effect, if any, next to the noise: a 2-thread
// pass of 50x50 k11 b500 d0.001 took 0.10-0.12 ms per half before and 0.09-0.11 after, where
// one thread takes 0.16 ms for the whole).
class alignas(64) Staging {
 public:
  // entries_to_hold: the input entries of every image whose output it will hold in the end.
  Staging(size_t index_bytes, size_t value_bytes, int64_t entries_to_hold)
      : index_bytes_(index_bytes), value_bytes_(value_bytes), entries_to_hold_(entries_to_hold) {}

  // Room for `more` entries after the used ones. When it must grow, to at least `expected`
  // entries and by at least half: every growth copies what was written.
  void reserve(int64_t more, int64_t expected = 0);
  // Room for the next image's `bound` entries, after images with `entries_written` input
  // entries: when it must grow, to the size projected from the output per input entry so far.
  // Once a sixteenth of the entries is written it also grows to that projection if it falls
  // short, while the copy is still small: growing only when full copied a first guess of a
  // third of a dense output, 8 % of a call (100x100 images, batch 500, density 0.1).
  void make_room(int64_t bound, int64_t entries_written);
  int64_t used() const { return used_; }
  int64_t capacity() const { return capacity_; }
  void advance(int64_t written) { used_ += written; }
  template <typename T>
  T* cols() const {
    return static_cast<T*>(cols_.get());
  }
  template <typename T>
  T* vals() const {
    return static_cast<T*>(vals_.get());
  }
  // Hands the buffers on (the staging is empty afterwards).
  c10::DataPtr take_cols() { return release(cols_); }
  c10::DataPtr take_vals() { return release(vals_); }

 private:
  c10::DataPtr release(c10::DataPtr& data) {
    used_ = capacity_ = 0;
    return std::move(data);
  }
  size_t index_bytes_, value_bytes_;
  int64_t entries_to_hold_;
  c10::DataPtr cols_, vals_;
  int64_t used_ = 0, capacity_ = 0;
  bool projected_ = false;  // the early projection (make_room) was made
};

// The destination of one range of images: image n goes to cols / vals + offsets[n] when
// offsets is given, else after the staging's used entries.
template <typename index_t, typename scalar_t>
struct ImageDestination {
  index_t* cols = nullptr;
  scalar_t* vals = nullptr;
  const int64_t* offsets = nullptr;
  Staging* staging = nullptr;
};

// How many entries an image of `entries` entries can write at most: one per product, and
// one per output pixel (saturated: an overflow only means "the frame").
inline int64_t image_output_bound(int64_t entries, const ToeplitzGeometry& g) {
  int64_t products = 0;
  const int64_t pixels = g.out_h * g.out_w;
  if (__builtin_mul_overflow(entries, g.kernel_h * g.kernel_w, &products)) return pixels;
  return std::min(products, pixels);
}

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
