// Integer helpers every size computation of both families uses (host code).
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <initializer_list>

namespace torch_sparse_conv {

// a / b rounded up, for a >= 0 and b > 0.
constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// a rounded up to a multiple of b.
constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// The product of `factors`, or an error "<op>: <what> does not fit in 64 bits".
inline int64_t checked_product(std::initializer_list<int64_t> factors, const char* op,
                               const char* what) {
  int64_t product = 1;
  for (int64_t f : factors) {
    TORCH_CHECK(!__builtin_mul_overflow(product, f, &product), op, ": ", what,
                " does not fit in 64 bits");
  }
  return product;
}

}  // namespace torch_sparse_conv
