"""The one-sample 'direct' layout rounds its rows up to whole vectors where that adds at most
an eighth more columns (csrc/sparse_filter/cpu/direct.cpp, one_sample_geometry: 58 -> 64 for
a padded 56x56 plane), so that the taps at column offset 0 load aligned vectors; the extra
columns are computed and dropped. Planes on both sides of the rule (and small planes, whose
samples interleave), strides, dilation, a 5x3 kernel, groups, float32/float64/bfloat16, a
channels-last input, the fused epilogue and the input's gradient (a forward of grad_output),
against F.conv2d. (The lanes layout's own rounding for one-column kernels:
test_lanes_layout.py.)
"""
import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import random_weight, run_python

# (batch, C_in, C_out, H, W, kernel, stride, padding, dilation, groups). With 16-element
# vectors (float32 in Intel's 64-byte kernel) rows rounded up (56 + 2 -> 64, 28 + 2 -> 32,
# 62 -> 64, stride 2: 59 / 2 -> 30 -> 32, 5x3 on 62 -> 64) and left (20 + 2 = 22: 32 would add
# a half; dilation 2 on 30 + 4 = 34; 7x7 interleaves samples). With 8-element vectors
# (float64 there, float32 in 32-byte ones) 22 -> 24 and 34 -> 40 are rounded too, and only
# the 7x7 plane is left: test_rows_at_the_other_vector_width runs them with 32-byte vectors.
CASES = [
    (1, 12, 10, 56, 56, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 8, 12, 28, 28, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 6, 8, 17, 60, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (1, 8, 8, 40, 57, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (3, 6, 9, 21, 60, (5, 3), (1, 1), (2, 1), (1, 1), 3),
    (1, 10, 6, 30, 20, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 8, 8, 31, 30, (3, 3), (1, 1), (2, 2), (2, 2), 1),
    (3, 16, 16, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1),
]


def tolerance(dtype):
    return {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10),
            torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_one_sample_rows_match_conv2d(case, dtype):
    n, cin, cout, h, w, kernel, stride, padding, dilation, groups = case
    gen = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(n, cin, h, w, generator=gen).to(dtype)
    weight = random_weight((cout, cin // groups, *kernel), 0.3, torch.float32, gen).to(dtype)
    bias = torch.randn(cout, generator=gen).to(dtype)
    ref = torch.float64 if dtype == torch.float64 else torch.float32  # bfloat16: exact widening
    expected = F.conv2d(x.to(ref), weight.to(ref), bias.to(ref), stride, padding, dilation,
                        groups)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm = x.contiguous(memory_format=memory_format)
        got = tsc.sparse_conv2d(xm, weight, bias, stride, padding, dilation, groups,
                                method="direct")
        torch.testing.assert_close(got.to(ref), expected, **tolerance(dtype))


@pytest.mark.parametrize("case", CASES[:5], ids=[f"case{i}" for i in range(5)])
def test_fused_epilogue_on_rounded_rows(case):
    """The residual and ReLU are applied as the extra columns are dropped: each output
    element gets its own residual."""
    n, cin, cout, h, w, kernel, stride, padding, dilation, groups = case
    gen = torch.Generator().manual_seed(w)
    x = torch.randn(n, cin, h, w, generator=gen)
    weight = random_weight((cout, cin // groups, *kernel), 0.3, torch.float32, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    args = (x, row_ptr, col_idx, values, list(weight.shape), None, list(stride), list(padding),
            list(dilation), groups, "direct")
    conv = torch.ops.torch_sparse_conv.sparse_filter_conv2d(*args)
    residual = torch.randn(conv.shape, generator=gen)
    got = torch.ops.torch_sparse_conv.sparse_filter_conv2d(*args, residual, True)
    assert torch.equal(got, torch.relu(conv + residual))


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4]], ids=["56", "stride2", "5x3"])
def test_input_gradient_on_rounded_rows(case):
    n, cin, cout, h, w, kernel, stride, padding, dilation, groups = case
    gen = torch.Generator().manual_seed(h + w)
    weight = random_weight((cout, cin // groups, *kernel), 0.3, torch.float64, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    x = torch.randn(n, cin, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    out = torch.ops.torch_sparse_conv.sparse_filter_conv2d(
        x, row_ptr, col_idx, values, list(weight.shape), None, list(stride), list(padding),
        list(dilation), groups, "direct")
    go = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    (got,) = torch.autograd.grad(out, x, go)
    x2 = x.detach().requires_grad_()
    (expected,) = torch.autograd.grad(
        F.conv2d(x2, weight, None, stride, padding, dilation, groups), x2, go)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


OTHER_WIDTH_SCRIPT = r"""
import torch, torch.nn.functional as F, torch_sparse_conv as tsc
from torch_sparse_conv._library import conv_block_vector_bytes
CASES = %r
for dtype in (torch.float32, torch.float64):
    for n, cin, cout, h, w, kernel, stride, padding, dilation, groups in CASES:
        gen = torch.Generator().manual_seed(h * 100 + w)
        x = torch.randn(n, cin, h, w, dtype=dtype, generator=gen)
        wt = torch.randn(cout, cin // groups, *kernel, dtype=dtype, generator=gen)
        wt = wt * (torch.rand(wt.shape, generator=gen) < 0.3)
        got = tsc.sparse_conv2d(x, wt, None, stride, padding, dilation, groups, method="direct")
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(got, F.conv2d(x, wt, None, stride, padding, dilation,
                                                 groups), rtol=tol, atol=tol)
print(conv_block_vector_bytes(), "ok")
"""


def test_rows_at_the_other_vector_width():
    """The rounding follows the one-sample kernel's vector: with 32-byte vectors (AMD's width,
    picked by TSC_CONV_VECTOR_BYTES where the kernel has the choice) more rows round up."""
    result = run_python("-c", OTHER_WIDTH_SCRIPT % (CASES,), TSC_CONV_VECTOR_BYTES="32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "ok"
