// 'direct' sparse-filter forward on CUDA: implicit unfold, no im2col buffer. The kernels and
// their plan are in sparse_filter_kernels.cuh; here the tap tables are cached with the packed
// filter (built once per filter, and once per window shape) and the kernels are launched.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cstdlib>
#include <limits>
#include <string>

#include "sparse_filter_cuda.cuh"

namespace torch_sparse_conv {

void sparse_filter_direct_forward_cuda(const at::Tensor& input, PackedFilterFacts& facts,
                                       const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                       const at::Tensor& values, const at::Tensor& bias,
                                       const SparseFilterGeometry& g, at::Tensor& output) {
  const int64_t total = output.numel();
  if (total == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  TileGeometry t;
  const cudaDeviceProp* device = at::cuda::getCurrentDeviceProperties();
  if (plan_tiles(g, input.element_size(), device->multiProcessorCount,
                 int64_t(device->sharedMemPerBlockOptin), t)) {
    const auto& table = facts.derived("cuda_tap_table", [&] {
      return build_tap_table(row_ptr, col_idx, values, g);
    });
    const std::string window_key = "cuda_tap_window_" + std::to_string(t.nb) + "x" +
                                   std::to_string(t.in_th) + "x" +
                                   std::to_string(t.in_tw) + "_" +
                                   std::to_string(g.dilation_h) + "x" +
                                   std::to_string(g.dilation_w);
    const at::Tensor tap_window =
        facts.derived(window_key, [&] { return std::vector<at::Tensor>{
                                            window_offsets(table, g, t)}; })[0];
    const dim3 grid(unsigned(t.tiles()), unsigned(g.groups * t.y_blocks_per_group));
    const size_t shared = window_bytes(t, input.element_size());
    TSC_DISPATCH_CUDA_FLOATS(input.scalar_type(), "sparse_filter_direct_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto kernel = t.oc_block == 8    ? tiled_direct_kernel<scalar_t, acc_t, 8>
                    : t.oc_block == 16 ? tiled_direct_kernel<scalar_t, acc_t, 16>
                                       : tiled_direct_kernel<scalar_t, acc_t, 32>;
      if (shared > size_t(kWindowBytes)) {  // a one-window plan beyond the default limit
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            int(shared)));
      }
      kernel<<<grid, kCudaThreads, shared, stream>>>(
          input.data_ptr<scalar_t>(), table[0].data_ptr<int64_t>(), tap_window.data_ptr<int>(),
          table[3].data_ptr<scalar_t>(), bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
          to_conv_shape(g), t, output.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return;
  }
  TSC_DISPATCH_CUDA_FLOATS(input.scalar_type(), "sparse_filter_direct_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    per_output_direct_kernel<scalar_t, acc_t>
        <<<cuda_blocks_for(total), kCudaThreads, 0, stream>>>(
            input.data_ptr<scalar_t>(), row_ptr.data_ptr<int64_t>(), col_idx.data_ptr<int64_t>(),
            values.data_ptr<scalar_t>(), bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
            to_conv_shape(g), output.data_ptr<scalar_t>(), total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace torch_sparse_conv
