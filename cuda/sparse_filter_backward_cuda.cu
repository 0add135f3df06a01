// The sparse-filter backward on CUDA, deterministic (no floating-point atomics).
//
// grad_input gathers, for each input element, over the taps that read it, through a copy of
// the weight sorted by (group, column). Each kept value's gradient is one block-wide
// reduction over the batch and the output plane, summed in a fixed order. The kernels are in
// sparse_filter_kernels.cuh.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "sparse_filter_cuda.cuh"

namespace torch_sparse_conv {

at::Tensor sparse_filter_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& row_of,
                                         const at::Tensor& col_idx, const at::Tensor& values,
                                         const SparseFilterGeometry& g) {
  const std::vector<at::Tensor> csc = sort_weight_by_column(row_of, col_idx, values, g);
  at::Tensor grad_input =
      at::empty({g.batch, g.in_channels, g.in_h, g.in_w}, grad_output.options());
  const int64_t total = grad_input.numel();
  if (total == 0) return grad_input;
  TSC_DISPATCH_CUDA_FLOATS(grad_output.scalar_type(), "sparse_filter_grad_input_cuda", [&] {
    grad_input_kernel<scalar_t, at::opmath_type<scalar_t>>
        <<<cuda_blocks_for(total), kCudaThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            grad_output.data_ptr<scalar_t>(), csc[0].data_ptr<int64_t>(),
            csc[1].data_ptr<int64_t>(), csc[2].data_ptr<scalar_t>(), to_conv_shape(g),
            grad_input.data_ptr<scalar_t>(), total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

at::Tensor sparse_filter_grad_values_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& row_of, const at::Tensor& col_idx,
                                          const SparseFilterGeometry& g) {
  const int64_t nnz = col_idx.size(0);
  at::Tensor grad_values = at::zeros({nnz}, input.options());
  if (nnz == 0 || g.batch * g.out_h * g.out_w == 0) return grad_values;
  TSC_DISPATCH_CUDA_FLOATS(input.scalar_type(), "sparse_filter_grad_values_cuda", [&] {
    grad_values_kernel<scalar_t, at::opmath_type<scalar_t>>
        <<<std::min<int64_t>(nnz, 65535), kCudaThreads, 0,
           at::cuda::getCurrentCUDAStream()>>>(
            grad_output.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(),
            row_of.data_ptr<int64_t>(), col_idx.data_ptr<int64_t>(), to_conv_shape(g),
            grad_values.data_ptr<scalar_t>(), nnz);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_values;
}

}  // namespace torch_sparse_conv
