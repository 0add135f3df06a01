// Autograd for toeplitz_matrix: T's values are the kernel's taps, so the kernel's gradient
// sums the values' gradient per tap (_toeplitz_matrix_backward). T's pattern is not
// differentiable.
#include <torch/autograd.h>
#include <torch/library.h>

#include "csrc/common/autograd_kernel.h"
#include "csrc/toeplitz/ops.h"

namespace torch_sparse_conv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class ToeplitzMatrixFunction : public torch::autograd::Function<ToeplitzMatrixFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& kernel,
                               at::IntArrayRef image_shape, c10::string_view mode) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [t_crow, t_col, t_values] = ops::toeplitz_matrix(kernel, image_shape, mode);
    ctx->save_for_backward({kernel});
    ctx->saved_data["image_shape"] = image_shape.vec();
    ctx->saved_data["mode"] = std::string(mode);
    ctx->mark_non_differentiable({t_crow, t_col});
    return {t_crow, t_col, t_values};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    at::Tensor grad_kernel;
    if (grad_outputs[2].defined() && ctx->needs_input_grad(0)) {
      grad_kernel = ops::toeplitz_matrix_backward(grad_outputs[2], ctx->get_saved_variables()[0],
                                                  ctx->saved_data["image_shape"].toIntVector(),
                                                  ctx->saved_data["mode"].toStringRef());
    }
    return {grad_kernel, at::Tensor(), at::Tensor()};
  }
};

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, Autograd, m) {
  using namespace torch_sparse_conv;
  m.impl("toeplitz_matrix",
         &AutogradKernel<ToeplitzMatrixFunction, &ops::toeplitz_matrix>::call);
}
