#include "csr_device_facts.h"

namespace torch_sparse_conv {

CsrDeviceFacts csr_facts_on_device(const at::Tensor& crow, const at::Tensor& col) {
  const int64_t rows = crow.size(0) - 1, nnz = col.size(0);
  const at::Tensor monotone =
      rows > 0 ? at::all(crow.narrow(0, 1, rows) >= crow.narrow(0, 0, rows))
               : at::ones({}, crow.options().dtype(at::kBool));
  const at::Tensor lowest = nnz > 0 ? col.min() : at::zeros({}, col.options());
  const at::Tensor highest = nnz > 0 ? col.max() : at::zeros({}, col.options());
  const at::Tensor facts =
      at::stack({crow[0], crow[rows], monotone.to(at::kLong), lowest, highest}).cpu();
  const int64_t* f = facts.data_ptr<int64_t>();
  return {f[0], f[1], f[2] == 1, f[3], f[4]};
}

}  // namespace torch_sparse_conv
