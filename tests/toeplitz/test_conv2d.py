"""toeplitz_conv2d against scipy.signal.convolve2d and the sparse_convolution package."""

import numpy as np
import pytest
import scipy.signal
import scipy.sparse
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv.compat import Toeplitz_convolution2d

from subprocess_helpers import run_script

MODES = ["full", "same", "valid"]
METHODS = ["auto", "direct", "precomputed"]
OPS = torch.ops.torch_sparse_conv


def scipy_reference(images, kernel, mode):
    return np.stack([scipy.signal.convolve2d(im, kernel, mode).reshape(-1) for im in images])


def as_csr(images):
    return torch.tensor(images.reshape(images.shape[0], -1)).to_sparse_csr()


def all_methods(images, kernel, mode):
    """(name, dense output) of every way to run the operator: each method of toeplitz_conv2d,
    the precomputed operator with a T kept from toeplitz_matrix, and compat's scipy path."""
    n, h, w = images.shape
    x, k = as_csr(images), torch.tensor(kernel)
    outs = []
    for method in METHODS:
        out = tsc.toeplitz_conv2d(x, k, (h, w), mode, method)
        assert out.layout == torch.sparse_csr
        outs.append((method, out))
    matrix = OPS.toeplitz_matrix(k, [h, w], mode)
    parts = OPS.toeplitz_conv2d_precomputed(x.crow_indices(), x.col_indices(), x.values(), k,
                                            [h, w], mode, *matrix)
    outs.append(("kept T", torch.sparse_csr_tensor(*parts, size=outs[0][1].shape)))
    for name, out in outs[1:]:  # one output pattern for all
        assert torch.equal(out.crow_indices(), outs[0][1].crow_indices()), name
        assert torch.equal(out.col_indices(), outs[0][1].col_indices()), name
    dense = [(name, out.to_dense().numpy()) for name, out in outs]
    compat = Toeplitz_convolution2d((h, w), kernel, mode)(
        scipy.sparse.csr_matrix(images.reshape(n, -1)))
    return dense + [("compat", compat.toarray())]


@pytest.mark.parametrize("mode", MODES)
def test_every_small_shape_against_scipy(mode):
    """Every image 1..6 x 1..6 against every kernel 1..6 x 1..6, batched and single, every
    method."""
    rng = np.random.default_rng(0)
    for h in range(1, 7):
        for w in range(1, 7):
            for kh in range(1, 7):
                for kw in range(1, 7):
                    if mode == "valid" and (kh > h or kw > w):
                        continue
                    images = rng.random((3, h, w)) * (rng.random((3, h, w)) < 0.5)
                    kernel = rng.random((kh, kw)) - 0.5
                    expected = scipy_reference(images, kernel, mode)
                    for name, out in all_methods(images, kernel, mode):
                        np.testing.assert_allclose(out, expected, atol=1e-12, err_msg=name)
                    for name, out in all_methods(images[:1], kernel, mode):
                        np.testing.assert_allclose(out, expected[:1], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.02, 0.2, 0.5])
@pytest.mark.parametrize("mode", MODES)
def test_larger_random_images(mode, density, dtype, method):
    rng = np.random.default_rng(int(density * 1000) + len(mode))
    for (h, w), (kh, kw) in [((50, 64), (5, 5)), ((37, 23), (11, 4)), ((100, 7), (3, 7))]:
        images = rng.standard_normal((6, h, w)) * (rng.random((6, h, w)) < density)
        kernel = rng.standard_normal((kh, kw))
        x = torch.tensor(images.reshape(6, -1), dtype=dtype).to_sparse_csr()
        out = tsc.toeplitz_conv2d(x, torch.tensor(kernel, dtype=dtype), (h, w), mode, method)
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        np.testing.assert_allclose(out.to_dense().numpy(), scipy_reference(images, kernel, mode),
                                   atol=tol, rtol=tol)
        assert out.col_indices().dtype == torch.int64
        for n in range(6):  # columns sorted within every image
            cols = out.col_indices()[out.crow_indices()[n]:out.crow_indices()[n + 1]]
            assert torch.all(cols[1:] > cols[:-1])


def test_coo_dense_duplicates_unsorted_and_explicit_zeros():
    rng = np.random.default_rng(1)
    h, w = 9, 8
    kernel = torch.tensor(rng.random((3, 4)))
    # Image 0: unsorted columns with a duplicate and an explicit zero; image 1 empty.
    crow = torch.tensor([0, 5, 5])
    col = torch.tensor([40, 3, 17, 3, 60])
    values = torch.tensor([1.0, 2.0, -1.5, 0.5, 0.0], dtype=torch.float64)
    x = torch.sparse_csr_tensor(crow, col, values, size=(2, h * w), check_invariants=False)
    dense = np.zeros((2, h * w))
    np.add.at(dense[0], col.numpy(), values.numpy())
    expected = scipy_reference(dense.reshape(2, h, w), kernel.numpy(), "same")
    out = tsc.toeplitz_conv2d(x, kernel, (h, w))
    np.testing.assert_allclose(out.to_dense().numpy(), expected, atol=1e-12)
    coo = torch.tensor(dense).to_sparse_coo()
    np.testing.assert_allclose(tsc.toeplitz_conv2d(coo, kernel, (h, w)).to_dense().numpy(),
                               expected, atol=1e-12)
    dense_out = tsc.toeplitz_conv2d(torch.tensor(dense), kernel, (h, w))
    assert dense_out.layout == torch.strided
    np.testing.assert_allclose(dense_out.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_dense_input_every_mode(mode):
    rng = np.random.default_rng(2)
    for kh, kw in [(1, 1), (2, 2), (3, 4), (6, 5)]:
        images = rng.random((2, 8, 9))
        kernel = rng.random((kh, kw))
        out = tsc.toeplitz_conv2d(torch.tensor(images.reshape(2, -1)), torch.tensor(kernel),
                                  (8, 9), mode)
        np.testing.assert_allclose(out.numpy(), scipy_reference(images, kernel, mode),
                                   atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_matches_sparse_convolution_package(mode):
    sparse_convolution = pytest.importorskip("sparse_convolution")
    rng = np.random.default_rng(3)
    x = scipy.sparse.random(40, 30 * 25, density=0.02, random_state=4, format="csr")
    k = rng.random((5, 4))
    ours = Toeplitz_convolution2d((30, 25), k, mode)(x)
    theirs = sparse_convolution.Toeplitz_convolution2d((30, 25), k, mode)(x)
    assert type(ours) is type(theirs) and ours.shape == theirs.shape
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), atol=1e-12)
    single = x[0].toarray().reshape(30, 25)
    ours = Toeplitz_convolution2d((30, 25), k, mode)(scipy.sparse.csr_matrix(single),
                                                     batching=False)
    theirs = sparse_convolution.Toeplitz_convolution2d((30, 25), k, mode)(
        scipy.sparse.csr_matrix(single), batching=False)
    assert ours.shape == theirs.shape and scipy.sparse.issparse(ours)
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), atol=1e-12)
    dense_ours = Toeplitz_convolution2d((30, 25), k, mode)(single, batching=False)
    assert isinstance(dense_ours, np.ndarray)
    np.testing.assert_allclose(dense_ours, scipy.signal.convolve2d(single, k, mode), atol=1e-12)


def test_compat_dtype_and_mode_override():
    k = np.ones((3, 3), dtype=np.float32)
    conv = Toeplitz_convolution2d((6, 7), k, "same")
    x = scipy.sparse.random(3, 42, density=0.2, random_state=0, format="csr", dtype=np.float32)
    out = conv(x, mode="full")
    assert out.shape == (3, 8 * 9) and out.dtype == np.float32


def test_compat_drops_exact_zeros_and_uses_int32():
    """Outputs that cancel exactly are not stored (as sparse_convolution), in the sparse and
    the dense-output paths (the latter allocates upper-bound slots and closes the gaps)."""
    rng = np.random.default_rng(11)
    # Few entries: count pass. Entries x taps over twice the frame: upper-bound slots.
    for density, k in ((0.05, np.array([[1.0, -1.0]])), (0.9, np.array([[1.0, -1.0]] * 2))):
        images = rng.integers(1, 3, (7, 6, 9)).astype(np.float64)
        images *= rng.random(images.shape) < density
        images[:, :, 4] = images[:, :, 3]  # equal neighbours: their 'same' output is 0
        x = scipy.sparse.csr_matrix(images.reshape(7, -1))
        out = Toeplitz_convolution2d((6, 9), k, "same")(x)
        expected = scipy_reference(images, k, "same")
        np.testing.assert_array_equal(out.toarray(), expected)
        assert out.nnz == np.count_nonzero(expected) and np.all(out.data != 0)
        assert out.indices.dtype == np.int32 and out.indptr.dtype == np.int32
        out.check_format(full_check=True)
        # int64 index arrays and unsorted, duplicate entries come in as they are.
        x64 = scipy.sparse.csr_matrix((x.data, x.indices.astype(np.int64),
                                       x.indptr.astype(np.int64)), shape=x.shape)
        np.testing.assert_array_equal(
            Toeplitz_convolution2d((6, 9), k, "same")(x64).toarray(), expected)
    k = np.array([[1.0, -1.0]])
    dup = scipy.sparse.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([5, 1, 5]),
                                   np.array([0, 3])), shape=(1, 54))
    np.testing.assert_array_equal(Toeplitz_convolution2d((6, 9), k, "same")(dup).toarray(),
                                  scipy_reference(dup.toarray().reshape(1, 6, 9), k, "same"))


def footprint(images, kernel_shape, mode):
    """The pixels every stored entry reaches: the output pattern of the operator, which keeps
    covered pixels whose sums cancel (unlike compat)."""
    reach = scipy_reference((images != 0).astype(np.float64), np.ones(kernel_shape), mode)
    return reach > 0


@pytest.mark.parametrize("mode", MODES)
def test_operator_keeps_every_covered_pixel_and_compat_only_nonzeros(mode):
    """Kernels with zero taps and entries that cancel, at densities that send images down each
    kernel path (footprint or per-product flags in dense boxes, bit flags in sparse boxes, row
    by row for spread-out entries): the operator's pattern is the footprint, compat's the
    nonzero sums."""
    rng = np.random.default_rng(5)
    for (h, w), density, batch in [((40, 70), 0.3, 4), ((40, 70), 0.01, 6), ((9, 9), 0.6, 5),
                                   ((300, 8), 0.002, 3), ((2, 500), 0.05, 3)]:
        for kernel in (np.array([[1.0, -1.0]]), np.array([[0.0, 1.0, 0.0], [1.0, 0.0, -1.0]]),
                       rng.integers(-1, 2, (4, 3)).astype(np.float64)):
            if mode == "valid" and (kernel.shape[0] > h or kernel.shape[1] > w):
                continue
            images = rng.integers(1, 3, (batch, h, w)) * (rng.random((batch, h, w)) < density)
            images = images.astype(np.float64)
            images[:, :, 1::2] = images[:, :, ::2][:, :, :w // 2]  # equal pairs cancel
            expected = scipy_reference(images, kernel, mode)
            x = torch.tensor(images.reshape(batch, -1)).to_sparse_csr()
            out = tsc.toeplitz_conv2d(x, torch.tensor(kernel), (h, w), mode, "direct")
            pattern = np.zeros(expected.shape, dtype=bool)
            for n in range(batch):
                cols = out.col_indices()[out.crow_indices()[n]:out.crow_indices()[n + 1]]
                pattern[n, cols.numpy()] = True
            np.testing.assert_array_equal(pattern, footprint(images, kernel.shape, mode))
            np.testing.assert_array_equal(out.to_dense().numpy(), expected)
            scipy_out = Toeplitz_convolution2d((h, w), kernel, mode)(
                scipy.sparse.csr_matrix(images.reshape(batch, -1)))
            scipy_out.check_format(full_check=True)
            assert scipy_out.nnz == np.count_nonzero(expected)
            np.testing.assert_array_equal(scipy_out.toarray(), expected)


def test_images_down_different_paths_share_scratch_safely():
    """One thread, one call: a dense box whose flags come from footprints (a narrow, tall
    box), then an image too spread out for a box, summed row by row, then a tall box one
    pixel wide. Scratch buffers sized by one path must not be read or written past their size
    by the next (a reviewer found acc and touched resized apart), nor grow 64-fold."""
    h, w = 1000, 1000
    images = np.zeros((3, h, w))
    images[0, :, :2] = 1.0 + np.arange(h)[:, None] % 3      # columns 0 and 1, every row
    images[1, 0, 0], images[1, 0, 200], images[1, h - 1, w - 1] = 2.0, -1.0, 3.0
    images[2, ::7, 500] = 1.5                                  # a tall, one-pixel-wide box
    for kernel in (np.ones((1, 1)), np.array([[1.0, -2.0, 0.5]])):
        expected = scipy_reference(images, kernel, "same")
        x = torch.tensor(images.reshape(3, -1)).to_sparse_csr()
        out = tsc.toeplitz_conv2d(x, torch.tensor(kernel), (h, w), "same", "direct")
        np.testing.assert_array_equal(out.to_dense().numpy(), expected)
        compat = Toeplitz_convolution2d((h, w), kernel)(
            scipy.sparse.csr_matrix(images.reshape(3, -1)))
        np.testing.assert_array_equal(compat.toarray(), expected)


SCALAR_COMPACTION = """
import numpy as np, scipy.signal, scipy.sparse, torch
import torch_sparse_conv as tsc
from torch_sparse_conv.compat import Toeplitz_convolution2d
rng = np.random.default_rng(2)
for dtype in (np.float32, np.float64):
    for density in (0.01, 0.3):
        images = (rng.standard_normal((5, 30, 41)) * (rng.random((5, 30, 41)) < density))
        kernel = rng.standard_normal((5, 3))
        expected = np.stack([scipy.signal.convolve2d(im, kernel, 'same').reshape(-1)
                             for im in images])
        x = torch.tensor(images.reshape(5, -1), dtype=torch.float64 if dtype == np.float64
                         else torch.float32).to_sparse_csr()
        out = tsc.toeplitz_conv2d(x, torch.tensor(kernel, dtype=x.dtype), (30, 41))
        tol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(out.to_dense().numpy(), expected, atol=tol, rtol=tol)
        ours = Toeplitz_convolution2d((30, 41), kernel, dtype=dtype)(
            scipy.sparse.csr_matrix(images.reshape(5, -1)))
        ours.check_format(full_check=True)
        np.testing.assert_allclose(ours.toarray(), expected, atol=tol, rtol=tol)
print('ok')
"""


def test_scalar_compaction_without_avx512():
    """TSC_NO_AVX512 runs the compaction's scalar loop, which machines without AVX-512 use."""
    run_script(SCALAR_COMPACTION, TSC_NO_AVX512="1")


def test_compat_builds_the_scipy_matrix_of_the_constructor(monkeypatch):
    """compat fills scipy's csr_matrix attributes directly; the result must be what scipy's
    own constructor builds, and the constructor is used where the layout is unknown."""
    from torch_sparse_conv import compat

    rng = np.random.default_rng(8)
    images = rng.random((4, 7, 6)) * (rng.random((4, 7, 6)) < 0.3)
    x = scipy.sparse.csr_matrix(images.reshape(4, -1))
    fast = Toeplitz_convolution2d((7, 6), np.ones((2, 3)))(x)
    reference = scipy.sparse.csr_matrix((fast.data, fast.indices, fast.indptr), shape=fast.shape)
    assert type(fast) is scipy.sparse.csr_matrix and vars(fast).keys() == vars(reference).keys()
    assert fast.shape == reference.shape and fast.maxprint == reference.maxprint
    fast.check_format(full_check=True)
    assert (fast != reference).nnz == 0 and fast.has_sorted_indices
    assert abs((fast @ fast.T) - (reference @ reference.T)).max() == 0
    monkeypatch.setattr(compat, "_CSR_FIELDS", {})  # unknown layout: scipy's constructor
    slow = Toeplitz_convolution2d((7, 6), np.ones((2, 3)))(x)
    assert (slow != reference).nnz == 0


def test_large_outputs_reuse_freed_memory_only():
    """Outputs of 1 MiB and more reuse memory of freed outputs: a live output is never
    overwritten, results stay right when memory is reused, and empty_output_cache frees it."""
    rng = np.random.default_rng(12)
    images = rng.random((120, 50, 50)) * (rng.random((120, 50, 50)) < 0.2)
    x = torch.tensor(images.reshape(120, -1)).to_sparse_csr()
    kernels = [rng.standard_normal((5, 5)) for _ in range(3)]
    expected = [scipy_reference(images, k, "same") for k in kernels]
    tsc.empty_output_cache()
    kept = tsc.toeplitz_conv2d(x, torch.tensor(kernels[0]), (50, 50))
    assert kept.values().numel() * 8 >= 2**20  # large enough for the cache
    for _ in range(2):  # the second round reuses the first one's freed buffers
        for k, want in zip(kernels[1:], expected[1:]):
            np.testing.assert_allclose(tsc.toeplitz_conv2d(x, torch.tensor(k), (50, 50))
                                       .to_dense().numpy(), want, atol=1e-10)
            scipy_out = Toeplitz_convolution2d((50, 50), k)(
                scipy.sparse.csr_matrix(images.reshape(120, -1)))
            np.testing.assert_allclose(scipy_out.toarray(), want, atol=1e-10)
    np.testing.assert_allclose(kept.to_dense().numpy(), expected[0], atol=1e-10)
    assert tsc.empty_output_cache() > 0
    assert tsc.empty_output_cache() == 0


NO_OUTPUT_CACHE = """
import numpy as np, scipy.signal, torch
import torch_sparse_conv as tsc
images = np.random.default_rng(3).random((100, 50, 50))
x = torch.tensor(images.reshape(100, -1)).to_sparse_csr()
k = np.ones((3, 3))
for _ in range(2):
    out = tsc.toeplitz_conv2d(x, torch.tensor(k), (50, 50)).to_dense().numpy()
    want = np.stack([scipy.signal.convolve2d(im, k, 'same').reshape(-1) for im in images])
    np.testing.assert_allclose(out, want, atol=1e-10)
    del out
assert tsc.empty_output_cache() == 0
print('ok')
"""


SMALL_OUTPUT_CACHE = """
import numpy as np, torch
import torch_sparse_conv as tsc
x = torch.tensor(np.random.default_rng(4).random((60, 2500))).to_sparse_csr()
sizes = []
for side in (1, 3, 5):  # two arrays of 1.2, 1.3 and 1.4 MB a call, freed at once
    out = tsc.toeplitz_conv2d(x, torch.ones(side, side, dtype=torch.float64), (50, 50), 'full')
    sizes.append(out.values().nbytes)
    del out
kept = tsc.empty_output_cache()
# 6 MiB allowed of the 7.8 MB freed: the oldest buffers were dropped, the newest kept
assert 0 < kept <= 6 * 2**20 and kept >= sizes[-1], (kept, sizes)
print('ok')
"""


def test_output_cache_drops_the_least_recently_freed():
    run_script(SMALL_OUTPUT_CACHE, TSC_OUTPUT_CACHE_MB="6")


def test_output_cache_can_be_turned_off():
    run_script(NO_OUTPUT_CACHE, TSC_OUTPUT_CACHE_MB="0")


def test_compat_precomputed_keeps_t_and_rebuilds_when_the_kernel_changes():
    rng = np.random.default_rng(12)
    k = rng.random((3, 4))
    conv = Toeplitz_convolution2d((8, 7), k, "same", method="precomputed")
    x = scipy.sparse.random(5, 56, density=0.2, random_state=1, format="csr")
    images = x.toarray().reshape(5, 8, 7)
    np.testing.assert_allclose(conv(x).toarray(), scipy_reference(images, k, "same"),
                               atol=1e-12)
    kept = conv._matrices["same"].matrix
    conv(x)
    assert conv._matrices["same"].matrix is kept  # built once
    np.testing.assert_allclose(conv(x, mode="full").toarray(),
                               scipy_reference(images, k, "full"), atol=1e-12)
    with torch.no_grad():
        conv._kernel.mul_(-2.0)  # in place: T must follow
    np.testing.assert_allclose(conv(x).toarray(), scipy_reference(images, -2 * k, "same"),
                               atol=1e-12)
    assert conv._matrices["same"].matrix is not kept


def test_toeplitz_matrix_is_the_convolution_matrix():
    rng = np.random.default_rng(13)
    for mode in MODES:
        for (h, w), (kh, kw) in [((1, 1), (1, 1)), ((5, 7), (3, 2)), ((4, 3), (6, 5)),
                                 ((9, 9), (4, 4))]:
            if mode == "valid" and (kh > h or kw > w):
                continue
            kernel = rng.standard_normal((kh, kw))
            kernel[0, 0] = 0.0  # zero taps stay stored: the pattern is the footprint
            t = tsc.toeplitz_matrix(torch.tensor(kernel), (h, w), mode)
            # Row p of T is the convolution of the p-th unit image.
            eye = np.eye(h * w).reshape(h * w, h, w)
            np.testing.assert_allclose(t.to_dense().numpy(), scipy_reference(eye, kernel, mode),
                                       atol=1e-12)
            pattern = scipy_reference(eye, np.ones((kh, kw)), mode) != 0
            assert t.values().numel() == pattern.sum()
            for p in range(h * w):
                cols = t.col_indices()[t.crow_indices()[p]:t.crow_indices()[p + 1]]
                assert torch.all(cols[1:] > cols[:-1])


# ----------------------------------------------------------------------------- gradients

def _random_csr(rng, batch, h, w, density):
    dense = rng.standard_normal((batch, h * w)) * (rng.random((batch, h * w)) < density)
    return torch.tensor(dense).to_sparse_csr()


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_values_and_kernel(mode):
    rng = np.random.default_rng(5)
    x = _random_csr(rng, 3, 6, 7, 0.3)
    values = x.values().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 2)), requires_grad=True)

    def fn(values, kernel):
        return torch.ops.torch_sparse_conv.toeplitz_conv2d(
            x.crow_indices(), x.col_indices(), values, kernel, [6, 7], mode, "direct")[2]

    assert torch.autograd.gradcheck(fn, (values, kernel))


def test_gradients_match_dense_path_and_module():
    rng = np.random.default_rng(6)
    x = _random_csr(rng, 4, 9, 8, 0.25)
    kernel = torch.tensor(rng.standard_normal((4, 3)))
    module = tsc.ToeplitzConv2d((9, 8), kernel, mode="same")
    values = x.values().clone().requires_grad_()
    xs = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, size=x.shape)
    out = module(xs)
    weights = torch.tensor(rng.standard_normal(out.values().shape))
    (out.values() * weights).sum().backward()
    # Reference: the dense path, with the same weights placed on the output pattern.
    dense_x = x.to_dense().requires_grad_()
    k2 = kernel.clone().requires_grad_()
    ref = tsc.toeplitz_conv2d(dense_x, k2, (9, 8), "same")
    weight_dense = torch.sparse_csr_tensor(out.crow_indices(), out.col_indices(), weights,
                                           size=out.shape).to_dense()
    (ref * weight_dense).sum().backward()
    torch.testing.assert_close(module.kernel.grad, k2.grad)
    torch.testing.assert_close(values.grad, dense_x.grad[x.to_dense() != 0])


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_precomputed(mode):
    rng = np.random.default_rng(14)
    x = _random_csr(rng, 3, 6, 7, 0.3)
    values = x.values().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 2)), requires_grad=True)

    def kept_t(values, kernel):  # T kept from the kernel; the gradient reaches the kernel
        matrix = OPS.toeplitz_matrix(kernel.detach(), [6, 7], mode)
        return OPS.toeplitz_conv2d_precomputed(x.crow_indices(), x.col_indices(), values,
                                               kernel, [6, 7], mode, *matrix)[2]

    def method(values, kernel):
        return OPS.toeplitz_conv2d(x.crow_indices(), x.col_indices(), values, kernel, [6, 7],
                                   mode, "precomputed")[2]

    assert torch.autograd.gradcheck(kept_t, (values, kernel))
    assert torch.autograd.gradcheck(method, (values, kernel))
    assert torch.autograd.gradcheck(
        lambda kernel: OPS.toeplitz_matrix(kernel, [6, 7], mode)[2], (kernel,))


def test_module_keeps_t_and_trains_like_direct():
    rng = np.random.default_rng(15)
    x = _random_csr(rng, 4, 9, 8, 0.25)
    kernel = torch.tensor(rng.standard_normal((4, 3)))
    kept = tsc.ToeplitzConv2d((9, 8), kernel, method="precomputed")
    direct = tsc.ToeplitzConv2d((9, 8), kernel, method="direct")
    opt_kept = torch.optim.SGD(kept.parameters(), lr=0.1)
    opt_direct = torch.optim.SGD(direct.parameters(), lr=0.1)
    for step in range(3):
        outs = []
        for module, opt in ((kept, opt_kept), (direct, opt_direct)):
            opt.zero_grad()
            out = module(x)
            (out.values() ** 2).sum().backward()
            outs.append((out, module.kernel.grad.clone()))
            opt.step()  # in place: the kept T must be rebuilt on the next call
        (a, grad_a), (b, grad_b) = outs
        assert torch.equal(a.col_indices(), b.col_indices())
        torch.testing.assert_close(a.values(), b.values())
        torch.testing.assert_close(grad_a, grad_b)
    with torch.no_grad():
        kept(x)
        matrix = kept._matrix.matrix
        kept(x)
    assert kept._matrix.matrix is matrix  # unchanged kernel: T reused
    kept.kernel.data.mul_(-1.0)  # .data: a separate version counter, still noticed
    torch.testing.assert_close(kept(x).values(), -direct(x).values())
    with torch.no_grad():
        kept.kernel.zero_()
        assert kept(x).values().abs().sum() == 0
    auto = tsc.ToeplitzConv2d((9, 8), kernel)
    auto(x)
    assert auto._matrix.matrix is None  # 'auto' runs direct and builds no T


def test_fixed_kernel_module():
    module = tsc.ToeplitzConv2d((5, 5), torch.ones(3, 3), trainable=False)
    assert "kernel" in dict(module.named_buffers()) and not list(module.parameters())
    assert module.output_shape == (5, 5)


def test_opcheck():
    rng = np.random.default_rng(7)
    x = _random_csr(rng, 3, 6, 5, 0.3)
    values = x.values().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 3)), requires_grad=True)
    args = (x.crow_indices(), x.col_indices(), values, kernel, [6, 5], "same", "direct")
    # test_aot_dispatch_dynamic is left out: its harness multiplies every output by a float
    # cotangent, including the (non-differentiable) int64 row pointers and columns.
    torch.library.opcheck(torch.ops.torch_sparse_conv.toeplitz_conv2d.default, args,
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))
    out_crow, out_col, out_values = torch.ops.torch_sparse_conv.toeplitz_conv2d(*args)
    torch.library.opcheck(
        torch.ops.torch_sparse_conv._toeplitz_conv2d_backward.default,
        (torch.randn_like(out_values), x.crow_indices(), x.col_indices(), values.detach(),
         kernel.detach(), out_crow, out_col, [6, 5], "same", [True, True]))


def test_opcheck_precomputed_and_scipy_ops():
    rng = np.random.default_rng(16)
    x = _random_csr(rng, 3, 6, 5, 0.3)
    values = x.values().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    no_aot = ("test_schema", "test_autograd_registration", "test_faketensor")
    for mode in MODES:
        torch.library.opcheck(OPS.toeplitz_matrix.default, (kernel, [6, 5], mode),
                              test_utils=no_aot)
        matrix = OPS.toeplitz_matrix(kernel.detach(), [6, 5], mode)
        torch.library.opcheck(OPS._toeplitz_matrix_backward.default,
                              (torch.randn_like(matrix[2]), kernel.detach(), [6, 5], mode))
        torch.library.opcheck(OPS.toeplitz_conv2d_precomputed.default,
                              (x.crow_indices(), x.col_indices(), values, kernel, [6, 5], mode,
                               *matrix), test_utils=no_aot)
        torch.library.opcheck(OPS.toeplitz_conv2d.default,
                              (x.crow_indices(), x.col_indices(), values, kernel, [6, 5], mode,
                               "precomputed"), test_utils=no_aot)
        torch.library.opcheck(OPS._toeplitz_conv2d_scipy.default,
                              (x.crow_indices().int(), x.col_indices().int(), values.detach(),
                               kernel.detach(), [6, 5], mode))


# ----------------------------------------------------------------------------- scale

HUGE_FRAME = r"""
import time, torch, torch_sparse_conv as tsc
n = 100_000                                   # 10^10 pixels: past 2^31, never scanned
cols = torch.tensor([0, 5 * n + 7, n * n // 2 + 3, n * n - 1, 17])
x = torch.sparse_csr_tensor(torch.tensor([0, 4, 5]), cols, torch.ones(5, dtype=torch.float64),
                            size=(2, n * n))
out = tsc.toeplitz_conv2d(x, torch.ones(3, 3, dtype=torch.float64), (n, n), "same")
assert out.shape == (2, n * n)
assert out.values().numel() == 4 + 9 + 9 + 4 + 6, out.values().numel()
assert int(out.col_indices().max()) == n * n - 1
assert float(out.values().sum()) == 4 + 9 + 9 + 4 + 6
print("ok")
"""


def test_huge_frame_with_a_handful_of_nonzeros():
    """Memory and time must follow the nonzeros, not the 10^10-pixel frame (a run that scanned
    the frame would not finish within the limit)."""
    run_script(HUGE_FRAME, timeout=120)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call,error,pattern", [
    (lambda x, k: tsc.toeplitz_conv2d(x, k, (4, 4)), ValueError, "x.shape\\[1\\] \\(20\\)"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k[0], (4, 5)), ValueError, "kernel must be 2-D"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k, (4, 5), "circular"), ValueError, "mode must be"),
    (lambda x, k: tsc.toeplitz_conv2d(x, torch.ones(5, 5, dtype=torch.float64), (4, 5),
                                      "valid"), ValueError, "'valid' needs a kernel"),
    (lambda x, k: tsc.toeplitz_conv2d(x.to(torch.int64), k, (4, 5)), TypeError,
     "float32 or float64"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k.float(), (4, 5)), TypeError, "kernel dtype"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k, (4, 5), method="fft"), ValueError,
     "method must be one of 'auto', 'direct', 'precomputed', got 'fft'"),
    (lambda x, k: tsc.ToeplitzConv2d((4, 5), k, method="lazy"), ValueError,
     "ToeplitzConv2d: method must be one of 'auto', 'direct', 'precomputed'"),
    (lambda x, k: tsc.toeplitz_matrix(k[0], (4, 5)), ValueError, "kernel must be 2-D"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k, (4, -5)), ValueError, "image_shape"),
    (lambda x, k: tsc.toeplitz_conv2d("x", k, (4, 5)), TypeError, "x must be a Tensor"),
])
def test_argument_errors(call, error, pattern):
    x = torch.rand(3, 20, dtype=torch.float64)
    k = torch.ones(3, 3, dtype=torch.float64)
    with pytest.raises(error, match=pattern):
        call(x.to_sparse_csr() if error is not TypeError or "Tensor" not in pattern else x, k)


@pytest.mark.parametrize("crow,col,pattern", [
    ([0, 2, 3], [1, 20, 4], "column index 20 .* out of range"),
    ([0, 2, 3], [1, -1, 4], "column index -1 .* out of range"),
    ([0, 2, 1, 3], [1, 2, 4], "non-decreasing"),
    ([1, 2, 3], [1, 2, 4], "start at 0"),
    ([0, 2, 4], [1, 2, 4], "last row pointer"),
])
def test_invalid_csr_is_rejected(crow, col, pattern):
    crow, col = torch.tensor(crow), torch.tensor(col)
    values = torch.ones(col.numel(), dtype=torch.float64)
    with pytest.raises(RuntimeError, match=pattern):
        torch.ops.torch_sparse_conv.toeplitz_conv2d(crow, col, values,
                                                    torch.ones(3, 3, dtype=torch.float64),
                                                    [4, 5], "same", "direct")


def test_operator_method_error_lists_the_methods():
    x = torch.rand(2, 20, dtype=torch.float64).to_sparse_csr()
    with pytest.raises(RuntimeError, match="'auto', 'direct', 'precomputed', got 'fft'"):
        OPS.toeplitz_conv2d(x.crow_indices(), x.col_indices(), x.values(),
                            torch.ones(3, 3, dtype=torch.float64), [4, 5], "same", "fft")


def _corrupt(matrix, what):
    t_crow, t_col, t_values = (t.clone() for t in matrix)
    if what == "row pointers":
        t_crow[3] = t_col.numel() + 5
    elif what == "unsorted":
        t_col[t_crow[7]], t_col[t_crow[7] + 1] = t_col[t_crow[7] + 1], t_col[t_crow[7]]
    elif what == "out of range":
        t_col[-1] = 10**9
    elif what == "negative":
        t_col[0] = -1
    return t_crow, t_col, t_values


@pytest.mark.parametrize("what,pattern", [
    ("row pointers", "invalid T: T's row pointers"),
    ("unsorted", "invalid T: T's columns must be strictly increasing"),
    ("out of range", "invalid T: T's columns"),
    ("negative", "invalid T: T's columns"),
])
def test_invalid_precomputed_t_is_rejected(what, pattern):
    kernel = torch.ones(3, 3, dtype=torch.float64)
    matrix = OPS.toeplitz_matrix(kernel, [4, 5], "same")
    x = torch.ones(2, 20, dtype=torch.float64).to_sparse_csr()  # every row of T is read
    with pytest.raises(RuntimeError, match=pattern):
        OPS.toeplitz_conv2d_precomputed(x.crow_indices(), x.col_indices(), x.values(), kernel,
                                        [4, 5], "same", *_corrupt(matrix, what))


def test_precomputed_t_shape_and_dtype_errors():
    kernel = torch.ones(3, 3, dtype=torch.float64)
    t_crow, t_col, t_values = OPS.toeplitz_matrix(kernel, [4, 5], "same")
    x = torch.ones(2, 20, dtype=torch.float64).to_sparse_csr()
    args = (x.crow_indices(), x.col_indices(), x.values(), kernel, [4, 5], "same")
    with pytest.raises(RuntimeError, match="t_crow must be 1-D int64 with H\\*W \\+ 1 = 21"):
        OPS.toeplitz_conv2d_precomputed(*args, t_crow[:-1], t_col, t_values)
    with pytest.raises(RuntimeError, match="t_values must be 1-D, one Double"):
        OPS.toeplitz_conv2d_precomputed(*args, t_crow, t_col, t_values.float())
    with pytest.raises(RuntimeError, match="t_col must be a 1-D int64"):
        OPS.toeplitz_conv2d_precomputed(*args, t_crow, t_col.int(), t_values)


def test_compat_errors():
    with pytest.raises(ValueError, match="mode"):
        Toeplitz_convolution2d((4, 5), np.ones((3, 3)), mode="circular")
    with pytest.raises(ValueError, match="2-D"):
        Toeplitz_convolution2d((4, 5), np.ones(3))
    conv = Toeplitz_convolution2d((4, 5), np.ones((3, 3)))
    with pytest.raises(ValueError, match="x_shape"):
        conv(scipy.sparse.random(2, 21, density=0.3, format="csr"))
    with pytest.raises(ValueError, match="larger than k"):
        Toeplitz_convolution2d((2, 5), np.ones((3, 3)), mode="valid")(np.ones((1, 10)))


def test_compat_numpy_entry_point_reads_any_layout_and_checks_its_arrays():
    """compat's CPU entry point takes scipy's arrays as they are: int32 or int64 indices,
    strided views (copied), and rejects what it cannot read with a clear error."""
    from torch_sparse_conv import _C

    rng = np.random.default_rng(21)
    images = rng.random((3, 6, 5)) * (rng.random((3, 6, 5)) < 0.4)
    x = scipy.sparse.csr_matrix(images.reshape(3, -1))
    k = rng.standard_normal((3, 2))
    want = scipy_reference(images, k, "full")
    for index_type in (np.int32, np.int64):
        indptr, indices = x.indptr.astype(index_type), x.indices.astype(index_type)
        # every second element of a doubled array: a strided view, not C-contiguous
        strided = np.repeat(x.data, 2)[::2]
        assert not strided.flags.c_contiguous
        out_indptr, out_indices, out_data = _C._toeplitz_conv2d_scipy_numpy(
            indptr, indices, strided, np.asfortranarray(k), 6, 5, "full")
        assert out_indptr.dtype == np.int32 and out_indices.dtype == np.int32
        out = scipy.sparse.csr_matrix((out_data, out_indices, out_indptr), shape=want.shape)
        np.testing.assert_allclose(out.toarray(), want, atol=1e-12)
    call = _C._toeplitz_conv2d_scipy_numpy
    with pytest.raises(TypeError, match="indices must be a numpy array"):
        call(x.indptr, list(x.indices), x.data, k, 6, 5, "same")
    with pytest.raises(TypeError, match="indptr must hold int32 or int64"):
        call(x.indptr.astype(np.float64), x.indices, x.data, k, 6, 5, "same")
    with pytest.raises(TypeError, match="data must be float32 or float64"):
        call(x.indptr, x.indices, x.data.astype(np.int64), k, 6, 5, "same")
    with pytest.raises(TypeError, match="kernel must have data's dtype"):
        call(x.indptr, x.indices, x.data, k.astype(np.float32), 6, 5, "same")
    with pytest.raises(RuntimeError, match="kernel must have 2 dimensions"):
        call(x.indptr, x.indices, x.data, k.reshape(-1), 6, 5, "same")
    with pytest.raises(RuntimeError, match="one value per column index"):
        call(x.indptr, x.indices, x.data[:-1], k, 6, 5, "same")
    with pytest.raises(RuntimeError, match="indptr must have B \\+ 1 >= 1 entries"):
        call(x.indptr[:0], x.indices[:0], x.data[:0], k, 6, 5, "same")
    bad = x.indices.copy()
    bad[-1] = 30
    with pytest.raises(RuntimeError, match="column index 30 .* out of range"):
        call(x.indptr, bad, x.data, k, 6, 5, "same")
    with pytest.raises(RuntimeError, match="mode must be"):
        call(x.indptr, x.indices, x.data, k, 6, 5, "circular")


def test_compat_outputs_own_their_memory():
    """compat's numpy outputs own the kernel's buffers (large ones from the output cache):
    a kept result is never overwritten by later calls, and edits of the kernel tensor reach
    the CPU path, which reads the same memory."""
    rng = np.random.default_rng(22)
    images = rng.random((120, 50, 50)) * (rng.random((120, 50, 50)) < 0.2)
    x = scipy.sparse.csr_matrix(images.reshape(120, -1))
    k = rng.standard_normal((5, 5))
    tsc.empty_output_cache()
    kept = Toeplitz_convolution2d((50, 50), k)(x)
    assert kept.data.nbytes >= 2**20  # large enough for the cache
    snapshot = kept.copy()
    for _ in range(3):  # freed outputs of these calls are reused by the next ones
        other = Toeplitz_convolution2d((50, 50), -k)(x)
        assert abs(other + snapshot).max() < 1e-12
        del other
    assert (kept != snapshot).nnz == 0
    conv = Toeplitz_convolution2d((50, 50), k)
    with torch.no_grad():
        conv._kernel.mul_(2.0)
    assert abs(conv(x) - 2 * snapshot).max() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_images_through_the_dense_tile_match_scipy(dtype):
    """Images whose entries fill their box densely go through a dense input tile (output rows
    computed a vector block at a time, rows padded past the box): every mode, kernels from
    1x1 to wider than the blocks, boxes narrower and wider than a block, duplicate entries."""
    rng = np.random.default_rng(31)
    tolerance = 1e-10 if dtype == torch.float64 else 2e-4
    for (h, w), (kh, kw) in [((37, 41), (3, 5)), ((9, 70), (1, 1)), ((30, 12), (11, 11)),
                             ((25, 90), (2, 40)), ((5, 6), (6, 2))]:
        kernel = rng.standard_normal((kh, kw))
        images = rng.standard_normal((3, h, w)) * (rng.random((3, h, w)) < 0.7)
        for mode in MODES:
            if mode == "valid" and (kh > h or kw > w):
                continue
            expected = scipy_reference(images, kernel, mode)
            x = torch.tensor(images.reshape(3, -1), dtype=dtype).to_sparse_csr()
            out = tsc.toeplitz_conv2d(x, torch.tensor(kernel, dtype=dtype), (h, w), mode)
            np.testing.assert_allclose(out.to_dense().double().numpy(), expected,
                                       atol=tolerance, rtol=tolerance)
            compat = Toeplitz_convolution2d((h, w), kernel, mode, dtype=np.dtype(
                "float64" if dtype == torch.float64 else "float32"))(
                scipy.sparse.csr_matrix(images.reshape(3, -1)))
            np.testing.assert_allclose(compat.toarray(), expected, atol=tolerance,
                                       rtol=tolerance)
    # every entry stored twice, in reversed order: duplicates are summed
    images = rng.standard_normal((2, 20, 20)) * (rng.random((2, 20, 20)) < 0.8)
    coo = scipy.sparse.coo_matrix(images.reshape(2, -1))
    doubled = scipy.sparse.csr_matrix(
        (np.r_[coo.data, coo.data][::-1], (np.r_[coo.row, coo.row][::-1],
                                           np.r_[coo.col, coo.col][::-1])), shape=coo.shape)
    doubled.has_canonical_format = False
    kernel = rng.standard_normal((4, 3))
    np.testing.assert_allclose(Toeplitz_convolution2d((20, 20), kernel)(doubled).toarray(),
                               2 * scipy_reference(images, kernel, "same"), atol=1e-10)


def test_non_finite_kernel_keeps_nan_to_the_footprint():
    """0 * inf is NaN: a kernel with an infinite tap must not spread NaN to pixels no entry
    reaches, so dense images skip the dense tile then. The pattern stays the footprint."""
    images = np.zeros((1, 30, 30))
    images[0, 5:25, 5:25] = 1.0  # dense box
    kernel = np.ones((3, 3))
    kernel[1, 1] = np.inf
    x = torch.tensor(images.reshape(1, -1)).to_sparse_csr()
    out = tsc.toeplitz_conv2d(x, torch.tensor(kernel), (30, 30), "same")
    pattern = np.zeros(900, dtype=bool)
    pattern[out.col_indices().numpy()] = True
    np.testing.assert_array_equal(pattern, footprint(images, (3, 3), "same").reshape(-1))
    dense = out.to_dense().numpy().reshape(30, 30)
    assert not np.isnan(dense).any()
    np.testing.assert_array_equal(np.isinf(dense), images[0] != 0)  # the inf tap's reach
    compat = Toeplitz_convolution2d((30, 30), kernel)(scipy.sparse.csr_matrix(
        images.reshape(1, -1)))
    assert compat.nnz == footprint(images, (3, 3), "same").sum()


# Invalid CSR arguments of every Toeplitz operator, for DEVICE (replaced by "cpu" or "cuda";
# the CUDA test runs it too). The CPU and CUDA builds word some checks differently.
INVALID_CSR_SCRIPT = """
import pytest, torch, torch_sparse_conv
ops = torch.ops.torch_sparse_conv
dev = "DEVICE"
crow = torch.tensor([0, 2, 3], device=dev)
col = torch.tensor([1, 7, 4], device=dev)
values = torch.ones(3, dtype=torch.float64, device=dev)
kernel = torch.ones(3, 3, dtype=torch.float64, device=dev)
with pytest.raises(RuntimeError, match="x's column ind"):
    ops.toeplitz_conv2d(crow, torch.tensor([1, 30, 4], device=dev), values, kernel, [6, 5],
                        "same", "direct")
with pytest.raises(RuntimeError, match="row pointers must be non-decreasing"):
    ops.toeplitz_conv2d(torch.tensor([0, 4, 3], device=dev), col, values, kernel, [6, 5],
                        "same", "direct")
out_crow, out_col, out_values = ops.toeplitz_conv2d(crow, col, values, kernel, [6, 5], "same",
                                                    "direct")
grad = torch.ones_like(out_values)
def backward(out_crow, out_col):
    return ops._toeplitz_conv2d_backward(grad, crow, col, values, kernel, out_crow, out_col,
                                         [6, 5], "same", [True, True])
backward(out_crow, out_col)
with pytest.raises(RuntimeError, match="strictly ascending columns"):
    backward(out_crow, out_col.flip(0))
repeated = out_col.clone()
repeated[1] = repeated[0]
with pytest.raises(RuntimeError, match="strictly ascending columns"):
    backward(out_crow, repeated)
with pytest.raises(RuntimeError, match="the output's column indices must lie in"):
    backward(out_crow, out_col + 100)
# A row pointer beyond nnz before a smaller one: rejected before any column is read.
wild = out_crow.clone()
wild[1] = 10**6
with pytest.raises(RuntimeError, match="row pointers must be non-decreasing"):
    backward(wild, out_col)
t_crow, t_col, t_values = ops.toeplitz_matrix(kernel, [6, 5], "same")
with pytest.raises(RuntimeError,
                   match="T's columns must (be strictly increasing|ascend strictly)"):
    ops.toeplitz_conv2d_precomputed(crow, col, values, kernel, [6, 5], "same", t_crow,
                                    t_col.flip(0), t_values)
print("ok")
"""


def test_invalid_csr_is_rejected_with_clear_messages():
    run_script(INVALID_CSR_SCRIPT.replace("DEVICE", "cpu"))

