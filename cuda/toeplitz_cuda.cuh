// Shared pieces of the sparse-input (Toeplitz) CUDA kernels: the geometry as kernel
// arguments, the footprint of an input pixel, device-side CSR checks, and what
// toeplitz_matrix_cuda.cu provides to toeplitz_conv2d_cuda.cu.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "toeplitz_geometry.h"

namespace torch_sparse_conv {

constexpr int kToeplitzThreads = 256;

inline int64_t toeplitz_blocks_for(int64_t work) {
  return std::max<int64_t>(
      1, std::min<int64_t>((work + kToeplitzThreads - 1) / kToeplitzThreads, 1 << 30));
}

struct Frame {  // ToeplitzGeometry as kernel arguments
  int64_t in_h, in_w, kernel_h, kernel_w, out_h, out_w, offset_h, offset_w;
};

inline Frame frame_of(const ToeplitzGeometry& g) {
  return {g.in_h, g.in_w, g.kernel_h, g.kernel_w, g.out_h, g.out_w, g.offset_h, g.offset_w};
}

// The kernel taps (u, t) that put input pixel (a, b) inside the output frame:
// u in [u_lo, u_hi), t in [t_lo, t_hi).
struct Footprint {
  int64_t u_lo, u_hi, t_lo, t_hi;
};

inline __device__ Footprint footprint(int64_t pixel, const Frame& f) {
  const int64_t a = pixel / f.in_w, b = pixel % f.in_w;
  const int64_t r0 = a - f.offset_h, c0 = b - f.offset_w;  // output pixel of tap (0, 0)
  Footprint p;
  p.u_lo = max(int64_t(0), -r0);
  p.u_hi = max(p.u_lo, min(f.kernel_h, f.out_h - r0));
  p.t_lo = max(int64_t(0), -c0);
  p.t_hi = max(p.t_lo, min(f.kernel_w, f.out_w - c0));
  return p;
}

// Device-side CSR checks (row pointers from 0 to nnz, non-decreasing; columns in
// [0, columns)) with one copy of five numbers to the host. `what` names the matrix.
void check_csr_on_device(const at::Tensor& crow, const at::Tensor& col, int64_t columns,
                         const char* what);

// The row of every stored entry, from the row pointers (no host sync).
at::Tensor row_of_entries(const at::Tensor& crow, int64_t rows, int64_t nnz);

// T, the doubly-block-Toeplitz matrix of `kernel` (float32/float64, contiguous, on the GPU):
// CSR (H*W, H_out*W_out) with sorted int64 columns, the same layout as the CPU build.
std::tuple<at::Tensor, at::Tensor, at::Tensor> build_toeplitz_matrix_cuda(
    const at::Tensor& kernel, const ToeplitzGeometry& g);

// X @ T by cuSPARSE SpGEMM (torch's CSR matmul), as CSR with sorted int64 columns.
std::tuple<at::Tensor, at::Tensor, at::Tensor> multiply_by_toeplitz_cuda(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values,
    const ToeplitzGeometry& g);

}  // namespace torch_sparse_conv
