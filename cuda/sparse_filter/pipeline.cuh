// The host side of the sparse-filter CUDA kernels: the plan, the tap tables (built on every
// call from the packed filter as it is now, see csrc/sparse_filter/pattern.h), and the launches.
// Generic over the launcher (cuda/common/launch_shape.h), so the tests run the same code under the
// CPU emulation.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <string>
#include <vector>

#include "csrc/sparse_filter/geometry.h"
// Last: on host compilers it defines CUDA's keywords as macros.
#include "cuda/sparse_filter/kernels.cuh"
#include "cuda/sparse_filter/plan.h"

// float, double, half and bfloat16 (the last two accumulate in float).
#define TSC_DISPATCH_CUDA_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace torch_sparse_conv {

// 'direct' forward into `output` (N, C_out, H_out, W_out), contiguous; input, values and
// bias contiguous, bias may be undefined. The tiled kernel when its window fits a GPU with
// `multiprocessors` SMs and `optin_shared_bytes` of shared memory per block, else the
// per-output kernel.
template <typename Launch>
void sparse_filter_direct_pipeline(const Launch& launch, const at::Tensor& input,
                                   const at::Tensor& row_ptr,
                                   const at::Tensor& col_idx, const at::Tensor& values,
                                   const at::Tensor& bias, const SparseFilterGeometry& g,
                                   int64_t multiprocessors, int64_t optin_shared_bytes,
                                   at::Tensor& output) {
  const int64_t total = output.numel();
  if (total == 0) return;
  TileGeometry t;
  if (plan_tiles(g, input.element_size(), multiprocessors, optin_shared_bytes, t)) {
    const std::vector<at::Tensor> table = build_tap_table(row_ptr, col_idx, values, g);
    const at::Tensor tap_window = window_offsets(table, g, t);
    const LaunchShape shape{t.tiles(), g.groups * t.y_blocks_per_group, kCudaThreads,
                            window_bytes(t, input.element_size()), false};
    TSC_DISPATCH_CUDA_FLOATS(input.scalar_type(), "sparse_filter_direct_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto kernel = t.oc_block == 8    ? tiled_direct_kernel<scalar_t, acc_t, 8>
                    : t.oc_block == 16 ? tiled_direct_kernel<scalar_t, acc_t, 16>
                                       : tiled_direct_kernel<scalar_t, acc_t, 32>;
      launch(kernel, shape, input.data_ptr<scalar_t>(), table[0].data_ptr<int64_t>(),
             tap_window.data_ptr<int>(), table[3].data_ptr<scalar_t>(),
             bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, to_conv_shape(g), t,
             output.data_ptr<scalar_t>());
    });
    return;
  }
  TSC_DISPATCH_CUDA_FLOATS(input.scalar_type(), "sparse_filter_direct_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch(per_output_direct_kernel<scalar_t, acc_t>,
           grid_stride_launch(total), input.data_ptr<scalar_t>(),
           row_ptr.data_ptr<int64_t>(), col_idx.data_ptr<int64_t>(),
           values.data_ptr<scalar_t>(), bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
           to_conv_shape(g), output.data_ptr<scalar_t>(), total);
  });
}

// The input's gradient by a gather over the weight sorted by column (no atomics).
template <typename Launch>
at::Tensor sparse_filter_grad_input_pipeline(const Launch& launch, const at::Tensor& grad_output,
                                             const at::Tensor& row_of, const at::Tensor& col_idx,
                                             const at::Tensor& values,
                                             const SparseFilterGeometry& g) {
  const std::vector<at::Tensor> csc = sort_weight_by_column(row_of, col_idx, values, g);
  at::Tensor grad_input =
      at::empty({g.batch, g.in_channels, g.in_h, g.in_w}, grad_output.options());
  const int64_t total = grad_input.numel();
  if (total == 0) return grad_input;
  TSC_DISPATCH_CUDA_FLOATS(grad_output.scalar_type(), "sparse_filter_grad_input_cuda", [&] {
    launch(grad_input_kernel<scalar_t, at::opmath_type<scalar_t>>,
           grid_stride_launch(total), grad_output.data_ptr<scalar_t>(),
           csc[0].data_ptr<int64_t>(), csc[1].data_ptr<int64_t>(), csc[2].data_ptr<scalar_t>(),
           to_conv_shape(g), grad_input.data_ptr<scalar_t>(), total);
  });
  return grad_input;
}

// The kept values' gradient, one block-wide reduction per value (fixed order, no atomics).
template <typename Launch>
at::Tensor sparse_filter_grad_values_pipeline(const Launch& launch,
                                              const at::Tensor& grad_output,
                                              const at::Tensor& input, const at::Tensor& row_of,
                                              const at::Tensor& col_idx,
                                              const SparseFilterGeometry& g) {
  const int64_t nnz = col_idx.size(0);
  at::Tensor grad_values = at::zeros({nnz}, input.options());
  if (nnz == 0 || g.batch * g.out_h * g.out_w == 0) return grad_values;
  TSC_DISPATCH_CUDA_FLOATS(input.scalar_type(), "sparse_filter_grad_values_cuda", [&] {
    launch(grad_values_kernel<scalar_t, at::opmath_type<scalar_t>>,
           LaunchShape{std::min<int64_t>(nnz, 65535), 1, kCudaThreads, 0, true},
           grad_output.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(),
           row_of.data_ptr<int64_t>(), col_idx.data_ptr<int64_t>(), to_conv_shape(g),
           grad_values.data_ptr<scalar_t>(), nnz);
  });
  return grad_values;
}

}  // namespace torch_sparse_conv
