// toeplitz_conv2d forward on CPU: the kernel registered for the operator, which runs method
// 'direct' (its passes in csrc/toeplitz/cpu/direct/) or 'precomputed'
// (csrc/toeplitz/cpu/spgemm.cpp).
//
// The direct method, per image (in parallel), goes one of two ways, both with memory bounded by
// the image's own work:
// * its output bounding box is small next to its contributions (small frames, ROIs): summed
//   over the box and emitted in raster order. Entries that fill the box densely go into a
//   dense input tile correlated with the kernel at full vector width; otherwise the entries
//   are scattered into sums over the box, with flags in bytes cleared per image when the
//   products cover the box, else in bits (sums and bits stay zero between images, so a
//   sparsely covered box costs a bit a pixel); zero-dropping outputs need no flags at all;
// * otherwise the stored entries, sorted by pixel, are grouped by input row and only output
//   rows within kH - 1 of an input row are visited, in increasing order, so the work never
//   depends on the frame size. Each such row sums the contributions of the (at most kH)
//   input rows that reach it over its touched column span: in a dense buffer when the span
//   is small next to the contributions, else by sorting (column, value) pairs.
// A count pass (footprints only, no arithmetic), a prefix sum and a fill pass write the
// exact-size CSR with no intermediate buffer; where the images cover nearly all of the frame
// (dense_outputs), upper-bound slots replace the count pass and one in-place pass closes the
// gaps, as in scipy.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

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
  at::Tensor out_crow = at::zeros({g.batch + 1}, crow.options());
  at::Tensor out_col, out_values;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "toeplitz_conv2d_cpu", [&] {
    const int64_t* r = cr.data_ptr<int64_t>();
    const int64_t* c = cc.data_ptr<int64_t>();
    const scalar_t* v = cv.data_ptr<scalar_t>();
    const scalar_t* k = ck.data_ptr<scalar_t>();
    int64_t* oc = out_crow.data_ptr<int64_t>();
    if (dense_outputs(g, cc.size(0))) {
      // Upper-bound slots, the fill pass, then the gaps closed: out_crow from what was written.
      std::vector<int64_t> slots(g.batch + 1, 0);
      upper_bound_offsets(r, g, slots.data());
      out_col = empty_output(slots[g.batch], at::kLong);
      out_values = empty_output(slots[g.batch], values.scalar_type());
      int64_t* dst_col = out_col.data_ptr<int64_t>();
      scalar_t* dst_val = out_values.data_ptr<scalar_t>();
      for_image_ranges(g.batch, cc.size(0), g, [&](int64_t begin, int64_t end) {
        direct_fill_pass(r, c, v, k, g, begin, end, slots.data(), dst_col, dst_val, oc + 1);
      });
      for (int64_t n = 0; n < g.batch; ++n) oc[n + 1] += oc[n];
      if (oc[g.batch] != slots[g.batch]) {
        close_gaps(dst_col, dst_val, slots.data(), oc, g.batch);
        out_col = out_col.narrow(0, 0, oc[g.batch]);
        out_values = out_values.narrow(0, 0, oc[g.batch]);
      }
      return;
    }
    // Count pass, prefix sum, fill pass: the output is allocated once at its exact size.
    for_image_ranges(g.batch, cc.size(0), g, [&](int64_t begin, int64_t end) {
      direct_count_pass(r, c, v, k, g, begin, end, oc + 1);
    });
    for (int64_t n = 0; n < g.batch; ++n) oc[n + 1] += oc[n];
    out_col = empty_output(oc[g.batch], at::kLong);
    out_values = empty_output(oc[g.batch], values.scalar_type());
    int64_t* dst_col = out_col.data_ptr<int64_t>();
    scalar_t* dst_val = out_values.data_ptr<scalar_t>();
    for_image_ranges(g.batch, cc.size(0), g, [&](int64_t begin, int64_t end) {
      direct_fill_pass(r, c, v, k, g, begin, end, oc, dst_col, dst_val);
    });
  });
  return {out_crow, out_col, out_values};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  using namespace torch_sparse_conv;  // NOLINT: the kernels and their wrapper
  m.impl("toeplitz_conv2d", computed_in_float32<&toeplitz_conv2d_cpu>());
}
