"""Nothing a caller does to a tensor between two calls can make an operator serve a stale
result or skip a check: writes through ``.data``, numpy or another view leave the version
counter unchanged, so nothing may be keyed on it (issue: trust)."""
import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import random_weight, run_script

METHODS = ["auto", "direct", "unfold", "dense"]


def half_pruned_layer(method, seed=0, cin=6, cout=8, inference=False):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.5)
    if inference:
        with torch.inference_mode():
            return tsc.SparseConv2d.from_dense(conv, method=method)
    return tsc.SparseConv2d.from_dense(conv, method=method)


def reference(layer, x):
    return F.conv2d(x, layer.dense_weight(), layer.bias, layer.stride, layer._padding)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("write", ["data", "numpy", "view"])
def test_value_writes_without_a_version_bump_are_seen(method, write):
    layer = half_pruned_layer(method)
    x = torch.randn(2, 6, 9, 9)
    layer(x)
    version = layer.values._version
    if write == "data":
        layer.values.data.mul_(0.5)
    elif write == "numpy":
        layer.values.detach().numpy()[:] *= -2.0
    else:
        layer.values.detach()[::2] = 3.0
    if write == "data":
        assert layer.values._version == version  # the write the old caches could not see
    torch.testing.assert_close(layer(x), reference(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("write", ["data", "numpy"])
@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_path_sees_writes_and_corrupt_columns(write, stride):
    """The 1x1 in-place path (planes of at least 128 positions: 12x12 here, 24x24 strided)
    plans its taps per call too: value writes without a version bump are seen, and a column
    corrupted through .data is rejected before anything is read."""
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 8, 1, stride=stride)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.5)
    layer = tsc.SparseConv2d.from_dense(conv, method="direct")
    x = torch.randn(2, 6, 12 * stride, 12 * stride)
    layer(x)
    if write == "data":
        layer.values.data.mul_(-0.5)
    else:
        layer.values.detach().numpy()[:] *= 3.0
    torch.testing.assert_close(layer(x), reference(layer, x), rtol=1e-5, atol=1e-5)
    layer.col_idx.data[0] = 6  # C_in * 1 * 1 = 6 columns
    with pytest.raises(RuntimeError, match=r"must lie in \[0, 6\) .*, but col_idx\[0\] = 6"):
        layer(x)


@pytest.mark.parametrize("method", METHODS)
def test_inference_mode_layers_follow_their_values(method):
    layer = half_pruned_layer(method, inference=True)
    x = torch.randn(1, 6, 7, 7)
    with torch.inference_mode():
        layer(x)
        layer.values.mul_(0.25)
        got, expected = layer(x), reference(layer, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_more_layers_than_any_cache_held():
    """Forty layers called in turn, twice, each then changed through .data: every output stays
    right (the old global cache held 16 entries)."""
    layers = [half_pruned_layer("auto", seed=s) for s in range(40)]
    x = torch.randn(1, 6, 6, 6)
    for _ in range(2):
        for layer in layers:
            torch.testing.assert_close(layer(x), reference(layer, x), rtol=1e-5, atol=1e-5)
            layer.values.data.add_(0.125)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [-5, -1, 54, 108, 10**12])
def test_corrupt_column_written_after_a_call_raises(method, bad):
    layer = half_pruned_layer(method)  # C_in * kH * kW = 54 columns
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    out = layer(x)
    layer.col_idx.data[0] = bad
    with pytest.raises(RuntimeError,
                       match=r"must lie in \[0, 54\) .*, but col_idx\[0\] = -?\d+ is out of range"):
        layer(x)
    with pytest.raises(RuntimeError, match=r"col_idx\[0\] = -?\d+ is out of range"):
        out.sum().backward()  # the backward re-checks the indices it reads


@pytest.mark.parametrize("method", METHODS)
def test_corrupt_row_pointers_written_after_a_call_raise(method):
    layer = half_pruned_layer(method)
    x = torch.randn(1, 6, 5, 5)
    layer(x)
    nnz = layer.col_idx.numel()
    for index, value, message in [
            (0, 1, r"row pointers must start at 0, got row_ptr\[0\] = 1"),
            (3, -7, r"row pointers must be non-decreasing, but row_ptr\[3\] = -7 < row_ptr\[2\]"),
            (-1, nnz + 1, rf"must end at the number of entries in col_idx \({nnz}\), "
                          rf"got last row pointer row_ptr\[\d+\] = {nnz + 1}"),
            (-1, 10**12, r"got last row pointer row_ptr\[\d+\] = 1000000000000")]:
        saved = layer.row_ptr.clone()
        layer.row_ptr.data[index] = value
        with pytest.raises(RuntimeError, match=message):
            layer(x)
        layer.row_ptr.data.copy_(saved)
        layer(x)


@pytest.mark.slow
def test_huge_column_written_through_numpy_does_not_crash_the_process():
    """The issue's repro, in a fresh interpreter so a crash would fail this test, not end it."""
    run_script("""
import torch, torch_sparse_conv as tsc
conv = torch.nn.Conv2d(4, 4, 3, padding=1)
for method in ["auto", "direct", "unfold", "dense"]:
    layer = tsc.SparseConv2d.from_dense(conv, method=method)
    x = torch.randn(1, 4, 6, 6)
    layer(x)
    layer.col_idx.numpy()[0] = 10**12
    try:
        layer(x)
    except RuntimeError as error:
        assert "out of range" in str(error), error
    else:
        raise AssertionError("no error for " + method)
print("ok")
""")


def test_gradcheck_with_the_dense_method():
    """gradcheck perturbs the values in place through views; every method must see it."""
    torch.manual_seed(3)
    for method in METHODS:
        x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
        w = random_weight((3, 2, 3, 3), 0.5, torch.float64)
        row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
        values.requires_grad_(True)

        def conv(x, values, method=method):
            return tsc.sparse_conv2d_packed(x, row_ptr, col_idx, values, list(w.shape), None,
                                            [1, 1], [1, 1], [0, 0], [1, 1], 1, method)

        assert torch.autograd.gradcheck(conv, (x, values))


def test_kept_toeplitz_matrix_follows_bit_level_kernel_writes():
    """The module's kept T is keyed on the kernel's bits: a write through numpy, and a zero
    whose sign changes, are both seen."""
    kernel = torch.tensor([[1.0, -2.0], [0.0, 4.0]], dtype=torch.float64)
    module = tsc.ToeplitzConv2d((5, 6), kernel, mode="full", method="precomputed")
    direct = tsc.ToeplitzConv2d((5, 6), kernel, mode="full", method="direct")
    x = torch.zeros(2, 30, dtype=torch.float64)
    x[0, 3], x[1, 17], x[1, 29] = 2.0, 1.0, -3.0
    x = x.to_sparse_csr()
    module(x)
    module.kernel.detach().numpy()[0, 1] = 7.0
    direct.kernel.data.copy_(module.kernel.data)
    torch.testing.assert_close(module(x).to_dense(), direct(x).to_dense(), rtol=0, atol=0)
    module.kernel.data[1, 0] = -0.0  # equal to 0.0, but not the same bits
    direct.kernel.data[1, 0] = -0.0
    got, expected = module(x).values(), direct(x).values()
    assert torch.equal(torch.signbit(got), torch.signbit(expected))
