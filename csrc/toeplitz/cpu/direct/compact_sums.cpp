#include "csrc/toeplitz/cpu/direct/compact_sums.h"

#include <cstdlib>
#include <type_traits>

#include "csrc/common/cpu_isa.h"

#ifdef TSC_X86_ISAS
#include <immintrin.h>
#define TSC_HAVE_AVX512_PATH 1
#endif

namespace torch_sparse_conv {
namespace {

// Which entries a compaction keeps: nonzero sums, or flagged positions.
struct KeepNonzero {
  const char* flags;  // unused
  template <typename scalar_t>
  bool scalar(const scalar_t* sums, int64_t i) const {
    return sums[i] != scalar_t(0);
  }
};
struct KeepFlagged {
  const char* flags;
  template <typename scalar_t>
  bool scalar(const scalar_t*, int64_t i) const {
    return flags[i] != 0;
  }
};

// kClear: sums is writable and left all zero.
template <bool kClear, typename Keep, typename index_t, typename sums_t>
int64_t compact_scalar(sums_t* sums, Keep keep, int64_t n, int64_t first_index,
                       index_t* indices, std::remove_const_t<sums_t>* values) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (keep.scalar(sums, i)) {
      indices[count] = static_cast<index_t>(first_index + i);
      values[count] = sums[i];
      ++count;
    }
    if constexpr (kClear) sums[i] = 0;
  }
  return count;
}

// Where word w of the box lands: its first sum and its first output index.
struct MarkedWord {
  int64_t sum_offset, index;
};
inline MarkedWord marked_word(int64_t w, int64_t row_words, int64_t row_step,
                              int64_t first_index) {
  const int64_t row = w / row_words, in_row = (w - row * row_words) << 6;
  return {w << 6, first_index + row * row_step + in_row};
}

template <typename index_t, typename scalar_t>
int64_t compact_marked_scalar(scalar_t* sums, uint64_t* bits, int64_t rows, int64_t row_words,
                              int64_t row_step, bool drop_zeros, int64_t first_index,
                              index_t* indices, scalar_t* values) {
  int64_t count = 0;
  for (int64_t w = 0; w < rows * row_words; ++w) {
    if (!bits[w]) continue;
    const MarkedWord at = marked_word(w, row_words, row_step, first_index);
    for (uint64_t mask = bits[w]; mask; mask &= mask - 1) {
      const int64_t lane = __builtin_ctzll(mask);
      const scalar_t sum = sums[at.sum_offset + lane];
      sums[at.sum_offset + lane] = scalar_t(0);
      if (drop_zeros && sum == scalar_t(0)) continue;
      indices[count] = static_cast<index_t>(at.index + lane);
      values[count] = sum;
      ++count;
    }
    bits[w] = 0;
  }
  return count;
}

#ifdef TSC_HAVE_AVX512_PATH
#define TSC_AVX512 TSC_TARGET_AVX512

// Eight lanes of one value type: masked load (for the tail), nonzero test, compress + store.
struct DoubleLanes {
  using vector = __m512d;
  TSC_AVX512 static vector load(const double* p, __mmask8 valid) {
    return _mm512_maskz_loadu_pd(valid, p);
  }
  TSC_AVX512 static __mmask8 nonzero(vector v, __mmask8 valid) {
    return _mm512_mask_cmp_pd_mask(valid, v, _mm512_setzero_pd(), _CMP_NEQ_UQ);
  }
  TSC_AVX512 static void store(double* out, __mmask8 keep, __mmask8 first_k, vector v) {
    _mm512_mask_storeu_pd(out, first_k, _mm512_maskz_compress_pd(keep, v));
  }
  TSC_AVX512 static void clear(double* p, __mmask8 lanes) {
    _mm512_mask_storeu_pd(p, lanes, _mm512_setzero_pd());
  }
};
struct FloatLanes {
  using vector = __m256;
  TSC_AVX512 static vector load(const float* p, __mmask8 valid) {
    return _mm256_maskz_loadu_ps(valid, p);
  }
  TSC_AVX512 static __mmask8 nonzero(vector v, __mmask8 valid) {
    return _mm256_mask_cmp_ps_mask(valid, v, _mm256_setzero_ps(), _CMP_NEQ_UQ);
  }
  TSC_AVX512 static void store(float* out, __mmask8 keep, __mmask8 first_k, vector v) {
    _mm256_mask_storeu_ps(out, first_k, _mm256_maskz_compress_ps(keep, v));
  }
  TSC_AVX512 static void clear(float* p, __mmask8 lanes) {
    _mm256_mask_storeu_ps(p, lanes, _mm256_setzero_ps());
  }
};

// Eight indices first, first + 1, ..., compressed like the values.
TSC_AVX512 inline void store_indices(int32_t* out, __mmask8 keep, __mmask8 first_k,
                                     int64_t first) {
  const __m256i lanes = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(first)),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  _mm256_mask_storeu_epi32(out, first_k, _mm256_maskz_compress_epi32(keep, lanes));
}
TSC_AVX512 inline void store_indices(int64_t* out, __mmask8 keep, __mmask8 first_k,
                                     int64_t first) {
  const __m512i lanes =
      _mm512_add_epi64(_mm512_set1_epi64(first), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
  _mm512_mask_storeu_epi64(out, first_k, _mm512_maskz_compress_epi64(keep, lanes));
}

template <typename Lanes>
TSC_AVX512 inline __mmask8 lanes_kept(KeepNonzero, typename Lanes::vector v, int64_t,
                                      __mmask8 valid) {
  return Lanes::nonzero(v, valid);
}
template <typename Lanes>
TSC_AVX512 inline __mmask8 lanes_kept(KeepFlagged keep, typename Lanes::vector, int64_t i,
                                      __mmask8 valid) {
  const __m128i flags = _mm_maskz_loadu_epi8(valid, keep.flags + i);
  return _mm_mask_cmpneq_epi8_mask(valid, flags, _mm_setzero_si128());
}

template <bool kClear, typename Lanes, typename Keep, typename index_t, typename sums_t>
TSC_AVX512 int64_t compact_avx512(sums_t* sums, Keep keep, int64_t n, int64_t first_index,
                                  index_t* indices, std::remove_const_t<sums_t>* values) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; i += 8) {
    // The tail reads and tests only the lanes that exist.
    const __mmask8 valid = n - i >= 8 ? __mmask8(0xff) : __mmask8((1u << (n - i)) - 1);
    const typename Lanes::vector v = Lanes::load(sums + i, valid);
    if constexpr (kClear) Lanes::clear(sums + i, valid);
    const __mmask8 kept_lanes = lanes_kept<Lanes>(keep, v, i, valid);
    if (!kept_lanes) continue;
    const int kept = __builtin_popcount(kept_lanes);
    // Masked stores of the first `kept` lanes: nothing lands past the kept entries.
    const __mmask8 first_k = __mmask8((1u << kept) - 1);
    Lanes::store(values + count, kept_lanes, first_k, v);
    store_indices(indices + count, kept_lanes, first_k, first_index + i);
    count += kept;
  }
  return count;
}

// Below AVX-512 (csrc/common/cpu_isa.h: TSC_NO_AVX512=1 or TSC_CPU_ISA=avx2 forces that, as
// the tests do on AVX-512 machines) the scalar loop runs.
template <typename Lanes, typename index_t, typename scalar_t>
TSC_AVX512 int64_t compact_marked_avx512(scalar_t* sums, uint64_t* bits, int64_t rows,
                                         int64_t row_words, int64_t row_step, bool drop_zeros,
                                         int64_t first_index, index_t* indices,
                                         scalar_t* values) {
  int64_t count = 0;
  for (int64_t w = 0; w < rows * row_words; ++w) {
    const uint64_t word = bits[w];
    if (!word) continue;
    bits[w] = 0;
    const MarkedWord at = marked_word(w, row_words, row_step, first_index);
    for (int j = 0; j < 64; j += 8) {
      const __mmask8 marked = __mmask8(word >> j);
      if (!marked) continue;
      scalar_t* lane_sums = sums + at.sum_offset + j;
      // Only the marked lanes are read and cleared.
      const typename Lanes::vector v = Lanes::load(lane_sums, marked);
      Lanes::clear(lane_sums, marked);
      const __mmask8 keep = drop_zeros ? Lanes::nonzero(v, marked) : marked;
      if (!keep) continue;
      const int kept = __builtin_popcount(keep);
      const __mmask8 first_k = __mmask8((1u << kept) - 1);
      Lanes::store(values + count, keep, first_k, v);
      store_indices(indices + count, keep, first_k, at.index + j);
      count += kept;
    }
  }
  return count;
}

bool has_avx512() { return cpu_isa() == CpuIsa::Avx512; }
#else
struct DoubleLanes {};  // tags only: the scalar loop serves every type
struct FloatLanes {};
#endif

template <typename Lanes, typename index_t, typename scalar_t>
int64_t marked(scalar_t* sums, uint64_t* bits, int64_t rows, int64_t row_words,
               int64_t row_step, bool drop_zeros, int64_t first_index, index_t* indices,
               scalar_t* values) {
#ifdef TSC_HAVE_AVX512_PATH
  if (has_avx512()) {
    return compact_marked_avx512<Lanes>(sums, bits, rows, row_words, row_step, drop_zeros,
                                        first_index, indices, values);
  }
#endif
  return compact_marked_scalar(sums, bits, rows, row_words, row_step, drop_zeros, first_index,
                               indices, values);
}

template <typename Lanes, bool kClear = false, typename Keep, typename index_t,
          typename sums_t>
int64_t compact(sums_t* sums, Keep keep, int64_t n, int64_t first_index, index_t* indices,
                std::remove_const_t<sums_t>* values) {
#ifdef TSC_HAVE_AVX512_PATH
  if (has_avx512()) {
    return compact_avx512<kClear, Lanes>(sums, keep, n, first_index, indices, values);
  }
#endif
  return compact_scalar<kClear>(sums, keep, n, first_index, indices, values);
}

}  // namespace

#define TSC_DEFINE_COMPACT(SCALAR, INDEX, LANES)                                               \
  int64_t compact_nonzeros(const SCALAR* sums, int64_t n, int64_t first_index, INDEX* indices,   \
                           SCALAR* values) {                                                    \
    return compact<LANES>(sums, KeepNonzero{nullptr}, n, first_index, indices, values);         \
  }                                                                                             \
  int64_t compact_nonzeros_clearing(SCALAR* sums, int64_t n, int64_t first_index,               \
                                    INDEX* indices, SCALAR* values) {                           \
    return compact<LANES, true>(sums, KeepNonzero{nullptr}, n, first_index, indices, values);   \
  }                                                                                             \
  int64_t compact_flagged(const SCALAR* sums, const char* flags, int64_t n,                     \
                          int64_t first_index, INDEX* indices, SCALAR* values) {                \
    return compact<LANES>(sums, KeepFlagged{flags}, n, first_index, indices, values);           \
  }                                                                                             \
  int64_t compact_marked(SCALAR* sums, uint64_t* bits, int64_t rows, int64_t row_words,        \
                         int64_t row_step, bool drop_zeros, int64_t first_index,               \
                         INDEX* indices, SCALAR* values) {                                     \
    return marked<LANES>(sums, bits, rows, row_words, row_step, drop_zeros, first_index,        \
                         indices, values);                                                      \
  }
TSC_DEFINE_COMPACT(double, int32_t, DoubleLanes)
TSC_DEFINE_COMPACT(double, int64_t, DoubleLanes)
TSC_DEFINE_COMPACT(float, int32_t, FloatLanes)
TSC_DEFINE_COMPACT(float, int64_t, FloatLanes)
#undef TSC_DEFINE_COMPACT

}  // namespace torch_sparse_conv
