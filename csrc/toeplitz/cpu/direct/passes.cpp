// The direct method's passes (declared in csrc/toeplitz/cpu/direct.h) for both dtypes and
// both output conventions, each compiled once per instruction set (csrc/common/cpu_isa.h):
// flatten inlines the whole image loop (direct/image.h) into each variant, so the loops over
// kernel columns use that set's widest vectors.
#include "csrc/toeplitz/cpu/direct.h"

#include "csrc/common/cpu_isa.h"
#include "csrc/toeplitz/cpu/direct/image.h"

namespace torch_sparse_conv {

using toeplitz_direct::ImageDestination;
using toeplitz_direct::KeepAll;
using DropZeros32 = toeplitz_direct::Sink<int32_t, true>;
using DropZeros64 = toeplitz_direct::Sink<int64_t, true>;

// The pass for one sink and dtype, compiled for one instruction set.
#define TSC_DEFINE_VARIANT(NAME, OUT, SCALAR, ISA, TARGET)                                     \
  TARGET __attribute__((flatten)) void NAME##_##ISA(                                          \
      const int64_t* crow, const int64_t* col, const SCALAR* val, const SCALAR* kernel,       \
      const ToeplitzGeometry& g, int64_t begin, int64_t end,                                  \
      const ImageDestination<OUT::index, SCALAR>& dst, int64_t* counts) {                     \
    toeplitz_direct::convolve_images<OUT, SCALAR>(crow, col, val, kernel, g, begin, end, dst, \
                                                  counts);                                    \
  }
// Its variants, and direct_pass<OUT, SCALAR> calling the one for this process's set.
#define TSC_DEFINE_PASS(NAME, OUT, SCALAR)                                                     \
  namespace {                                                                                 \
  TSC_DEFINE_VARIANT(NAME, OUT, SCALAR, avx512, TSC_TARGET_AVX512)                            \
  TSC_DEFINE_VARIANT(NAME, OUT, SCALAR, avx2, TSC_TARGET_AVX2)                                \
  TSC_DEFINE_VARIANT(NAME, OUT, SCALAR, baseline, )                                           \
  }                                                                                           \
  template <>                                                                                 \
  void direct_pass<OUT, SCALAR>(const int64_t* crow, const int64_t* col, const SCALAR* val,   \
                                const SCALAR* kernel, const ToeplitzGeometry& g,              \
                                int64_t begin, int64_t end,                                   \
                                const ImageDestination<OUT::index, SCALAR>& dst,              \
                                int64_t* counts) {                                            \
    isa_variant(&NAME##_avx512, &NAME##_avx2, &NAME##_baseline)(crow, col, val, kernel, g,    \
                                                                begin, end, dst, counts);     \
  }
TSC_DEFINE_PASS(pass_f32, KeepAll, float)
TSC_DEFINE_PASS(pass_dz32_f32, DropZeros32, float)
TSC_DEFINE_PASS(pass_dz64_f32, DropZeros64, float)
TSC_DEFINE_PASS(pass_f64, KeepAll, double)
TSC_DEFINE_PASS(pass_dz32_f64, DropZeros32, double)
TSC_DEFINE_PASS(pass_dz64_f64, DropZeros64, double)
#undef TSC_DEFINE_PASS
#undef TSC_DEFINE_VARIANT

}  // namespace torch_sparse_conv
