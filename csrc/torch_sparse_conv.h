// Public C++ API of torch_sparse_conv.
//
// Every function goes through the PyTorch dispatcher, so it picks the CPU or CUDA kernel
// from its arguments and records autograd exactly like the Python calls
// torch.ops.torch_sparse_conv.<op>.
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
// method: "auto", "direct", "unfold" or "dense".
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

// 0 when the library was built without CUDA, else the CUDA_VERSION it was built with.
int64_t cuda_version_compiled();

// Returns a value computed inside the library: calling it from a C++ program forces the
// linker to keep the library, and with it the operator registrations that
// torch::jit::load needs.
int64_t registration_anchor();

}  // namespace torch_sparse_conv
