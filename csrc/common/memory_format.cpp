// NCHW <-> channels-last for the CPU kernels (memory_format.h). Per sample it is the
// transpose of a (rows x cols) row-major matrix, done in tiles of 128 x 128 bytes (32 x 32
// float32) made of in-register 8 x 8 (float64: 4 x 4) transposes: every line a tile reads
// or writes is used whole while the tile is in L1. Bands of 16 rows across all columns
// wrote each destination line in two halves far apart and ran at 5 GB/s; on a batch-8
// 64->256 1x1 layer at 56x56, tiles of 32 x 32 took 3.4-3.6 ms a call, 64 x 64 3.7-4.2.
#include "csrc/common/memory_format.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "csrc/common/cpu_isa.h"
#include "csrc/common/vector.h"

namespace torch_sparse_conv {
namespace {

// dst[c][r] = src[r][c] for r in [r0, r1), every c < cols: one band of rows, by elements.
template <typename element_t>
void transpose_band_scalar(const element_t* src, element_t* dst, int64_t rows, int64_t cols,
                           int64_t r0, int64_t r1) {
  constexpr int64_t kColumns = 64 / sizeof(element_t);  // one destination line per row
  for (int64_t c0 = 0; c0 < cols; c0 += kColumns) {
    const int64_t c1 = std::min(cols, c0 + kColumns);
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
    }
  }
}

#ifdef TSC_X86_ISAS
// The same with vectors: scalar_t is the float type of the element's size (the transpose
// moves bits; it never computes with them). The band goes in column blocks of kBlockColumns,
// so the lines it reads and writes for one block (2 x 4 KiB) stay in L1.
template <typename scalar_t>
TSC_INLINE void transpose_band_vectors(const scalar_t* src, scalar_t* dst, int64_t rows,
                                       int64_t cols, int64_t r0, int64_t r1) {
  using V = Vec<scalar_t>;
  constexpr int L = V::lanes;
  constexpr int64_t kBlockColumns = 128 / sizeof(scalar_t);
  const int64_t vector_end = r0 + (r1 - r0) / L * L;  // whole blocks of L rows
  const int64_t column_end = cols / L * L;
  for (int64_t c0 = 0; c0 < column_end; c0 += kBlockColumns) {
    const int64_t c1 = std::min(column_end, c0 + kBlockColumns);
    for (int64_t r = r0; r < vector_end; r += L) {
      for (int64_t c = c0; c < c1; c += L) {
        typename V::type v[L];
        for (int i = 0; i < L; ++i) v[i] = V::load(src + (r + i) * cols + c);
        transpose(v);
        for (int i = 0; i < L; ++i) V::store(dst + (c + i) * rows + r, v[i]);
      }
    }
  }
  for (int64_t c = column_end; c < cols; ++c) {  // the last columns, by element
    for (int64_t r = r0; r < vector_end; ++r) dst[c * rows + r] = src[r * cols + c];
  }
  transpose_band_scalar(src, dst, rows, cols, vector_end, r1);
}

template <typename scalar_t>
TSC_TARGET_AVX512 void transpose_band_avx512(const scalar_t* src, scalar_t* dst, int64_t rows,
                                             int64_t cols, int64_t r0, int64_t r1) {
  transpose_band_vectors(src, dst, rows, cols, r0, r1);
}

template <typename scalar_t>
TSC_TARGET_AVX2 void transpose_band_avx2(const scalar_t* src, scalar_t* dst, int64_t rows,
                                         int64_t cols, int64_t r0, int64_t r1) {
  transpose_band_vectors(src, dst, rows, cols, r0, r1);
}
#endif

template <typename scalar_t>
using BandFn = void (*)(const scalar_t*, scalar_t*, int64_t, int64_t, int64_t, int64_t);

// 2-byte elements (float16, bfloat16) have no vector transpose: their bands go by element.
template <typename scalar_t>
BandFn<scalar_t> band_kernel() {
#ifdef TSC_X86_ISAS
  if constexpr (sizeof(scalar_t) == 2) return &transpose_band_scalar<scalar_t>;
  else return isa_variant<BandFn<scalar_t>>(&transpose_band_avx512<scalar_t>,
                                       &transpose_band_avx2<scalar_t>,
                                       &transpose_band_scalar<scalar_t>);
#else
  return &transpose_band_scalar<scalar_t>;
#endif
}

// dst[n][c][r] = src[n][r][c] for n < batch, r < rows, c < cols, in bands of kBandRows
// rows, the bands of all samples shared among the threads.
template <typename scalar_t>
void transpose_samples(const scalar_t* src, scalar_t* dst, int64_t batch, int64_t rows,
                       int64_t cols) {
  constexpr int64_t kBandRows = 128 / sizeof(scalar_t);
  const BandFn<scalar_t> band = band_kernel<scalar_t>();
  const int64_t bands = (rows + kBandRows - 1) / kBandRows;
  at::parallel_for(0, batch * bands, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / bands, r0 = item % bands * kBandRows;
      band(src + n * rows * cols, dst + n * rows * cols, rows, cols, r0,
           std::min(rows, r0 + kBandRows));
    }
  });
}

// The transpose moves elements, not values: every dtype goes through a type of its size.
void transpose(const at::Tensor& src, at::Tensor& dst, int64_t rows, int64_t cols) {
  const int64_t batch = src.size(0);
  switch (src.element_size()) {
    case 2:
      transpose_samples(static_cast<const int16_t*>(src.const_data_ptr()),
                        static_cast<int16_t*>(dst.data_ptr()), batch, rows, cols);
      return;
    case 4:
      transpose_samples(static_cast<const float*>(src.const_data_ptr()),
                        static_cast<float*>(dst.data_ptr()), batch, rows, cols);
      return;
    case 8:
      transpose_samples(static_cast<const double*>(src.const_data_ptr()),
                        static_cast<double*>(dst.data_ptr()), batch, rows, cols);
      return;
    default:
      dst.copy_(src);
  }
}

bool blocked_transpose_applies(const at::Tensor& tensor) {
  return tensor.device().is_cpu() && tensor.dim() == 4 && tensor.layout() == at::kStrided &&
         !tensor.is_conj() && !tensor.is_neg();
}

}  // namespace

at::Tensor in_memory_format_of(const at::Tensor& input, const at::Tensor& output) {
  const at::MemoryFormat format = input.suggest_memory_format();
  if (format != at::MemoryFormat::ChannelsLast || !blocked_transpose_applies(output) ||
      !output.is_contiguous() || output.is_contiguous(format)) {
    return output.contiguous(format);
  }
  at::Tensor result = at::empty(output.sizes(), output.options().memory_format(format));
  // NCHW: per sample a (C x HW) matrix; channels-last stores its (HW x C) transpose.
  transpose(output, result, output.size(1), output.size(2) * output.size(3));
  return result;
}

at::Tensor nchw_contiguous(const at::Tensor& input) {
  if (input.is_contiguous() || !blocked_transpose_applies(input) ||
      !input.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return input.contiguous();
  }
  at::Tensor result = at::empty(input.sizes(), input.options());
  transpose(input, result, input.size(2) * input.size(3), input.size(1));
  return result;
}

}  // namespace torch_sparse_conv
