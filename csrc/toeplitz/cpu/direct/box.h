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

// OR of `words` words of bits shifted right by 1 .. span - 1 into the bits themselves: bit x
// ends up set when any of bits x .. x + span - 1 was. Doubling the reach each step takes
// log2(span) passes; bits[words] must exist and be zero (the last word's source of high bits).
inline void spread_bits_down(uint64_t* bits, int64_t words, int64_t span) {
  for (int64_t reach = 1; reach < span;) {
    const int64_t shift = std::min(reach, span - reach);  // < 64 while span <= 64
    for (int64_t w = 0; w < words; ++w) {
      bits[w] |= (bits[w] >> shift) | (bits[w + 1] << (64 - shift));
    }
    reach += shift;
  }
}

// The footprint of an image in its box, in bits: the pixels some entry's kernel window
// covers, which an output keeping every covered pixel emits whatever their sums. Each input
// row gets a line of the box columns its entries reach; output row r's flags are then the OR
// of the lines of the (at most kH) input rows that reach it (footprint_row), a few words per
// box row instead of a mark per product. Lines are row_words words long.
//
// Box column x is covered from input row a when an entry of a sits in columns
// c0 + offset_w + x - (kW - 1) .. c0 + offset_w + x. So each entry sets one bit, at
// j = b - (c0 + offset_w - (kW - 1)), and a row's line is its bits spread down by kW - 1
// (spread_bits_down): a dense image's many entries each cost one bit rather than a run of
// kW, whose masks and merges were a sixth of a pass. Kernels wider than 64 mark runs.
template <typename scalar_t>
void mark_footprint_lines(const int64_t* col, int64_t begin, int64_t end,
                          const ToeplitzGeometry& g, const Box& box, int64_t row_words,
                          Scratch<scalar_t>& s) {
  const int64_t lines = box.a1 - box.a0 + 1;
  const PixelSplit split(g.in_w);
  if (g.kernel_w > 64) {
    s.line_bits.assign(lines * row_words, 0);
    for (int64_t e = begin; e < end; ++e) {
      const auto [a, b] = split(col[e]);
      const int64_t lo = std::max<int64_t>(b - g.offset_w, box.c0);
      const int64_t hi = std::min<int64_t>(b - g.offset_w + g.kernel_w, box.c1 + 1);
      set_bits(s.line_bits.data() + (a - box.a0) * row_words, lo - box.c0, hi - box.c0);
    }
    return;
  }
  // Entries at j in [0, width + kW - 1) reach the box; the others cover none of it.
  const int64_t span = box.width + g.kernel_w - 1;
  const int64_t entry_words = (span + 63) / 64 + 1;  // and a zero word to shift in from
  const int64_t left = box.c0 + g.offset_w - (g.kernel_w - 1);
  s.entry_bits.assign(lines * entry_words, 0);
  uint64_t* entry_bits = s.entry_bits.data();
  for (int64_t e = begin; e < end; ++e) {
    const auto [a, b] = split(col[e]);
    const int64_t j = b - left;
    if (j < 0 || j >= span) continue;
    entry_bits[(a - box.a0) * entry_words + (j >> 6)] |= uint64_t(1) << (j & 63);
  }
  s.line_bits.resize(lines * row_words);
  const uint64_t last_word = box.width % 64 == 0 ? ~uint64_t(0)
                                                 : ~(~uint64_t(0) << (box.width % 64));
  for (int64_t i = 0; i < lines; ++i) {
    uint64_t* bits = entry_bits + i * entry_words;
    spread_bits_down(bits, entry_words - 1, g.kernel_w);
    uint64_t* line = s.line_bits.data() + i * row_words;
    std::copy(bits, bits + row_words, line);
    line[row_words - 1] &= last_word;  // no pixel past the box's last column
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
  // Word by word, the OR kept in a register: OR-ing line after line into row[] made each
  // word a chain of stores forwarded to the next load (15 % of a 50x50 k11 call).
  const uint64_t* lines = s.line_bits.data();
  for (int64_t w = 0; w < row_words; ++w) {
    uint64_t word = 0;
    for (int64_t a = a_lo; a <= a_hi; ++a) word |= lines[(a - box.a0) * row_words + w];
    row[w] = word;
  }
  return row;
}

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
