// The sparse-filter backward on CUDA, deterministic (no floating-point atomics).
//
// grad_input gathers, for each input element, over the taps that read it, through a copy of
// the weight sorted by (group, column). Each kept value's gradient is one block-wide
// reduction over the batch and the output plane, summed in a fixed order.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "sparse_filter_cuda.cuh"

namespace torch_sparse_conv {
namespace {

// grad_input[n, gc, ih, iw] = sum over taps (ki, kj) and the output channels keeping column
// (c, ki, kj) of value * grad_output[n, oc, oh, ow], where (oh, ow) reads (ih, iw).
template <typename scalar_t, typename acc_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ grad_output,
                                  const int64_t* __restrict__ csc_ptr,
                                  const int64_t* __restrict__ csc_row,
                                  const scalar_t* __restrict__ csc_value, ConvShape s,
                                  scalar_t* __restrict__ grad_input, int64_t total) {
  const int64_t taps_per_channel = s.kernel_h * s.kernel_w;
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t taps = cin_g * taps_per_channel;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t iw = index % s.in_w;
    const int64_t ih = index / s.in_w % s.in_h;
    const int64_t gc = index / (s.in_w * s.in_h) % s.in_channels;
    const int64_t n = index / (s.in_w * s.in_h * s.in_channels);
    const int64_t group = gc / cin_g, c = gc % cin_g;
    acc_t acc = 0;
    for (int64_t ki = 0; ki < s.kernel_h; ++ki) {
      const int64_t row = ih + s.pad_h - ki * s.dilation_h;
      if (row < 0 || row % s.stride_h != 0 || row / s.stride_h >= s.out_h) continue;
      const int64_t oh = row / s.stride_h;
      for (int64_t kj = 0; kj < s.kernel_w; ++kj) {
        const int64_t column = iw + s.pad_w - kj * s.dilation_w;
        if (column < 0 || column % s.stride_w != 0 || column / s.stride_w >= s.out_w) continue;
        const int64_t ow = column / s.stride_w;
        const int64_t key = group * taps + c * taps_per_channel + ki * s.kernel_w + kj;
        for (int64_t j = csc_ptr[key]; j < csc_ptr[key + 1]; ++j) {
          const int64_t oc = csc_row[j];
          acc += acc_t(csc_value[j]) *
                 acc_t(grad_output[((n * s.out_channels + oc) * s.out_h + oh) * s.out_w + ow]);
        }
      }
    }
    grad_input[index] = scalar_t(acc);
  }
}

// One block per kept value: its gradient is a sum over the batch and the output plane.
template <typename scalar_t, typename acc_t>
__global__ void grad_values_kernel(const scalar_t* __restrict__ grad_output,
                                   const scalar_t* __restrict__ input,
                                   const int64_t* __restrict__ row_of,
                                   const int64_t* __restrict__ col_idx, ConvShape s,
                                   scalar_t* __restrict__ grad_values, int64_t nnz) {
  __shared__ acc_t partial[kCudaThreads];
  const int64_t taps_per_channel = s.kernel_h * s.kernel_w;
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t ocpg = s.out_channels / s.groups;
  const int64_t plane = s.out_h * s.out_w;
  for (int64_t k = blockIdx.x; k < nnz; k += gridDim.x) {
    const int64_t oc = row_of[k], col = col_idx[k];
    const int64_t gc = (oc / ocpg) * cin_g + col / taps_per_channel;
    const int64_t ki = col % taps_per_channel / s.kernel_w, kj = col % s.kernel_w;
    acc_t acc = 0;
    for (int64_t i = threadIdx.x; i < s.batch * plane; i += blockDim.x) {
      const int64_t n = i / plane, oh = i % plane / s.out_w, ow = i % s.out_w;
      const int64_t ih = oh * s.stride_h - s.pad_h + ki * s.dilation_h;
      const int64_t iw = ow * s.stride_w - s.pad_w + kj * s.dilation_w;
      if (ih >= 0 && ih < s.in_h && iw >= 0 && iw < s.in_w) {
        acc += acc_t(grad_output[(n * s.out_channels + oc) * plane + oh * s.out_w + ow]) *
               acc_t(input[((n * s.in_channels + gc) * s.in_h + ih) * s.in_w + iw]);
      }
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) grad_values[k] = scalar_t(partial[0]);
    __syncthreads();
  }
}

}  // namespace

at::Tensor sparse_filter_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& row_of,
                                         const at::Tensor& col_idx, const at::Tensor& values,
                                         const SparseFilterGeometry& g) {
  // The weight sorted by (group, column): the taps that read each input element.
  const int64_t taps = g.taps_per_filter();
  const at::Tensor key = at::div(row_of, g.out_channels_per_group(), "floor") * taps + col_idx;
  const at::Tensor order = std::get<1>(at::sort(key, /*stable=*/true, 0, false));
  at::Tensor csc_ptr = at::zeros({g.groups * taps + 1}, col_idx.options());
  if (key.numel() > 0) {
    csc_ptr.narrow(0, 1, g.groups * taps).copy_(at::cumsum(at::bincount(key, {}, g.groups * taps), 0));
  }
  const at::Tensor csc_row = row_of.index_select(0, order);
  const at::Tensor csc_value = values.index_select(0, order);
  at::Tensor grad_input =
      at::empty({g.batch, g.in_channels, g.in_h, g.in_w}, grad_output.options());
  const int64_t total = grad_input.numel();
  if (total == 0) return grad_input;
  TSC_DISPATCH_CUDA_FLOATS(grad_output.scalar_type(), "sparse_filter_grad_input_cuda", [&] {
    grad_input_kernel<scalar_t, at::opmath_type<scalar_t>>
        <<<cuda_blocks_for(total), kCudaThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            grad_output.data_ptr<scalar_t>(), csc_ptr.data_ptr<int64_t>(),
            csc_row.data_ptr<int64_t>(), csc_value.data_ptr<scalar_t>(), to_conv_shape(g),
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
