// Autograd for toeplitz_conv2d (C++, so LibTorch and TorchScript callers get gradients).
// Differentiable inputs: the input values (on their own sparsity pattern) and the kernel.
// The output pattern (row pointers, columns) is not differentiable.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

namespace torch_sparse_conv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_forward(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    c10::string_view method) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_sparse_conv::toeplitz_conv2d", "")
                       .typed<decltype(call_forward)>();
  return op.call(crow, col, values, kernel, image_shape, mode, method);
}

std::tuple<at::Tensor, at::Tensor> call_backward(
    const at::Tensor& grad, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, const at::Tensor& kernel, const at::Tensor& out_crow,
    const at::Tensor& out_col, at::IntArrayRef image_shape, c10::string_view mode,
    std::array<bool, 2> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_sparse_conv::_toeplitz_conv2d_backward", "")
                       .typed<decltype(call_backward)>();
  return op.call(grad, crow, col, values, kernel, out_crow, out_col, image_shape, mode,
                 output_mask);
}

class ToeplitzConv2dFunction : public torch::autograd::Function<ToeplitzConv2dFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& crow,
                               const at::Tensor& col, const at::Tensor& values,
                               const at::Tensor& kernel, std::vector<int64_t> image_shape,
                               std::string mode, std::string method) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out_crow, out_col, out_values] =
        call_forward(crow, col, values, kernel, image_shape, mode, method);
    ctx->save_for_backward({crow, col, values, kernel, out_crow, out_col});
    ctx->saved_data["image_shape"] = image_shape;
    ctx->saved_data["mode"] = mode;
    ctx->mark_non_differentiable({out_crow, out_col});
    return {out_crow, out_col, out_values};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const std::array<bool, 2> mask = {ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
    at::Tensor grad_values, grad_kernel;
    if (grad_outputs[2].defined() && (mask[0] || mask[1])) {
      std::tie(grad_values, grad_kernel) = call_backward(
          grad_outputs[2], saved[0], saved[1], saved[2], saved[3], saved[4], saved[5],
          ctx->saved_data["image_shape"].toIntVector(),
          ctx->saved_data["mode"].toStringRef(), mask);
    }
    return {at::Tensor(), at::Tensor(), grad_values, grad_kernel, at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_autograd(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    c10::string_view method) {
  auto outputs = ToeplitzConv2dFunction::apply(crow, col, values, kernel, image_shape.vec(),
                                               std::string(mode), std::string(method));
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, Autograd, m) {
  m.impl("toeplitz_conv2d", &torch_sparse_conv::toeplitz_conv2d_autograd);
}
