"""Modules and compat objects shared by several Python threads give, call after call, exactly
what one thread gets (no shared scratch, no half-replaced kept T)."""
import threading

import numpy as np
import scipy.sparse
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv.compat import Toeplitz_convolution2d

from testing import csr_from_scipy

THREADS = 4
CALLS = 200


def run_in_threads(calls):
    """Runs every (name, fn, expected) of `calls` CALLS times in each of THREADS threads, in a
    different order per thread; returns the names whose result ever differed."""
    mismatches, lock = set(), threading.Lock()
    barrier = threading.Barrier(THREADS)

    def worker(offset):
        barrier.wait()  # start together, so the calls overlap
        for step in range(CALLS):
            name, fn, expected = calls[(step + offset) % len(calls)]
            if not expected(fn()):
                with lock:
                    mismatches.add(name)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return mismatches


def test_shared_modules_and_compat_objects_from_four_threads():
    torch.manual_seed(0)
    x = torch.randn(3, 16, 12, 12)
    calls = []
    for method in ["direct", "unfold", "dense", "auto"]:
        layer = tsc.SparseConv2d(16, 24, 3, padding=1, density=0.2, method=method)
        with torch.no_grad():
            want = layer(x)
        calls.append((f"SparseConv2d {method}",
                      lambda layer=layer: layer(x).detach(),
                      lambda out, want=want: torch.equal(out, want)))

    images = scipy.sparse.random(20, 30 * 28, density=0.05, random_state=1, format="csr")
    sparse_x = csr_from_scipy(images)
    kernel = torch.rand(5, 5, dtype=torch.float64)
    for method in ["direct", "precomputed"]:
        module = tsc.ToeplitzConv2d((30, 28), kernel, mode="same", method=method)
        want = module(sparse_x).to_dense()
        calls.append((f"ToeplitzConv2d {method}",
                      lambda module=module: module(sparse_x).detach().to_dense(),
                      lambda out, want=want: torch.equal(out, want)))
        compat = Toeplitz_convolution2d((30, 28), kernel.numpy(), "same", method=method)
        want_np = compat(images).toarray()
        calls.append((f"compat {method}", lambda compat=compat: compat(images).toarray(),
                      lambda out, want=want_np: np.array_equal(out, want)))

    assert run_in_threads(calls) == set()
