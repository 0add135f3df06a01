#include "sparse_filter_simd_cpu.h"

#include <cstring>

namespace torch_sparse_conv {
namespace {

#define TSC_INLINE inline __attribute__((always_inline))

// 64-byte vectors through GCC's vector extension: the compiler maps them to one zmm, two
// ymm or four xmm registers depending on the target of the function they are inlined into.
template <typename scalar_t>
struct Vec {
  typedef scalar_t type __attribute__((vector_size(64)));
  static constexpr int lanes = 64 / sizeof(scalar_t);
  static TSC_INLINE type load(const scalar_t* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));  // unaligned load
    return v;
  }
  static TSC_INLINE void store(scalar_t* p, type v) { std::memcpy(p, &v, sizeof(v)); }
  static TSC_INLINE type broadcast(scalar_t s) {
    type v;
    for (int i = 0; i < lanes; ++i) v[i] = s;
    return v;
  }
};

// One tile of UNROLL vectors: accumulators in registers, every nonzero streamed through.
template <typename scalar_t, int UNROLL>
TSC_INLINE void conv_tile(const scalar_t* sample, const int64_t* offsets,
                          const scalar_t* values, int64_t nnz, scalar_t init, scalar_t* out) {
  using V = Vec<scalar_t>;
  typename V::type acc[UNROLL];
  for (int u = 0; u < UNROLL; ++u) acc[u] = V::broadcast(init);
  for (int64_t k = 0; k < nnz; ++k) {
    const scalar_t* src = sample + offsets[k];
    const typename V::type v = V::broadcast(values[k]);
    for (int u = 0; u < UNROLL; ++u) acc[u] += v * V::load(src + u * V::lanes);
  }
  for (int u = 0; u < UNROLL; ++u) V::store(out + u * V::lanes, acc[u]);
}

template <typename scalar_t>
TSC_INLINE void conv_scalar(const scalar_t* sample, const int64_t* offsets,
                            const scalar_t* values, int64_t nnz, scalar_t init, scalar_t* out,
                            int64_t len) {
  for (int64_t p = 0; p < len; ++p) {
    scalar_t acc = init;
    for (int64_t k = 0; k < nnz; ++k) acc += values[k] * sample[offsets[k] + p];
    out[p] = acc;
  }
}

// Whole tiles, then one last tile shifted back to end exactly at len (it recomputes a few
// outputs, which is harmless because tiles store rather than accumulate).
template <typename scalar_t, int UNROLL>
TSC_INLINE void conv_run_impl(const scalar_t* sample, const int64_t* offsets,
                              const scalar_t* values, int64_t nnz, scalar_t init, scalar_t* out,
                              int64_t len) {
  constexpr int64_t big = UNROLL * Vec<scalar_t>::lanes;
  constexpr int64_t small = Vec<scalar_t>::lanes;
  int64_t p = 0;
  if (len >= big) {
    for (; p + big <= len; p += big) {
      conv_tile<scalar_t, UNROLL>(sample + p, offsets, values, nnz, init, out + p);
    }
    if (p < len) {
      conv_tile<scalar_t, UNROLL>(sample + len - big, offsets, values, nnz, init, out + len - big);
    }
    return;
  }
  if (len >= small) {
    for (; p + small <= len; p += small) {
      conv_tile<scalar_t, 1>(sample + p, offsets, values, nnz, init, out + p);
    }
    if (p < len) {
      conv_tile<scalar_t, 1>(sample + len - small, offsets, values, nnz, init, out + len - small);
    }
    return;
  }
  conv_scalar(sample, offsets, values, nnz, init, out, len);
}

template <typename scalar_t>
TSC_INLINE scalar_t dot_impl(const scalar_t* a, const scalar_t* b, int64_t len) {
  using V = Vec<scalar_t>;
  typename V::type acc0 = V::broadcast(0), acc1 = V::broadcast(0);
  int64_t p = 0;
  for (; p + 2 * V::lanes <= len; p += 2 * V::lanes) {
    acc0 += V::load(a + p) * V::load(b + p);
    acc1 += V::load(a + p + V::lanes) * V::load(b + p + V::lanes);
  }
  acc0 += acc1;
  scalar_t sum = 0;
  for (int i = 0; i < V::lanes; ++i) sum += acc0[i];
  for (; p < len; ++p) sum += a[p] * b[p];
  return sum;
}

template <typename scalar_t>
TSC_INLINE void axpy_impl(scalar_t alpha, const scalar_t* x, scalar_t* y, int64_t len) {
  using V = Vec<scalar_t>;
  const typename V::type a = V::broadcast(alpha);
  int64_t p = 0;
  for (; p + V::lanes <= len; p += V::lanes) V::store(y + p, V::load(y + p) + a * V::load(x + p));
  for (; p < len; ++p) y[p] += alpha * x[p];
}

// One set of entry points per instruction set. UNROLL is chosen so the accumulators fill
// about half the register file (8 zmm, 8 ymm, 8 xmm).
#define TSC_DEFINE_ISA(NAME, TARGET, UNROLL)                                                   \
  template <typename scalar_t>                                                                 \
  TARGET void conv_run_##NAME(const scalar_t* s, const int64_t* o, const scalar_t* v,          \
                              int64_t n, scalar_t i, scalar_t* out, int64_t len) {             \
    conv_run_impl<scalar_t, UNROLL>(s, o, v, n, i, out, len);                                  \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  TARGET scalar_t dot_##NAME(const scalar_t* a, const scalar_t* b, int64_t len) {              \
    return dot_impl(a, b, len);                                                                \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  TARGET void axpy_##NAME(scalar_t a, const scalar_t* x, scalar_t* y, int64_t len) {           \
    axpy_impl(a, x, y, len);                                                                   \
  }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define TSC_X86 1
TSC_DEFINE_ISA(avx512, __attribute__((target("avx512f,avx2,fma"))), 8)
TSC_DEFINE_ISA(avx2, __attribute__((target("avx2,fma"))), 4)
#endif
TSC_DEFINE_ISA(baseline, , 2)

template <typename scalar_t>
SparseFilterSimd<scalar_t> pick_simd() {
#ifdef TSC_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    return {&conv_run_avx512<scalar_t>, &dot_avx512<scalar_t>, &axpy_avx512<scalar_t>, "avx512"};
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {&conv_run_avx2<scalar_t>, &dot_avx2<scalar_t>, &axpy_avx2<scalar_t>, "avx2"};
  }
#endif
  return {&conv_run_baseline<scalar_t>, &dot_baseline<scalar_t>, &axpy_baseline<scalar_t>,
          "baseline"};
}

}  // namespace

template <typename scalar_t>
const SparseFilterSimd<scalar_t>& sparse_filter_simd() {
  static const SparseFilterSimd<scalar_t> chosen = pick_simd<scalar_t>();
  return chosen;
}

template const SparseFilterSimd<float>& sparse_filter_simd<float>();
template const SparseFilterSimd<double>& sparse_filter_simd<double>();

}  // namespace torch_sparse_conv
