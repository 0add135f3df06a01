"""Sparse-input conv2d benchmark on sparse_convolution's own 36-cell grid.

Cells: images 50x50 and 100x100, kernels 5x5 and 11x11, batch 1, 50, 500, density 0.001,
0.01, 0.1; mode 'same'; float64 scipy CSR in and out. As in sparse_convolution's benchmark,
construction plus call is timed. Contenders, same process, same inputs, outputs checked equal
to scipy.signal.convolve2d's first:
  ours:compat        torch_sparse_conv.compat.Toeplitz_convolution2d (scipy in, scipy out)
  ours:native        torch_sparse_conv.toeplitz_conv2d on a torch CSR tensor (no conversion)
  ours:compat-precomputed  compat with method='precomputed': T built in the timed
                     construction + call, as sparse_convolution's precomputed builds it
  ours:precomputed-kept    the toeplitz_conv2d_precomputed operator on a torch CSR tensor with
                     T built once outside the timer (what ToeplitzConv2d(method='precomputed')
                     pays per call once it keeps T): the figure behind the 'auto' rule
  sc:<method>+<backend>  every method and backend of sparse_convolution 0.4.2
The bar is sparse_convolution's default, direct with numba.
"""
import itertools
from typing import Dict, List

import numpy as np
import scipy.signal
import scipy.sparse
import torch

from ..compat import Toeplitz_convolution2d
from ..toeplitz import toeplitz_conv2d, toeplitz_matrix
from .timing import geometric_mean, time_interleaved

BAR = "sc:direct+numba"
SC_METHODS = [("direct", "numba"), ("precomputed", "numpy"), ("precomputed", "numba"),
              ("precomputed", "torch"), ("lazy", "numpy"), ("lazy", "torch"),
              ("gather_scatter", "numpy"), ("gather_scatter", "numba"),
              ("gather_scatter", "torch")]


def grid(quick: bool):
    sizes, kernels = [50, 100], [5, 11]
    batches, densities = [1, 50, 500], [0.001, 0.01, 0.1]
    if quick:
        sizes, kernels, batches, densities = [100], [5], [50], [0.01]
    return list(itertools.product(sizes, kernels, batches, densities))


def make_batch(size: int, batch: int, density: float, seed: int) -> scipy.sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    rows = [scipy.sparse.random(1, size * size, density=density, random_state=rng,
                                format="csr") for _ in range(batch)]
    return scipy.sparse.vstack(rows).tocsr()


def run(batch=None, device: str = "cpu", quick: bool = False, rounds: int = 5,
        progress=None, peers: bool = True) -> List[Dict]:
    try:
        import sparse_convolution
        import numba
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # the peer is optional: ours alone still gets timed
        sparse_convolution, peers = None, False
    rows = []
    for index, (size, ksize, nbatch, density) in enumerate(grid(quick)):
        x = make_batch(size, nbatch, density, seed=index)
        k = np.random.default_rng(100 + index).random((ksize, ksize))
        shape = (size, size)
        x_torch = torch.sparse_csr_tensor(torch.from_numpy(x.indptr.astype(np.int64)),
                                          torch.from_numpy(x.indices.astype(np.int64)),
                                          torch.from_numpy(x.data), size=x.shape)
        k_torch = torch.from_numpy(k)
        t_kept = toeplitz_matrix(k_torch, shape, "same")
        t_parts = (t_kept.crow_indices(), t_kept.col_indices(), t_kept.values())

        def precomputed_kept():
            parts = torch.ops.torch_sparse_conv.toeplitz_conv2d_precomputed(
                x_torch.crow_indices(), x_torch.col_indices(), x_torch.values(), k_torch,
                list(shape), "same", *t_parts)
            return torch.sparse_csr_tensor(*parts, size=(nbatch, size * size),
                                           check_invariants=False)

        contenders = {
            "ours:compat": lambda: Toeplitz_convolution2d(shape, k, "same")(x),
            "ours:native": lambda: toeplitz_conv2d(x_torch, k_torch, shape, "same"),
            "ours:compat-precomputed": lambda: Toeplitz_convolution2d(
                shape, k, "same", method="precomputed")(x),
            "ours:precomputed-kept": precomputed_kept,
        }
        if peers:
            for method, backend in SC_METHODS:
                contenders[f"sc:{method}+{backend}"] = (
                    lambda m=method, b=backend: sparse_convolution.Toeplitz_convolution2d(
                        shape, k, "same", method=m, backend=b, device="cpu")(x))
        dense_ref = np.stack([scipy.signal.convolve2d(row.toarray().reshape(shape), k, "same")
                              .reshape(-1) for row in x]) if nbatch <= 50 else None
        for name, fn in contenders.items():
            out = fn()
            out = out.to_dense().numpy() if isinstance(out, torch.Tensor) else out.toarray()
            if dense_ref is None:
                dense_ref = out if name == "ours:compat" else dense_ref
            if dense_ref is not None and not np.allclose(out, dense_ref, atol=1e-10):
                raise AssertionError(f"{name} disagrees with the reference on cell {index}")
        seconds = time_interleaved(contenders, rounds=rounds, warmup=1,
                                   min_round_seconds=0.02)
        row = dict(cell=f"{size}x{size} k{ksize} b{nbatch} d{density}", size=size,
                   kernel=ksize, batch=nbatch, density=density, seconds=seconds)
        if BAR in seconds:
            row["speedup"] = {name: seconds[BAR] / t for name, t in seconds.items()}
        rows.append(row)
        if progress:
            progress(row)
    return rows


def summarize(rows: List[Dict]) -> Dict:
    if not rows or "speedup" not in rows[0]:
        return {}
    summary = {}
    for name in ("ours:compat", "ours:native", "ours:compat-precomputed",
                 "ours:precomputed-kept"):
        wins = sum(1 for r in rows if r["speedup"][name] > 1.0)
        summary[name] = dict(wins=wins, cells=len(rows),
                             geomean=geometric_mean(r["speedup"][name] for r in rows))
    return summary


def markdown(rows: List[Dict]) -> str:
    names = list(rows[0]["seconds"])
    lines = ["| cell | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        cells = []
        for name in names:
            text = f"{r['seconds'][name] * 1e3:.3g} ms"
            if "speedup" in r and name.startswith("ours"):
                text += f" ({r['speedup'][name]:.1f}x)"
            cells.append(text)
        lines.append(f"| {r['cell']} | " + " | ".join(cells) + " |")
    summary = summarize(rows)
    if summary:
        lines += ["", f"Against the bar ({BAR}, sparse_convolution's default):", ""]
        for name, s in summary.items():
            lines.append(f"- {name}: faster in {s['wins']} of {s['cells']} cells, geometric-mean "
                         f"speedup {s['geomean']:.2f}x")
    return "\n".join(lines)
