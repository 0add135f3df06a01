"""ToeplitzConv2d: its gradients against the dense path, the T it keeps (rebuilt when its
kernel changes, gradients still reaching the kernel), a fixed kernel; scripted and traced
(forward on CSR and dense batches, forward_csr on a CSR batch's arrays), saved and loaded."""
import numpy as np
import pytest
import torch

import torch_sparse_conv as tsc

from testing import csr_arrays, random_csr, saved_and_loaded


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


def test_kept_t_of_a_kernel_holding_nan_is_rebuilt_on_every_call():
    """NaN equals nothing, so the kept T is never taken as the kernel's (its NaN stays exact)."""
    rng = np.random.default_rng(16)
    x = random_csr(rng, 3, 6, 7, 0.3)
    kernel = torch.tensor(rng.standard_normal((3, 3)))
    kernel[1, 2] = float("nan")
    kept = tsc.ToeplitzConv2d((6, 7), kernel, method="precomputed")
    direct = tsc.ToeplitzConv2d((6, 7), kernel, method="direct")
    with torch.no_grad():
        kept(x)
        first = kept._matrix.matrix
        torch.testing.assert_close(kept(x).values(), direct(x).values(), equal_nan=True)
    assert kept._matrix.matrix is not first


# ------------------------------------------------------------------------------ TorchScript

def _assert_same(out, expected):
    assert out.layout == expected.layout and out.shape == expected.shape
    if out.layout == torch.sparse_csr:
        assert torch.equal(out.crow_indices(), expected.crow_indices())
        assert torch.equal(out.col_indices(), expected.col_indices())
        out, expected = out.values(), expected.values()
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("method", ["auto", "precomputed"])
def test_scripted_module_matches_eager_through_save_and_load(method):
    rng = np.random.default_rng(21)
    module = tsc.ToeplitzConv2d((9, 8), torch.tensor(rng.standard_normal((3, 4))), mode="full",
                                method=method)
    x = random_csr(rng, 4, 9, 8, 0.25)
    for scripted in (torch.jit.script(module), saved_and_loaded(torch.jit.script(module))):
        for batch in (x, random_csr(rng, 2, 9, 8, 0.5)):
            for images in (batch, batch.to_dense()):
                _assert_same(scripted(images), module(images))
            got = scripted.forward_csr(*csr_arrays(batch))
            expected = module(batch)
            for part, part_expected in zip(got, csr_arrays(expected)):
                torch.testing.assert_close(part, part_expected)
        if method == "precomputed":  # T kept between calls, by the scripted MatrixCache
            scripted(x)
            kept = scripted._matrix.matrix[2].data_ptr()
            scripted(x)
            assert scripted._matrix.matrix[2].data_ptr() == kept
        # Gradients reach the scripted module's kernel as they reach the eager one's.
        scripted.zero_grad()
        module.zero_grad()
        scripted(x).values().square().sum().backward()
        module(x).values().square().sum().backward()
        torch.testing.assert_close(scripted.kernel.grad, module.kernel.grad)
        # A kept T follows an in-place change of the scripted module's kernel (which
        # torch.jit.script shares with the eager module; the loaded one has its own).
        with torch.no_grad():
            expected = module(x).values()
            scripted.kernel.mul_(-1.0)
            torch.testing.assert_close(scripted(x).values(), -expected)
            scripted.kernel.mul_(-1.0)


def test_scripted_functional_checks_its_arguments():
    """The argument checks run in TorchScript too (its own text for values: lists, no quotes)."""
    scripted = torch.jit.script(tsc.toeplitz_conv2d)
    x, kernel = torch.rand(3, 20, dtype=torch.float64), torch.ones(3, 3, dtype=torch.float64)
    _assert_same(scripted(x.to_sparse_csr(), kernel, [4, 5], "valid"),
                 tsc.toeplitz_conv2d(x.to_sparse_csr(), kernel, [4, 5], "valid"))
    for call, message in [
            (lambda: scripted(x, kernel, [4, 4]), r"x.shape\[1\] \(20\) must equal H\*W = 16"),
            (lambda: scripted(x, kernel, [4, 5], "circular"), "mode must be one of"),
            (lambda: scripted(x, kernel, [4, 5], "same", "fft"), "method must be one of"),
            (lambda: scripted(x, kernel, [4, -5]), "image_shape must be two positive ints"),
            (lambda: scripted(x.long(), kernel.long(), [4, 5]), "x must be float32")]:
        with pytest.raises(Exception, match=message):
            call()


class _ForwardCsr(torch.nn.Module):
    """A model on a CSR batch's arrays. (torch.jit.trace_module cannot trace forward_csr on
    ToeplitzConv2d itself: as a TorchScript-exported method, it is defined already.)"""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, crow, col, values):
        return self.conv.forward_csr(crow, col, values)


def test_traced_module_matches_eager_through_save_and_load():
    """Traced for any batch: forward on dense images, and forward_csr (in a model of its own).
    forward on a CSR batch traces for that batch size only, and warns so; it needs
    check_trace=False, as torch's trace checker cannot clone a CSR input."""
    rng = np.random.default_rng(22)
    module = tsc.ToeplitzConv2d((9, 8), torch.tensor(rng.standard_normal((4, 3))),
                                method="precomputed")  # in a trace: T built on every run
    x = random_csr(rng, 3, 9, 8, 0.3)
    others = [random_csr(rng, 5, 9, 8, 0.5), random_csr(rng, 1, 9, 8, 0.0)]
    dense = saved_and_loaded(torch.jit.trace(module, (x.to_dense(),)))
    arrays = saved_and_loaded(torch.jit.trace(_ForwardCsr(module), csr_arrays(x)))
    for batch in [x] + others:
        _assert_same(dense(batch.to_dense()), module(batch.to_dense()))
        for part, expected in zip(arrays(*csr_arrays(batch)), csr_arrays(module(batch))):
            torch.testing.assert_close(part, expected)
    with pytest.warns(torch.jit.TracerWarning, match="run it on batches of 3 only"):
        traced = torch.jit.trace(module, (x,), check_trace=False)
    same_batch = random_csr(rng, 3, 9, 8, 0.6)
    _assert_same(saved_and_loaded(traced)(same_batch), module(same_batch))
