"""The gradient of the input on the forward's kernels (csrc/sparse_filter/pattern.h): at
stride 1 the forward convolution of grad_output with the transposed, flipped filter
(transposed_filter); at other strides, or where the padding exceeds the kernel's reach (the
transposed padding would be negative), one such convolution per phase of the input's
polyphase layout (phase_filters), each written to every s-th row and column; where the
values' gradient is oneDNN's and the taps read every phase, oneDNN's, from the same call. All
against autograd of F.conv2d."""
import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import gradcheck_packed, random_weight

BACKWARD = torch.ops.torch_sparse_conv._sparse_filter_conv2d_backward


def _grad_input(x, w, grad_out, stride, padding, dilation, groups):
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    grad_input, _, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values, list(w.shape),
                                list(stride), list(padding), list(dilation), groups,
                                [True, False, False])
    return grad_input


def _expected(x, w, grad_out, stride, padding, dilation, groups):
    leaf = x.clone().requires_grad_()
    out = F.conv2d(leaf, w, None, stride, padding, dilation, groups)
    (grad,) = torch.autograd.grad(out, leaf, grad_out)
    return grad


# (batch, in, out, groups, size, kernel, padding, dilation): batches that do and do not fill
# a lanes block (8 float32, 4 float64), 1x1 (pointwise), 3x3, non-square and even kernels,
# groups, dilation, zero and partial padding, odd channel counts.
CASES = [
    (1, 5, 7, 1, (9, 8), (3, 3), (1, 1), (1, 1)),
    (8, 16, 24, 1, (7, 7), (3, 3), (1, 1), (1, 1)),
    (9, 12, 10, 1, (14, 14), (1, 1), (0, 0), (1, 1)),
    (3, 8, 6, 2, (10, 12), (3, 2), (0, 1), (1, 1)),
    (4, 6, 9, 3, (11, 9), (5, 3), (2, 1), (1, 2)),
    (2, 7, 5, 1, (8, 10), (2, 4), (1, 0), (2, 1)),
    (8, 4, 4, 4, (6, 6), (3, 3), (1, 1), (1, 1)),  # depthwise
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("density", [0.1, 1.0])
def test_transposed_filter_gives_the_input_gradient(dtype, case, density):
    batch, cin, cout, groups, size, kernel, padding, dilation = case
    gen = torch.Generator().manual_seed(sum(size) + cin)
    x = torch.randn(batch, cin, *size, dtype=dtype, generator=gen)
    w = random_weight((cout, cin // groups, *kernel), density, dtype, gen)
    out_shape = F.conv2d(x, w, None, 1, padding, dilation, groups).shape
    grad_out = torch.randn(out_shape, dtype=dtype, generator=gen)
    got = _grad_input(x, w, grad_out, (1, 1), padding, dilation, groups)
    expected = _expected(x, w, grad_out, (1, 1), padding, dilation, groups)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                              atol=1e-10)
    torch.testing.assert_close(got, expected, **tolerance)


# (stride, padding, dilation, kernel, size): strides 2 and 3, unequal ones, padding beyond
# d (k - 1) at stride 1 (a negative transposed padding), padding larger than the stride,
# dilation with a stride, sizes whose last phase row reads no output, a 1x1 stride 2 (the
# downsampling shortcuts: one phase has every tap, the others none).
PHASE_CASES = [
    ((2, 2), (1, 1), (1, 1), (3, 3), (9, 10)),
    ((1, 2), (0, 1), (1, 1), (3, 2), (9, 10)),
    ((1, 1), (3, 2), (1, 1), (3, 2), (9, 10)),
    ((1, 1), (2, 0), (1, 1), (3, 2), (9, 10)),
    ((3, 2), (2, 1), (1, 1), (3, 3), (11, 8)),
    ((2, 2), (2, 3), (2, 1), (3, 3), (12, 13)),
    ((2, 3), (0, 0), (1, 2), (2, 3), (10, 14)),
    ((2, 2), (0, 0), (1, 1), (1, 1), (14, 14)),
    ((2, 2), (3, 3), (1, 1), (7, 7), (16, 15)),
    ((2, 2), (0, 0), (1, 1), (2, 2), (9, 11)),  # the last row and column read no output
]


@pytest.mark.parametrize("batch", [3, 9])
@pytest.mark.parametrize("case", PHASE_CASES, ids=[f"phase{i}" for i in range(len(PHASE_CASES))])
def test_strides_and_wide_padding_go_phase_by_phase(case, batch):
    stride, padding, dilation, kernel, size = case
    gen = torch.Generator().manual_seed(3 + sum(size))
    x = torch.randn(batch, 6, *size, dtype=torch.float64, generator=gen)
    w = random_weight((8, 6, *kernel), 0.4, torch.float64, gen)
    out_shape = F.conv2d(x, w, None, stride, padding, dilation).shape
    grad_out = torch.randn(out_shape, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(_grad_input(x, w, grad_out, stride, padding, dilation, 1),
                               _expected(x, w, grad_out, stride, padding, dilation, 1))


@pytest.mark.parametrize("batch, density", [(3, 0.4), (9, 0.1), (9, 0.5)])
@pytest.mark.parametrize("case", PHASE_CASES, ids=[f"phase{i}" for i in range(len(PHASE_CASES))])
def test_both_gradients_where_the_values_gradient_is_onednns(case, batch, density):
    """Both gradients at once. Where the values' gradient goes to oneDNN (above method.h's
    limits: batch 3 at any of these densities, 0.5 at batch 9) and the taps read every stride
    phase, the input's gradient comes from the same oneDNN call; a 1x1 stride-2 layer (one
    phase read) keeps its sparse input gradient; batch 9 at 0.1 is sparse for both."""
    stride, padding, dilation, kernel, size = case
    gen = torch.Generator().manual_seed(5 + sum(size))
    x = torch.randn(batch, 6, *size, dtype=torch.float64, generator=gen)
    w = random_weight((8, 6, *kernel), density, torch.float64, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    out_shape = F.conv2d(x, w, None, stride, padding, dilation).shape
    grad_out = torch.randn(out_shape, dtype=torch.float64, generator=gen)
    grad_input, grad_values, grad_bias = BACKWARD(
        grad_out, x, row_ptr, col_idx, values, list(w.shape), list(stride), list(padding),
        list(dilation), 1, [True, True, False])
    leaf_x, leaf_w = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = F.conv2d(leaf_x, leaf_w, None, stride, padding, dilation)
    expected_x, expected_w = torch.autograd.grad(out, (leaf_x, leaf_w), grad_out)
    torch.testing.assert_close(grad_input, expected_x)
    assert grad_input.is_contiguous() and grad_bias is None
    torch.testing.assert_close(tsc.unpack_sparse_filter(row_ptr, col_idx, grad_values,
                                                        list(w.shape)),
                               expected_w * (w != 0))


def test_both_gradients_through_onednn_with_duplicate_taps():
    """A column twice in a strided layer's CSR: the input's gradient sees their sum, each
    duplicate gets the tap's gradient (oneDNN's weight gradient read at the kept taps)."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 3, 9, 8, dtype=torch.float64, generator=gen)
    w = random_weight((4, 3, 3, 3), 0.5, torch.float64, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    col_idx = torch.cat([col_idx[:1], col_idx])
    values = torch.cat([torch.tensor([0.25], dtype=torch.float64), values])
    row_ptr = torch.cat([row_ptr[:1], row_ptr[1:] + 1])
    dense = tsc.unpack_sparse_filter(row_ptr, col_idx, values, [4, 3, 3, 3])
    grad_out = torch.randn(3, 4, 5, 4, dtype=torch.float64, generator=gen)
    grad_input, grad_values, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values, [4, 3, 3, 3],
                                          [2, 2], [1, 1], [1, 1], 1, [True, True, False])
    torch.testing.assert_close(grad_input, _expected(x, dense, grad_out, 2, (1, 1), 1, 1))
    leaf = dense.clone().requires_grad_()
    (grad_w,) = torch.autograd.grad(F.conv2d(x, leaf, None, 2, 1), leaf, grad_out)
    flat = grad_w.reshape(4, -1)
    rows = torch.repeat_interleave(torch.arange(4), row_ptr.diff())
    torch.testing.assert_close(grad_values, flat[rows, col_idx])
    assert grad_values[0] == grad_values[1]  # the duplicated tap


def test_phase_by_phase_float32_groups_and_channels_last():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(8, 12, 15, 16, generator=gen)
    w = random_weight((9, 4, 3, 3), 0.2, torch.float32, gen)
    out_shape = F.conv2d(x, w, None, 2, 1, 1, 3).shape
    grad_out = torch.randn(out_shape, generator=gen).contiguous(
        memory_format=torch.channels_last)
    torch.testing.assert_close(_grad_input(x, w, grad_out, (2, 2), (1, 1), (1, 1), 3),
                               _expected(x, w, grad_out, (2, 2), (1, 1), (1, 1), 3),
                               rtol=1e-4, atol=1e-4)


def test_unsorted_and_duplicate_taps():
    """A hand-made CSR with columns out of order and a column twice (their values add)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(8, 3, 6, 7, dtype=torch.float64, generator=gen)
    w = random_weight((4, 3, 3, 3), 0.5, torch.float64, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    first = int(row_ptr[1])
    assert first >= 2
    col_idx = torch.cat([col_idx[:first].flip(0), col_idx[:1], col_idx[first:]])
    values = torch.cat([values[:first].flip(0), torch.tensor([0.5], dtype=torch.float64),
                        values[first:]])
    row_ptr = torch.cat([row_ptr[:1], row_ptr[1:] + 1])
    dense = tsc.unpack_sparse_filter(row_ptr, col_idx, values, [4, 3, 3, 3])
    grad_out = torch.randn(8, 4, 6, 7, dtype=torch.float64, generator=gen)
    grad_input, _, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values, [4, 3, 3, 3], [1, 1],
                                [1, 1], [1, 1], 1, [True, False, False])
    torch.testing.assert_close(grad_input, _expected(x, dense, grad_out, 1, (1, 1), 1, 1))


def test_channels_last_and_expanded_grad_output():
    """grad_output channels-last, or expanded from a scalar (what out.sum().backward()
    sends): the same gradient."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(8, 16, 7, 7, generator=gen).contiguous(memory_format=torch.channels_last)
    w = random_weight((16, 16, 3, 3), 0.1, torch.float32, gen)
    leaf = x.clone().requires_grad_()
    layer = tsc.SparseConv2d.from_dense(torch.nn.Conv2d(16, 16, 3, padding=1, bias=False),
                                        mask=w != 0)
    layer(leaf).sum().backward()
    ref = x.clone().requires_grad_()
    F.conv2d(ref, layer.dense_weight().detach(), None, 1, 1).sum().backward()
    torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-4, atol=1e-4)
    grad_out = torch.randn(8, 16, 7, 7, generator=gen).contiguous(
        memory_format=torch.channels_last)
    torch.testing.assert_close(_grad_input(x, w, grad_out, (1, 1), (1, 1), (1, 1), 1),
                               _expected(x, w, grad_out, 1, (1, 1), 1, 1), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("stride", [(1, 1), (2, 1)])
def test_gradcheck_float64_transposed_and_by_phase(stride):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 4, 6, 5, dtype=torch.float64, generator=gen)
    w = random_weight((6, 2, 3, 2), 0.5, torch.float64, gen)
    assert gradcheck_packed(x, w, stride, (1, 0), (2, 1), 2)


@pytest.mark.parametrize("stride, kernel, size", [
    ((5, 5), (5, 5), (20, 21)),       # 25 phases with taps: oneDNN's gradient instead
    ((4, 4), (2, 2), (13, 9)),        # 4 of 16 phases read: the others get zeros
    ((999, 999), (1, 1), (1000, 1001)),  # one phase of a million
    ((5, 4), (3, 3), (3, 3)),         # one output: the stride capped to the padded size
])
def test_strides_far_from_the_kernel(stride, kernel, size):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=gen)
    w = random_weight((4, 3, *kernel), 0.6, torch.float64, gen)
    out_shape = F.conv2d(x, w, None, stride, 0).shape
    grad_out = torch.randn(out_shape, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(_grad_input(x, w, grad_out, stride, (0, 0), (1, 1), 1),
                               _expected(x, w, grad_out, stride, (0, 0), (1, 1), 1))


def test_empty_planes_and_empty_patterns():
    """An input with no rows (the output is all padding), and a filter with no kept tap."""
    x = torch.randn(1, 1, 0, 4, dtype=torch.float64)
    w = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    out = tsc.sparse_conv2d(x, w, None, 1, 1)  # F.conv2d refuses a plane without rows
    assert out.shape == (1, 1, 1, 5) and torch.equal(out, torch.zeros_like(out))
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    assert _grad_input(x, w, grad_out, (1, 1), (1, 1), (1, 1), 1).shape == x.shape
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    w = torch.zeros(4, 3, 3, 3, dtype=torch.float64)
    for stride in ((1, 1), (2, 2)):
        grad_out = torch.randn(F.conv2d(x, w, None, stride, 1).shape, dtype=torch.float64)
        assert torch.equal(_grad_input(x, w, grad_out, stride, (1, 1), (1, 1), 1),
                           torch.zeros_like(x))


def test_input_gradient_is_nchw_as_the_fake_kernel_says():
    """A channels-last grad_output still gives an NCHW input gradient on every path, the
    strides torch.library.opcheck compares with the fake kernel's."""
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(8, 8, 7, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    w = random_weight((8, 8, 3, 3), 0.3, torch.float64, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    for stride in ([1, 1], [2, 2]):
        out_shape = F.conv2d(x, w, None, stride, 1).shape
        grad_out = torch.randn(out_shape, dtype=torch.float64, generator=gen).contiguous(
            memory_format=torch.channels_last)
        args = (grad_out, x.detach(), row_ptr, col_idx, values, [8, 8, 3, 3], stride, [1, 1],
                [1, 1], 1, [True, True, False])
        assert BACKWARD(*args)[0].is_contiguous()
        torch.library.opcheck(BACKWARD.default, args)


def test_input_gradient_repeats_bit_for_bit_at_any_thread_count():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(9, 16, 12, 12, generator=gen)
    w = random_weight((16, 16, 3, 3), 0.1, torch.float32, gen)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 1):
            torch.set_num_threads(count)
            for stride in ((1, 1), (2, 2)):
                grad_out = torch.randn(F.conv2d(x, w, None, stride, 1).shape,
                                       generator=torch.Generator().manual_seed(1))
                results.append(_grad_input(x, w, grad_out, stride, (1, 1), (1, 1), 1))
    finally:
        torch.set_num_threads(threads)
    for first, other in zip(results[:2], results[2:4]):
        assert torch.equal(first, other)
    assert all(torch.equal(a, b) for a, b in zip(results[:2], results[4:]))


# Strided layers whose phase convolutions take the lanes (float32, whole blocks of 8, low
# density): the first lays grad_output out in the lanes and the others read that layout
# (backward.cpp, grad_input_by_phase). Layers whose phases have kernels of 2x2 (3x3 at
# stride 2), 4x4 (7x7 at stride 2) and 1x1 (3x3 at stride 3), odd sizes, channels-last
# grad_output.
# (batch, in, out, size, kernel, stride, padding)
SHARED_LAYOUT_CASES = [
    (8, 6, 8, (18, 17), (3, 3), (2, 2), (1, 1)),
    (16, 3, 12, (30, 31), (7, 7), (2, 2), (3, 3)),
    (8, 5, 7, (20, 19), (3, 3), (3, 3), (1, 1)),
]


@pytest.mark.parametrize("case", SHARED_LAYOUT_CASES,
                         ids=[f"case{i}" for i in range(len(SHARED_LAYOUT_CASES))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_phase_convolutions_share_grad_outputs_lanes_layout(case, channels_last):
    batch, cin, cout, size, kernel, stride, padding = case
    gen = torch.Generator().manual_seed(batch + sum(size))
    x = torch.randn(batch, cin, *size, generator=gen)
    w = random_weight((cout, cin, *kernel), 0.1, torch.float32, gen)
    out_shape = F.conv2d(x, w, None, stride, padding).shape
    grad_out = torch.randn(out_shape, generator=gen)
    if channels_last:
        grad_out = grad_out.to(memory_format=torch.channels_last)
    got = _grad_input(x, w, grad_out, stride, padding, (1, 1), 1)
    torch.testing.assert_close(got, _expected(x, w, grad_out, stride, padding, (1, 1), 1),
                               rtol=1e-4, atol=1e-4)
