// The "polyphase" layout every sparse-filter backend reads its input through (see geometry.h):
// the zero-padded input split into stride_h * stride_w phase planes, so that every tap of a
// strided, dilated convolution is a plain shift inside one plane.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

#include "csrc/sparse_filter/geometry.h"

namespace torch_sparse_conv {

// The input in polyphase layout, contiguous (N, C, stride_h, stride_w, phase_h, phase_w).
at::Tensor to_polyphase(const at::Tensor& input, const SparseFilterGeometry& g);

// Inverse of to_polyphase for gradients: (N, C, sh, sw, ph, pw) -> (N, C, H, W), dropping
// the padding.
at::Tensor from_polyphase(const at::Tensor& polyphase, const SparseFilterGeometry& g);

// A dense (N, C, out_h, out_w) tensor in the wide layout (N, C, out_h * phase_w), with
// zeros in the padding columns; where there are none (phase_w == out_w) a view of the tensor
// itself (or of its NCHW copy), to be read only.
at::Tensor to_wide(const at::Tensor& dense, const SparseFilterGeometry& g);

// The columns j of phase plane column b (< stride_w) whose source column
// j * stride_w + b - pad_w lies inside the input row: [first, last), empty where first >= last;
// the others are padding.
struct PhaseColumns {
  int64_t first, last;
};
inline PhaseColumns phase_columns(const SparseFilterGeometry& g, int64_t b) {
  const int64_t first = std::max<int64_t>(0, (g.pad_w - b + g.stride_w - 1) / g.stride_w);
  const int64_t reach = g.in_w - 1 + g.pad_w - b;  // may be negative: no column
  const int64_t last = reach < 0 ? 0 : std::min<int64_t>(g.phase_w, reach / g.stride_w + 1);
  return {std::min(first, g.phase_w), std::max(std::min(first, g.phase_w), last)};
}

// One channel of the polyphase layout: a contiguous (H, W) plane into its channel_block()
// elements at dst, zeros where the padding is; only phase rows [first_row, last_row) of each
// phase plane (all by default). Row copies, no allocation; a float16/bfloat16 plane is
// widened on the way (dst_t float).
template <typename src_t, typename dst_t>
void fill_polyphase_channel(const src_t* plane, const SparseFilterGeometry& g, dst_t* dst,
                            int64_t first_row = 0, int64_t last_row = -1) {
  if (last_row < 0) last_row = g.phase_h;
  if (g.stride_h == 1 && g.stride_w == 1 && g.pad_w == 0 && g.phase_w == g.in_w) {
    // Phase row i is input row i - pad_h as it is: the rows inside the input in one copy,
    // zeros above and below. Row by row, a 7x7 plane's 28-byte copies were a fifth of a 1x1
    // layer's time at batch 1: one copy took 2048->512 @7 0.71x / 0.65x the time at 90 / 95 %
    // (batch 1, 2 threads, 11 alternated rounds, Intel Xeon VM), 512->2048 @7 0.91x / 0.87x,
    // 1024->2048 @7 0.93x / 0.89x; a fused ResNet-50 at batch 1 0.99x / 0.98x.
    const int64_t inside_first = std::clamp(g.pad_h, first_row, last_row);
    const int64_t inside_last = std::clamp(g.pad_h + g.in_h, inside_first, last_row);
    std::fill(dst + first_row * g.phase_w, dst + inside_first * g.phase_w, dst_t(0));
    if (inside_last > inside_first) {  // (else the source pointers would leave the plane)
      std::copy(plane + (inside_first - g.pad_h) * g.in_w,
                plane + (inside_last - g.pad_h) * g.in_w, dst + inside_first * g.phase_w);
    }
    std::fill(dst + inside_last * g.phase_w, dst + last_row * g.phase_w, dst_t(0));
    return;
  }
  for (int64_t a = 0; a < g.stride_h; ++a) {
    for (int64_t b = 0; b < g.stride_w; ++b) {
      dst_t* phase_plane = dst + (a * g.stride_w + b) * g.phase_h * g.phase_w;
      for (int64_t i = first_row; i < last_row; ++i) {
        dst_t* out = phase_plane + i * g.phase_w;
        const int64_t row = i * g.stride_h + a - g.pad_h;
        if (row < 0 || row >= g.in_h) {
          std::fill(out, out + g.phase_w, dst_t(0));
          continue;
        }
        const src_t* src = plane + row * g.in_w;
        const auto [first, last] = phase_columns(g, b);
        std::fill(out, out + first, dst_t(0));
        if (g.stride_w == 1) {
          if (last > first) {
            std::copy(src + first + b - g.pad_w, src + last + b - g.pad_w, out + first);
          }
        } else {
          for (int64_t j = first; j < last; ++j) out[j] = src[j * g.stride_w + b - g.pad_w];
        }
        std::fill(out + last, out + g.phase_w, dst_t(0));
      }
    }
  }
}

// fill_polyphase_channel for every channel of a contiguous (C, H, W) sample
// (C * channel_block() elements at dst), phase rows [first_row, last_row) of each.
template <typename src_t, typename dst_t>
void fill_polyphase_sample(const src_t* sample, const SparseFilterGeometry& g, dst_t* dst,
                           int64_t first_row = 0, int64_t last_row = -1) {
  for (int64_t c = 0; c < g.in_channels; ++c, dst += g.channel_block()) {
    fill_polyphase_channel(sample + c * g.in_h * g.in_w, g, dst, first_row, last_row);
  }
}

}  // namespace torch_sparse_conv
