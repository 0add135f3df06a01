// Autograd for toeplitz_conv2d and toeplitz_conv2d_precomputed (C++, so LibTorch and
// TorchScript callers get gradients). Differentiable inputs: the input values (on their own
// sparsity pattern) and the kernel. The output pattern (row pointers, columns) is not
// differentiable, and neither is a precomputed T: it stands for the kernel, and both
// forwards give the same output, so both share one backward op.
#include <torch/autograd.h>
#include <torch/library.h>

#include "csrc/common/autograd_kernel.h"
#include "csrc/toeplitz/ops.h"

namespace torch_sparse_conv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What both forwards save: the input, the kernel and the output pattern.
void save_for_backward(AutogradContext* ctx, const at::Tensor& crow, const at::Tensor& col,
                       const at::Tensor& values, const at::Tensor& kernel,
                       const at::Tensor& out_crow, const at::Tensor& out_col,
                       at::IntArrayRef image_shape, c10::string_view mode) {
  ctx->save_for_backward({crow, col, values, kernel, out_crow, out_col});
  ctx->saved_data["image_shape"] = image_shape.vec();
  ctx->saved_data["mode"] = std::string(mode);
  ctx->mark_non_differentiable({out_crow, out_col});
}

// Both forwards take (crow, col, values, kernel, ...) first: the gradients of the values
// (argument 2) and the kernel (argument 3); `arguments` is the forward's argument count,
// every other one gets no gradient. (needs_input_grad counts tensor arguments, which
// are the same four first.)
variable_list backward_from_saved(AutogradContext* ctx, const variable_list& grad_outputs,
                                  size_t arguments) {
  const auto saved = ctx->get_saved_variables();
  const std::array<bool, 2> mask = {ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
  variable_list grads(arguments);
  if (grad_outputs[2].defined() && (mask[0] || mask[1])) {
    std::tie(grads[2], grads[3]) = ops::toeplitz_conv2d_backward(
        grad_outputs[2], saved[0], saved[1], saved[2], saved[3], saved[4], saved[5],
        ctx->saved_data["image_shape"].toIntVector(), ctx->saved_data["mode"].toStringRef(),
        mask);
  }
  return grads;
}

class ToeplitzConv2dFunction : public torch::autograd::Function<ToeplitzConv2dFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& crow,
                               const at::Tensor& col, const at::Tensor& values,
                               const at::Tensor& kernel, at::IntArrayRef image_shape,
                               c10::string_view mode, c10::string_view method) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out_crow, out_col, out_values] =
        ops::toeplitz_conv2d(crow, col, values, kernel, image_shape, mode, method);
    save_for_backward(ctx, crow, col, values, kernel, out_crow, out_col, image_shape, mode);
    return {out_crow, out_col, out_values};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return backward_from_saved(ctx, grad_outputs, 7);
  }
};

class ToeplitzConv2dPrecomputedFunction
    : public torch::autograd::Function<ToeplitzConv2dPrecomputedFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& crow,
                               const at::Tensor& col, const at::Tensor& values,
                               const at::Tensor& kernel, at::IntArrayRef image_shape,
                               c10::string_view mode, const at::Tensor& t_crow,
                               const at::Tensor& t_col, const at::Tensor& t_values) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out_crow, out_col, out_values] = ops::toeplitz_conv2d_precomputed(
        crow, col, values, kernel, image_shape, mode, t_crow, t_col, t_values);
    save_for_backward(ctx, crow, col, values, kernel, out_crow, out_col, image_shape, mode);
    return {out_crow, out_col, out_values};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return backward_from_saved(ctx, grad_outputs, 9);
  }
};

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, Autograd, m) {
  using namespace torch_sparse_conv;
  m.impl("toeplitz_conv2d",
         &AutogradKernel<ToeplitzConv2dFunction, &ops::toeplitz_conv2d>::call);
  m.impl("toeplitz_conv2d_precomputed",
         &AutogradKernel<ToeplitzConv2dPrecomputedFunction,
                         &ops::toeplitz_conv2d_precomputed>::call);
}
