// The pixels a strided 1x1 convolution reads, copied out of its input: the convolution on
// them is a stride-1 one (direct.cpp's forward, backward.cpp's values' gradient).
#pragma once

#include <ATen/ATen.h>

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

}  // namespace torch_sparse_conv
