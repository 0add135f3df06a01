// The pixels a strided 1x1 convolution reads, copied out of its input: the convolution on
// them is a stride-1 one (direct.cpp's forward, backward.cpp's values' gradient), or a block
// of them at a time (pointwise.cpp's tasks).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

namespace torch_sparse_conv {

// input[:, :, first_row::stride_h, first_col::stride_w], `rows` x `cols` of them, contiguous
// in the input's suggested memory format. NCHW-contiguous CPU inputs take a loop of this
// file, vectorised for stride 2 (ATen's copy of a tensor strided in its last dimension goes
// element by element: ResNet-50's 256->512 shortcut at batch 8, 90 %, 2 threads, Zen 4, took
// 4.31 ms with it, 3.92 with this loop, 2.27 on pixels picked beforehand, so the pick itself
// 2.0 -> 1.65 ms, now bound by reading the input's rows from memory); other inputs ATen's
// copy (channels-last already copies whole pixels).
at::Tensor pick_pixels(const at::Tensor& input, int64_t first_row, int64_t rows,
                       int64_t stride_h, int64_t first_col, int64_t cols, int64_t stride_w);

// Copies every `stride`-th element of `count` from src. Stride 2 (ResNet-50's shortcuts) in a
// loop of its own: its constant stride lets the compiler vectorise the loads with shuffles.
template <typename T>
void pick_row(const T* __restrict src, T* __restrict dst, int64_t count, int64_t stride) {
  if (stride == 2) {
    for (int64_t j = 0; j < count; ++j) dst[j] = src[j * 2];
  } else {
    for (int64_t j = 0; j < count; ++j) dst[j] = src[j * stride];
  }
}

// Positions [first, first + count) of one plane's picked pixels (out_w a row), picked rows
// starting at row 0 and column 0: dst[i] = plane[y * stride_h * in_w + x * stride_w] for
// position first + i = y * out_w + x.
template <typename T>
void pick_positions(const T* plane, int64_t in_w, int64_t stride_h, int64_t stride_w,
                    int64_t out_w, int64_t first, int64_t count, T* dst) {
  for (int64_t p = first; p < first + count;) {
    const int64_t y = p / out_w, x = p % out_w;
    const int64_t n = std::min(out_w - x, first + count - p);
    pick_row(plane + y * stride_h * in_w + x * stride_w, dst, n, stride_w);
    dst += n;
    p += n;
  }
}

}  // namespace torch_sparse_conv
