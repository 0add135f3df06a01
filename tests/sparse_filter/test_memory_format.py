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
