// The host side of building T, the doubly-block-Toeplitz matrix, on CUDA, and of its kernel
// gradient: generic over the launcher (cuda/common/launch_shape.h) like
// cuda/toeplitz/conv2d_pipeline.cuh, so cuda/toeplitz/matrix.cu and the CPU emulation tests run
// the same code.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <tuple>

#include "csrc/toeplitz/geometry.h"
#include "cuda/common/launch_shape.h"
// Last: on host compilers it defines CUDA's keywords as macros.
#include "cuda/toeplitz/matrix_kernels.cuh"

namespace torch_sparse_conv {

// T's row pointers (H*W + 1, int64) on the device of `options`.
template <typename Launch>
at::Tensor toeplitz_row_pointers(const Launch& launch, const ToeplitzGeometry& g,
                                 const at::TensorOptions& options) {
  const int64_t pixels = g.in_h * g.in_w;
  at::Tensor lengths = at::empty({pixels}, options.dtype(at::kLong));
  launch(row_lengths_kernel, grid_stride_launch(pixels), frame_of(g), lengths.data_ptr<int64_t>());
  at::Tensor crow = at::zeros({pixels + 1}, options.dtype(at::kLong));
  crow.narrow(0, 1, pixels).copy_(at::cumsum(lengths, 0));
  return crow;
}

// T as CSR (H*W, H_out*W_out) with sorted int64 columns; kernel float32/float64, contiguous.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> build_toeplitz_matrix(
    const Launch& launch, const at::Tensor& kernel, const ToeplitzGeometry& g) {
  const int64_t pixels = g.in_h * g.in_w;
  at::Tensor t_crow = toeplitz_row_pointers(launch, g, kernel.options());
  const int64_t nnz = t_crow[pixels].item<int64_t>();  // sizes T: the one host wait
  at::Tensor t_col = at::empty({nnz}, kernel.options().dtype(at::kLong));
  at::Tensor t_values = at::empty({nnz}, kernel.options());
  AT_DISPATCH_FLOATING_TYPES(kernel.scalar_type(), "toeplitz_matrix_cuda", [&] {
    launch(toeplitz_rows_kernel<scalar_t>, grid_stride_launch(pixels), frame_of(g),
           t_crow.data_ptr<int64_t>(),
           kernel.data_ptr<scalar_t>(), t_col.data_ptr<int64_t>(),
           t_values.data_ptr<scalar_t>(), static_cast<const scalar_t*>(nullptr),
           static_cast<scalar_t*>(nullptr));
  });
  return {t_crow, t_col, t_values};
}

// grad_kernel[u, t]: the sum of grad_values over T's entries holding tap (u, t), through dense
// (pixels x taps) slots and at::sum (a fixed order: no atomics).
template <typename Launch>
at::Tensor toeplitz_matrix_kernel_grad(const Launch& launch, const at::Tensor& grad_values,
                                       const at::Tensor& kernel, const ToeplitzGeometry& g) {
  const at::Tensor t_crow = toeplitz_row_pointers(launch, g, kernel.options());
  const int64_t pixels = g.in_h * g.in_w, taps = g.kernel_h * g.kernel_w;
  const int64_t nnz = t_crow[pixels].item<int64_t>();
  TORCH_CHECK(grad_values.dim() == 1 && grad_values.size(0) == nnz &&
                  grad_values.scalar_type() == kernel.scalar_type() &&
                  grad_values.device() == kernel.device(),
              "_toeplitz_matrix_backward: grad_values must be 1-D, one ", kernel.scalar_type(),
              " per entry of T (", nnz, ") on ", kernel.device(), ", got ",
              grad_values.scalar_type(), " of shape ", grad_values.sizes());
  at::Tensor slots = at::zeros({pixels, taps}, kernel.options());
  const at::Tensor grad = grad_values.contiguous();
  AT_DISPATCH_FLOATING_TYPES(kernel.scalar_type(), "toeplitz_matrix_backward_cuda", [&] {
    launch(toeplitz_rows_kernel<scalar_t>, grid_stride_launch(pixels), frame_of(g),
           t_crow.data_ptr<int64_t>(),
           static_cast<const scalar_t*>(nullptr), static_cast<int64_t*>(nullptr),
           static_cast<scalar_t*>(nullptr), grad.data_ptr<scalar_t>(),
           slots.data_ptr<scalar_t>());
  });
  return slots.sum(0).view({g.kernel_h, g.kernel_w});
}

}  // namespace torch_sparse_conv
