"""The direct method's single pass (csrc/toeplitz/cpu/direct/run.cpp): the batch is shared among
threads by entries, each thread writes its images into a staging buffer that grows as it goes,
and the shares are put together (the first one in place when its buffer holds everything).
The output must not depend on how the batch was shared or how often a buffer grew: bitwise
the same at any thread count, and equal to scipy's."""
import numpy as np
import pytest
import scipy.sparse
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv.bench import workloads
from torch_sparse_conv.compat import Toeplitz_convolution2d

from testing import csr_from_scipy, scipy_reference


def at_threads(threads, f):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return f()
    finally:
        torch.set_num_threads(before)


def both_outputs(x, kernel, shape, mode):
    """The native operator's (crow, col, values) and compat's scipy matrix, as numpy."""
    out = tsc.toeplitz_conv2d(csr_from_scipy(x), torch.from_numpy(kernel), shape, mode, "direct")
    native = tuple(t.numpy().copy() for t in (out.crow_indices(), out.col_indices(),
                                              out.values()))
    return native, Toeplitz_convolution2d(shape, kernel, mode)(x)


def skewed_batch(rng, shape):
    """Empty images, isolated points (output many times the input: staging grows), one nearly
    dense image, in an order that puts most entries at the end of the batch."""
    h, w = shape
    rows = []
    for n in range(40):
        image = np.zeros(h * w)
        if n % 5 == 1:
            where = rng.choice(h * w, 3, replace=False)
            image[where] = rng.standard_normal(3)
        elif n == 37:
            image[:] = rng.standard_normal(h * w) * (rng.random(h * w) < 0.9)
        rows.append(image)
    return scipy.sparse.csr_matrix(np.stack(rows))


WORKLOADS = {
    "roi": lambda rng: (workloads.roi_footprints(300, frame=(96, 128), seed=3), (96, 128)),
    "events": lambda rng: (workloads.event_frames(12, shape=(60, 80), density=0.03, seed=4),
                           (60, 80)),
    "skewed": lambda rng: (skewed_batch(rng, (30, 41)), (30, 41)),
}


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
@pytest.mark.parametrize("size", [3, 7, 15])
def test_same_bits_at_any_thread_count_and_equal_to_scipy(workload, size):
    rng = np.random.default_rng(size)
    x, shape = WORKLOADS[workload](rng)
    kernel = workloads.gaussian_kernel(size) * rng.uniform(0.5, 1.5, (size, size))
    for mode in ("same", "full"):
        native1, compat1 = at_threads(1, lambda: both_outputs(x, kernel, shape, mode))
        for threads in (2, 3):
            native, compat = at_threads(threads, lambda: both_outputs(x, kernel, shape, mode))
            for a, b in zip(native, native1):
                np.testing.assert_array_equal(a, b)
            for name in ("indptr", "indices", "data"):
                np.testing.assert_array_equal(getattr(compat, name), getattr(compat1, name))
        expected = scipy_reference(x.toarray().reshape(-1, *shape), kernel, mode)
        crow, col, values = native1
        dense = np.zeros_like(expected)
        for n in range(expected.shape[0]):
            dense[n, col[crow[n]:crow[n + 1]]] = values[crow[n]:crow[n + 1]]
        np.testing.assert_allclose(dense, expected, atol=1e-12)
        compat1.check_format(full_check=True)
        np.testing.assert_allclose(compat1.toarray(), expected, atol=1e-12)
        assert compat1.nnz == np.count_nonzero(compat1.toarray())


def test_outputs_far_larger_than_the_input_and_empty_outputs():
    """Isolated points under a 15x15 kernel write 225 times their entries, far past the
    staging's first guess (twice the entries), so it grows several times; a kernel of zeros
    drops every pixel from compat's output (nothing written, buffers still valid)."""
    rng = np.random.default_rng(0)
    h, w = 200, 300
    images = np.zeros((64, h * w))
    for n in range(64):
        images[n, rng.choice(h * w, 40, replace=False)] = rng.standard_normal(40)
    x = scipy.sparse.csr_matrix(images)
    kernel = rng.standard_normal((15, 15))
    expected = scipy_reference(images.reshape(-1, h, w), kernel, "same")
    for threads in (1, 2):
        out = at_threads(threads, lambda: Toeplitz_convolution2d((h, w), kernel)(x))
        assert out.nnz > 100 * x.nnz
        np.testing.assert_allclose(out.toarray(), expected, atol=1e-12)
        empty = at_threads(threads, lambda: Toeplitz_convolution2d((h, w), 0 * kernel)(x))
        assert empty.nnz == 0 and empty.shape == x.shape
        native = tsc.toeplitz_conv2d(csr_from_scipy(x), torch.zeros(15, 15, dtype=torch.float64),
                                     (h, w), "same")
        assert native.values().numel() == out.nnz and not native.values().any()


def test_nearly_full_outputs_with_gaps():
    """Images covering the whole frame go into upper-bound slots (no staging), and the gaps
    left by uncovered pixels (a hole in the image) or by exact zeros (compat) are closed in
    place, image after image: the result must equal scipy's at any thread count."""
    rng = np.random.default_rng(5)
    h, w, batch = 24, 30, 9
    images = rng.standard_normal((batch, h, w)) * (rng.random((batch, h, w)) < 0.95)
    images[::2, 5:12, 8:15] = 0.0     # a hole: pixels no 3x3 footprint covers
    images[1::3, :, :] = np.where(rng.random((h, w)) < 0.5, 1.0, -1.0)  # zero sums occur
    x = scipy.sparse.csr_matrix(images.reshape(batch, -1))
    kernel = np.ones((3, 3))
    kernel[1, 1] = 0.0
    expected = scipy_reference(images, kernel, "same")
    for threads in (1, 2):
        native, compat = at_threads(threads, lambda: both_outputs(x, kernel, (h, w), "same"))
        crow, col, values = native
        dense = np.zeros_like(expected)
        for n in range(batch):
            assert np.all(np.diff(col[crow[n]:crow[n + 1]]) > 0)
            dense[n, col[crow[n]:crow[n + 1]]] = values[crow[n]:crow[n + 1]]
        np.testing.assert_allclose(dense, expected, atol=1e-12)
        assert crow[-1] < batch * h * w              # the hole's centre is not stored
        compat.check_format(full_check=True)
        np.testing.assert_allclose(compat.toarray(), expected, atol=1e-12)
        assert compat.nnz == np.count_nonzero(expected) < crow[-1]
