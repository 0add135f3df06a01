"""Sparse-filter cases: the configuration a seed draws, and the inputs built from it (the input
tensor in one of several layouts, the weight's memory layout, hand-made CSR)."""
import dataclasses
import random
from typing import Tuple

import numpy as np
import torch

from .draws import pick_density


FILTER_METHODS = {"cpu": ("auto", "direct", "unfold", "dense"),
                  "cuda": ("auto", "direct", "spmm", "dense")}


# Entry points: the functional API, the packed operator (as packed and hand-made CSR),
# SparseConv2d converted from an nn.Conv2d and constructed with its own pattern, and the
# seed recipe's drop-ins in compat.
FILTER_ENTRIES = ("functional", "op", "op_handmade", "module", "module_init", "compat_recipe")


FILTER_ENTRY_WEIGHTS = (4, 2, 3, 3, 1, 1)


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# How the input tensor is laid out: strides and storage the kernels must read correctly.
LAYOUTS = ("contiguous", "channels_last", "sliced", "transposed", "expanded",
           "channels_last_sliced")


CSR_EDITS = ("unsorted", "duplicates", "explicit_zeros")


@dataclasses.dataclass
class FilterConfig:
    seed: int
    entry: str
    batch: int
    unbatched: bool
    in_channels: int
    out_channels: int
    groups: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: object  # int, (int, int), 'same' or 'valid'
    dilation: Tuple[int, int]
    size: Tuple[int, int]
    padding_mode: str
    density: float
    dtype: torch.dtype
    layout: str
    bias: bool
    backward: bool
    csr_edits: Tuple[str, ...]
    weight_layout: str  # the dense weight and bias as given: contiguous, channels_last, strided
    mutate: bool  # re-run after writing the kept values in place through .data
    from_mask: bool  # module: from_dense(conv, mask=...) rather than a pre-masked conv
    pattern: str  # module_init's initial pattern


def symmetric_padding(padding, kernel, dilation) -> Tuple[int, int]:
    """The padding on each side before the output ('same': the larger, right/bottom, side)."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return tuple((d * (k - 1) + 1) // 2 for k, d in zip(kernel, dilation))
    return (padding, padding) if isinstance(padding, int) else tuple(padding)


def smallest_valid_size(size, kernel, dilation, padding, padding_mode) -> int:
    """The least input size along one dimension the configuration accepts."""
    needed = max(1, dilation * (kernel - 1) + 1 - 2 * padding)
    if padding_mode == "reflect":
        needed = max(needed, padding + 1)
    elif padding_mode == "circular":
        needed = max(needed, padding)
    return max(size, needed)


def filter_config(seed: int) -> FilterConfig:
    rng = random.Random(seed)
    entry = rng.choices(FILTER_ENTRIES, FILTER_ENTRY_WEIGHTS)[0]
    recipe = entry == "compat_recipe"
    groups = 1 if recipe else rng.choice([1, 1, 1, 2, 3, 4])
    per_group = 4 if groups > 1 else 6
    cin, cout = groups * rng.randint(1, per_group), groups * rng.randint(1, per_group)
    kernel = (rng.randint(1, 5), rng.randint(1, 5))
    stride = (rng.randint(1, 3),) * 2 if rng.random() < 0.5 else (rng.randint(1, 3),
                                                                  rng.randint(1, 3))
    dilation = (1, 1) if recipe else (
        (rng.randint(1, 3),) * 2 if rng.random() < 0.5 else (rng.randint(1, 3),
                                                             rng.randint(1, 3)))
    kinds = ["int", "pair", "valid"]
    if stride == (1, 1) and entry not in ("op", "op_handmade"):  # the op takes symmetric pairs
        kinds.append("same")
    kind = rng.choice(kinds)
    padding = {"int": rng.randint(0, 3), "pair": (rng.randint(0, 3), rng.randint(0, 3)),
               "valid": "valid", "same": "same"}[kind]
    padding_mode = rng.choice(PADDING_MODES) if entry in ("module", "module_init") else "zeros"
    size = [rng.randint(1, 20), rng.randint(1, 20)]
    if rng.random() < 0.93:  # otherwise keep what may be an invalid geometry: errors agree
        pads = symmetric_padding(padding, kernel, dilation)
        size = [smallest_valid_size(s, k, d, p, padding_mode)
                for s, k, d, p in zip(size, kernel, dilation, pads)]
    unbatched = entry in ("functional", "module", "module_init") and rng.random() < 0.15
    density = pick_density(rng, small=0.15)
    if entry == "module_init":
        density = max(density, 0.01)  # the constructor keeps at least one tap
    edits = ()
    if entry == "op_handmade":
        edits = tuple(e for e in CSR_EDITS if rng.random() < 0.6) or (rng.choice(CSR_EDITS),)
    return FilterConfig(
        seed=seed, entry=entry, batch=0 if rng.random() < 0.08 else rng.randint(1, 4),
        unbatched=unbatched,
        in_channels=cin, out_channels=cout, groups=groups, kernel=kernel, stride=stride,
        padding=padding, dilation=dilation, size=tuple(size), padding_mode=padding_mode,
        density=density, dtype=rng.choice([torch.float32, torch.float64]),
        layout=rng.choice(LAYOUTS), bias=not recipe and rng.random() < 0.6,
        backward=rng.random() < 0.8, csr_edits=edits,
        weight_layout=rng.choice(["contiguous", "contiguous", "channels_last", "strided"]),
        mutate=entry in ("op", "op_handmade", "module") and rng.random() < 0.3,
        from_mask=rng.random() < 0.5, pattern=rng.choice(["magnitude", "random"]))


def make_input(cfg: FilterConfig, gen: torch.Generator):
    """A leaf `base` and `view(base)`, the (N, C, H, W) or unbatched (C, H, W) input."""
    n, c, (h, w) = (1 if cfg.unbatched else cfg.batch), cfg.in_channels, cfg.size

    def randn(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=gen).to(cfg.dtype)

    layout = cfg.layout
    if layout == "channels_last":
        base, view = randn(n, c, h, w).to(memory_format=torch.channels_last), lambda t: t
    elif layout == "sliced":  # strided in every dimension
        base = randn(n + 1, c + 2, 2 * h + 1, 3 * w)
        view = lambda t: t[1:, 1:1 + c, 1:1 + 2 * h:2, ::3]  # noqa: E731
    elif layout == "transposed":  # stored W-major, transposed back
        base, view = randn(n, c, w, h), lambda t: t.transpose(2, 3)
    elif layout == "expanded":  # one sample broadcast over the batch (stride 0)
        base, view = randn(1, c, h, w), lambda t: t.expand(n, c, h, w)
    elif layout == "channels_last_sliced":
        base = randn(n, c, h, 2 * w).to(memory_format=torch.channels_last)
        view = lambda t: t[..., 1::2]  # noqa: E731
    else:
        base, view = randn(n, c, h, w), lambda t: t
    if cfg.unbatched:
        return base, lambda t: view(t)[0]
    return base, view


def lay_out_parameters(layout: str, weight, bias):
    """The same values in another memory layout: channels_last, or every second element of
    a wider tensor (strided, not contiguous in any format; `leaf` keeps the strides)."""
    if layout == "channels_last":
        return weight.to(memory_format=torch.channels_last), bias
    if layout == "strided":
        weight = torch.stack([weight, torch.full_like(weight, 7.0)], -1)[..., 0]
        if bias is not None:
            bias = torch.stack([bias, torch.full_like(bias, 7.0)], -1)[:, 0]
    return weight, bias


def handmade_csr(weight: torch.Tensor, edits, rng: random.Random):
    """CSR of `weight`'s nonzeros with the requested liberties: columns shuffled within a row,
    values split over duplicate entries (and (u, -u) pairs on pruned taps), explicit zeros."""
    cout, taps = weight.shape[0], weight[0].numel()
    flat = weight.reshape(cout, taps)
    rows = []
    for oc in range(cout):
        entries = [(int(c), float(flat[oc, c])) for c in torch.nonzero(flat[oc]).flatten()]
        pruned = [c for c in range(taps) if flat[oc, c] == 0]
        if "duplicates" in edits:
            split = []
            for col, value in entries:
                if rng.random() < 0.4:
                    part = value * rng.uniform(0.2, 0.8)
                    split += [(col, part), (col, value - part)]
                else:
                    split.append((col, value))
            entries = split
            if pruned and rng.random() < 0.3:
                col, u = rng.choice(pruned), rng.gauss(0.0, 1.0)
                entries += [(col, u), (col, -u)]
        if "explicit_zeros" in edits and pruned and rng.random() < 0.5:
            entries += [(col, 0.0) for col in rng.sample(pruned, min(2, len(pruned)))]
        if "unsorted" in edits:
            rng.shuffle(entries)
        else:
            entries.sort(key=lambda e: e[0])
        rows.append(entries)
    row_ptr = torch.tensor([0] + list(np.cumsum([len(r) for r in rows])), dtype=torch.int64)
    col_idx = torch.tensor([c for r in rows for c, _ in r], dtype=torch.int64)
    values = torch.tensor([v for r in rows for _, v in r], dtype=torch.float64).to(weight.dtype)
    # the per-row split above rounds in float64; the kept values are what the dtype holds
    return row_ptr, col_idx, values


def maybe_int(pair, rng: random.Random):
    """A pair as the user might write it: an int when both sides agree, sometimes."""
    return pair[0] if pair[0] == pair[1] and rng.random() < 0.5 else tuple(pair)
