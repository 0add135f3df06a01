"""The benchmark's workload generators (torch_sparse_conv/bench/workloads.py): each one's
properties (shape, canonical CSR, density, ROI sizes and normalisation, values, determinism by
seed), and exact scipy parity of toeplitz_conv2d (every method) and compat on small instances
of each workload, every mode."""
import numpy as np
import pytest
import scipy.sparse
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv.bench import workloads
from torch_sparse_conv.compat import Toeplitz_convolution2d

from testing import csr_from_scipy, scipy_reference

MODES = ["full", "same", "valid"]


def canonical(x, rows, shape):
    assert scipy.sparse.isspmatrix_csr(x) and x.shape == (rows, shape[0] * shape[1])
    assert x.dtype == np.float64 and x.has_canonical_format
    x.check_format(full_check=True)
    assert np.all(x.data != 0)


def test_roi_footprints():
    x = workloads.roi_footprints(2000, seed=1)
    canonical(x, 2000, (512, 512))
    sizes = np.diff(x.indptr)
    assert sizes.min() >= 10 and sizes.max() <= 400 and 80 <= sizes.mean() <= 200
    np.testing.assert_allclose(np.asarray(x.sum(1)).ravel(), 1.0, rtol=1e-12)
    assert np.all(x.data > 0)
    # Centres anywhere: ROIs touch every edge of the frame, so some are clipped.
    ys, xs = np.divmod(x.indices, 512)
    assert ys.min() == 0 and xs.min() == 0 and ys.max() == 511 and xs.max() == 511
    # Compact blobs: each ROI fits in a box of twice the largest radius, plus jitter.
    for n in range(0, 2000, 97):
        y, xx = np.divmod(x.indices[x.indptr[n]:x.indptr[n + 1]], 512)
        assert np.ptp(y) <= 22 and np.ptp(xx) <= 22
    # Smaller radii, smaller ROIs; a non-square frame; the dtype asked for.
    small = workloads.roi_footprints(300, frame=(64, 96), radius=(3, 4), seed=2,
                                     dtype=np.float32)
    assert small.shape == (300, 64 * 96) and small.dtype == np.float32
    assert np.diff(small.indptr).max() < 60
    with pytest.raises(ValueError, match="radius"):
        workloads.roi_footprints(3, radius=(5, 2))


@pytest.mark.parametrize("shape", [(260, 346), (480, 640)])
@pytest.mark.parametrize("density", [0.01, 0.05])
def test_event_frames(shape, density):
    x = workloads.event_frames(8, shape, density, seed=3)
    canonical(x, 8, shape)
    assert workloads.density(x) == pytest.approx(density, rel=0.01)
    assert set(np.unique(x.data)) == {-1.0, 1.0}
    # Clustered: an active pixel has an active 4-neighbour over twice as often as in uniform
    # noise of the same density (1 - (1 - density)^4 of them).
    image = x[0].toarray().reshape(shape) != 0
    neighbour = np.zeros_like(image)
    neighbour[1:] |= image[:-1]
    neighbour[:-1] |= image[1:]
    neighbour[:, 1:] |= image[:, :-1]
    neighbour[:, :-1] |= image[:, 1:]
    assert (image & neighbour).sum() / image.sum() > max(0.3, 2 * (1 - (1 - density) ** 4))
    counts = workloads.event_frames(4, shape, density, seed=3, values="counts")
    assert counts.data.min() >= 1 and counts.data.max() > 1
    assert np.all(counts.data == np.round(counts.data))
    with pytest.raises(ValueError, match="values"):
        workloads.event_frames(1, values="sum")


@pytest.mark.parametrize("density", [0.005, 0.03])
def test_lidar_bev(density):
    x = workloads.lidar_bev(4, density=density, seed=4)
    canonical(x, 4, (512, 512))
    assert workloads.density(x) == pytest.approx(density, rel=0.01)
    assert x.data.min() >= 0.05 and x.data.max() <= 1.0
    # Thin structures: most occupied cells have an occupied neighbour along some line.
    image = x[0].toarray().reshape(512, 512) != 0
    padded = np.pad(image, 1)
    neighbours = sum(padded[1 + dy:513 + dy, 1 + dx:513 + dx]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    assert (neighbours[image] > 0).mean() > 0.6


@pytest.mark.parametrize("make", [
    lambda seed: workloads.roi_footprints(200, frame=(128, 128), seed=seed),
    lambda seed: workloads.event_frames(4, (60, 80), 0.03, seed=seed),
    lambda seed: workloads.lidar_bev(2, (128, 128), 0.02, seed=seed),
])
def test_deterministic_by_seed(make):
    a, b, c = make(7), make(7), make(8)
    assert (a != b).nnz == 0 and np.array_equal(a.indices, b.indices)
    assert (a != c).nnz > 0


def test_gaussian_kernel():
    for size in (3, 7, 15):
        k = workloads.gaussian_kernel(size)
        assert k.shape == (size, size) and k.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(k, k[::-1, ::-1])
        assert k.argmax() == size * size // 2
    assert workloads.gaussian_kernel(5, sigma=100.0).std() < 1e-5  # a flat box


def test_density():
    assert workloads.density(scipy.sparse.csr_matrix((3, 4))) == 0.0
    assert workloads.density(scipy.sparse.csr_matrix(np.eye(4))) == 0.25


SMALL = {
    "roi": (lambda: workloads.roi_footprints(50, frame=(128, 128), seed=5), (128, 128)),
    "events": (lambda: workloads.event_frames(3, (26, 35), 0.05, seed=6), (26, 35)),
    "events-counts": (lambda: workloads.event_frames(2, (40, 30), 0.02, seed=7,
                                                     values="counts"), (40, 30)),
    "lidar": (lambda: workloads.lidar_bev(2, (96, 96), 0.03, seed=8), (96, 96)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workload", list(SMALL))
def test_scipy_parity_on_workloads(workload, mode):
    """toeplitz_conv2d (auto, direct, precomputed) and compat on each small workload equal
    scipy.signal.convolve2d image by image, to float64 rounding."""
    make, shape = SMALL[workload]
    x = make()
    images = x.toarray().reshape(x.shape[0], *shape)
    x_torch = csr_from_scipy(x)
    for ksize in (3, 7):
        kernel = workloads.gaussian_kernel(ksize)
        expected = scipy_reference(images, kernel, mode)
        for method in tsc.toeplitz.METHODS:
            out = tsc.toeplitz_conv2d(x_torch, torch.from_numpy(kernel), shape, mode, method)
            np.testing.assert_allclose(out.to_dense().numpy(), expected, rtol=1e-12,
                                       atol=1e-15, err_msg=f"{method} k{ksize}")
        out = Toeplitz_convolution2d(shape, kernel, mode)(x)
        assert scipy.sparse.issparse(out) and out.shape == expected.shape
        np.testing.assert_allclose(out.toarray(), expected, rtol=1e-12, atol=1e-15,
                                   err_msg=f"compat k{ksize}")
