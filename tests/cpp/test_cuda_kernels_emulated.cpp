// The CUDA kernels of both operator families, run on the CPU by cuda/common/kernel_emulation.h
// and compared with independent references (at::conv2d and autograd, the library's CPU
// Toeplitz operator, naive loops). This checks what each kernel computes — indexing, tiling,
// staging, barriers — on machines without a GPU; the pytest files' cuda cases
// (tests/sparse_filter, tests/toeplitz; -k cuda) check the real launches where a GPU exists. The
// launch configurations are the ones the .cu files use (same plan functions); the glue around them
// (ATen calls on device tensors) is mirrored where a test needs it, and said so.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "csrc/common/csr_check.h"
#include "csrc/sparse_filter/geometry.h"
#include "csrc/sparse_filter/checks.h"
#include "csrc/toeplitz/geometry.h"
#include "torch_sparse_conv.h"
// Last: these define CUDA's keywords as macros for the emulation.
#include "cuda/sparse_filter/pipeline.cuh"
#include "cuda/toeplitz/conv2d_pipeline.cuh"
#include "cuda/toeplitz/matrix_pipeline.cuh"

namespace {

using tsc_emulation::Dim3;
using tsc_emulation::launch;
namespace tsc = torch_sparse_conv;

void expect_close(const at::Tensor& actual, const at::Tensor& expected, double tolerance,
                  const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const at::Tensor a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  EXPECT_FALSE(at::isnan(a).any().item<bool>()) << what << ": NaN (an output never written?)";
  EXPECT_TRUE(at::allclose(a, e, tolerance, tolerance))
      << what << ": max |difference| " << (a - e).abs().max().item<double>();
}

double tolerance_for(at::ScalarType dtype) {
  return dtype == at::kDouble ? 1e-10 : dtype == at::kFloat ? 1e-4 : 3e-2;
}

// ------------------------------------------------------------------------- the emulator

__global__ void reverse_in_shared(const int* in, int* out) {
  TSC_DYNAMIC_SHARED_MEMORY(bytes);
  int* shared = reinterpret_cast<int*>(bytes);
  const unsigned threads = blockDim.x * blockDim.y;
  const unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
  const unsigned block = blockIdx.y * gridDim.x + blockIdx.x;
  shared[t] = in[block * threads + t];
  __syncthreads();  // every thread's write is visible to every other thread after this
  out[block * threads + t] = shared[threads - 1 - t];
}

TEST(KernelEmulation, BarriersOrderSharedMemoryAcrossThreadsAndBlocks) {
  std::vector<int> in(6 * 64), out(in.size(), -1);
  for (size_t i = 0; i < in.size(); ++i) in[i] = int(i);
  launch(Dim3(3, 2), Dim3(16, 4), 64 * sizeof(int), reverse_in_shared, in.data(), out.data());
  for (size_t block = 0; block < 6; ++block) {
    for (size_t t = 0; t < 64; ++t) EXPECT_EQ(out[block * 64 + t], in[block * 64 + 63 - t]);
  }
}

__global__ void barrier_in_a_branch(int* out) {
  if (threadIdx.x < 3) __syncthreads();
  out[threadIdx.x] = 1;
}

TEST(KernelEmulation, BarrierReachedBySomeThreadsThrows) {
  std::vector<int> out(8);
  EXPECT_THROW(launch(Dim3(1), Dim3(8), 0, barrier_in_a_branch, out.data()), std::logic_error);
}

__global__ void read_shared(float* out) {
  TSC_DYNAMIC_SHARED_MEMORY(bytes);
  out[threadIdx.x] = reinterpret_cast<float*>(bytes)[threadIdx.x];
}

TEST(KernelEmulation, UnwrittenSharedMemoryReadsAsNaN) {
  std::vector<float> out(4, 0.0f);
  launch(Dim3(1), Dim3(4), 4 * sizeof(float), read_shared, out.data());
  for (float v : out) EXPECT_TRUE(std::isnan(v));
}

// Thread t reads what thread t - 1 wrote, with the barrier between them left out: in forward
// order the value is there by chance; the emulator must not always run that order.
__global__ void missing_barrier(int* out) {
  TSC_DYNAMIC_SHARED_MEMORY(bytes);
  int* shared = reinterpret_cast<int*>(bytes);
  const int t = threadIdx.x;
  shared[t] = t;
  out[blockIdx.x * blockDim.x + t] = t > 0 ? shared[t - 1] : -1;
}

TEST(KernelEmulation, MissingBarrierChangesResults) {
  std::vector<int> out(3 * 32);
  launch(Dim3(3), Dim3(32), 32 * sizeof(int), missing_barrier, out.data());
  int wrong = 0;
  for (int i = 0; i < int(out.size()); ++i) wrong += out[i] != (i % 32 > 0 ? i % 32 - 1 : -1);
  EXPECT_GT(wrong, 0);
}

__global__ void barriers_at_two_places(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void throws_in_a_thread(int* out) {
  if (threadIdx.x == 5) throw std::runtime_error("thread 5");
  out[threadIdx.x] = 1;
}

TEST(KernelEmulation, DifferentBarriersAndExceptionsReachTheCaller) {
  std::vector<int> out(8);
  EXPECT_THROW(launch(Dim3(1), Dim3(8), 0, barriers_at_two_places, out.data()),
               std::logic_error);
  EXPECT_THROW(launch(Dim3(1), Dim3(8), 0, throws_in_a_thread, out.data()), std::runtime_error);
  EXPECT_THROW(launch(Dim3(1, 70000), Dim3(8), 0, throws_in_a_thread, out.data()),
               std::invalid_argument);
}

// ------------------------------------------------------------------- sparse-filter conv2d

struct ConvCase {
  int64_t batch, in_channels, out_channels, groups, in_h, in_w, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  double density;
  bool bias;
  std::string describe() const {
    std::ostringstream s;
    s << "N" << batch << " C" << in_channels << "->" << out_channels << " g" << groups << " "
      << in_h << "x" << in_w << " k" << kernel_h << "x" << kernel_w << " s" << stride_h << ","
      << stride_w << " p" << pad_h << "," << pad_w << " d" << dilation_h << "," << dilation_w
      << " density " << density << (bias ? " bias" : "");
    return s.str();
  }
};

// A pruned weight and its CSR pieces, as pack_sparse_filter lays them out.
struct SparseWeight {
  at::Tensor dense, row_ptr, col_idx, values, mask;
};

SparseWeight make_sparse_weight(const ConvCase& c, at::ScalarType dtype) {
  SparseWeight w;
  const std::vector<int64_t> sizes = {c.out_channels, c.in_channels / c.groups, c.kernel_h,
                                      c.kernel_w};
  w.dense = at::randn(sizes, at::kDouble) * (at::rand(sizes, at::kDouble) < c.density);
  w.dense = w.dense.to(dtype);
  const at::Tensor flat = w.dense.reshape({c.out_channels, -1});
  w.mask = flat != 0;
  w.row_ptr = at::zeros({c.out_channels + 1}, at::kLong);
  w.row_ptr.narrow(0, 1, c.out_channels).copy_(w.mask.sum(1).cumsum(0));
  w.col_idx = w.mask.nonzero().select(1, 1).contiguous();
  w.values = flat.masked_select(w.mask).contiguous();
  return w;
}

// The geometry (dtype-independent; the CPU checks accept float32 and float64 only).
tsc::SparseFilterGeometry geometry_of(const ConvCase& c, const at::Tensor& input,
                                      const SparseWeight& w, const at::Tensor& bias) {
  return tsc::check_sparse_filter_conv2d_args(
      input.to(at::kFloat), w.row_ptr, w.col_idx, w.values.to(at::kFloat), w.dense.sizes(),
      bias.defined() ? c10::optional<at::Tensor>(bias.to(at::kFloat)) : c10::nullopt,
      {c.stride_h, c.stride_w}, {c.pad_h, c.pad_w}, {c.dilation_h, c.dilation_w}, c.groups);
}

// The pipelines' launcher (cuda/common/launch_shape.h), emulated. Grid-stride kernels get at
// most three blocks, so their loops take turns; every launch's shape is recorded when
// `shapes` is given.
struct EmulatedLaunch {
  std::vector<tsc::LaunchShape>* shapes = nullptr;
  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, const tsc::LaunchShape& shape, Args... args) const {
    if (shapes != nullptr) shapes->push_back(shape);
    const int64_t blocks = shape.grid_stride ? std::min<int64_t>(shape.blocks_x, 3) : shape.blocks_x;
    launch(Dim3(unsigned(blocks), unsigned(shape.blocks_y)), Dim3(unsigned(shape.threads)),
           shape.shared_bytes, kernel, args...);
  }
};

// sparse_filter_direct_forward_cuda, emulated, for a GPU with `multiprocessors` SMs and the
// default 48 KiB of shared memory per block, or 100 KiB opted in when `optin`. `tiled`
// reports whether the tiled kernel ran (else the per-output one).
at::Tensor forward_emulated(const at::Tensor& input, const SparseWeight& w, const at::Tensor& bias,
                            const tsc::SparseFilterGeometry& g, int64_t multiprocessors,
                            bool optin, bool* tiled) {
  at::Tensor output = at::full({g.batch, g.out_channels, g.out_h, g.out_w},
                               std::numeric_limits<double>::quiet_NaN(), input.options());
  const int64_t shared_limit = optin ? tsc::kMergedWindowBytes : tsc::kWindowBytes;
  std::vector<tsc::LaunchShape> shapes;
  tsc::sparse_filter_direct_pipeline(EmulatedLaunch{&shapes}, input, w.row_ptr,
                                     w.col_idx, w.values, bias, g, multiprocessors, shared_limit,
                                     output);
  *tiled = !shapes.empty() && !shapes[0].grid_stride;
  for (const tsc::LaunchShape& shape : shapes) {
    EXPECT_LE(int64_t(shape.shared_bytes), shared_limit);
  }
  return output;
}

// The per-output kernel alone, on any shape.
at::Tensor per_output_emulated(const at::Tensor& input, const SparseWeight& w,
                               const at::Tensor& bias, const tsc::SparseFilterGeometry& g) {
  at::Tensor output = at::full({g.batch, g.out_channels, g.out_h, g.out_w},
                               std::numeric_limits<double>::quiet_NaN(), input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "per_output", [&] {
    launch(Dim3(3), Dim3(tsc::kCudaThreads), 0,
           tsc::per_output_direct_kernel<scalar_t, at::opmath_type<scalar_t>>,
           input.data_ptr<scalar_t>(), w.row_ptr.data_ptr<int64_t>(),
           w.col_idx.data_ptr<int64_t>(), w.values.data_ptr<scalar_t>(),
           bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, tsc::to_conv_shape(g),
           output.data_ptr<scalar_t>(), output.numel());
  });
  return output;
}

ConvCase random_conv_case(std::mt19937& rng) {
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  ConvCase c;
  for (;;) {
    c.groups = pick(1, 3);
    c.in_channels = c.groups * pick(1, 5);
    c.out_channels = c.groups * pick(1, 40);
    c.batch = pick(1, 3);
    c.in_h = pick(1, 13);
    c.in_w = pick(1, 13);
    c.kernel_h = pick(1, 4);
    c.kernel_w = pick(1, 4);
    c.stride_h = pick(1, 3);
    c.stride_w = pick(1, 3);
    c.pad_h = pick(0, 2);
    c.pad_w = pick(0, 2);
    c.dilation_h = pick(1, 2);
    c.dilation_w = pick(1, 2);
    c.density = std::uniform_real_distribution<double>(0.05, 0.9)(rng);
    c.bias = pick(0, 1) == 1;
    const int64_t span_h = (c.kernel_h - 1) * c.dilation_h + 1;
    const int64_t span_w = (c.kernel_w - 1) * c.dilation_w + 1;
    if (c.in_h + 2 * c.pad_h >= span_h && c.in_w + 2 * c.pad_w >= span_w) return c;
  }
}

// Shapes that reach every branch of the plan: several windows per group (chunks > 1),
// several tiles per image, more output channels than one pass, a wide stride.
std::vector<ConvCase> planned_conv_cases() {
  return {
      {2, 80, 9, 1, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 0.2, true},     // 2-5 windows per group
      {1, 6, 70, 2, 9, 40, 3, 3, 1, 1, 1, 1, 1, 1, 0.2, false},     // 2 tiles per row, 35 oc/group
      {3, 4, 33, 1, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, 0.5, true},       // several images per tile
      {1, 3, 17, 1, 30, 30, 5, 5, 3, 2, 2, 0, 2, 1, 0.4, false},    // strided, dilated
      {2, 2, 5, 1, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 0.9, true},        // 1x1
      // One window over 48 KiB, merged passes: for float64, float32, and half types.
      {4, 36, 40, 1, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 0.1, false},
      {4, 60, 40, 1, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 0.1, true},
      {4, 120, 40, 1, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 0.1, false},
      // Seven output-channel blocks: merged passes with a partial last one (3 + 3 + 1 on
      // three SMs).
      {2, 3, 200, 1, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 0.3, true},
      // Several images per tile and several windows per group together, with groups.
      {10, 60, 12, 1, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 0.2, false},
      {6, 60, 12, 2, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 0.2, true},
      // A window no block can stage: the pipeline falls back to the per-output kernel.
      {1, 2, 3, 1, 280, 280, 31, 31, 1, 1, 0, 0, 9, 9, 0.05, true},
      {1, 2, 3, 1, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 0.0, true},        // no kept taps: bias only
  };
}

class SparseFilterKernels : public ::testing::TestWithParam<at::ScalarType> {};

// Returns whether the pipeline ran the tiled kernel.
bool check_forward_case(const ConvCase& c, at::ScalarType dtype) {
  const SparseWeight w = make_sparse_weight(c, dtype);
  const at::Tensor input = at::randn({c.batch, c.in_channels, c.in_h, c.in_w}, at::kDouble).to(dtype);
  const at::Tensor bias = c.bias ? at::randn({c.out_channels}, at::kDouble).to(dtype) : at::Tensor();
  const tsc::SparseFilterGeometry g = geometry_of(c, input, w, bias);
  const at::Tensor expected = at::conv2d(
      input.to(at::kDouble), w.dense.to(at::kDouble),
      bias.defined() ? bias.to(at::kDouble) : at::Tensor(), {c.stride_h, c.stride_w},
      {c.pad_h, c.pad_w}, {c.dilation_h, c.dilation_w}, c.groups);
  // One SM merges every pass of a block into one launch block; many SMs keep them apart.
  bool tiled = false;
  for (const int64_t multiprocessors : {int64_t(1), int64_t(3), int64_t(1000)}) {
    for (const bool optin : {false, true}) {
      const at::Tensor out = forward_emulated(input, w, bias, g, multiprocessors, optin, &tiled);
      expect_close(out, expected, tolerance_for(dtype),
                   c.describe() + (tiled ? " tiled" : " per-output") + " SMs " +
                       std::to_string(multiprocessors) + (optin ? " opt-in window" : ""));
    }
  }
  expect_close(per_output_emulated(input, w, bias, g), expected, tolerance_for(dtype),
               c.describe() + " per-output kernel");
  return tiled;
}

TEST_P(SparseFilterKernels, DirectForwardMatchesConv2dOnPlannedShapes) {
  for (const ConvCase& c : planned_conv_cases()) {
    EXPECT_EQ(check_forward_case(c, GetParam()), c.kernel_h < 31) << c.describe();
  }
}

TEST_P(SparseFilterKernels, DirectForwardMatchesConv2dOnRandomShapes) {
  std::mt19937 rng(1234 + int(GetParam()));
  at::manual_seed(7);
  for (int i = 0; i < 25; ++i) check_forward_case(random_conv_case(rng), GetParam());
}

TEST_P(SparseFilterKernels, PlanCoversEveryBranch) {
  // The planned shapes above must reach the branches they are there for.
  const at::ScalarType dtype = GetParam();
  const size_t bytes = c10::elementSize(dtype);
  bool several_windows = false, merged_passes = false, several_images = false;
  bool opted_in = false, images_and_windows = false, partial_merge = false;
  for (const ConvCase& c : planned_conv_cases()) {
    const SparseWeight w = make_sparse_weight(c, dtype);
    const at::Tensor input = at::zeros({c.batch, c.in_channels, c.in_h, c.in_w}, dtype);
    const tsc::SparseFilterGeometry g = geometry_of(c, input, w, at::Tensor());
    for (const int64_t limit : {tsc::kWindowBytes, tsc::kMergedWindowBytes}) {
      for (const int64_t multiprocessors : {int64_t(1), int64_t(3)}) {
        tsc::TileGeometry t;
        const bool fits = c.kernel_h < 31;  // all but the huge dilated window
        ASSERT_EQ(tsc::plan_tiles(g, bytes, multiprocessors, limit, t), fits) << c.describe();
        if (!fits) continue;
        several_windows |= t.chunks > 1;
        merged_passes |= t.oc_loops > 1;
        several_images |= t.nb > 1;
        images_and_windows |= t.nb > 1 && t.chunks > 1;
        partial_merge |= t.oc_loops > 1 && t.oc_blocks_per_group % t.oc_loops != 0;
        opted_in |= int64_t(tsc::window_bytes(t, bytes)) > tsc::kWindowBytes;
        EXPECT_LE(int64_t(t.nb) * t.th * t.tw, tsc::kCudaThreads);
        EXPECT_LE(int64_t(tsc::window_bytes(t, bytes)), limit);
        if (t.chunks > 1) {
          EXPECT_EQ(t.oc_loops, 1) << "passes merge only when one window holds the group";
        }
      }
    }
  }
  EXPECT_TRUE(several_windows && merged_passes && several_images && opted_in);
  EXPECT_TRUE(images_and_windows && partial_merge);
}

TEST_P(SparseFilterKernels, BackwardMatchesAutograd) {
  const at::ScalarType dtype = GetParam();
  std::mt19937 rng(99 + int(dtype));
  at::manual_seed(11);
  for (int i = 0; i < 8; ++i) {
    const ConvCase c = random_conv_case(rng);
    const SparseWeight w = make_sparse_weight(c, dtype);
    const at::Tensor input =
        at::randn({c.batch, c.in_channels, c.in_h, c.in_w}, at::kDouble).to(dtype);
    const tsc::SparseFilterGeometry g = geometry_of(c, input, w, at::Tensor());
    const at::Tensor grad_output =
        at::randn({c.batch, c.out_channels, g.out_h, g.out_w}, at::kDouble).to(dtype);
    // Reference: autograd of conv2d in float64, the weight gradient read at the kept taps.
    const at::Tensor x = input.to(at::kDouble).requires_grad_();
    const at::Tensor weight = w.dense.to(at::kDouble).requires_grad_();
    at::conv2d(x, weight, {}, {c.stride_h, c.stride_w}, {c.pad_h, c.pad_w},
               {c.dilation_h, c.dilation_w}, c.groups)
        .backward(grad_output.to(at::kDouble));
    const at::Tensor expected_values =
        weight.grad().reshape({c.out_channels, -1}).masked_select(w.mask);

    const at::Tensor row_of = tsc::row_of_entries(w.row_ptr, c.out_channels, w.values.numel());
    std::vector<tsc::LaunchShape> shapes;
    const EmulatedLaunch emulated{&shapes};
    const at::Tensor grad_input = tsc::sparse_filter_grad_input_pipeline(
        emulated, grad_output, row_of, w.col_idx, w.values, g);
    const at::Tensor grad_values = tsc::sparse_filter_grad_values_pipeline(
        emulated, grad_output, input, row_of, w.col_idx, g);
    // Sums over the whole batch and plane: half precision rounds the output once.
    const double tolerance = dtype == at::kDouble ? 1e-10 : dtype == at::kFloat ? 1e-4 : 1e-1;
    expect_close(grad_input, x.grad(), tolerance, c.describe() + " grad_input");
    expect_close(grad_values, expected_values, tolerance, c.describe() + " grad_values");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SparseFilterKernels,
                         ::testing::Values(at::kFloat, at::kDouble, at::kHalf, at::kBFloat16),
                         [](const ::testing::TestParamInfo<at::ScalarType>& info) {
                           return std::string(c10::toString(info.param));
                         });

// ---------------------------------------------------------------- Toeplitz (sparse input)

struct ToeplitzCase {
  int64_t batch, in_h, in_w, kernel_h, kernel_w;
  std::string mode;
  double density;
  bool duplicates;  // repeated and unsorted columns within an image
};

// A random CSR batch (B, H*W), int64 indices.
tsc::CsrImages random_images(const ToeplitzCase& c, at::ScalarType dtype, std::mt19937& rng) {
  std::vector<int64_t> crow = {0}, col;
  std::bernoulli_distribution keep(c.density);
  std::uniform_int_distribution<int64_t> pixel(0, c.in_h * c.in_w - 1);
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t p = 0; p < c.in_h * c.in_w; ++p) {
      if (keep(rng)) col.push_back(p);
    }
    if (c.duplicates) {
      for (int i = 0; i < 3; ++i) col.push_back(pixel(rng));
      std::shuffle(col.begin() + crow.back(), col.end(), rng);
    }
    crow.push_back(int64_t(col.size()));
  }
  tsc::CsrImages x;
  x.crow = at::tensor(crow, at::kLong);
  x.col = at::tensor(col, at::kLong);
  x.values = at::randn({int64_t(col.size())}, at::kDouble).to(dtype);
  return x;
}

using tsc::row_of_entries;

std::vector<ToeplitzCase> random_toeplitz_cases(std::mt19937& rng, int count) {
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const char* modes[] = {"full", "same", "valid"};
  std::vector<ToeplitzCase> cases;
  while (int(cases.size()) < count) {
    ToeplitzCase c{pick(1, 4), pick(1, 12), pick(1, 12), pick(1, 5), pick(1, 5),
                   modes[pick(0, 2)], std::uniform_real_distribution<double>(0.0, 0.6)(rng),
                   pick(0, 2) == 0};
    // 'valid' needs the kernel inside the image.
    if (c.mode != "valid" || (c.kernel_h <= c.in_h && c.kernel_w <= c.in_w)) cases.push_back(c);
  }
  return cases;
}

std::string describe(const ToeplitzCase& c) {
  return "B" + std::to_string(c.batch) + " " + std::to_string(c.in_h) + "x" +
         std::to_string(c.in_w) + " k" + std::to_string(c.kernel_h) + "x" +
         std::to_string(c.kernel_w) + " " + c.mode + " density " + std::to_string(c.density) +
         (c.duplicates ? " duplicates" : "");
}

// A random batch in `dtype`, its float64 copy (the CPU operator's reference input), a kernel
// and the geometry.
struct ToeplitzInputs {
  tsc::CsrImages x, x64;
  at::Tensor kernel;
  tsc::ToeplitzGeometry g;
};

ToeplitzInputs make_inputs(const ToeplitzCase& c, at::ScalarType dtype, std::mt19937& rng) {
  ToeplitzInputs in;
  in.x = random_images(c, dtype, rng);
  in.kernel = at::randn({c.kernel_h, c.kernel_w}, at::kDouble).to(dtype);
  in.x64 = in.x;
  in.x64.values = in.x.values.to(at::kDouble);
  in.g = tsc::check_toeplitz_args(in.x.crow, in.x.col, in.x64.values, in.kernel.to(at::kDouble),
                                  {c.in_h, c.in_w}, c.mode);
  return in;
}

class ToeplitzKernels : public ::testing::TestWithParam<at::ScalarType> {};

// toeplitz_conv2d_cuda's 'direct' method: the same pipeline, kernels emulated.
TEST_P(ToeplitzKernels, DirectPipelineMatchesTheCpuOperator) {
  const at::ScalarType dtype = GetParam();
  std::mt19937 rng(5 + int(dtype));
  at::manual_seed(3);
  for (const ToeplitzCase& c : random_toeplitz_cases(rng, 30)) {
    const auto [x, x64, kernel, g] = make_inputs(c, dtype, rng);
    // The CPU operator in float64 (it takes float32 and float64 only) as the reference.
    const tsc::CsrImages expected =
        tsc::toeplitz_conv2d(x64, kernel.to(at::kDouble), {c.in_h, c.in_w}, c.mode, "direct");
    for (const bool wide_keys : {false, true}) {
      tsc::CsrImages out;
      std::tie(out.crow, out.col, out.values) =
          wide_keys
              ? tsc::toeplitz_direct_pipeline<int64_t>(EmulatedLaunch(), x.crow, x.col,
                                                       x.values, kernel, g)
              : tsc::toeplitz_direct_pipeline<int>(EmulatedLaunch(), x.crow, x.col, x.values,
                                                   kernel, g);
      const std::string what = describe(c) + (wide_keys ? " int64 keys" : " int32 keys");
      EXPECT_TRUE(at::equal(out.crow, expected.crow)) << what << ": row pointers";
      ASSERT_TRUE(at::equal(out.col, expected.col)) << what << ": columns";
      expect_close(out.values, expected.values, tolerance_for(dtype), what + ": values");
    }
  }
}

// The frame-tile path (one block per image, the frame in shared memory): the random cases
// above, then frames wider than one block of pixels, with more images than blocks.
TEST_P(ToeplitzKernels, FrameTilePipelineMatchesTheCpuOperator) {
  const at::ScalarType dtype = GetParam();
  std::mt19937 rng(29 + int(dtype));
  at::manual_seed(4);
  std::vector<ToeplitzCase> cases = random_toeplitz_cases(rng, 20);
  cases.push_back({7, 20, 23, 5, 4, "full", 0.2, true});
  cases.push_back({5, 31, 9, 3, 7, "same", 0.05, false});
  cases.push_back({4, 17, 30, 2, 2, "valid", 0.6, false});
  cases.push_back({6, 16, 16, 3, 3, "same", 0.0, false});  // no entries at all
  for (const ToeplitzCase& c : cases) {
    const auto [x, x64, kernel, g] = make_inputs(c, dtype, rng);
    ASSERT_TRUE(tsc::frame_tile_fits(g, dtype, tsc::kFrameTileMaxBytes)) << describe(c);
    const tsc::CsrImages expected =
        tsc::toeplitz_conv2d(x64, kernel.to(at::kDouble), {c.in_h, c.in_w}, c.mode, "direct");
    tsc::CsrImages out;
    std::tie(out.crow, out.col, out.values) =
        tsc::toeplitz_frame_tile_pipeline(EmulatedLaunch(), x.crow, x.col, x.values, kernel, g);
    EXPECT_TRUE(at::equal(out.crow, expected.crow)) << describe(c) << ": row pointers";
    ASSERT_TRUE(at::equal(out.col, expected.col)) << describe(c) << ": columns";
    expect_close(out.values, expected.values, tolerance_for(dtype), describe(c) + ": values");
  }
}

TEST_P(ToeplitzKernels, BackwardMatchesNaiveLoops) {
  const at::ScalarType dtype = GetParam();
  std::mt19937 rng(17 + int(dtype));
  at::manual_seed(5);
  for (const ToeplitzCase& c : random_toeplitz_cases(rng, 20)) {
    const auto [x, x64, kernel, g] = make_inputs(c, dtype, rng);
    const tsc::CsrImages out =
        tsc::toeplitz_conv2d(x64, kernel.to(at::kDouble), {c.in_h, c.in_w}, c.mode, "direct");
    const at::Tensor grad = at::randn({out.col.size(0)}, at::kDouble);
    const int64_t nnz = x.col.size(0), taps = c.kernel_h * c.kernel_w;

    // Naive: every input entry's taps, the output pixel each one lands on, its gradient.
    const int64_t out_pixels = g.out_h * g.out_w;
    at::Tensor dense_grad = at::zeros({g.batch * out_pixels}, at::kDouble);
    const at::Tensor out_rows = row_of_entries(out.crow, g.batch, out.col.size(0));
    dense_grad.index_put_({out_rows * out_pixels + out.col}, grad);
    const at::Tensor k64 = kernel.to(at::kDouble);
    at::Tensor expected_values = at::zeros({nnz}, at::kDouble);
    at::Tensor expected_terms = at::zeros({nnz, taps}, at::kDouble);
    const at::Tensor rows = row_of_entries(x.crow, g.batch, nnz);
    for (int64_t e = 0; e < nnz; ++e) {
      const int64_t a = x.col[e].item<int64_t>() / c.in_w, b = x.col[e].item<int64_t>() % c.in_w;
      for (int64_t u = 0; u < c.kernel_h; ++u) {
        for (int64_t t = 0; t < c.kernel_w; ++t) {
          const int64_t r = a + u - g.offset_h, s = b + t - g.offset_w;
          if (r < 0 || r >= g.out_h || s < 0 || s >= g.out_w) continue;
          const double gv =
              dense_grad[rows[e].item<int64_t>() * out_pixels + r * g.out_w + s].item<double>();
          expected_values[e] += k64[u][t].item<double>() * gv;
          expected_terms[e][u * c.kernel_w + t] = x64.values[e].item<double>() * gv;
        }
      }
    }
    const auto [grad_values, grad_kernel] = tsc::toeplitz_backward_pipeline(
        EmulatedLaunch(), grad.to(dtype), x.crow, x.col, x.values, kernel, out.crow, out.col, g,
        {true, true});
    // The reference reads grad in float64; the kernel, grad rounded to the dtype.
    const double tolerance = dtype == at::kDouble ? 1e-10 : dtype == at::kFloat ? 1e-4 : 0.1;
    expect_close(grad_values, expected_values, tolerance, describe(c) + ": grad_values");
    expect_close(grad_kernel, expected_terms.sum(0).view({c.kernel_h, c.kernel_w}),
                 dtype == at::kDouble || dtype == at::kFloat ? tolerance : 0.5,
                 describe(c) + ": grad_kernel");
  }
}

// The checks the pipelines make on the device, with their messages.
TEST(ToeplitzPipelines, RejectInvalidCsrWithClearMessages) {
  const at::Tensor kernel = at::ones({3, 3}, at::kFloat);
  const tsc::ToeplitzGeometry g = tsc::toeplitz_geometry(kernel, {4, 4}, "same");
  auto geometry = [&](int64_t batch) {
    tsc::ToeplitzGeometry gb = g;
    gb.batch = batch;
    return gb;
  };
  // Both 'direct' paths, the sort-based one and the frame tile (whose count pass runs before
  // the checks, clamping what it reads).
  auto direct = [&](std::vector<int64_t> crow, std::vector<int64_t> col) {
    const at::Tensor values = at::ones({int64_t(col.size())}, at::kFloat);
    const at::Tensor r = at::tensor(crow, at::kLong), c = at::tensor(col, at::kLong);
    const tsc::ToeplitzGeometry gb = geometry(int64_t(crow.size()) - 1);
    std::string first_error;
    try {
      tsc::toeplitz_direct_pipeline<int>(EmulatedLaunch(), r, c, values, kernel, gb);
    } catch (const c10::Error& e) {
      first_error = e.what_without_backtrace();
    }
    try {
      tsc::toeplitz_frame_tile_pipeline(EmulatedLaunch(), r, c, values, kernel, gb);
    } catch (const c10::Error& e) {
      EXPECT_EQ(std::string(e.what_without_backtrace()), first_error);
      throw;
    }
    ADD_FAILURE() << "the frame tile accepted what the sorted path rejected: " << first_error;
  };
  auto expect_error = [](const std::function<void()>& call, const std::string& part) {
    try {
      call();
      ADD_FAILURE() << "no error; expected one containing: " << part;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find(part), std::string::npos)
          << e.what_without_backtrace();
    }
  };
  expect_error([&] { direct({0, 2}, {3, 16}); }, "column indices must lie in [0, 16)");
  expect_error([&] { direct({0, 2}, {-1, 3}); }, "column indices must lie in [0, 16)");
  expect_error([&] { direct({0, 3, 2}, {1, 2}); }, "row pointers must be non-decreasing");
  expect_error([&] { direct({1, 2}, {1, 2}); }, "row pointers must start at 0");
  expect_error([&] { direct({0, 1}, {1, 2}); },
               "row pointers must end at the number of entries in col (2)");
  expect_error([&] { direct({0, 9, 2}, {1, 2}); }, "row pointers must be non-decreasing");
  expect_error([&] { direct({-5, 2}, {1, 2}); }, "row pointers must start at 0");
  expect_error([&] { direct({0, std::numeric_limits<int64_t>::max()}, {1, 2}); },
               "row pointers must end at the number of entries in col (2)");
  expect_error([&] { direct({0, 2}, {std::numeric_limits<int64_t>::min(), 2}); },
               "column indices must lie in [0, 16)");

  // The backward also checks the output pattern the forward returned.
  const at::Tensor crow = at::tensor(std::vector<int64_t>{0, 1}, at::kLong);
  const at::Tensor col = at::tensor(std::vector<int64_t>{5}, at::kLong);
  const at::Tensor values = at::ones({1}, at::kFloat);
  auto backward = [&](std::vector<int64_t> out_crow, std::vector<int64_t> out_col) {
    const at::Tensor grad = at::ones({int64_t(out_col.size())}, at::kFloat);
    tsc::toeplitz_backward_pipeline(EmulatedLaunch(), grad, crow, col, values, kernel,
                                    at::tensor(out_crow, at::kLong),
                                    at::tensor(out_col, at::kLong), geometry(1), {true, true});
  };
  expect_error([&] { backward({0, 2}, {4, 3}); }, "strictly ascending columns");
  expect_error([&] { backward({0, 2}, {4, 4}); }, "strictly ascending columns");
  expect_error([&] { backward({0, 2}, {4, 16}); }, "the output's column indices");
  backward({0, 3}, {0, 4, 9});  // a valid pattern passes
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ToeplitzKernels,
                         ::testing::Values(at::kFloat, at::kDouble, at::kHalf, at::kBFloat16),
                         [](const ::testing::TestParamInfo<at::ScalarType>& info) {
                           return std::string(c10::toString(info.param));
                         });

// Only stored entries enter a frame-tile sum: an infinite tap reaches the pixels a stored
// entry reaches through it, and no others (0 * inf would be NaN there).
TEST(ToeplitzPipelines, FrameTileKeepsInfiniteTapsToTheirFootprint) {
  std::mt19937 rng(41);
  const ToeplitzCase c{3, 9, 11, 3, 4, "same", 0.2, false};
  tsc::CsrImages x = random_images(c, at::kDouble, rng);
  x.values = x.values.abs() + 0.5;  // positive: sums of +inf stay +inf
  at::Tensor kernel = at::rand({3, 4}, at::kDouble);
  kernel[1][2] = std::numeric_limits<double>::infinity();
  const tsc::ToeplitzGeometry g =
      tsc::check_toeplitz_args(x.crow, x.col, x.values, kernel, {c.in_h, c.in_w}, c.mode);
  const tsc::CsrImages expected =
      tsc::toeplitz_conv2d(x, kernel, {c.in_h, c.in_w}, c.mode, "direct");
  const auto [crow, col, values] =
      tsc::toeplitz_frame_tile_pipeline(EmulatedLaunch(), x.crow, x.col, x.values, kernel, g);
  ASSERT_TRUE(at::equal(col, expected.col));
  EXPECT_FALSE(at::isnan(values).any().item<bool>());
  EXPECT_TRUE(at::equal(at::isinf(values), at::isinf(expected.values)));
  const at::Tensor finite = at::isfinite(values);
  expect_close(values.masked_select(finite), expected.values.masked_select(finite), 1e-10,
               "finite sums");
}

TEST(ToeplitzPipelines, FrameTileServesFramesThatFitItsSharedMemory) {
  const tsc::ToeplitzGeometry small = tsc::toeplitz_geometry(5, 5, {100, 100}, "same");
  EXPECT_TRUE(tsc::frame_tile_fits(small, at::kFloat, 227 * 1024));
  EXPECT_TRUE(tsc::frame_tile_fits(small, at::kHalf, 227 * 1024));   // accumulates in float
  EXPECT_TRUE(tsc::frame_tile_fits(small, at::kDouble, 227 * 1024));
  EXPECT_FALSE(tsc::frame_tile_fits(small, at::kDouble, 100 * 1024));  // the device's limit
  EXPECT_FALSE(tsc::frame_tile_fits(tsc::toeplitz_geometry(3, 3, {512, 512}, "same"),
                                    at::kFloat, 227 * 1024));
  // An output too wide for the kernel's int indices, from a small image.
  EXPECT_FALSE(tsc::frame_tile_fits(tsc::toeplitz_geometry(1, 300000000, {10, 10}, "full"),
                                    at::kFloat, 227 * 1024));
}

// T built by the pipeline, multiplied densely, equals the CPU operator's convolution; its
// kernel gradient sums each tap's entries.
TEST(ToeplitzMatrixKernels, BuildTheConvolutionMatrix) {
  std::mt19937 rng(23);
  at::manual_seed(13);
  for (const ToeplitzCase& c : random_toeplitz_cases(rng, 20)) {
    const at::Tensor kernel = at::randn({c.kernel_h, c.kernel_w}, at::kDouble);
    const tsc::ToeplitzGeometry g =
        tsc::toeplitz_geometry(kernel, {c.in_h, c.in_w}, c.mode);
    const int64_t pixels = c.in_h * c.in_w, out_pixels = g.out_h * g.out_w;
    const auto [t_crow, t_col, t_values] = tsc::build_toeplitz_matrix(EmulatedLaunch(), kernel, g);
    const int64_t t_nnz = t_col.size(0);
    at::Tensor t_dense = at::zeros({pixels * out_pixels}, at::kDouble);
    t_dense.index_put_({row_of_entries(t_crow, pixels, t_nnz) * out_pixels + t_col}, t_values,
                       /*accumulate=*/true);
    t_dense = t_dense.view({pixels, out_pixels});

    const tsc::CsrImages x = random_images(c, at::kDouble, rng);
    const tsc::CsrImages expected =
        tsc::toeplitz_conv2d(x, kernel, {c.in_h, c.in_w}, c.mode, "direct");
    auto densify = [&](const tsc::CsrImages& m, int64_t columns) {
      at::Tensor dense = at::zeros({c.batch * columns}, at::kDouble);
      dense.index_put_({row_of_entries(m.crow, c.batch, m.col.size(0)) * columns + m.col},
                       m.values, /*accumulate=*/true);
      return dense.view({c.batch, columns});
    };
    expect_close(at::matmul(densify(x, pixels), t_dense), densify(expected, out_pixels), 1e-10,
                 describe(c) + ": X @ T");

    // The kernel gradient of sum(grad * T.values): tap (u, t) collects grad over T's entries
    // holding it, those whose value is kernel[u, t] (all kernel values differ almost surely).
    const at::Tensor grad = at::randn({t_nnz}, at::kDouble);
    const at::Tensor grad_kernel =
        tsc::toeplitz_matrix_kernel_grad(EmulatedLaunch(), grad, kernel, g);
    at::Tensor expected_grad = at::empty({c.kernel_h * c.kernel_w}, at::kDouble);
    for (int64_t tap = 0; tap < c.kernel_h * c.kernel_w; ++tap) {
      expected_grad[tap] = grad.masked_select(t_values == kernel.view(-1)[tap]).sum();
    }
    expect_close(grad_kernel, expected_grad.view({c.kernel_h, c.kernel_w}), 1e-10,
                 describe(c) + ": kernel gradient");
  }
}

// ----------------------------------------------------- checks fetched in one host copy

TEST(DeviceChecks, ColumnsAscendWithinRowsOnly) {
  auto ascend = [](std::vector<int64_t> crow, std::vector<int64_t> col) {
    return tsc::pending_columns_ascend(at::tensor(crow, at::kLong), at::tensor(col, at::kLong))
        .item<int64_t>();
  };
  EXPECT_EQ(ascend({0, 3, 5}, {1, 4, 9, 0, 2}), 1);   // drops only where image 2 begins
  EXPECT_EQ(ascend({0, 3, 3, 5}, {1, 4, 9, 0, 2}), 1);  // an empty image between
  EXPECT_EQ(ascend({0, 0, 5}, {0, 1, 2, 3, 4}), 1);
  EXPECT_EQ(ascend({0, 3, 5}, {1, 4, 4, 0, 2}), 0);    // a repeat
  EXPECT_EQ(ascend({0, 3, 5}, {1, 4, 9, 2, 0}), 0);    // a drop inside image 2
  EXPECT_EQ(ascend({0, 5}, {0, 1, 2, 3, 1}), 0);
  EXPECT_EQ(ascend({0, 1}, {7}), 1);
  // Row pointers out of range are clamped (to 0, 2, 2), not used to index past the end.
  EXPECT_EQ(ascend({-4, 99, 2}, {3, 1}), 0);
  EXPECT_EQ(ascend({-4, 1, 99}, {3, 1}), 1);
}

TEST(DeviceChecks, OneFetchCarriesEveryValueInOrder) {
  const at::Tensor crow = at::tensor(std::vector<int64_t>{0, 2, 2, 3}, at::kLong);
  const at::Tensor col = at::tensor(std::vector<int64_t>{5, 1, 8}, at::kLong);
  const std::vector<int64_t> fetched =
      tsc::fetch_to_host({tsc::pending_csr_facts(crow, col), at::full({2}, 7, at::kInt)});
  ASSERT_EQ(int64_t(fetched.size()), tsc::kCsrFacts + 2);
  const tsc::CsrDeviceFacts f = tsc::csr_facts_from(fetched.data());
  EXPECT_EQ(f.first_row_pointer, 0);
  EXPECT_EQ(f.last_row_pointer, 3);
  EXPECT_TRUE(f.row_pointers_non_decreasing);
  EXPECT_EQ(f.lowest_column, 1);
  EXPECT_EQ(f.highest_column, 8);
  EXPECT_EQ(fetched[tsc::kCsrFacts], 7);
  EXPECT_EQ(fetched[tsc::kCsrFacts + 1], 7);
  const tsc::CsrDeviceFacts bad = tsc::csr_facts_on_device(
      at::tensor(std::vector<int64_t>{1, 0, 4}, at::kLong), at::empty({0}, at::kLong));
  EXPECT_EQ(bad.first_row_pointer, 1);
  EXPECT_FALSE(bad.row_pointers_non_decreasing);
  EXPECT_EQ(bad.lowest_column, 0);
}

}  // namespace
