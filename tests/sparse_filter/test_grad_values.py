"""The gradient of the kept values with a block of samples in the vector lanes
(csrc/sparse_filter/cpu/backward.cpp, grad_values_lanes_cpu; 8 float32 or 4 float64
samples a block, at any stride whose phases the kernel all reads; the samples after the whole
blocks one at a time), else the per-sample kernel; above the densities where those pay
(csrc/sparse_filter/method.h: with the lanes 45 %, 25 % for 1x1 kernels, 30 % strided; one
sample at a time 22 %, 15 % strided), oneDNN's weight gradient read at the kept taps.
All against autograd of F.conv2d on the masked weight, sampled at the kept taps."""
import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import gradcheck_packed, random_weight

BACKWARD = torch.ops.torch_sparse_conv._sparse_filter_conv2d_backward
# Below every limit of method.h (kGradValues...MaxDensity) the sparse kernels run, whichever
# layout; at 0.5 and more oneDNN's gradient (the lanes' 3x3 limit is 0.45).
SPARSE_KERNELS_BELOW = 0.15
STRIDED_SPARSE_KERNELS_BELOW = 0.15


def _grad_values(x, w, grad_out, stride, padding, dilation, groups):
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    _, grad_values, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values, list(w.shape),
                                 list(stride), list(padding), list(dilation), groups,
                                 [False, True, False])
    return tsc.unpack_sparse_filter(row_ptr, col_idx, grad_values, list(w.shape))


def _expected(x, w, grad_out, stride, padding, dilation, groups):
    leaf = w.clone().requires_grad_()
    out = F.conv2d(x, leaf, None, stride, padding, dilation, groups)
    (grad,) = torch.autograd.grad(out, leaf, grad_out)
    return grad * (w != 0)


# (batch, in, out, groups, size, kernel, padding, dilation): batches below one block (one
# sample at a time), of whole blocks, and of whole blocks and samples after them;
# planes longer than one band of 256 padded pixels; 1x1, non-square and even kernels,
# dilation, groups, no padding.
CASES = [
    (1, 5, 7, 1, (9, 8), (3, 3), (1, 1), (1, 1)),
    (8, 16, 12, 1, (7, 7), (3, 3), (1, 1), (1, 1)),
    (11, 6, 9, 1, (20, 19), (3, 3), (1, 1), (1, 1)),
    (9, 12, 10, 1, (14, 14), (1, 1), (0, 0), (1, 1)),
    (9, 12, 10, 1, (7, 7), (1, 1), (0, 0), (1, 1)),  # lanes, the ninth sample's wide run a view
    (5, 8, 6, 2, (10, 12), (3, 2), (0, 1), (1, 1)),
    (4, 6, 9, 3, (11, 9), (5, 3), (2, 1), (1, 2)),
    (17, 4, 4, 4, (6, 6), (3, 3), (1, 1), (1, 1)),  # depthwise, two full blocks and one
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("density", [0.05, 0.2, 0.3, 0.48, 0.6])
def test_lanes_blocks_give_the_values_gradient(dtype, case, density):
    """0.05: the sparse kernels; 0.2, 0.3 and 0.48 about method.h's limits (0.22 one sample
    at a time, 0.25 with the lanes for a 1x1 kernel, 0.45 for others), whichever side the draw
    lands; 0.6: oneDNN's gradient."""
    batch, cin, cout, groups, size, kernel, padding, dilation = case
    gen = torch.Generator().manual_seed(sum(size) + batch)
    x = torch.randn(batch, cin, *size, dtype=dtype, generator=gen)
    w = random_weight((cout, cin // groups, *kernel), density, dtype, gen)
    kept = float((w != 0).float().mean())
    if density == 0.05:
        assert kept < SPARSE_KERNELS_BELOW
    if density == 0.6:
        assert kept >= 0.5
    out_shape = F.conv2d(x, w, None, 1, padding, dilation, groups).shape
    grad_out = torch.randn(out_shape, dtype=dtype, generator=gen)
    got = _grad_values(x, w, grad_out, (1, 1), padding, dilation, groups)
    expected = _expected(x, w, grad_out, (1, 1), padding, dilation, groups)
    tolerance = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                              atol=1e-10)
    torch.testing.assert_close(got, expected, **tolerance)


# (batch, in, out, size, kernel, stride, padding, dilation) of strided layers: kernels that
# read every phase of the stride (the lanes layout for the whole blocks: stride 2 and 3,
# unequal strides, a 7x7 stride-2 stem, no padding, odd sizes, batch 9 and 17 with samples
# after the blocks) and ones that do not (a 1x1 stride 2, a 3x3 dilated by the stride: one
# phase read; one sample at a time).
STRIDED_CASES = [
    (9, 12, 10, (9, 10), (3, 2), (2, 2), (1, 1), (1, 1)),
    (8, 6, 8, (13, 11), (3, 3), (3, 3), (1, 0), (1, 1)),
    (17, 5, 7, (12, 9), (3, 3), (1, 2), (1, 1), (1, 1)),
    (8, 3, 16, (30, 29), (7, 7), (2, 2), (3, 3), (1, 1)),
    (9, 8, 6, (11, 11), (3, 3), (2, 2), (0, 0), (1, 1)),
    (8, 10, 12, (14, 14), (1, 1), (2, 2), (0, 0), (1, 1)),
    (9, 6, 6, (13, 13), (3, 3), (2, 2), (2, 2), (2, 2)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", STRIDED_CASES, ids=[f"case{i}" for i in range(len(STRIDED_CASES))])
@pytest.mark.parametrize("density", [0.05, 0.2, 0.6])
def test_strided_layers_give_the_values_gradient(dtype, case, density):
    """0.05: the sparse kernels; 0.2: the lanes' kernel (up to 30 %), or oneDNN's gradient
    where one sample at a time would be slower (past 15 %); 0.6: oneDNN's gradient."""
    batch, cin, cout, size, kernel, stride, padding, dilation = case
    gen = torch.Generator().manual_seed(sum(size) + batch + sum(stride))
    x = torch.randn(batch, cin, *size, dtype=dtype, generator=gen)
    # Exactly round(density x taps) kept: the density sits on its side of the rule's limits.
    w = torch.randn(cout, cin, *kernel, dtype=dtype, generator=gen).flatten()
    w[torch.randperm(w.numel(), generator=gen)[round(density * w.numel()):]] = 0
    w = w.view(cout, cin, *kernel)
    assert int((w != 0).sum()) == round(density * w.numel())
    out_shape = F.conv2d(x, w, None, stride, padding, dilation).shape
    grad_out = torch.randn(out_shape, dtype=dtype, generator=gen)
    got = _grad_values(x, w, grad_out, stride, padding, dilation, 1)
    expected = _expected(x, w, grad_out, stride, padding, dilation, 1)
    tolerance = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                              atol=1e-10)
    torch.testing.assert_close(got, expected, **tolerance)


# (in, out, groups, size, stride): enough input channels that the lanes kernel visits them in
# several chunks of 256 KiB of input band (backward.cpp, grad_values_lanes_cpu; a 14x14 plane
# is about 8 KiB a channel, so 32 channels a chunk), with groups, at stride 2, and a plane
# longer than one band.
CHUNKED_CASES = [
    (200, 6, 1, (14, 14), 1),
    (240, 12, 3, (14, 14), 1),
    (180, 5, 1, (15, 14), 2),
    (70, 4, 1, (40, 33), 1),
]


@pytest.mark.parametrize("case", CHUNKED_CASES, ids=[f"case{i}" for i in range(len(CHUNKED_CASES))])
@pytest.mark.parametrize("shuffled", [False, True], ids=["packed", "unsorted_columns"])
def test_lanes_kernel_visits_input_channels_in_chunks(case, shuffled):
    """Each output channel's taps are cut by input-channel chunk along their sorted columns; a
    hand-made CSR with unsorted columns takes one chunk. Against autograd, and bitwise equal
    whether the columns were shuffled (a tap's sum does not depend on how taps are grouped)."""
    cin, cout, groups, size, stride = case
    gen = torch.Generator().manual_seed(cin + cout)
    x = torch.randn(8, cin, *size, generator=gen)
    w = random_weight((cout, cin // groups, 3, 3), 0.05, torch.float32, gen)
    out_shape = F.conv2d(x, w, None, stride, 1, 1, groups).shape
    grad_out = torch.randn(out_shape, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    order = torch.arange(col_idx.numel())
    if shuffled:
        for row in range(cout):
            lo, hi = row_ptr[row].item(), row_ptr[row + 1].item()
            order[lo:hi] = torch.randperm(hi - lo, generator=gen) + lo
    args = (list(w.shape), [stride] * 2, [1, 1], [1, 1], groups, [False, True, False])
    _, got, _ = BACKWARD(grad_out, x, row_ptr, col_idx[order], values[order], *args)
    _, packed, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values, *args)
    assert torch.equal(got, packed[order])
    expected = _expected(x, w, grad_out, (stride, stride), (1, 1), (1, 1), groups)
    torch.testing.assert_close(
        tsc.unpack_sparse_filter(row_ptr, col_idx[order], got, list(w.shape)), expected,
        rtol=1e-4, atol=1e-3)


def test_per_sample_sums_do_not_depend_on_how_taps_fall_into_tasks():
    """One sample at a time the taps of one output channel are summed a few at a time
    (dot_runs: up to 24 runs a call, 8 or 12 at once), in runs cut where a task ends: at 2 threads the tasks split the taps where 1
    thread does not, so a tap's sum must have the same bits in runs of any length. A plane of
    40x41 (runs of about 1,700 elements: whole vectors, half vectors and single elements
    after them) cuts the taps into tasks of a few each."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(1, 24, 40, 41, generator=gen)
    w = random_weight((30, 24, 3, 3), 0.05, torch.float32, gen)
    grad_out = torch.randn(1, 30, 40, 41, generator=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grad_values(x, w, grad_out, (1, 1), (1, 1), (1, 1), 1)
        torch.set_num_threads(2)
        two = _grad_values(x, w, grad_out, (1, 1), (1, 1), (1, 1), 1)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one, _expected(x, w, grad_out, (1, 1), (1, 1), (1, 1), 1),
                               rtol=1e-4, atol=1e-3)
    assert torch.equal(one, two)


# Both gradients in one call. Where the layer is 'same' at stride 1 (2 p = d (k - 1) both
# ways) and the input's gradient runs with the batch in the lanes, the values' gradient reads
# grad_output from the input gradient's lanes layout of it (backward.cpp, wide_lanes_in);
# elsewhere it lays grad_output out itself. (batch, in, out, groups, size, kernel, padding,
# dilation): one block; a plane longer than a band with a sample after the block; two blocks
# with groups and a non-square kernel; dilation; then two layers that are not 'same'.
BOTH_GRADIENTS_CASES = [
    (8, 16, 12, 1, (7, 7), (3, 3), (1, 1), (1, 1)),
    (11, 6, 9, 1, (20, 19), (3, 3), (1, 1), (1, 1)),
    (16, 8, 8, 2, (10, 12), (5, 3), (2, 1), (1, 1)),
    (8, 6, 6, 1, (12, 11), (3, 3), (2, 2), (2, 2)),
    (8, 8, 10, 1, (9, 9), (3, 3), (0, 0), (1, 1)),
    (9, 8, 8, 1, (9, 9), (3, 3), (2, 2), (1, 1)),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", BOTH_GRADIENTS_CASES,
                         ids=[f"case{i}" for i in range(len(BOTH_GRADIENTS_CASES))])
def test_both_gradients_in_one_call(dtype, case, channels_last):
    """Each gradient has the bits it has when asked for alone (with an NCHW grad_output), and
    autograd's values."""
    batch, cin, cout, groups, size, kernel, padding, dilation = case
    gen = torch.Generator().manual_seed(batch + cin + sum(size))
    x = torch.randn(batch, cin, *size, dtype=dtype, generator=gen)
    w = random_weight((cout, cin // groups, *kernel), 0.05, dtype, gen)
    out_shape = F.conv2d(x, w, None, 1, padding, dilation, groups).shape
    grad_out = torch.randn(out_shape, dtype=dtype, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)

    def backward(grad, mask):
        return BACKWARD(grad, x, row_ptr, col_idx, values, list(w.shape), [1, 1],
                        list(padding), list(dilation), groups, mask)

    both = grad_out.contiguous(memory_format=torch.channels_last) if channels_last else grad_out
    grad_input, grad_values, _ = backward(both, [True, True, False])
    assert torch.equal(grad_values, backward(grad_out, [False, True, False])[1])
    assert torch.equal(grad_input, backward(grad_out, [True, False, False])[0])
    x_leaf, w_leaf = x.clone().requires_grad_(), w.clone().requires_grad_()
    expected_input, expected_weight = torch.autograd.grad(
        F.conv2d(x_leaf, w_leaf, None, 1, padding, dilation, groups), (x_leaf, w_leaf),
        grad_out)
    tolerance = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                              atol=1e-10)
    torch.testing.assert_close(grad_input, expected_input, **tolerance)
    torch.testing.assert_close(
        tsc.unpack_sparse_filter(row_ptr, col_idx, grad_values, list(w.shape)),
        expected_weight * (w != 0), **tolerance)


def test_inputs_channels_last_and_repeated_calls_agree_bitwise():
    """The same call gives the same bits at 1 and 2 threads (no atomics, a fixed order), and
    a channels-last input or grad_output gives those bits too."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(10, 16, 12, 12, generator=gen)
    w = random_weight((24, 16, 3, 3), 0.05, torch.float32, gen)
    grad_out = torch.randn(10, 24, 12, 12, generator=gen)
    first = _grad_values(x, w, grad_out, (1, 1), (1, 1), (1, 1), 1)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            assert torch.equal(first, _grad_values(x, w, grad_out, (1, 1), (1, 1), (1, 1), 1))
            strided = _grad_values(x, w, grad_out[:, :, ::2, ::2].contiguous(), (2, 2),
                                   (1, 1), (1, 1), 1)
            assert count == 1 or torch.equal(strided, previous)
            previous = strided
    finally:
        torch.set_num_threads(threads)
    last = torch.channels_last
    assert torch.equal(first, _grad_values(x.contiguous(memory_format=last), w,
                                           grad_out.contiguous(memory_format=last), (1, 1),
                                           (1, 1), (1, 1), 1))


@pytest.mark.parametrize("stride", [(1, 1), (2, 1)])
def test_gradcheck_float64_sparse_kernels(stride):
    """A float64 block of 4 samples and one more, at a density the sparse kernels take."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(5, 8, 5, 6, dtype=torch.float64, generator=gen)
    w = random_weight((12, 4, 3, 2), 0.04, torch.float64, gen)
    assert 0 < int((w != 0).sum()) < STRIDED_SPARSE_KERNELS_BELOW * w.numel()
    assert gradcheck_packed(x, w, stride, (1, 0), (2, 1), 2)


def test_no_kept_tap_gives_zeros():
    x = torch.randn(9, 3, 6, 6, dtype=torch.float64)
    w = torch.zeros(4, 3, 3, 3, dtype=torch.float64)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    assert col_idx.numel() == 0
    _, grad_values, _ = BACKWARD(torch.randn(9, 4, 6, 6, dtype=torch.float64), x, row_ptr,
                                 col_idx, values, [4, 3, 3, 3], [1, 1], [1, 1], [1, 1], 1,
                                 [False, True, False])
    assert grad_values.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(8, 30, 20, (7, 7), 1), (8, 12, 16, (14, 14), 2),
                                   (9, 40, 9, (5, 6), 1)])
def test_taps_in_any_order_and_duplicates(dtype, shape):
    """A row's columns in any order, and a tap stored twice, give each stored tap the same
    bits as the sorted row's tap (the kernels take an output channel's taps a few at a time,
    in the row's order: dot_runs), and the sorted row's gradient is autograd's. Blocks of
    samples in the lanes, with groups, and a sample after a block."""
    batch, cin, cout, size, groups = shape
    gen = torch.Generator().manual_seed(cin + cout)
    x = torch.randn(batch, cin, *size, dtype=dtype, generator=gen)
    w = random_weight((cout, cin // groups, 3, 3), 0.06, dtype, gen)
    grad_out = torch.randn(batch, cout, *size, dtype=dtype, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)

    def grad(rp, ci, val):
        return BACKWARD(grad_out, x, rp, ci, val, list(w.shape), [1, 1], [1, 1], [1, 1],
                        groups, [False, True, False])[1]

    sorted_grad = grad(row_ptr, col_idx, values)
    expected = _expected(x, w, grad_out, (1, 1), (1, 1), (1, 1), groups)
    tolerance = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else {}
    torch.testing.assert_close(
        tsc.unpack_sparse_filter(row_ptr, col_idx, sorted_grad, list(w.shape)), expected,
        **tolerance)
    # Each row reversed and its first tap stored again at its end.
    rows, cols, vals, picks = [0], [], [], []
    for oc in range(cout):
        lo, hi = int(row_ptr[oc]), int(row_ptr[oc + 1])
        order = list(range(hi - 1, lo - 1, -1)) + ([lo] if hi > lo else [])
        picks += order
        cols.append(col_idx[order])
        vals.append(values[order])
        rows.append(rows[-1] + len(order))
    shuffled = grad(torch.tensor(rows), torch.cat(cols), torch.cat(vals))
    assert torch.equal(shuffled, sorted_grad[torch.tensor(picks)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [8, 13])
def test_channels_last_forward_layout_serves_the_values_gradient(dtype, batch):
    """Under autograd the lanes forward keeps its layout of the input for the values'
    gradient; from a channels-last input it is built from the pixels' channels, so it holds
    the same bits, and output and both gradients equal the NCHW input's bit for bit (and
    autograd's of F.conv2d). 13 samples: a block and a partly filled one."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 20, 9, 11, dtype=dtype, generator=gen)
    w = random_weight((12, 20, 3, 3), 0.05, dtype, gen)
    grad_out = torch.randn(batch, 12, 9, 11, dtype=dtype, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        leaf = x.contiguous(memory_format=memory_format).requires_grad_()
        kept = values.clone().requires_grad_()
        out = torch.ops.torch_sparse_conv.sparse_filter_conv2d(
            leaf, row_ptr, col_idx, kept, list(w.shape), None, [1, 1], [1, 1], [1, 1], 1,
            "direct")
        assert out.is_contiguous(memory_format=memory_format)
        grads = torch.autograd.grad(out, (leaf, kept), grad_out)
        results.append((out.detach(), *grads))
    for nchw, last in zip(*results):
        assert torch.equal(nchw, last)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                              atol=1e-10)
    torch.testing.assert_close(
        tsc.unpack_sparse_filter(row_ptr, col_idx, results[1][2], list(w.shape)),
        _expected(x, w, grad_out, (1, 1), (1, 1), (1, 1), 1), **tolerance)


# Planes of several bands (about 256 positions each, their number a multiple of 4), so that
# the sums are split by bands: 'same' layers (grad_output read from the input gradient's lanes
# layout), a stride-2 layer and one not 'same' (grad_output laid out here, band by band: each
# band's rows, the row it shares with the next band included), a 7x7 stride-2 stem of two
# blocks whose bands start mid-row, whole blocks with and without samples after them, and
# rows of an even phase_w (64-byte vectors on Intel, simd.cpp dot_runs_wide) with an odd
# number of output pixels (each row's last half vector).
# (batch, in, out, size, kernel, stride, padding, dilation)
BANDED_CASES = [
    (8, 12, 10, (24, 26), (3, 3), (1, 1), (1, 1), (1, 1)),
    (8, 6, 7, (18, 22), (3, 2), (1, 1), (1, 0), (1, 1)),
    (16, 6, 9, (33, 31), (3, 3), (1, 1), (2, 2), (2, 2)),
    (19, 5, 7, (40, 36), (3, 3), (2, 2), (1, 1), (1, 1)),
    (8, 7, 5, (30, 29), (3, 2), (1, 1), (0, 1), (1, 1)),
    (16, 3, 8, (64, 62), (7, 7), (2, 2), (3, 3), (1, 1)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", BANDED_CASES,
                         ids=[f"case{i}" for i in range(len(BANDED_CASES))])
def test_sums_split_by_bands_have_the_same_bits_at_any_thread_count(dtype, case):
    """At 1, 2, 3 and 5 threads the bands fall to the threads differently (at 5, one band
    a thread where there are 4; at 1 one thread takes them all); each band's sums are kept
    apart and added in band order, so both gradients have the same bits at every count, and
    match autograd."""
    batch, cin, cout, size, kernel, stride, padding, dilation = case
    gen = torch.Generator().manual_seed(sum(size) + batch)
    x = torch.randn(batch, cin, *size, dtype=dtype, generator=gen)
    w = random_weight((cout, cin, *kernel), 0.1, dtype, gen)
    out_shape = F.conv2d(x, w, None, stride, padding, dilation).shape
    grad_out = torch.randn(out_shape, dtype=dtype, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3, 5):
            torch.set_num_threads(count)
            results.append(BACKWARD(grad_out, x, row_ptr, col_idx, values, list(w.shape),
                                    list(stride), list(padding), list(dilation), 1,
                                    [True, True, False])[:2])
    finally:
        torch.set_num_threads(threads)
    for grad_input, grad_values in results[1:]:
        assert torch.equal(grad_input, results[0][0])
        assert torch.equal(grad_values, results[0][1])
    leaf, x_leaf = w.clone().requires_grad_(), x.clone().requires_grad_()
    out = F.conv2d(x_leaf, leaf, None, stride, padding, dilation)
    expected_input, expected_weight = torch.autograd.grad(out, (x_leaf, leaf), grad_out)
    tolerance = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else {}
    torch.testing.assert_close(results[0][0], expected_input, **tolerance)
    torch.testing.assert_close(
        tsc.unpack_sparse_filter(row_ptr, col_idx, results[0][1], list(w.shape)),
        expected_weight * (w != 0), **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,size", [(8, (16, 16)), (16, (12, 11)), (8, (14, 14)),
                                        (8, (7, 7)), (9, (20, 20))])
@pytest.mark.parametrize("grad_format", ["contiguous", "channels_last"])
def test_one_by_one_planes_read_in_place(dtype, batch, size, grad_format):
    """1x1 layers whose forward reads the input in place (planes of at least one tile: 128
    float32 / 64 float64 positions) take the per-sample kernel on the NCHW planes of the
    input and of grad_output themselves, at any batch (backward.cpp, grad_values_lanes_apply;
    grad_output's wide layout is then the tensor itself, or its NCHW copy where it is
    channels-last); 7x7 planes keep the lanes. Against autograd, and the same bits twice."""
    gen = torch.Generator().manual_seed(batch * 100 + size[0])
    x = torch.randn(batch, 24, *size, dtype=dtype, generator=gen)
    w = random_weight((40, 24, 1, 1), 0.1, dtype, gen)
    grad_out = torch.randn(batch, 40, *size, dtype=dtype, generator=gen)
    if grad_format == "channels_last":
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    got = _grad_values(x, w, grad_out, (1, 1), (0, 0), (1, 1), 1)
    again = _grad_values(x, w, grad_out, (1, 1), (0, 0), (1, 1), 1)
    assert torch.equal(got, again)
    expected = _expected(x, w, grad_out, (1, 1), (0, 0), (1, 1), 1)
    tolerance = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                              atol=1e-10)
    torch.testing.assert_close(got, expected, **tolerance)


# Strided 1x1 layers: the values' gradient is the stride-1 one on the picked pixels (every
# stride-th row and column inside the input) against grad_output's rows and columns that
# read them. Odd sizes (the last row and column picked), unequal strides, groups, padding
# (whose outer output rows read nothing), batches below, at and past a block, channels-last
# inputs of fewer channels than oneDNN's channel block (see test_no_strided_one_by_one_...).
# (batch, in, out, groups, size, stride, padding)
PICKED_CASES = [
    (16, 12, 10, 1, (14, 14), (2, 2), (0, 0)),
    (9, 8, 6, 2, (13, 11), (2, 3), (0, 0)),
    (3, 6, 8, 1, (15, 16), (3, 2), (0, 0)),
    (8, 6, 5, 1, (9, 10), (2, 2), (1, 2)),
    (4, 4, 4, 2, (7, 8), (3, 1), (3, 0)),
]


def _autograd_without_onednn(x, w, stride, padding, groups, grad_out):
    """autograd's input and weight gradients of F.conv2d, off oneDNN: its strided 1x1 weight
    gradient writes past its workspace for channels-last float32 input of fewer channels than
    its channel block (torch 2.11, oneDNN issue 6035), corrupting the heap of later tests."""
    leaf, x_leaf = w.clone().requires_grad_(), x.clone().requires_grad_()
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        out = F.conv2d(x_leaf, leaf, None, stride, padding, 1, groups)
        return torch.autograd.grad(out, (x_leaf, leaf), grad_out)
    finally:
        torch.backends.mkldnn.enabled = enabled


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", PICKED_CASES,
                         ids=[f"case{i}" for i in range(len(PICKED_CASES))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_one_by_one_reads_the_picked_pixels(dtype, case, channels_last):
    """The same bits as the stride-1 gradient of the picked pixels, and autograd's values;
    the input's gradient, asked for in the same call, is autograd's too (zero off the
    picked pixels)."""
    batch, cin, cout, groups, size, stride, padding = case
    gen = torch.Generator().manual_seed(batch + sum(size))
    x = torch.randn(batch, cin, *size, dtype=dtype, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = random_weight((cout, cin // groups, 1, 1), 0.1, dtype, gen)
    out_shape = F.conv2d(x, w, None, stride, padding, 1, groups).shape
    grad_out = torch.randn(out_shape, dtype=dtype, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    grad_input, grad_values, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values,
                                          list(w.shape), list(stride), list(padding), [1, 1],
                                          groups, [True, True, False])
    # The output rows and columns whose input pixel is inside the input, and those pixels.
    inside = [range(-(-p // s), min(o, (n - 1 + p) // s + 1))
              for o, n, s, p in zip(out_shape[2:], size, stride, padding)]
    picked = x[:, :, [r * stride[0] - padding[0] for r in inside[0]]][
        :, :, :, [c * stride[1] - padding[1] for c in inside[1]]].contiguous()
    read = grad_out[:, :, inside[0].start:inside[0].stop, inside[1].start:inside[1].stop]
    _, unit_values, _ = BACKWARD(read, picked, row_ptr, col_idx, values, list(w.shape),
                                 [1, 1], [0, 0], [1, 1], groups, [False, True, False])
    assert torch.equal(grad_values, unit_values)
    expected_input, expected_weight = _autograd_without_onednn(x, w, stride, padding, groups,
                                                               grad_out)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
    torch.testing.assert_close(
        tsc.unpack_sparse_filter(row_ptr, col_idx, grad_values, list(w.shape)),
        expected_weight * (w != 0), **tolerance)
    torch.testing.assert_close(grad_input, expected_input, **tolerance)


def test_strided_one_by_one_reading_only_padding():
    """Padding past the stride: no output pixel reads the input, every value's gradient is
    zero (and the input's)."""
    x = torch.randn(2, 3, 2, 2)
    w = torch.ones(4, 3, 1, 1)
    grad_out = torch.randn(F.conv2d(x, w, None, 5, 3).shape)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    grad_input, grad_values, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values, [4, 3, 1, 1],
                                          [5, 5], [3, 3], [1, 1], 1, [True, True, False])
    assert torch.equal(grad_values, torch.zeros_like(values))
    assert torch.equal(grad_input, torch.zeros_like(x))


@pytest.mark.parametrize("stride", [(3, 2), (3, 1), (2, 2)])
def test_no_strided_one_by_one_weight_gradient_of_onednn(stride, capfd):
    """A dense-enough strided 1x1 layer (whose values' gradient is oneDNN's) on channels-last
    float32 input of 6 channels: oneDNN runs the stride-1 weight gradient of the picked
    pixels, never the strided one that writes past its workspace (oneDNN issue 6035; torch
    2.11 reports "corrupted size vs. prev_size" in glibc)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 6, 15, 16, generator=gen).to(memory_format=torch.channels_last)
    w = torch.randn(8, 6, 1, 1, generator=gen)  # every tap kept: oneDNN's gradient
    grad_out = torch.randn(F.conv2d(x, w, None, stride).shape, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    capfd.readouterr()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        _, grad_values, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values, [8, 6, 1, 1],
                                     list(stride), [0, 0], [1, 1], 1, [False, True, False])
    log = capfd.readouterr().out
    weight_gradients = [line for line in log.splitlines() if "backward_weights" in line]
    assert weight_gradients, "oneDNN's weight gradient did not run (its verbose log is empty)"
    # The problem descriptor's strides: "sh<stride>dh...", "sw<stride>dw...".
    assert all("sh1dh" in line and "sw1dw" in line for line in weight_gradients), \
        weight_gradients
    expected = _autograd_without_onednn(x, w, stride, (0, 0), 1, grad_out)[1]
    torch.testing.assert_close(
        tsc.unpack_sparse_filter(row_ptr, col_idx, grad_values, [8, 6, 1, 1]), expected,
        rtol=1e-4, atol=1e-4)
