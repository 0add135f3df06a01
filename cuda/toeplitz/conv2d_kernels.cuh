// The kernels of toeplitz_conv2d's 'direct' method on CUDA and of its backward. The host steps
// around them are in cuda/toeplitz/conv2d_pipeline.cuh, the only header that includes this
// one; cuda/toeplitz/conv2d.cu runs that pipeline on a GPU, the CPU emulation tests
// (tests/cpp/test_cuda_kernels_emulated.cpp) on the CPU.
#pragma once

#include <ATen/OpMathType.h>

#include "cuda/toeplitz/frame.cuh"

namespace torch_sparse_conv {
namespace {

// counts[e]: how many output pixels input entry e reaches (its footprint, clipped).
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

// One thread per input entry: grad_values[e] (when not null) and the entry's per-tap terms
// of the kernel gradient, v * grad at each reached output pixel (when kernel_terms is not
// null; nnz x taps, summed by the caller in a fixed order). Output pixels are found by
// binary search in the image's sorted output columns.
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

}  // namespace
}  // namespace torch_sparse_conv
