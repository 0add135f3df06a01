// Small helpers shared by the C++ tests.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>
#include <sstream>
#include <string>

namespace tsc_test {

// A dense weight whose taps are kept with probability `density` (the rest exactly zero).
inline at::Tensor random_sparse_weight(at::IntArrayRef sizes, double density,
                                       const at::TensorOptions& options) {
  const at::Tensor weight = at::randn(sizes, options);
  return weight * (at::rand(sizes, options) < density).to(options.dtype());
}

// allclose with tolerances for the dtype; on failure reports the largest difference.
inline void expect_close(const at::Tensor& actual, const at::Tensor& expected) {
  ASSERT_TRUE(actual.defined()) << "result is undefined";
  ASSERT_EQ(actual.sizes(), expected.sizes());
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type());
  const bool is_double = expected.scalar_type() == at::kDouble;
  const double rtol = is_double ? 1e-9 : 1e-4, atol = is_double ? 1e-9 : 1e-4;
  const bool close = at::allclose(actual, expected, rtol, atol);
  EXPECT_TRUE(close) << "max |difference| = "
                     << (actual - expected).abs().max().item<double>() << " for shape "
                     << expected.sizes();
}

inline std::string error_message(const c10::Error& error) {
  return error.what_without_backtrace();
}

}  // namespace tsc_test

// Expects `statement` to throw c10::Error (a failed TORCH_CHECK) whose message contains
// `substring`, so a test fails when a check fires for the wrong reason.
#define EXPECT_THROW_WITH(statement, substring)                                         \
  EXPECT_THROW(                                                                         \
      {                                                                                 \
        try {                                                                           \
          (void)(statement);                                                            \
        } catch (const c10::Error& error) {                                             \
          const std::string message = tsc_test::error_message(error);                   \
          EXPECT_NE(message.find(substring), std::string::npos)                         \
              << "expected \"" << (substring) << "\" in the message:\n" << message;     \
          throw;                                                                        \
        }                                                                               \
      },                                                                                \
      c10::Error)
