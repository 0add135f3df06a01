// Outputs keep their input's memory format, as ATen's convolutions do: a channels-last input
// gives a channels-last output. The CPU kernels read and write NCHW and convert with these two
// functions, which cost nothing when the input is NCHW. The fake kernels follow the same rule
// (torch_sparse_conv/sparse_filter/_fake.py); the backward's input gradient is NCHW.
#pragma once

#include <ATen/ATen.h>

namespace torch_sparse_conv {

// `output` (NCHW-contiguous, as the kernels write it) in `input`'s suggested memory format.
at::Tensor in_memory_format_of(const at::Tensor& input, const at::Tensor& output);

// `input` NCHW-contiguous (itself when it already is).
//
// Both convert 4-D CPU tensors between NCHW and channels-last with a cache-blocked
// transpose of each sample's (pixels x channels) matrix: ATen's generic copy reads one of
// the two with a stride of C elements per element, which at 256 channels cost 21 ms for a
// batch-8 56x56 tensor (a plain copy of it: 1 ms). Other devices and layouts: ATen's copy.
at::Tensor nchw_contiguous(const at::Tensor& input);

}  // namespace torch_sparse_conv
