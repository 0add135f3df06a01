// The 'direct' method of sparse_filter_conv2d on CPU (forward).
#pragma once

#include <ATen/ATen.h>

#include "csrc/sparse_filter/epilogue.h"
#include "csrc/sparse_filter/geometry.h"

namespace torch_sparse_conv {

// The output (N, C_out, out_h, out_w): NCHW-contiguous, or channels-last where
// direct_lanes_channels_last(input, g) (the caller puts it in the input's memory format).
// Reads only the kept taps. The epilogue is applied where each path writes its final sums
// (here and below). lanes_layout: see sparse_filter_direct_lanes_forward_cpu (left alone on
// the other paths).
at::Tensor sparse_filter_direct_forward_cpu(const at::Tensor& input, const at::Tensor& row_ptr,
                                            const at::Tensor& col_idx, const at::Tensor& values,
                                            const c10::optional<at::Tensor>& bias,
                                            const SparseFilterGeometry& g,
                                            const Epilogue& epilogue,
                                            at::Tensor* lanes_layout = nullptr);

// The same with the batch in the vector lanes (direct_lanes.cpp); only where
// direct_lanes_pay(g, dtype of the input): the instruction set has the kernels and the
// batch fills the lanes; or, without lanes_layout, where direct_lanes_strip_rows > 0: a
// single sample's rows in the lanes as strips. Where lanes_layout is given, the input is
// float32 or float64 and the whole batch was laid out at once, *lanes_layout is set to that
// layout (lanes_layout.h): ceil(N / lanes) sample blocks of C_in * channel_block() * lanes
// elements, zeros in the padding and in the lanes past the batch. (The CPU backward reads
// grad_output from it.) Where *lanes_layout is already such a layout, of the same dtype
// and size, it is read as this input's instead of laying the input out again: the caller
// promises that an earlier call laid it out from this same input with the same padding and
// dilation-free stride-1 geometry (the input gradient's phase convolutions of one
// grad_output, backward.cpp).
// output: preallocated, channels-last where direct_lanes_channels_last(input, g), else
// NCHW-contiguous.
void sparse_filter_direct_lanes_forward_cpu(const at::Tensor& input, const at::Tensor& row_ptr,
                                            const at::Tensor& col_idx, const at::Tensor& values,
                                            const c10::optional<at::Tensor>& bias,
                                            const SparseFilterGeometry& g,
                                            const Epilogue& epilogue, at::Tensor& output,
                                            at::Tensor* lanes_layout = nullptr);
bool direct_lanes_pay(const SparseFilterGeometry& g, at::ScalarType dtype);
// Where a single sample goes to the lanes as horizontal strips (one a lane) instead of the
// one-sample layout: the output rows a strip; 0 where it does not.
int64_t direct_lanes_strip_rows(const SparseFilterGeometry& g, at::ScalarType dtype);
// Whether the lanes forward lays the input out in the layer's own geometry, so that keeping
// the layout for another reader costs it nothing (else it pads the phase planes one column
// wider for aligned loads, and keeping the layout forgoes that).
bool direct_lanes_layout_has_layer_geometry(const SparseFilterGeometry& g,
                                            at::ScalarType dtype);
// Where the lanes forward reads a channels-last input as it is and writes its output
// channels-last: float32/float64 inputs contiguous in that format, where the lanes pay.
bool direct_lanes_channels_last(const at::Tensor& input, const SparseFilterGeometry& g);

// The same for 1x1 convolutions without padding, in float32 or float64: read and written in
// place, with no layout at all (pointwise.cpp); where direct_pointwise_applies(g, dtype of
// the input). A strided one reads the pixels it samples through copies (pick_pixels.h):
// sparse_filter_direct_forward_cpu passes it on only with a contiguous NCHW input.
void sparse_filter_direct_pointwise_forward_cpu(const at::Tensor& input,
                                                const at::Tensor& row_ptr,
                                                const at::Tensor& col_idx,
                                                const at::Tensor& values,
                                                const c10::optional<at::Tensor>& bias,
                                                const SparseFilterGeometry& g,
                                                const Epilogue& epilogue, at::Tensor& output);
bool direct_pointwise_applies(const SparseFilterGeometry& g, at::ScalarType dtype);

}  // namespace torch_sparse_conv
