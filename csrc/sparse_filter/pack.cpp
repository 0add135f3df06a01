// pack_sparse_filter: dense weight -> CSR over output channels. Written with ATen ops only,
// so one kernel serves CPU and CUDA (registered as CompositeExplicitAutograd).
#include <ATen/ATen.h>
#include <torch/library.h>

namespace torch_sparse_conv {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_sparse_filter_composite(const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.dim() == 4,
                    "pack_sparse_filter: weight must be 4-D (C_out, C_in/groups, kH, kW), got "
                    "shape ", weight.sizes());
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()),
              "pack_sparse_filter: weight must be a floating-point tensor, got ",
              weight.scalar_type());
  const int64_t rows = weight.size(0);
  const int64_t cols = weight.numel() / std::max<int64_t>(rows, 1);
  at::Tensor matrix = weight.reshape({rows, cols});
  // nonzero() lists (row, col) pairs in row-major order: exactly CSR order.
  at::Tensor coords = at::nonzero(matrix);
  at::Tensor row_of = coords.select(1, 0);
  at::Tensor col_idx = coords.select(1, 1).contiguous();
  at::Tensor values = matrix.reshape({-1}).index_select(0, row_of * cols + col_idx);
  at::Tensor counts = at::bincount(row_of, /*weights=*/{}, /*minlength=*/rows);
  at::Tensor row_ptr = at::zeros({rows + 1}, weight.options().dtype(at::kLong));
  if (rows > 0) row_ptr.narrow(0, 1, rows).copy_(at::cumsum(counts, 0));
  return {row_ptr, col_idx, values};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CompositeExplicitAutograd, m) {
  m.impl("pack_sparse_filter", &torch_sparse_conv::pack_sparse_filter_composite);
}
