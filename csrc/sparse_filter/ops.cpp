// The sparse-filter operators' schemas (csrc/sparse_filter/ops.h) and their fronts.
#include "csrc/sparse_filter/ops.h"

#include <torch/library.h>

#include "csrc/common/dispatch.h"

TORCH_LIBRARY_FRAGMENT(torch_sparse_conv, m) {
  using namespace torch_sparse_conv::schema;
  m.def(kPackSparseFilter);
  m.def(kSparseFilterConv2d);
  m.def(kSparseFilterConv2dKeepingInputLayout);
  m.def(kSparseFilterConv2dBackward);
  m.def(kMaxPool2dNchw);
}

namespace torch_sparse_conv::ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_sparse_filter(const at::Tensor& weight) {
  static const auto op = typed_operator<decltype(pack_sparse_filter)>("pack_sparse_filter");
  return op.call(weight);
}

at::Tensor sparse_filter_conv2d(const at::Tensor& input, const at::Tensor& row_ptr,
                                const at::Tensor& col_idx, const at::Tensor& values,
                                at::IntArrayRef weight_size,
                                const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups, c10::string_view method,
                                const c10::optional<at::Tensor>& residual, bool relu) {
  static const auto op = typed_operator<decltype(sparse_filter_conv2d)>("sparse_filter_conv2d");
  return op.call(input, row_ptr, col_idx, values, weight_size, bias, stride, padding, dilation,
                 groups, method, residual, relu);
}

std::tuple<at::Tensor, at::Tensor> sparse_filter_conv2d_keeping_input_layout(
    const at::Tensor& input, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& values, at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    c10::string_view method, const c10::optional<at::Tensor>& residual, bool relu) {
  static const auto op = typed_operator<decltype(sparse_filter_conv2d_keeping_input_layout)>(
      "_sparse_filter_conv2d_keeping_input_layout");
  return op.call(input, row_ptr, col_idx, values, weight_size, bias, stride, padding, dilation,
                 groups, method, residual, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_filter_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask, const c10::optional<at::Tensor>& input_layout) {
  static const auto op = typed_operator<decltype(sparse_filter_conv2d_backward)>(
      "_sparse_filter_conv2d_backward");
  return op.call(grad_output, input, row_ptr, col_idx, values, weight_size, stride, padding,
                 dilation, groups, output_mask, input_layout);
}

}  // namespace torch_sparse_conv::ops
