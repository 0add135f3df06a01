// TorchScript deployment: models scripted and saved in Python (tests/cpp/export_fixture.py,
// run by ctest as a fixture) load with torch::jit::load in C++ and give Python's outputs and
// input gradients. Each expected_*.pt holds the input and Python's results as attributes of
// a scripted module, since that container is what both sides read without extra tools.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

#include "test_helpers.h"
#include "torch_sparse_conv.h"

namespace {

std::string fixture_path(const std::string& name) {
  const char* dir = std::getenv("TSC_FIXTURE_DIR");
  if (dir == nullptr) {
    ADD_FAILURE() << "TSC_FIXTURE_DIR is not set: run the suite through ctest, which exports "
                     "the TorchScript fixtures first (tests/cpp/export_fixture.py)";
    return name;
  }
  return std::string(dir) + "/" + name;
}

at::Tensor attribute(torch::jit::Module& module, const std::string& name) {
  return module.attr(name).toTensor();
}

}  // namespace

TEST(TorchScript, SparseFilterModelMatchesPython) {
  torch::jit::Module model = torch::jit::load(fixture_path("sparse_filter_model.pt"));
  torch::jit::Module expected = torch::jit::load(fixture_path("sparse_filter_expected.pt"));
  model.eval();
  const at::Tensor input = attribute(expected, "input").clone().requires_grad_();
  const at::Tensor output = model.forward({input}).toTensor();
  tsc_test::expect_close(output, attribute(expected, "output"));

  // The loaded graph calls the ops' C++ autograd: the same input gradient as in Python.
  output.sum().backward();
  tsc_test::expect_close(input.grad(), attribute(expected, "input_grad"));
}

TEST(TorchScript, ToeplitzModuleMatchesPython) {
  torch::jit::Module model = torch::jit::load(fixture_path("toeplitz_model.pt"));
  torch::jit::Module expected = torch::jit::load(fixture_path("toeplitz_expected.pt"));
  const at::Tensor images = attribute(expected, "input").to_sparse_csr();
  const at::Tensor output = model.forward({images}).toTensor();
  ASSERT_EQ(output.layout(), at::kSparseCsr);
  tsc_test::expect_close(output.to_dense(), attribute(expected, "output"));
}

TEST(TorchScript, SparseFilterModelOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (torch_sparse_conv::cuda_version_compiled() == 0)
    GTEST_SKIP() << "library built without CUDA kernels";
  torch::jit::Module model = torch::jit::load(fixture_path("sparse_filter_model.pt"));
  torch::jit::Module expected = torch::jit::load(fixture_path("sparse_filter_expected.pt"));
  model.to(at::kCUDA);
  const at::Tensor output = model.forward({attribute(expected, "input").cuda()}).toTensor();
  EXPECT_TRUE(output.is_cuda());
  tsc_test::expect_close(output.cpu(), attribute(expected, "output"));
}
