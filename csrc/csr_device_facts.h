// The facts a CSR validation needs, computed on the tensors' device (a GPU) with reductions
// and one copy of five numbers to the host. Each operator words its own errors from them.
#pragma once

#include <ATen/ATen.h>

namespace torch_sparse_conv {

struct CsrDeviceFacts {
  int64_t first_row_pointer, last_row_pointer;
  bool row_pointers_non_decreasing;
  int64_t lowest_column, highest_column;  // 0 and 0 when there are no entries
};

CsrDeviceFacts csr_facts_on_device(const at::Tensor& crow, const at::Tensor& col);

}  // namespace torch_sparse_conv
