// Autograd for toeplitz_conv2d and toeplitz_conv2d_precomputed (C++, so LibTorch and
// TorchScript callers get gradients). Differentiable inputs: the input values (on their own
// sparsity pattern) and the kernel. The output pattern (row pointers, columns) is not
// differentiable, and neither is a precomputed T: it stands for the kernel, and both
// forwards give the same output, so both share one backward op.
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_precomputed(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_sparse_conv::toeplitz_conv2d_precomputed", "")
                       .typed<decltype(call_precomputed)>();
  return op.call(crow, col, values, kernel, image_shape, mode, t_crow, t_col, t_values);
}

// What both forwards save: the input, the kernel and the output pattern.
void save_for_backward(AutogradContext* ctx, const at::Tensor& crow, const at::Tensor& col,
                       const at::Tensor& values, const at::Tensor& kernel,
                       const at::Tensor& out_crow, const at::Tensor& out_col,
                       std::vector<int64_t> image_shape, std::string mode) {
  ctx->save_for_backward({crow, col, values, kernel, out_crow, out_col});
  ctx->saved_data["image_shape"] = image_shape;
  ctx->saved_data["mode"] = mode;
  ctx->mark_non_differentiable({out_crow, out_col});
}

// Gradients of the values (input 2) and the kernel (input 3); `inputs` is the number of
// inputs of the forward, every other one gets no gradient.
variable_list backward_from_saved(AutogradContext* ctx, const variable_list& grad_outputs,
                                  size_t inputs) {
  const auto saved = ctx->get_saved_variables();
  const std::array<bool, 2> mask = {ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
  variable_list grads(inputs);
  if (grad_outputs[2].defined() && (mask[0] || mask[1])) {
    std::tie(grads[2], grads[3]) = call_backward(
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
                               const at::Tensor& kernel, std::vector<int64_t> image_shape,
                               std::string mode, std::string method) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out_crow, out_col, out_values] =
        call_forward(crow, col, values, kernel, image_shape, mode, method);
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
                               const at::Tensor& kernel, std::vector<int64_t> image_shape,
                               std::string mode, const at::Tensor& t_crow,
                               const at::Tensor& t_col, const at::Tensor& t_values) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out_crow, out_col, out_values] = call_precomputed(
        crow, col, values, kernel, image_shape, mode, t_crow, t_col, t_values);
    save_for_backward(ctx, crow, col, values, kernel, out_crow, out_col, image_shape, mode);
    return {out_crow, out_col, out_values};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return backward_from_saved(ctx, grad_outputs, 9);
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_precomputed_autograd(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values) {
  auto outputs = ToeplitzConv2dPrecomputedFunction::apply(
      crow, col, values, kernel, image_shape.vec(), std::string(mode), t_crow, t_col, t_values);
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, Autograd, m) {
  m.impl("toeplitz_conv2d", &torch_sparse_conv::toeplitz_conv2d_autograd);
  m.impl("toeplitz_conv2d_precomputed",
         &torch_sparse_conv::toeplitz_conv2d_precomputed_autograd);
}
