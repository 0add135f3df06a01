// The public C++ API of the sparse-filter convolution (csrc/torch_sparse_conv.h), through
// the operators' fronts.
#include "csrc/sparse_filter/method.h"
#include "csrc/sparse_filter/ops.h"
#include "csrc/torch_sparse_conv.h"

namespace torch_sparse_conv {

PackedFilter pack_sparse_filter(const at::Tensor& weight) {
  PackedFilter packed;
  std::tie(packed.row_ptr, packed.col_idx, packed.values) = ops::pack_sparse_filter(weight);
  packed.weight_size = weight.sizes().vec();
  return packed;
}

at::Tensor sparse_filter_conv2d(const at::Tensor& input, const PackedFilter& weight,
                                const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                const std::string& method) {
  return ops::sparse_filter_conv2d(input, weight.row_ptr, weight.col_idx, weight.values,
                                   weight.weight_size, bias, stride, padding, dilation, groups,
                                   method);
}

at::Tensor unpack_sparse_filter(const PackedFilter& weight) {
  return unpack_sparse_filter_dense(weight.row_ptr, weight.col_idx, weight.values,
                                    weight.weight_size);
}

}  // namespace torch_sparse_conv
