// A deployment program in its barest form: it loads a model that uses the torch_sparse_conv
// ops, a TorchScript module or an AOTInductor package, and calls nothing of the library
// itself. It is linked with --as-needed, so it runs only if the package's target keeps the
// library (and its operator registrations) linked; otherwise loading fails with "Unknown
// builtin op" (TorchScript) or "Could not find schema for torch_sparse_conv::..." (AOTI).
//
//   load_only torchscript <model.pt> <expected.pt>
//   load_only aoti <package.pt2> <expected.pt>
// expected.pt: a scripted module with attributes `input` and `output`.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <iostream>
#include <string>

namespace {

at::Tensor run_torchscript(const std::string& path, const at::Tensor& input) {
  torch::jit::Module model = torch::jit::load(path);
  model.eval();
  return model.forward({input}).toTensor();
}

at::Tensor run_aoti(const std::string& path, const at::Tensor& input) {
  torch::inductor::AOTIModelPackageLoader loader(path);
  return loader.run({input}).at(0);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string format = argc == 4 ? argv[1] : "";
  if (format != "torchscript" && format != "aoti") {
    std::cerr << "usage: load_only torchscript|aoti <model> <expected.pt>\n";
    return 2;
  }
  try {
    torch::jit::Module expected = torch::jit::load(argv[3]);
    const at::Tensor input = expected.attr("input").toTensor();
    const at::Tensor reference = expected.attr("output").toTensor();
    torch::NoGradGuard no_grad;
    const at::Tensor output =
        format == "aoti" ? run_aoti(argv[2], input) : run_torchscript(argv[2], input);
    if (!at::allclose(output, reference, 1e-4, 1e-4)) {
      std::cerr << "output differs from Python's by up to "
                << (output - reference).abs().max().item<double>() << "\n";
      return 1;
    }
  } catch (const std::exception& error) {  // c10::Error, or torch::jit::ErrorReport
    std::cerr << error.what() << "\n";
    return 1;
  }
  std::cout << "loaded and ran " << argv[2] << " (" << format << "): output matches Python's\n";
  return 0;
}
