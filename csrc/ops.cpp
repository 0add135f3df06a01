// Every operator schema of torch_sparse_conv, in one place.
//
// Kernels live elsewhere, one file per dispatch key and operator family:
//   CPU      csrc/*_cpu.cpp        CUDA  cuda/*.cu
//   Autograd csrc/*_autograd.cpp   Meta/fake  torch_sparse_conv/_fake.py
#include <torch/library.h>

#include "torch_sparse_conv.h"

#ifdef TSC_WITH_CUDA
#include <cuda.h>  // CUDA_VERSION of the toolkit the library was built with
#endif

namespace torch_sparse_conv {

int64_t cuda_version_compiled() {
#ifdef TSC_WITH_CUDA
  return CUDA_VERSION;
#else
  return 0;
#endif
}

// Referenced from the public header so that a C++ binary linking the library keeps it
// (and with it these registrations) even under --as-needed.
int64_t registration_anchor() { return cuda_version_compiled(); }

}  // namespace torch_sparse_conv

TORCH_LIBRARY(torch_sparse_conv, m) {
  // Dense weight (C_out, C_in/groups, kH, kW) -> CSR over output channels:
  // row_ptr (C_out + 1), col_idx (nnz) into C_in/groups * kH * kW, values (nnz).
  // Indices are int64 so no layer size can overflow them.
  m.def("pack_sparse_filter(Tensor weight) -> (Tensor row_ptr, Tensor col_idx, Tensor values)");

  // F.conv2d(input, W, bias, stride, padding, dilation, groups) where W is the CSR-packed
  // weight of shape weight_size = (C_out, C_in/groups, kH, kW). method: 'auto' | 'direct' | 'unfold' | 'dense'.
  m.def(
      "sparse_filter_conv2d(Tensor input, Tensor row_ptr, Tensor col_idx, Tensor values, "
      "int[4] weight_size, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
      "int groups, str method) -> Tensor");

  // Gradients of sparse_filter_conv2d: input, the kept values only, bias.
  // output_mask says which of the three are wanted; the others come back empty.
  m.def(
      "_sparse_filter_conv2d_backward(Tensor grad_output, Tensor input, Tensor row_ptr, "
      "Tensor col_idx, Tensor values, int[4] weight_size, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, bool[3] output_mask) "
      "-> (Tensor grad_input, Tensor grad_values, Tensor grad_bias)");

  // Sparse-input convolution: a batch of images as CSR (B, H*W) (row pointers, columns,
  // values), convolved with a dense (kH, kW) kernel exactly as
  // scipy.signal.convolve2d(image, kernel, mode) per image. Returns the output as CSR
  // (B, H_out*W_out) with sorted int64 columns. method: 'auto' | 'direct' | 'precomputed'
  // ('precomputed' builds T, see toeplitz_matrix, on every call; callers that keep T use
  // toeplitz_conv2d_precomputed).
  m.def(
      "toeplitz_conv2d(Tensor crow, Tensor col, Tensor values, Tensor kernel, "
      "int[2] image_shape, str mode, str method) "
      "-> (Tensor out_crow, Tensor out_col, Tensor out_values)");

  // Gradients of toeplitz_conv2d w.r.t. the input values (on their pattern) and the kernel,
  // from the gradient of the output values (on the output pattern out_crow / out_col).
  m.def(
      "_toeplitz_conv2d_backward(Tensor grad_out_values, Tensor crow, Tensor col, "
      "Tensor values, Tensor kernel, Tensor out_crow, Tensor out_col, int[2] image_shape, "
      "str mode, bool[2] output_mask) -> (Tensor grad_values, Tensor grad_kernel)");

  // toeplitz_conv2d's direct method with scipy.sparse's storage conventions, for
  // compat.Toeplitz_convolution2d: index arrays int32 or int64 in; out, int32 indices when
  // the output's shape and an upper bound of its entries (B*H_out*W_out, nnz(x)*kH*kW) fit,
  // else int64; outputs that are exactly zero are not stored. Forward only, CPU.
  m.def(
      "_toeplitz_conv2d_scipy(Tensor crow, Tensor col, Tensor values, Tensor kernel, "
      "int[2] image_shape, str mode) -> (Tensor out_crow, Tensor out_col, Tensor out_values)");

  // T, the doubly-block-Toeplitz matrix of the kernel: CSR (H*W, H_out*W_out) with sorted
  // int64 columns, so that toeplitz_conv2d(x) == x @ T. Every tap landing inside the output is
  // stored, kernel zeros included. Differentiable w.r.t. the kernel.
  m.def(
      "toeplitz_matrix(Tensor kernel, int[2] image_shape, str mode) "
      "-> (Tensor t_crow, Tensor t_col, Tensor t_values)");
  m.def(
      "_toeplitz_matrix_backward(Tensor grad_values, Tensor kernel, int[2] image_shape, "
      "str mode) -> Tensor");

  // toeplitz_conv2d computed as x @ T with a T the caller built once from this kernel with
  // toeplitz_matrix(kernel, image_shape, mode) and keeps. Same output as toeplitz_conv2d.
  // Gradients go to the input values and the kernel (through _toeplitz_conv2d_backward), none
  // to T, which stands for the kernel.
  m.def(
      "toeplitz_conv2d_precomputed(Tensor crow, Tensor col, Tensor values, Tensor kernel, "
      "int[2] image_shape, str mode, Tensor t_crow, Tensor t_col, Tensor t_values) "
      "-> (Tensor out_crow, Tensor out_col, Tensor out_values)");

  // Build facts, so Python and TorchScript can ask how the library was compiled.
  // 0 when built without CUDA, else CUDA_VERSION (e.g. 13000).
  m.def("_cuda_version() -> int", &torch_sparse_conv::cuda_version_compiled);
}

