// How the CUDA pipelines of both families ask for a kernel launch.
//
// Every pipeline (cuda/sparse_filter/pipeline.cuh, cuda/toeplitz/*_pipeline.cuh) is generic
// over a launcher called as `launch(kernel, LaunchShape, args...)`: CudaLaunch
// (cuda/common/launch.cuh) runs the kernel on the current stream, the tests' emulated
// launcher (tests/cpp/test_cuda_kernels_emulated.cpp) on the CPU, so the same host code runs
// in both. Plain C++, so the emulation compiles it with a host compiler.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "csrc/common/arithmetic.h"

namespace torch_sparse_conv {

constexpr int kCudaThreads = 256;  // threads per block unless a launch says otherwise

struct LaunchShape {
  int64_t blocks_x = 1, blocks_y = 1;
  int threads = kCudaThreads;
  size_t shared_bytes = 0;
  bool grid_stride = false;  // the kernel loops over its work: any number of blocks is correct
};

// A one-dimensional grid-stride launch over `work` items: a block per `threads` items, at
// least one block and at most 2^30.
inline LaunchShape grid_stride_launch(int64_t work, int threads = kCudaThreads) {
  LaunchShape shape;
  shape.blocks_x = std::clamp<int64_t>(ceil_div(work, threads), 1, int64_t(1) << 30);
  shape.threads = threads;
  shape.grid_stride = true;
  return shape;
}

}  // namespace torch_sparse_conv
