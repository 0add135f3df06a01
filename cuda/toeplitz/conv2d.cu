// toeplitz_conv2d and its backward on CUDA. Every path is deterministic and sized exactly.
//
// 'direct' on frames that fit in shared memory (up to ~20k float32 pixels): the frame-tile
// kernel (cuda/toeplitz/frame_tile_kernels.cuh), per image a count pass, a scan, a fill pass.
// 'direct' on larger frames:
//   1. count: each input entry's number of output pixels (its kernel footprint clipped to
//      the output frame, in closed form), then an exclusive scan;
//   2. expand: every (entry, tap) pair writes one candidate, key = image * H_out*W_out +
//      output pixel (int32 keys when they fit), value = entry * kernel tap;
//   3. a stable radix sort of the keys (CUB, through at::sort), then one thread per run of
//      equal keys sums its candidates in their original order, into exact-size CSR output
//      with sorted int64 columns.
// Memory is bounded by the work (stored entries x taps), never by the frame or the batch.
// 'precomputed' builds T and multiplies (cuda/toeplitz/matrix.cu); T's size follows the frame,
// so 'auto' picks it only for dense batches on small frames (see below).
//
// Backward: one thread per input entry looks its output pixels up in the image's sorted
// output columns (binary search per kernel row); grad_values is summed in the thread, and
// the kernel gradient's per-(entry, tap) products are reduced by at::sum (fixed order).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <limits>

#include "cuda/toeplitz/conv2d_pipeline.cuh"
#include "cuda/toeplitz/precomputed.cuh"

namespace torch_sparse_conv {
namespace {

// 'auto' on CUDA: 'direct' through the frame-tile kernel whenever the frame fits it
// (frame_tile_fits; not yet measured on a GPU: written after the H100 session, it reads each
// entry twice and writes each output once, where the sort-based kernels move every (entry,
// tap) candidate through a radix sort). Otherwise 'precomputed' once the batch stores at
// least 10 entries per frame pixel (T's H*W*kH*kW entries are then amortised), while T stays
// under 2^28 entries; else 'direct'. Measured on an H100 on sparse_convolution's 100x100 grid
// with the sort-based kernels (BENCHMARKS.md): precomputed won the batch-500, density-0.1
// cells (1.68 vs 2.42 ms, 6.3 vs 8.7 ms), direct the sparser ones.
bool auto_picks_precomputed(int64_t nnz, at::ScalarType dtype, const ToeplitzGeometry& g) {
  const int64_t pixels = g.in_h * g.in_w;
  const bool supported = dtype == at::kFloat || dtype == at::kDouble;
  return supported && pixels <= (int64_t(1) << 28) / (g.kernel_h * g.kernel_w) &&
         nnz >= 10 * pixels;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_cuda(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    c10::string_view method) {
  const ToeplitzGeometry g = check_toeplitz_args(crow, col, values, kernel, image_shape, mode);
  const c10::cuda::CUDAGuard guard(values.device());
  const ToeplitzMethod chosen = parse_toeplitz_method(method);
  const bool direct_frame_tile =
      chosen != ToeplitzMethod::Precomputed &&
      frame_tile_fits(g, values.scalar_type(),
                      int64_t(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin));
  const bool precomputed =
      chosen == ToeplitzMethod::Precomputed ||
      (chosen == ToeplitzMethod::Auto && !direct_frame_tile &&
       auto_picks_precomputed(col.size(0), values.scalar_type(), g));
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous();
  const at::Tensor cv = values.contiguous(), ck = kernel.contiguous();
  if (precomputed) {
    check_csr(cr, cc, g.in_h * g.in_w, input_csr_names("toeplitz_conv2d"));
    TORCH_CHECK(cv.scalar_type() == at::kFloat || cv.scalar_type() == at::kDouble,
                "toeplitz_conv2d: method 'precomputed' supports float32 and float64 on CUDA; "
                "use 'direct' for half precision");
    auto [t_crow, t_col, t_values] = build_toeplitz_matrix_cuda(ck, g);
    return multiply_by_toeplitz_cuda(cr, cc, cv, t_crow, t_col, t_values, g);
  }
  const int64_t out_pixels = g.out_h * g.out_w;
  TORCH_CHECK(g.batch == 0 || out_pixels <= std::numeric_limits<int64_t>::max() / g.batch,
              "toeplitz_conv2d: batch x output pixels must stay below 2^63");
  // The pipelines check x's CSR contents.
  if (direct_frame_tile) {
    return toeplitz_frame_tile_pipeline(CudaLaunch(), cr, cc, cv, ck, g);
  }
  if (g.batch * out_pixels < std::numeric_limits<int>::max()) {
    return toeplitz_direct_pipeline<int>(CudaLaunch(), cr, cc, cv, ck, g);
  }
  return toeplitz_direct_pipeline<int64_t>(CudaLaunch(), cr, cc, cv, ck, g);
}

std::tuple<at::Tensor, at::Tensor> toeplitz_conv2d_backward_cuda(
    const at::Tensor& grad_out_values, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, const at::Tensor& kernel, const at::Tensor& out_crow,
    const at::Tensor& out_col, at::IntArrayRef image_shape, c10::string_view mode,
    std::array<bool, 2> output_mask) {
  const ToeplitzGeometry g = check_toeplitz_args(crow, col, values, kernel, image_shape, mode);
  const c10::cuda::CUDAGuard guard(values.device());
  check_toeplitz_backward_args(grad_out_values, out_crow, out_col, values, g);
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous(), cv = values.contiguous();
  const at::Tensor ck = kernel.contiguous(), ocr = out_crow.contiguous();
  const at::Tensor occ = out_col.contiguous(), go = grad_out_values.contiguous();
  return toeplitz_backward_pipeline(CudaLaunch(), go, cr, cc, cv, ck, ocr, occ, g, output_mask);
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CUDA, m) {
  m.impl("toeplitz_conv2d", &torch_sparse_conv::toeplitz_conv2d_cuda);
  m.impl("_toeplitz_conv2d_backward", &torch_sparse_conv::toeplitz_conv2d_backward_cuda);
}
