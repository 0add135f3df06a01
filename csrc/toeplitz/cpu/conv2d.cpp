// toeplitz_conv2d forward on CPU: the kernel registered for the operator, which runs method
// 'direct' (its passes in csrc/toeplitz/cpu/direct/) or 'precomputed'
// (csrc/toeplitz/cpu/spgemm.cpp).
//
// The direct method, per image (in parallel), goes one of two ways, both with memory bounded by
// the image's own work:
// * its output bounding box is small next to its contributions (small frames, ROIs): summed
//   over the box and emitted in raster order. Entries that fill the box densely go into a
//   dense input tile correlated with the kernel at full vector width; otherwise the entries
//   are scattered into sums over the box, with flags in bits: from each input row's
//   footprint when the products cover the box, else a mark per product (sums and bits stay
//   zero between images, so a sparsely covered box costs a bit a pixel); zero-dropping
//   outputs need no flags at all;
// * otherwise the stored entries, sorted by pixel, are grouped by input row and only output
//   rows within kH - 1 of an input row are visited, in increasing order, so the work never
//   depends on the frame size. Each such row sums the contributions of the (at most kH)
//   input rows that reach it over its touched column span: in a dense buffer when the span
//   is small next to the contributions, else by sorting (column, value) pairs.
// One pass writes the images, each thread its share into a staging buffer that becomes the
// output or is copied into it (csrc/toeplitz/cpu/direct/run.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "csrc/common/reduced_precision.h"
#include "csrc/common/output_buffer_cache.h"
#include "csrc/toeplitz/cpu/direct.h"
#include "csrc/toeplitz/cpu/precomputed.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_cpu(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    c10::string_view method) {
  const ToeplitzGeometry g = check_toeplitz_args(crow, col, values, kernel, image_shape, mode);
  // 'auto' is 'direct'. Measured on sparse_convolution's 36-cell grid (50x50 and 100x100,
  // kernels 5x5 and 11x11, batch 1/50/500, density 0.001/0.01/0.1; 1 thread, BENCHMARKS.md),
  // x @ T with T already built took 1.15x to 5.6x the direct kernel's time in every cell: both
  // do the same products, but the product reads each tap's column and value from T where
  // direct computes them, and T's span bounds its buffers less tightly than direct's boxes.
  // Building T per call only adds to that, so nothing here chooses 'precomputed'.
  if (parse_toeplitz_method(method) == ToeplitzMethod::Precomputed) {
    const auto [t_crow, t_col, t_values] = build_toeplitz_matrix_cpu(kernel.contiguous(), g);
    return sparse_times_toeplitz_cpu(crow, col, values, t_crow, t_col, t_values,
                                     g.out_h * g.out_w);
  }
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous();
  const at::Tensor cv = values.contiguous(), ck = kernel.contiguous();
  at::Tensor out_crow = at::empty({g.batch + 1}, crow.options());
  DirectOutput direct;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "toeplitz_conv2d_cpu", [&] {
    direct = direct_method<int64_t>(cr.data_ptr<int64_t>(), cc.data_ptr<int64_t>(),
                                    cv.data_ptr<scalar_t>(), ck.data_ptr<scalar_t>(), g,
                                    /*drop_zeros=*/false, out_crow.data_ptr<int64_t>());
  });
  at::Tensor out_col = tensor_over(std::move(direct.cols), direct.entries, direct.capacity,
                                   at::kLong);
  at::Tensor out_values = tensor_over(std::move(direct.vals), direct.entries, direct.capacity,
                                      values.scalar_type());
  return {out_crow, out_col, out_values};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  using namespace torch_sparse_conv;  // NOLINT: the kernels and their wrapper
  m.impl("toeplitz_conv2d", computed_in_float32<&toeplitz_conv2d_cpu>());
}
