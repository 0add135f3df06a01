// Fixed-width vectors for the CPU hot loops, through GCC's vector extension, and the
// in-register transposes the layout conversions are built from. Included only by files
// compiled per instruction set (csrc/common/cpu_isa.h): the code that uses them is inlined
// into functions marked TSC_TARGET_*, which give the vectors their registers.
#pragma once

#include <cstdint>
#include <cstring>

#include "csrc/common/cpu_isa.h"

namespace torch_sparse_conv {

#define TSC_INLINE inline __attribute__((always_inline))

// BYTES-wide vectors of scalar_t: 64 bytes are zmm registers, 32 ymm, 16 xmm.
template <typename scalar_t, int BYTES = 32>
struct Vec {
  typedef scalar_t type __attribute__((vector_size(BYTES)));
  static constexpr int lanes = BYTES / sizeof(scalar_t);
  static TSC_INLINE type load(const scalar_t* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));  // unaligned load
    return v;
  }
  static TSC_INLINE void store(scalar_t* p, type v) { std::memcpy(p, &v, sizeof(v)); }
  // A store that bypasses the caches (non-temporal); p aligned to BYTES. The stores are
  // weakly ordered: the caller fences (sfence) before others may read them.
  static TSC_INLINE void stream(scalar_t* p, type v) {
#ifdef TSC_X86_ISAS
    // In assembly: the intrinsics would need this (not target-marked) function to carry the
    // instruction set of the kernels it is inlined into.
    if constexpr (BYTES == 16) {
      asm volatile("movntps %1, %0" : "=m"(*reinterpret_cast<type*>(p)) : "x"(v));
    } else {
      asm volatile("vmovntps %1, %0" : "=m"(*reinterpret_cast<type*>(p)) : "v"(v));
    }
#else
    store(p, v);
#endif
  }
  // One vbroadcastss/sd. A loop filling the lanes compiled to a chain of 7 vinsertps per
  // weight, which saturated the shuffle port: 1x1 256->64 @56 ran at 33 GFLOP/s in the loop.
  static TSC_INLINE type broadcast(scalar_t s) { return type{} + s; }
};

#ifdef TSC_X86_ISAS  // __builtin_shuffle is GCC's; the files that transpose check this too
// In-register transpose of an 8 x 8 block of 32-byte rows: v[i][j] -> v[j][i].
TSC_INLINE void transpose(Vec<float>::type (&v)[8]) {
  using F = Vec<float>::type;
  using I = int __attribute__((vector_size(32)));
  F a[8], b[8];
  for (int i = 0; i < 8; i += 2) {  // interleave pairs of rows, element by element
    a[i] = __builtin_shuffle(v[i], v[i + 1], I{0, 8, 1, 9, 4, 12, 5, 13});
    a[i + 1] = __builtin_shuffle(v[i], v[i + 1], I{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4) {  // then pairs of elements
    for (int j = 0; j < 2; ++j) {
      b[i + j] = __builtin_shuffle(a[i + j], a[i + j + 2], I{0, 1, 8, 9, 4, 5, 12, 13});
      b[i + j + 2] = __builtin_shuffle(a[i + j], a[i + j + 2], I{2, 3, 10, 11, 6, 7, 14, 15});
    }
  }
  for (int i = 0; i < 4; ++i) {  // then halves
    v[i] = __builtin_shuffle(b[i], b[i + 4], I{0, 1, 2, 3, 8, 9, 10, 11});
    v[i + 4] = __builtin_shuffle(b[i], b[i + 4], I{4, 5, 6, 7, 12, 13, 14, 15});
  }
  // The steps above leave the columns in the order 0 2 1 3 4 6 5 7.
  F t[8] = {v[0], v[2], v[1], v[3], v[4], v[6], v[5], v[7]};
  for (int i = 0; i < 8; ++i) v[i] = t[i];
}

// The same for a 4 x 4 block of 32-byte rows of float64.
TSC_INLINE void transpose(Vec<double>::type (&v)[4]) {
  using D = Vec<double>::type;
  using I = long __attribute__((vector_size(32)));
  const D a0 = __builtin_shuffle(v[0], v[1], I{0, 4, 2, 6});
  const D a1 = __builtin_shuffle(v[0], v[1], I{1, 5, 3, 7});
  const D a2 = __builtin_shuffle(v[2], v[3], I{0, 4, 2, 6});
  const D a3 = __builtin_shuffle(v[2], v[3], I{1, 5, 3, 7});
  v[0] = __builtin_shuffle(a0, a2, I{0, 1, 4, 5});
  v[1] = __builtin_shuffle(a1, a3, I{0, 1, 4, 5});
  v[2] = __builtin_shuffle(a0, a2, I{2, 3, 6, 7});
  v[3] = __builtin_shuffle(a1, a3, I{2, 3, 6, 7});
}
#endif

}  // namespace torch_sparse_conv
