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

#include "toeplitz_cuda.cuh"

namespace torch_sparse_conv {
namespace {

__global__ void count_kernel(const int64_t* __restrict__ col, Frame f, int64_t nnz,
                             int64_t* __restrict__ counts) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < nnz;
       e += int64_t(blockDim.x) * gridDim.x) {
    const Footprint p = footprint(col[e], f);
    counts[e] = (p.u_hi - p.u_lo) * (p.t_hi - p.t_lo);
  }
}

template <typename scalar_t, typename key_t>
__global__ void expand_kernel(const int64_t* __restrict__ row_of, const int64_t* __restrict__ col,
                              const scalar_t* __restrict__ values,
                              const scalar_t* __restrict__ kernel, Frame f, int64_t nnz,
                              const int64_t* __restrict__ offsets, key_t* __restrict__ keys,
                              scalar_t* __restrict__ products) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t out_pixels = f.out_h * f.out_w;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < nnz;
       e += int64_t(blockDim.x) * gridDim.x) {
    const Footprint p = footprint(col[e], f);
    const int64_t a = col[e] / f.in_w, b = col[e] % f.in_w;
    const acc_t v = acc_t(values[e]);
    const int64_t image_base = row_of[e] * out_pixels;
    int64_t slot = offsets[e];
    for (int64_t u = p.u_lo; u < p.u_hi; ++u) {
      const int64_t row_base = image_base + (a + u - f.offset_h) * f.out_w + b - f.offset_w;
      for (int64_t t = p.t_lo; t < p.t_hi; ++t, ++slot) {
        keys[slot] = key_t(row_base + t);
        products[slot] = scalar_t(v * acc_t(kernel[u * f.kernel_w + t]));
      }
    }
  }
}

// One thread per run of equal sorted keys: its sum, in the candidates' original order.
template <typename scalar_t, typename key_t>
__global__ void reduce_runs_kernel(const key_t* __restrict__ sorted_keys,
                                   const int64_t* __restrict__ order,
                                   const scalar_t* __restrict__ products,
                                   const int64_t* __restrict__ run_start, int64_t runs,
                                   int64_t candidates, int64_t out_pixels,
                                   int64_t* __restrict__ out_row, int64_t* __restrict__ out_col,
                                   scalar_t* __restrict__ out_values) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < runs;
       r += int64_t(blockDim.x) * gridDim.x) {
    const int64_t begin = run_start[r];
    const int64_t end = r + 1 < runs ? run_start[r + 1] : candidates;
    acc_t sum = 0;
    for (int64_t i = begin; i < end; ++i) sum += acc_t(products[order[i]]);
    const int64_t key = int64_t(sorted_keys[begin]);
    out_row[r] = key / out_pixels;
    out_col[r] = key % out_pixels;
    out_values[r] = scalar_t(sum);
  }
}

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
  at::Tensor counts = at::empty({nnz}, col.options());
  if (nnz > 0) {
    count_kernel<<<toeplitz_blocks_for(nnz), kToeplitzThreads, 0, stream>>>(col.data_ptr<int64_t>(), f, nnz,
                                                           counts.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor ends = at::cumsum(counts, 0);
  const int64_t candidates = nnz > 0 ? ends[nnz - 1].item<int64_t>() : 0;
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
  check_csr_on_device(cr, cc, g.in_h * g.in_w, "toeplitz_conv2d: x");
  if (precomputed) {
    TORCH_CHECK(cv.scalar_type() == at::kFloat || cv.scalar_type() == at::kDouble,
                "toeplitz_conv2d: method 'precomputed' supports float32 and float64 on CUDA; "
                "use 'direct' for half precision");
    auto [t_crow, t_col, t_values] = build_toeplitz_matrix_cuda(ck, g);
    return multiply_by_toeplitz_cuda(cr, cc, cv, t_crow, t_col, t_values, g);
  }
  const int64_t out_pixels = g.out_h * g.out_w;
  TORCH_CHECK(g.batch == 0 || out_pixels <= std::numeric_limits<int64_t>::max() / g.batch,
              "toeplitz_conv2d: batch x output pixels must stay below 2^63");
  if (g.batch * out_pixels < std::numeric_limits<int>::max()) {
    return direct_forward<int>(cr, cc, cv, ck, g);
  }
  return direct_forward<int64_t>(cr, cc, cv, ck, g);
}

template <typename scalar_t>
__global__ void backward_kernel(const int64_t* __restrict__ row_of,
                                const int64_t* __restrict__ col,
                                const scalar_t* __restrict__ values,
                                const scalar_t* __restrict__ kernel,
                                const int64_t* __restrict__ out_crow,
                                const int64_t* __restrict__ out_col,
                                const scalar_t* __restrict__ grad, Frame f, int64_t nnz,
                                scalar_t* __restrict__ grad_values,
                                at::opmath_type<scalar_t>* __restrict__ kernel_terms) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t taps = f.kernel_h * f.kernel_w;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < nnz;
       e += int64_t(blockDim.x) * gridDim.x) {
    const Footprint p = footprint(col[e], f);
    const int64_t a = col[e] / f.in_w, b = col[e] % f.in_w;
    const int64_t n = row_of[e];
    const acc_t v = acc_t(values[e]);
    acc_t grad_value = 0;
    acc_t* terms = kernel_terms ? kernel_terms + e * taps : nullptr;
    if (terms) {
      for (int64_t i = 0; i < taps; ++i) terms[i] = 0;
    }
    for (int64_t u = p.u_lo; u < p.u_hi; ++u) {
      const int64_t base = (a + u - f.offset_h) * f.out_w + b - f.offset_w;
      // First stored output column >= base + t_lo, by binary search in image n's columns.
      int64_t lo = out_crow[n], hi = out_crow[n + 1];
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (out_col[mid] < base + p.t_lo) lo = mid + 1; else hi = mid;
      }
      for (int64_t t = p.t_lo; t < p.t_hi && lo < out_crow[n + 1]; ++t) {
        if (out_col[lo] != base + t) continue;
        const acc_t gv = acc_t(grad[lo]);
        grad_value += acc_t(kernel[u * f.kernel_w + t]) * gv;
        if (terms) terms[u * f.kernel_w + t] = v * gv;
        ++lo;
      }
    }
    if (grad_values) grad_values[e] = scalar_t(grad_value);
  }
}

// The output pattern must be what the forward returns: row pointers from 0 to nnz and
// strictly ascending columns in [0, H_out*W_out) within each image.
void check_output_pattern(const at::Tensor& out_crow, const at::Tensor& out_col,
                          const ToeplitzGeometry& g) {
  const int64_t out_pixels = g.out_h * g.out_w, nnz = out_col.size(0);
  check_csr_on_device(out_crow, out_col, out_pixels, "_toeplitz_conv2d_backward: the output");
  if (nnz < 2) return;
  const at::Tensor keys = row_of_entries(out_crow, g.batch, nnz) * out_pixels + out_col;
  const bool ascending =
      at::all(keys.narrow(0, 1, nnz - 1) > keys.narrow(0, 0, nnz - 1)).item<bool>();
  TORCH_CHECK(ascending, "_toeplitz_conv2d_backward: the output pattern of every image must "
              "have strictly ascending columns, as toeplitz_conv2d returns it");
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
  check_csr_on_device(cr, cc, g.in_h * g.in_w, "toeplitz_conv2d: x");
  check_output_pattern(ocr, occ, g);
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
