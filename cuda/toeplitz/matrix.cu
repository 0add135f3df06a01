// The 'precomputed' sparse-input convolution on CUDA: T, the doubly-block-Toeplitz matrix of
// the kernel, built on the device (toeplitz_matrix and its kernel gradient), and the product
// X @ T by cuSPARSE SpGEMM through torch's sparse CSR matmul (toeplitz_conv2d_precomputed, and
// toeplitz_conv2d's 'precomputed' method). Building T and its kernel gradient is in
// cuda/toeplitz/matrix_pipeline.cuh.
//
// T has one row per input pixel p = (a, b) and one column per output pixel; row p holds tap
// (u, t) at output pixel (a + u - offset_h, b + t - offset_w) for every tap landing inside the
// output, kernel zeros included, in (u, t) order, so its columns ascend: the CPU build's layout.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "csrc/common/csr_check.h"
#include "cuda/toeplitz/precomputed.cuh"
#include "cuda/toeplitz/matrix_pipeline.cuh"

namespace torch_sparse_conv {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_matrix_cuda(
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode) {
  const ToeplitzGeometry g = toeplitz_geometry(kernel, image_shape, mode);
  const c10::cuda::CUDAGuard guard(kernel.device());
  return build_toeplitz_matrix_cuda(kernel.contiguous(), g);
}

// grad_kernel[u, t]: the sum of grad_values over T's entries holding tap (u, t), through dense
// (pixels x taps) slots and at::sum (a fixed order: no atomics).
at::Tensor toeplitz_matrix_backward_cuda(const at::Tensor& grad_values, const at::Tensor& kernel,
                                         at::IntArrayRef image_shape, c10::string_view mode) {
  const ToeplitzGeometry g = toeplitz_geometry(kernel, image_shape, mode);
  const c10::cuda::CUDAGuard guard(kernel.device());
  return toeplitz_matrix_kernel_grad(CudaLaunch(), grad_values, kernel, g);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_precomputed_cuda(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values) {
  const ToeplitzGeometry g = check_toeplitz_args(crow, col, values, kernel, image_shape, mode);
  const c10::cuda::CUDAGuard guard(values.device());
  const int64_t pixels = g.in_h * g.in_w, out_pixels = g.out_h * g.out_w;
  TORCH_CHECK(values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble,
              "toeplitz_conv2d_precomputed: float32 and float64 only on CUDA, got ",
              values.scalar_type());
  check_toeplitz_matrix_args(t_crow, t_col, t_values, values, g);
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous(), cv = values.contiguous();
  const at::Tensor tr = t_crow.contiguous(), tc = t_col.contiguous();
  // One copy to the host for every check.
  const std::vector<int64_t> facts = fetch_to_host(
      {pending_csr_facts(cr, cc), pending_csr_facts(tr, tc), pending_columns_ascend(tr, tc)});
  check_csr_facts(csr_facts_from(facts.data()), cc.size(0), pixels,
                  input_csr_names("toeplitz_conv2d_precomputed"));
  check_csr_facts(csr_facts_from(facts.data() + kCsrFacts), tc.size(0), out_pixels,
                  kept_matrix_csr_names());
  TORCH_CHECK(facts[2 * kCsrFacts] == 1,
              "toeplitz_conv2d_precomputed: T's columns must ascend strictly within each row, "
              "as toeplitz_matrix builds them");
  return multiply_by_toeplitz_cuda(cr, cc, cv, tr, tc, t_values.contiguous(), g);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> build_toeplitz_matrix_cuda(
    const at::Tensor& kernel, const ToeplitzGeometry& g) {
  return build_toeplitz_matrix(CudaLaunch(), kernel, g);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> multiply_by_toeplitz_cuda(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values,
    const ToeplitzGeometry& g) {
  const int64_t pixels = g.in_h * g.in_w, out_pixels = g.out_h * g.out_w;
  const auto layout = values.options().layout(at::kSparseCsr);
  const at::Tensor x = at::sparse_csr_tensor(crow, col, values, {g.batch, pixels}, layout);
  const at::Tensor t =
      at::sparse_csr_tensor(t_crow, t_col, t_values, {pixels, out_pixels}, layout);
  const at::Tensor product = at::matmul(x, t);
  at::Tensor out_crow = product.crow_indices().to(at::kLong);
  at::Tensor out_col = product.col_indices().to(at::kLong);
  at::Tensor out_values = product.values();
  // The backward needs ascending columns per image; sort only if SpGEMM left them unsorted.
  const int64_t nnz = out_col.size(0);
  if (nnz > 1) {
    const at::Tensor keys = row_of_entries(out_crow, g.batch, nnz) * out_pixels + out_col;
    if (!at::all(keys.narrow(0, 1, nnz - 1) > keys.narrow(0, 0, nnz - 1)).item<bool>()) {
      const at::Tensor order = std::get<1>(at::sort(keys, /*stable=*/true, 0, false));
      out_col = out_col.index_select(0, order);
      out_values = out_values.index_select(0, order);
    }
  }
  return {out_crow, out_col, out_values};
}

}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CUDA, m) {
  m.impl("toeplitz_matrix", &torch_sparse_conv::toeplitz_matrix_cuda);
  m.impl("_toeplitz_matrix_backward", &torch_sparse_conv::toeplitz_matrix_backward_cuda);
  m.impl("toeplitz_conv2d_precomputed", &torch_sparse_conv::toeplitz_conv2d_precomputed_cuda);
}
