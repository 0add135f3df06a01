"""toeplitz_conv2d's CUDA kernels against the CPU kernels and scipy (skipped without a GPU)."""
import numpy as np
import pytest
import scipy.signal
import torch

import torch_sparse_conv as tsc

from subprocess_helpers import run_script
from test_toeplitz_conv2d import INVALID_CSR_SCRIPT

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
pytestmark = needs_gpu
MODES = ["full", "same", "valid"]
OP = torch.ops.torch_sparse_conv.toeplitz_conv2d


def random_batch(rng, batch, h, w, density, dtype=torch.float64):
    dense = rng.standard_normal((batch, h * w)) * (rng.random((batch, h * w)) < density)
    return torch.tensor(dense, dtype=dtype).to_sparse_csr()


def to_cuda(x):
    return torch.sparse_csr_tensor(x.crow_indices().cuda(), x.col_indices().cuda(),
                                   x.values().cuda(), size=x.shape)


@pytest.mark.parametrize("method", ["direct", "auto", "precomputed"])
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_cpu_and_scipy(mode, method):
    rng = np.random.default_rng(len(mode) + len(method))
    for (h, w), (kh, kw), density in [((50, 64), (5, 5), 0.02), ((37, 23), (11, 4), 0.3),
                                      ((100, 7), (3, 7), 0.001), ((6, 6), (6, 6), 0.9),
                                      ((1, 1), (1, 1), 1.0)]:
        x = random_batch(rng, 7, h, w, density)
        kernel = torch.tensor(rng.standard_normal((kh, kw)))
        cpu = tsc.toeplitz_conv2d(x, kernel, (h, w), mode, method="direct")
        gpu = tsc.toeplitz_conv2d(to_cuda(x), kernel.cuda(), (h, w), mode, method=method)
        assert gpu.layout == torch.sparse_csr and gpu.col_indices().dtype == torch.int64
        expected = np.stack([scipy.signal.convolve2d(im.reshape(h, w), kernel.numpy(), mode)
                             .reshape(-1) for im in x.to_dense().numpy()])
        np.testing.assert_allclose(gpu.to_dense().cpu().numpy(), expected, atol=1e-10)
        if method != "precomputed":  # cuSPARSE may drop or keep zero products differently
            assert torch.equal(gpu.crow_indices().cpu(), cpu.crow_indices())
            assert torch.equal(gpu.col_indices().cpu(), cpu.col_indices())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_dtypes(dtype):
    rng = np.random.default_rng(1)
    x = random_batch(rng, 5, 30, 40, 0.05, torch.float64)
    kernel = torch.tensor(rng.standard_normal((5, 5)))
    ref = tsc.toeplitz_conv2d(x, kernel, (30, 40), "same").to_dense()
    xg = to_cuda(x).to(dtype) if dtype != torch.float64 else to_cuda(x)
    xg = torch.sparse_csr_tensor(xg.crow_indices(), xg.col_indices(), xg.values().to(dtype),
                                 size=x.shape)
    out = tsc.toeplitz_conv2d(xg, kernel.to(dtype).cuda(), (30, 40), "same")
    assert out.values().dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    torch.testing.assert_close(out.to_dense().double().cpu(), ref, rtol=tol, atol=tol * 4)


def test_cuda_duplicates_unsorted_empty_and_huge_frame():
    crow = torch.tensor([0, 3, 3, 5])
    col = torch.tensor([7, 2, 7, 0, 24])      # image 0: pixel 7 twice, unsorted
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    kernel = torch.arange(9, dtype=torch.float64).view(3, 3)
    cpu = OP(crow, col, values, kernel, [5, 5], "same", "direct")
    gpu = OP(crow.cuda(), col.cuda(), values.cuda(), kernel.cuda(), [5, 5], "same", "direct")
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)
    empty = OP(torch.zeros(4, dtype=torch.long, device="cuda"),
               torch.zeros(0, dtype=torch.long, device="cuda"),
               torch.zeros(0, dtype=torch.float64, device="cuda"), kernel.cuda(), [5, 5], "full",
               "direct")
    assert empty[0].tolist() == [0, 0, 0, 0] and empty[1].numel() == 0
    n = 100_000                                # 10^10 pixels: int64 keys, never scanned
    cols = torch.tensor([0, 5 * n + 7, n * n // 2 + 3, n * n - 1, 17], device="cuda")
    out = OP(torch.tensor([0, 4, 5], device="cuda"), cols,
             torch.ones(5, dtype=torch.float64, device="cuda"),
             torch.ones(3, 3, dtype=torch.float64, device="cuda"), [n, n], "same", "direct")
    assert out[2].numel() == 4 + 9 + 9 + 4 + 6 and float(out[2].sum()) == 32
    assert int(out[1].max()) == n * n - 1


def test_cuda_gradients_match_cpu_and_are_deterministic():
    rng = np.random.default_rng(4)
    x = random_batch(rng, 6, 20, 17, 0.1)
    kernel = torch.tensor(rng.standard_normal((4, 5)))
    grads = {}
    for device in ("cpu", "cuda", "cuda"):
        values = x.values().to(device).clone().requires_grad_()
        k = kernel.to(device).clone().requires_grad_()
        out = OP(x.crow_indices().to(device), x.col_indices().to(device), values, k, [20, 17],
                 "same", "direct")
        weights = torch.linspace(-1, 1, out[2].numel(), dtype=torch.float64, device=device)
        gv, gk = torch.autograd.grad((out[2] * weights).sum(), (values, k))
        if device in grads:
            assert torch.equal(gv, grads[device][0]) and torch.equal(gk, grads[device][1])
        grads[device] = (gv, gk)
    torch.testing.assert_close(grads["cuda"][0].cpu(), grads["cpu"][0])
    torch.testing.assert_close(grads["cuda"][1].cpu(), grads["cpu"][1])


@pytest.mark.parametrize("mode", MODES)
def test_cuda_gradcheck(mode):
    rng = np.random.default_rng(5)
    x = random_batch(rng, 3, 6, 7, 0.3)
    crow, col = x.crow_indices().cuda(), x.col_indices().cuda()
    values = x.values().cuda().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 2)), device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, k: OP(crow, col, v, k, [6, 7], mode, "direct")[2], (values, kernel))


def test_cuda_opcheck():
    rng = np.random.default_rng(7)
    x = random_batch(rng, 3, 6, 5, 0.3)
    values = x.values().cuda().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 3)), device="cuda", requires_grad=True)
    args = (x.crow_indices().cuda(), x.col_indices().cuda(), values, kernel, [6, 5], "same",
            "direct")
    torch.library.opcheck(OP.default, args, test_utils=("test_schema",
                                                       "test_autograd_registration",
                                                       "test_faketensor"))


BOTH_DIRECT_PATHS_SCRIPT = """
import numpy as np, torch, torch_sparse_conv
op = torch.ops.torch_sparse_conv.toeplitz_conv2d
rng = np.random.default_rng(12)
# Frames that fit the frame tile (all but the last, which takes the sort-based kernels either
# way); with TSC_CUDA_FRAME_TILE=0 every call takes the sort-based kernels.
for (b, h, w, kh, kw, mode, density, dtype) in [
        (500, 100, 100, 5, 5, "same", 0.1, torch.float32),
        (50, 100, 100, 11, 11, "full", 0.01, torch.float64),
        (7, 33, 70, 4, 3, "valid", 0.3, torch.float16),
        (3, 300, 400, 3, 3, "same", 0.01, torch.float32)]:
    dense = rng.standard_normal((b, h * w)) * (rng.random((b, h * w)) < density)
    x = torch.tensor(dense).to_sparse_csr()
    kernel = torch.tensor(rng.standard_normal((kh, kw)))
    cpu = op(x.crow_indices(), x.col_indices(), x.values(), kernel, [h, w], mode, "direct")
    gpu = op(x.crow_indices().cuda(), x.col_indices().cuda(), x.values().to(dtype).cuda(),
             kernel.to(dtype).cuda(), [h, w], mode, "direct")
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
    tol = 1e-9 if dtype == torch.float64 else 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(gpu[2].double().cpu(), cpu[2], rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.parametrize("frame_tile", ["1", "0"])
def test_cuda_both_direct_paths_match_cpu(frame_tile):
    run_script(BOTH_DIRECT_PATHS_SCRIPT, timeout=600, TSC_CUDA_FRAME_TILE=frame_tile)


def test_cuda_invalid_csr_is_rejected_with_clear_messages():
    # In a fresh process: on the lent H100 every error message with an integer crashed inside
    # the library (scripts/gpu/NOTES.md), and a crash here must fail one test, not the suite.
    run_script(INVALID_CSR_SCRIPT.replace("DEVICE", "cuda"))


@pytest.mark.parametrize("mode", MODES)
def test_cuda_toeplitz_matrix_and_kept_product_match_cpu(mode):
    rng = np.random.default_rng(11)
    kernel = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    t_cpu = torch.ops.torch_sparse_conv.toeplitz_matrix(kernel, [9, 8], mode)
    kernel_gpu = kernel.detach().cuda().requires_grad_()
    t_gpu = torch.ops.torch_sparse_conv.toeplitz_matrix(kernel_gpu, [9, 8], mode)
    for a, b in zip(t_cpu, t_gpu):
        torch.testing.assert_close(b.detach().cpu(), a.detach())
    weights = torch.randn(t_cpu[2].shape, dtype=torch.float64)
    (grad_cpu,) = torch.autograd.grad((t_cpu[2] * weights).sum(), kernel)
    (grad_gpu,) = torch.autograd.grad((t_gpu[2] * weights.cuda()).sum(), kernel_gpu)
    torch.testing.assert_close(grad_gpu.cpu(), grad_cpu)
    x = random_batch(rng, 5, 9, 8, 0.2)
    args = [x.crow_indices(), x.col_indices(), x.values(), kernel.detach(), [9, 8], mode]
    cpu = torch.ops.torch_sparse_conv.toeplitz_conv2d_precomputed(
        *args, *[t.detach() for t in t_cpu])
    gpu = torch.ops.torch_sparse_conv.toeplitz_conv2d_precomputed(
        *[a.cuda() if isinstance(a, torch.Tensor) else a for a in args],
        *[t.detach() for t in t_gpu])
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)
    bad_col = t_gpu[1].detach().clone()
    bad_col[0] = 10**6
    with pytest.raises(RuntimeError, match="T's column indices must lie"):
        torch.ops.torch_sparse_conv.toeplitz_conv2d_precomputed(
            *[a.cuda() if isinstance(a, torch.Tensor) else a for a in args],
            t_gpu[0].detach(), bad_col, t_gpu[2].detach())
