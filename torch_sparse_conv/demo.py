"""The main job: prune a small CNN to 90 %, convert it with sparsify, check it computes the
same outputs, and print per-layer and total speedups.

    python -m torch_sparse_conv.demo [--sparsity 0.9] [--batch 8] [--size 56] [--threads 2]
"""
import argparse
import copy

import torch
from torch import nn

from . import sparse_conv2d  # noqa: F401  (loads the operators)
from .bench.timing import time_interleaved
from .models import SmallCNN, prune_convs
from .nn import SparseConv2d, sparsify


def paired_times(dense_fn, sparse_fn, rounds: int = 9):
    """Median seconds of each, timed in alternation so machine noise hits both alike."""
    times = time_interleaved({"dense": dense_fn, "sparse": sparse_fn}, rounds=rounds,
                             min_round_seconds=0.01)
    return times["dense"], times["sparse"]


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


if __name__ == "__main__":
    main()
