"""Toeplitz references: the naive scatter over the stored entries (output pattern, closed-form
gradients, and values of frames too large to densify), scipy.signal.convolve2d per image for
the values, and the comparisons of a CSR or dense result with them."""
import time
import numpy as np
import torch

from bad_input_oracles import toeplitz_geometry
from testing import scipy_reference

from .checks import Attempt
from .tolerance import Mismatch, as_numpy, error_ratio
from .toeplitz_cases import SparseImages, ToeplitzConfig


HUGE_FRAME_SECONDS = 1.0  # any call on a ~10^10-pixel frame holding a handful of entries


class ToeplitzReference:
    """The naive scatter over stored entries: entry (b, r, c, v) adds v * k[i, j] to output
    pixel (r + i - off_r, c + j - off_c) of image b when that lies inside the output. Its
    keys (b * P_out + column) are the output pattern; values come from scipy.signal.convolve2d
    per image (or from the scatter itself on frames too large to densify); the gradients are
    the scatter's closed forms."""

    def __init__(self, images: SparseImages, kernel: np.ndarray, image_shape, mode,
                 dense_values: bool):
        h, w = image_shape
        kh, kw = kernel.shape
        self.kernel_shape = kernel.shape
        # output size, and where its pixel (0, 0) sits in the full convolution (scipy's)
        (self.out_h, self.out_w), (off_r, off_c) = toeplitz_geometry(image_shape, kernel.shape,
                                                                     mode)
        self.out_pixels = self.out_h * self.out_w
        r, c = images.col // w, images.col % w
        taps_r, taps_c = np.divmod(np.arange(kh * kw), kw)
        orow = r[:, None] + taps_r[None, :] - off_r
        ocol = c[:, None] + taps_c[None, :] - off_c
        inside = (orow >= 0) & (orow < self.out_h) & (ocol >= 0) & (ocol < self.out_w)
        self.entry, self.tap = np.nonzero(inside)  # one (entry, tap) pair per product
        pair_keys = (images.rows[self.entry] * self.out_pixels
                     + orow[self.entry, self.tap] * self.out_w + ocol[self.entry, self.tap])
        self.keys, self.pair_to_key = np.unique(pair_keys, return_inverse=True)
        self.entry_values = images.values.astype(np.float64)
        self.kernel_flat = kernel.astype(np.float64).reshape(-1)
        products = self.entry_values[self.entry] * self.kernel_flat[self.tap]
        count = len(self.keys)
        self.scatter_values = np.bincount(self.pair_to_key, products, count)
        self.magnitude = np.bincount(self.pair_to_key, np.abs(products), count)
        self.terms = np.bincount(self.pair_to_key, minlength=count)
        self.values = self.scatter_values
        if dense_values:  # the values from scipy, the independent reference
            images_2d = images.dense().reshape(images.batch, h, w)
            dense = scipy_reference(images_2d, kernel.astype(np.float64), mode) \
                if images.batch else np.zeros((0, self.out_pixels))
            self.values = dense.reshape(-1)[self.keys]
            self.dense_output = dense

    def gradients(self, upstream: np.ndarray):
        """(grad of each entry value, its magnitude, grad of the kernel, its magnitude) for a
        loss sum(upstream * output values), upstream given on self.keys."""
        g = upstream.astype(np.float64)[self.pair_to_key]
        entries, taps = len(self.entry_values), len(self.kernel_flat)
        k, v = self.kernel_flat[self.tap], self.entry_values[self.entry]
        grad_values = np.bincount(self.entry, k * g, entries)
        grad_values_mag = np.bincount(self.entry, np.abs(k * g), entries)
        grad_kernel = np.bincount(self.tap, v * g, taps).reshape(self.kernel_shape)
        grad_kernel_mag = np.bincount(self.tap, np.abs(v * g), taps).reshape(self.kernel_shape)
        return grad_values, grad_values_mag, grad_kernel, grad_kernel_mag

    def self_check(self) -> None:
        """The scatter and scipy must agree, or the reference itself is wrong."""
        error_ratio("reference self-check (scatter vs scipy)", self.scatter_values,
                    self.values, self.magnitude, self.terms, torch.float64)


def single_image_reference(images: SparseImages, kernel, cfg) -> ToeplitzReference:
    """The reference of image 0 alone (batching=False sees one (H, W) matrix)."""
    first = SparseImages(images.crow[:2], images.col[:images.crow[1]],
                         images.values[:images.crow[1]], 1, images.pixels)
    return ToeplitzReference(first, kernel, cfg.image_shape, cfg.mode, not cfg.huge)


def sparse_output_keys(a: Attempt, crow, col, batch: int, out_pixels: int,
                       index_dtype=None) -> np.ndarray:
    """Checks a CSR output's structure (row pointers, strictly increasing in-range columns,
    index dtype) and returns its keys b * P_out + column."""
    crow, col = np.asarray(as_numpy(crow)), np.asarray(as_numpy(col))
    if index_dtype is not None:
        a.expect(crow.dtype == index_dtype and col.dtype == index_dtype,
                 f"index dtypes {crow.dtype}/{col.dtype}, expected {np.dtype(index_dtype)}")
    a.expect(crow.shape == (batch + 1,), f"{crow.shape[0]} row pointers for {batch} images")
    a.expect(crow[0] == 0 and crow[-1] == col.size and np.all(np.diff(crow) >= 0),
             "row pointers are not a valid CSR")
    rows = np.repeat(np.arange(batch), np.diff(crow))
    a.expect(col.size == 0 or (col.min() >= 0 and col.max() < out_pixels),
             "output column out of range")
    same_row = rows[1:] == rows[:-1]
    a.expect(np.all(col[1:][same_row] > col[:-1][same_row]),
             "output columns are not strictly increasing within an image")
    return rows.astype(np.int64) * out_pixels + col.astype(np.int64)


def compare_sparse_output(a: Attempt, what: str, keys, values, ref: ToeplitzReference,
                          dtype, exact_pattern: bool = True) -> None:
    """Values on the output pattern. exact_pattern: the pattern is the footprint (the torch
    operators). Otherwise (compat, scipy conventions) the pattern is the nonzero sums: within
    the footprint, no stored zeros, and a footprint pixel left out must be zero within
    tolerance."""
    values = as_numpy(values)
    if exact_pattern:
        if not np.array_equal(keys, ref.keys):
            missing = np.setdiff1d(ref.keys, keys)[:5]
            extra = np.setdiff1d(keys, ref.keys)[:5]
            raise Mismatch(f"{what}: output pattern differs from the footprint of the stored "
                           f"entries: {len(keys)} stored, {len(ref.keys)} expected; missing "
                           f"keys {missing.tolist()}, extra {extra.tolist()}")
        a.compare(what, values, ref.values, ref.magnitude, ref.terms, dtype)
        return
    position = np.searchsorted(ref.keys, keys)
    inside = position < len(ref.keys)
    inside[inside] = ref.keys[position[inside]] == keys[inside]
    a.expect(bool(np.all(inside)), f"{what}: stores pixels outside the footprint "
             f"{keys[~inside][:5].tolist()}")
    a.expect(bool(np.all(values != 0)), f"{what}: stores exact zeros")
    full = np.zeros(len(ref.keys))
    full[position] = values
    a.compare(what, full, ref.values, ref.magnitude, ref.terms, dtype)


def dense_reference(ref: ToeplitzReference, batch: int):
    """(values, magnitudes, terms) as dense (B, P_out) arrays, zero off the footprint."""
    values, magnitude = np.zeros(batch * ref.out_pixels), np.zeros(batch * ref.out_pixels)
    terms = np.ones(batch * ref.out_pixels)
    values[ref.keys], magnitude[ref.keys], terms[ref.keys] = \
        ref.values, ref.magnitude, ref.terms
    shape = (batch, ref.out_pixels)
    return values.reshape(shape), magnitude.reshape(shape), terms.reshape(shape)


def check_torch_output(cfg, a: Attempt, out, ref: ToeplitzReference) -> None:
    a.expect(out.layout == torch.sparse_csr, f"layout {out.layout}")
    a.expect(tuple(out.shape) == (cfg.batch, ref.out_pixels), f"shape {tuple(out.shape)}")
    a.expect(out.dtype == cfg.dtype, f"dtype {out.dtype}")
    check_parts(cfg, a, out.crow_indices(), out.col_indices(), out.values(), ref)


def check_parts(cfg, a: Attempt, crow, col, values, ref: ToeplitzReference) -> None:
    a.expect(crow.dtype == col.dtype == torch.int64, "indices must be int64")
    keys = sparse_output_keys(a, crow, col, cfg.batch, ref.out_pixels)
    compare_sparse_output(a, "output", keys, values, ref, cfg.dtype)


def check_toeplitz_gradients(cfg, a: Attempt, ref: ToeplitzReference, upstream, grad_values,
                             grad_kernel) -> None:
    """Either gradient may be None (not asked for)."""
    grad_v, grad_v_mag, grad_k, grad_k_mag = ref.gradients(upstream)
    taps = cfg.kernel_shape[0] * cfg.kernel_shape[1]
    if grad_values is not None:
        a.compare("grad values", grad_values, grad_v, grad_v_mag, taps, cfg.dtype)
    if grad_kernel is not None:
        a.compare("grad kernel", grad_kernel, grad_k, grad_k_mag, max(1, len(ref.entry)),
                  cfg.dtype)


def timed(cfg: ToeplitzConfig, a: Attempt, what: str, fn):
    """Runs fn; on a huge frame it must finish within HUGE_FRAME_SECONDS."""
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    if cfg.huge:
        a.expect(seconds <= HUGE_FRAME_SECONDS, f"{what} took {seconds:.2f} s on a "
                 f"{cfg.image_shape[0]}x{cfg.image_shape[1]} frame with {cfg.batch} images "
                 f"(limit {HUGE_FRAME_SECONDS} s)")
    return result
