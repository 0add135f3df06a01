// Sparse-filter conv2d through the public C++ API: forward against at::conv2d on a random
// grid of geometries, gradients (C++ autograd) against at::conv2d's on the masked weight,
// argument errors, and CPU/CUDA parity where a GPU and the CUDA kernels exist.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "test_helpers.h"
#include "torch_sparse_conv.h"

namespace tsc = torch_sparse_conv;

namespace {

struct ConvCase {
  int64_t batch, in_channels, out_channels, height, width, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups;
  double density;
  bool with_bias;
};

// A random geometry whose output is at least 1 x 1.
ConvCase random_case(std::mt19937& rng) {
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  ConvCase c{};
  c.groups = pick(1, 3);
  c.in_channels = c.groups * pick(1, 4);
  c.out_channels = c.groups * pick(1, 5);
  c.batch = pick(1, 3);
  c.kernel_h = pick(1, 5);
  c.kernel_w = pick(1, 5);
  c.stride_h = pick(1, 3);
  c.stride_w = pick(1, 3);
  c.dilation_h = pick(1, 2);
  c.dilation_w = pick(1, 2);
  c.pad_h = pick(0, 2);
  c.pad_w = pick(0, 2);
  c.height = (c.kernel_h - 1) * c.dilation_h + 1 + pick(0, 9);
  c.width = (c.kernel_w - 1) * c.dilation_w + 1 + pick(0, 9);
  c.density = std::uniform_real_distribution<double>(0.05, 0.9)(rng);
  c.with_bias = pick(0, 1) == 1;
  return c;
}

std::string describe(const ConvCase& c) {
  std::ostringstream s;
  s << "input (" << c.batch << ", " << c.in_channels << ", " << c.height << ", " << c.width
    << "), weight (" << c.out_channels << ", " << c.in_channels / c.groups << ", "
    << c.kernel_h << ", " << c.kernel_w << "), stride (" << c.stride_h << ", " << c.stride_w
    << "), padding (" << c.pad_h << ", " << c.pad_w << "), dilation (" << c.dilation_h << ", "
    << c.dilation_w << "), groups " << c.groups << ", density " << c.density
    << (c.with_bias ? ", bias" : "");
  return s.str();
}

struct ConvTensors {
  at::Tensor input, weight, bias;  // bias undefined without one
};

ConvTensors make_tensors(const ConvCase& c, at::ScalarType dtype, const at::Device& device) {
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  ConvTensors t;
  t.input = at::randn({c.batch, c.in_channels, c.height, c.width}, options);
  t.weight = tsc_test::random_sparse_weight(
      {c.out_channels, c.in_channels / c.groups, c.kernel_h, c.kernel_w}, c.density, options);
  if (c.with_bias) t.bias = at::randn({c.out_channels}, options);
  return t;
}

at::Tensor sparse_forward(const ConvCase& c, const ConvTensors& t, const tsc::PackedFilter& w,
                          const std::string& method) {
  return tsc::sparse_filter_conv2d(
      t.input, w, t.bias.defined() ? c10::optional<at::Tensor>(t.bias) : c10::nullopt,
      {c.stride_h, c.stride_w}, {c.pad_h, c.pad_w}, {c.dilation_h, c.dilation_w}, c.groups,
      method);
}

at::Tensor reference_forward(const ConvCase& c, const at::Tensor& input,
                             const at::Tensor& weight, const at::Tensor& bias) {
  return at::conv2d(input, weight, bias, {c.stride_h, c.stride_w}, {c.pad_h, c.pad_w},
                    {c.dilation_h, c.dilation_w}, c.groups);
}

}  // namespace

TEST(SparseFilterConv2d, PackUnpackRoundTrip) {
  torch::manual_seed(0);
  const auto weight = tsc_test::random_sparse_weight({6, 4, 3, 2}, 0.3, at::kFloat);
  const tsc::PackedFilter packed = tsc::pack_sparse_filter(weight);
  EXPECT_EQ(packed.weight_size, (std::vector<int64_t>{6, 4, 3, 2}));
  EXPECT_EQ(packed.row_ptr.numel(), 7);
  EXPECT_EQ(packed.values.numel(), weight.count_nonzero().item<int64_t>());
  EXPECT_TRUE(at::equal(tsc::unpack_sparse_filter(packed), weight));
}

// Every method against at::conv2d on random geometries, float32 and float64.
TEST(SparseFilterConv2d, ForwardMatchesConv2dOnRandomGrid) {
  torch::manual_seed(1);
  std::mt19937 rng(1);
  for (int trial = 0; trial < 40; ++trial) {
    const ConvCase c = random_case(rng);
    const at::ScalarType dtype = trial % 2 ? at::kDouble : at::kFloat;
    const ConvTensors t = make_tensors(c, dtype, at::kCPU);
    const tsc::PackedFilter w = tsc::pack_sparse_filter(t.weight);
    const at::Tensor expected = reference_forward(c, t.input, t.weight, t.bias);
    for (const std::string method : {"auto", "direct", "unfold", "dense"}) {
      SCOPED_TRACE(describe(c) + ", " + c10::toString(dtype) + ", method " + method);
      tsc_test::expect_close(sparse_forward(c, t, w, method), expected);
    }
  }
}

TEST(SparseFilterConv2d, ChannelsLastInput) {
  torch::manual_seed(2);
  const ConvCase c{2, 6, 8, 9, 7, 3, 3, 2, 1, 1, 1, 1, 1, 2, 0.3, true};
  ConvTensors t = make_tensors(c, at::kFloat, at::kCPU);
  t.input = t.input.contiguous(at::MemoryFormat::ChannelsLast);
  const tsc::PackedFilter w = tsc::pack_sparse_filter(t.weight);
  tsc_test::expect_close(sparse_forward(c, t, w, "auto"),
                         reference_forward(c, t.input, t.weight, t.bias));
}

// backward() through the C++ graph: input, kept values and bias gradients equal those of
// at::conv2d with the weight masked to the kept taps (pruned taps get no gradient).
TEST(SparseFilterConv2d, BackwardMatchesConv2dOnMaskedWeight) {
  torch::manual_seed(3);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 12; ++trial) {
    ConvCase c = random_case(rng);
    c.with_bias = true;
    const ConvTensors t = make_tensors(c, at::kDouble, at::kCPU);
    for (const std::string method : {"direct", "unfold"}) {
      SCOPED_TRACE(describe(c) + ", method " + method);
      tsc::PackedFilter w = tsc::pack_sparse_filter(t.weight);
      w.values.requires_grad_();
      const at::Tensor x = t.input.clone().requires_grad_();
      const at::Tensor b = t.bias.clone().requires_grad_();
      const at::Tensor out = tsc::sparse_filter_conv2d(
          x, w, b, {c.stride_h, c.stride_w}, {c.pad_h, c.pad_w}, {c.dilation_h, c.dilation_w},
          c.groups, method);
      const at::Tensor upstream = at::randn_like(out);
      (out * upstream).sum().backward();

      const at::Tensor mask = t.weight != 0;
      const at::Tensor dense_w = t.weight.clone().requires_grad_();
      const at::Tensor x_ref = t.input.clone().requires_grad_();
      const at::Tensor b_ref = t.bias.clone().requires_grad_();
      const at::Tensor ref = reference_forward(c, x_ref, dense_w * mask, b_ref);
      (ref * upstream).sum().backward();

      tsc_test::expect_close(x.grad(), x_ref.grad());
      tsc_test::expect_close(b.grad(), b_ref.grad());
      // CSR order is row-major over the kept taps, as masked_select walks them.
      tsc_test::expect_close(w.values.grad(), dense_w.grad().masked_select(mask));
    }
  }
}

// The input's gradient keeps its transposed pattern between calls: a second backward finds
// it (same gradient), a pattern changed in place is not served the old one, and
// release_cached_patterns frees what is kept.
TEST(SparseFilterConv2d, BackwardKeepsTransposedPatternsSafely) {
  torch::manual_seed(5);
  const at::Tensor weight =
      at::randn({12, 8, 3, 3}, at::kDouble) * (at::rand({12, 8, 3, 3}) < 0.1);
  const at::Tensor input = at::randn({2, 8, 9, 9}, at::kDouble);
  tsc::PackedFilter w = tsc::pack_sparse_filter(weight);
  auto grad_input = [&](const at::Tensor& dense) {
    const at::Tensor x = input.clone().requires_grad_();
    tsc::sparse_filter_conv2d(x, w, c10::nullopt, {1, 1}, {1, 1}, {1, 1}, 1, "direct")
        .sum().backward();
    const at::Tensor x_ref = input.clone().requires_grad_();
    at::conv2d(x_ref, dense, {}, {1, 1}, {1, 1}).sum().backward();
    tsc_test::expect_close(x.grad(), x_ref.grad());
  };
  tsc::release_cached_patterns();
  grad_input(weight);
  grad_input(weight);  // found
  // Every tap moved to the last columns of its row, in place (same tensors, same nnz).
  const int64_t columns = 8 * 3 * 3;
  auto rp = w.row_ptr.accessor<int64_t, 1>();
  auto ci = w.col_idx.accessor<int64_t, 1>();
  for (int64_t oc = 0; oc < 12; ++oc) {
    const int64_t taps = rp[oc + 1] - rp[oc];
    for (int64_t k = rp[oc]; k < rp[oc + 1]; ++k) ci[k] = columns - taps + (k - rp[oc]);
  }
  grad_input(tsc::unpack_sparse_filter(w));
  EXPECT_GT(tsc::release_cached_patterns(), 0);
  EXPECT_EQ(tsc::release_cached_patterns(), 0);
}

TEST(SparseFilterConv2d, ErrorsNameTheArgument) {
  const auto x = at::randn({1, 4, 8, 8});
  const auto weight = tsc_test::random_sparse_weight({6, 4, 3, 3}, 0.5, at::kFloat);
  const tsc::PackedFilter w = tsc::pack_sparse_filter(weight);

  EXPECT_THROW_WITH(tsc::sparse_filter_conv2d(x, w, c10::nullopt, {1, 1}, {0, 0}, {1, 1}, 1,
                                              "fastest"),
                    "method must be one of");
  EXPECT_THROW_WITH(tsc::sparse_filter_conv2d(at::randn({1, 3, 8, 8}), w),
                    "expected input with 4 channels");
  EXPECT_THROW_WITH(tsc::sparse_filter_conv2d(x.to(at::kDouble), w),
                    "must have the dtype of input");
  EXPECT_THROW_WITH(tsc::sparse_filter_conv2d(at::randn({4, 8, 8}), w),
                    "input must be a 4-D (N, C, H, W) tensor");
  EXPECT_THROW_WITH(tsc::sparse_filter_conv2d(x, w, at::randn({5})),
                    "bias must be 1-D with C_out = 6 elements");
  EXPECT_THROW_WITH(tsc::sparse_filter_conv2d(x, w, c10::nullopt, {0, 1}),
                    "stride must be positive");
  EXPECT_THROW_WITH(tsc::sparse_filter_conv2d(at::randn({1, 4, 2, 2}), w),
                    "can't be greater than the padded input size");
  tsc::PackedFilter bad = w;
  bad.col_idx = w.col_idx.clone();
  bad.col_idx.index_put_({0}, 4 * 3 * 3);
  EXPECT_THROW_WITH(tsc::sparse_filter_conv2d(x, bad), "[0, 36)");
  EXPECT_THROW_WITH(tsc::pack_sparse_filter(at::randn({6, 4, 3})), "weight must be 4-D");
}

TEST(SparseFilterConv2dCuda, MatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (tsc::cuda_version_compiled() == 0) GTEST_SKIP() << "library built without CUDA kernels";
  torch::manual_seed(4);
  std::mt19937 rng(4);
  for (int trial = 0; trial < 10; ++trial) {
    const ConvCase c = random_case(rng);
    SCOPED_TRACE(describe(c));
    const ConvTensors cpu = make_tensors(c, at::kFloat, at::kCPU);
    ConvTensors gpu{cpu.input.cuda(), cpu.weight.cuda(),
                    cpu.bias.defined() ? cpu.bias.cuda() : at::Tensor()};
    const at::Tensor out = sparse_forward(c, gpu, tsc::pack_sparse_filter(gpu.weight), "auto");
    EXPECT_TRUE(out.is_cuda());
    tsc_test::expect_close(out.cpu(), reference_forward(c, cpu.input, cpu.weight, cpu.bias));
  }
}
