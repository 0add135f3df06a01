// The public C++ API (torch_sparse_conv.h): thin calls into the dispatcher.
#include <ATen/core/dispatch/Dispatcher.h>

#include "sparse_filter_conv2d_method.h"
#include "torch_sparse_conv.h"

namespace torch_sparse_conv {

PackedFilter pack_sparse_filter(const at::Tensor& weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_sparse_conv::pack_sparse_filter", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&)>();
  PackedFilter packed;
  std::tie(packed.row_ptr, packed.col_idx, packed.values) = op.call(weight);
  packed.weight_size = weight.sizes().vec();
  return packed;
}

at::Tensor sparse_filter_conv2d(const at::Tensor& input, const PackedFilter& weight,
                                const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                const std::string& method) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("torch_sparse_conv::sparse_filter_conv2d", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, at::IntArrayRef, const c10::optional<at::Tensor>&,
                            at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                            c10::string_view)>();
  return op.call(input, weight.row_ptr, weight.col_idx, weight.values, weight.weight_size, bias,
                 stride, padding, dilation, groups, method);
}

at::Tensor unpack_sparse_filter(const PackedFilter& weight) {
  return unpack_sparse_filter_dense(weight.row_ptr, weight.col_idx, weight.values,
                                    weight.weight_size);
}

}  // namespace torch_sparse_conv
