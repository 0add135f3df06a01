// Writing a dense run of sums as sparse (index, value) pairs: the last step of every Toeplitz
// kernel that sums into a dense buffer.
#pragma once

#include <cstdint>

namespace torch_sparse_conv {

// For i in [0, n) with sums[i] != 0 (NaN counts as nonzero), in increasing i, writes
// first_index + i to indices[] and sums[i] to values[]; returns how many it wrote. Nothing is
// written past that count, so the outputs only need room for what is kept. With AVX-512
// (checked once, at run time) eight sums go at a time through compress instructions; else a
// scalar loop.
#define TSC_DECLARE_COMPACT(SCALAR, INDEX)                                                   \
  int64_t compact_nonzeros(const SCALAR* sums, int64_t n, int64_t first_index, INDEX* indices, \
                           SCALAR* values);                                                   \
  /* The same, leaving sums[0, n) all zero. */                                                \
  int64_t compact_nonzeros_clearing(SCALAR* sums, int64_t n, int64_t first_index,             \
                                    INDEX* indices, SCALAR* values);                          \
  /* Keeping every i with flags[i] != 0 whatever its sum. */                                  \
  int64_t compact_flagged(const SCALAR* sums, const char* flags, int64_t n,                   \
                          int64_t first_index, INDEX* indices, SCALAR* values);               \
  /* rows x (row_words * 64) positions, row r's position j at sums[r * row_words * 64 + j] */ \
  /* and bit j of bits[r * row_words...]: kept when its bit is set (and, with drop_zeros, */  \
  /* its sum is nonzero), written with index first_index + r * row_step + j. Clears the    */ \
  /* bits and the sums it reads: both are all zero afterwards.                             */ \
  int64_t compact_marked(SCALAR* sums, uint64_t* bits, int64_t rows, int64_t row_words,      \
                         int64_t row_step, bool drop_zeros, int64_t first_index,             \
                         INDEX* indices, SCALAR* values);
TSC_DECLARE_COMPACT(double, int32_t)
TSC_DECLARE_COMPACT(double, int64_t)
TSC_DECLARE_COMPACT(float, int32_t)
TSC_DECLARE_COMPACT(float, int64_t)
#undef TSC_DECLARE_COMPACT

}  // namespace torch_sparse_conv
