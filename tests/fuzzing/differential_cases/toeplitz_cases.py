"""Toeplitz (sparse-input) cases: the configuration a seed draws, the sparse images and the
kernel built from it, and the same images as torch and scipy CSR."""
import dataclasses
import random
from typing import Tuple

import numpy as np
import scipy.sparse
import torch

from .draws import pick_density


TOEPLITZ_METHODS = ("auto", "direct", "precomputed")


MODES = ("full", "same", "valid")


HUGE_FRAMES = ((100_000, 100_000), (7, 1_000_000_000), (1_000_000_000, 3))


# T holds up to H*W*kH*kW entries: the kept-T paths run only below this.
MATRIX_LIMIT = 2_000_000


@dataclasses.dataclass
class ToeplitzConfig:
    seed: int
    image_shape: Tuple[int, int]
    kernel_shape: Tuple[int, int]
    mode: str
    batch: int
    density: float
    empty_images: float  # fraction of images left empty
    duplicates: bool
    unsorted: bool
    explicit_zeros: bool
    integer_values: bool  # small integers: every sum is exact, patterns comparable bit for bit
    zero_taps: bool
    dtype: torch.dtype
    backward: bool
    huge: bool
    index_dtype: type  # scipy's index arrays for compat: np.int32 or np.int64
    compat_dtype_given: bool  # pass dtype= to compat (else the kernel's dtype decides)
    compat_mode_override: bool  # construct compat with another mode, pass mode= in the call
    fortran_kernel: bool  # the kernel array column-major (a non-contiguous tensor)
    strided_values: bool  # the raw operator gets every second element of a wider tensor


def toeplitz_config(seed: int) -> ToeplitzConfig:
    rng = random.Random(seed)
    huge = rng.random() < 0.03
    if huge:
        image_shape = rng.choice(HUGE_FRAMES)
    else:
        def side():
            return rng.choice([1, 2, rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 40)])
        image_shape = (side(), side())
    kernel_shape = (rng.randint(1, 7), rng.randint(1, 7))
    mode = rng.choice(MODES)
    too_big = kernel_shape[0] > image_shape[0] or kernel_shape[1] > image_shape[1]
    if mode == "valid" and too_big and rng.random() < 0.9:  # else: every entry must refuse
        mode = rng.choice(["full", "same"])
    return ToeplitzConfig(
        seed=seed, image_shape=image_shape, kernel_shape=kernel_shape, mode=mode,
        batch=rng.randint(1, 3) if huge else (0 if rng.random() < 0.07 else rng.randint(1, 6)),
        density=pick_density(rng, small=0.1),
        empty_images=rng.choice([0.0, 0.0, 0.3]), duplicates=rng.random() < 0.3,
        unsorted=rng.random() < 0.3, explicit_zeros=rng.random() < 0.2,
        integer_values=rng.random() < 0.3, zero_taps=rng.random() < 0.3,
        dtype=rng.choice([torch.float32, torch.float64]), backward=rng.random() < 0.7,
        huge=huge, index_dtype=rng.choice([np.int32, np.int64]),
        compat_dtype_given=rng.random() < 0.5, compat_mode_override=rng.random() < 0.2,
        fortran_kernel=rng.random() < 0.25, strided_values=rng.random() < 0.25)


@dataclasses.dataclass
class SparseImages:
    """A batch as CSR arrays, entries in the order they are stored (duplicates, unsorted)."""
    crow: np.ndarray
    col: np.ndarray
    values: np.ndarray  # in the case's dtype
    batch: int
    pixels: int

    @property
    def rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.batch), np.diff(self.crow))

    def dense(self) -> np.ndarray:
        """(B, H*W) float64, duplicates summed."""
        out = np.zeros((self.batch, self.pixels))
        np.add.at(out, (self.rows, self.col), self.values.astype(np.float64))
        return out


def random_values(rng: np.random.Generator, n: int, integer: bool) -> np.ndarray:
    if integer:
        return rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], n)
    return rng.standard_normal(n)


def toeplitz_images(cfg: ToeplitzConfig, rng: np.random.Generator) -> SparseImages:
    h, w = cfg.image_shape
    pixels = h * w
    rows = []
    for _ in range(cfg.batch):
        if cfg.huge:  # a handful of entries (1 to 3 an image), corners and edges likely
            candidates = [0, pixels - 1, w - 1, pixels - w, int(rng.integers(0, pixels)),
                          int(rng.integers(0, pixels))]
            cols = np.unique(rng.choice(candidates, int(rng.integers(1, 4))))
        elif rng.random() < cfg.empty_images:
            cols = np.zeros(0, dtype=np.int64)
        else:
            cols = np.flatnonzero(rng.random(pixels) < cfg.density)
        values = random_values(rng, cols.size, cfg.integer_values)
        entries = list(zip(cols.tolist(), values.tolist()))
        if cfg.explicit_zeros and entries:
            for i in rng.choice(len(entries), max(1, len(entries) // 5)):
                entries[i] = (entries[i][0], 0.0)
        if cfg.duplicates and entries:
            entries = split_duplicates(entries, rng, cfg.integer_values, pixels)
        if cfg.unsorted:
            rng.shuffle(entries)
        rows.append(entries)
    crow = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    col = np.array([c for r in rows for c, _ in r], dtype=np.int64)
    values = np.array([v for r in rows for _, v in r], dtype=np.float64)
    return SparseImages(crow, col, values.astype(torch_dtype_np(cfg.dtype)), cfg.batch, pixels)


def split_duplicates(entries, rng, integer: bool, pixels: int):
    """Some entries stored as two that sum to the value; a (u, -u) pair on a new pixel."""
    out = []
    for col, value in entries:
        if rng.random() < 0.4:
            part = float(rng.integers(-2, 3)) if integer else value * rng.uniform(0.2, 0.8)
            out += [(col, part), (col, value - part)]
        else:
            out.append((col, value))
    if rng.random() < 0.5:
        col, u = int(rng.integers(0, pixels)), float(random_values(rng, 1, integer)[0])
        out += [(col, u), (col, -u)]
    return out


def toeplitz_kernel(cfg: ToeplitzConfig, rng: np.random.Generator) -> np.ndarray:
    kh, kw = cfg.kernel_shape
    kernel = random_values(rng, kh * kw, cfg.integer_values).reshape(kh, kw)
    if cfg.zero_taps:
        kernel[rng.random((kh, kw)) < 0.4] = 0.0
    kernel = kernel.astype(torch_dtype_np(cfg.dtype))
    # column-major: torch.from_numpy keeps the strides, so every entry point sees them
    return np.asfortranarray(kernel) if cfg.fortran_kernel else kernel


def torch_dtype_np(dtype):
    return np.float32 if dtype == torch.float32 else np.float64


def stored_index_dtype(images: SparseImages, wanted):
    """The index dtype the images are handed over with: `wanted` (np.int32 or np.int64), but
    int64 where a column would not fit in int32 (a cast would wrap it)."""
    return np.int32 if wanted == np.int32 and images.pixels < 2**31 else np.int64


def torch_index(np_index_dtype) -> torch.dtype:
    return torch.int32 if np_index_dtype == np.int32 else torch.int64


def torch_csr(images: SparseImages, values: torch.Tensor, device,
              index_dtype=np.int64) -> torch.Tensor:
    """A torch CSR tensor of exactly these arrays (int32 indices where asked and they fit)."""
    index = torch_index(stored_index_dtype(images, index_dtype))
    return torch.sparse_csr_tensor(torch.from_numpy(images.crow).to(device, index),
                                   torch.from_numpy(images.col).to(device, index), values,
                                   size=(images.batch, images.pixels), check_invariants=False)


def scipy_input(images: SparseImages, index_dtype) -> scipy.sparse.csr_matrix:
    """scipy CSR holding exactly these arrays (duplicates and order kept), with the index
    dtype asked for (scipy's constructor would pick its own)."""
    x = scipy.sparse.csr_matrix((images.batch, images.pixels), dtype=images.values.dtype)
    index_dtype = stored_index_dtype(images, index_dtype)
    x.data = images.values.copy()
    x.indices, x.indptr = images.col.astype(index_dtype), images.crow.astype(index_dtype)
    x.has_canonical_format = False
    x.has_sorted_indices = False
    return x
