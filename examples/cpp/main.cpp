// torch_sparse_conv from C++: a pruned convolution and a sparse-input convolution through
// the C++ API, then, given paths, TorchScript models exported from Python; each run on
// generated input and timed.
//
//   sparse_conv_example [pruned_model.pt [sparse_input_model.pt]]
// pruned_model.pt: a scripted model taking one (1, 3, 32, 32) batch.
// sparse_input_model.pt: a scripted module taking a CSR batch (B, H*W) of sparse images,
// with an attribute image_shape = [H, W] (tests/cpp/export_fixture.py writes both).
#include <torch/script.h>
#include <torch/torch.h>
#include <torch_sparse_conv.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <iostream>
#include <vector>

namespace tsc = torch_sparse_conv;

namespace {

// Median wall time of `fn` in milliseconds, after one warm-up call.
double median_ms(const std::function<void()>& fn, int repeats = 5) {
  fn();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    const auto stop = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  std::nth_element(times.begin(), times.begin() + repeats / 2, times.end());
  return times[repeats / 2];
}

bool sparse_filter_demo() {
  // A ResNet-like 3x3 layer with 90 % of its taps pruned.
  const at::Tensor x = at::randn({8, 64, 28, 28});
  const at::Tensor dense_w = at::randn({64, 64, 3, 3});
  const at::Tensor weight = dense_w * (at::rand_like(dense_w) < 0.1).to(at::kFloat);
  const tsc::PackedFilter packed = tsc::pack_sparse_filter(weight);
  const at::Tensor y = tsc::sparse_filter_conv2d(x, packed, c10::nullopt, {1, 1}, {1, 1});
  const at::Tensor reference = at::conv2d(x, weight, {}, {1, 1}, {1, 1});
  const bool ok = at::allclose(y, reference, 1e-4, 1e-4);
  std::cout << "sparse-filter conv2d, " << packed.values.numel() << " of " << weight.numel()
            << " taps kept: " << (ok ? "matches" : "DIFFERS FROM") << " at::conv2d\n"
            << "  sparse " << median_ms([&] { tsc::sparse_filter_conv2d(x, packed, c10::nullopt,
                                                                          {1, 1}, {1, 1}); })
            << " ms, dense at::conv2d "
            << median_ms([&] { at::conv2d(x, weight, {}, {1, 1}, {1, 1}); }) << " ms\n";
  return ok;
}

bool toeplitz_demo() {
  // 200 images of 100 x 100 pixels, 1 % of them set, blurred by a 5 x 5 kernel.
  const int64_t h = 100, w = 100;
  const at::Tensor dense = at::rand({200, h * w}, at::kDouble);
  const at::Tensor images = (dense * (dense > 0.99).to(at::kDouble)).to_sparse_csr();
  const at::Tensor kernel = at::rand({5, 5}, at::kDouble);
  const at::Tensor out = tsc::toeplitz_conv2d(images, kernel, {h, w}, "same");
  // Reference: the same true convolution, dense, through at::conv2d (flipped kernel).
  const at::Tensor reference =
      at::conv2d(images.to_dense().view({-1, 1, h, w}), kernel.flip({0, 1}).view({1, 1, 5, 5}),
                 {}, {1, 1}, {2, 2})
          .view({-1, h * w});
  const bool ok = at::allclose(out.to_dense(), reference, 1e-9, 1e-9);
  std::cout << "sparse-input conv2d of " << images.size(0) << " images, "
            << images.values().numel() << " stored pixels in, " << out.values().numel()
            << " out: " << (ok ? "matches" : "DIFFERS FROM") << " the dense convolution\n"
            << "  sparse " << median_ms([&] { tsc::toeplitz_conv2d(images, kernel, {h, w}); })
            << " ms\n";
  return ok;
}

void pruned_model_demo(const std::string& path) {
  torch::jit::Module model = torch::jit::load(path);
  model.eval();
  const at::Tensor x = at::randn({1, 3, 32, 32});
  torch::NoGradGuard no_grad;
  const at::Tensor y = model.forward({x}).toTensor();
  std::cout << "TorchScript pruned model " << path << ": output " << y.sizes() << ", "
            << median_ms([&] { model.forward({x}); }) << " ms\n";
}

void sparse_input_model_demo(const std::string& path) {
  torch::jit::Module model = torch::jit::load(path);
  model.eval();
  const std::vector<int64_t> shape = model.attr("image_shape").toIntVector();
  const at::Tensor dense = at::rand({64, shape[0] * shape[1]});
  const at::Tensor images = (dense * (dense > 0.95).to(at::kFloat)).to_sparse_csr();
  torch::NoGradGuard no_grad;
  const at::Tensor y = model.forward({images}).toTensor();
  std::cout << "TorchScript sparse-input module " << path << ": " << images.size(0)
            << " images in, CSR " << y.sizes() << " with " << y.values().numel()
            << " stored pixels out, " << median_ms([&] { model.forward({images}); }) << " ms\n";
}

}  // namespace

int main(int argc, char** argv) {
  torch::manual_seed(0);
  bool ok = sparse_filter_demo();
  ok = toeplitz_demo() && ok;
  try {
    if (argc >= 2) pruned_model_demo(argv[1]);
    if (argc >= 3) sparse_input_model_demo(argv[2]);
  } catch (const std::exception& error) {  // c10::Error, torch::jit::ErrorReport
    std::cerr << "could not run the TorchScript model: " << error.what() << "\n";
    ok = false;
  }
  return ok ? 0 : 1;
}
