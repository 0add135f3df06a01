// The dense weight of a packed filter, for the 'dense' method, remembered between calls.
#pragma once

#include <ATen/ATen.h>

namespace torch_sparse_conv {

// Returns unpack_sparse_filter_dense(row_ptr, col_idx, values, weight_size), reusing the
// result of an earlier call on the very same tensors when none of them changed since.
// Entries hold strong references to their tensors, so a key can't be confused with a new
// tensor at a recycled address; in-place updates bump a tensor's version, which misses.
// Inference tensors (no version counter) are never cached. A few entries, bounded bytes.
at::Tensor cached_dense_weight(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                               const at::Tensor& values, at::IntArrayRef weight_size);

}  // namespace torch_sparse_conv
