// _toeplitz_conv2d_backward on CPU.
//
// With G the gradient of the output values (on the output's sparsity pattern), each input
// entry (a, b, v) and kernel tap (u, t) meet at output pixel (a + u - offset_h,
// b + t - offset_w):  grad_values[entry] += kernel[u, t] * G  and  grad_kernel[u, t] += v * G.
// G is looked up in the image's sorted output columns with one binary search per (entry, u)
// and a forward walk over t. The kernel gradient is summed per fixed slice of images and the
// slices in order, so the result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "csrc/common/reduced_precision.h"
#include "csrc/common/arithmetic.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {
namespace {

constexpr int64_t kKernelGradSlices = 64;

template <typename scalar_t>
void backward_image(int64_t n, const int64_t* crow, const int64_t* col, const scalar_t* val,
                    const scalar_t* kernel, const int64_t* out_crow, const int64_t* out_col,
                    const scalar_t* grad, const ToeplitzGeometry& g, scalar_t* grad_values,
                    scalar_t* grad_kernel) {
  const int64_t* first = out_col + out_crow[n];
  const int64_t* last = out_col + out_crow[n + 1];
  for (int64_t e = crow[n]; e < crow[n + 1]; ++e) {
    const int64_t a = col[e] / g.in_w, b = col[e] % g.in_w;
    const int64_t c0 = b - g.offset_w;
    const int64_t t_lo = std::max<int64_t>(0, -c0);
    const int64_t t_hi = std::min<int64_t>(g.kernel_w, g.out_w - c0);
    scalar_t grad_value = 0;
    for (int64_t u = 0; u < g.kernel_h; ++u) {
      const int64_t r = a + u - g.offset_h;
      if (r < 0 || r >= g.out_h || t_lo >= t_hi) continue;
      const int64_t base = r * g.out_w + c0;
      const int64_t* pos = std::lower_bound(first, last, base + t_lo);
      for (int64_t t = t_lo; t < t_hi; ++t) {
        while (pos < last && *pos < base + t) ++pos;
        if (pos == last) break;
        if (*pos != base + t) continue;
        const scalar_t gv = grad[pos - out_col];
        grad_value += kernel[u * g.kernel_w + t] * gv;
        if (grad_kernel) grad_kernel[u * g.kernel_w + t] += val[e] * gv;
      }
    }
    if (grad_values) grad_values[e] = grad_value;
  }
}

std::tuple<at::Tensor, at::Tensor> toeplitz_conv2d_backward_cpu(
    const at::Tensor& grad_out_values, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, const at::Tensor& kernel, const at::Tensor& out_crow,
    const at::Tensor& out_col, at::IntArrayRef image_shape, c10::string_view mode,
    std::array<bool, 2> output_mask) {
  const ToeplitzGeometry g = check_toeplitz_args(crow, col, values, kernel, image_shape, mode);
  check_toeplitz_backward_args(grad_out_values, out_crow, out_col, values, g);
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous(), cv = values.contiguous();
  const at::Tensor ck = kernel.contiguous(), ocr = out_crow.contiguous();
  const at::Tensor occ = out_col.contiguous(), go = grad_out_values.contiguous();
  {
    // The pattern toeplitz_conv2d returns: row pointers from 0 to nnz, strictly ascending
    // columns in [0, H_out*W_out) per image. A repeated or stray column would leave
    // gradients unread without an error.
    const int64_t* r = ocr.data_ptr<int64_t>();
    const int64_t* c = occ.data_ptr<int64_t>();
    check_csr_arrays(r, c, g.batch, occ.size(0), g.out_h * g.out_w, output_pattern_csr_names());
    for (int64_t n = 0; n < g.batch; ++n) {
      for (int64_t k = r[n] + 1; k < r[n + 1]; ++k) {
        TORCH_CHECK(c[k] > c[k - 1],
                    "_toeplitz_conv2d_backward: the output pattern of every image must have "
                    "strictly ascending columns, as toeplitz_conv2d returns it (image ", n, ")");
      }
    }
  }
  at::Tensor grad_values, grad_kernel;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "toeplitz_conv2d_backward_cpu", [&] {
    const int64_t taps = g.kernel_h * g.kernel_w;
    if (output_mask[0]) grad_values = at::zeros_like(cv);
    at::Tensor slices;
    if (output_mask[1]) slices = at::zeros({kKernelGradSlices, taps}, kernel.options());
    scalar_t* gv = output_mask[0] ? grad_values.data_ptr<scalar_t>() : nullptr;
    scalar_t* gk = output_mask[1] ? slices.data_ptr<scalar_t>() : nullptr;
    const int64_t per_slice = ceil_div(g.batch, kKernelGradSlices);
    at::parallel_for(0, kKernelGradSlices, 1, [&](int64_t begin, int64_t end) {
      for (int64_t slice = begin; slice < end; ++slice) {
        const int64_t n_end = std::min(g.batch, (slice + 1) * per_slice);
        for (int64_t n = slice * per_slice; n < n_end; ++n) {
          backward_image<scalar_t>(n, cr.data_ptr<int64_t>(), cc.data_ptr<int64_t>(),
                                   cv.data_ptr<scalar_t>(), ck.data_ptr<scalar_t>(),
                                   ocr.data_ptr<int64_t>(), occ.data_ptr<int64_t>(),
                                   go.data_ptr<scalar_t>(), g, gv,
                                   gk ? gk + slice * taps : nullptr);
        }
      }
    });
    if (output_mask[1]) grad_kernel = slices.sum(0).view({g.kernel_h, g.kernel_w});
  });
  return {grad_values, grad_kernel};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  using namespace torch_sparse_conv;  // NOLINT: the kernels and their wrapper
  m.impl("_toeplitz_conv2d_backward", computed_in_float32<&toeplitz_conv2d_backward_cpu>());
}
