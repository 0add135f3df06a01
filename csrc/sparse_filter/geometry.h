// The geometry of one sparse-filter convolution, shared by every backend (checks.h derives
// it from the arguments).
//
// Every backend reads the input through the same "polyphase" layout: the zero-padded
// input split into stride_h * stride_w phase planes of size phase_h x phase_w, so that
// tap (ki, kj) of a strided, dilated convolution becomes a plain shift inside one phase
// plane. In that layout output pixel (oh, ow) lives at the "wide" position
// p = oh * phase_w + ow, and input element for tap t at p + tap_offset(t): one
// contiguous run of length wide_len per tap and output channel, whatever the stride.
// Wide positions with ow >= out_w are padding columns that kernels compute and drop.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace torch_sparse_conv {

struct SparseFilterGeometry {
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
  int64_t out_channels = 0, groups = 1, kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;
  int64_t phase_h = 0, phase_w = 0;  // size of one polyphase plane

  int64_t in_channels_per_group() const { return in_channels / groups; }
  int64_t out_channels_per_group() const { return out_channels / groups; }
  int64_t taps_per_filter() const { return in_channels_per_group() * kernel_h * kernel_w; }
  // Elements of one input channel in the polyphase layout.
  int64_t channel_block() const { return stride_h * stride_w * phase_h * phase_w; }
  // Length of the wide output run (last row holds only out_w valid columns).
  int64_t wide_len() const { return out_h == 0 || out_w == 0 ? 0 : (out_h - 1) * phase_w + out_w; }
  // Offset, inside the polyphase layout of one group, of filter column `col`
  // (col = c * kH * kW + ki * kW + kj).
  int64_t tap_offset(int64_t col) const {
    const int64_t taps_per_channel = kernel_h * kernel_w;
    const int64_t c = col / taps_per_channel;
    const int64_t ki = (col % taps_per_channel) / kernel_w;
    const int64_t kj = col % kernel_w;
    const int64_t row = ki * dilation_h, column = kj * dilation_w;
    const int64_t phase = (row % stride_h) * stride_w + (column % stride_w);
    return c * channel_block() + (phase * phase_h + row / stride_h) * phase_w +
           column / stride_w;
  }
  // tap_offset of every filter column (index col < taps_per_filter()): kernels look offsets
  // up per nonzero instead of dividing per nonzero. Built channel by channel from the first
  // channel's kernel_h * kernel_w offsets (three divisions a column cost 3 % of a batch-1
  // 512@7 call), each from those offsets held apart, not from the channel before in memory:
  // reading back a vector stored a few elements earlier (9 for a 3x3 kernel) stalled on the
  // store buffer, 2-3 ns a column, 1 % of a 512x7x7 training step at 95 %.
  std::vector<int64_t> column_offsets() const {
    const int64_t taps_per_channel = std::min(kernel_h * kernel_w, taps_per_filter());
    std::vector<int64_t> first(taps_per_channel);
    for (int64_t t = 0; t < taps_per_channel; ++t) first[t] = tap_offset(t);
    std::vector<int64_t> offsets(taps_per_filter());
    const int64_t channels = taps_per_channel == 0 ? 0 : taps_per_filter() / taps_per_channel;
    for (int64_t c = 0; c < channels; ++c) {
      int64_t* channel = offsets.data() + c * taps_per_channel;
      const int64_t start = c * channel_block();
      for (int64_t t = 0; t < taps_per_channel; ++t) channel[t] = first[t] + start;
    }
    return offsets;
  }
};

}  // namespace torch_sparse_conv
