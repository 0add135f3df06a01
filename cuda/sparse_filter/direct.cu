// 'direct' sparse-filter forward on CUDA: implicit unfold, no im2col buffer. The kernels are in
// cuda/sparse_filter/kernels.cuh, their plan and tap tables in cuda/sparse_filter/plan.h, the
// launches in cuda/sparse_filter/pipeline.cuh; here the device's facts go in.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cstdlib>
#include <limits>
#include <string>

#include "cuda/sparse_filter/methods.cuh"

namespace torch_sparse_conv {

void sparse_filter_direct_forward_cuda(const at::Tensor& input, const at::Tensor& row_ptr,
                                       const at::Tensor& col_idx,
                                       const at::Tensor& values, const at::Tensor& bias,
                                       const SparseFilterGeometry& g, at::Tensor& output) {
  const cudaDeviceProp* device = at::cuda::getCurrentDeviceProperties();
  sparse_filter_direct_pipeline(CudaLaunch(), input, row_ptr, col_idx, values,
                                bias, g, device->multiProcessorCount,
                                int64_t(device->sharedMemPerBlockOptin), output);
}

}  // namespace torch_sparse_conv
