#include "csrc/sparse_filter/polyphase.h"

#include "csrc/common/memory_format.h"

namespace torch_sparse_conv {

at::Tensor to_polyphase(const at::Tensor& input, const SparseFilterGeometry& g) {
  const int64_t extra_h = g.phase_h * g.stride_h - g.in_h - g.pad_h;
  const int64_t extra_w = g.phase_w * g.stride_w - g.in_w - g.pad_w;
  at::Tensor padded = input;
  if (g.pad_h != 0 || g.pad_w != 0 || extra_h != 0 || extra_w != 0) {
    padded = at::constant_pad_nd(input, {g.pad_w, extra_w, g.pad_h, extra_h}, 0);
  }
  padded = nchw_contiguous(padded);
  return padded.view({g.batch, g.in_channels, g.phase_h, g.stride_h, g.phase_w, g.stride_w})
      .permute({0, 1, 3, 5, 2, 4})
      .contiguous();
}

at::Tensor from_polyphase(const at::Tensor& polyphase, const SparseFilterGeometry& g) {
  at::Tensor padded =
      polyphase.view({g.batch, g.in_channels, g.stride_h, g.stride_w, g.phase_h, g.phase_w})
          .permute({0, 1, 4, 2, 5, 3})
          .reshape({g.batch, g.in_channels, g.phase_h * g.stride_h, g.phase_w * g.stride_w});
  return padded.narrow(2, g.pad_h, g.in_h).narrow(3, g.pad_w, g.in_w).contiguous();
}

at::Tensor to_wide(const at::Tensor& dense, const SparseFilterGeometry& g) {
  if (g.phase_w == g.out_w) {  // no padding columns (e.g. a 1x1 kernel without padding)
    return nchw_contiguous(dense).view({dense.size(0), dense.size(1), g.out_h * g.phase_w});
  }
  at::Tensor wide = at::zeros({dense.size(0), dense.size(1), g.out_h, g.phase_w}, dense.options());
  wide.narrow(3, 0, g.out_w).copy_(nchw_contiguous(dense));
  return wide.view({dense.size(0), dense.size(1), g.out_h * g.phase_w});
}

}  // namespace torch_sparse_conv
