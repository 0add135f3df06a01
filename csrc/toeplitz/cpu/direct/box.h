// An image's output bounding box and the flags of the pixels its entries touch, shared by the
// box paths (toeplitz/cpu/direct/box_paths.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "csrc/toeplitz/cpu/direct/pixel_split.h"
#include "csrc/toeplitz/cpu/direct/scratch.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {
namespace toeplitz_direct {

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

// Adds the products of the image's entries into acc (laid out over the box) and calls
// mark(from, to) for every run of box pixels they touch.
template <typename scalar_t, typename Mark>
void scatter_into_box(const int64_t* col, const scalar_t* val, int64_t begin, int64_t end,
                      const scalar_t* kernel, const ToeplitzGeometry& g, const Box& box,
                      scalar_t* acc, Mark mark) {
  const PixelSplit split(g.in_w);
  for (int64_t e = begin; e < end; ++e) {
    const auto [a, b] = split(col[e]);
    const int64_t top = a - g.offset_h, left = b - g.offset_w;  // output pixel of tap (0, 0)
    const int64_t u_lo = std::max<int64_t>(0, box.r0 - top);
    const int64_t u_hi = std::min<int64_t>(g.kernel_h, box.r1 + 1 - top);
    const int64_t t_lo = std::max<int64_t>(0, box.c0 - left);
    const int64_t t_hi = std::min<int64_t>(g.kernel_w, box.c1 + 1 - left);
    if (t_lo >= t_hi) continue;
    for (int64_t u = u_lo; u < u_hi; ++u) {
      const int64_t base = (top + u - box.r0) * box.stride + (left - box.c0);
      mark(base + t_lo, base + t_hi);
      axpy_row(acc + base + t_lo, kernel + u * g.kernel_w + t_lo, val[e], t_hi - t_lo);
    }
  }
}

// The footprint of an image in its box, in bits: the pixels some entry's kernel window
// covers, which an output keeping every covered pixel emits whatever their sums. Each input
// row gets a line of the box columns its entries reach (one set_bits per entry); output row
// r's flags are then the OR of the lines of the (at most kH) input rows that reach it, a few
// words per box row, instead of a mark per product. Lines are row_words words long.
template <typename scalar_t>
void mark_footprint_lines(const int64_t* col, int64_t begin, int64_t end,
                          const ToeplitzGeometry& g, const Box& box, int64_t row_words,
                          Scratch<scalar_t>& s) {
  s.line_bits.assign((box.a1 - box.a0 + 1) * row_words, 0);
  const PixelSplit split(g.in_w);
  for (int64_t e = begin; e < end; ++e) {
    const auto [a, b] = split(col[e]);
    const int64_t lo = std::max<int64_t>(b - g.offset_w, box.c0);
    const int64_t hi = std::min<int64_t>(b - g.offset_w + g.kernel_w, box.c1 + 1);
    set_bits(s.line_bits.data() + (a - box.a0) * row_words, lo - box.c0, hi - box.c0);
  }
}

// Output row r's flags (after mark_footprint_lines): row_words words in s.row_bits.
template <typename scalar_t>
uint64_t* footprint_row(int64_t r, const ToeplitzGeometry& g, const Box& box,
                        int64_t row_words, Scratch<scalar_t>& s) {
  // Input rows a reach output row r when r + offset_h - kH < a <= r + offset_h.
  const int64_t a_lo = std::max<int64_t>(box.a0, r + g.offset_h - g.kernel_h + 1);
  const int64_t a_hi = std::min<int64_t>(box.a1, r + g.offset_h);
  if (static_cast<int64_t>(s.row_bits.size()) < row_words) s.row_bits.resize(row_words);
  uint64_t* row = s.row_bits.data();
  std::fill(row, row + row_words, 0);
  for (int64_t a = a_lo; a <= a_hi; ++a) {
    const uint64_t* line = s.line_bits.data() + (a - box.a0) * row_words;
    for (int64_t w = 0; w < row_words; ++w) row[w] |= line[w];
  }
  return row;
}

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
