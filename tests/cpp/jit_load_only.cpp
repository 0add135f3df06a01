// A deployment program in its barest form: it loads a TorchScript model that uses the
// torch_sparse_conv ops and calls nothing of the library itself. It is linked with
// --as-needed, so it runs only if the package's target keeps the library (and its operator
// registrations) linked; otherwise torch::jit::load fails with "Unknown builtin op".
//
//   jit_load_only <model.pt> <expected.pt>   (expected.pt: attributes `input`, `output`)
#include <torch/script.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: jit_load_only <model.pt> <expected.pt>\n";
    return 2;
  }
  try {
    torch::jit::Module model = torch::jit::load(argv[1]);
    torch::jit::Module expected = torch::jit::load(argv[2]);
    model.eval();
    const at::Tensor output = model.forward({expected.attr("input").toTensor()}).toTensor();
    const at::Tensor reference = expected.attr("output").toTensor();
    if (!at::allclose(output, reference, 1e-4, 1e-4)) {
      std::cerr << "output differs from Python's by up to "
                << (output - reference).abs().max().item<double>() << "\n";
      return 1;
    }
  } catch (const std::exception& error) {  // c10::Error, or torch::jit::ErrorReport
    std::cerr << error.what() << "\n";
    return 1;
  }
  std::cout << "loaded and ran " << argv[1] << ": output matches Python's\n";
  return 0;
}
