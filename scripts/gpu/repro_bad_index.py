"""Repro: sparse_filter_conv2d on CUDA with an out-of-range col_idx must raise, not crash."""
import torch

import torch_sparse_conv as tsc

x = torch.randn(2, 4, 7, 8, dtype=torch.float64, device="cuda", requires_grad=True)
w = torch.randn(6, 4, 3, 3, dtype=torch.float64) * (torch.rand(6, 4, 3, 3) < 0.4)
row_ptr, col_idx, values = tsc.pack_sparse_filter(w.cuda())
bad = col_idx.clone()
bad[0] = 10_000
for requires_grad in (False, True):
    try:
        torch.ops.torch_sparse_conv.sparse_filter_conv2d(
            x.detach().requires_grad_(requires_grad), row_ptr, bad,
            values.clone().requires_grad_(requires_grad), list(w.shape), None, [1, 1], [1, 1],
            [1, 1], 1, "direct")
        print("no error raised!")
    except RuntimeError as e:
        print("raised as expected:", str(e).splitlines()[0])
