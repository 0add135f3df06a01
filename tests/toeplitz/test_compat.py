"""compat.Toeplitz_convolution2d, the drop-in for sparse_convolution's: against that package
and scipy, its scipy conventions (int32 indices, no stored zeros, scipy's own matrix type),
its kept T, its CPU entry point on scipy's arrays, its errors."""
import re

import numpy as np
import pytest
import scipy.signal
import scipy.sparse
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv.compat import Toeplitz_convolution2d

from testing import scipy_reference

MODES = ["full", "same", "valid"]


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


def test_compat_output_shape_follows_a_reassigned_x_shape():
    """The output's shape comes from the object's x_shape at each call, not from one kept at
    the first call: a later assignment of x_shape (the package's public attribute) gives the
    new frame's result, equal to scipy's, in every mode."""
    rng = np.random.default_rng(3)
    k = rng.random((3, 3))
    conv = Toeplitz_convolution2d((6, 7), k, "same")
    for shape in [(6, 7), (9, 5)]:
        conv.x_shape = shape
        images = rng.random((2, *shape)) * (rng.random((2, *shape)) < 0.3)
        x = scipy.sparse.csr_matrix(images.reshape(2, -1))
        for mode in MODES:
            out = conv(x, mode=mode)
            expected = scipy_reference(images, k, mode)
            assert out.shape == expected.shape, (shape, mode)
            np.testing.assert_allclose(out.toarray(), expected, atol=1e-12)


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


def test_compat_numpy_entry_point_reads_any_layout_and_checks_its_arrays():
    """compat's CPU entry point takes scipy's arrays as they are: int32 or int64 indices,
    strided views (copied), and rejects what it cannot read with a clear error."""
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
        out_indptr, out_indices, out_data = tsc.toeplitz.toeplitz_conv2d_scipy_arrays(
            indptr, indices, strided, np.asfortranarray(k), 6, 5, "full")
        assert out_indptr.dtype == np.int32 and out_indices.dtype == np.int32
        out = scipy.sparse.csr_matrix((out_data, out_indices, out_indptr), shape=want.shape)
        np.testing.assert_allclose(out.toarray(), want, atol=1e-12)
    call = tsc.toeplitz.toeplitz_conv2d_scipy_arrays
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
    with pytest.raises(RuntimeError, match=r"must lie in \[0, 30\) for H\*W = 30, but indices\[\d+\] = 30 is out"):
        call(x.indptr, bad, x.data, k, 6, 5, "same")
    with pytest.raises(RuntimeError, match="mode must be"):
        call(x.indptr, x.indices, x.data, k, 6, 5, "circular")


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


def test_compat_valid_mode_errors_come_at_the_packages_moment():
    """sparse_convolution asserts at construction; its users catch AssertionError, ours
    ValueError: both catch it, and a call with mode='valid' raises it too."""
    message = "x must be larger than k in both dimensions for mode='valid'"
    for caught in (AssertionError, ValueError):
        with pytest.raises(caught, match=re.escape(message)):
            Toeplitz_convolution2d((2, 5), np.ones((3, 3)), mode="valid")
    conv = Toeplitz_convolution2d((2, 5), np.ones((3, 3)), mode="same")
    with pytest.raises(AssertionError, match=re.escape(message)):
        conv(np.ones((1, 10)), mode="valid")
