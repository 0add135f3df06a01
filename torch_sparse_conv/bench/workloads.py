"""Sparse-image batches that look like the data sparse-input convolution is used on, for the
benchmark's workload suites (bench/toeplitz_workloads.py), its tests and the demo.

Every generator is deterministic (a ``numpy.random.Generator`` seeded with ``seed``), fully
vectorised, and returns a canonical scipy CSR matrix ``(B, H*W)``: one flattened image a row,
columns sorted within a row, no duplicates, no stored zeros, float64 unless ``dtype`` says
otherwise. :func:`density` measures what a batch really holds (the requested density is a
target: clusters overlap, frames clip blobs).

* :func:`roi_footprints`: calcium-imaging ROI footprints (suite2p, CaImAn), one ROI a row;
* :func:`event_frames`: event-camera time slices (DVS346, Prophesee-like sensors);
* :func:`lidar_bev`: LiDAR bird's-eye-view grids (road edges, walls, range rings, clutter);
* :func:`gaussian_kernel`: the normalised Gaussian blur kernels those are convolved with.
"""
from typing import Optional, Tuple

import numpy as np
import scipy.sparse

Shape = Tuple[int, int]


def density(x) -> float:
    """Fraction of stored entries of a batch ``(B, H*W)``: ``nnz / (B * H * W)``."""
    rows, cols = x.shape
    return x.nnz / (rows * cols) if rows * cols else 0.0


def gaussian_kernel(size: int, sigma: Optional[float] = None) -> np.ndarray:
    """A ``size x size`` Gaussian, sigma ``size / 6`` unless given (the kernel then holds
    +-3 sigma), normalised to sum 1: a blur that keeps a footprint's total."""
    sigma = size / 6.0 if sigma is None else sigma
    axis = np.arange(size) - (size - 1) / 2.0
    kernel = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2.0 * sigma ** 2))
    return kernel / kernel.sum()


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: Shape,
         dtype) -> scipy.sparse.csr_matrix:
    """CSR from entries already sorted by (row, column) and distinct."""
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    index = np.int32 if max(shape[1], len(cols)) < 2 ** 31 else np.int64
    return scipy.sparse.csr_matrix((values.astype(dtype), cols.astype(index),
                                    indptr.astype(index)), shape=shape)


def _first_distinct(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, batch: int,
                    pixels: int, target: int):
    """Of a pool of events (in random order), keeps per row the first ``target`` distinct
    pixels; returns them sorted by (row, column) with the summed weight and the number of
    events that fell on each. Drawing more events than needed and keeping the first distinct
    ones hits a density exactly however much the events pile up."""
    keys = rows.astype(np.int64) * pixels + cols
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    summed = np.bincount(inverse, weights=weights, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    row_of = unique // pixels
    order = np.lexsort((first, row_of))              # by row, then by first appearance
    sorted_rows = row_of[order]
    starts = np.searchsorted(sorted_rows, np.arange(batch))
    rank = np.arange(len(order)) - starts[sorted_rows]
    kept = np.sort(order[rank < target])             # unique keys are sorted: back in order
    return row_of[kept], unique[kept] % pixels, summed[kept], counts[kept]


def roi_footprints(n_rois: int, frame: Shape = (512, 512), radius: Tuple[float, float] = (3, 10),
                   seed: int = 0, threshold: float = 0.15, jitter: float = 0.1,
                   dtype=np.float64) -> scipy.sparse.csr_matrix:
    """Spatial footprints of calcium-imaging ROIs (cell bodies) as suite2p and CaImAn give
    them, the data sparse_convolution is mostly used to blur: one ROI a row of a
    ``(n_rois, H*W)`` batch over a ``frame = (H, W)`` field of view.

    Each ROI is an elliptical Gaussian blob: centre uniform anywhere in the frame (so some
    are cut by its edges), semi-axes drawn uniformly from ``radius`` (pixels), random
    orientation. Every weight is scaled by a uniform factor in ``1 +- jitter`` (ragged
    edges, as fitted footprints have), weights under ``threshold`` of the peak are dropped
    (the Gaussian is cut where it falls to ``threshold``, i.e. at the semi-axes), and each
    row is normalised to sum 1. A 3-10 px radius gives about 25 to 320 pixels an ROI
    (mean near 130). 5000 ROIs take about 0.2 s.
    """
    rng = np.random.default_rng(seed)
    h, w = frame
    lo, hi = radius
    if not 0 < lo <= hi:
        raise ValueError(f"radius must be 0 < low <= high, got {radius}")
    centre = rng.random((n_rois, 2)) * [h, w]                   # (y, x), anywhere
    axes = rng.uniform(lo, hi, (n_rois, 2))
    angle = rng.uniform(0.0, np.pi, n_rois)
    cut = np.sqrt(-2.0 * np.log(threshold))                     # Mahalanobis radius of the cut
    sigma = axes / cut
    reach = int(np.ceil(hi)) + 1
    offsets = np.arange(-reach, reach + 1)
    base = np.floor(centre).astype(np.int64)
    ys = base[:, 0, None, None] + offsets[None, :, None]       # (n, P, 1)
    xs = base[:, 1, None, None] + offsets[None, None, :]       # (n, 1, P)
    dy, dx = ys + 0.5 - centre[:, 0, None, None], xs + 0.5 - centre[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (dx * cos + dy * sin) / sigma[:, 0, None, None]
    v = (-dx * sin + dy * cos) / sigma[:, 1, None, None]
    weight = np.exp(-0.5 * (u * u + v * v))
    weight = weight * rng.uniform(1.0 - jitter, 1.0 + jitter, weight.shape)
    keep = (weight >= threshold) & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    roi, iy, ix = np.nonzero(keep)                              # row-major: sorted pixels
    pixel = ys[roi, iy, 0] * w + xs[roi, 0, ix]
    values = weight[roi, iy, ix]
    values = values / np.bincount(roi, weights=values, minlength=n_rois)[roi]
    return _csr(roi, pixel, values, (n_rois, h * w), dtype)


def event_frames(batch: int, shape: Shape = (260, 346), density: float = 0.02, seed: int = 0,
                 noise: float = 0.3, values: str = "polarity",
                 dtype=np.float64) -> scipy.sparse.csr_matrix:
    """Event-camera data binned into ``batch`` time slices of ``shape = (H, W)`` pixels
    ((260, 346) a DVS346, (480, 640) a VGA Prophesee-like sensor): a ``(batch, H*W)`` batch
    with ``density`` of the pixels of every slice active (1-5 % is typical).

    A fraction ``noise`` of the events is background activity, uniform over the sensor; the
    rest fire along the edges of moving objects: elliptical outlines (radius 3-12 % of the
    smaller side) drifting 1-4 px a slice, with events scattered about 1 px off the edge, so
    they come in dense curved bands that move from slice to slice. ``values='polarity'``
    gives +1 / -1 (ON where an edge advances, OFF where it recedes; the sign of the sum
    where both fall on a pixel), ``values='counts'`` the number of events a pixel got.
    """
    if values not in ("polarity", "counts"):
        raise ValueError(f"values must be 'polarity' or 'counts', got {values!r}")
    rng = np.random.default_rng(seed)
    h, w = shape
    target = int(round(density * h * w))
    edge_target = target * (1.0 - noise)
    # Objects: enough outline (about 3 px of band a pixel of outline) to hold twice the edge
    # events, so the bands are dense but not saturated.
    radius = rng.uniform(0.03, 0.12, 4096) * min(h, w)
    aspect = rng.uniform(0.5, 1.0, 4096)
    outline = 2 * np.pi * radius * (1 + aspect) / 2
    n_objects = max(1, int(np.searchsorted(np.cumsum(outline), edge_target / 1.5)) + 1)
    radius, aspect = radius[:n_objects], aspect[:n_objects]
    start = rng.random((n_objects, 2)) * [h, w]
    heading = rng.uniform(0, 2 * np.pi, n_objects)
    velocity = rng.uniform(1, 4, (n_objects, 1)) * np.stack([np.sin(heading),
                                                            np.cos(heading)], 1)
    # Edge events: an object of each event, a point on its outline, jittered off it.
    n_edge = int(2 * edge_target) + 1
    obj = rng.integers(0, n_objects, (batch, n_edge))
    phi = rng.uniform(0, 2 * np.pi, (batch, n_edge))
    normal = np.stack([np.sin(phi) * aspect[obj], np.cos(phi)], -1)
    centre = start[obj] + velocity[obj] * np.arange(batch)[:, None, None]
    point = centre + radius[obj, None] * normal + rng.normal(0, 1.0, (batch, n_edge, 2))
    polarity = np.where(np.einsum("bnc,bnc->bn", normal, velocity[obj]) >= 0, 1.0, -1.0)
    inside = (point[..., 0] >= 0) & (point[..., 0] < h) & (point[..., 1] >= 0) & \
        (point[..., 1] < w)
    slice_, index = np.nonzero(inside)
    pixel = point[slice_, index, 0].astype(np.int64) * w + point[slice_, index, 1].astype(np.int64)
    # Background activity: uniform, random polarity; more than needed, as is the edge pool.
    n_noise = int(2 * target * noise) + target // 4 + 1
    noise_slice = np.repeat(np.arange(batch), n_noise)
    noise_pixel = rng.integers(0, h * w, batch * n_noise)
    rows = np.concatenate([slice_, noise_slice])
    cols = np.concatenate([pixel, noise_pixel])
    signs = np.concatenate([polarity[slice_, index], rng.choice([-1.0, 1.0], batch * n_noise)])
    shuffle = rng.permutation(len(rows))
    rows, cols, signs = rows[shuffle], cols[shuffle], signs[shuffle]
    rows, cols, summed, counts = _first_distinct(rows, cols, signs, batch, h * w, target)
    out = counts.astype(np.float64) if values == "counts" else np.where(summed < 0, -1.0, 1.0)
    return _csr(rows, cols, out, (batch, h * w), dtype)


def lidar_bev(batch: int, shape: Shape = (512, 512), density: float = 0.01, seed: int = 0,
              clutter: float = 0.2, dtype=np.float64) -> scipy.sparse.csr_matrix:
    """LiDAR point clouds rasterised to bird's-eye-view grids (``shape = (H, W)`` cells around
    the sensor at the centre, as detection networks such as PointPillars take them): a
    ``(batch, H*W)`` batch, each grid with ``density`` of its cells occupied (0.5-3 %).

    Most points (``1 - clutter``) lie on long thin structures 1-3 cells wide: straight road
    edges and curbs along the driving direction, walls and fences at random angles, and
    range rings (arcs around the sensor, where the beams hit the ground). The rest are
    clutter (vegetation, poles, cars), spread uniformly. Each cell holds the mean intensity
    (0.05-1) of its points.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    target = int(round(density * h * w))
    size = min(h, w)
    structured = target * (1.0 - clutter)
    # Structures (about length x width cells each) until they cover 1.5x the structured
    # share; twice that many points drawn on them fill most of their cells.
    count = int(3 * structured / (0.7 * size)) + 4
    kind = rng.integers(0, 3, (batch, count))           # 0 road edge, 1 wall, 2 range ring
    length = rng.uniform(0.1, 0.6, (batch, count)) * size
    width = rng.uniform(1.0, 3.0, (batch, count))
    area = length * width
    used = np.cumsum(area, 1) - area < 1.5 * structured
    cells = np.cumsum(area * used, 1)
    centre = rng.random((batch, count, 2)) * [h, w]
    angle = np.where(kind == 0, np.pi / 2 + rng.normal(0, 0.05, (batch, count)),
                     rng.uniform(0, np.pi, (batch, count)))
    ring = rng.uniform(0.1, 0.48, (batch, count)) * size
    ring_start = rng.uniform(0, 2 * np.pi, (batch, count))
    n_points = int(2 * structured) + 1
    # Each point on a structure drawn in proportion to its cells (one searchsorted for all
    # grids: each row's cumulative cells shifted past the previous row's).
    shift = (cells[:, -1].max() + 1) * np.arange(batch)[:, None]
    pick = rng.random((batch, n_points)) * cells[:, -1:] + shift
    pick = np.searchsorted((cells + shift).ravel(), pick) - count * np.arange(batch)[:, None]
    pick = np.minimum(pick, count - 1)
    b = np.arange(batch)[:, None]
    t = rng.uniform(-0.5, 0.5, (batch, n_points))
    across = rng.uniform(-0.5, 0.5, (batch, n_points)) * width[b, pick]
    a = angle[b, pick]
    along = t * length[b, pick]
    line = centre[b, pick] + np.stack([along * np.sin(a) + across * np.cos(a),
                                       along * np.cos(a) - across * np.sin(a)], -1)
    theta = ring_start[b, pick] + along / ring[b, pick]
    radial = ring[b, pick] + across
    arc = np.array([h / 2, w / 2]) + np.stack([radial * np.sin(theta),
                                               radial * np.cos(theta)], -1)
    point = np.where((kind[b, pick] == 2)[..., None], arc, line)
    inside = (point[..., 0] >= 0) & (point[..., 0] < h) & (point[..., 1] >= 0) & \
        (point[..., 1] < w)
    slice_, index = np.nonzero(inside)
    pixel = point[slice_, index, 0].astype(np.int64) * w + point[slice_, index, 1].astype(np.int64)
    n_clutter = int(2 * target * clutter) + target // 4 + 1
    rows = np.concatenate([slice_, np.repeat(np.arange(batch), n_clutter)])
    cols = np.concatenate([pixel, rng.integers(0, h * w, batch * n_clutter)])
    intensity = rng.uniform(0.05, 1.0, len(rows))
    shuffle = rng.permutation(len(rows))
    rows, cols, summed, counts = _first_distinct(rows[shuffle], cols[shuffle],
                                                 intensity[shuffle], batch, h * w, target)
    return _csr(rows, cols, summed / counts, (batch, h * w), dtype)
