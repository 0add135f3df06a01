"""CUDA kernels of the sparse-filter ops: registered in every CUDA build, and equal to the CPU
kernels and F.conv2d wherever a GPU exists (skipped otherwise)."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from subprocess_helpers import run_script
from test_sparse_filter_conv2d import GRID, random_weight, seed_of

OPS = ["sparse_filter_conv2d", "_sparse_filter_conv2d_backward", "toeplitz_conv2d",
       "_toeplitz_conv2d_backward", "toeplitz_matrix", "_toeplitz_matrix_backward",
       "toeplitz_conv2d_precomputed"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA_METHODS = ["direct", "spmm", "dense", "auto"]
HALF_TYPES = [torch.float16, torch.bfloat16]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(tsc.cuda_version_compiled() == 0, reason="built without CUDA")
@pytest.mark.parametrize("op", OPS + ["pack_sparse_filter"])
def test_cuda_build_registers_a_cuda_kernel_for_every_op(op):
    name = f"torch_sparse_conv::{op}"
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    composite = torch._C._dispatch_has_kernel_for_dispatch_key(name,
                                                               "CompositeExplicitAutograd")
    assert has_cuda or composite


def _case(cfg, dtype, density=0.3):
    gen = torch.Generator().manual_seed(seed_of(cfg))
    x = torch.randn(cfg["batch"], cfg["cin"], *cfg["size"], dtype=dtype, generator=gen)
    w = random_weight((cfg["cout"], cfg["cin"] // cfg["groups"], *cfg["kernel"]), density,
                      dtype, gen)
    b = torch.randn(cfg["cout"], dtype=dtype, generator=gen)
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    return x, w, b, args, gen


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", GRID[:24], ids=[f"cfg{i}" for i in range(24)])
def test_cuda_matches_cpu_forward_and_backward(cfg, dtype):
    x, w, b, args, gen = _case(cfg, dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    cpu_leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    cpu_out = tsc.sparse_conv2d(*cpu_leaves, *args, method="direct")
    grad = torch.randn(cpu_out.shape, dtype=dtype, generator=gen)
    cpu_grads = torch.autograd.grad(cpu_out, cpu_leaves, grad)
    for method in CUDA_METHODS:
        leaves = [t.cuda().requires_grad_() for t in (x, w, b)]
        out = tsc.sparse_conv2d(*leaves, *args, method=method)
        torch.testing.assert_close(out.cpu(), cpu_out.detach(), **tol, msg=method)
        grads = torch.autograd.grad(out, leaves, grad.cuda())
        for got, expected in zip(grads, cpu_grads):
            torch.testing.assert_close(got.cpu(), expected, **tol, msg=method)


@needs_gpu
@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("cfg", GRID[:12], ids=[f"cfg{i}" for i in range(12)])
def test_cuda_half_precision_accumulates_in_float(cfg, dtype):
    """float16/bfloat16 in and out, float32 inside: within the input rounding of float64."""
    x, w, b, args, gen = _case(cfg, dtype)
    ref_leaves = [t.double().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(*ref_leaves, *args)
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    ref_grads = list(torch.autograd.grad(ref, ref_leaves, grad))
    ref_grads[1] = ref_grads[1] * (w != 0)  # pruned taps stay pruned: no gradient there
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=4e-3, atol=4e-3)
    for method in ("direct", "dense", "auto"):
        leaves = [t.cuda().requires_grad_() for t in (x, w, b)]
        out = tsc.sparse_conv2d(*leaves, *args, method=method)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double().cpu(), ref.detach(), **tol, msg=method)
        grads = torch.autograd.grad(out, leaves, grad.to(dtype).cuda())
        for got, expected in zip(grads, ref_grads):
            scale = expected.abs().max().item() + 1
            torch.testing.assert_close(got.double().cpu() / scale, expected / scale, **tol,
                                       msg=method)


@needs_gpu
@pytest.mark.parametrize("shape,kernel,kwargs", [
    ((2, 64, 30, 41), (3, 3), dict(padding=1)),                  # several channel chunks
    ((3, 40, 9, 70), (3, 5), dict(stride=(1, 2), padding=2)),   # wide, strided
    ((5, 16, 7, 7), (3, 3), dict(padding=1, groups=4)),         # several images per block
    ((1, 3, 40, 40), (7, 7), dict(dilation=6, padding=9)),      # large dilated window
    ((2, 2, 300, 300), (31, 31), dict(dilation=9)),             # window too big: fallback
    ((2, 96, 5, 5), (1, 1), {}),                                 # 1x1, many output blocks
])
def test_cuda_direct_tiling_shapes(shape, kernel, kwargs):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    groups = kwargs.get("groups", 1)
    cout = 48 if shape[1] != 2 else 3
    w = random_weight((cout, shape[1] // groups, *kernel), 0.2, torch.float64, gen)
    expected = F.conv2d(x, w, **kwargs)
    out = tsc.sparse_conv2d(x.cuda(), w.cuda(), method="direct", **kwargs)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)


MERGED_WINDOW_SCRIPT = """
import torch, torch.nn.functional as F, torch_sparse_conv as tsc
torch.manual_seed(4)
# ResNet-50's first 3x3 layer at batch 64: its 64-channel window (77 KiB in float32) takes
# the opt-in shared memory and both output-channel blocks are walked by one block; in
# float64 the window is split into chunks instead.
for dtype in (torch.float32, torch.float64):
    x = torch.randn(64, 64, 56, 56, device="cuda", dtype=dtype)
    w = torch.randn(64, 64, 3, 3, device="cuda", dtype=dtype)
    w = w * (torch.rand_like(w) < 0.1)
    out = tsc.sparse_conv2d(x, w, padding=1, method="direct")
    expected = F.conv2d(x.double(), w.double(), padding=1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
print("ok")
"""


@needs_gpu
@pytest.mark.parametrize("merged_window", ["1", "0"])
def test_cuda_direct_one_window_for_all_input_channels(merged_window):
    # TSC_CUDA_MERGED_WINDOW=0 keeps every window within 48 KiB: both plans must agree with
    # conv2d (each runs in a fresh process, the switch is read once).
    run_script(MERGED_WINDOW_SCRIPT, timeout=600, TSC_CUDA_MERGED_WINDOW=merged_window)


@needs_gpu
def test_cuda_empty_and_odd_shapes():
    for method in CUDA_METHODS:
        x = torch.randn(0, 4, 5, 5, device="cuda")
        w = random_weight((3, 4, 3, 3), 0.5, torch.float32).cuda()
        assert tsc.sparse_conv2d(x, w, method=method).shape == (0, 3, 3, 3)
        x = torch.randn(3, 4, 1, 17, device="cuda")
        w = random_weight((5, 4, 1, 4), 0.5, torch.float32).cuda()
        torch.testing.assert_close(tsc.sparse_conv2d(x, w, stride=(1, 3), method=method),
                                   F.conv2d(x, w, stride=(1, 3)), rtol=1e-4, atol=1e-4)
        w = torch.zeros(5, 4, 1, 4, device="cuda")          # nothing kept
        assert tsc.sparse_conv2d(x, w, method=method).abs().max() == 0


@needs_gpu
def test_cuda_results_are_deterministic():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(4, 32, 20, 20, generator=gen).cuda().requires_grad_()
    w = random_weight((32, 32, 3, 3), 0.1, torch.float32, gen).cuda().requires_grad_()
    runs = []
    for _ in range(2):
        out = tsc.sparse_conv2d(x, w, padding=1, method="direct")
        runs.append((out, *torch.autograd.grad(out.square().sum(), (x, w))))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


@needs_gpu
def test_cuda_graph_capture_of_a_module():
    layer = tsc.SparseConv2d(16, 16, 3, padding=1, density=0.1, method="direct").cuda()
    x = torch.randn(2, 16, 12, 12, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        layer(x)  # warm-up: validates and caches the packed filter outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = layer(x)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    with torch.no_grad():
        torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)


@needs_gpu
def test_cuda_opcheck_and_invalid_indices():
    x = torch.randn(2, 4, 7, 8, dtype=torch.float64, device="cuda", requires_grad=True)
    w = random_weight((6, 4, 3, 3), 0.4, torch.float64).cuda()
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    values = values.clone().requires_grad_()
    for method in ("direct", "spmm"):
        args = (x, row_ptr, col_idx, values, list(w.shape), None, [1, 1], [1, 1], [1, 1], 1,
                method)
        torch.library.opcheck(torch.ops.torch_sparse_conv.sparse_filter_conv2d.default, args)
    # An out-of-range index must raise (run apart: a crash must not take the suite down).
    repro = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gpu",
                                                          "repro_bad_index.py")],
                           capture_output=True, text=True, timeout=300)
    assert repro.returncode == 0, repro.stderr[-3000:]
    assert repro.stdout.count("raised as expected") == 2 and "col_idx" in repro.stdout
    with pytest.raises(RuntimeError, match="'unfold' is the CPU GEMM path"):
        torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, row_ptr, col_idx, values,
                                                         list(w.shape), None, [1, 1], [1, 1],
                                                         [1, 1], 1, "unfold")
    with pytest.raises(RuntimeError, match="'spmm' supports float32 and float64"):
        tsc.sparse_conv2d(x.detach().half(), w.half(), method="spmm")


def test_half_precision_is_rejected_on_cpu():
    x = torch.randn(1, 2, 5, 5).half()
    with pytest.raises(TypeError, match="float16 and bfloat16 on CUDA only"):
        tsc.sparse_conv2d(x, torch.randn(2, 2, 3, 3).half())
