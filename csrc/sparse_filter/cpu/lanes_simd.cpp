#include "csrc/sparse_filter/cpu/lanes_simd.h"

#include <algorithm>
#include <array>
#include <utility>

#include "csrc/common/cpu_isa.h"
#include "csrc/common/vector.h"

namespace torch_sparse_conv {

#ifdef TSC_X86_ISAS
namespace {

// The tile of LaneKernels::tile with its shape fixed at compile time, so the accumulators
// are registers and every load is base + constant. A vector of Bytes holds Bytes / 32
// adjacent pixels of the block (one 32-byte lanes group each). With Half, each row's last
// vector is half as wide (one pixel where a full one holds two): a row of an odd number of
// pixels (7x7 planes) is computed exactly, not rounded up to an even one (an eighth more
// multiply-adds and loads on a 7-pixel row). Rows are stored (2 T - Half) pixels apart.
template <typename scalar_t, int Bytes, int R, int T, bool Half>
TSC_INLINE void tile_impl(const scalar_t* x, int64_t row_stride, const int64_t* offsets,
                          const scalar_t* values, int64_t taps, bool accumulate, scalar_t init,
                          scalar_t* out) {
  using V = Vec<scalar_t, Bytes>;
  using H = Vec<scalar_t, Bytes / 2>;
  constexpr int VL = V::lanes;
  constexpr int F = Half ? T - 1 : T;                    // full vectors a row
  constexpr int pitch = T * VL - (Half ? VL / 2 : 0);    // elements between output rows
  // The pragmas unroll past GCC's default of 16 iterations, which would leave the
  // accumulators in memory.
  typename V::type acc[R * F > 0 ? R * F : 1];
  typename H::type tail[R];  // the half vectors, where Half
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 32
    for (int t = 0; t < F; ++t) {
      acc[r * F + t] = accumulate ? V::load(out + r * pitch + t * VL) : V::broadcast(init);
    }
    if constexpr (Half) {
      tail[r] = accumulate ? H::load(out + r * pitch + F * VL) : H::broadcast(init);
    }
  }
  const int64_t rs = row_stride * lanes<scalar_t>();
  for (int64_t k = 0; k < taps; ++k) {
    const scalar_t* src = x + offsets[k];
    const typename V::type w = V::broadcast(values[k]);
    const typename H::type w_half = H::broadcast(values[k]);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const scalar_t* row = src + r * rs;
      // One register per row, its loads at constant offsets from it: without this GCC kept
      // an index register per load of rows after the first (spilling some), an extra
      // instruction for each multiply-add.
      asm("" : "+r"(row));
#pragma GCC unroll 32
      for (int t = 0; t < F; ++t) acc[r * F + t] += w * V::load(row + t * VL);
      if constexpr (Half) tail[r] += w_half * H::load(row + F * VL);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 32
    for (int t = 0; t < F; ++t) V::store(out + r * pitch + t * VL, acc[r * F + t]);
    if constexpr (Half) H::store(out + r * pitch + F * VL, tail[r]);
  }
}

// Calls block(q) for the blocks of L positions q .. q + L - 1 that cover [0, len): a run that
// does not divide into blocks ends with one that overlaps the block before (rewriting equal
// values). Returns false, calling nothing, for runs shorter than one block (the callers' scalar
// loops take those).
template <int L, typename Block>
TSC_INLINE bool for_each_block(int64_t len, Block&& block) {
  if (len < L) return false;
  for (int64_t next = 0;; next += L) {
    const int64_t q = std::min<int64_t>(next, len - L);
    block(q);
    if (q == len - L) return true;
  }
}

// Pixels q .. q + L - 1 of the samples' runs (src_stride elements apart; zeros for lanes past
// `samples`), transposed: v[i] holds pixel q + i of every lane.
template <typename V, typename scalar_t>
TSC_INLINE void load_transposed(const scalar_t* src, int64_t src_stride, int64_t samples,
                                int64_t q, typename V::type (&v)[V::lanes]) {
  for (int s = 0; s < V::lanes; ++s) {
    v[s] = s < samples ? V::load(src + s * src_stride + q) : V::broadcast(scalar_t(0));
  }
  transpose(v);
}

// Pixel q of the samples' runs into the lanes at dst, one element at a time.
template <typename scalar_t>
TSC_INLINE void copy_pixel(const scalar_t* src, int64_t src_stride, int64_t samples, int64_t q,
                           scalar_t* dst) {
  for (int64_t s = 0; s < lanes<scalar_t>(); ++s) {
    dst[s] = s < samples ? src[s * src_stride + q] : scalar_t(0);
  }
}

template <typename scalar_t>
TSC_INLINE void interleave_impl(const scalar_t* src, int64_t src_stride, int64_t samples,
                                int64_t len, scalar_t* dst, int64_t dst_stride) {
  using V = Vec<scalar_t>;
  constexpr int L = V::lanes;
  const bool blocked = for_each_block<L>(len, [&](int64_t q) __attribute__((always_inline)) {
    typename V::type v[L];
    load_transposed<V>(src, src_stride, samples, q, v);
    for (int i = 0; i < L; ++i) V::store(dst + (q + i) * dst_stride, v[i]);
  });
  if (blocked) return;
  for (int64_t q = 0; q < len; ++q) copy_pixel(src, src_stride, samples, q, dst + q * dst_stride);
}

// interleave with the pixels dealt out in turn to `phases` places: pixel q, at q + offset = j *
// phases + b, to dst + b * phase_step + j * column_step (LaneKernels::interleave_phases).
template <typename scalar_t>
TSC_INLINE void interleave_phases_impl(const scalar_t* src, int64_t src_stride, int64_t samples,
                                       int64_t len, scalar_t* dst, int64_t phases,
                                       int64_t phase_step, int64_t column_step,
                                       int64_t offset) {
  using V = Vec<scalar_t>;
  constexpr int L = V::lanes;
  const bool blocked = for_each_block<L>(len, [&](int64_t q) __attribute__((always_inline)) {
    typename V::type v[L];
    load_transposed<V>(src, src_stride, samples, q, v);
    int64_t b = (q + offset) % phases, j = (q + offset) / phases;
    for (int i = 0; i < L; ++i) {
      V::store(dst + b * phase_step + j * column_step, v[i]);
      if (++b == phases) b = 0, ++j;
    }
  });
  if (blocked) return;
  for (int64_t q = 0; q < len; ++q) {
    copy_pixel(src, src_stride, samples, q,
               dst + (q + offset) % phases * phase_step + (q + offset) / phases * column_step);
  }
}

// Finish: whether the epilogue does anything (a separate instantiation, so that the plain
// deinterleave stays as it was: a test per store cost the lanes forward up to 6 % on 64@56).
template <typename scalar_t, bool Finish>
TSC_INLINE void deinterleave_impl(const scalar_t* src, int64_t src_stride, int64_t len,
                                  int64_t samples, scalar_t* dst, int64_t dst_stride,
                                  StoreEpilogue<scalar_t> epilogue) {
  using V = Vec<scalar_t>;
  constexpr int L = V::lanes;
  const scalar_t* residual = epilogue.residual;
  const bool blocked = for_each_block<L>(len, [&](int64_t q) __attribute__((always_inline)) {
    typename V::type v[L];
    for (int i = 0; i < L; ++i) v[i] = V::load(src + (q + i) * src_stride);
    transpose(v);
    for (int s = 0; s < samples; ++s) {
      const int64_t at = s * dst_stride + q;
      if constexpr (Finish) {
        V::store(dst + at, finished_vector<V>(v[s], residual ? residual + at : nullptr,
                                              epilogue.relu));
      } else {
        V::store(dst + at, v[s]);
      }
    }
  });
  if (blocked) return;
  for (int64_t q = 0; q < len; ++q) {
    for (int s = 0; s < samples; ++s) {
      const int64_t at = s * dst_stride + q;
      dst[at] = finished_scalar(src[q * src_stride + s], residual ? residual + at : nullptr,
                                epilogue.relu);
    }
  }
}

using std::integer_sequence;

// One instruction set's kernels. MAX_TILE accumulators of VECTOR_BYTES each, plus the
// broadcast weight, fit its vector registers.
#define TSC_DEFINE_LANE_ISA(NAME, TARGET, VECTOR_BYTES, MAX_TILE)                            \
  struct NAME {                                                                             \
    static constexpr int vector_bytes = VECTOR_BYTES;                                       \
    static constexpr int max_tile = MAX_TILE;                                               \
    template <typename scalar_t, int R, int T, bool Half>                                   \
    TARGET static void tile(const scalar_t* x, int64_t rs, const int64_t* o,                \
                            const scalar_t* v, int64_t n, bool acc, scalar_t i, scalar_t* out) { \
      tile_impl<scalar_t, VECTOR_BYTES, R, T, Half>(x, rs, o, v, n, acc, i, out);           \
    }                                                                                       \
    template <typename scalar_t>                                                            \
    TARGET static void interleave(const scalar_t* src, int64_t ss, int64_t samples,         \
                                  int64_t len, scalar_t* dst, int64_t ds) {                 \
      interleave_impl(src, ss, samples, len, dst, ds);                                      \
    }                                                                                       \
    template <typename scalar_t>                                                            \
    TARGET static void interleave_phases(const scalar_t* src, int64_t ss, int64_t samples,  \
                                         int64_t len, scalar_t* dst, int64_t phases,        \
                                         int64_t ps, int64_t cs, int64_t offset) {          \
      interleave_phases_impl(src, ss, samples, len, dst, phases, ps, cs, offset);           \
    }                                                                                       \
    template <typename scalar_t>                                                            \
    TARGET static void deinterleave(const scalar_t* src, int64_t ss, int64_t len,           \
                                    int64_t samples, scalar_t* dst, int64_t ds,             \
                                    StoreEpilogue<scalar_t> e) {                            \
      if (e.residual || e.relu) {                                                           \
        deinterleave_impl<scalar_t, true>(src, ss, len, samples, dst, ds, e);               \
      } else {                                                                              \
        deinterleave_impl<scalar_t, false>(src, ss, len, samples, dst, ds, e);              \
      }                                                                                     \
    }                                                                                       \
  };

TSC_DEFINE_LANE_ISA(Avx512, TSC_TARGET_AVX512, 64, 28)
TSC_DEFINE_LANE_ISA(Avx2, TSC_TARGET_AVX2, 32, 12)

constexpr int kMaxRows = 7;
constexpr int kMaxCols = 28;

template <typename scalar_t>
using TileFn = void (*)(const scalar_t*, int64_t, const int64_t*, const scalar_t*, int64_t,
                        bool, scalar_t, scalar_t*);

// table[Half][R - 1][T - 1]: the tile of R rows and T columns, for R * T <= Isa::max_tile;
// half tails only where a vector holds two pixels.
template <typename Isa, typename scalar_t, bool Half, int R, int... T>
constexpr std::array<TileFn<scalar_t>, kMaxCols> tile_row(integer_sequence<int, T...>) {
  constexpr bool has_half = Isa::vector_bytes == 64;
  return {{(R * (T + 1) <= Isa::max_tile && (!Half || has_half)
                ? &Isa::template tile<scalar_t, R, T + 1, Half && has_half>
                : nullptr)...}};
}

template <typename Isa, typename scalar_t, bool Half, int... R>
constexpr std::array<std::array<TileFn<scalar_t>, kMaxCols>, kMaxRows> tile_rows(
    integer_sequence<int, R...>) {
  return {{tile_row<Isa, scalar_t, Half, R + 1>(std::make_integer_sequence<int, kMaxCols>())...}};
}

template <typename Isa, typename scalar_t>
struct TileTable {
  std::array<std::array<std::array<TileFn<scalar_t>, kMaxCols>, kMaxRows>, 2> table = {
      tile_rows<Isa, scalar_t, false>(std::make_integer_sequence<int, kMaxRows>()),
      tile_rows<Isa, scalar_t, true>(std::make_integer_sequence<int, kMaxRows>())};
};

template <typename Isa, typename scalar_t>
void tile_dispatch(const scalar_t* x, int64_t row_stride, const int64_t* offsets,
                   const scalar_t* values, int64_t taps, bool accumulate, scalar_t init,
                   scalar_t* out, int rows, int pixel_cols) {
  static const TileTable<Isa, scalar_t> tiles;
  constexpr int pixels = Isa::vector_bytes / 32;
  const int vectors = (pixel_cols + pixels - 1) / pixels;
  const bool half = vectors * pixels != pixel_cols;
  tiles.table[half][rows - 1][vectors - 1](x, row_stride, offsets, values, taps, accumulate,
                                           init, out);
}

template <typename Isa, typename scalar_t>
LaneKernels<scalar_t> kernels_for() {
  return {&tile_dispatch<Isa, scalar_t>, &Isa::template interleave<scalar_t>,
          &Isa::template interleave_phases<scalar_t>, &Isa::template deinterleave<scalar_t>,
          Isa::max_tile, kMaxRows, Isa::vector_bytes / 32};
}

}  // namespace

template <typename scalar_t>
const LaneKernels<scalar_t>* lane_kernels() {
  static const LaneKernels<scalar_t> avx512 = kernels_for<Avx512, scalar_t>();
  static const LaneKernels<scalar_t> avx2 = kernels_for<Avx2, scalar_t>();
  return isa_variant<const LaneKernels<scalar_t>*>(&avx512, &avx2, nullptr);
}

#else  // not x86-64 with GCC: no lane kernels

template <typename scalar_t>
const LaneKernels<scalar_t>* lane_kernels() {
  return nullptr;
}

#endif

template const LaneKernels<float>* lane_kernels<float>();
template const LaneKernels<double>* lane_kernels<double>();

}  // namespace torch_sparse_conv
