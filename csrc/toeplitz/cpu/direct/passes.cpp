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

namespace {

using toeplitz_direct::convolve_images;

#define TSC_DEFINE_PASS(NAME, OUT, SCALAR, ISA, TARGET)                                        \
  TARGET __attribute__((flatten)) void NAME##_##ISA(                                          \
      const int64_t* crow, const int64_t* col, const SCALAR* val, const SCALAR* kernel,       \
      const ToeplitzGeometry& g, int64_t begin, int64_t end,                                  \
      const ImageDestination<OUT::index, SCALAR>& dst, int64_t* counts) {                     \
    convolve_images<OUT, SCALAR>(crow, col, val, kernel, g, begin, end, dst, counts);         \
  }
#define TSC_DEFINE_PASS_VARIANTS(NAME, OUT, SCALAR)          \
  TSC_DEFINE_PASS(NAME, OUT, SCALAR, avx512, TSC_TARGET_AVX512) \
  TSC_DEFINE_PASS(NAME, OUT, SCALAR, avx2, TSC_TARGET_AVX2)     \
  TSC_DEFINE_PASS(NAME, OUT, SCALAR, baseline, )
TSC_DEFINE_PASS_VARIANTS(pass_f32, KeepAll, float)
TSC_DEFINE_PASS_VARIANTS(pass_dz32_f32, DropZeros32, float)
TSC_DEFINE_PASS_VARIANTS(pass_dz64_f32, DropZeros64, float)
TSC_DEFINE_PASS_VARIANTS(pass_f64, KeepAll, double)
TSC_DEFINE_PASS_VARIANTS(pass_dz32_f64, DropZeros32, double)
TSC_DEFINE_PASS_VARIANTS(pass_dz64_f64, DropZeros64, double)
#undef TSC_DEFINE_PASS_VARIANTS
#undef TSC_DEFINE_PASS

// The variant of pass NAME for this process's instruction set.
#define TSC_PASS(NAME) isa_variant(&NAME##_avx512, &NAME##_avx2, &NAME##_baseline)

}  // namespace

// direct_pass for one sink and dtype: the variant of pass NAME for this process.
#define TSC_PASS_ENTRY(OUT, SCALAR, NAME)                                                       \
  template <>                                                                                  \
  void direct_pass<OUT, SCALAR>(const int64_t* crow, const int64_t* col, const SCALAR* val,    \
                                const SCALAR* kernel, const ToeplitzGeometry& g, int64_t begin, \
                                int64_t end, const ImageDestination<OUT::index, SCALAR>& dst,  \
                                int64_t* counts) {                                             \
    TSC_PASS(NAME)(crow, col, val, kernel, g, begin, end, dst, counts);                        \
  }
TSC_PASS_ENTRY(KeepAll, float, pass_f32)
TSC_PASS_ENTRY(DropZeros32, float, pass_dz32_f32)
TSC_PASS_ENTRY(DropZeros64, float, pass_dz64_f32)
TSC_PASS_ENTRY(KeepAll, double, pass_f64)
TSC_PASS_ENTRY(DropZeros32, double, pass_dz32_f64)
TSC_PASS_ENTRY(DropZeros64, double, pass_dz64_f64)
#undef TSC_PASS_ENTRY
#undef TSC_PASS

}  // namespace torch_sparse_conv
