"""Where the CUDA 'dense' method (what 'auto' runs on CUDA) spends the time it adds to cuDNN.

    python3 scripts/gpu/probe_dense_overhead.py [batch]

On the H200 (2026-12-04) our 'dense' took 0.20-0.28 ms a ResNet-50 3x3 layer at batch 64
against 0.07-0.14 ms for F.conv2d on the same pruned weight. Per layer at 90 %, medians of
CUDA-event timings of: F.conv2d on the dense weight; our op with method='dense'; the weight
unpacked alone (unpack_sparse_filter, ATen ops); F.conv2d on a freshly unpacked weight. Then
the profiler's table of one layer's calls (CPU and CUDA time per op and kernel), which shows
the CSR check's host wait and every kernel the unpacking launches.
"""
import sys

import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc
from cuda_timing import median_ms

LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]


def timed(fn):
    return median_ms(fn, reps=50, warmup=5)


def main():
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    gen = torch.Generator().manual_seed(0)
    op = torch.ops.torch_sparse_conv.sparse_filter_conv2d
    print(f"{torch.cuda.get_device_name()}, batch {batch}, 90 % sparsity, ms (CUDA events)")
    print("layer      F.conv2d  ours:dense  unpack  conv(unpack)")
    calls = None
    for channels, size in LAYERS:
        x = torch.randn(batch, channels, size, size, generator=gen).cuda()
        w = torch.randn(channels, channels, 3, 3, generator=gen)
        w = (w * (torch.rand(w.shape, generator=gen) >= 0.9)).cuda()
        row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
        shape = list(w.shape)

        def ours():
            return op(x, row_ptr, col_idx, values, shape, None, [1, 1], [1, 1], [1, 1], 1, "dense")

        def unpack():
            return tsc.unpack_sparse_filter(row_ptr, col_idx, values, shape)

        row = [timed(lambda: F.conv2d(x, w, padding=1)), timed(ours), timed(unpack),
               timed(lambda: F.conv2d(x, unpack(), padding=1))]
        print(f"{channels}x{size:<6d} " + "  ".join(f"{t:8.3f}" for t in row))
        calls = ours
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            calls()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
