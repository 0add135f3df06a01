"""ToeplitzConv2d: its gradients against the dense path, the T it keeps (rebuilt when its
kernel changes, gradients still reaching the kernel), a fixed kernel."""
import numpy as np
import torch

import torch_sparse_conv as tsc

from testing import random_csr


def test_gradients_match_dense_path_and_module():
    rng = np.random.default_rng(6)
    x = random_csr(rng, 4, 9, 8, 0.25)
    kernel = torch.tensor(rng.standard_normal((4, 3)))
    module = tsc.ToeplitzConv2d((9, 8), kernel, mode="same")
    values = x.values().clone().requires_grad_()
    xs = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, size=x.shape)
    out = module(xs)
    weights = torch.tensor(rng.standard_normal(out.values().shape))
    (out.values() * weights).sum().backward()
    # Reference: the dense path, with the same weights placed on the output pattern.
    dense_x = x.to_dense().requires_grad_()
    k2 = kernel.clone().requires_grad_()
    ref = tsc.toeplitz_conv2d(dense_x, k2, (9, 8), "same")
    weight_dense = torch.sparse_csr_tensor(out.crow_indices(), out.col_indices(), weights,
                                           size=out.shape).to_dense()
    (ref * weight_dense).sum().backward()
    torch.testing.assert_close(module.kernel.grad, k2.grad)
    torch.testing.assert_close(values.grad, dense_x.grad[x.to_dense() != 0])


def test_module_keeps_t_and_trains_like_direct():
    rng = np.random.default_rng(15)
    x = random_csr(rng, 4, 9, 8, 0.25)
    kernel = torch.tensor(rng.standard_normal((4, 3)))
    kept = tsc.ToeplitzConv2d((9, 8), kernel, method="precomputed")
    direct = tsc.ToeplitzConv2d((9, 8), kernel, method="direct")
    opt_kept = torch.optim.SGD(kept.parameters(), lr=0.1)
    opt_direct = torch.optim.SGD(direct.parameters(), lr=0.1)
    for step in range(3):
        outs = []
        for module, opt in ((kept, opt_kept), (direct, opt_direct)):
            opt.zero_grad()
            out = module(x)
            (out.values() ** 2).sum().backward()
            outs.append((out, module.kernel.grad.clone()))
            opt.step()  # in place: the kept T must be rebuilt on the next call
        (a, grad_a), (b, grad_b) = outs
        assert torch.equal(a.col_indices(), b.col_indices())
        torch.testing.assert_close(a.values(), b.values())
        torch.testing.assert_close(grad_a, grad_b)
    with torch.no_grad():
        kept(x)
        matrix = kept._matrix.matrix
        kept(x)
    assert kept._matrix.matrix is matrix  # unchanged kernel: T reused
    kept.kernel.data.mul_(-1.0)  # .data: a separate version counter, still noticed
    torch.testing.assert_close(kept(x).values(), -direct(x).values())
    with torch.no_grad():
        kept.kernel.zero_()
        assert kept(x).values().abs().sum() == 0
    auto = tsc.ToeplitzConv2d((9, 8), kernel)
    auto(x)
    assert auto._matrix.matrix is None  # 'auto' runs direct and builds no T


def test_fixed_kernel_module():
    module = tsc.ToeplitzConv2d((5, 5), torch.ones(3, 3), trainable=False)
    assert "kernel" in dict(module.named_buffers()) and not list(module.parameters())
    assert module.output_shape == (5, 5)
