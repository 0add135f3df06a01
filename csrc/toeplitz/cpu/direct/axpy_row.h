// row[0, n) += v * krow[0, n): the innermost loop of every Toeplitz scatter, where n is the
// number of a kernel row's taps that land in the output (a handful to a few dozen).
#pragma once

#include <cstdint>

#include "csrc/common/cpu_isa.h"

#ifdef TSC_X86_ISAS
#include <immintrin.h>
#define TSC_AXPY_AVX512 1
#endif

namespace torch_sparse_conv {
namespace {  // internal linkage: each kernel build inlines its own copy, no PLT call

#ifdef TSC_AXPY_AVX512
// Whole vectors, then one masked vector for the rest: no scalar tail and no loop-overhead
// branches for the short rows of small kernels. Inlined into the AVX-512 build of the
// kernels (csrc/toeplitz/cpu/direct/passes.cpp compiles one per instruction set); the others never
// reach it.
TSC_TARGET_AVX512 inline void axpy_row_avx512(double* row, const double* krow, double v,
                                               int64_t n) {
  const __m512d scale = _mm512_set1_pd(v);
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m512d sum = _mm512_fmadd_pd(scale, _mm512_loadu_pd(krow + t), _mm512_loadu_pd(row + t));
    _mm512_storeu_pd(row + t, sum);
  }
  if (t < n) {
    const __mmask8 lanes = __mmask8((1u << (n - t)) - 1);
    const __m512d sum = _mm512_fmadd_pd(scale, _mm512_maskz_loadu_pd(lanes, krow + t),
                                        _mm512_maskz_loadu_pd(lanes, row + t));
    _mm512_mask_storeu_pd(row + t, lanes, sum);
  }
}

TSC_TARGET_AVX512 inline void axpy_row_avx512(float* row, const float* krow, float v,
                                               int64_t n) {
  const __m512 scale = _mm512_set1_ps(v);
  int64_t t = 0;
  for (; t + 16 <= n; t += 16) {
    const __m512 sum = _mm512_fmadd_ps(scale, _mm512_loadu_ps(krow + t), _mm512_loadu_ps(row + t));
    _mm512_storeu_ps(row + t, sum);
  }
  if (t < n) {
    const __mmask16 lanes = __mmask16((1u << (n - t)) - 1);
    const __m512 sum = _mm512_fmadd_ps(scale, _mm512_maskz_loadu_ps(lanes, krow + t),
                                       _mm512_maskz_loadu_ps(lanes, row + t));
    _mm512_mask_storeu_ps(row + t, lanes, sum);
  }
}

#endif

template <typename scalar_t>
inline void axpy_row(scalar_t* row, const scalar_t* krow, scalar_t v, int64_t n) {
#ifdef TSC_AXPY_AVX512
  if (cpu_isa() == CpuIsa::Avx512) {
    axpy_row_avx512(row, krow, v, n);
    return;
  }
#endif
  for (int64_t t = 0; t < n; ++t) row[t] += v * krow[t];
}

}  // namespace
}  // namespace torch_sparse_conv
