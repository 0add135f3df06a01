#include "csrc/sparse_filter/cpu/pick_pixels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace torch_sparse_conv {
namespace {

// Output rows (one per plane and picked row) split among the threads; each element moved as
// an unsigned integer of its size (a copy, whatever the dtype).
template <typename T>
void pick_planes(const T* in, T* out, int64_t planes, int64_t in_h, int64_t in_w,
                 int64_t first_row, int64_t rows, int64_t stride_h, int64_t first_col,
                 int64_t cols, int64_t stride_w) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
  at::parallel_for(0, planes * rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / rows;
      const int64_t y = first_row + (r % rows) * stride_h;
      const T* src = in + (plane * in_h + y) * in_w + first_col;
      pick_row(src, out + r * cols, cols, stride_w);
    }
  });
}

}  // namespace

at::Tensor pick_pixels(const at::Tensor& input, int64_t first_row, int64_t rows,
                       int64_t stride_h, int64_t first_col, int64_t cols, int64_t stride_w) {
  TORCH_INTERNAL_ASSERT(input.dim() == 4 && rows >= 0 && cols >= 0 && stride_h >= 1 &&
                        stride_w >= 1);
  TORCH_INTERNAL_ASSERT(rows == 0 || (first_row >= 0 &&
                                      first_row + (rows - 1) * stride_h < input.size(2)));
  TORCH_INTERNAL_ASSERT(cols == 0 || (first_col >= 0 &&
                                      first_col + (cols - 1) * stride_w < input.size(3)));
  const int64_t item = input.element_size();
  const bool own_loop = input.device().is_cpu() && input.is_contiguous() &&
                        input.suggest_memory_format() == at::MemoryFormat::Contiguous &&
                        (item == 1 || item == 2 || item == 4 || item == 8);
  if (!own_loop) {
    return input.slice(2, first_row, input.size(2), stride_h)
        .narrow(2, 0, rows)
        .slice(3, first_col, input.size(3), stride_w)
        .narrow(3, 0, cols)
        .contiguous(input.suggest_memory_format());
  }
  at::Tensor picked = at::empty({input.size(0), input.size(1), rows, cols}, input.options());
  const int64_t planes = input.size(0) * input.size(1);
  const auto run = [&](auto tag) {
    using T = decltype(tag);
    pick_planes(static_cast<const T*>(input.const_data_ptr()),
                static_cast<T*>(picked.mutable_data_ptr()), planes, input.size(2),
                input.size(3), first_row, rows, stride_h, first_col, cols, stride_w);
  };
  switch (item) {
    case 1: run(uint8_t{}); break;
    case 2: run(uint16_t{}); break;
    case 4: run(uint32_t{}); break;
    default: run(uint64_t{}); break;
  }
  return picked;
}

}  // namespace torch_sparse_conv
