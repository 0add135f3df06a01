// toeplitz_conv2d and its backward on CUDA.
//
// 'direct' (and 'auto') forward, deterministic and sized exactly:
//   1. count: each input entry's number of output pixels (its kernel footprint clipped to
//      the output frame, in closed form), then an exclusive scan;
//   2. expand: every (entry, tap) pair writes one candidate, key = image * H_out*W_out +
//      output pixel (int32 keys when they fit), value = entry * kernel tap;
//   3. a stable radix sort of the keys (CUB, through at::sort), then one thread per run of
//      equal keys sums its candidates in their original order, into exact-size CSR output
//      with sorted int64 columns.
// Memory is bounded by the work (stored entries x taps), never by the frame or the batch.
// 'precomputed' builds T and multiplies (toeplitz_matrix_cuda.cu); T's size follows the frame,
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

#include "toeplitz_conv2d_kernels.cuh"
#include "toeplitz_cuda.cuh"

namespace torch_sparse_conv {
namespace {

at::Tensor crow_from_rows(const at::Tensor& rows, int64_t batch) {
  at::Tensor crow = at::zeros({batch + 1}, rows.options());
  if (rows.numel() > 0 && batch > 0) {
    crow.narrow(0, 1, batch).copy_(at::cumsum(at::bincount(rows, {}, batch), 0));
  }
  return crow;
}

template <typename key_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> direct_forward(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, const ToeplitzGeometry& g) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t nnz = col.size(0), out_pixels = g.out_h * g.out_w;
  const Frame f = frame_of(g);
  // Counting reads the columns only as numbers (no memory at them), so it runs before the
  // CSR checks, and one copy to the host brings back both the checks and the total.
  at::Tensor counts = at::empty({nnz}, col.options());
  if (nnz > 0) {
    count_kernel<<<toeplitz_blocks_for(nnz), kToeplitzThreads, 0, stream>>>(
        col.data_ptr<int64_t>(), f, nnz, counts.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor ends = at::cumsum(counts, 0);
  const std::vector<int64_t> facts = fetch_to_host(
      {pending_csr_facts(crow, col),
       nnz > 0 ? ends.narrow(0, nnz - 1, 1) : at::zeros({1}, col.options())});
  check_csr_facts(csr_facts_from(facts.data()), nnz, g.in_h * g.in_w, "toeplitz_conv2d: x");
  const int64_t candidates = facts[kCsrFacts];
  if (candidates == 0) {
    return {at::zeros({g.batch + 1}, crow.options()), at::empty({0}, col.options()),
            at::empty({0}, values.options())};
  }
  const at::Tensor offsets = ends - counts;
  const at::Tensor row_of = row_of_entries(crow, g.batch, nnz);
  const auto key_type = std::is_same<key_t, int>::value ? at::kInt : at::kLong;
  at::Tensor keys = at::empty({candidates}, col.options().dtype(key_type));
  at::Tensor products = at::empty({candidates}, values.options());
  at::Tensor out_crow, out_col, out_values;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(),
                                  "toeplitz_conv2d_cuda", [&] {
    expand_kernel<scalar_t, key_t><<<toeplitz_blocks_for(nnz), kToeplitzThreads, 0, stream>>>(
        row_of.data_ptr<int64_t>(), col.data_ptr<int64_t>(), values.data_ptr<scalar_t>(),
        kernel.data_ptr<scalar_t>(), f, nnz, offsets.data_ptr<int64_t>(),
        keys.data_ptr<key_t>(), products.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto [sorted_keys, order] = at::sort(keys, /*stable=*/true, 0, false);
    // Runs of equal keys: where a sorted key differs from its predecessor.
    at::Tensor is_start = at::ones({candidates}, keys.options().dtype(at::kBool));
    if (candidates > 1) {
      is_start.narrow(0, 1, candidates - 1)
          .copy_(sorted_keys.narrow(0, 1, candidates - 1) !=
                 sorted_keys.narrow(0, 0, candidates - 1));
    }
    const at::Tensor run_start = at::nonzero(is_start).view(-1);  // syncs for the run count
    const int64_t runs = run_start.size(0);
    at::Tensor out_row = at::empty({runs}, col.options());
    out_col = at::empty({runs}, col.options());
    out_values = at::empty({runs}, values.options());
    reduce_runs_kernel<scalar_t, key_t><<<toeplitz_blocks_for(runs), kToeplitzThreads, 0, stream>>>(
        sorted_keys.data_ptr<key_t>(), order.data_ptr<int64_t>(), products.data_ptr<scalar_t>(),
        run_start.data_ptr<int64_t>(), runs, candidates, out_pixels,
        out_row.data_ptr<int64_t>(), out_col.data_ptr<int64_t>(),
        out_values.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    out_crow = crow_from_rows(out_row, g.batch);
  });
  return {out_crow, out_col, out_values};
}

// 'auto' on CUDA: 'precomputed' once the batch stores at least 10 entries per frame pixel
// (T's H*W*kH*kW entries are then amortised), while T stays under 2^28 entries; else
// 'direct'. Measured on an H100 on sparse_convolution's 100x100 grid (BENCHMARKS.md):
// precomputed won the batch-500, density-0.1 cells (1.68 vs 2.42 ms, 6.3 vs 8.7 ms), direct
// the sparser ones.
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
  const bool precomputed =
      chosen == ToeplitzMethod::Precomputed ||
      (chosen == ToeplitzMethod::Auto &&
       auto_picks_precomputed(col.size(0), values.scalar_type(), g));
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous();
  const at::Tensor cv = values.contiguous(), ck = kernel.contiguous();
  if (precomputed) {
    check_csr_on_device(cr, cc, g.in_h * g.in_w, "toeplitz_conv2d: x");
    TORCH_CHECK(cv.scalar_type() == at::kFloat || cv.scalar_type() == at::kDouble,
                "toeplitz_conv2d: method 'precomputed' supports float32 and float64 on CUDA; "
                "use 'direct' for half precision");
    auto [t_crow, t_col, t_values] = build_toeplitz_matrix_cuda(ck, g);
    return multiply_by_toeplitz_cuda(cr, cc, cv, t_crow, t_col, t_values, g);
  }
  const int64_t out_pixels = g.out_h * g.out_w;
  TORCH_CHECK(g.batch == 0 || out_pixels <= std::numeric_limits<int64_t>::max() / g.batch,
              "toeplitz_conv2d: batch x output pixels must stay below 2^63");
  // direct_forward checks x's CSR contents.
  if (g.batch * out_pixels < std::numeric_limits<int>::max()) {
    return direct_forward<int>(cr, cc, cv, ck, g);
  }
  return direct_forward<int64_t>(cr, cc, cv, ck, g);
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
  // x's CSR contents, and the output pattern must be what the forward returns: row pointers
  // from 0 to its nnz, strictly ascending columns in [0, H_out*W_out) within each image.
  // One copy to the host for all of it.
  const std::vector<int64_t> facts = fetch_to_host(
      {pending_csr_facts(cr, cc), pending_csr_facts(ocr, occ), pending_columns_ascend(ocr, occ)});
  check_csr_facts(csr_facts_from(facts.data()), cc.size(0), g.in_h * g.in_w,
                  "toeplitz_conv2d: x");
  check_csr_facts(csr_facts_from(facts.data() + kCsrFacts), occ.size(0), g.out_h * g.out_w,
                  "_toeplitz_conv2d_backward: the output");
  TORCH_CHECK(facts[2 * kCsrFacts] == 1,
              "_toeplitz_conv2d_backward: the output pattern of every image must have strictly "
              "ascending columns, as toeplitz_conv2d returns it");
  const int64_t nnz = col.size(0), taps = g.kernel_h * g.kernel_w;
  at::Tensor grad_values, grad_kernel;
  const auto acc_type = at::toOpMathType(values.scalar_type());
  if (output_mask[0]) grad_values = at::zeros_like(cv);
  at::Tensor kernel_terms;
  if (output_mask[1]) kernel_terms = at::empty({nnz, taps}, cv.options().dtype(acc_type));
  if (nnz > 0 && (output_mask[0] || output_mask[1])) {
    const at::Tensor row_of = row_of_entries(cr, g.batch, nnz);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(),
                                    "toeplitz_conv2d_backward_cuda", [&] {
      backward_kernel<scalar_t><<<toeplitz_blocks_for(nnz), kToeplitzThreads, 0,
                                  at::cuda::getCurrentCUDAStream()>>>(
          row_of.data_ptr<int64_t>(), cc.data_ptr<int64_t>(), cv.data_ptr<scalar_t>(),
          ck.data_ptr<scalar_t>(), ocr.data_ptr<int64_t>(), occ.data_ptr<int64_t>(),
          go.data_ptr<scalar_t>(), frame_of(g), nnz,
          output_mask[0] ? grad_values.data_ptr<scalar_t>() : nullptr,
          output_mask[1] ? kernel_terms.data_ptr<at::opmath_type<scalar_t>>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  if (output_mask[1]) {
    grad_kernel = kernel_terms.sum(0).to(values.scalar_type()).view({g.kernel_h, g.kernel_w});
  }
  return {grad_values, grad_kernel};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CUDA, m) {
  m.impl("toeplitz_conv2d", &torch_sparse_conv::toeplitz_conv2d_cuda);
  m.impl("_toeplitz_conv2d_backward", &torch_sparse_conv::toeplitz_conv2d_backward_cuda);
}
