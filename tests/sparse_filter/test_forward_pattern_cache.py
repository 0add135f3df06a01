"""The forward's own pattern, kept between calls (checked_pattern, csrc/sparse_filter/pattern.h):
checked once, then found by row_ptr and col_idx compared bit for bit, with the plans of the
CPU 'direct' kernels (chunk bounds, tap offsets) kept beside it. A pattern rewritten in place
(same tensors, same version counter) is checked and planned afresh, never served stale, and an
invalid one is rejected even after a valid one was kept. What a call found or built is counted
(testing.pattern_cache_counts), so these tests also fail if nothing were ever served."""
import functools

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import (assert_same_digest_with_and_without_pattern_cache, pattern_cache_counts,
                     random_weight, run_script)

CONV = torch.ops.torch_sparse_conv.sparse_filter_conv2d

# (batch, kernel): batch 1 and 3 take the one-sample kernel, 8 the lanes (float64 blocks of
# 4 samples, float32 of 8); a 1x1 kernel on a 12x12 plane the pointwise one.
KERNEL_PATHS = [(1, 3), (3, 3), (8, 3), (8, 1), (1, 1)]


def _layer(batch, kernel, dtype=torch.float64, seed=0, groups=1):
    gen = torch.Generator().manual_seed(seed)
    shape = (24, 16 // groups, kernel, kernel)
    weight = random_weight(shape, 0.2, dtype, gen)
    x = torch.randn(batch, 16, 12, 12, dtype=dtype, generator=gen)
    return shape, weight, x


def _groups(x, shape):
    return x.shape[1] // shape[1]


def _forward(x, row_ptr, col_idx, values, shape, method="direct", stride=1):
    pad = shape[2] // 2
    return CONV(x, row_ptr, col_idx, values, list(shape), None, [stride, stride], [pad, pad],
                [1, 1], _groups(x, shape), method)


def _expected(x, row_ptr, col_idx, values, shape, stride=1):
    weight = tsc.unpack_sparse_filter(row_ptr, col_idx, values, list(shape))
    return F.conv2d(x, weight, None, stride, shape[2] // 2, 1, _groups(x, shape))


@pytest.mark.parametrize("in_channels,high", [(16, 1 << 16), (16, -(1 << 16)),
                                              (4000, 1 << 32), (4000, -(1 << 32))])
def test_a_column_changed_only_in_its_high_bits_is_not_served_stale(in_channels, high):
    """The kept pattern is compared with the caller's col_idx through a narrow copy (int16
    where the columns fit, here 16 x 9; int32 for 4000 x 9): a column that equals the copy
    once truncated (c + 2^16, c - 2^16 against int16; c +- 2^32 against int32) is out of
    range, and must be rejected as such, not served the pattern kept before."""
    gen = torch.Generator().manual_seed(5)
    shape = (6, in_channels, 3, 3)
    weight = random_weight(shape, 0.01 if in_channels > 16 else 0.2, torch.float64, gen)
    x = torch.randn(1, in_channels, 5, 5, dtype=torch.float64, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    tsc.empty_pattern_cache()
    for _ in range(2):  # kept, then found
        expected = _forward(x, row_ptr, col_idx, values, shape)
    found = pattern_cache_counts(lambda: _forward(x, row_ptr, col_idx, values, shape))
    assert found["patterns_found"] >= 1, found
    torch.testing.assert_close(expected, _expected(x, row_ptr, col_idx, values, shape))
    last = col_idx.numel() - 1
    col_idx.data[last] += high
    with pytest.raises(RuntimeError, match="col_idx"):
        _forward(x, row_ptr, col_idx, values, shape)
    col_idx.data[last] -= high
    assert torch.equal(_forward(x, row_ptr, col_idx, values, shape), expected)


@pytest.mark.parametrize("batch,kernel", KERNEL_PATHS)
def test_forward_keeps_its_pattern_and_finds_it(batch, kernel):
    shape, weight, x = _layer(batch, kernel)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    tsc.empty_pattern_cache()
    first = _forward(x, row_ptr, col_idx, values, shape)
    assert tsc.empty_pattern_cache() > 0, "the forward kept no pattern"
    _forward(x, row_ptr, col_idx, values, shape)  # keeps it again
    for _ in range(2):  # finds it (and its plans)
        assert torch.equal(_forward(x, row_ptr, col_idx, values, shape), first)
    torch.testing.assert_close(first, _expected(x, row_ptr, col_idx, values, shape))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,kernel", KERNEL_PATHS)
def test_forward_finds_its_kept_pattern_and_plans(batch, kernel, dtype):
    """Counted, not inferred from the bits (which a cache that never served anything would
    give too): the first call builds the pattern and its kernel's plan, later calls find both
    and build neither. A channels-last input finds the pattern too; where it takes another
    kernel (the lanes' channels-last tiles instead of the pointwise NCHW one) that kernel's plan
    is built once, then found."""
    shape, weight, x = _layer(batch, kernel, dtype)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    tsc.empty_pattern_cache()
    first = pattern_cache_counts(lambda: _forward(x, row_ptr, col_idx, values, shape))
    assert first == {"patterns_found": 0, "patterns_built": 1, "plans_found": 0,
                     "plans_built": 1}
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm = x.contiguous(memory_format=memory_format)
        for call in range(2):
            counts = pattern_cache_counts(lambda: _forward(xm, row_ptr, col_idx, values, shape))
            assert counts["patterns_found"] == 1 and counts["patterns_built"] == 0, counts
            if call == 1 or memory_format == torch.contiguous_format:
                assert counts["plans_built"] == 0 and counts["plans_found"] >= 1, counts


# Besides KERNEL_PATHS at stride 1 in NCHW: channels-last input (the lanes' channels-last
# tiles, the one-sample kernel on a converted copy) and stride 2 (the strided 1x1 picks its
# pixels, the 3x3 reads a polyphase layout).
STALE_CASES = ([(batch, kernel, 1, False) for batch, kernel in KERNEL_PATHS]
               + [(8, 3, 1, True), (1, 3, 1, True), (8, 1, 2, False), (1, 1, 2, False),
                  (8, 3, 2, False), (8, 1, 2, True)])


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("batch,kernel,stride,channels_last", STALE_CASES)
def test_forward_pattern_written_in_place_is_not_served_stale(batch, kernel, stride,
                                                              channels_last, groups):
    """The same row_ptr and col_idx tensors rewritten through .data between calls: first
    every tap moved to other columns of its row (col_idx only), then a tap moved from one row
    to the next (row_ptr too). A cache keyed on identity or version would serve the first
    pattern's chunk bounds and tap offsets."""
    shape, weight, x = _layer(batch, kernel, groups=groups)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    forward = functools.partial(_forward, stride=stride)
    expected = functools.partial(_expected, stride=stride)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    versions = (row_ptr._version, col_idx._version)
    tsc.empty_pattern_cache()  # (an earlier test may have kept the rewritten pattern)
    outputs = []
    for _ in range(2):  # keeps it, then finds it
        outputs.append(forward(x, row_ptr, col_idx, values, shape))
    torch.testing.assert_close(outputs[-1], expected(x, row_ptr, col_idx, values, shape))

    columns = shape[1] * shape[2] * shape[3]
    for oc in range(shape[0]):
        lo, hi = int(row_ptr[oc]), int(row_ptr[oc + 1])
        col_idx.data[lo:hi] = torch.arange(columns - (hi - lo), columns)
    results = []
    counts = pattern_cache_counts(
        lambda: results.append(forward(x, row_ptr, col_idx, values, shape)))
    assert counts["patterns_found"] == 0 and counts["patterns_built"] == 1, counts
    assert counts["plans_found"] == 0 and counts["plans_built"] >= 1, counts
    moved = results[0]
    torch.testing.assert_close(moved, expected(x, row_ptr, col_idx, values, shape))
    assert not torch.equal(moved, outputs[-1])

    # The first row with taps gives its last one to the next row.
    oc = next(r for r in range(shape[0] - 1) if int(row_ptr[r + 1]) > int(row_ptr[r]))
    row_ptr.data[oc + 1] -= 1
    lo, hi = int(row_ptr[oc + 1]), int(row_ptr[oc + 2])
    assert hi - lo <= columns
    col_idx.data[lo:hi] = torch.arange(hi - lo)
    assert (row_ptr._version, col_idx._version) == versions
    results = []
    counts = pattern_cache_counts(
        lambda: results.append(forward(x, row_ptr, col_idx, values, shape)))
    assert counts["patterns_found"] == 0 and counts["patterns_built"] == 1, counts
    torch.testing.assert_close(results[0], expected(x, row_ptr, col_idx, values, shape))


@pytest.mark.parametrize("batch,kernel", [(1, 3), (8, 3)])
def test_pattern_made_invalid_in_place_is_rejected_after_a_kept_one(batch, kernel):
    """A valid pattern is kept; then a column index, or a row pointer, is written out of range
    through .data: the next call must not find the kept entry, and its check names the
    argument (an out-of-bounds read otherwise)."""
    shape, weight, x = _layer(batch, kernel)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    for _ in range(2):
        _forward(x, row_ptr, col_idx, values, shape)
    columns = shape[1] * shape[2] * shape[3]
    saved = int(col_idx[5])
    col_idx.data[5] = columns + 1000
    with pytest.raises(RuntimeError, match=r"col_idx\[5\] = "):
        _forward(x, row_ptr, col_idx, values, shape)
    col_idx.data[5] = saved
    _forward(x, row_ptr, col_idx, values, shape)  # valid again: found
    row_ptr.data[3] = int(row_ptr[4]) + 1  # no longer non-decreasing
    with pytest.raises(RuntimeError, match="row_ptr"):
        _forward(x, row_ptr, col_idx, values, shape)


@pytest.mark.parametrize("method", ["dense", "unfold", "auto"])
def test_reduced_precision_pattern_written_in_place_is_not_served_stale(method):
    """bfloat16 through the methods that compute on float32 copies (a nested call of the
    operator on the kept pattern's tensors): a pattern rewritten in place after it was kept
    gives the new pattern's convolution."""
    shape, weight, x = _layer(8, 3)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    x, values = x.bfloat16(), values.bfloat16()

    def expected():
        return _expected(x.double(), row_ptr, col_idx, values.double(), shape)

    for _ in range(2):
        got = _forward(x, row_ptr, col_idx, values, shape, method)
    torch.testing.assert_close(got.double(), expected(), rtol=2e-2, atol=5e-2)
    columns = shape[1] * shape[2] * shape[3]
    for oc in range(shape[0]):
        lo, hi = int(row_ptr[oc]), int(row_ptr[oc + 1])
        col_idx.data[lo:hi] = torch.arange(columns - (hi - lo), columns)
    got = _forward(x, row_ptr, col_idx, values, shape, method)
    torch.testing.assert_close(got.double(), expected(), rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("batch", [1, 8])
def test_unsorted_hand_made_csr_through_the_forward(batch):
    """Rows listing their columns out of order (valid; pack_sparse_filter never emits them):
    the kept pattern keeps no plan (its taps are sorted per call), and every call gives the
    same bits, right."""
    shape, weight, x = _layer(batch, 3, seed=4)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    order = []
    for oc in range(shape[0]):
        order += list(range(int(row_ptr[oc]), int(row_ptr[oc + 1])))[::-1]
    col_idx, values = col_idx[order].contiguous(), values[order].contiguous()
    outputs = [_forward(x, row_ptr, col_idx, values, shape) for _ in range(3)]
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])
    torch.testing.assert_close(outputs[0], _expected(x, row_ptr, col_idx, values, shape))


def test_values_are_read_afresh_by_a_kept_pattern():
    shape, weight, x = _layer(8, 3)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    for _ in range(2):
        _forward(x, row_ptr, col_idx, values, shape)
    values.data.mul_(-3.0)
    torch.testing.assert_close(_forward(x, row_ptr, col_idx, values, shape),
                               _expected(x, row_ptr, col_idx, values, shape))


def test_layers_of_one_shape_and_size_get_their_own_patterns():
    """Two patterns of equal shape and nnz, called in turn: each finds its own entry."""
    shape, _, x = _layer(8, 3)
    layers = []
    for seed in (1, 2):
        gen = torch.Generator().manual_seed(seed)
        keep = torch.zeros(shape).flatten()
        keep[torch.randperm(keep.numel(), generator=gen)[:400]] = 1
        weight = torch.randn(shape, dtype=torch.float64, generator=gen) * keep.view(shape)
        layers.append(tsc.pack_sparse_filter(weight))
    assert layers[0][1].numel() == layers[1][1].numel() == 400
    for _ in range(3):
        for row_ptr, col_idx, values in layers:
            torch.testing.assert_close(_forward(x, row_ptr, col_idx, values, shape),
                                       _expected(x, row_ptr, col_idx, values, shape))


FORWARD_SCRIPT = r"""
import hashlib, torch, torch_sparse_conv as tsc
gen = torch.Generator().manual_seed(7)
digest = hashlib.sha256()
# One-sample (1, 3), lanes (8, 9: a block and samples after it), pointwise (1x1), groups;
# float32 and float64; each pattern called three times (builds, then finds), and once more on
# a plane of another size (plans of another geometry kept with the same pattern).
for dtype, batch, kernel, groups in [(torch.float32, 1, 3, 1), (torch.float32, 8, 3, 1),
                                     (torch.float32, 9, 3, 2), (torch.float64, 3, 3, 1),
                                     (torch.float64, 8, 1, 1), (torch.float32, 1, 1, 2)]:
    w = torch.randn(32, 24 // groups, kernel, kernel, dtype=dtype, generator=gen)
    w = w * (torch.rand(w.shape, generator=gen) < 0.1)
    rp, ci, v = tsc.pack_sparse_filter(w)
    for size in [(14, 14), (9, 17), (14, 14)]:
        x = torch.randn(batch, 24, *size, dtype=dtype, generator=gen)
        for call in range(3):
            y = torch.ops.torch_sparse_conv.sparse_filter_conv2d(
                x, rp, ci, v, list(w.shape), None, [1, 1], [kernel // 2] * 2, [1, 1], groups,
                'direct')
            if call == 0:
                first = y
            assert torch.equal(y, first)
        digest.update(y.numpy().tobytes())
print(digest.hexdigest())
"""


def test_kept_and_rebuilt_forward_plans_give_the_same_bits():
    """The plans kept with the forward's pattern hold what the kernels would build afresh:
    the same bits with the cache on (built, then found) and off (TSC_PATTERN_CACHE_MB=0:
    nothing kept, every plan built per call)."""
    assert_same_digest_with_and_without_pattern_cache(FORWARD_SCRIPT)


def test_pattern_too_large_to_keep_is_checked_and_used_for_its_call():
    """TSC_PATTERN_CACHE_MB=1: a layer whose pattern and plans' room exceed the limit keeps
    nothing, and its forward is right on every call; a small one is kept."""
    run_script(
        "import torch, torch_sparse_conv as tsc, torch.nn.functional as F\n"
        "torch.manual_seed(0)\n"
        "def forward(w, x):\n"
        "    rp, ci, v = tsc.pack_sparse_filter(w)\n"
        "    y = torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, rp, ci, v, list(w.shape),"
        " None, [1, 1], [1, 1], [1, 1], 1, 'direct')\n"
        "    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1))\n"
        "x = torch.randn(1, 64, 6, 6, dtype=torch.float64)\n"
        "big = torch.randn(256, 64, 3, 3, dtype=torch.float64)"
        " * (torch.rand(256, 64, 3, 3) < 0.5)\n"
        "for _ in range(2):\n"
        "    forward(big, x)\n"
        "assert tsc.empty_pattern_cache() == 0\n"
        "small = torch.randn(16, 64, 3, 3, dtype=torch.float64)"
        " * (torch.rand(16, 64, 3, 3) < 0.2)\n"
        "forward(small, x)\n"
        "assert tsc.empty_pattern_cache() > 0\n"
        "print('ok')\n",
        TSC_PATTERN_CACHE_MB="1")


def test_room_is_made_only_by_dropping_patterns_no_longer_found():
    """TSC_PATTERN_CACHE_MB=1 holds one of two layers' patterns (about 0.75 MB each with their
    plans' room). While the first is found call after call, the second is built for each of
    its calls and not kept (evicting a pattern in use would make both miss every time); once
    the first has gone unfound for more than 2 x 1024 lookups (twice the cache's 1024 entries,
    kMaxEntries in pattern_cache.cpp; here: calls of a third, small layer), the second's next
    call drops it and is kept, and the first is built again."""
    run_script(
        "import torch, torch_sparse_conv as tsc, torch.nn.functional as F\n"
        "from torch_sparse_conv import _C\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(1, 64, 4, 4, dtype=torch.float64)\n"
        "def layer(out_channels, density):\n"
        "    w = torch.randn(out_channels, 64, 3, 3, dtype=torch.float64)"
        " * (torch.rand(out_channels, 64, 3, 3) < density)\n"
        "    rp, ci, v = tsc.pack_sparse_filter(w)\n"
        "    def forward():\n"
        "        y = torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, rp, ci, v,"
        " list(w.shape), None, [1, 1], [1, 1], [1, 1], 1, 'direct')\n"
        "        torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1))\n"
        "    return forward\n"
        "def counts(call):\n"
        "    before = _C._pattern_cache_counters()\n"
        "    call()\n"
        "    after = _C._pattern_cache_counters()\n"
        "    return after['patterns_found'] - before['patterns_found']\n"
        "first, second, small = layer(256, 0.12), layer(256, 0.12), layer(4, 0.2)\n"
        "assert [counts(first) for _ in range(3)] == [0, 1, 1]\n"
        "assert [counts(second) for _ in range(3)] == [0, 0, 0]\n"
        "for _ in range(3):\n"
        "    first()\n"
        "    assert counts(second) == 0\n"
        "for _ in range(2100):\n"
        "    small()\n"
        "assert [counts(second) for _ in range(3)] == [0, 1, 1]\n"
        "assert counts(first) == 0\n"
        "print('ok')\n",
        TSC_PATTERN_CACHE_MB="1")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_layer_called_at_two_batch_sizes_keeps_both_plans(dtype):
    """Batch 1 and batch 8 lay the input out in two geometries (the one-sample layout or
    strips of the sample, and blocks of samples in the lanes), so the forward plans its taps
    twice. Both plans are kept with the pattern: alternating the two batch sizes finds both,
    call after call, and builds neither again. (A layer of 100k taps: the room the entry
    reserves for its plans is mostly their tap offsets, 8 bytes a tap each.)"""
    gen = torch.Generator().manual_seed(3)
    shape = (160, 160, 3, 3)
    weight = random_weight(shape, 0.5, dtype, gen)
    x8 = torch.randn(8, 160, 6, 6, dtype=dtype, generator=gen)
    x1 = x8[:1].clone()
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    tsc.empty_pattern_cache()
    for x in (x1, x8):  # each batch size's plan built once
        counts = pattern_cache_counts(lambda: _forward(x, row_ptr, col_idx, values, shape))
        assert counts["plans_built"] == 1, counts
    for _ in range(3):
        for x in (x1, x8):
            result = []
            counts = pattern_cache_counts(
                lambda: result.append(_forward(x, row_ptr, col_idx, values, shape)))
            assert counts["plans_built"] == 0 and counts["plans_found"] == 1, counts
            # (float32 sums of 720 taps: rounding differs from oneDNN's by ~1e-4)
            tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
            torch.testing.assert_close(result[0], _expected(x, row_ptr, col_idx, values, shape),
                                       **tolerance)
