// Public C++ API of torch_sparse_conv.
//
// Sparse-filter conv2d (pruned weights, dense activations) and sparse-input (Toeplitz)
// conv2d (sparse images, small dense kernel). Every function goes through the PyTorch
// dispatcher, so it picks the CPU or CUDA kernel from its arguments and records autograd
// exactly like the Python calls torch.ops.torch_sparse_conv.<op>: backward() on a C++
// graph gives the same gradients as in Python.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

namespace torch_sparse_conv {

// A pruned convolution weight stored as CSR over output channels.
//   row_ptr: int64 (C_out + 1), col_idx: int64 (nnz) into C_in/groups * kH * kW,
//   values: (nnz), same dtype as the weight; weight_size: the dense shape
//   {C_out, C_in/groups, kH, kW}.
struct PackedFilter {
  at::Tensor row_ptr;
  at::Tensor col_idx;
  at::Tensor values;
  std::vector<int64_t> weight_size;
};

// Packs the nonzero taps of a dense (C_out, C_in/groups, kH, kW) weight.
PackedFilter pack_sparse_filter(const at::Tensor& weight);

// Equal to at::conv2d(input, dense(W), bias, stride, padding, dilation, groups).
// method: "auto", "direct", "unfold" (CPU), "spmm" (CUDA) or "dense".
at::Tensor sparse_filter_conv2d(
    const at::Tensor& input,
    const PackedFilter& weight,
    const c10::optional<at::Tensor>& bias = c10::nullopt,
    at::IntArrayRef stride = {1, 1},
    at::IntArrayRef padding = {0, 0},
    at::IntArrayRef dilation = {1, 1},
    int64_t groups = 1,
    const std::string& method = "auto");

// The dense (C_out, C_in/groups, kH, kW) weight a PackedFilter stands for.
at::Tensor unpack_sparse_filter(const PackedFilter& weight);

// ---------------------------------------------------------------- sparse input (Toeplitz)
//
// A batch of sparse images: row b of a CSR matrix (B, H*W) is image b flattened in C order.
//   crow: int64 (B + 1), col: int64 (nnz) in [0, H*W), values: (nnz) float32, float64,
//   float16 or bfloat16.
struct CsrImages {
  at::Tensor crow;
  at::Tensor col;
  at::Tensor values;
};

// (H_out, W_out) of scipy.signal.convolve2d(image, kernel, mode) for an (H, W) image and a
// (kH, kW) kernel. mode: "full", "same" or "valid".
std::vector<int64_t> toeplitz_output_shape(at::IntArrayRef image_shape,
                                           at::IntArrayRef kernel_shape,
                                           const std::string& mode = "same");

// Convolves every image with the dense (kH, kW) kernel exactly as
// scipy.signal.convolve2d(image, kernel, mode) (a true convolution: the kernel is flipped),
// keeping the output sparse: CSR (B, H_out * W_out) with sorted int64 columns. An output
// pixel is stored when the kernel's footprint of a stored input entry covers it.
// Differentiable w.r.t. images.values and kernel. method: "auto", "direct" or "precomputed".
CsrImages toeplitz_conv2d(const CsrImages& images, const at::Tensor& kernel,
                          at::IntArrayRef image_shape, const std::string& mode = "same",
                          const std::string& method = "auto");

// The same for a sparse CSR tensor (B, H*W) (int32 or int64 indices); returns a sparse CSR
// tensor (B, H_out * W_out) whose values() carry the autograd graph. For gradients w.r.t.
// the images' values, build `images` with at::sparse_compressed_tensor(..., layout
// kSparseCsr): at::sparse_csr_tensor does not record its values in the graph.
at::Tensor toeplitz_conv2d(const at::Tensor& images, const at::Tensor& kernel,
                           at::IntArrayRef image_shape, const std::string& mode = "same",
                           const std::string& method = "auto");

// The CPU Toeplitz kernels write outputs of 1 MiB and more into memory kept from outputs
// freed earlier (up to TSC_OUTPUT_CACHE_MB megabytes, default 512, 0 for none): fresh memory
// costs a page fault per 4 KiB. This frees that memory now; returns the bytes released.
int64_t release_cached_outputs();

// The CPU kernels of a sparse filter keep its pattern once checked, with their plans, and
// the backward the transposed pattern of the input's gradient, between calls (found by
// row_ptr and col_idx, compared bit for bit on every call; up to TSC_PATTERN_CACHE_MB
// megabytes, default 256, read at the first call, 0 for none). This frees them now; returns
// the bytes they held.
int64_t release_cached_patterns();

// ---------------------------------------------------------------- build facts

// 0 when the library was built without CUDA, else the CUDA_VERSION it was built with.
int64_t cuda_version_compiled();

// Returns a value computed inside the library: calling it from a C++ program forces the
// linker to keep the library, and with it the operator registrations that
// torch::jit::load needs.
int64_t registration_anchor();

}  // namespace torch_sparse_conv
