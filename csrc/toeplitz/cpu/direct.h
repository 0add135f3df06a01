// The direct method's two passes (csrc/toeplitz/cpu/direct/passes.cpp), shared by the operators
// that write its output in other forms. Both run over images [begin, end) of the CSR batch
// (crow, col, val), columns already checked to lie in [0, H*W).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

#include "csrc/common/arithmetic.h"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {

#define TSC_DECLARE_PASSES(SCALAR)                                                             \
  /* counts[n]: the number of output pixels image n covers. */                                 \
  void direct_count_pass(const int64_t* crow, const int64_t* col, const SCALAR* val,           \
                         const SCALAR* kernel, const ToeplitzGeometry& g, int64_t begin,       \
                         int64_t end, int64_t* counts);                                        \
  /* Writes image n's covered pixels, sorted, at cols / vals + offsets[n]; written[n]: how */ \
  /* many (unless written is null). */                                                         \
  void direct_fill_pass(const int64_t* crow, const int64_t* col, const SCALAR* val,            \
                        const SCALAR* kernel, const ToeplitzGeometry& g, int64_t begin,        \
                        int64_t end, const int64_t* offsets, int64_t* cols, SCALAR* vals,      \
                        int64_t* written = nullptr);                                           \
  /* The same, leaving out pixels whose value is exactly zero (scipy's convention); */         \
  /* kept[n]: how many image n wrote. */                                                       \
  void direct_fill_pass_dropping_zeros(const int64_t* crow, const int64_t* col,                \
                                       const SCALAR* val, const SCALAR* kernel,                \
                                       const ToeplitzGeometry& g, int64_t begin, int64_t end,  \
                                       const int64_t* offsets, int32_t* cols, SCALAR* vals,    \
                                       int64_t* kept);                                         \
  void direct_fill_pass_dropping_zeros(const int64_t* crow, const int64_t* col,                \
                                       const SCALAR* val, const SCALAR* kernel,                \
                                       const ToeplitzGeometry& g, int64_t begin, int64_t end,  \
                                       const int64_t* offsets, int64_t* cols, SCALAR* vals,    \
                                       int64_t* kept);
TSC_DECLARE_PASSES(float)
TSC_DECLARE_PASSES(double)
#undef TSC_DECLARE_PASSES

// Runs f(begin, end) over images [0, batch): across threads when the batch's products
// (entries x taps) are worth it, else on this thread, since starting the thread team costs
// a few microseconds, as much as a small batch's whole work (batch 1 is a third of
// sparse_convolution's grid).
template <typename F>
void for_image_ranges(int64_t batch, int64_t entries, const ToeplitzGeometry& g, const F& f) {
  constexpr int64_t kParallelProducts = 4096;
  const int64_t taps = g.kernel_h * g.kernel_w;
  if (batch <= 1 || entries < ceil_div(kParallelProducts, taps)) {
    if (batch > 0) f(int64_t(0), batch);
    return;
  }
  at::parallel_for(0, batch, 1, f);
}

// Whether images are expected to cover nearly all of the frame: on average their entries
// times the kernel's taps reach twice the frame's size (about 86 % coverage for random
// entries). Then the upper bound min(entries * taps, H_out*W_out) is nearly exact and a count
// pass would cost more than closing the gaps. Measured on sparse_convolution's grid (2
// threads): at ratio 2.5 and above upper bounds win by 1.2-1.5x; at ratio 1.2 (about 70 %
// coverage) they lose, by up to 4x where the output is tens of megabytes.
inline bool dense_outputs(const ToeplitzGeometry& g, int64_t input_entries) {
  const int64_t pixels = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w;
  return g.batch > 0 && input_entries / g.batch >= (2 * pixels + taps - 1) / taps;
}

// Moves image n's kept entries from offsets[n] down to kept_offsets[n] (never later) in
// place, in increasing n, so nothing is overwritten before it is moved. In place because
// fresh arrays of this size cost more in page faults than the copy itself.
template <typename index_t, typename scalar_t>
void close_gaps(index_t* cols, scalar_t* vals, const int64_t* offsets,
                const int64_t* kept_offsets, int64_t batch) {
  for (int64_t n = 0; n < batch; ++n) {
    const int64_t count = kept_offsets[n + 1] - kept_offsets[n];
    if (kept_offsets[n] == offsets[n] || count == 0) continue;
    std::memmove(cols + kept_offsets[n], cols + offsets[n], count * sizeof(index_t));
    std::memmove(vals + kept_offsets[n], vals + offsets[n], count * sizeof(scalar_t));
  }
}

// Image n's output slots when outputs are dense (see dense_outputs): the upper bound
// min(entries * taps, H_out*W_out), as prefix sums in offsets (batch + 1, offsets[0] = 0).
inline void upper_bound_offsets(const int64_t* crow, const ToeplitzGeometry& g,
                                int64_t* offsets) {
  const int64_t pixels = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w;
  for (int64_t n = 0; n < g.batch; ++n) {
    const int64_t image_entries = crow[n + 1] - crow[n];
    offsets[n + 1] =
        offsets[n] + (image_entries >= pixels / taps + 1 ? pixels : image_entries * taps);
  }
}

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

// `size` indices as int64: the data itself, or (int32 data) a copy widened into storage.
const int64_t* as_int64_indices(const void* data, bool is_int32, int64_t size,
                                std::vector<int64_t>& storage);

}  // namespace torch_sparse_conv
