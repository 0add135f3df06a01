"""The main job, a demo of both operators on generated data:

1. Sparse filters: prune a small CNN to 90 %, convert it with sparsify, check it computes the
   same outputs, and print per-layer and total speedups over the dense model.
2. Sparse inputs: blur 1000 calcium-imaging ROI footprints on a 512x512 frame (the benchmark's
   ROI generator, torch_sparse_conv.bench.workloads) with a 7x7 Gaussian, check the result
   against scipy.signal.convolve2d, and print the speedup over scipy and, when installed, the
   ratio to the sparse_convolution package's default (direct, numba).

    python examples/python/demo.py [--sparsity 0.9] [--batch 8] [--size 56] [--threads 2]

(scripts/run_demo.sh builds the extension first, then runs this.)
"""
import argparse
import copy

import torch
from torch import nn

from models import SmallCNN, prune_convs  # examples/python/models.py, beside this script
from torch_sparse_conv import SparseConv2d, sparsify
from torch_sparse_conv.bench.timing import time_interleaved


def paired_times(dense_fn, sparse_fn, rounds: int = 9):
    """Median seconds of each, timed in alternation so machine noise hits both alike."""
    times = time_interleaved({"dense": dense_fn, "sparse": sparse_fn}, rounds=rounds,
                             min_round_seconds=0.01)
    return times["dense"], times["sparse"]


def sparse_input_demo(threads: int) -> None:
    import numpy as np
    import scipy.signal

    from torch_sparse_conv.bench.workloads import gaussian_kernel, roi_footprints
    from torch_sparse_conv.compat import Toeplitz_convolution2d

    size, rois, kernel_size = 512, 1000, 7
    # Calcium-imaging ROI footprints, one a row: elliptical Gaussian blobs of radius 3-10 px,
    # thresholded and normalised, anywhere in a 512x512 frame (what sparse_convolution is
    # mostly used to blur), and a normalised Gaussian blur kernel.
    x = roi_footprints(rois, frame=(size, size), seed=0)
    kernel = gaussian_kernel(kernel_size)
    contenders = {"torch_sparse_conv": lambda: Toeplitz_convolution2d((size, size), kernel)(x)}
    try:
        import numba
        import sparse_convolution
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        # Its default: method 'direct', numba backend.
        contenders["sparse_convolution (direct, numba)"] = \
            lambda: sparse_convolution.Toeplitz_convolution2d((size, size), kernel, "same")(x)
    except ImportError:
        pass
    ours = contenders["torch_sparse_conv"]()
    check = [0, rois // 2, rois - 1]
    for n in check:
        expected = scipy.signal.convolve2d(x[n].toarray().reshape(size, size), kernel, "same")
        if not np.allclose(ours[n].toarray().reshape(size, size), expected, atol=1e-10):
            raise SystemExit(f"MISMATCH: image {n} differs from scipy.signal.convolve2d")
    print(f"\nsparse inputs: {rois} ROI footprints on a {size}x{size} frame ({x.nnz} "
          f"nonzeros, {x.nnz / rois:.0f} pixels an ROI), {kernel_size}x{kernel_size} "
          f"Gaussian, mode 'same'; images {check} match scipy.signal.convolve2d")
    times = time_interleaved(contenders, rounds=7, min_round_seconds=0.01)
    scipy_seconds = mean_scipy_seconds(x, kernel, size, sample=20) * rois
    print(f"  scipy.signal.convolve2d, image by image (dense): {scipy_seconds * 1e3:.0f} ms "
          "(estimated from 20 images)")
    ours = times["torch_sparse_conv"]
    for name, seconds in times.items():
        relative = "" if name == "torch_sparse_conv" else \
            f"; torch_sparse_conv runs at {seconds / ours:.2f}x its speed"
        print(f"  {name}: {seconds * 1e3:.2f} ms ({scipy_seconds / seconds:.0f}x faster than "
              f"scipy{relative})")


def mean_scipy_seconds(x, kernel, size, sample: int) -> float:
    """Mean seconds of scipy.signal.convolve2d on the first `sample` images, densified."""
    import time as _time
    import scipy.signal

    images = [x[n].toarray().reshape(size, size) for n in range(sample)]
    start = _time.perf_counter()
    for image in images:
        scipy.signal.convolve2d(image, kernel, "same")
    return (_time.perf_counter() - start) / sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    dense = prune_convs(SmallCNN().eval(), args.sparsity)
    sparse = sparsify(copy.deepcopy(dense), min_sparsity=0.5)
    x = torch.randn(args.batch, 3, args.size, args.size)

    with torch.no_grad():
        expected, got = dense(x), sparse(x)
    error = (expected - got).abs().max().item()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input "
          f"{tuple(x.shape)}, convs pruned to {args.sparsity:.0%}")
    print(f"outputs match: max |dense - sparse| = {error:.2e}")
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-4):
        raise SystemExit("MISMATCH: the sparsified model disagrees with the dense one")

    # Per layer: time each converted conv against its dense original on its real input.
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0]))
             for m in dense.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        dense(x)
    for hook in hooks:
        hook.remove()
    dense_convs = [m for m in dense.modules() if isinstance(m, nn.Conv2d)]
    sparse_convs = [m for m in sparse.modules() if isinstance(m, (nn.Conv2d, SparseConv2d))]
    print(f"{'layer':<6}{'shape':<34}{'density':>8}{'dense ms':>10}{'sparse ms':>11}"
          f"{'speedup':>9}")
    total_dense = total_sparse = 0.0
    with torch.no_grad():
        for i, (d, s) in enumerate(zip(dense_convs, sparse_convs)):
            inp = inputs[d]
            td, ts = paired_times(lambda: d(inp), lambda: s(inp))
            total_dense += td
            total_sparse += ts
            density = s.density if isinstance(s, SparseConv2d) else 1.0
            shape = f"{d.in_channels}->{d.out_channels} k{d.kernel_size[0]} s{d.stride[0]} @" \
                    f"{inp.shape[-1]}"
            kind = "" if isinstance(s, SparseConv2d) else " (kept dense)"
            print(f"{i:<6}{shape + kind:<34}{density:>8.3f}{td * 1e3:>10.2f}{ts * 1e3:>11.2f}"
                  f"{td / ts:>8.2f}x")
        print(f"{'convs':<40}{'':>8}{total_dense * 1e3:>10.2f}{total_sparse * 1e3:>11.2f}"
              f"{total_dense / total_sparse:>8.2f}x")
        td, ts = paired_times(lambda: dense(x), lambda: sparse(x))
    print(f"whole model: dense {td * 1e3:.2f} ms, sparse {ts * 1e3:.2f} ms, "
          f"speedup {td / ts:.2f}x")
    sparse_input_demo(args.threads)


if __name__ == "__main__":
    main()
