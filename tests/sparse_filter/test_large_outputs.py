"""Sparse-filter results of 32 MiB and more (the input's gradient too) come from the CPU output
cache (csrc/common/output_buffer_cache.h: glibc maps fresh pages for every such request, a page
fault per 4 KiB): right in both memory formats, a live result never overwritten, freed ones
reused and released by empty_output_cache."""
import os

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import random_weight

MIB = 2**20


def _pruned(out_channels, in_channels, k, dtype, seed):
    return random_weight((out_channels, in_channels, k, k), 0.3, dtype,
                         torch.Generator().manual_seed(seed))


cache_off = pytest.mark.skipif(
    int(os.environ.get("TSC_OUTPUT_CACHE_MB", "512")) < 64,
    reason="TSC_OUTPUT_CACHE_MB keeps no 32 MiB buffer")


# Batch 8: the lanes layout, which writes channels-last itself (where AVX2 is; elsewhere the
# channels-last result is converted from an NCHW one, which goes through the cache as well);
# batch 2: the one-sample layout.
@cache_off
@pytest.mark.parametrize("shape,memory_format", [
    ((2, 3, 256, 256), torch.contiguous_format), ((8, 3, 128, 128), torch.contiguous_format),
    ((8, 3, 128, 128), torch.channels_last)])
def test_large_output_is_right_and_reused_only_when_freed(shape, memory_format):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=memory_format)
    w1, w2 = _pruned(64, 3, 3, torch.float32, 1), _pruned(64, 3, 3, torch.float32, 2)
    tsc.empty_output_cache()
    kept = tsc.sparse_conv2d(x, w1, padding=1, method="direct")
    assert kept.numel() * kept.element_size() >= 32 * MIB  # from the cache
    assert kept.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(kept, F.conv2d(x, w1, padding=1), rtol=1e-4, atol=1e-4)
    snapshot = kept.clone()
    freed = []
    for _ in range(3):  # each call's freed result is taken by the next
        other = tsc.sparse_conv2d(x, w2, padding=1, method="direct")
        assert other.is_contiguous(memory_format=memory_format)
        assert other.data_ptr() != kept.data_ptr()
        torch.testing.assert_close(other, F.conv2d(x, w2, padding=1), rtol=1e-4, atol=1e-4)
        freed.append(other.data_ptr())
        del other
    assert freed[1] == freed[2]  # the second call's result memory, reused by the third
    assert torch.equal(kept, snapshot)
    assert tsc.empty_output_cache() >= 32 * MIB
    assert tsc.empty_output_cache() == 0


@cache_off
@pytest.mark.parametrize("stride", [1, 2])
def test_large_input_gradient(stride):
    """The input's gradient of 32 MiB and more: the transposed convolution's output (stride
    1) and the per-phase one's (stride 2, some phases without taps: zeros)."""
    torch.manual_seed(3)
    x = torch.randn(2, 64, 256, 256, dtype=torch.float32)
    w = _pruned(4, 64, 3, torch.float32, 4)
    w[:, :, :, 1] = 0  # the stride-2 phases of odd columns get no tap
    grad_out = None
    tsc.empty_output_cache()
    for round_ in range(2):  # the second backward reuses the first's freed gradient (stale
        # values there: the phases without taps must be zeroed)
        xs = x.clone().requires_grad_()
        out = tsc.sparse_conv2d(xs, w, stride=stride, padding=1, method="direct")
        grad_out = torch.randn_like(out) if grad_out is None else grad_out
        (gx,) = torch.autograd.grad(out, xs, grad_out)
        xd = x.clone().requires_grad_()
        (want,) = torch.autograd.grad(F.conv2d(xd, w, stride=stride, padding=1), xd, grad_out)
        assert gx.numel() * gx.element_size() >= 32 * MIB
        torch.testing.assert_close(gx, want, rtol=1e-4, atol=1e-4)
        if round_ == 0:
            first = gx.data_ptr()
        else:
            assert gx.data_ptr() == first
        del gx, xs, out
    assert tsc.empty_output_cache() >= 32 * MIB
