// Sparse-input (Toeplitz) conv2d through the public C++ API: forward values and stored
// pattern against a naive loop of scipy.signal.convolve2d's definition (full/same/valid),
// both API forms, gradients (C++ autograd) against at::conv2d's, and argument errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

#include "test_helpers.h"
#include "torch_sparse_conv.h"

namespace tsc = torch_sparse_conv;

namespace {

const std::vector<std::string> kModes = {"full", "same", "valid"};

// Output pixel (i, j) is pixel (i + offset, j + offset) of the 'full' convolution; scipy
// centres 'same' at (k - 1) // 2, also for even kernels.
int64_t mode_offset(const std::string& mode, int64_t kernel_side) {
  if (mode == "full") return 0;
  if (mode == "same") return (kernel_side - 1) / 2;
  return kernel_side - 1;
}

struct NaiveResult {
  at::Tensor values;   // (B, H_out * W_out) float64, every pixel
  at::Tensor covered;  // (B, H_out * W_out) bool: the kernel's footprint of a stored entry
};

// scipy.signal.convolve2d(image, kernel, mode) by its definition, in float64:
// full[i + a][j + c] += image[i][j] * kernel[a][c].
NaiveResult naive_convolve(const at::Tensor& images, const at::Tensor& stored,
                           const at::Tensor& kernel, const std::string& mode) {
  const int64_t batch = images.size(0), h = images.size(1), w = images.size(2);
  const int64_t kh = kernel.size(0), kw = kernel.size(1);
  const std::vector<int64_t> out_shape = tsc::toeplitz_output_shape({h, w}, {kh, kw}, mode);
  const int64_t oh = mode_offset(mode, kh), ow = mode_offset(mode, kw);
  const at::Tensor img64 = images.to(at::kDouble), k64 = kernel.to(at::kDouble);
  auto img = img64.accessor<double, 3>();
  auto st = stored.accessor<bool, 3>();
  auto k = k64.accessor<double, 2>();
  at::Tensor values = at::zeros({batch, out_shape[0], out_shape[1]}, at::kDouble);
  at::Tensor covered = at::zeros({batch, out_shape[0], out_shape[1]}, at::kBool);
  auto out = values.accessor<double, 3>();
  auto cov = covered.accessor<bool, 3>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        if (!st[b][i][j]) continue;
        for (int64_t a = 0; a < kh; ++a)
          for (int64_t c = 0; c < kw; ++c) {
            const int64_t y = i + a - oh, x = j + c - ow;
            if (y < 0 || y >= out_shape[0] || x < 0 || x >= out_shape[1]) continue;
            out[b][y][x] += img[b][i][j] * k[a][c];
            cov[b][y][x] = true;
          }
      }
  return {values.reshape({batch, -1}), covered.reshape({batch, -1})};
}

// Random sparse images (B, H, W): a stored mask and nonzero values where it is set.
struct SparseBatch {
  at::Tensor dense;   // (B, H, W)
  at::Tensor stored;  // (B, H, W) bool
  at::Tensor csr;     // sparse CSR (B, H * W), int64 indices, sorted columns
};

SparseBatch random_images(int64_t batch, int64_t h, int64_t w, double density,
                          at::ScalarType dtype) {
  SparseBatch s;
  s.stored = at::rand({batch, h, w}) < density;
  // Values in +-[0.5, 1.5): a stored entry is never an exact zero.
  const at::Tensor magnitude = at::rand({batch, h, w}, dtype) + 0.5;
  const at::Tensor sign = at::where(at::rand({batch, h, w}) < 0.5, -1.0, 1.0).to(dtype);
  s.dense = magnitude * sign * s.stored.to(dtype);
  s.csr = s.dense.reshape({batch, h * w}).to_sparse_csr();
  return s;
}

tsc::CsrImages parts(const at::Tensor& csr) {
  return {csr.crow_indices(), csr.col_indices(), csr.values()};
}

// A dense (B, H_out * W_out) view of a CSR result and of its stored pattern.
at::Tensor to_dense(const tsc::CsrImages& out, int64_t batch, int64_t pixels) {
  return at::sparse_csr_tensor(out.crow, out.col, out.values, {batch, pixels},
                               out.values.options().layout(at::kSparseCsr))
      .to_dense();
}

at::Tensor pattern(const tsc::CsrImages& out, int64_t batch, int64_t pixels) {
  return to_dense({out.crow, out.col, at::ones_like(out.values)}, batch, pixels) != 0;
}

void expect_sorted_columns(const tsc::CsrImages& out) {
  const auto crow = out.crow.accessor<int64_t, 1>();
  const auto col = out.col.accessor<int64_t, 1>();
  for (int64_t r = 0; r + 1 < crow.size(0); ++r)
    for (int64_t k = crow[r] + 1; k < crow[r + 1]; ++k)
      ASSERT_LT(col[k - 1], col[k]) << "row " << r << " is not sorted";
}

}  // namespace

TEST(ToeplitzConv2d, OutputShapeFollowsScipy) {
  EXPECT_EQ(tsc::toeplitz_output_shape({10, 8}, {3, 4}, "full"), (std::vector<int64_t>{12, 11}));
  EXPECT_EQ(tsc::toeplitz_output_shape({10, 8}, {3, 4}, "same"), (std::vector<int64_t>{10, 8}));
  EXPECT_EQ(tsc::toeplitz_output_shape({10, 8}, {3, 4}, "valid"), (std::vector<int64_t>{8, 5}));
}

TEST(ToeplitzConv2d, ForwardMatchesNaiveLoop) {
  torch::manual_seed(10);
  std::mt19937 rng(10);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t batch = pick(1, 4), h = pick(1, 12), w = pick(1, 12);
    const double density = std::uniform_real_distribution<double>(0.0, 0.6)(rng);
    const at::ScalarType dtype = trial % 2 ? at::kDouble : at::kFloat;
    const SparseBatch x = random_images(batch, h, w, density, dtype);
    for (const std::string& mode : kModes) {
      // 'valid' needs a kernel no larger than the image.
      const int64_t kh = pick(1, mode == "valid" ? std::min<int64_t>(h, 5) : 5);
      const int64_t kw = pick(1, mode == "valid" ? std::min<int64_t>(w, 5) : 5);
      const at::Tensor kernel = at::randn({kh, kw}, dtype);
      const NaiveResult ref = naive_convolve(x.dense, x.stored, kernel, mode);
      const int64_t pixels = ref.values.size(1);
      for (const std::string method : {"auto", "direct"}) {
        std::ostringstream trace;
        trace << "images (" << batch << ", " << h << ", " << w << "), density " << density
              << ", kernel (" << kh << ", " << kw << "), " << dtype << ", mode " << mode
              << ", method " << method;
        SCOPED_TRACE(trace.str());
        const tsc::CsrImages out = tsc::toeplitz_conv2d(parts(x.csr), kernel, {h, w}, mode,
                                                        method);
        ASSERT_EQ(out.crow.numel(), batch + 1);
        expect_sorted_columns(out);
        EXPECT_TRUE(at::equal(pattern(out, batch, pixels), ref.covered));
        tsc_test::expect_close(to_dense(out, batch, pixels), ref.values.to(dtype));
      }
    }
  }
}

// The sparse-tensor form: int32 indices accepted, a CSR tensor of the output shape back.
TEST(ToeplitzConv2d, SparseCsrTensorForm) {
  torch::manual_seed(11);
  const SparseBatch x = random_images(3, 7, 9, 0.2, at::kFloat);
  const at::Tensor images32 = at::sparse_csr_tensor(
      x.csr.crow_indices().to(at::kInt), x.csr.col_indices().to(at::kInt), x.csr.values(),
      x.csr.sizes(), x.csr.values().options().layout(at::kSparseCsr));
  const at::Tensor kernel = at::randn({4, 2});
  for (const std::string& mode : kModes) {
    SCOPED_TRACE("mode " + mode);
    const at::Tensor out = tsc::toeplitz_conv2d(images32, kernel, {7, 9}, mode);
    const std::vector<int64_t> shape = tsc::toeplitz_output_shape({7, 9}, {4, 2}, mode);
    EXPECT_EQ(out.layout(), at::kSparseCsr);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, shape[0] * shape[1]}));
    tsc_test::expect_close(out.to_dense(),
                           naive_convolve(x.dense, x.stored, kernel, mode).values.to(at::kFloat));
  }
}

TEST(ToeplitzConv2d, EmptyImagesGiveEmptyRows) {
  const at::Tensor images = at::zeros({3, 5 * 6}, at::kDouble).to_sparse_csr();
  const at::Tensor out = tsc::toeplitz_conv2d(images, at::ones({3, 3}, at::kDouble), {5, 6},
                                              "full");
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 7 * 8}));
  EXPECT_EQ(out.values().numel(), 0);
  EXPECT_TRUE(at::equal(out.crow_indices(), at::zeros({4}, at::kLong)));
}

// Outputs of 64 KiB and more reuse memory of freed outputs; a live output keeps its values
// while later calls run, and release_cached_outputs frees what is kept.
TEST(ToeplitzConv2d, LargeOutputsReuseOnlyFreedMemory) {
  torch::manual_seed(13);
  const at::Tensor images = at::rand({100, 60 * 60}, at::kDouble).to_sparse_csr();
  const at::Tensor k1 = at::randn({3, 3}, at::kDouble), k2 = at::randn({3, 3}, at::kDouble);
  tsc::release_cached_outputs();
  // Computed in fresh memory; its buffers go to the cache when the sparse result dies.
  const at::Tensor expected = tsc::toeplitz_conv2d(images, k2, {60, 60}).to_dense();
  const at::Tensor first = tsc::toeplitz_conv2d(images, k1, {60, 60});
  const at::Tensor first_copy = first.values().clone();
  ASSERT_GE(first.values().nbytes(), size_t(1) << 20);
  for (int round = 0; round < 2; ++round) {  // in reused memory: the same values
    EXPECT_TRUE(at::equal(tsc::toeplitz_conv2d(images, k2, {60, 60}).to_dense(), expected));
  }
  EXPECT_TRUE(at::equal(first.values(), first_copy));
  EXPECT_GT(tsc::release_cached_outputs(), 0);
  EXPECT_EQ(tsc::release_cached_outputs(), 0);
}

// backward() through the C++ graph: kernel and input-value gradients equal those of the same
// convolution written with at::conv2d on the dense images (flipped kernel: a true
// convolution), with the upstream gradient placed on the output's stored pattern.
TEST(ToeplitzConv2d, BackwardMatchesDenseConv2d) {
  torch::manual_seed(12);
  // Odd and even kernel sides: 'same' centres them differently.
  for (const auto& [mode, kh, kw] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"full", 3, 4}, {"same", 3, 4}, {"same", 4, 3}, {"valid", 3, 4}}) {
    SCOPED_TRACE("mode " + mode + ", kernel (" + std::to_string(kh) + ", " +
                 std::to_string(kw) + ")");
    const int64_t batch = 3, h = 8, w = 7;
    const SparseBatch x = random_images(batch, h, w, 0.25, at::kDouble);
    const at::Tensor kernel0 = at::randn({kh, kw}, at::kDouble);

    const at::Tensor values = x.csr.values().clone().requires_grad_();
    const at::Tensor kernel = kernel0.clone().requires_grad_();
    const tsc::CsrImages out = tsc::toeplitz_conv2d(
        {x.csr.crow_indices(), x.csr.col_indices(), values}, kernel, {h, w}, mode);
    const std::vector<int64_t> shape = tsc::toeplitz_output_shape({h, w}, {kh, kw}, mode);
    const int64_t pixels = shape[0] * shape[1];
    const at::Tensor upstream = at::randn({batch, pixels}, at::kDouble);
    const at::Tensor rows = at::repeat_interleave(at::arange(batch), at::diff(out.crow));
    (out.values * upstream.index({rows, out.col})).sum().backward();

    const at::Tensor dense = x.dense.clone().requires_grad_();
    const at::Tensor kernel_ref = kernel0.clone().requires_grad_();
    const at::Tensor flipped = kernel_ref.flip({0, 1}).view({1, 1, kh, kw});
    const at::Tensor full = at::conv2d(dense.unsqueeze(1), flipped, {}, {1, 1}, {kh - 1, kw - 1});
    const int64_t oh = mode_offset(mode, kh), ow = mode_offset(mode, kw);
    const at::Tensor cropped =
        full.slice(2, oh, oh + shape[0]).slice(3, ow, ow + shape[1]).reshape({batch, pixels});
    const at::Tensor on_pattern = pattern(out, batch, pixels).to(at::kDouble);
    (cropped * upstream * on_pattern).sum().backward();

    tsc_test::expect_close(kernel.grad(), kernel_ref.grad());
    tsc_test::expect_close(values.grad(), dense.grad().masked_select(x.stored));
  }
}

// The sparse-tensor form carries the graph too: through the CSR tensor's values, to the
// same gradients as the parts form.
TEST(ToeplitzConv2d, SparseCsrTensorFormIsDifferentiable) {
  torch::manual_seed(13);
  const SparseBatch x = random_images(2, 6, 7, 0.3, at::kDouble);
  const at::Tensor kernel0 = at::randn({3, 2}, at::kDouble);

  const at::Tensor values = x.csr.values().clone().requires_grad_();
  const at::Tensor kernel = kernel0.clone().requires_grad_();
  // sparse_compressed_tensor: at::sparse_csr_tensor would drop the values' graph.
  const at::Tensor images = at::sparse_compressed_tensor(
      x.csr.crow_indices(), x.csr.col_indices(), values, x.csr.sizes(),
      values.options().layout(at::kSparseCsr));
  at::Tensor out_values = tsc::toeplitz_conv2d(images, kernel, {6, 7}, "full").values();
  (out_values * out_values).sum().backward();

  const at::Tensor values_ref = x.csr.values().clone().requires_grad_();
  const at::Tensor kernel_ref = kernel0.clone().requires_grad_();
  const tsc::CsrImages out_ref = tsc::toeplitz_conv2d(
      {x.csr.crow_indices(), x.csr.col_indices(), values_ref}, kernel_ref, {6, 7}, "full");
  (out_ref.values * out_ref.values).sum().backward();

  ASSERT_TRUE(values.grad().defined() && kernel.grad().defined());
  tsc_test::expect_close(values.grad(), values_ref.grad());
  tsc_test::expect_close(kernel.grad(), kernel_ref.grad());
}

TEST(ToeplitzConv2d, ErrorsNameTheArgument) {
  const SparseBatch x = random_images(2, 6, 5, 0.3, at::kFloat);
  const tsc::CsrImages in = parts(x.csr);
  const at::Tensor kernel = at::randn({3, 3});

  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(in, kernel, {6, 5}, "circular"),
                    "mode must be 'full', 'same' or 'valid'");
  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(in, kernel, {6, 5}, "same", "fft"),
                    "method must be one of 'auto', 'direct', 'precomputed'");
  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(in, at::randn({1, 3, 3}), {6, 5}),
                    "kernel must be 2-D (kH, kW)");
  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(in, kernel.to(at::kDouble), {6, 5}),
                    "must have the dtype of x");
  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(in, at::randn({7, 2}), {6, 5}, "valid"),
                    "mode 'valid' needs a kernel no larger than the image");
  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(in, kernel, {6, 0}),
                    "image_shape must be two positive sizes");
  tsc::CsrImages bad_col = in;
  bad_col.col = in.col.clone();
  bad_col.col.index_put_({0}, 30);
  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(bad_col, kernel, {6, 5}),
                    "must lie in [0, 30) for H*W = 30, but col[0] = 30 is out of range");
  tsc::CsrImages bad_crow = in;
  bad_crow.crow = in.crow.clone();
  bad_crow.crow.index_put_({0}, 1);
  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(bad_crow, kernel, {6, 5}), "must start at 0");

  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(x.dense.reshape({2, 30}), kernel, {6, 5}),
                    "images must be a sparse CSR tensor");
  EXPECT_THROW_WITH(tsc::toeplitz_conv2d(x.csr, kernel, {5, 5}), "images must be (B, H*W)");
  EXPECT_THROW_WITH(tsc::toeplitz_output_shape({6, 5}, {3}, "same"),
                    "must have two sizes each");
}
