// Argument checks and the shared geometry of the sparse-filter convolution.
//
// Every backend reads the input through the same "polyphase" layout: the zero-padded
// input split into stride_h * stride_w phase planes of size phase_h x phase_w, so that
// tap (ki, kj) of a strided, dilated convolution becomes a plain shift inside one phase
// plane. In that layout output pixel (oh, ow) lives at the "wide" position
// p = oh * phase_w + ow, and input element for tap t at p + tap_offset(t): one
// contiguous run of length wide_len per tap and output channel, whatever the stride.
// Wide positions with ow >= out_w are padding columns that kernels compute and drop.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
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
  int64_t tap_offset(int64_t col) const;
  // tap_offset of every filter column (index col < taps_per_filter()): kernels look offsets
  // up per nonzero instead of dividing per nonzero.
  std::vector<int64_t> column_offsets() const;
};

// Validates every argument of sparse_filter_conv2d (shapes, dtypes, devices; not the CSR
// contents, see check_csr_contents) and returns the geometry.
SparseFilterGeometry check_sparse_filter_conv2d_args(
    const at::Tensor& input,
    const at::Tensor& row_ptr,
    const at::Tensor& col_idx,
    const at::Tensor& values,
    at::IntArrayRef weight_size,
    const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups);

// The backward's extra arguments: grad_output of the forward's output shape, input's dtype
// and device.
void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input,
                       const SparseFilterGeometry& g);

// Reads row_ptr / col_idx (CPU) and proves every index is in range, so no kernel can read
// outside the input or the values. O(C_out + nnz).
void check_csr_contents(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t taps);

// The input in polyphase layout, contiguous (N, C, stride_h, stride_w, phase_h, phase_w).
at::Tensor to_polyphase(const at::Tensor& input, const SparseFilterGeometry& g);

// Inverse of to_polyphase for gradients: (N, C, sh, sw, ph, pw) -> (N, C, H, W), dropping
// the padding.
at::Tensor from_polyphase(const at::Tensor& polyphase, const SparseFilterGeometry& g);

// A dense (N, C, out_h, out_w) tensor in the wide layout (N, C, out_h * phase_w), with
// zeros in the padding columns.
at::Tensor to_wide(const at::Tensor& dense, const SparseFilterGeometry& g);

// Writes one sample of a contiguous (C, H, W) input into its polyphase layout at dst
// (C * channel_block() elements), zeros where the padding is. Row copies, no allocation.
template <typename scalar_t>
void fill_polyphase_sample(const scalar_t* sample, const SparseFilterGeometry& g, scalar_t* dst) {
  for (int64_t c = 0; c < g.in_channels; ++c) {
    const scalar_t* plane = sample + c * g.in_h * g.in_w;
    for (int64_t a = 0; a < g.stride_h; ++a) {
      for (int64_t b = 0; b < g.stride_w; ++b) {
        for (int64_t i = 0; i < g.phase_h; ++i, dst += g.phase_w) {
          const int64_t row = i * g.stride_h + a - g.pad_h;
          if (row < 0 || row >= g.in_h) {
            std::fill(dst, dst + g.phase_w, scalar_t(0));
            continue;
          }
          const scalar_t* src = plane + row * g.in_w;
          // Columns j whose source col = j * stride_w + b - pad_w lies inside the row.
          const int64_t first = std::max<int64_t>(0, (g.pad_w - b + g.stride_w - 1) / g.stride_w);
          const int64_t reach = g.in_w - 1 + g.pad_w - b;  // may be negative: no column
          const int64_t last =
              reach < 0 ? 0 : std::min<int64_t>(g.phase_w, reach / g.stride_w + 1);  // exclusive
          std::fill(dst, dst + std::min(first, g.phase_w), scalar_t(0));
          if (g.stride_w == 1) {
            if (last > first) std::copy(src + first + b - g.pad_w, src + last + b - g.pad_w, dst + first);
          } else {
            for (int64_t j = first; j < last; ++j) dst[j] = src[j * g.stride_w + b - g.pad_w];
          }
          std::fill(dst + std::max(first, last), dst + g.phase_w, scalar_t(0));
        }
      }
    }
  }
}

// Per-nonzero facts every kernel needs: the output channel of each nonzero and the offset of
// its tap inside the polyphase layout of the whole sample (group and channel included).
struct FilterTaps {
  std::vector<int64_t> out_channel;   // nnz
  std::vector<int64_t> input_offset;  // nnz
};
FilterTaps make_filter_taps(
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const SparseFilterGeometry& g);

}  // namespace torch_sparse_conv
