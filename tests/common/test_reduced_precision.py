"""float16 and bfloat16 on every device (csrc/common/reduced_precision.h) and autocast
(csrc/autocast.cpp): both families follow nn.Conv2d, computing in float32 and rounding once.
Value and gradient parity in reduced precision lives beside each family's float tests
(test_half_precision_accumulates_in_float, test_dtypes); this file checks what is shared."""
import numpy as np
import pytest
import torch
from torch import nn

import torch_sparse_conv as tsc

from testing import DEVICES, csr_to, random_csr

HALF_TYPES = [torch.float16, torch.bfloat16]
AUTOCAST_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}  # torch's defaults


def pruned_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(6, 12, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(12, 8, 3, stride=2, bias=False))
    with torch.no_grad():
        for conv in (model[0], model[2]):
            conv.weight.mul_(torch.rand_like(conv.weight) > 0.7)
    return model


@pytest.mark.parametrize("device", DEVICES)
def test_reduced_precision_is_float32_rounded_once(device):
    """The CPU path widens, runs the float32 kernel, rounds the result: bit for bit what the
    float32 op gives on the widened arguments, rounded."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, 9, 9, generator=gen)
    w = torch.randn(12, 6, 3, 3, generator=gen) * (torch.rand(12, 6, 3, 3, generator=gen) > 0.7)
    b = torch.randn(12, generator=gen)
    for dtype in HALF_TYPES:
        args = [t.to(dtype).to(device) for t in (x, w, b)]
        out = tsc.sparse_conv2d(*args, padding=1, method="direct")
        assert out.dtype == dtype
        if device == "cpu":
            expected = tsc.sparse_conv2d(*[t.float() for t in args], padding=1, method="direct")
            assert torch.equal(out, expected.to(dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_kept_in_reduced_precision(device):
    x = torch.randn(2, 6, 8, 8).to(device, torch.bfloat16).to(memory_format=torch.channels_last)
    w = (torch.randn(4, 6, 3, 3) * (torch.rand(4, 6, 3, 3) > 0.5)).to(device, torch.bfloat16)
    out = tsc.sparse_conv2d(x, w, padding=1)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_sparsified_model_under_autocast_matches_the_dense_one(device):
    """Under torch.autocast a sparsified model computes in the dtype its nn.Conv2d layers
    would (nn.Conv2d's lower_precision_fp policy), values and parameter gradients alike."""
    dense = pruned_model().to(device)
    sparse = tsc.sparsify(pruned_model().to(device), min_sparsity=0.5)
    assert isinstance(sparse[0], tsc.SparseConv2d) and isinstance(sparse[2], tsc.SparseConv2d)
    x = torch.randn(2, 6, 10, 10, device=device)
    dtype = AUTOCAST_DTYPE[device]
    with torch.autocast(device, dtype):
        want, got = dense(x), sparse(x)
    assert want.dtype == got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    got.float().square().sum().backward()
    want.float().square().sum().backward()
    for layer, conv in ((sparse[0], dense[0]), (sparse[2], dense[2])):
        grad = layer.values.grad
        assert grad.dtype == torch.float32  # parameters stay float32, as nn.Conv2d's do
        expected = conv.weight.grad.flatten(1)[conv.weight.flatten(1) != 0]
        scale = float(expected.abs().max()) + 1
        torch.testing.assert_close(grad.cpu() / scale, expected.cpu() / scale, rtol=3e-2,
                                   atol=3e-2)


def test_autocast_off_and_float64_leave_the_dtype_alone():
    layer = tsc.sparsify(pruned_model(), min_sparsity=0.5)[0]
    x = torch.randn(1, 6, 5, 5)
    with torch.autocast("cpu", torch.bfloat16, enabled=False):
        assert layer(x).dtype == torch.float32
    with torch.autocast("cpu", torch.bfloat16):
        # autocast casts float32 only; float64 stays (as F.conv2d does)
        assert layer.double()(x.double()).dtype == torch.float64


@pytest.mark.parametrize("device", DEVICES)
def test_toeplitz_under_autocast_and_in_reduced_precision(device):
    rng = np.random.default_rng(5)
    x = csr_to(random_csr(rng, 4, 12, 10, 0.1, torch.float32), device)
    kernel = torch.tensor(rng.standard_normal((3, 3)), dtype=torch.float32, device=device)
    module = tsc.ToeplitzConv2d((12, 10), kernel).to(device)
    reference = module(x).to_dense()
    dtype = AUTOCAST_DTYPE[device]
    with torch.autocast(device, dtype):
        out = module(x)
    assert out.values().dtype == dtype
    torch.testing.assert_close(out.to_dense().float(), reference, rtol=2e-2, atol=5e-2)
    # gradients of a reduced-precision call reach float32 parameters through autocast's cast
    out.values().float().sum().backward()
    assert module.kernel.grad.dtype == torch.float32
    expected = torch.autograd.grad(module(x).values().sum(), module.kernel)[0]
    torch.testing.assert_close(module.kernel.grad, expected, rtol=3e-2, atol=3e-1)


def test_toeplitz_half_gradients_against_float64():
    rng = np.random.default_rng(9)
    x = random_csr(rng, 3, 9, 11, 0.2)
    kernel = torch.tensor(rng.standard_normal((3, 3)))
    grad = None
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        values = x.values().to(dtype).requires_grad_()
        k = kernel.to(dtype).requires_grad_()
        xs = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, size=x.shape)
        out = tsc.toeplitz_conv2d(xs, k, (9, 11), "same", method="direct")
        if grad is None:
            grad = torch.randn(out.values().shape, dtype=torch.float64)
        grads = torch.autograd.grad(out.values(), (values, k), grad.to(dtype))
        assert all(g.dtype == dtype for g in grads)
        if dtype == torch.float64:
            expected = grads
            continue
        for got, want in zip(grads, expected):
            scale = want.abs().max() + 1
            torch.testing.assert_close(got.double() / scale, want / scale, rtol=2e-2, atol=2e-2)
