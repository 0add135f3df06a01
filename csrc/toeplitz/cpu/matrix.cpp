// toeplitz_matrix on CPU: builds T (see csrc/toeplitz/cpu/precomputed.h), and its gradient w.r.t.
// the kernel.
//
// T is a Kronecker product in disguise: input row a reaches the kernel rows u with
// 0 <= a + u - offset_h < H_out, input column b the kernel columns t with
// 0 <= b + t - offset_w < W_out, and row p = (a, b) stores the product of the two ranges. So
// every row's length and start are known in closed form, and rows are filled in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "csrc/common/reduced_precision.h"
#include "csrc/common/arithmetic.h"
#include "csrc/toeplitz/cpu/precomputed.h"

namespace torch_sparse_conv {
namespace {

// The taps [lo, hi) of one kernel axis that an input index lands inside the output with.
struct TapRange {
  int64_t lo, hi;
  int64_t size() const { return hi - lo; }
};

inline TapRange taps_in_output(int64_t index, int64_t offset, int64_t taps, int64_t out) {
  const int64_t lo = std::max<int64_t>(0, offset - index);
  const int64_t hi = std::min<int64_t>(taps, out + offset - index);
  return {lo, std::max(lo, hi)};
}

// Per axis: the tap range of every input index and the running sum of their sizes.
struct AxisTaps {
  std::vector<TapRange> range;
  std::vector<int64_t> before;  // before[i]: sum of range sizes of indices < i
};

AxisTaps axis_taps(int64_t size, int64_t offset, int64_t taps, int64_t out) {
  AxisTaps axis;
  axis.range.resize(size);
  axis.before.resize(size + 1);
  axis.before[0] = 0;
  for (int64_t i = 0; i < size; ++i) {
    axis.range[i] = taps_in_output(i, offset, taps, out);
    axis.before[i + 1] = axis.before[i] + axis.range[i].size();
  }
  return axis;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> build_toeplitz_matrix_cpu(
    const at::Tensor& kernel, const ToeplitzGeometry& g) {
  const AxisTaps rows = axis_taps(g.in_h, g.offset_h, g.kernel_h, g.out_h);
  const AxisTaps cols = axis_taps(g.in_w, g.offset_w, g.kernel_w, g.out_w);
  const int64_t row_total = rows.before[g.in_h], col_total = cols.before[g.in_w];
  int64_t nnz = 0;
  TORCH_CHECK(!__builtin_mul_overflow(row_total, col_total, &nnz),
              "toeplitz_matrix: T would have more than 2^63 entries for image ",
              g.in_h, "x", g.in_w, " and kernel ", g.kernel_h, "x", g.kernel_w);
  const int64_t pixels = g.in_h * g.in_w;  // both sides < 2^31
  at::Tensor t_crow = at::empty({pixels + 1}, kernel.options().dtype(at::kLong));
  at::Tensor t_col = at::empty({nnz}, kernel.options().dtype(at::kLong));
  at::Tensor t_values = at::empty({nnz}, kernel.options());
  int64_t* crow = t_crow.data_ptr<int64_t>();
  int64_t* col = t_col.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(kernel.scalar_type(), "toeplitz_matrix_cpu", [&] {
    const scalar_t* k = kernel.data_ptr<scalar_t>();
    scalar_t* val = t_values.data_ptr<scalar_t>();
    at::parallel_for(0, g.in_h, 1, [&](int64_t a_begin, int64_t a_end) {
      for (int64_t a = a_begin; a < a_end; ++a) {
        const TapRange u = rows.range[a];
        for (int64_t b = 0; b < g.in_w; ++b) {
          const TapRange t = cols.range[b];
          int64_t e = rows.before[a] * col_total + u.size() * cols.before[b];
          crow[a * g.in_w + b] = e;
          for (int64_t ui = u.lo; ui < u.hi; ++ui) {
            const int64_t out_row = (a + ui - g.offset_h) * g.out_w;
            for (int64_t ti = t.lo; ti < t.hi; ++ti, ++e) {
              col[e] = out_row + b + ti - g.offset_w;
              val[e] = k[ui * g.kernel_w + ti];
            }
          }
        }
      }
    });
  });
  crow[pixels] = nnz;
  return {t_crow, t_col, t_values};
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_matrix_cpu(
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode) {
  const ToeplitzGeometry g = toeplitz_geometry(kernel, image_shape, mode);
  return build_toeplitz_matrix_cpu(kernel.contiguous(), g);
}

// grad_kernel[u, t] = the sum of grad_values over T's entries holding tap (u, t), walked in
// the order the build wrote them. Summed per fixed slice of input rows, then over slices in
// order, so the result does not depend on the thread count.
at::Tensor toeplitz_matrix_backward_cpu(const at::Tensor& grad_values, const at::Tensor& kernel,
                                        at::IntArrayRef image_shape, c10::string_view mode) {
  const ToeplitzGeometry g = toeplitz_geometry(kernel, image_shape, mode);
  const AxisTaps rows = axis_taps(g.in_h, g.offset_h, g.kernel_h, g.out_h);
  const AxisTaps cols = axis_taps(g.in_w, g.offset_w, g.kernel_w, g.out_w);
  const int64_t nnz = rows.before[g.in_h] * cols.before[g.in_w];
  TORCH_CHECK(grad_values.dim() == 1 && grad_values.size(0) == nnz &&
                  grad_values.scalar_type() == kernel.scalar_type(),
              "_toeplitz_matrix_backward: grad_values must be 1-D, one ", kernel.scalar_type(),
              " per entry of T (", nnz, "), got ", grad_values.scalar_type(), " of shape ",
              grad_values.sizes());
  constexpr int64_t kSlices = 64;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const at::Tensor grad = grad_values.contiguous();
  at::Tensor partial = at::zeros({kSlices, taps}, kernel.options());
  AT_DISPATCH_FLOATING_TYPES(kernel.scalar_type(), "toeplitz_matrix_backward_cpu", [&] {
    const scalar_t* gv = grad.data_ptr<scalar_t>();
    scalar_t* sums = partial.data_ptr<scalar_t>();
    const int64_t per_slice = ceil_div(g.in_h, kSlices);
    at::parallel_for(0, kSlices, 1, [&](int64_t s_begin, int64_t s_end) {
      for (int64_t s = s_begin; s < s_end; ++s) {
        scalar_t* sum = sums + s * taps;
        const int64_t a_end = std::min(g.in_h, (s + 1) * per_slice);
        for (int64_t a = s * per_slice; a < a_end; ++a) {
          const TapRange u = rows.range[a];
          int64_t e = rows.before[a] * cols.before[g.in_w];
          for (int64_t b = 0; b < g.in_w; ++b) {
            const TapRange t = cols.range[b];
            for (int64_t ui = u.lo; ui < u.hi; ++ui) {
              for (int64_t ti = t.lo; ti < t.hi; ++ti) sum[ui * g.kernel_w + ti] += gv[e++];
            }
          }
        }
      }
    });
  });
  return partial.sum(0).view({g.kernel_h, g.kernel_w});
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  using namespace torch_sparse_conv;  // NOLINT: the kernels and their wrapper
  m.impl("toeplitz_matrix", computed_in_float32<&toeplitz_matrix_cpu>());
  m.impl("_toeplitz_matrix_backward", computed_in_float32<&toeplitz_matrix_backward_cpu>());
}
