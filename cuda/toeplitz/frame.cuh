// The frame geometry every sparse-input (Toeplitz) CUDA kernel shares: the geometry as kernel
// arguments, and the footprint of an input pixel. Plain of ATen's CUDA
// parts, so the kernels also run under the CPU emulation in tests (cuda/common/kernel_emulation.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "csrc/toeplitz/geometry.h"
// After the library headers: on host compilers it defines CUDA's keywords as macros.
#include "cuda/common/kernel_portability.cuh"

namespace torch_sparse_conv {

struct Frame {  // ToeplitzGeometry as kernel arguments
  int64_t in_h, in_w, kernel_h, kernel_w, out_h, out_w, offset_h, offset_w;
};

inline Frame frame_of(const ToeplitzGeometry& g) {
  return {g.in_h, g.in_w, g.kernel_h, g.kernel_w, g.out_h, g.out_w, g.offset_h, g.offset_w};
}

// The kernel taps (u, t) that put input pixel (a, b) inside the output frame:
// u in [u_lo, u_hi), t in [t_lo, t_hi).
struct Footprint {
  int64_t u_lo, u_hi, t_lo, t_hi;
};

inline __device__ Footprint footprint(int64_t pixel, const Frame& f) {
  const int64_t a = pixel / f.in_w, b = pixel % f.in_w;
  const int64_t r0 = a - f.offset_h, c0 = b - f.offset_w;  // output pixel of tap (0, 0)
  Footprint p;
  p.u_lo = max(int64_t(0), -r0);
  p.u_hi = max(p.u_lo, min(f.kernel_h, f.out_h - r0));
  p.t_lo = max(int64_t(0), -c0);
  p.t_hi = max(p.t_lo, min(f.kernel_w, f.out_w - c0));
  return p;
}

}  // namespace torch_sparse_conv
