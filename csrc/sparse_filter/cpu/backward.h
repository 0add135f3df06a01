// What the CPU forward needs to know of the CPU backward (backward.cpp): where the values'
// gradient reads the input in the lanes forward's layout, so that a forward whose values
// need a gradient keeps that layout for it (_sparse_filter_conv2d_keeping_input_layout)
// instead of the backward laying the input out a second time.
#pragma once

#include <ATen/ATen.h>

#include "csrc/sparse_filter/geometry.h"

namespace torch_sparse_conv {

// Whether _sparse_filter_conv2d_backward on CPU computes the values' gradient of a layer
// with geometry g, dtype and nnz kept taps from the lanes layout of its whole sample blocks
// (lanes_layout.h), and so would read a layout the forward kept.
bool values_gradient_reads_lanes_layout(const SparseFilterGeometry& g, at::ScalarType dtype,
                                        int64_t nnz);

}  // namespace torch_sparse_conv
