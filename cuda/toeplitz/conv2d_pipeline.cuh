// The host side of toeplitz_conv2d's 'direct' method and of its backward on CUDA: the checks,
// the ATen steps (scans, the stable radix sort, run starts) and the kernel launches between
// them. Generic over the launcher (cuda/common/launch_shape.h): cuda/toeplitz/conv2d.cu
// launches on the current stream, the tests under the CPU emulation, with the same code.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <array>
#include <cstdlib>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "csrc/common/csr_check.h"
#include "csrc/toeplitz/geometry.h"
#include "cuda/common/launch_shape.h"
// Last: on host compilers they define CUDA's keywords as macros.
#include "cuda/toeplitz/conv2d_kernels.cuh"
#include "cuda/toeplitz/frame_tile_kernels.cuh"

namespace torch_sparse_conv {

// CSR row pointers (batch + 1) from the sorted row of every entry.
inline at::Tensor crow_from_rows(const at::Tensor& rows, int64_t batch) {
  at::Tensor crow = at::zeros({batch + 1}, rows.options());
  if (rows.numel() > 0 && batch > 0) {
    crow.narrow(0, 1, batch).copy_(at::cumsum(at::bincount(rows, {}, batch), 0));
  }
  return crow;
}

// 'direct' forward: x's CSR contents are checked here (crow, col, values and kernel
// contiguous on one device; the rest of the arguments checked). key_t: int when batch x
// output pixels fits, else int64_t.
template <typename key_t, typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_direct_pipeline(
    const Launch& launch, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, const at::Tensor& kernel, const ToeplitzGeometry& g) {
  const int64_t nnz = col.size(0), out_pixels = g.out_h * g.out_w;
  const Frame f = frame_of(g);
  // Counting reads the columns only as numbers (no memory at them), so it runs before the
  // CSR checks, and one copy to the host brings back both the checks and the total.
  at::Tensor counts = at::empty({nnz}, col.options());
  if (nnz > 0) {
    launch(count_kernel, grid_stride_launch(nnz), col.data_ptr<int64_t>(), f, nnz,
           counts.data_ptr<int64_t>());
  }
  const at::Tensor ends = at::cumsum(counts, 0);
  const std::vector<int64_t> facts = fetch_to_host(
      {pending_csr_facts(crow, col),
       nnz > 0 ? ends.narrow(0, nnz - 1, 1) : at::zeros({1}, col.options())});
  check_csr_facts(csr_facts_from(facts.data()), nnz, g.in_h * g.in_w,
                  input_csr_names("toeplitz_conv2d"));
  const int64_t candidates = facts[kCsrFacts];
  if (candidates == 0) {
    return {at::zeros({g.batch + 1}, crow.options()), at::empty({0}, col.options()),
            at::empty({0}, values.options())};
  }
  const at::Tensor offsets = ends - counts;
  const at::Tensor row_of = row_of_entries(crow, g.batch, nnz);
  const auto key_type = std::is_same<key_t, int>::value ? at::kInt : at::kLong;
  at::Tensor keys = at::empty({candidates}, col.options().dtype(key_type));
  at::Tensor products = at::empty({candidates}, values.options());
  at::Tensor out_crow, out_col, out_values;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(),
                                  "toeplitz_conv2d_cuda", [&] {
    launch(expand_kernel<scalar_t, key_t>, grid_stride_launch(nnz), row_of.data_ptr<int64_t>(),
           col.data_ptr<int64_t>(), values.data_ptr<scalar_t>(), kernel.data_ptr<scalar_t>(), f,
           nnz, offsets.data_ptr<int64_t>(), keys.data_ptr<key_t>(),
           products.data_ptr<scalar_t>());
    auto [sorted_keys, order] = at::sort(keys, /*stable=*/true, 0, false);
    // Runs of equal keys: where a sorted key differs from its predecessor.
    at::Tensor is_start = at::ones({candidates}, keys.options().dtype(at::kBool));
    if (candidates > 1) {
      is_start.narrow(0, 1, candidates - 1)
          .copy_(sorted_keys.narrow(0, 1, candidates - 1) !=
                 sorted_keys.narrow(0, 0, candidates - 1));
    }
    const at::Tensor run_start = at::nonzero(is_start).view(-1);  // syncs for the run count
    const int64_t runs = run_start.size(0);
    at::Tensor out_row = at::empty({runs}, col.options());
    out_col = at::empty({runs}, col.options());
    out_values = at::empty({runs}, values.options());
    launch(reduce_runs_kernel<scalar_t, key_t>, grid_stride_launch(runs),
           sorted_keys.data_ptr<key_t>(),
           order.data_ptr<int64_t>(), products.data_ptr<scalar_t>(),
           run_start.data_ptr<int64_t>(), runs, candidates, out_pixels,
           out_row.data_ptr<int64_t>(), out_col.data_ptr<int64_t>(),
           out_values.data_ptr<scalar_t>());
    out_crow = crow_from_rows(out_row, g.batch);
  });
  return {out_crow, out_col, out_values};
}

// Frames whose fill-pass tile takes at most this much shared memory go to the frame-tile
// kernel: an H100 allows 227 KiB per block, an A100 163 KiB. Above 112 KiB one block (16
// warps) runs per SM.
constexpr int64_t kFrameTileMaxBytes = 160 * 1024;

// Whether toeplitz_frame_tile_pipeline serves this geometry and dtype on a device allowing
// `optin_shared_bytes` per block. TSC_CUDA_FRAME_TILE=0 turns the path off (comparisons).
inline bool frame_tile_fits(const ToeplitzGeometry& g, at::ScalarType dtype,
                            int64_t optin_shared_bytes) {
  static const bool enabled = [] {
    const char* env = std::getenv("TSC_CUDA_FRAME_TILE");
    return !(env && std::string(env) == "0");
  }();
  const int64_t limit = std::min(kFrameTileMaxBytes, optin_shared_bytes);
  // The kernel indexes with int: the byte limit bounds H*W, these the rest (an output row
  // or kernel side of up to ~1.7e8 keeps every intermediate index below 2^31).
  const int64_t side = limit * 1024;
  if (!enabled || g.in_h * g.in_w > limit || g.out_h > side || g.out_w > side ||
      g.kernel_h > side || g.kernel_w > side ||
      g.out_h * g.out_w > std::numeric_limits<int>::max()) {
    return false;
  }
  const size_t bytes = frame_tile_bytes(g, c10::elementSize(at::toOpMathType(dtype)), true);
  return int64_t(bytes) <= limit;
}

// 'direct' forward by the frame-tile kernel (frame_tile_fits): a count pass, a scan, then a
// fill pass writing exact-size CSR. One host wait in all: the CSR checks and the output size
// come back in one copy (the count pass clamps what it reads, so it may run before them).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_frame_tile_pipeline(
    const Launch& launch, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, const at::Tensor& kernel, const ToeplitzGeometry& g) {
  const int64_t nnz = col.size(0);
  const size_t acc_bytes = c10::elementSize(at::toOpMathType(values.scalar_type()));
  const size_t count_shared = frame_tile_bytes(g, acc_bytes, false);
  const size_t fill_shared = frame_tile_bytes(g, acc_bytes, true);
  const int64_t blocks = std::min<int64_t>(g.batch, 65535);
  const Frame f = frame_of(g);
  at::Tensor covered = at::zeros({g.batch}, col.options());
  at::Tensor out_crow = at::zeros({g.batch + 1}, col.options());
  at::Tensor out_col, out_values;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(),
                                  "toeplitz_conv2d_frame_tile", [&] {
    if (g.batch > 0) {
      launch(frame_tile_kernel<scalar_t, false>,
             LaunchShape{blocks, 1, kFrameTileThreads, count_shared, true},
                    crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(),
                    static_cast<const scalar_t*>(nullptr), static_cast<const scalar_t*>(nullptr),
                    f, g.batch, nnz, covered.data_ptr<int64_t>(),
                    static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr),
                    static_cast<scalar_t*>(nullptr));
      out_crow.narrow(0, 1, g.batch).copy_(at::cumsum(covered, 0));
    }
    const std::vector<int64_t> facts =
        fetch_to_host({pending_csr_facts(crow, col), out_crow.narrow(0, g.batch, 1)});
    check_csr_facts(csr_facts_from(facts.data()), nnz, g.in_h * g.in_w,
                  input_csr_names("toeplitz_conv2d"));
    const int64_t total = facts[kCsrFacts];
    out_col = at::empty({total}, col.options());
    out_values = at::empty({total}, values.options());
    if (total > 0) {
      launch(frame_tile_kernel<scalar_t, true>,
             LaunchShape{blocks, 1, kFrameTileThreads, fill_shared, true},
                    crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(),
                    values.data_ptr<scalar_t>(), kernel.data_ptr<scalar_t>(), f, g.batch, nnz,
                    static_cast<int64_t*>(nullptr), out_crow.data_ptr<int64_t>(),
                    out_col.data_ptr<int64_t>(), out_values.data_ptr<scalar_t>());
    }
  });
  return {out_crow, out_col, out_values};
}

// The backward from contiguous arguments on one device whose shapes and dtypes are checked:
// the CSR contents of x and of the output pattern are checked here, in one host copy.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> toeplitz_backward_pipeline(
    const Launch& launch, const at::Tensor& go, const at::Tensor& cr, const at::Tensor& cc,
    const at::Tensor& cv, const at::Tensor& ck, const at::Tensor& ocr, const at::Tensor& occ,
    const ToeplitzGeometry& g, std::array<bool, 2> output_mask) {
  // x's CSR contents, and the output pattern must be what the forward returns: row pointers
  // from 0 to its nnz, strictly ascending columns in [0, H_out*W_out) within each image.
  // One copy to the host for all of it.
  const std::vector<int64_t> facts = fetch_to_host(
      {pending_csr_facts(cr, cc), pending_csr_facts(ocr, occ), pending_columns_ascend(ocr, occ)});
  check_csr_facts(csr_facts_from(facts.data()), cc.size(0), g.in_h * g.in_w,
                  input_csr_names("toeplitz_conv2d"));
  check_csr_facts(csr_facts_from(facts.data() + kCsrFacts), occ.size(0), g.out_h * g.out_w,
                  output_pattern_csr_names());
  TORCH_CHECK(facts[2 * kCsrFacts] == 1,
              "_toeplitz_conv2d_backward: the output pattern of every image must have strictly "
              "ascending columns, as toeplitz_conv2d returns it");
  const int64_t nnz = cc.size(0), taps = g.kernel_h * g.kernel_w;
  at::Tensor grad_values, grad_kernel;
  const auto acc_type = at::toOpMathType(cv.scalar_type());
  if (output_mask[0]) grad_values = at::zeros_like(cv);
  at::Tensor kernel_terms;
  if (output_mask[1]) kernel_terms = at::empty({nnz, taps}, cv.options().dtype(acc_type));
  if (nnz > 0 && (output_mask[0] || output_mask[1])) {
    const at::Tensor row_of = row_of_entries(cr, g.batch, nnz);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cv.scalar_type(),
                                    "toeplitz_conv2d_backward_cuda", [&] {
      launch(backward_kernel<scalar_t>, grid_stride_launch(nnz), row_of.data_ptr<int64_t>(),
             cc.data_ptr<int64_t>(),
             cv.data_ptr<scalar_t>(), ck.data_ptr<scalar_t>(), ocr.data_ptr<int64_t>(),
             occ.data_ptr<int64_t>(), go.data_ptr<scalar_t>(), frame_of(g), nnz,
             output_mask[0] ? grad_values.data_ptr<scalar_t>() : nullptr,
             output_mask[1] ? kernel_terms.data_ptr<at::opmath_type<scalar_t>>() : nullptr);
    });
  }
  if (output_mask[1]) {
    grad_kernel = kernel_terms.sum(0).to(cv.scalar_type()).view({g.kernel_h, g.kernel_w});
  }
  return {grad_values, grad_kernel};
}

}  // namespace torch_sparse_conv
