"""toeplitz_conv2d's eager call on a CSR tensor in one C++ call (_C._toeplitz_conv2d_csr):
it must take exactly the calls whose arguments pass every check, give what the Python path
gives (bitwise, gradients too), and hand everything else back to the Python path, whose
checks then name what is wrong."""
import numpy as np
import pytest
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv import _C
from torch_sparse_conv.toeplitz import functional

from testing import random_csr, scipy_reference


def python_path(x, kernel, shape, mode, method):
    """What toeplitz_conv2d computes without the C++ call."""
    out_shape = functional.check_arguments(x, kernel, shape, mode, method)
    return functional.sparse_convolution(x, kernel, shape, mode, method, out_shape)


def parts(out):
    return [t.detach().numpy() for t in (out.crow_indices(), out.col_indices(), out.values())]


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
@pytest.mark.parametrize("method", ["auto", "direct", "precomputed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_result_as_the_python_path(mode, method, dtype):
    rng = np.random.default_rng(7)
    x = random_csr(rng, 5, 13, 17, 0.1, dtype)
    kernel = torch.tensor(rng.standard_normal((4, 3)), dtype=dtype)
    fast = _C._toeplitz_conv2d_csr(x, kernel, (13, 17), mode, method)
    assert fast is not None
    assert fast.layout == torch.sparse_csr and fast.dtype == dtype
    slow = python_path(x, kernel, (13, 17), mode, method)
    assert fast.shape == slow.shape
    for a, b in zip(parts(fast), parts(slow)):
        np.testing.assert_array_equal(a, b)
    images = x.to_dense().reshape(5, 13, 17).double().numpy()
    expected = scipy_reference(images, kernel.double().numpy(), mode)
    np.testing.assert_allclose(fast.to_dense().double().numpy(), expected,
                               rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-5)


def test_int32_indices_and_list_shape():
    rng = np.random.default_rng(8)
    x64 = random_csr(rng, 3, 9, 11, 0.2)
    x32 = torch.sparse_csr_tensor(x64.crow_indices().int(), x64.col_indices().int(),
                                  x64.values(), size=x64.shape)
    kernel = torch.randn(3, 5, dtype=torch.float64)
    fast = _C._toeplitz_conv2d_csr(x32, kernel, [9, 11], "same", "auto")
    assert fast is not None
    for a, b in zip(parts(fast), parts(python_path(x64, kernel, (9, 11), "same", "auto"))):
        np.testing.assert_array_equal(a, b)
    assert fast.col_indices().dtype == torch.int64


def test_gradients_match_the_python_path():
    rng = np.random.default_rng(9)
    x = random_csr(rng, 4, 8, 10, 0.3)
    kernel = torch.randn(3, 3, dtype=torch.float64)
    grads = []
    for fast in (True, False):
        values = x.values().clone().requires_grad_()
        xg = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, size=x.shape)
        k = kernel.clone().requires_grad_()
        out = (tsc.toeplitz_conv2d(xg, k, (8, 10)) if fast
               else python_path(xg, k, (8, 10), "same", "auto"))
        assert out.requires_grad
        (out.values() * torch.arange(out.values().numel(), dtype=out.dtype)).sum().backward()
        grads.append((values.grad.clone(), k.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_taken_by_toeplitz_conv2d(monkeypatch):
    """The public function goes through the C++ call (and only falls back on None)."""
    calls = []
    real = _C._toeplitz_conv2d_csr

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(_C, "_toeplitz_conv2d_csr", spy)
    x = random_csr(np.random.default_rng(1), 2, 6, 6, 0.3)
    tsc.toeplitz_conv2d(x, torch.ones(3, 3, dtype=torch.float64), (6, 6))
    tsc.toeplitz_conv2d(x, torch.ones(3, 3, dtype=torch.float64), (np.int64(6), 6))
    assert calls == [True, False]


class Subclass(torch.Tensor):
    pass


def declined_cases():
    """(name, arguments) that the C++ call must hand back to the Python path."""
    x = random_csr(np.random.default_rng(2), 2, 6, 7, 0.3)
    k = torch.ones(3, 3, dtype=torch.float64)
    return {
        "numpy int shape": (x, k, (np.int64(6), 7), "same", "auto"),
        "bool in shape": (x, k, (True, 42), "same", "auto"),
        "zero in shape": (x, k, (0, 7), "same", "auto"),
        "three sizes": (x, k, (6, 7, 1), "same", "auto"),
        "shape not a sequence": (x, k, 42, "same", "auto"),
        "wrong H*W": (x, k, (7, 7), "same", "auto"),
        "unknown mode": (x, k, (6, 7), "sam", "auto"),
        "unknown method": (x, k, (6, 7), "same", "fast"),
        "mode not a str": (x, k, (6, 7), None, "auto"),
        "method not a str": (x, k, (6, 7), "same", 1),
        "dense x": (x.to_dense(), k, (6, 7), "same", "auto"),
        "COO x": (x.to_sparse_coo(), k, (6, 7), "same", "auto"),
        "x not a tensor": ([1.0], k, (6, 7), "same", "auto"),
        "kernel 1-D": (x, torch.ones(3, dtype=torch.float64), (6, 7), "same", "auto"),
        "kernel empty": (x, torch.ones(0, 3, dtype=torch.float64), (6, 7), "same", "auto"),
        "kernel sparse": (x, k.to_sparse(), (6, 7), "same", "auto"),
        "dtype mismatch": (x, k.float(), (6, 7), "same", "auto"),
        "integer values": (torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(),
                                                   x.values().long(), size=x.shape),
                           k.long(), (6, 7), "same", "auto"),
        "valid, kernel too large": (x, torch.ones(7, 3, dtype=torch.float64), (6, 7),
                                    "valid", "auto"),
        "kernel a subclass": (x, k.as_subclass(Subclass), (6, 7), "same", "auto"),
    }


@pytest.mark.parametrize("case", sorted(declined_cases()))
def test_declines_what_is_not_plain(case):
    args = declined_cases()[case]
    assert _C._toeplitz_conv2d_csr(*args) is None


@pytest.mark.parametrize("case", ["wrong H*W", "unknown mode", "unknown method",
                                  "kernel empty", "dtype mismatch", "valid, kernel too large",
                                  "numpy int shape"])
def test_public_function_reports_or_runs_as_before(case):
    """Declined calls run the Python path: its errors, or its result (numpy ints)."""
    args = declined_cases()[case]
    if case == "numpy int shape":
        assert tsc.toeplitz_conv2d(*args).shape == (2, 42)
        return
    with pytest.raises((ValueError, TypeError), match="toeplitz_conv2d: "):
        tsc.toeplitz_conv2d(*args)


def test_declined_under_a_torch_function_mode():
    class Mode(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x = random_csr(np.random.default_rng(3), 2, 5, 5, 0.3)
    k = torch.ones(3, 3, dtype=torch.float64)
    with Mode():
        assert _C._toeplitz_conv2d_csr(x, k, (5, 5), "same", "auto") is None
        assert tsc.toeplitz_conv2d(x, k, (5, 5)).shape == (2, 25)
    assert _C._toeplitz_conv2d_csr(x, k, (5, 5), "same", "auto") is not None


def test_invariant_checks_left_as_they_were():
    """Where the user checks sparse invariants, our valid output is not checked again, and
    the user's setting is what it was afterwards."""
    x = random_csr(np.random.default_rng(4), 3, 7, 7, 0.3)
    k = torch.ones(3, 3, dtype=torch.float64)
    before = torch.sparse.check_sparse_tensor_invariants.is_enabled()
    with torch.sparse.check_sparse_tensor_invariants():
        out = tsc.toeplitz_conv2d(x, k, (7, 7))
        assert torch.sparse.check_sparse_tensor_invariants.is_enabled()
    assert torch.sparse.check_sparse_tensor_invariants.is_enabled() == before
    np.testing.assert_array_equal(out.to_dense().numpy(),
                                  python_path(x, k, (7, 7), "same", "auto").to_dense().numpy())


def test_invalid_csr_still_rejected():
    """A CSR whose arrays are broken (checked by the operator on either path)."""
    x = torch.sparse_csr_tensor(torch.tensor([0, 2]), torch.tensor([3, 99]),
                                torch.tensor([1.0, 2.0], dtype=torch.float64), size=(1, 25),
                                check_invariants=False)
    with pytest.raises(RuntimeError, match="toeplitz_conv2d"):
        tsc.toeplitz_conv2d(x, torch.ones(3, 3, dtype=torch.float64), (5, 5))


def test_tracing_takes_the_python_path():
    """The trace's warning comes from the Python path."""
    x = random_csr(np.random.default_rng(5), 2, 5, 5, 0.3)
    k = torch.ones(3, 3, dtype=torch.float64)
    with pytest.warns(torch.jit.TracerWarning, match="run it on batches of 2 only"):
        torch.jit.trace(lambda x: tsc.toeplitz_conv2d(x, k, (5, 5)), (x,), check_trace=False)
