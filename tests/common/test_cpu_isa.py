"""Every instruction-set variant of the CPU kernels computes the same convolution.

The variant is picked once per process, so each runs in a subprocess with TSC_CPU_ISA set.
"""
import pytest

from testing import run_python

SCRIPT = r"""
import torch, torch.nn.functional as F, torch_sparse_conv as tsc
torch.manual_seed(0)
for dtype in (torch.float32, torch.float64):
    for (n, c, h, w, o, k, s, p, d, g) in [(2, 8, 13, 11, 6, 3, 1, 1, 1, 1), (3, 6, 9, 30, 4, 3, 2, 1, 2, 2),
                                           (9, 16, 5, 5, 8, 3, 1, 1, 1, 1), (1, 300, 20, 21, 5, 3, 1, 1, 1, 1),
                                           (3, 40, 13, 11, 9, 1, 1, 0, 1, 1),  # 1x1: pointwise.cpp
                                           (8, 30, 7, 7, 5, 1, 1, 0, 1, 1)]:  # 1x1, lanes
        x = torch.randn(n, c, h, w, dtype=dtype)
        wt = torch.randn(o, c // g, k, k, dtype=dtype) * (torch.rand(o, c // g, k, k) < 0.3)
        b = torch.randn(o, dtype=dtype)
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        xr, wr = x.clone().requires_grad_(), wt.clone().requires_grad_()
        out = tsc.sparse_conv2d(xr, wr, b, s, p, d, g, method="direct")
        torch.testing.assert_close(out, F.conv2d(x, wt, b, s, p, d, g), rtol=tol, atol=tol)
        gx, gw = torch.autograd.grad(out.sum(), (xr, wr))
        xe, we = x.clone().requires_grad_(), wt.clone().requires_grad_()
        ex, ew = torch.autograd.grad(F.conv2d(xe, we * (wt != 0), b, s, p, d, g).sum(), (xe, we))
        torch.testing.assert_close(gx, ex, rtol=tol, atol=tol)
        torch.testing.assert_close(gw, ew, rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_isa_variant_matches_conv2d(isa):
    result = run_python("-c", SCRIPT, TSC_CPU_ISA=isa)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
