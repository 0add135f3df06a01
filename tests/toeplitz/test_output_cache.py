"""The CPU kernels' cache of freed outputs (64 KiB and more): a live output, also one compat
returned, is never overwritten; the cache's size limit and switch (TSC_OUTPUT_CACHE_MB, read
once per process, so those tests run in a fresh one). scripts/run_sanitizer_tests.sh runs
this file with the cache on."""
import numpy as np
import pytest
import scipy.sparse
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv.compat import Toeplitz_convolution2d

from testing import run_script, scipy_reference


def test_large_outputs_reuse_freed_memory_only():
    """Outputs of 64 KiB and more reuse memory of freed outputs: a live output is never
    overwritten, results stay right when memory is reused, and empty_output_cache frees it."""
    rng = np.random.default_rng(12)
    images = rng.random((120, 50, 50)) * (rng.random((120, 50, 50)) < 0.2)
    x = torch.tensor(images.reshape(120, -1)).to_sparse_csr()
    kernels = [rng.standard_normal((5, 5)) for _ in range(3)]
    expected = [scipy_reference(images, k, "same") for k in kernels]
    tsc.empty_output_cache()
    kept = tsc.toeplitz_conv2d(x, torch.tensor(kernels[0]), (50, 50))
    assert kept.values().numel() * 8 >= 2**20  # large enough for the cache
    for _ in range(2):  # the second round reuses the first one's freed buffers
        for k, want in zip(kernels[1:], expected[1:]):
            np.testing.assert_allclose(tsc.toeplitz_conv2d(x, torch.tensor(k), (50, 50))
                                       .to_dense().numpy(), want, atol=1e-10)
            scipy_out = Toeplitz_convolution2d((50, 50), k)(
                scipy.sparse.csr_matrix(images.reshape(120, -1)))
            np.testing.assert_allclose(scipy_out.toarray(), want, atol=1e-10)
    np.testing.assert_allclose(kept.to_dense().numpy(), expected[0], atol=1e-10)
    assert tsc.empty_output_cache() > 0
    assert tsc.empty_output_cache() == 0


def test_compat_outputs_own_their_memory():
    """compat's numpy outputs own the kernel's buffers (large ones from the output cache):
    a kept result is never overwritten by later calls, and edits of the kernel tensor reach
    the CPU path, which reads the same memory."""
    rng = np.random.default_rng(22)
    images = rng.random((120, 50, 50)) * (rng.random((120, 50, 50)) < 0.2)
    x = scipy.sparse.csr_matrix(images.reshape(120, -1))
    k = rng.standard_normal((5, 5))
    tsc.empty_output_cache()
    kept = Toeplitz_convolution2d((50, 50), k)(x)
    assert kept.data.nbytes >= 2**20  # large enough for the cache
    snapshot = kept.copy()
    for _ in range(3):  # freed outputs of these calls are reused by the next ones
        other = Toeplitz_convolution2d((50, 50), -k)(x)
        assert abs(other + snapshot).max() < 1e-12
        del other
    assert (kept != snapshot).nnz == 0
    conv = Toeplitz_convolution2d((50, 50), k)
    with torch.no_grad():
        conv._kernel.mul_(2.0)
    assert abs(conv(x) - 2 * snapshot).max() < 1e-12


NO_OUTPUT_CACHE = """
import numpy as np, scipy.signal, torch
import torch_sparse_conv as tsc
images = np.random.default_rng(3).random((100, 50, 50))
x = torch.tensor(images.reshape(100, -1)).to_sparse_csr()
k = np.ones((3, 3))
for _ in range(2):
    out = tsc.toeplitz_conv2d(x, torch.tensor(k), (50, 50)).to_dense().numpy()
    want = np.stack([scipy.signal.convolve2d(im, k, 'same').reshape(-1) for im in images])
    np.testing.assert_allclose(out, want, atol=1e-10)
    del out
assert tsc.empty_output_cache() == 0
print('ok')
"""


SMALL_OUTPUT_CACHE = """
import numpy as np, torch
import torch_sparse_conv as tsc
x = torch.tensor(np.random.default_rng(4).random((60, 2500))).to_sparse_csr()
sizes = []
for side in (1, 3, 5):  # two arrays of 1.2, 1.3 and 1.4 MB a call, freed at once
    out = tsc.toeplitz_conv2d(x, torch.ones(side, side, dtype=torch.float64), (50, 50), 'full')
    sizes.append(out.values().nbytes)
    del out
kept = tsc.empty_output_cache()
# 6 MiB allowed of the 7.8 MB freed: the oldest buffers were dropped, the newest kept
assert 0 < kept <= 6 * 2**20 and kept >= sizes[-1], (kept, sizes)
print('ok')
"""


@pytest.mark.slow
def test_output_cache_drops_the_least_recently_freed():
    run_script(SMALL_OUTPUT_CACHE, TSC_OUTPUT_CACHE_MB="6")


@pytest.mark.slow
def test_output_cache_can_be_turned_off():
    run_script(NO_OUTPUT_CACHE, TSC_OUTPUT_CACHE_MB="0")
