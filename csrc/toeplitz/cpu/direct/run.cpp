// The direct method over a whole batch (declared in csrc/toeplitz/cpu/direct.h): how the images
// are shared among threads and where their entries go.
//
// An image's output size is only known once it is computed. Rather than a count pass (it was
// a third of a call on ROI footprints: the footprints of every image computed twice), each
// thread writes its images one after another into a staging buffer, grown before each image
// by that image's bound (image_output_bound); the first thread's buffer is sized for the whole
// output and becomes it, the others are copied in after it. Where images cover nearly all of
// the frame (dense_outputs), upper-bound slots are nearly exact: the images are written
// straight into them and one in-place pass closes the gaps.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "csrc/common/arithmetic.h"
#include "csrc/common/output_buffer_cache.h"
#include "csrc/toeplitz/cpu/direct.h"

namespace torch_sparse_conv {

namespace toeplitz_direct {

void Staging::reserve(int64_t more, int64_t expected) {
  if (capacity_ - used_ >= more) return;
  const int64_t capacity = std::max({used_ + more, expected, capacity_ + capacity_ / 2});
  c10::DataPtr cols = allocate_output(capacity * index_bytes_);
  c10::DataPtr vals = allocate_output(capacity * value_bytes_);
  if (used_ > 0) {
    std::memcpy(cols.get(), cols_.get(), used_ * index_bytes_);
    std::memcpy(vals.get(), vals_.get(), used_ * value_bytes_);
  }
  cols_ = std::move(cols);
  vals_ = std::move(vals);
  capacity_ = capacity;
}

void Staging::make_room(int64_t bound, int64_t entries_written) {
  const bool project_now = !projected_ && entries_written * 16 >= entries_to_hold_;
  if (capacity_ - used_ >= bound && !project_now) return;
  const double expected = entries_written > 0 ? 1.05 * double(used_) *
                                                    double(entries_to_hold_) / entries_written
                                              : 0.0;
  const int64_t projection = static_cast<int64_t>(std::min(expected, 9.0e18));
  projected_ = projected_ || project_now;
  // The early projection asks for room for all of it at once (nothing moves if it fits).
  reserve(project_now ? std::max(bound, projection - used_) : bound, projection);
}

}  // namespace toeplitz_direct

namespace {

using toeplitz_direct::image_output_bound;
using toeplitz_direct::ImageDestination;
using toeplitz_direct::Staging;

// Below this many products (entries x taps) a batch runs on the calling thread: starting the
// thread team costs a few microseconds, as much as a small batch's whole work (batch 1 is a
// third of sparse_convolution's grid).
constexpr int64_t kParallelProducts = 4096;

// Contiguous image ranges [bounds[p], bounds[p + 1]), one per thread, with about equal
// entries: ROIs and event slices vary in size, so equal image counts would not balance.
std::vector<int64_t> share_images(const int64_t* crow, const ToeplitzGeometry& g) {
  const int64_t entries = crow[g.batch], taps = g.kernel_h * g.kernel_w;
  int64_t parts = 1;
  if (g.batch > 1 && entries >= ceil_div(kParallelProducts, taps)) {
    parts = std::min<int64_t>(at::get_num_threads(), g.batch);
  }
  std::vector<int64_t> bounds(parts + 1, g.batch);
  bounds[0] = 0;
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = static_cast<int64_t>(double(entries) * double(p) / double(parts));
    const int64_t n = std::lower_bound(crow, crow + g.batch + 1, target) - crow;
    bounds[p] = std::clamp<int64_t>(n, bounds[p - 1], g.batch);
  }
  return bounds;
}

// Runs f(p) for every share p, across threads when there are several. There are at most as
// many shares as threads, and ATen's OpenMP backend gives index p to the team's thread p, so
// share p runs on the same thread in every region (copy_shares relies on it, for speed only).
template <typename F>
void for_each_share(int64_t shares, const F& f) {
  if (shares == 1) return f(int64_t(0));
  at::parallel_for(0, shares, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) f(p);
  });
}

// Whether images are expected to cover all of the frame: on average their entries times the
// kernel's taps reach seven times the frame's size (99.9 % coverage for random entries).
// Then the upper bound min(entries * taps, H_out*W_out) is exact or nearly, and writing into
// it saves staging's copy of all but the first share. Below that the gaps cost more: closing
// them moves every later image, on one thread (measured: 16 % of a call on 100x100 images at
// density 0.1 with a 5x5 kernel, 93 % coverage; a count pass before, since removed, had lost
// up to 4x there).
bool dense_outputs(const ToeplitzGeometry& g, int64_t input_entries) {
  if (g.batch == 0) return false;
  // In 128 bits: frames may have up to 2^63 pixels.
  const __int128 per_image = input_entries / g.batch, taps = g.kernel_h * g.kernel_w;
  return per_image * taps >= __int128(7) * g.out_h * g.out_w;
}

// Moves image n's entries from slots[n] down to row_ptr[n] (never later) in place, in
// increasing n, so nothing is overwritten before it is moved. In place because fresh arrays
// of this size cost more in page faults than the copy itself.
template <typename index_t, typename scalar_t>
void close_gaps(index_t* cols, scalar_t* vals, const int64_t* slots, const int64_t* row_ptr,
                int64_t batch) {
  for (int64_t n = 0; n < batch; ++n) {
    const int64_t count = row_ptr[n + 1] - row_ptr[n];
    if (row_ptr[n] == slots[n] || count == 0) continue;
    std::memmove(cols + row_ptr[n], cols + slots[n], count * sizeof(index_t));
    std::memmove(vals + row_ptr[n], vals + slots[n], count * sizeof(scalar_t));
  }
}

template <typename index_t, typename scalar_t>
void run_pass(bool drop_zeros, const int64_t* crow, const int64_t* col, const scalar_t* val,
              const scalar_t* kernel, const ToeplitzGeometry& g, int64_t begin, int64_t end,
              const ImageDestination<index_t, scalar_t>& dst, int64_t* counts) {
  using DropZeros = toeplitz_direct::Sink<index_t, true>;
  if constexpr (std::is_same_v<index_t, int32_t>) {
    TORCH_INTERNAL_ASSERT(drop_zeros, "int32 outputs are scipy's, which drop zeros");
    direct_pass<DropZeros>(crow, col, val, kernel, g, begin, end, dst, counts);
  } else if (drop_zeros) {
    direct_pass<DropZeros>(crow, col, val, kernel, g, begin, end, dst, counts);
  } else {
    direct_pass<toeplitz_direct::KeepAll>(crow, col, val, kernel, g, begin, end, dst, counts);
  }
}

// What images [begin, end) can write at most, or `cap` if that is less.
int64_t output_bound(const int64_t* crow, const ToeplitzGeometry& g, int64_t begin,
                     int64_t end, int64_t cap) {
  int64_t bound = 0;
  for (int64_t n = begin; n < end && bound < cap; ++n) {
    bound += image_output_bound(crow[n + 1] - crow[n], g);
  }
  return std::min(bound, cap);
}

// A first guess at the staging a share needs: its bound, capped at a few times its entries
// (a buffer that grows keeps what it wrote).
int64_t staging_guess(const int64_t* crow, const ToeplitzGeometry& g, int64_t begin,
                      int64_t end) {
  return output_bound(crow, g, begin, end, 2 * (crow[end] - crow[begin]) + 4096);
}

// Copies staging entries [begin, end) of `from` to output entry `at`.
template <typename index_t, typename scalar_t>
void copy_entries(const Staging& from, int64_t begin, int64_t end, int64_t at, index_t* cols,
                  scalar_t* vals) {
  std::memcpy(cols + at, from.template cols<index_t>() + begin, (end - begin) * sizeof(index_t));
  std::memcpy(vals + at, from.template vals<scalar_t>() + begin,
              (end - begin) * sizeof(scalar_t));
}

// Copies shares [first, end) of the staging into the output at their row pointers, in
// pieces of about equal size across threads: with two threads the second share alone was
// copied by one thread while the other waited.
template <typename index_t, typename scalar_t>
void copy_shares_in_pieces(const std::vector<Staging>& staging,
                           const std::vector<int64_t>& bounds, const int64_t* row_ptr,
                           int64_t first, index_t* cols, scalar_t* vals) {
  // Entries: 96-192 KiB of both arrays, so both threads take part in a share of tens of
  // thousands of entries (pieces of 64K had left one such share to one thread).
  constexpr int64_t kPiece = int64_t(1) << 13;
  struct Piece {
    const Staging* from;
    int64_t begin, end, at;  // staging entries [begin, end) go to output entry `at`
  };
  std::vector<Piece> pieces;
  for (int64_t p = first; p < static_cast<int64_t>(staging.size()); ++p) {
    for (int64_t i = 0; i < staging[p].used(); i += kPiece) {
      pieces.push_back({&staging[p], i, std::min(i + kPiece, staging[p].used()),
                        row_ptr[bounds[p]] + i});
    }
  }
  const auto copy = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Piece& piece = pieces[i];
      copy_entries(*piece.from, piece.begin, piece.end, piece.at, cols, vals);
    }
  };
  const int64_t count = static_cast<int64_t>(pieces.size());
  if (count <= 1) return copy(0, count);
  at::parallel_for(0, count, 1, copy);
}

// Shares whose staging is at most this many bytes (indices and values) are copied each by the
// thread that wrote it (for_each_share gives share p to the same thread every time), so a
// small share's staging never leaves that core's cache. Copied by the other thread, the lines
// it read were left shared between the cores and the next call's writes had to take each one
// back: on 50x50 k11 b50 d0.001 the second thread's pass took 37 us instead of 8 (2 threads,
// Intel Xeon VM with 2 MiB of L2 a core). Larger shares leave the cache anyway, and copying
// them on both threads wins: measured, a share of 1.2 MB copied by its own thread was 17 %
// faster and one of 2.2 MB 5 % slower than in pieces.
constexpr int64_t kOwnThreadCopyBytes = int64_t(3) << 19;  // 1.5 MiB

// Copies shares [first, end) of the staging into the output at their row pointers: each by
// its own thread when all are small, else in pieces (copy_shares_in_pieces).
template <typename index_t, typename scalar_t>
void copy_shares(const std::vector<Staging>& staging, const std::vector<int64_t>& bounds,
                 const int64_t* row_ptr, int64_t first, index_t* cols, scalar_t* vals) {
  const int64_t shares = static_cast<int64_t>(staging.size());
  int64_t largest = 0;
  for (int64_t p = first; p < shares; ++p) largest = std::max(largest, staging[p].used());
  if (largest * int64_t(sizeof(index_t) + sizeof(scalar_t)) > kOwnThreadCopyBytes) {
    return copy_shares_in_pieces(staging, bounds, row_ptr, first, cols, vals);
  }
  for_each_share(shares, [&](int64_t p) {
    const Staging& from = staging[p];
    if (p < first || from.used() == 0) return;  // an empty share may have no buffer at all
    copy_entries(from, 0, from.used(), row_ptr[bounds[p]], cols, vals);
  });
}

}  // namespace

template <typename index_t, typename scalar_t>
DirectOutput direct_method(const int64_t* crow, const int64_t* col, const scalar_t* val,
                           const scalar_t* kernel, const ToeplitzGeometry& g, bool drop_zeros,
                           int64_t* row_ptr) {
  const int64_t batch = g.batch;
  const std::vector<int64_t> bounds = share_images(crow, g);
  const int64_t shares = static_cast<int64_t>(bounds.size()) - 1;
  int64_t* counts = row_ptr + 1;
  auto close_row_ptr = [&] {
    row_ptr[0] = 0;
    for (int64_t n = 0; n < batch; ++n) row_ptr[n + 1] += row_ptr[n];
  };
  DirectOutput out;
  if (dense_outputs(g, crow[batch])) {
    std::vector<int64_t> slots(batch + 1, 0);
    for (int64_t n = 0; n < batch; ++n) {
      slots[n + 1] = slots[n] + image_output_bound(crow[n + 1] - crow[n], g);
    }
    out.capacity = slots[batch];
    out.cols = allocate_output(out.capacity * sizeof(index_t));
    out.vals = allocate_output(out.capacity * sizeof(scalar_t));
    ImageDestination<index_t, scalar_t> dst;
    dst.cols = static_cast<index_t*>(out.cols.get());
    dst.vals = static_cast<scalar_t*>(out.vals.get());
    dst.offsets = slots.data();
    for_each_share(shares, [&](int64_t p) {
      run_pass(drop_zeros, crow, col, val, kernel, g, bounds[p], bounds[p + 1], dst, counts);
    });
    close_row_ptr();
    if (row_ptr[batch] != slots[batch]) {
      close_gaps(dst.cols, dst.vals, slots.data(), row_ptr, batch);
    }
    out.entries = row_ptr[batch];
    return out;
  }
  std::vector<Staging> staging;
  staging.reserve(shares);
  // The first share's buffer is meant to hold every share: it becomes the output.
  auto held = [&](int64_t p) {
    return std::make_pair(p == 0 ? 0 : bounds[p], p == 0 ? batch : bounds[p + 1]);
  };
  for (int64_t p = 0; p < shares; ++p) {
    const auto [from, to] = held(p);
    staging.emplace_back(sizeof(index_t), sizeof(scalar_t), crow[to] - crow[from]);
  }
  for_each_share(shares, [&](int64_t p) {
    const auto [from, to] = held(p);
    staging[p].reserve(staging_guess(crow, g, from, to));
    ImageDestination<index_t, scalar_t> dst;
    dst.staging = &staging[p];
    run_pass(drop_zeros, crow, col, val, kernel, g, bounds[p], bounds[p + 1], dst, counts);
  });
  close_row_ptr();
  out.entries = row_ptr[batch];
  // The first share stays where it is when its buffer holds everything, unless that buffer
  // is far larger than the output (the output keeps it).
  const bool first_in_place = staging[0].capacity() >= out.entries &&
                              staging[0].capacity() <= 2 * out.entries + 4096;
  out.capacity = first_in_place ? staging[0].capacity() : out.entries;
  if (first_in_place) {
    out.cols = staging[0].take_cols();
    out.vals = staging[0].take_vals();
  } else {
    out.cols = allocate_output(out.capacity * sizeof(index_t));
    out.vals = allocate_output(out.capacity * sizeof(scalar_t));
  }
  copy_shares(staging, bounds, row_ptr, first_in_place ? 1 : 0,
              static_cast<index_t*>(out.cols.get()), static_cast<scalar_t*>(out.vals.get()));
  return out;
}

#define TSC_INSTANTIATE(INDEX, SCALAR)                                                      \
  template DirectOutput direct_method<INDEX, SCALAR>(                                       \
      const int64_t* crow, const int64_t* col, const SCALAR* val, const SCALAR* kernel,     \
      const ToeplitzGeometry& g, bool drop_zeros, int64_t* row_ptr);
TSC_INSTANTIATE(int32_t, float)
TSC_INSTANTIATE(int64_t, float)
TSC_INSTANTIATE(int32_t, double)
TSC_INSTANTIATE(int64_t, double)
#undef TSC_INSTANTIATE

}  // namespace torch_sparse_conv
