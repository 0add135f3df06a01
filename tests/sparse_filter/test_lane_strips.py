"""A single sample in the CPU 'direct' forward's vector lanes as horizontal strips
(csrc/sparse_filter/cpu/direct_lanes.cpp, direct_lanes_strip_rows): batch 1, float32 or
float64, strided or of a large output plane. Lane s holds output rows [s * rows, (s + 1) *
rows) and the input rows they read, so that lanes whose input rows are padding (above the
first strip, below the last) get zeros of their own, and lanes whose output rows lie past the
output's last are not written.

Every case first asserts that it takes the strips (the test hook _C._direct_strip_rows), so a
rule that stopped taking them would fail here rather than pass on the one-sample layout; then
compares against F.conv2d (float64: a float64 reference, so a tolerance of 1e-10)."""
import random

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc
from torch_sparse_conv import _C

from testing import random_weight, run_script

CONV = torch.ops.torch_sparse_conv.sparse_filter_conv2d


def _pair(value):
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


def _strip_rows(x, packed, shape, stride, padding, dilation, groups):
    return _C._direct_strip_rows(x, *packed, list(shape), _pair(stride), _pair(padding),
                                 _pair(dilation), groups)


def _run(x, weight, bias, stride, padding, dilation, groups, residual=None, relu=False):
    packed = tsc.pack_sparse_filter(weight)
    out = CONV(x, *packed, list(weight.shape), bias, _pair(stride), _pair(padding),
               _pair(dilation), groups, "direct", residual, relu)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    if residual is not None:
        expected = expected + residual
    if relu:
        expected = expected.relu()
    return packed, out, expected


def _tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                          atol=1e-10)


# (in_channels, out_channels, size, kernel, stride, padding, dilation, groups): strided
# layers of several output heights (14, 15 and 16 rows: the last lane empty, half full,
# full), a kernel whose padding reaches past the first two lanes' rows (11x11, padding 5,
# lanes 4 input rows apart), asymmetric strides, dilation, groups; stride-1 planes of at
# least 84x84 pixels.
CASES = [
    (8, 8, 28, 3, 2, 1, 1, 1),
    (8, 8, 29, 3, 2, 1, 1, 1),
    (8, 8, 32, 3, 2, 1, 1, 1),
    (5, 7, 32, 11, 2, 5, 1, 1),
    (6, 6, (30, 40), (3, 5), (2, 1), (1, 2), 1, 1),
    (6, 6, (40, 33), 3, (1, 2), 1, 1, 1),
    (4, 6, 45, 3, 2, 2, 2, 2),
    (3, 8, 64, 7, 2, 3, 1, 1),
    (4, 4, (90, 96), 3, 1, 1, 1, 1),
    (2, 3, (86, 100), 5, 1, 0, 2, 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_strips_match_conv2d(case, dtype):
    cin, cout, size, kernel, stride, padding, dilation, groups = case
    rng = random.Random(repr(case))
    gen = torch.Generator().manual_seed(rng.randrange(1 << 30))
    h, w = _pair(size)
    kh, kw = _pair(kernel)
    x = torch.randn(1, cin, h, w, dtype=dtype, generator=gen)
    weight = random_weight((cout, cin // groups, kh, kw), 0.3, dtype, gen)
    bias = torch.randn(cout, dtype=dtype, generator=gen)
    packed, out, expected = _run(x, weight, bias, stride, padding, dilation, groups)
    assert _strip_rows(x, packed, weight.shape, stride, padding, dilation, groups) >= 2
    torch.testing.assert_close(out, expected, **_tolerance(dtype))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strips_apply_the_epilogue(dtype, relu):
    """The residual is read and the output written at each lane's own rows."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 8, 30, 30, dtype=dtype, generator=gen)
    weight = random_weight((12, 8, 3, 3), 0.2, dtype, gen)
    residual = torch.randn(1, 12, 15, 15, dtype=dtype, generator=gen)
    packed, out, expected = _run(x, weight, None, 2, 1, 1, 1, residual, relu)
    assert _strip_rows(x, packed, weight.shape, 2, 1, 1, 1) > 0
    torch.testing.assert_close(out, expected, **_tolerance(dtype))


def test_strips_from_an_unbatched_or_channels_last_input():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(1, 16, 28, 28, dtype=torch.float64, generator=gen)
    weight = random_weight((16, 16, 3, 3), 0.2, torch.float64, gen)
    packed, expected_out, expected = _run(x, weight, None, 2, 1, 1, 1)
    torch.testing.assert_close(expected_out, expected, rtol=1e-10, atol=1e-10)
    unbatched = tsc.sparse_conv2d(x[0], weight, None, 2, 1, method="direct")
    assert _strip_rows(x[0], packed, weight.shape, 2, 1, 1, 1) > 0
    torch.testing.assert_close(unbatched, expected[0], rtol=1e-10, atol=1e-10)
    channels_last = CONV(x.contiguous(memory_format=torch.channels_last), *packed,
                         list(weight.shape), None, [2, 2], [1, 1], [1, 1], 1, "direct")
    torch.testing.assert_close(channels_last, expected, rtol=1e-10, atol=1e-10)


def test_where_strips_are_not_taken():
    """Batches of more than one sample, float16, strips of one row (7x7 outputs), planes
    whose strips would compute more than an eighth of their rows past the output (9 rows:
    16 computed), stride-1 planes under 84x84: the other layouts, still correct."""
    gen = torch.Generator().manual_seed(9)
    weight = random_weight((8, 8, 3, 3), 0.3, torch.float32, gen)
    packed = tsc.pack_sparse_filter(weight)
    for shape, stride, dtype in [((2, 8, 28, 28), 2, torch.float32),
                                 ((1, 8, 28, 28), 2, torch.float16),
                                 ((1, 8, 14, 14), 2, torch.float32),
                                 ((1, 8, 18, 18), 2, torch.float32),
                                 ((1, 8, 56, 56), 1, torch.float32)]:
        x = torch.randn(shape, generator=gen).to(dtype)
        w = weight.to(dtype)
        assert _strip_rows(x, (packed[0], packed[1], packed[2].to(dtype)), w.shape, stride,
                           1, 1, 1) == 0, (shape, stride, dtype)
        out = CONV(x, packed[0], packed[1], packed[2].to(dtype), list(w.shape), None,
                   [stride, stride], [1, 1], [1, 1], 1, "direct")
        expected = F.conv2d(x.float(), weight, None, stride, 1).to(dtype)
        tolerance = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else {}
        torch.testing.assert_close(out, expected, **tolerance)


def test_strips_at_any_thread_count():
    """Every thread lays its own rows out (its window): 1, 2 and 3 threads, a plane of
    several row tiles a strip (112 -> 56 rows at stride 2: float64's 4 lanes, 14 rows a
    strip)."""
    run_script(
        "import torch, torch.nn.functional as F, torch_sparse_conv as tsc\n"
        "from torch_sparse_conv import _C\n"
        "gen = torch.Generator().manual_seed(10)\n"
        "x = torch.randn(1, 16, 112, 112, dtype=torch.float64, generator=gen)\n"
        "w = torch.randn(24, 16, 3, 3, dtype=torch.float64, generator=gen)\n"
        "w = w * (torch.rand(w.shape, generator=gen) < 0.2)\n"
        "packed = tsc.pack_sparse_filter(w)\n"
        "assert _C._direct_strip_rows(x, *packed, list(w.shape), [2, 2], [1, 1], [1, 1], 1)"
        " == 14\n"
        "expected = F.conv2d(x, w, None, 2, 1)\n"
        "for threads in (1, 2, 3):\n"
        "    torch.set_num_threads(threads)\n"
        "    out = torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, *packed, list(w.shape),"
        " None, [2, 2], [1, 1], [1, 1], 1, 'direct')\n"
        "    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)\n"
        "print('ok')\n")


def test_strips_gradcheck_float64():
    """The gradients of a strided batch-1 layer whose forward takes the strips."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(1, 2, 30, 30, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = random_weight((3, 2, 3, 3), 0.5, torch.float64, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    values.requires_grad_()
    assert _strip_rows(x, (row_ptr, col_idx, values), weight.shape, 2, 1, 1, 1) > 0

    def conv(inp, vals):
        return CONV(inp, row_ptr, col_idx, vals, list(weight.shape), None, [2, 2], [1, 1],
                    [1, 1], 1, "direct")
    assert torch.autograd.gradcheck(conv, (x, values))
