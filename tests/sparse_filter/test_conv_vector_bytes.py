"""The one-sample 'direct' kernel computes in 64-byte vectors on Intel processors with AVX-512
and in 32-byte ones on others (csrc/sparse_filter/cpu/simd.cpp): both widths give F.conv2d's
result and the same bits, so a model's outputs do not depend on the width its processor got.
The lanes values' gradient on rows of an even number of positions (dot_runs_wide) sums in
64-byte vectors there too: both widths match autograd, in bits of their own (a dot product's
lanes are added in another order).

The width is picked once per process, so each runs in a subprocess with TSC_CONV_VECTOR_BYTES
set; only the AVX-512 build of the kernel has the choice.
"""
import pytest

from testing import run_python

SCRIPT = r"""
import hashlib, torch, torch.nn.functional as F, torch_sparse_conv as tsc
from torch_sparse_conv._library import conv_block_vector_bytes
torch.manual_seed(0)
digest = hashlib.sha256()
for dtype in (torch.float32, torch.float64):
    # batch 1 and 2 (the one-sample layout; below the lanes layout's 8 or 4 samples), planes
    # whose runs end at every remainder of a vector, stride, dilation, groups, a 5x3 kernel,
    # and a small plane whose samples interleave (batch 3, 6x5).
    for (n, c, h, w, o, kh, kw, s, p, d, g) in [
            (1, 24, 20, 37, 10, 3, 3, 1, 1, 1, 1), (1, 16, 33, 29, 7, 3, 3, 1, 1, 1, 1),
            (2, 12, 41, 23, 9, 3, 3, 2, 1, 1, 1), (1, 8, 30, 31, 6, 3, 3, 1, 2, 2, 1),
            (1, 12, 25, 26, 8, 5, 3, 1, 1, 1, 2), (1, 9, 17, 90, 5, 3, 3, 1, 1, 1, 1),
            (3, 10, 6, 5, 4, 3, 3, 1, 1, 1, 1)]:
        x = torch.randn(n, c, h, w, dtype=dtype)
        wt = torch.randn(o, c // g, kh, kw, dtype=dtype) * (torch.rand(o, c // g, kh, kw) < 0.3)
        b = torch.randn(o, dtype=dtype)
        out = tsc.sparse_conv2d(x, wt, b, s, p, d, g, method="direct")
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        torch.testing.assert_close(out, F.conv2d(x, wt, b, s, p, d, g), rtol=tol, atol=tol)
        digest.update(out.contiguous().numpy().tobytes())
print(conv_block_vector_bytes(), digest.hexdigest())
print("ok")
"""


def _run(bytes_):
    result = run_python("-c", SCRIPT, TSC_CONV_VECTOR_BYTES=bytes_)
    assert result.returncode == 0, result.stderr[-3000:]
    width, digest = result.stdout.split()[:2]
    return int(width), digest


@pytest.mark.slow
def test_both_widths_match_conv2d_bit_for_bit():
    wide, wide_digest = _run("64")
    if wide != 64:
        pytest.skip(f"no AVX-512 kernels here (the kernel computes in {wide}-byte vectors)")
    narrow, narrow_digest = _run("32")
    assert narrow == 32
    assert wide_digest == narrow_digest


@pytest.mark.slow
def test_unknown_width_warns_and_falls_back():
    result = run_python("-c", "from torch_sparse_conv._library import conv_block_vector_bytes as b;"
                        " print(b())", TSC_CONV_VECTOR_BYTES="48")
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) in (16, 32, 64)
    assert "TSC_CONV_VECTOR_BYTES must be 32 or 64" in result.stderr


GRAD_SCRIPT = r"""
import torch, torch.nn.functional as F, torch_sparse_conv as tsc
from torch_sparse_conv._library import conv_block_vector_bytes
torch.manual_seed(0)
for dtype in (torch.float32, torch.float64):
    # Whole lane blocks; rows of an even phase_w, with an even and an odd number of output
    # pixels (the last half vector), and an odd phase_w (the 32-byte kernel at either width).
    # (10 % kept: above the sparse kernels' density limit the gradient is oneDNN's.)
    for (n, c, h, w, o, kh, kw, p) in [(8, 24, 14, 14, 20, 3, 3, 1), (8, 12, 18, 22, 14, 3, 2, 0),
                                       (8, 18, 7, 7, 22, 3, 3, 1), (9, 10, 28, 28, 12, 3, 3, 1)]:
        x = torch.randn(n, c, h, w, dtype=dtype, requires_grad=True)
        wt = torch.randn(o, c, kh, kw, dtype=dtype) * (torch.rand(o, c, kh, kw) < 0.1)
        go = torch.randn(F.conv2d(x, wt, padding=(1, p)).shape, dtype=dtype)
        rp, ci, v = tsc.pack_sparse_filter(wt)
        v.requires_grad_()
        out = torch.ops.torch_sparse_conv.sparse_filter_conv2d(
            x, rp, ci, v, list(wt.shape), None, [1, 1], [1, p], [1, 1], 1, "direct", None, False)
        got = torch.autograd.grad(out, v, go)[0]
        leaf = wt.clone().requires_grad_()
        expected = torch.autograd.grad(F.conv2d(x, leaf, padding=(1, p)), leaf, go)[0]
        tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else {}
        torch.testing.assert_close(tsc.unpack_sparse_filter(rp, ci, got, list(wt.shape)),
                                   expected * (wt != 0), **tol)
print(conv_block_vector_bytes())
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("bytes_", ["32", "64"])
def test_values_gradient_matches_autograd_at_both_widths(bytes_):
    result = run_python("-c", GRAD_SCRIPT, TSC_CONV_VECTOR_BYTES=bytes_)
    assert result.returncode == 0, result.stderr[-3000:]
    width, ok = result.stdout.split()[-2:]
    assert ok == "ok"
    if bytes_ == "64" and int(width) != 64:
        pytest.skip(f"no AVX-512 kernels here (they compute in {width}-byte vectors)")
    assert width == bytes_
