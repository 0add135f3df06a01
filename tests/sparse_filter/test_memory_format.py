"""The output keeps the input's memory format, as nn.Conv2d's does: a channels-last input gives
a channels-last output (the same values), on every method, in the fake kernel too."""
import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import DEVICES, random_weight

OP = torch.ops.torch_sparse_conv.sparse_filter_conv2d
CPU_METHODS = ["auto", "direct", "unfold", "dense"]


def _case(device, dtype=torch.float64, groups=1):
    torch.manual_seed(3)
    x = torch.randn(3, 8, 9, 10, dtype=dtype, device=device)
    w = random_weight((6, 8 // groups, 3, 3), 0.3, dtype).to(device)
    b = torch.randn(6, dtype=dtype, device=device)
    return x, w, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", CPU_METHODS)
def test_channels_last_input_gives_channels_last_output(device, method):
    if device == "cuda" and method == "unfold":
        method = "spmm"
    x, w, b = _case(device)
    x_last = x.contiguous(memory_format=torch.channels_last)
    out = tsc.sparse_conv2d(x_last, w, b, stride=(2, 1), padding=1, groups=1, method=method)
    expected = F.conv2d(x_last, w, b, stride=(2, 1), padding=1)
    if device == "cpu":
        # ATen's CPU rule, which ours follows. cuDNN keeps channels-last for reduced and single
        # precision only: its float64 output is NCHW, ours keeps the input's format there too.
        assert expected.is_contiguous(memory_format=torch.channels_last)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, expected)
    # An NCHW input still gives NCHW.
    out = tsc.sparse_conv2d(x, w, b, padding=1, method=method)
    assert out.is_contiguous()


@pytest.mark.parametrize("method", CPU_METHODS)
def test_channels_last_gradients_match_conv2d(method):
    x, w, b = _case("cpu", groups=2)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    layer = tsc.SparseConv2d.from_dense(torch.nn.Conv2d(8, 6, 3, padding=1, groups=2).double(),
                                        mask=w != 0, method=method)
    out = layer(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, grad)
    xr = x.detach().clone().requires_grad_()
    reference = F.conv2d(xr, layer.to_dense().weight, layer.bias, padding=1, groups=2)
    (rx,) = torch.autograd.grad(reference, xr, grad)
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(gx, rx)


def test_opcheck_channels_last():
    """The fake kernel's output strides match the real kernels' for a channels-last input."""
    x, w, b = _case("cpu")
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    values = values.clone().requires_grad_()
    for method in CPU_METHODS:
        torch.library.opcheck(OP.default, (x, row_ptr, col_idx, values, list(w.shape), b, [1, 1],
                                           [1, 1], [1, 1], 1, method))


# The CPU kernels convert a channels-last input to NCHW and their NCHW output back with a
# blocked transpose (csrc/common/memory_format.cpp): tiles of 32 x 32 float32 (16 x 16
# float64) made of 8 x 8 (4 x 4) vector blocks, elements left over on each side, and an
# element-wise path for 2-byte dtypes. These shapes put channel and pixel counts on both
# sides of each of those sizes. The conversion only moves elements, so the result must be
# bitwise the NCHW call's.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16,
                                   torch.bfloat16])
@pytest.mark.parametrize("in_channels, out_channels, size, kernel, stride, batch", [
    (3, 5, (3, 5), 3, 1, 2),       # nothing fills a vector block
    (8, 16, (4, 4), 1, 1, 1),      # whole blocks only
    (13, 70, (17, 20), 1, 1, 2),   # 340 pixels: bands of 32 and a rest; 70 channels out
    (70, 9, (9, 9), 3, 1, 3),      # 70 channels in: 64 by vectors, 6 by elements
    (24, 40, (15, 14), 1, 2, 2),   # a strided 1x1: the pixels picked in channels-last
    (16, 16, (12, 11), 3, 1, 9),   # a batch that fills a lanes block and a sample more
])
def test_channels_last_conversions_are_exact(dtype, in_channels, out_channels, size, kernel,
                                             stride, batch):
    torch.manual_seed(11)
    x = torch.randn(batch, in_channels, *size).to(dtype)
    w = random_weight((out_channels, in_channels, kernel, kernel), 0.3, torch.float32).to(dtype)
    b = torch.randn(out_channels).to(dtype)
    padding = 0 if kernel == 1 else 1
    x_last = x.contiguous(memory_format=torch.channels_last)
    out = tsc.sparse_conv2d(x_last, w, b, stride=stride, padding=padding, method="direct")
    nchw = tsc.sparse_conv2d(x, w, b, stride=stride, padding=padding, method="direct")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, nchw)
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(out, F.conv2d(x, w, b, stride=stride, padding=padding))


def test_channels_last_views_that_are_not_contiguous():
    """A channels-last tensor sliced so that it is contiguous in neither format goes through
    ATen's copy: the same result."""
    torch.manual_seed(12)
    x = torch.randn(2, 16, 10, 12).contiguous(memory_format=torch.channels_last)[:, 2:13, 1:]
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    w = random_weight((7, 11, 3, 3), 0.3, torch.float32)
    out = tsc.sparse_conv2d(x, w, None, padding=1, method="direct")
    torch.testing.assert_close(out, F.conv2d(x, w, None, padding=1))
