// The kernels that build T, the doubly-block-Toeplitz matrix, on CUDA. Included only by their
// pipeline (cuda/toeplitz/matrix_pipeline.cuh), which cuda/toeplitz/matrix.cu runs on a GPU
// and the CPU emulation tests on the CPU.
#pragma once

#include "cuda/toeplitz/frame.cuh"

namespace torch_sparse_conv {
namespace {

// lengths[p]: the entries of T's row p (the taps of pixel p landing inside the output).
__global__ void row_lengths_kernel(Frame f, int64_t* __restrict__ lengths) {
  const int64_t pixels = f.in_h * f.in_w;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pixels;
       p += int64_t(blockDim.x) * gridDim.x) {
    const Footprint fp = footprint(p, f);
    lengths[p] = (fp.u_hi - fp.u_lo) * (fp.t_hi - fp.t_lo);
  }
}

// One thread per row of T. With `values` it writes the row; with `grad` it scatters the
// gradients of the row's entries into dense (pixels x taps) slots, summed later by at::sum.
template <typename scalar_t>
__global__ void toeplitz_rows_kernel(Frame f, const int64_t* __restrict__ row_start,
                                     const scalar_t* __restrict__ kernel,
                                     int64_t* __restrict__ cols, scalar_t* __restrict__ values,
                                     const scalar_t* __restrict__ grad,
                                     scalar_t* __restrict__ grad_slots) {
  const int64_t pixels = f.in_h * f.in_w, taps = f.kernel_h * f.kernel_w;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pixels;
       p += int64_t(blockDim.x) * gridDim.x) {
    const Footprint fp = footprint(p, f);
    const int64_t a = p / f.in_w, b = p % f.in_w;
    int64_t slot = row_start[p];
    for (int64_t u = fp.u_lo; u < fp.u_hi; ++u) {
      for (int64_t t = fp.t_lo; t < fp.t_hi; ++t, ++slot) {
        if (values) {
          cols[slot] = (a + u - f.offset_h) * f.out_w + b + t - f.offset_w;
          values[slot] = kernel[u * f.kernel_w + t];
        } else {
          grad_slots[p * taps + u * f.kernel_w + t] = grad[slot];
        }
      }
    }
  }
}

}  // namespace
}  // namespace torch_sparse_conv
