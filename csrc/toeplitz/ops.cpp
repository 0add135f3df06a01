// The sparse-input (Toeplitz) operators' schemas (csrc/toeplitz/ops.h) and their fronts.
#include "csrc/toeplitz/ops.h"

#include <torch/library.h>

#include "csrc/common/dispatch.h"

TORCH_LIBRARY_FRAGMENT(torch_sparse_conv, m) {
  using namespace torch_sparse_conv::schema;
  m.def(kToeplitzConv2d);
  m.def(kToeplitzConv2dBackward);
  m.def(kToeplitzConv2dScipy);
  m.def(kToeplitzMatrix);
  m.def(kToeplitzMatrixBackward);
  m.def(kToeplitzConv2dPrecomputed);
}

namespace torch_sparse_conv::ops {

CsrParts toeplitz_conv2d(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
                         const at::Tensor& kernel, at::IntArrayRef image_shape,
                         c10::string_view mode, c10::string_view method) {
  static const auto op = typed_operator<decltype(toeplitz_conv2d)>("toeplitz_conv2d");
  return op.call(crow, col, values, kernel, image_shape, mode, method);
}

std::tuple<at::Tensor, at::Tensor> toeplitz_conv2d_backward(
    const at::Tensor& grad_out_values, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, const at::Tensor& kernel, const at::Tensor& out_crow,
    const at::Tensor& out_col, at::IntArrayRef image_shape, c10::string_view mode,
    std::array<bool, 2> output_mask) {
  static const auto op =
      typed_operator<decltype(toeplitz_conv2d_backward)>("_toeplitz_conv2d_backward");
  return op.call(grad_out_values, crow, col, values, kernel, out_crow, out_col, image_shape,
                 mode, output_mask);
}

CsrParts toeplitz_conv2d_scipy(const at::Tensor& crow, const at::Tensor& col,
                               const at::Tensor& values, const at::Tensor& kernel,
                               at::IntArrayRef image_shape, c10::string_view mode) {
  static const auto op =
      typed_operator<decltype(toeplitz_conv2d_scipy)>("_toeplitz_conv2d_scipy");
  return op.call(crow, col, values, kernel, image_shape, mode);
}

CsrParts toeplitz_matrix(const at::Tensor& kernel, at::IntArrayRef image_shape,
                         c10::string_view mode) {
  static const auto op = typed_operator<decltype(toeplitz_matrix)>("toeplitz_matrix");
  return op.call(kernel, image_shape, mode);
}

at::Tensor toeplitz_matrix_backward(const at::Tensor& grad_values, const at::Tensor& kernel,
                                    at::IntArrayRef image_shape, c10::string_view mode) {
  static const auto op =
      typed_operator<decltype(toeplitz_matrix_backward)>("_toeplitz_matrix_backward");
  return op.call(grad_values, kernel, image_shape, mode);
}

CsrParts toeplitz_conv2d_precomputed(const at::Tensor& crow, const at::Tensor& col,
                                     const at::Tensor& values, const at::Tensor& kernel,
                                     at::IntArrayRef image_shape, c10::string_view mode,
                                     const at::Tensor& t_crow, const at::Tensor& t_col,
                                     const at::Tensor& t_values) {
  static const auto op =
      typed_operator<decltype(toeplitz_conv2d_precomputed)>("toeplitz_conv2d_precomputed");
  return op.call(crow, col, values, kernel, image_shape, mode, t_crow, t_col, t_values);
}

}  // namespace torch_sparse_conv::ops
