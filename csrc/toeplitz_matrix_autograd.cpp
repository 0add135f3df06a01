// Autograd for toeplitz_matrix: T's values are the kernel's taps, so the kernel's gradient
// sums the values' gradient per tap (_toeplitz_matrix_backward). T's pattern is not
// differentiable.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

namespace torch_sparse_conv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_matrix(const at::Tensor& kernel,
                                                           at::IntArrayRef image_shape,
                                                           c10::string_view mode) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_sparse_conv::toeplitz_matrix", "")
                       .typed<decltype(call_matrix)>();
  return op.call(kernel, image_shape, mode);
}

at::Tensor call_matrix_backward(const at::Tensor& grad_values, const at::Tensor& kernel,
                                at::IntArrayRef image_shape, c10::string_view mode) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_sparse_conv::_toeplitz_matrix_backward", "")
                       .typed<decltype(call_matrix_backward)>();
  return op.call(grad_values, kernel, image_shape, mode);
}

class ToeplitzMatrixFunction : public torch::autograd::Function<ToeplitzMatrixFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& kernel,
                               std::vector<int64_t> image_shape, std::string mode) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [t_crow, t_col, t_values] = call_matrix(kernel, image_shape, mode);
    ctx->save_for_backward({kernel});
    ctx->saved_data["image_shape"] = image_shape;
    ctx->saved_data["mode"] = mode;
    ctx->mark_non_differentiable({t_crow, t_col});
    return {t_crow, t_col, t_values};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    at::Tensor grad_kernel;
    if (grad_outputs[2].defined() && ctx->needs_input_grad(0)) {
      grad_kernel = call_matrix_backward(grad_outputs[2], ctx->get_saved_variables()[0],
                                         ctx->saved_data["image_shape"].toIntVector(),
                                         ctx->saved_data["mode"].toStringRef());
    }
    return {grad_kernel, at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_matrix_autograd(
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode) {
  auto outputs = ToeplitzMatrixFunction::apply(kernel, image_shape.vec(), std::string(mode));
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, Autograd, m) {
  m.impl("toeplitz_matrix", &torch_sparse_conv::toeplitz_matrix_autograd);
}
