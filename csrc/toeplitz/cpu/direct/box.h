// An image's output bounding box and the flags of the pixels its entries touch, shared by the
// box paths (toeplitz/cpu/direct/box_paths.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

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

// Touched flags of a densely covered box from the entries' footprints rather than from every
// product: each entry marks the kW box columns it reaches on its input row's line once, and
// output row r's flags are the OR of the lines of the (at most kH) input rows that reach it,
// a few vector passes per row.
template <typename scalar_t>
void mark_lines(const int64_t* col, int64_t begin, int64_t end, const ToeplitzGeometry& g,
                const Box& box, Scratch<scalar_t>& s) {
  s.lines.assign((box.a1 - box.a0 + 1) * box.width, 0);
  if (static_cast<int64_t>(s.touched.size()) < box.width) s.touched.resize(box.width);
  const PixelSplit split(g.in_w);
  for (int64_t e = begin; e < end; ++e) {
    const auto [a, b] = split(col[e]);
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
  // Eight flags a step: ROI boxes are a few dozen pixels wide, too narrow for the compiler's
  // vector loop, which left them to its byte-by-byte remainder.
  const int64_t words = box.width / 8;
  for (int64_t a = a_lo; a <= a_hi; ++a) {
    const char* line = s.lines.data() + (a - box.a0) * box.width;
    for (int64_t w = 0; w < words; ++w) {
      uint64_t have, add;
      std::memcpy(&have, row + 8 * w, 8);
      std::memcpy(&add, line + 8 * w, 8);
      have |= add;
      std::memcpy(row + 8 * w, &have, 8);
    }
    for (int64_t j = 8 * words; j < box.width; ++j) row[j] |= line[j];
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

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
