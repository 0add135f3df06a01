"""CUDA kernels of the sparse-filter ops: registered in every CUDA build, and equal to the CPU
kernels and F.conv2d wherever a GPU exists (skipped otherwise)."""

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from test_sparse_filter_conv2d import GRID, random_weight, seed_of

OPS = ["sparse_filter_conv2d", "_sparse_filter_conv2d_backward"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.skipif(tsc.cuda_version_compiled() == 0, reason="built without CUDA")
@pytest.mark.parametrize("op", OPS + ["pack_sparse_filter"])
def test_cuda_build_registers_a_cuda_kernel_for_every_op(op):
    name = f"torch_sparse_conv::{op}"
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    composite = torch._C._dispatch_has_kernel_for_dispatch_key(name,
                                                               "CompositeExplicitAutograd")
    assert has_cuda or composite


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", GRID[:24], ids=[f"cfg{i}" for i in range(24)])
def test_cuda_matches_cpu_forward_and_backward(cfg, dtype):
    gen = torch.Generator().manual_seed(seed_of(cfg))
    x = torch.randn(cfg["batch"], cfg["cin"], *cfg["size"], dtype=dtype, generator=gen)
    w = random_weight((cfg["cout"], cfg["cin"] // cfg["groups"], *cfg["kernel"]), 0.3, dtype,
                      gen)
    b = torch.randn(cfg["cout"], dtype=dtype, generator=gen)
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    cpu_leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    cpu_out = tsc.sparse_conv2d(*cpu_leaves, *args, method="direct")
    grad = torch.randn(cpu_out.shape, dtype=dtype, generator=gen)
    cpu_grads = torch.autograd.grad(cpu_out, cpu_leaves, grad)
    for method in ("direct", "dense", "auto"):
        leaves = [t.cuda().requires_grad_() for t in (x, w, b)]
        out = tsc.sparse_conv2d(*leaves, *args, method=method)
        torch.testing.assert_close(out.cpu(), cpu_out.detach(), **tol)
        grads = torch.autograd.grad(out, leaves, grad.cuda())
        for got, expected in zip(grads, cpu_grads):
            torch.testing.assert_close(got.cpu(), expected, **tol)


@needs_gpu
def test_cuda_empty_and_odd_shapes():
    x = torch.randn(0, 4, 5, 5, device="cuda")
    w = random_weight((3, 4, 3, 3), 0.5, torch.float32).cuda()
    assert tsc.sparse_conv2d(x, w).shape == (0, 3, 3, 3)
    x = torch.randn(3, 4, 1, 17, device="cuda")
    w = random_weight((5, 4, 1, 4), 0.5, torch.float32).cuda()
    torch.testing.assert_close(tsc.sparse_conv2d(x, w, stride=(1, 3), method="direct"),
                               F.conv2d(x, w, stride=(1, 3)), rtol=1e-4, atol=1e-4)


@needs_gpu
def test_cuda_opcheck_and_invalid_indices():
    x = torch.randn(2, 4, 7, 8, dtype=torch.float64, device="cuda", requires_grad=True)
    w = random_weight((6, 4, 3, 3), 0.4, torch.float64).cuda()
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    values = values.clone().requires_grad_()
    args = (x, row_ptr, col_idx, values, list(w.shape), None, [1, 1], [1, 1], [1, 1], 1,
            "direct")
    torch.library.opcheck(torch.ops.torch_sparse_conv.sparse_filter_conv2d.default, args)
    bad = col_idx.clone()
    bad[0] = 10_000
    with pytest.raises(RuntimeError, match="col_idx"):
        torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, row_ptr, bad, values, list(w.shape),
                                                         None, [1, 1], [1, 1], [1, 1], 1,
                                                         "direct")
    with pytest.raises(RuntimeError, match="not implemented on CUDA"):
        torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, row_ptr, col_idx, values,
                                                         list(w.shape), None, [1, 1], [1, 1],
                                                         [1, 1], 1, "unfold")


