// The 'precomputed' sparse-input convolution on CUDA: T, the doubly-block-Toeplitz matrix of
// the kernel, built on the device (toeplitz_matrix and its kernel gradient), and the product
// X @ T by cuSPARSE SpGEMM through torch's sparse CSR matmul (toeplitz_conv2d_precomputed, and
// toeplitz_conv2d's 'precomputed' method). Also the device-side CSR checks both files use.
//
// T has one row per input pixel p = (a, b) and one column per output pixel; row p holds tap
// (u, t) at output pixel (a + u - offset_h, b + t - offset_w) for every tap landing inside the
// output, kernel zeros included, in (u, t) order, so its columns ascend: the CPU build's layout.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "csr_device_facts.h"
#include "toeplitz_cuda.cuh"
#include "toeplitz_matrix_kernels.cuh"

namespace torch_sparse_conv {

void check_csr_facts(const CsrDeviceFacts& f, int64_t nnz, int64_t columns, const char* what) {
  TORCH_CHECK(f.first_row_pointer == 0, what, "'s row pointers must start at 0, got ",
              f.first_row_pointer);
  TORCH_CHECK(f.row_pointers_non_decreasing, what, "'s row pointers must be non-decreasing");
  TORCH_CHECK(f.last_row_pointer == nnz, what, "'s last row pointer (", f.last_row_pointer,
              ") must equal its number of stored entries (", nnz, ")");
  TORCH_CHECK(nnz == 0 || (f.lowest_column >= 0 && f.highest_column < columns), what,
              "'s column indices must lie in [0, ", columns, "), got range [", f.lowest_column,
              ", ", f.highest_column, "]");
}

void check_csr_on_device(const at::Tensor& crow, const at::Tensor& col, int64_t columns,
                         const char* what) {
  check_csr_facts(csr_facts_on_device(crow, col), col.size(0), columns, what);
}

at::Tensor row_of_entries(const at::Tensor& crow, int64_t rows, int64_t nnz) {
  const at::Tensor counts = crow.narrow(0, 1, rows) - crow.narrow(0, 0, rows);
  return at::repeat_interleave(at::arange(rows, crow.options()), counts, 0, nnz);
}

namespace {

at::Tensor toeplitz_row_pointers(const ToeplitzGeometry& g, const at::TensorOptions& options) {
  const int64_t pixels = g.in_h * g.in_w;
  at::Tensor lengths = at::empty({pixels}, options.dtype(at::kLong));
  row_lengths_kernel<<<toeplitz_blocks_for(pixels), kToeplitzThreads, 0,
                       at::cuda::getCurrentCUDAStream()>>>(frame_of(g),
                                                           lengths.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor crow = at::zeros({pixels + 1}, options.dtype(at::kLong));
  crow.narrow(0, 1, pixels).copy_(at::cumsum(lengths, 0));
  return crow;
}

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
  const at::Tensor t_crow = toeplitz_row_pointers(g, kernel.options());
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
    toeplitz_rows_kernel<scalar_t><<<toeplitz_blocks_for(pixels), kToeplitzThreads, 0,
                                     at::cuda::getCurrentCUDAStream()>>>(
        frame_of(g), t_crow.data_ptr<int64_t>(), nullptr, nullptr, nullptr,
        grad.data_ptr<scalar_t>(), slots.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return slots.sum(0).view({g.kernel_h, g.kernel_w});
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
                  "toeplitz_conv2d_precomputed: x");
  check_csr_facts(csr_facts_from(facts.data() + kCsrFacts), tc.size(0), out_pixels,
                  "toeplitz_conv2d_precomputed: T");
  TORCH_CHECK(facts[2 * kCsrFacts] == 1,
              "toeplitz_conv2d_precomputed: T's columns must ascend strictly within each row, "
              "as toeplitz_matrix builds them");
  return multiply_by_toeplitz_cuda(cr, cc, cv, tr, tc, t_values.contiguous(), g);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> build_toeplitz_matrix_cuda(
    const at::Tensor& kernel, const ToeplitzGeometry& g) {
  const int64_t pixels = g.in_h * g.in_w;
  at::Tensor t_crow = toeplitz_row_pointers(g, kernel.options());
  const int64_t nnz = t_crow[pixels].item<int64_t>();
  at::Tensor t_col = at::empty({nnz}, kernel.options().dtype(at::kLong));
  at::Tensor t_values = at::empty({nnz}, kernel.options());
  AT_DISPATCH_FLOATING_TYPES(kernel.scalar_type(), "toeplitz_matrix_cuda", [&] {
    toeplitz_rows_kernel<scalar_t><<<toeplitz_blocks_for(pixels), kToeplitzThreads, 0,
                                     at::cuda::getCurrentCUDAStream()>>>(
        frame_of(g), t_crow.data_ptr<int64_t>(), kernel.data_ptr<scalar_t>(),
        t_col.data_ptr<int64_t>(), t_values.data_ptr<scalar_t>(), nullptr, nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {t_crow, t_col, t_values};
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
