"""The transposed patterns the CPU backward keeps between calls (csrc/sparse_filter/
pattern_cache.h): found by row_ptr and col_idx compared bit for bit, so a pattern changed in
place (same tensors, same version counter) or another layer of the same shape and size is
never served a stale one; the values are gathered afresh on every call."""
import threading

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import (assert_same_digest_with_and_without_pattern_cache, pattern_cache_counts,
                     random_weight, run_script)

BACKWARD = torch.ops.torch_sparse_conv._sparse_filter_conv2d_backward


def _grads(x, row_ptr, col_idx, values, shape, stride, grad_out):
    grad_input, grad_values, _ = BACKWARD(grad_out, x, row_ptr, col_idx, values, list(shape),
                                          list(stride), [1, 1], [1, 1], 1,
                                          [True, True, False])
    return grad_input, grad_values


def _expected_grad_input(x, weight, stride, grad_out):
    leaf = x.clone().requires_grad_()
    out = F.conv2d(leaf, weight, None, stride, 1)
    (grad,) = torch.autograd.grad(out, leaf, grad_out)
    return grad


def _dense(row_ptr, col_idx, values, shape):
    return tsc.unpack_sparse_filter(row_ptr, col_idx, values, list(shape))


def _weight_with_taps(shape, taps, seed):
    """A float64 weight of normal values with exactly `taps` of its entries kept."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.zeros(shape).flatten()
    keep[torch.randperm(keep.numel(), generator=gen)[:taps]] = 1
    return torch.randn(shape, dtype=torch.float64, generator=gen) * keep.view(shape)


def _expected_grad_values(x, row_ptr, col_idx, values, shape, stride, grad_out):
    """autograd's weight gradient at the kept taps, as a dense tensor (zeros elsewhere)."""
    weight = _dense(row_ptr, col_idx, values, shape).requires_grad_()
    (grad,) = torch.autograd.grad(F.conv2d(x, weight, None, stride, 1), weight, grad_out)
    return grad * (_dense(row_ptr, col_idx, torch.ones_like(values), shape) != 0)


def _setup(stride, seed=0, density=0.1, batch=3):
    """A layer whose backward takes the transposed (stride 1) or per-phase (stride 2) path,
    which keeps a pattern (at higher densities stride 2 goes to oneDNN: see
    test_kept_and_rebuilt_patterns_give_the_same_bits, which checks a pattern is kept).
    Batch 3 takes the one-sample kernels; 8 fills float64's lanes (blocks of 4), whose values'
    gradient keeps its plan with the pattern."""
    gen = torch.Generator().manual_seed(seed)
    shape = (24, 16, 3, 3)
    weight = random_weight(shape, density, torch.float64, gen)
    x = torch.randn(batch, 16, 11, 11, dtype=torch.float64, generator=gen)
    out = F.conv2d(x, weight, None, stride, 1)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    return shape, weight, x, grad_out


def _keep(x, row_ptr, col_idx, values, shape, stride, grad_out):
    """Calls the backward with the cache emptied first, checks that the call kept a pattern,
    and calls it again so that it is kept: the test's next call can then be served."""
    tsc.empty_pattern_cache()
    _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)
    assert tsc.empty_pattern_cache() > 0, "this backward path keeps no pattern"
    return _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)


@pytest.mark.parametrize("batch", [3, 8])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_backward_finds_its_kept_pattern_and_plans(stride, batch):
    """Counted: the first backward builds the regrouped pattern (and at stride 1 the plans of
    its kernels: the input gradient's convolution, and at batch 8 the lanes values'
    gradient); later ones find the pattern and build no other. (A strided layer's per-phase
    convolutions build their plans for their call: their filters keep no room for them.)"""
    shape, weight, x, grad_out = _setup(stride, batch=batch)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    tsc.empty_pattern_cache()

    def call():
        return _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)
    first = pattern_cache_counts(call)
    assert first["patterns_found"] == 0 and first["patterns_built"] == 1, first
    if stride == (1, 1):
        assert first["plans_built"] == (2 if batch == 8 else 1), first
    for _ in range(2):
        later = pattern_cache_counts(call)
        assert later["patterns_found"] == 1 and later["patterns_built"] == 0, later
        if stride == (1, 1):
            assert later["plans_built"] == 0, later
            assert later["plans_found"] == first["plans_built"], later


@pytest.mark.parametrize("batch", [3, 8])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_pattern_written_in_place_is_not_served_stale(stride, batch):
    """The same row_ptr and col_idx tensors, rewritten through .data between two calls: a
    cache keyed on identity or version would serve the first pattern's transpose, or the
    plans kept with it (the tap offsets and chunk bounds of both gradients' kernels)."""
    shape, weight, x, grad_out = _setup(stride, batch=batch)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)

    def check(grads):
        torch.testing.assert_close(
            grads[0], _expected_grad_input(x, _dense(row_ptr, col_idx, values, shape), stride,
                                           grad_out))
        torch.testing.assert_close(
            _dense(row_ptr, col_idx, grads[1], shape),
            _expected_grad_values(x, row_ptr, col_idx, values, shape, stride, grad_out))

    kept = _keep(x, row_ptr, col_idx, values, shape, stride, grad_out)
    check(kept)
    first = kept[0]

    # Move every tap to another column of its row (same counts, same nnz, still sorted):
    # only col_idx changes. Then shift taps between two rows: row_ptr changes too.
    versions = (row_ptr._version, col_idx._version)
    columns = shape[1] * shape[2] * shape[3]
    for oc in range(shape[0]):
        lo, hi = int(row_ptr[oc]), int(row_ptr[oc + 1])
        col_idx.data[lo:hi] = torch.arange(columns - (hi - lo), columns)
    results = []
    counts = pattern_cache_counts(
        lambda: results.append(_grads(x, row_ptr, col_idx, values, shape, stride, grad_out)))
    assert counts["patterns_found"] == 0 and counts["patterns_built"] == 1, counts
    grads = results[0]
    check(grads)
    second = grads[0]
    assert not torch.equal(first, second)

    moved = int(row_ptr[1]) - 1  # row 0 gives its last tap to row 1
    assert moved >= int(row_ptr[0])
    row_ptr.data[1] = moved
    lo, hi = int(row_ptr[1]), int(row_ptr[2])
    col_idx.data[lo:hi] = torch.arange(hi - lo)
    assert (row_ptr._version, col_idx._version) == versions
    check(_grads(x, row_ptr, col_idx, values, shape, stride, grad_out))


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_values_are_read_afresh_on_every_call(stride):
    shape, weight, x, grad_out = _setup(stride)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    _keep(x, row_ptr, col_idx, values, shape, stride, grad_out)
    values.data.mul_(-3.0)
    got, _ = _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)
    torch.testing.assert_close(
        got, _expected_grad_input(x, _dense(row_ptr, col_idx, values, shape), stride, grad_out))


def test_layers_of_one_shape_and_size_get_their_own_patterns():
    """Two patterns of equal shape and nnz, called in turn: each finds its own entry."""
    shape, _, x, grad_out = _setup((1, 1))
    packed = [tsc.pack_sparse_filter(_weight_with_taps(shape, 400, seed)) for seed in (1, 2)]
    assert packed[0][1].numel() == packed[1][1].numel() == 400
    for _ in range(2):
        for row_ptr, col_idx, values in packed:
            got, _ = _grads(x, row_ptr, col_idx, values, shape, (1, 1), grad_out)
            expected = _expected_grad_input(x, _dense(row_ptr, col_idx, values, shape), (1, 1),
                                            grad_out)
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_kept_and_rebuilt_patterns_give_the_same_bits(stride):
    shape, weight, x, grad_out = _setup(stride)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    tsc.empty_pattern_cache()
    built = _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)
    assert tsc.empty_pattern_cache() > 0  # the call above kept its pattern
    assert tsc.empty_pattern_cache() == 0
    _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)  # builds and keeps it
    kept = _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)  # finds it
    for a, b in zip(built, kept):
        assert torch.equal(a, b)
    # Built at 1 thread (the counting sort then runs in one part), found at the default.
    tsc.empty_pattern_cache()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(built, _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)):
        assert torch.equal(a, b)


PLANS_SCRIPT = r"""
import hashlib, torch, torch_sparse_conv as tsc
gen = torch.Generator().manual_seed(5)
digest = hashlib.sha256()
# float32 and float64 blocks of lanes (8 and 4 samples, with samples after them), a plane of
# several bands (28x30), groups, one-sample batches (3).
for dtype, batch, groups, size in [(torch.float32, 8, 1, (14, 14)), (torch.float32, 9, 1, (28, 30)),
                                   (torch.float64, 8, 2, (12, 13)), (torch.float64, 3, 1, (11, 11))]:
    w = torch.randn(32, 24 // groups, 3, 3, dtype=dtype, generator=gen)
    w = w * (torch.rand(w.shape, generator=gen) < 0.1)
    x = torch.randn(batch, 24, *size, dtype=dtype, generator=gen)
    go = torch.randn(batch, 32, *size, dtype=dtype, generator=gen)
    rp, ci, v = tsc.pack_sparse_filter(w)
    # The same pattern on a plane of another size between (plans of another geometry, kept
    # with the same pattern), each called three times: builds, then finds.
    other = (size[0] - 3, size[1] + 2)
    for h, wd in (size, other, size):
        xs, gos = x[..., :h, :min(wd, size[1])], go[..., :h, :min(wd, size[1])]
        if wd > size[1]:
            xs = torch.cat([xs, xs[..., :wd - size[1]]], dim=3)
            gos = torch.cat([gos, gos[..., :wd - size[1]]], dim=3)
        xs, gos = xs.contiguous(), gos.contiguous()
        for call in range(3):
            gi, gv, _ = torch.ops.torch_sparse_conv._sparse_filter_conv2d_backward(
                gos, xs, rp, ci, v, list(w.shape), [1, 1], [1, 1], [1, 1], groups,
                [True, True, False])
            if call == 0:
                first = (gi, gv)
            assert torch.equal(gi, first[0]) and torch.equal(gv, first[1])
        digest.update(gi.numpy().tobytes())
        digest.update(gv.numpy().tobytes())
print(digest.hexdigest())
"""


def test_plans_kept_with_the_pattern_give_the_same_bits():
    """The plans kept with a pattern (the input gradient's tap offsets and chunk bounds, the
    values' gradient's) hold what the kernels would build afresh: the same bits on the calls
    that build them, on those that find them, and with no pattern (so no plan) kept at all."""
    assert_same_digest_with_and_without_pattern_cache(PLANS_SCRIPT)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unsorted_hand_made_csr_keeps_no_plan_and_gets_both_gradients_right(dtype):
    """A CSR whose rows list their columns out of order (valid, not what pack_sparse_filter
    emits): its transposed pattern's rows are unsorted too, so the input gradient's tap plan
    is not kept (sorted per call), and the values' gradient takes each row whole. Batch 8
    fills the lanes; called three times (built, then found), both gradients right and the
    same bits each time."""
    gen = torch.Generator().manual_seed(21)
    shape = (20, 12, 3, 3)
    weight = random_weight(shape, 0.15, dtype, gen)
    x = torch.randn(8, 12, 10, 9, dtype=dtype, generator=gen)
    grad_out = torch.randn(8, 20, 10, 9, dtype=dtype, generator=gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    order = []
    for oc in range(shape[0]):
        lo, hi = int(row_ptr[oc]), int(row_ptr[oc + 1])
        order += list(range(lo, hi))[::-1]  # each row's columns reversed
    col_idx, values = col_idx[order].contiguous(), values[order].contiguous()
    assert any(int(row_ptr[oc + 1]) - int(row_ptr[oc]) > 1 for oc in range(shape[0]))
    tsc.empty_pattern_cache()
    results = [_grads(x, row_ptr, col_idx, values, shape, (1, 1), grad_out) for _ in range(3)]
    for grads in results[1:]:
        assert torch.equal(grads[0], results[0][0]) and torch.equal(grads[1], results[0][1])
    tolerance = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else {}
    torch.testing.assert_close(results[0][0], _expected_grad_input(x, weight, (1, 1), grad_out),
                               **tolerance)
    torch.testing.assert_close(
        _dense(row_ptr, col_idx, results[0][1], shape),
        _expected_grad_values(x, row_ptr, col_idx, values, shape, (1, 1), grad_out), **tolerance)


def test_no_pattern_kept_when_the_limit_is_zero():
    run_script(
        "import torch, torch_sparse_conv as tsc, torch.nn.functional as F\n"
        "w = torch.randn(8, 4, 3, 3, dtype=torch.float64) * (torch.rand(8, 4, 3, 3) < 0.3)\n"
        "x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)\n"
        "rp, ci, v = tsc.pack_sparse_filter(w)\n"
        "for _ in range(2):\n"
        "    y = torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, rp, ci, v, [8, 4, 3, 3],"
        " None, [1, 1], [1, 1], [1, 1], 1, 'direct')\n"
        "    (g,) = torch.autograd.grad(y.sum(), x)\n"
        "    (e,) = torch.autograd.grad(F.conv2d(x, w, None, 1, 1).sum(), x)\n"
        "    torch.testing.assert_close(g, e)\n"
        "assert tsc.empty_pattern_cache() == 0\n"
        "print('ok')\n",
        TSC_PATTERN_CACHE_MB="0")


def test_threads_sharing_patterns_get_the_right_gradients():
    """Four threads, two layers of one shape and size: lookups, builds, keeps and releases
    race."""
    shape, _, x, grad_out = _setup((1, 1))
    layers = []
    for seed in (3, 4):
        w = _weight_with_taps(shape, 300, seed)
        layers.append((tsc.pack_sparse_filter(w), _expected_grad_input(x, w, (1, 1), grad_out)))
    errors = []

    def work(start):
        try:
            for i in range(20):
                (row_ptr, col_idx, values), expected = layers[(start + i) % 2]
                got, _ = _grads(x, row_ptr, col_idx, values, shape, (1, 1), grad_out)
                torch.testing.assert_close(got, expected)
                if i % 7 == start:
                    tsc.empty_pattern_cache()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_empty_pattern_is_kept_and_found(stride):
    """A filter with no kept taps (nnz 0): its empty pattern is kept and found like any other
    (the comparison of empty arrays reads nothing)."""
    shape, _, x, grad_out = _setup(stride)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(torch.zeros(shape, dtype=torch.float64))
    assert col_idx.numel() == 0
    for _ in range(2):
        grad_input, grad_values = _grads(x, row_ptr, col_idx, values, shape, stride, grad_out)
        assert torch.equal(grad_input, torch.zeros_like(x))
        assert grad_values.numel() == 0


def test_byte_limit_bounds_what_is_kept():
    """TSC_PATTERN_CACHE_MB=1: six layers of about 560 KB of patterns each (the forward's
    checked pattern and the backward's transposed one, with the room each reserves for its
    plans), called in turn three times, keep at most 1 MiB and get their gradients right; a
    layer whose pattern alone exceeds the limit is not kept."""
    run_script(
        "import torch, torch_sparse_conv as tsc, torch.nn.functional as F\n"
        "torch.manual_seed(0)\n"
        "def grad(w, x):\n"
        "    rp, ci, v = tsc.pack_sparse_filter(w)\n"
        "    y = torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, rp, ci, v, list(w.shape),"
        " None, [1, 1], [1, 1], [1, 1], 1, 'direct')\n"
        "    (g,) = torch.autograd.grad(y.sum(), x)\n"
        "    (e,) = torch.autograd.grad(F.conv2d(x, w, None, 1, 1).sum(), x)\n"
        "    torch.testing.assert_close(g, e)\n"
        "x = torch.randn(2, 64, 6, 6, dtype=torch.float64, requires_grad=True)\n"
        "layers = [torch.randn(64, 64, 3, 3, dtype=torch.float64)"
        " * (torch.rand(64, 64, 3, 3) < 0.2) for _ in range(6)]\n"
        "for _ in range(3):\n"
        "    for w in layers:\n"
        "        grad(w, x)\n"
        "kept = tsc.empty_pattern_cache()\n"
        "assert 0 < kept <= 1 << 20, kept\n"
        "big = torch.randn(256, 64, 3, 3, dtype=torch.float64)"
        " * (torch.rand(256, 64, 3, 3) < 0.5)\n"
        "grad(big, x)\n"
        "assert tsc.empty_pattern_cache() == 0\n"
        "print('ok')\n",
        TSC_PATTERN_CACHE_MB="1")
