// correlate_rows (csrc/toeplitz/cpu/direct/correlate_rows.h) for both dtypes, each compiled
// once per instruction set (csrc/common/cpu_isa.h).
#include "csrc/toeplitz/cpu/direct/correlate_rows.h"

#include "csrc/common/cpu_isa.h"
#include "csrc/toeplitz/cpu/direct/dense_tile.h"

namespace torch_sparse_conv {
namespace toeplitz_direct {
namespace {

// Loads are pinned to registers (dense_tile.h, accumulate_tile_row) only where a 64-byte
// vector is one register: the AVX-512 build. Measured on 100x100 images at density 0.1 (5x5
// kernel, batch 500, 1 thread): 14 % off the whole call. Not where GCC inlines nothing
// (-O0, or -fno-inline as in the sanitizer builds): the loops are then functions of their
// own, compiled without AVX-512, where the pin's operand cannot be one register.
#if defined(TSC_X86_ISAS) && !defined(__NO_INLINE__)
constexpr bool kPinInAvx512 = true;
#else
constexpr bool kPinInAvx512 = false;  // the "AVX-512" build is the baseline one off x86
#endif

template <bool kPinLoads, typename scalar_t>
inline __attribute__((always_inline)) void correlate_rows_in(
    const scalar_t* tile, int64_t stride, const scalar_t* taps, int64_t kh, int64_t kw,
    int64_t width, int rows, scalar_t* out, int64_t out_stride) {
  if (rows == 2) {
    correlate_row_pair<kPinLoads>(tile, stride, taps, kh, kw, width, out, out_stride);
  } else {
    correlate_row(tile, stride, taps, kh, kw, width, out);
  }
}

#define TSC_DEFINE_VARIANT(NAME, TARGET, PIN, SCALAR)                                         \
  TARGET __attribute__((flatten)) void NAME(const SCALAR* tile, int64_t stride,              \
                                            const SCALAR* taps, int64_t kh, int64_t kw,      \
                                            int64_t width, int rows, SCALAR* out,            \
                                            int64_t out_stride) {                            \
    correlate_rows_in<PIN>(tile, stride, taps, kh, kw, width, rows, out, out_stride);        \
  }
TSC_DEFINE_VARIANT(correlate_f64_avx512, TSC_TARGET_AVX512, kPinInAvx512, double)
TSC_DEFINE_VARIANT(correlate_f64_avx2, TSC_TARGET_AVX2, false, double)
TSC_DEFINE_VARIANT(correlate_f64_baseline, , false, double)
TSC_DEFINE_VARIANT(correlate_f32_avx512, TSC_TARGET_AVX512, kPinInAvx512, float)
TSC_DEFINE_VARIANT(correlate_f32_avx2, TSC_TARGET_AVX2, false, float)
TSC_DEFINE_VARIANT(correlate_f32_baseline, , false, float)
#undef TSC_DEFINE_VARIANT

}  // namespace

void correlate_rows(const double* tile, int64_t stride, const double* taps, int64_t kh,
                    int64_t kw, int64_t width, int rows, double* out, int64_t out_stride) {
  static const auto variant =
      isa_variant(&correlate_f64_avx512, &correlate_f64_avx2, &correlate_f64_baseline);
  variant(tile, stride, taps, kh, kw, width, rows, out, out_stride);
}

void correlate_rows(const float* tile, int64_t stride, const float* taps, int64_t kh,
                    int64_t kw, int64_t width, int rows, float* out, int64_t out_stride) {
  static const auto variant =
      isa_variant(&correlate_f32_avx512, &correlate_f32_avx2, &correlate_f32_baseline);
  variant(tile, stride, taps, kh, kw, width, rows, out, out_stride);
}

}  // namespace toeplitz_direct
}  // namespace torch_sparse_conv
