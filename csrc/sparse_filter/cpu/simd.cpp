#include "csrc/sparse_filter/cpu/simd.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "csrc/common/arithmetic.h"
#include "csrc/common/cpu_isa.h"
#include "csrc/common/vector.h"

namespace torch_sparse_conv {
namespace {

// conv_block's vectors with AVX-512, by processor. The runs start at arbitrary tap shifts, so
// an unaligned 64-byte load always splits across cache lines, a 32-byte one half the time.
// On AMD Zen 4, which runs a 512-bit multiply-add as two 256-bit halves, 32-byte vectors (12
// of the 32 ymm registers) measured faster. Intel Xeons with two 512-bit FMA units run 64-byte
// ones faster despite the splits: on the Intel Xeon VM, in a loop with its input in L1, 72
// GFLOP/s a core against 59 for 32-byte ones; batch-1 3x3 layers at 90 %, 2 threads,
// 0.87-0.92x the time. (Aligned 64-byte loads would reach 130 GFLOP/s there.) The choice is
// by vendor only: Intel parts with a single 512-bit FMA unit get 64-byte vectors too (not
// measured), and method.h's intel-xeon constants for the one-sample layout assume them.
// TSC_CONV_VECTOR_BYTES=32|64 picks one whatever the processor (tests, comparisons).
constexpr int kZen4ConvBytes = 32, kZen4ConvUnroll = 12;
constexpr int kIntelConvBytes = 64, kIntelConvUnroll = 16;

// Decided once for both dtypes' kernels (so a bad value warns once).
int avx512_conv_block_bytes() {
  static const int chosen = [] {
    const char* bytes = std::getenv("TSC_CONV_VECTOR_BYTES");
    if (bytes != nullptr && *bytes != '\0') {
      if (std::strcmp(bytes, "32") == 0) return 32;
      if (std::strcmp(bytes, "64") == 0) return 64;
      TORCH_WARN("TSC_CONV_VECTOR_BYTES must be 32 or 64, got '", bytes,
                 "'; using the processor's width");
    }
    return cpu_vendor() == CpuVendor::Intel ? kIntelConvBytes : kZen4ConvBytes;
  }();
  return chosen;
}

// U consecutive vectors of out: accumulators in registers, every nonzero streamed through.
// They start from out's current values (accumulate) or from init.
template <typename scalar_t, int BYTES, int U>
TSC_INLINE void conv_vectors(const scalar_t* sample, const int64_t* offsets,
                             const scalar_t* values, int64_t nnz, bool accumulate,
                             scalar_t init, scalar_t* out) {
  using V = Vec<scalar_t, BYTES>;
  typename V::type acc[U];
  for (int u = 0; u < U; ++u) {
    acc[u] = accumulate ? V::load(out + u * V::lanes) : V::broadcast(init);
  }
  for (int64_t k = 0; k < nnz; ++k) {
    const scalar_t* src = sample + offsets[k];
    const typename V::type v = V::broadcast(values[k]);
    for (int u = 0; u < U; ++u) acc[u] += v * V::load(src + u * V::lanes);
  }
  for (int u = 0; u < U; ++u) V::store(out + u * V::lanes, acc[u]);
}

// count positions (rounded up to whole vectors), in groups of UNROLL vectors (the last
// group smaller, each group an independent set of accumulator chains).
template <typename scalar_t, int BYTES, int UNROLL>
TSC_INLINE void conv_block_impl(const scalar_t* sample, const int64_t* offsets,
                                const scalar_t* values, int64_t nnz, bool accumulate,
                                scalar_t init, scalar_t* out, int64_t count) {
  constexpr int64_t lanes = Vec<scalar_t, BYTES>::lanes;
  const int64_t nvec = ceil_div(count, lanes);
  int64_t v = 0;
  static_assert(UNROLL <= 16, "the tail's switch below covers 1 to 15 vectors");
  for (; v + UNROLL <= nvec; v += UNROLL) {
    conv_vectors<scalar_t, BYTES, UNROLL>(sample + v * lanes, offsets, values, nnz, accumulate,
                                          init, out + v * lanes);
  }
  const scalar_t* s = sample + v * lanes;
  scalar_t* o = out + v * lanes;
  switch (nvec - v) {
#define TSC_TAIL(N) \
  case N:                                                                          \
    if constexpr (N < UNROLL) {  /* only tails shorter than a group are compiled */ \
      conv_vectors<scalar_t, BYTES, N>(s, offsets, values, nnz, accumulate, init, o); \
    }                                                                              \
    break;
    TSC_TAIL(1) TSC_TAIL(2) TSC_TAIL(3) TSC_TAIL(4) TSC_TAIL(5) TSC_TAIL(6) TSC_TAIL(7)
    TSC_TAIL(8) TSC_TAIL(9) TSC_TAIL(10) TSC_TAIL(11) TSC_TAIL(12) TSC_TAIL(13) TSC_TAIL(14)
    TSC_TAIL(15)
#undef TSC_TAIL
    default: break;
  }
}

// pointwise_tiles (simd.h) for one tile of U vectors; with Partial, its last vector is
// channel i's whole vector at tail + i * lanes instead of in out.
template <typename scalar_t, int BYTES, int U, bool Partial>
TSC_INLINE void pointwise_tile(const scalar_t* x, const int64_t* offsets, const scalar_t* values,
                               const int64_t* tap_bounds, int64_t bounds_stride,
                               int64_t channels, bool accumulate, const scalar_t* init,
                               scalar_t* out, int64_t out_stride, scalar_t* tail,
                               PrefetchRows<scalar_t> next, StoreEpilogue<scalar_t> epilogue) {
  using V = Vec<scalar_t, BYTES>;
  constexpr int Full = Partial ? U - 1 : U;  // vectors read and written in out
  constexpr int kLineLanes = 64 / sizeof(scalar_t);
  // The tile's output rows (in the first chunk, when they are written before being read)
  // and residual rows (in the last) of the channel this many ahead are asked for: a few
  // lines at a time as the channels go, not a block's hundreds of rows at once, which
  // stalled on the fill buffers. The 1x1 layers' output rows are too short and scattered
  // for the hardware prefetcher (one tile of each of 64-2048 planes): asking for them cost
  // a fused ResNet-50 forward at batch 8 0.85-0.99x the time (median 0.94x, six alternated
  // processes, Intel Xeon VM).
  constexpr int64_t kRowsAhead = 2;
  const scalar_t* residual = epilogue.residual;
  for (int64_t i = 0; i < channels;
       ++i, out += out_stride, tail += V::lanes, residual += residual ? out_stride : 0) {
    if (!accumulate && !epilogue.stream && i + kRowsAhead < channels) {
      const auto row = reinterpret_cast<uintptr_t>(out + kRowsAhead * out_stride);
      for (int l = 0; l < Full * V::lanes; l += kLineLanes) {
        __builtin_prefetch(reinterpret_cast<const void*>(row + l * sizeof(scalar_t)), 1, 3);
      }
    }
    if (residual && i + kRowsAhead < channels) {
      const auto row = reinterpret_cast<uintptr_t>(residual + kRowsAhead * out_stride);
      for (int l = 0; l < Full * V::lanes; l += kLineLanes) {
        __builtin_prefetch(reinterpret_cast<const void*>(row + l * sizeof(scalar_t)), 0, 3);
      }
    }
    if (next.first) {  // channel i's share of the next tile's rows, into L2
      // Addresses as integers: the last row's tile may reach past the tensor's end (a
      // prefetch never faults; a pointer formed there would be undefined behaviour).
      const uintptr_t first = reinterpret_cast<uintptr_t>(next.first);
      for (int64_t r = i * next.rows / channels; r < (i + 1) * next.rows / channels; ++r) {
        const uintptr_t row = first + uintptr_t(r * next.stride) * sizeof(scalar_t);
        for (int l = 0; l < U * V::lanes; l += kLineLanes) {
          __builtin_prefetch(reinterpret_cast<const void*>(row + l * sizeof(scalar_t)), 0, 2);
        }
      }
    }
    typename V::type acc[U];
    const scalar_t start = init ? init[i] : scalar_t(0);
    for (int u = 0; u < U; ++u) {
      const scalar_t* from = Partial && u == Full ? tail : out + u * V::lanes;
      acc[u] = accumulate ? V::load(from) : V::broadcast(start);
    }
    const int64_t k1 = tap_bounds[i * bounds_stride + 1];
    for (int64_t k = tap_bounds[i * bounds_stride]; k < k1; ++k) {
      const scalar_t* src = x + offsets[k];
      const typename V::type w = V::broadcast(values[k]);
      for (int u = 0; u < U; ++u) acc[u] += w * V::load(src + u * V::lanes);
    }
    if (residual || epilogue.relu) {
      for (int u = 0; u < Full; ++u) {
        acc[u] = finished_vector<V>(acc[u], residual ? residual + u * V::lanes : nullptr,
                                    epilogue.relu);
      }
    }
    for (int u = 0; u < U; ++u) {
      if (Partial && u == Full) {
        V::store(tail, acc[u]);
      } else if (epilogue.stream) {
        V::stream(out + u * V::lanes, acc[u]);
      } else {
        V::store(out + u * V::lanes, acc[u]);
      }
    }
  }
}

// The run's vectors in as few tiles of at most U as possible, of sizes differing by at most
// one (19 vectors: 7 + 6 + 6, not 8 + 8 + 3): a tile of few vectors has too few independent
// multiply-add chains to hide their latency.
template <typename scalar_t, int BYTES, int U>
TSC_INLINE void pointwise_tiles_impl(const scalar_t* x, const int64_t* offsets,
                                     const scalar_t* values, const int64_t* tap_bounds,
                                     int64_t bounds_stride, int64_t channels, bool accumulate,
                                     const scalar_t* init, scalar_t* out, int64_t out_stride,
                                     int64_t count, scalar_t* tail, PrefetchRows<scalar_t> rows,
                                     PrefetchRows<scalar_t> after,
                                     StoreEpilogue<scalar_t> epilogue) {
  constexpr int64_t lanes = Vec<scalar_t, BYTES>::lanes;
  const int64_t nvec = ceil_div(count, lanes);
  const int64_t tiles = ceil_div(nvec, int64_t(U));
  for (int64_t t = 0, v = 0; t < tiles; ++t) {
    const int64_t size = nvec / tiles + (t < nvec % tiles ? 1 : 0);
    const scalar_t* s = x + v * lanes;
    scalar_t* o = out + v * lanes;
    StoreEpilogue<scalar_t> e = epilogue;
    if (e.residual) e.residual += v * lanes;
    const bool partial = t == tiles - 1 && count % lanes != 0;
    PrefetchRows<scalar_t> next = after;
    if (t + 1 < tiles && rows.first) {
      next = rows;
      next.first += (v + size) * lanes;
    }
    switch (size) {
#define TSC_TILE(N)                                                                         \
  case N:                                                                                  \
    if (partial) {                                                                         \
      pointwise_tile<scalar_t, BYTES, N, true>(s, offsets, values, tap_bounds,             \
                                               bounds_stride, channels, accumulate, init,  \
                                               o, out_stride, tail, next, e);              \
    } else {                                                                               \
      pointwise_tile<scalar_t, BYTES, N, false>(s, offsets, values, tap_bounds,            \
                                                bounds_stride, channels, accumulate, init, \
                                                o, out_stride, tail, next, e);             \
    }                                                                                      \
    break;
      TSC_TILE(1) TSC_TILE(2) TSC_TILE(3) TSC_TILE(4) TSC_TILE(5) TSC_TILE(6) TSC_TILE(7)
      TSC_TILE(8)
#undef TSC_TILE
      default: break;
    }
    v += size;
  }
}

// The sum of a vector's lanes, halving it until 16 bytes are left, then lane by lane: a
// chain of log2 steps, not one add per lane (16 dependent adds per tap were a quarter of a
// dot_runs on 61-position runs, 512x7x7's values' gradient).
template <typename scalar_t, int BYTES>
TSC_INLINE scalar_t sum_lanes(typename Vec<scalar_t, BYTES>::type v) {
  if constexpr (BYTES > 16) {
    using H = Vec<scalar_t, BYTES / 2>;
    typename H::type low, high;
    std::memcpy(&low, &v, BYTES / 2);
    std::memcpy(&high, reinterpret_cast<const char*>(&v) + BYTES / 2, BYTES / 2);
    return sum_lanes<scalar_t, BYTES / 2>(low + high);
  } else {
    scalar_t sum = v[0];
    for (int i = 1; i < Vec<scalar_t, BYTES>::lanes; ++i) sum += v[i];
    return sum;
  }
}

// dot(a + p, b + p, len - p) for what the vector loop left, fewer elements than a vector
// of BYTES: vectors of BYTES / 2, down to 16 bytes, then element by element.
template <typename scalar_t, int BYTES>
TSC_INLINE scalar_t dot_rest(const scalar_t* a, const scalar_t* b, int64_t p, int64_t len) {
  if constexpr (BYTES >= 32) {
    using H = Vec<scalar_t, BYTES / 2>;
    scalar_t sum = 0;
    if (p + H::lanes <= len) {
      sum = sum_lanes<scalar_t, BYTES / 2>(H::load(a + p) * H::load(b + p));
      p += H::lanes;
    }
    return sum + dot_rest<scalar_t, BYTES / 2>(a, b, p, len);
  } else {
    scalar_t sum = 0;
    for (; p < len; ++p) sum += a[p] * b[p];
    return sum;
  }
}

// A vector of BYTES whose low half is p[0 .. lanes / 2) and high half zero: one load of half
// the width (VEX and EVEX loads clear the register's upper part), nothing read past it. (A
// memcpy into a zeroed vector went through the stack: a wide load of two narrower stores,
// which stalls on store forwarding, 2.5x the time of a 7x7 layer's values' gradient.)
// (GCC 12 and Clang have __builtin_shufflevector; older GCCs get the memcpy: right, slower.)
#if defined(__clang__) || __GNUC__ >= 12
template <typename scalar_t, int BYTES, size_t... I>
TSC_INLINE typename Vec<scalar_t, BYTES>::type load_low_half(const scalar_t* p,
                                                             std::index_sequence<I...>) {
  using H = Vec<scalar_t, BYTES / 2>;
  const typename H::type low = H::load(p), zero{};
  return __builtin_shufflevector(low, zero, I...);
}
template <typename scalar_t, int BYTES>
TSC_INLINE typename Vec<scalar_t, BYTES>::type load_low_half(const scalar_t* p) {
  return load_low_half<scalar_t, BYTES>(
      p, std::make_index_sequence<Vec<scalar_t, BYTES>::lanes>());
}
#else
template <typename scalar_t, int BYTES>
TSC_INLINE typename Vec<scalar_t, BYTES>::type load_low_half(const scalar_t* p) {
  typename Vec<scalar_t, BYTES>::type v{};
  std::memcpy(&v, p, BYTES / 2);
  return v;
}
#endif

// out[t] = sum over the segments of sum_p a[p] * b[t][p], for t < kRuns: two accumulators a run
// over pairs of vectors, a segment's odd vector and then its odd half vector into the first (a 7x7
// plane's rows of 8-sample pixels are 7 32-byte vectors, or 3.5 64-byte ones), what is left after
// them (less than half a vector: only one-sample runs) in a scalar sum; then the accumulators'
// lanes. Every run's sum takes the same operations in the same order whatever kRuns is (so the same
// bits); a's vectors are loaded once for all runs.
template <typename scalar_t, int BYTES, int kRuns>
TSC_INLINE void dot_runs_impl(const scalar_t* a, const scalar_t* const* b,
                              const DotSegment* segments, int64_t segment_count, scalar_t* out) {
  using V = Vec<scalar_t, BYTES>;
  constexpr int VL = V::lanes;
  typename V::type acc0[kRuns], acc1[kRuns];
  scalar_t rest[kRuns];
  for (int t = 0; t < kRuns; ++t) {
    acc0[t] = acc1[t] = V::broadcast(0);
    rest[t] = 0;
  }
  for (int64_t s = 0; s < segment_count; ++s) {
    int64_t p = segments[s].first;
    const int64_t end = p + segments[s].length;
    for (; p + 2 * VL <= end; p += 2 * VL) {
      const typename V::type a0 = V::load(a + p), a1 = V::load(a + p + VL);
      for (int t = 0; t < kRuns; ++t) {
        acc0[t] += a0 * V::load(b[t] + p);
        acc1[t] += a1 * V::load(b[t] + p + VL);
      }
    }
    if (p + VL <= end) {
      const typename V::type a0 = V::load(a + p);
      for (int t = 0; t < kRuns; ++t) acc0[t] += a0 * V::load(b[t] + p);
      p += VL;
    }
    if (p + VL / 2 <= end) {
      const typename V::type a0 = load_low_half<scalar_t, BYTES>(a + p);
      for (int t = 0; t < kRuns; ++t) acc0[t] += a0 * load_low_half<scalar_t, BYTES>(b[t] + p);
      p += VL / 2;
    }
    if (p < end) {
      for (int t = 0; t < kRuns; ++t) rest[t] += dot_rest<scalar_t, BYTES / 2>(a, b[t], p, end);
    }
  }
  for (int t = 0; t < kRuns; ++t) {
    out[t] = sum_lanes<scalar_t, BYTES>(acc0[t] + acc1[t]) + rest[t];
  }
}

// dot_runs_impl for a count of runs known at run time: kMax at a time (2 kMax accumulators
// and a's two vectors fit the registers), then the 1 .. kMax - 1 left.
template <typename scalar_t, int BYTES, int kMax>
TSC_INLINE void dot_runs_any(const scalar_t* a, const scalar_t* const* b, int64_t runs,
                             const DotSegment* segments, int64_t segment_count, scalar_t* out) {
  for (; runs >= kMax; runs -= kMax, b += kMax, out += kMax) {
    dot_runs_impl<scalar_t, BYTES, kMax>(a, b, segments, segment_count, out);
  }
  if constexpr (kMax > 1) {
    if (runs > 0) dot_runs_any<scalar_t, BYTES, kMax - 1>(a, b, runs, segments, segment_count, out);
  }
}

// Elements [i, n) of one of store_rows' rows: whole vectors of BYTES, then at most one of
// each narrower width down to 16 bytes, then single elements. A 28-pixel row (128@28) is 16 +
// 8 + 4 floats, not 16 and 12 single stores (those took 13 % of a batch-1 forward at 2
// threads).
template <typename scalar_t, int BYTES>
TSC_INLINE void store_run_from(const scalar_t* src, int64_t i, int64_t n, scalar_t* dst,
                               StoreEpilogue<scalar_t> epilogue) {
  using V = Vec<scalar_t, BYTES>;
  const scalar_t* residual = epilogue.residual;
  for (; i + V::lanes <= n; i += V::lanes) {
    V::store(dst + i, finished_vector<V>(V::load(src + i), residual ? residual + i : nullptr,
                                         epilogue.relu));
  }
  if constexpr (BYTES > 16) {
    store_run_from<scalar_t, BYTES / 2>(src, i, n, dst, epilogue);
  } else {
    for (; i < n; ++i) {
      dst[i] = finished_scalar(src[i], residual ? residual + i : nullptr, epilogue.relu);
    }
  }
}

template <typename scalar_t, int BYTES>
TSC_INLINE void store_rows_impl(const scalar_t* src, int64_t src_stride, scalar_t* dst,
                                int64_t dst_stride, int64_t rows, int64_t n,
                                StoreEpilogue<scalar_t> epilogue) {
  // Rows contiguous on both sides (a 1x1 kernel without padding has no padding columns) are
  // one run: 7-pixel rows stored a row at a time (4 + 2 + 1 elements) took 12 % of a batch-1
  // 512->2048 @7 forward at 90 % (2 threads, Zen 4), one run 5 %.
  if (src_stride == n && dst_stride == n) {
    n *= rows;
    rows = 1;
  }
  for (int64_t r = 0; r < rows; ++r) {
    store_run_from<scalar_t, BYTES>(src + r * src_stride, 0, n, dst + r * dst_stride,
                                    epilogue);
    if (epilogue.residual) epilogue.residual += dst_stride;
  }
}

// One set of entry points per instruction set: native vector width, and UNROLL accumulators
// (of 16 or 32 registers) leaving room for the broadcast weight and addresses; dot_runs
// takes DOT_RUNS runs at a time (two accumulators each).
#define TSC_DEFINE_ISA(NAME, TARGET, BYTES, UNROLL, PW_BYTES, DOT_RUNS)                     \
  template <typename scalar_t>                                                                 \
  TARGET void conv_block_##NAME(const scalar_t* s, const int64_t* o, const scalar_t* v,       \
                                int64_t n, bool acc, scalar_t i, scalar_t* out, int64_t cnt) { \
    conv_block_impl<scalar_t, BYTES, UNROLL>(s, o, v, n, acc, i, out, cnt);                    \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  TARGET void pointwise_tiles_##NAME(const scalar_t* x, const int64_t* o, const scalar_t* v,  \
                                     const int64_t* b, int64_t bs, int64_t ch, bool acc,     \
                                     const scalar_t* i, scalar_t* out, int64_t os,           \
                                     int64_t cnt, scalar_t* tail, PrefetchRows<scalar_t> r,  \
                                     PrefetchRows<scalar_t> a, StoreEpilogue<scalar_t> e) {  \
    pointwise_tiles_impl<scalar_t, PW_BYTES, 8>(x, o, v, b, bs, ch, acc, i, out, os, cnt,    \
                                                tail, r, a, e);                              \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  TARGET void dot_runs_##NAME(const scalar_t* a, const scalar_t* const* b, int64_t runs,       \
                              const DotSegment* sg, int64_t sn, scalar_t* out) {               \
    dot_runs_any<scalar_t, BYTES, DOT_RUNS>(a, b, runs, sg, sn, out);                          \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  TARGET void store_rows_##NAME(const scalar_t* src, int64_t ss, scalar_t* dst, int64_t ds,    \
                                int64_t rows, int64_t n, StoreEpilogue<scalar_t> e) {          \
    store_rows_impl<scalar_t, PW_BYTES>(src, ss, dst, ds, rows, n, e);                         \
  }

TSC_DEFINE_ISA(avx512, TSC_TARGET_AVX512, kZen4ConvBytes, kZen4ConvUnroll, 64, 8)

// dot_runs_wide where conv_block's vectors are 64 bytes (Intel): 64-byte vectors, 12 runs at
// a time (24 accumulators). Against 32-byte vectors 8 at a time, the lanes values' gradient
// at batch 8, 2 threads, Intel Xeon VM, 15 interleaved rounds: 64@56, 128@28 and 256@14 at
// 90 % and 95 % 0.86-0.98x the time, a training step of them 0.96-1.05x (25 rounds; within
// this VM's noise); 512@7 (rows of 7 pixels, 288 bytes apart, so that every other row's
// loads cross cache lines) 1.07-1.09x, which is why the caller picks it only for aligned
// rows. 8 at a time 1-5 % slower than 12. (Zen 4 keeps 32-byte vectors: not measured there.)
template <typename scalar_t>
TSC_TARGET_AVX512 void dot_runs_avx512_wide(const scalar_t* a, const scalar_t* const* b,
                                            int64_t runs, const DotSegment* segments,
                                            int64_t segment_count, scalar_t* out) {
  dot_runs_any<scalar_t, kIntelConvBytes, 12>(a, b, runs, segments, segment_count, out);
}

template <typename scalar_t>
TSC_TARGET_AVX512 void conv_block_avx512_wide(const scalar_t* s, const int64_t* o,
                                              const scalar_t* v, int64_t n, bool acc,
                                              scalar_t i, scalar_t* out, int64_t cnt) {
  conv_block_impl<scalar_t, kIntelConvBytes, kIntelConvUnroll>(s, o, v, n, acc, i, out, cnt);
}
TSC_DEFINE_ISA(avx2, TSC_TARGET_AVX2, 32, 12, 32, 4)
TSC_DEFINE_ISA(baseline, , 16, 12, 16, 4)

template <typename scalar_t>
SparseFilterSimd<scalar_t> pick_simd() {
  const int avx512_bytes = avx512_conv_block_bytes();
  const auto conv_block_avx512_here = avx512_bytes == kIntelConvBytes
                                          ? &conv_block_avx512_wide<scalar_t>
                                          : &conv_block_avx512<scalar_t>;
  return {isa_variant(conv_block_avx512_here, &conv_block_avx2<scalar_t>,
                      &conv_block_baseline<scalar_t>),
          isa_variant(avx512_bytes, 32, 16),
          isa_variant(&pointwise_tiles_avx512<scalar_t>, &pointwise_tiles_avx2<scalar_t>,
                      &pointwise_tiles_baseline<scalar_t>),
          isa_variant<int64_t>(64, 32, 16) / int64_t(sizeof(scalar_t)),
          8 * isa_variant<int64_t>(64, 32, 16) / int64_t(sizeof(scalar_t)),
          isa_variant(&dot_runs_avx512<scalar_t>, &dot_runs_avx2<scalar_t>,
                      &dot_runs_baseline<scalar_t>),
          isa_variant(avx512_bytes == kIntelConvBytes ? &dot_runs_avx512_wide<scalar_t>
                                                      : &dot_runs_avx512<scalar_t>,
                      &dot_runs_avx2<scalar_t>, &dot_runs_baseline<scalar_t>),
          isa_variant(&store_rows_avx512<scalar_t>, &store_rows_avx2<scalar_t>,
                      &store_rows_baseline<scalar_t>),
          cpu_isa_name(cpu_isa())};
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
