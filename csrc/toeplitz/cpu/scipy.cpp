// _toeplitz_conv2d_scipy on CPU: toeplitz_conv2d's direct method writing its output the way
// scipy.sparse stores a CSR matrix, for compat.Toeplitz_convolution2d.
//
// scipy's own index arrays (int32 or int64) come in as they are; the output has int32 indices
// when its size allows (scipy's default, which it would otherwise reach by scanning and
// copying int64 arrays), and leaves out exact zeros (as sparse_convolution does), checked as
// the images are written instead of by a scan afterwards.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "csrc/common/output_buffer_cache.h"
#include "csrc/toeplitz/cpu/direct.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {
namespace {

// int32 indices when every index and row pointer fits whatever the values: the output's
// width and an upper bound of its entries (B * H_out*W_out, and every input entry times the
// kernel's taps). Shapes alone decide, so the fake kernel can say the same.
bool fits_int32(const ToeplitzGeometry& g, int64_t input_entries) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  const int64_t pixels = g.out_h * g.out_w;
  if (pixels > kMax) return false;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const bool by_input = input_entries <= kMax / taps;
  const bool by_frame = g.batch <= kMax / std::max<int64_t>(pixels, 1);
  return by_input || by_frame;
}

template <typename index_t, typename scalar_t>
ScipyCsrBuffers convolve(const int64_t* r, const int64_t* c, const scalar_t* v,
                         const scalar_t* k, const ToeplitzGeometry& g) {
  // A plain vector, not a tensor: at batch 1 each tensor allocation is a visible part of a call.
  std::vector<int64_t> row_ptr(g.batch + 1, 0);
  DirectOutput direct = direct_method<index_t>(r, c, v, k, g, /*drop_zeros=*/true, row_ptr.data());
  ScipyCsrBuffers out;
  out.index_type = c10::CppTypeToScalarType<index_t>::value;
  out.value_type = c10::CppTypeToScalarType<scalar_t>::value;
  out.rows = g.batch;
  out.entries = direct.entries;
  out.capacity = direct.capacity;
  out.indices = std::move(direct.cols);
  out.values = std::move(direct.vals);
  out.indptr = allocate_output((g.batch + 1) * sizeof(index_t));
  std::copy(row_ptr.begin(), row_ptr.end(), static_cast<index_t*>(out.indptr.get()));
  return out;
}

}  // namespace

const int64_t* as_int64_indices(const void* data, bool is_int32, int64_t size,
                                c10::DataPtr& storage) {
  if (!is_int32) return static_cast<const int64_t*>(data);
  storage = allocate_output(size * sizeof(int64_t));
  const int32_t* narrow = static_cast<const int32_t*>(data);
  int64_t* wide = static_cast<int64_t*>(storage.get());
  std::copy(narrow, narrow + size, wide);
  return wide;
}

ScipyCsrBuffers toeplitz_conv2d_scipy_buffers(const int64_t* crow, const int64_t* col,
                                              const void* values, const void* kernel,
                                              at::ScalarType dtype, const ToeplitzGeometry& g) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "_toeplitz_conv2d_scipy: x must hold float32 or float64 values, got ", dtype);
  ScipyCsrBuffers out;
  AT_DISPATCH_FLOATING_TYPES(dtype, "toeplitz_conv2d_scipy_cpu", [&] {
    const auto* v = static_cast<const scalar_t*>(values);
    const auto* k = static_cast<const scalar_t*>(kernel);
    out = fits_int32(g, crow[g.batch]) ? convolve<int32_t, scalar_t>(crow, col, v, k, g)
                                       : convolve<int64_t, scalar_t>(crow, col, v, k, g);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_scipy_cpu(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode) {
  for (const at::Tensor* t : {&crow, &col}) {
    TORCH_CHECK(t->scalar_type() == at::kInt || t->scalar_type() == at::kLong,
                "_toeplitz_conv2d_scipy: x's index arrays must be int32 or int64, got ",
                t->scalar_type());
  }
  // The kernels read int64 indices; the input is the small side of the work.
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous();
  c10::DataPtr wide_crow, wide_col;
  const int64_t* r = as_int64_indices(cr.data_ptr(), cr.scalar_type() == at::kInt, cr.numel(),
                                      wide_crow);
  const int64_t* c = as_int64_indices(cc.data_ptr(), cc.scalar_type() == at::kInt, cc.numel(),
                                      wide_col);
  const at::Tensor r64 = at::from_blob(const_cast<int64_t*>(r), cr.sizes(), at::kLong);
  const at::Tensor c64 = at::from_blob(const_cast<int64_t*>(c), cc.sizes(), at::kLong);
  const ToeplitzGeometry g = check_toeplitz_args(r64, c64, values, kernel, image_shape, mode);
  const at::Tensor cv = values.contiguous(), ck = kernel.contiguous();
  ScipyCsrBuffers out =
      toeplitz_conv2d_scipy_buffers(r, c, cv.data_ptr(), ck.data_ptr(), cv.scalar_type(), g);
  return {tensor_over(std::move(out.indptr), out.rows + 1, out.rows + 1, out.index_type),
          tensor_over(std::move(out.indices), out.entries, out.capacity, out.index_type),
          tensor_over(std::move(out.values), out.entries, out.capacity, out.value_type)};
}

}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  m.impl("_toeplitz_conv2d_scipy", &torch_sparse_conv::toeplitz_conv2d_scipy_cpu);
}
