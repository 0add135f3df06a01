// The direct method's two passes (declared in csrc/toeplitz/cpu/direct.h) for both dtypes and
// both output conventions, each compiled once per instruction set (csrc/common/cpu_isa.h):
// flatten inlines the whole image loop (direct/image.h) into each variant, so the loops over
// kernel columns use that set's widest vectors.
#include "csrc/toeplitz/cpu/direct.h"

#include "csrc/common/cpu_isa.h"
#include "csrc/toeplitz/cpu/direct/image.h"

namespace torch_sparse_conv {
namespace {

using toeplitz_direct::convolve_images;
using toeplitz_direct::KeepAll;
using DropZeros32 = toeplitz_direct::Sink<int32_t, true>;
using DropZeros64 = toeplitz_direct::Sink<int64_t, true>;

#define TSC_DEFINE_PASS(NAME, FILL, OUT, SCALAR, ISA, TARGET)                                  \
  TARGET __attribute__((flatten)) void NAME##_##ISA(                                          \
      const int64_t* crow, const int64_t* col, const SCALAR* val, const SCALAR* kernel,       \
      const ToeplitzGeometry& g, int64_t begin, int64_t end, const int64_t* offsets,          \
      int64_t* counts, OUT::index* cols, SCALAR* vals) {                                      \
    convolve_images<FILL, OUT, SCALAR>(crow, col, val, kernel, g, begin, end, offsets, counts, \
                                       cols, vals);                                           \
  }
#define TSC_DEFINE_PASS_VARIANTS(NAME, FILL, OUT, SCALAR)          \
  TSC_DEFINE_PASS(NAME, FILL, OUT, SCALAR, avx512, TSC_TARGET_AVX512) \
  TSC_DEFINE_PASS(NAME, FILL, OUT, SCALAR, avx2, TSC_TARGET_AVX2)     \
  TSC_DEFINE_PASS(NAME, FILL, OUT, SCALAR, baseline, )
TSC_DEFINE_PASS_VARIANTS(count_pass_f32, false, KeepAll, float)
TSC_DEFINE_PASS_VARIANTS(fill_pass_f32, true, KeepAll, float)
TSC_DEFINE_PASS_VARIANTS(fill_pass_dz32_f32, true, DropZeros32, float)
TSC_DEFINE_PASS_VARIANTS(fill_pass_dz64_f32, true, DropZeros64, float)
TSC_DEFINE_PASS_VARIANTS(count_pass_f64, false, KeepAll, double)
TSC_DEFINE_PASS_VARIANTS(fill_pass_f64, true, KeepAll, double)
TSC_DEFINE_PASS_VARIANTS(fill_pass_dz32_f64, true, DropZeros32, double)
TSC_DEFINE_PASS_VARIANTS(fill_pass_dz64_f64, true, DropZeros64, double)
#undef TSC_DEFINE_PASS_VARIANTS
#undef TSC_DEFINE_PASS

// The variant of pass NAME for this process's instruction set.
#define TSC_PASS(NAME) isa_variant(&NAME##_avx512, &NAME##_avx2, &NAME##_baseline)

}  // namespace

#define TSC_PASSES(SCALAR, SUFFIX)                                                             \
  void direct_count_pass(const int64_t* crow, const int64_t* col, const SCALAR* val,           \
                         const SCALAR* kernel, const ToeplitzGeometry& g, int64_t begin,       \
                         int64_t end, int64_t* counts) {                                       \
    TSC_PASS(count_pass_##SUFFIX)(crow, col, val, kernel, g, begin, end, nullptr, counts,      \
                                  nullptr, nullptr);                                           \
  }                                                                                            \
  void direct_fill_pass(const int64_t* crow, const int64_t* col, const SCALAR* val,            \
                        const SCALAR* kernel, const ToeplitzGeometry& g, int64_t begin,        \
                        int64_t end, const int64_t* offsets, int64_t* cols, SCALAR* vals,      \
                        int64_t* written) {                                                    \
    TSC_PASS(fill_pass_##SUFFIX)(crow, col, val, kernel, g, begin, end, offsets, written,      \
                                 cols, vals);                                                  \
  }                                                                                            \
  void direct_fill_pass_dropping_zeros(const int64_t* crow, const int64_t* col,                \
                                       const SCALAR* val, const SCALAR* kernel,                \
                                       const ToeplitzGeometry& g, int64_t begin, int64_t end,  \
                                       const int64_t* offsets, int32_t* cols, SCALAR* vals,    \
                                       int64_t* kept) {                                        \
    TSC_PASS(fill_pass_dz32_##SUFFIX)(crow, col, val, kernel, g, begin, end, offsets, kept,    \
                                      cols, vals);                                             \
  }                                                                                            \
  void direct_fill_pass_dropping_zeros(const int64_t* crow, const int64_t* col,                \
                                       const SCALAR* val, const SCALAR* kernel,                \
                                       const ToeplitzGeometry& g, int64_t begin, int64_t end,  \
                                       const int64_t* offsets, int64_t* cols, SCALAR* vals,    \
                                       int64_t* kept) {                                        \
    TSC_PASS(fill_pass_dz64_##SUFFIX)(crow, col, val, kernel, g, begin, end, offsets, kept,    \
                                      cols, vals);                                             \
  }
TSC_PASSES(float, f32)
TSC_PASSES(double, f64)
#undef TSC_PASSES
#undef TSC_PASS

}  // namespace torch_sparse_conv
