// The sparse-filter backward on CUDA, deterministic (no floating-point atomics).
//
// grad_input gathers, for each input element, over the taps that read it, through a copy of
// the weight sorted by (group, column). Each kept value's gradient is one block-wide
// reduction over the batch and the output plane, summed in a fixed order. The kernels are in
// cuda/sparse_filter/kernels.cuh, the sorted weight in cuda/sparse_filter/plan.h, the
// launches in cuda/sparse_filter/pipeline.cuh.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "cuda/sparse_filter/methods.cuh"

namespace torch_sparse_conv {

at::Tensor sparse_filter_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& row_of,
                                         const at::Tensor& col_idx, const at::Tensor& values,
                                         const SparseFilterGeometry& g) {
  return sparse_filter_grad_input_pipeline(CudaLaunch(), grad_output, row_of, col_idx,
                                           values, g);
}

at::Tensor sparse_filter_grad_values_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& row_of, const at::Tensor& col_idx,
                                          const SparseFilterGeometry& g) {
  return sparse_filter_grad_values_pipeline(CudaLaunch(), grad_output, input, row_of,
                                            col_idx, g);
}

}  // namespace torch_sparse_conv
