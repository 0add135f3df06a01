// The batch-in-lanes layout of the input, shared by the lanes forward (direct_lanes.cpp) and
// the lanes gradient of the values (backward.cpp): a block of lanes<scalar_t>() samples as
// x[channel][polyphase position][sample], the polyphase positions those of polyphase.h (each
// tap a plain shift in one phase plane), zeros in the padding. Written from NCHW samples a
// channel at a time, or from channels-last ones a row at a time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "csrc/common/arithmetic.h"
#include "csrc/sparse_filter/cpu/lanes_simd.h"
#include "csrc/sparse_filter/geometry.h"
#include "csrc/sparse_filter/polyphase.h"

namespace torch_sparse_conv {

// The phase rows a layout's phase planes hold: rows [first, first + count) of each, row
// `first` at the plane's start. Whole planes: {0, g.phase_h}; the lanes forward's window of
// the rows one tile reads (direct_lanes.cpp): fewer.
struct PhaseRowsHeld {
  int64_t first, count;
};

inline PhaseRowsHeld whole_phase_planes(const SparseFilterGeometry& g) { return {0, g.phase_h}; }

// One channel of a full sample block in the lanes layout (stride_h * stride_w phase planes of
// held.count * phase_w * lanes elements at dst): each input row transposed once from the
// samples' rows (plane: the first sample's channel; sample_stride: elements between samples),
// zeros in the padding. With stride_w 1 the row is transposed straight into its phase row;
// with a larger stride each transposed pixel goes straight to its own of the stride_w phase
// planes. (Splitting each sample's channel into its phase planes first, then transposing,
// took a quarter of a stride-2 layer's time.) Only phase rows
// [first_row, last_row) of each phase plane are written, each of them among those held.
//
// lane_rows: 0 where the lanes are samples. Else the lanes are horizontal strips of one
// sample (direct_lanes_strip_rows, direct_lanes.cpp): lane s reads the input rows lane_rows *
// s below lane 0's (sample_stride = lane_rows * in_w), each lane zeros where its own row is
// padding.
template <typename scalar_t>
void lay_out_lanes_channel(const scalar_t* plane, int64_t sample_stride,
                           const SparseFilterGeometry& g, const LaneKernels<scalar_t>& kernels,
                           scalar_t* dst, int64_t first_row, int64_t last_row,
                           PhaseRowsHeld held, int64_t lane_rows = 0) {
  constexpr int64_t L = lanes<scalar_t>();
  const int64_t row_elements = g.phase_w * L;
  const int64_t plane_elements = held.count * row_elements;
  // Without stride or padding the input rows a channel's phase rows read are contiguous:
  // one interleave for all of them, straight into the layout where it is as wide as the
  // input, else (rows shorter than a transpose block: a 1x1 layer's 7-pixel rows, padded by
  // a column, lanes_geometry) each row's pixels dealt out to their layout row. Row by row,
  // those short rows went element by element: 12 % of a batch-8 2048->512 @7 forward at 90 %
  // (2 threads, Zen 4); through a packed copy and then a copy a row, 34 % of it with the
  // copies in perf, 8 % now (the layer 0.92-0.97x the time, alternated).
  if (g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0 &&
      lane_rows == 0 && first_row < last_row && last_row <= g.in_h &&
      (g.phase_w == g.in_w || g.in_w < L)) {
    const int64_t rows = last_row - first_row;
    scalar_t* phase_rows = dst + (first_row - held.first) * row_elements;
    if (g.phase_w == g.in_w) {
      kernels.interleave(plane + first_row * g.in_w, sample_stride, L, rows * g.in_w,
                         phase_rows, L);
      return;
    }
    kernels.interleave_phases(plane + first_row * g.in_w, sample_stride, L, rows * g.in_w,
                              phase_rows, g.in_w, L, row_elements, 0);
    for (int64_t r = 0; r < rows; ++r) {
      std::fill(phase_rows + r * row_elements + g.in_w * L, phase_rows + (r + 1) * row_elements,
                scalar_t(0));
    }
    return;
  }
  // A strips' row where some lanes are padding: the lanes' input rows gathered, zeros for
  // those, so that one interleave writes them all.
  std::vector<scalar_t> gathered;
  for (int64_t a = 0; a < g.stride_h; ++a) {
    for (int64_t i = first_row; i < last_row; ++i) {
      const int64_t row = i * g.stride_h + a - g.pad_h;  // lane 0's input row
      // Phase row i of the planes (a, b) for b < stride_w.
      scalar_t* phase_row =
          dst + a * g.stride_w * plane_elements + (i - held.first) * row_elements;
      // The lanes [inside_first, inside_last) whose row is inside the input.
      int64_t inside_first = 0, inside_last = L;
      if (lane_rows == 0) {
        if (row < 0 || row >= g.in_h) inside_last = 0;
      } else {
        inside_first = std::min(L, row >= 0 ? 0 : ceil_div(-row, lane_rows));
        inside_last = std::min(L, row >= g.in_h ? 0 : ceil_div(g.in_h - row, lane_rows));
      }
      if (inside_first >= inside_last) {
        for (int64_t b = 0; b < g.stride_w; ++b) {
          std::fill_n(phase_row + b * plane_elements, row_elements, scalar_t(0));
        }
        continue;
      }
      const scalar_t* src = gathered.data();
      int64_t src_stride = g.in_w, samples = inside_last;  // lanes past: zeros
      if (inside_first == 0) {
        src = plane + row * g.in_w;
        src_stride = sample_stride;
      } else {  // (strips only: lane s's row is row + s * lane_rows)
        gathered.assign(L * g.in_w, scalar_t(0));
        for (int64_t s = inside_first; s < inside_last; ++s) {
          std::copy_n(plane + (row + s * lane_rows) * g.in_w, g.in_w,
                      gathered.data() + s * g.in_w);
        }
        src = gathered.data();
      }
      if (g.stride_w == 1) {
        const auto [first, last] = phase_columns(g, 0);
        std::fill(phase_row, phase_row + first * L, scalar_t(0));
        if (last > first) {
          kernels.interleave(src + (first - g.pad_w), src_stride, samples, last - first,
                             phase_row + first * L, L);
        }
        std::fill(phase_row + last * L, phase_row + row_elements, scalar_t(0));
        continue;
      }
      // Each pixel straight to its phase plane (interleave_phases), zeros before and after
      // each plane's columns. (Against transposing into a row first and then copying a pixel
      // at a time: batch 8, 90 %, 2 threads, Zen 4, 11 alternated rounds, stride-2 128@56 and
      // 256@28 0.96-0.98x the time, 512@14 1.0x; batch 1 (strips) 0.94-0.96x.)
      for (int64_t b = 0; b < g.stride_w; ++b) {
        scalar_t* out = phase_row + b * plane_elements;
        const auto [first, last] = phase_columns(g, b);
        std::fill(out, out + first * L, scalar_t(0));
        std::fill(out + last * L, out + row_elements, scalar_t(0));
      }
      // The input columns inside the phase rows (those past them no tap reads).
      const int64_t columns = std::min(g.in_w, g.phase_w * g.stride_w - g.pad_w);
      if (columns > 0) {
        kernels.interleave_phases(src, src_stride, samples, columns, phase_row, g.stride_w,
                                  plane_elements, L, g.pad_w);
      }
    }
  }
}

// Phase row i of the phase planes (a, 0 .. stride_w - 1) of every channel of a sample block
// (channel_block() * lanes elements a channel from dst), from `samples` (<= lanes)
// channels-last samples, the first at `first_sample`, sample_stride elements apart; zeros in
// the padding and in the lanes past `samples`. Each input pixel's channels are transposed
// with the samples' in one interleave (L x L blocks of channels), written to that pixel's
// position in every channel's plane.
template <typename scalar_t>
void lay_out_lanes_row_channels_last(const scalar_t* first_sample, int64_t sample_stride,
                                     int64_t samples, int64_t a, int64_t i,
                                     const SparseFilterGeometry& g,
                                     const LaneKernels<scalar_t>& kernels, scalar_t* dst) {
  constexpr int64_t L = lanes<scalar_t>();
  const int64_t channel_elements = g.channel_block() * L;
  const int64_t row_elements = g.phase_w * L;
  const int64_t plane_elements = g.phase_h * row_elements;
  const int64_t row = i * g.stride_h + a - g.pad_h;
  const bool padding_row = row < 0 || row >= g.in_h;
  for (int64_t b = 0; b < g.stride_w; ++b) {
    scalar_t* phase_row = dst + (a * g.stride_w + b) * plane_elements + i * row_elements;
    const PhaseColumns columns =
        padding_row ? PhaseColumns{g.phase_w, g.phase_w} : phase_columns(g, b);
    for (int64_t c = 0; c < g.in_channels; ++c) {
      scalar_t* channel_row = phase_row + c * channel_elements;
      std::fill(channel_row, channel_row + columns.first * L, scalar_t(0));
      std::fill(channel_row + columns.last * L, channel_row + row_elements, scalar_t(0));
    }
    for (int64_t j = columns.first; j < columns.last; ++j) {
      const int64_t column = j * g.stride_w + b - g.pad_w;
      kernels.interleave(first_sample + (row * g.in_w + column) * g.in_channels, sample_stride,
                         samples, g.in_channels, phase_row + j * L, channel_elements);
    }
  }
}

}  // namespace torch_sparse_conv
