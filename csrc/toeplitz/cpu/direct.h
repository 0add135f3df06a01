// The direct method of the Toeplitz operators on CPU, shared by the operators that write its
// output in different forms (csrc/toeplitz/cpu/conv2d.cpp, scipy.cpp).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "csrc/toeplitz/cpu/direct/destination.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {

// The direct method on images [begin, end) of the CSR batch (crow, col, val), columns
// already checked to lie in [0, H*W), written to dst (image n's entries sorted by column);
// counts[n]: how many entries image n wrote. Out is toeplitz_direct::KeepAll (every covered
// pixel, the operator's convention) or Sink<int32_t or int64_t, true> (exact zeros left out,
// scipy's); scalar_t float or double. Compiled per instruction set in
// csrc/toeplitz/cpu/direct/passes.cpp.
template <typename Out, typename scalar_t>
void direct_pass(const int64_t* crow, const int64_t* col, const scalar_t* val,
                 const scalar_t* kernel, const ToeplitzGeometry& g, int64_t begin, int64_t end,
                 const toeplitz_direct::ImageDestination<typename Out::index, scalar_t>& dst,
                 int64_t* counts);

// The direct method's output for a whole batch: columns (index_t) and values, image after
// image, in buffers of `capacity` >= `entries` elements (csrc/toeplitz/cpu/direct/run.cpp).
struct DirectOutput {
  c10::DataPtr cols, vals;
  int64_t entries = 0, capacity = 0;
};

// Runs the direct method over the batch in one pass: each thread writes its share of the
// images (contiguous, about equal entries) into a staging buffer that grows as it goes, and
// the shares are then put together; where images cover nearly all of the frame, into
// upper-bound slots instead, whose gaps are closed in place. row_ptr (g.batch + 1) receives
// the row pointers. index_t int32 only with drop_zeros.
template <typename index_t, typename scalar_t>
DirectOutput direct_method(const int64_t* crow, const int64_t* col, const scalar_t* val,
                           const scalar_t* kernel, const ToeplitzGeometry& g, bool drop_zeros,
                           int64_t* row_ptr);

// The CPU kernel of _toeplitz_conv2d_scipy (csrc/toeplitz/cpu/scipy.cpp).
std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_scipy_cpu(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode);

// Its result as bare buffers (from csrc/common/output_buffer_cache.h), for callers that hand them
// on without tensors (the Python module's numpy entry point for compat.Toeplitz_convolution2d):
// scipy's CSR layout, row pointers and columns of index_type (int32 when the output's size
// allows), values of value_type.
struct ScipyCsrBuffers {
  c10::DataPtr indptr, indices, values;  // rows + 1, and capacity >= entries, elements
  at::ScalarType index_type = at::kInt, value_type = at::kDouble;
  int64_t rows = 0, entries = 0, capacity = 0;
};

// The kernel on raw arrays: crow (g.batch + 1) and col already checked (check_csr_arrays),
// values and kernel (C-order kH x kW) of dtype, float32 or float64.
ScipyCsrBuffers toeplitz_conv2d_scipy_buffers(const int64_t* crow, const int64_t* col,
                                              const void* values, const void* kernel,
                                              at::ScalarType dtype, const ToeplitzGeometry& g);

// `size` indices as int64: the data itself, or (int32 data) a copy widened into storage, a
// buffer from the output cache (scipy's int32 indices are widened on every compat call, and a
// fresh buffer of that size faulted every page).
const int64_t* as_int64_indices(const void* data, bool is_int32, int64_t size,
                                c10::DataPtr& storage);

}  // namespace torch_sparse_conv
