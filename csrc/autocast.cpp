// Autocast for the convolutions of both families: nn.Conv2d's policy, lower_precision_fp.
// Inside torch.autocast("cpu") or torch.autocast("cuda") their floating arguments (input,
// kept weight values, bias; a sparse image's values and the kernel) are cast to the autocast
// dtype before the op runs, so a model with SparseConv2d or ToeplitzConv2d layers computes
// where its nn.Conv2d layers would, and its outputs have the same dtype. The packing and the
// Toeplitz-matrix builder have no autocast kernel: they run in their argument's dtype.
#include <torch/library.h>

#include "csrc/common/reduced_precision.h"
#include "csrc/sparse_filter/ops.h"
#include "csrc/toeplitz/ops.h"

namespace torch_sparse_conv {
namespace {

// sparse_filter_conv2d's epilogue (residual, relu) is not cast: the convolution runs in the
// autocast dtype and the residual is then added as `conv(x) + residual` adds it there
// (promoting to the wider dtype), then ReLU, so the result is that of the separate ops.
template <c10::DeviceType device>
at::Tensor sparse_filter_conv2d_autocast(
    const at::Tensor& input, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& values, at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    c10::string_view method, const c10::optional<at::Tensor>& residual, bool relu) {
  constexpr auto conv = autocast_lower_precision<device, &ops::sparse_filter_conv2d>();
  at::Tensor output = conv(input, row_ptr, col_idx, values, weight_size, bias, stride, padding,
                           dilation, groups, method, c10::nullopt, false);
  if (residual.has_value() && residual->defined()) output = at::add(output, *residual);
  return relu ? at::relu(output) : output;
}

template <c10::DeviceType device>
void register_autocast(torch::Library& m) {
  m.impl("sparse_filter_conv2d", &sparse_filter_conv2d_autocast<device>);
  m.impl("toeplitz_conv2d", autocast_lower_precision<device, &ops::toeplitz_conv2d>());
  m.impl("toeplitz_conv2d_precomputed",
         autocast_lower_precision<device, &ops::toeplitz_conv2d_precomputed>());
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, AutocastCPU, m) {
  torch_sparse_conv::register_autocast<c10::DeviceType::CPU>(m);
}
TORCH_LIBRARY_IMPL(torch_sparse_conv, AutocastCUDA, m) {
  torch_sparse_conv::register_autocast<c10::DeviceType::CUDA>(m);
}
