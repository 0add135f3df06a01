"""Bad arguments to the Toeplitz functions and operators raise a clear exception naming the
argument: Python checks, invalid CSR (also in a fresh process on every device), an invalid
kept T."""
import pytest
import torch

import torch_sparse_conv as tsc

from testing import DEVICES, run_script

OPS = torch.ops.torch_sparse_conv


@pytest.mark.parametrize("call,error,pattern", [
    (lambda x, k: tsc.toeplitz_conv2d(x, k, (4, 4)), ValueError, "x.shape\\[1\\] \\(20\\)"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k[0], (4, 5)), ValueError, "kernel must be 2-D"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k, (4, 5), "circular"), ValueError, "mode must be"),
    (lambda x, k: tsc.toeplitz_conv2d(x, torch.ones(5, 5, dtype=torch.float64), (4, 5),
                                      "valid"), ValueError, "'valid' needs a kernel"),
    (lambda x, k: tsc.toeplitz_conv2d(x.to(torch.int64), k, (4, 5)), TypeError,
     "float32, float64, float16 or bfloat16"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k.float(), (4, 5)), TypeError, "kernel dtype"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k, (4, 5), method="fft"), ValueError,
     "method must be one of 'auto', 'direct', 'precomputed', got 'fft'"),
    (lambda x, k: tsc.ToeplitzConv2d((4, 5), k, method="lazy"), ValueError,
     "ToeplitzConv2d: method must be one of 'auto', 'direct', 'precomputed'"),
    (lambda x, k: tsc.toeplitz_matrix(k[0], (4, 5)), ValueError, "kernel must be 2-D"),
    (lambda x, k: tsc.toeplitz_conv2d(x, k, (4, -5)), ValueError, "image_shape"),
    (lambda x, k: tsc.toeplitz_conv2d("x", k, (4, 5)), TypeError, "x must be a Tensor"),
])
def test_argument_errors(call, error, pattern):
    x = torch.rand(3, 20, dtype=torch.float64)
    k = torch.ones(3, 3, dtype=torch.float64)
    with pytest.raises(error, match=pattern):
        call(x.to_sparse_csr() if error is not TypeError or "Tensor" not in pattern else x, k)


@pytest.mark.parametrize("crow,col,pattern", [
    ([0, 2, 3], [1, 20, 4], r"must lie in \[0, 20\) for H\*W = 20, but col\[1\] = 20 is out of"),
    ([0, 2, 3], [1, -1, 4], r"must lie in \[0, 20\) for H\*W = 20, but col\[1\] = -1 is out of"),
    ([0, 2, 1, 3], [1, 2, 4], "non-decreasing"),
    ([1, 2, 3], [1, 2, 4], "start at 0"),
    ([0, 2, 4], [1, 2, 4], "last row pointer"),
])
def test_invalid_csr_is_rejected(crow, col, pattern):
    crow, col = torch.tensor(crow), torch.tensor(col)
    values = torch.ones(col.numel(), dtype=torch.float64)
    with pytest.raises(RuntimeError, match=pattern):
        OPS.toeplitz_conv2d(crow, col, values, torch.ones(3, 3, dtype=torch.float64), [4, 5],
                            "same", "direct")


def test_operator_method_error_lists_the_methods():
    x = torch.rand(2, 20, dtype=torch.float64).to_sparse_csr()
    with pytest.raises(ValueError, match="'auto', 'direct', 'precomputed', got 'fft'"):
        OPS.toeplitz_conv2d(x.crow_indices(), x.col_indices(), x.values(),
                            torch.ones(3, 3, dtype=torch.float64), [4, 5], "same", "fft")


def _corrupt(matrix, what):
    t_crow, t_col, t_values = (t.clone() for t in matrix)
    if what == "row pointers":
        t_crow[3] = t_col.numel() + 5
    elif what == "unsorted":
        t_col[t_crow[7]], t_col[t_crow[7] + 1] = t_col[t_crow[7] + 1], t_col[t_crow[7]]
    elif what == "out of range":
        t_col[-1] = 10**9
    elif what == "negative":
        t_col[0] = -1
    return t_crow, t_col, t_values


@pytest.mark.parametrize("what,pattern", [
    ("row pointers", "invalid T: T's row pointers"),
    ("unsorted", "invalid T: T's columns must be strictly increasing"),
    ("out of range", "invalid T: T's columns"),
    ("negative", "invalid T: T's columns"),
])
def test_invalid_precomputed_t_is_rejected(what, pattern):
    kernel = torch.ones(3, 3, dtype=torch.float64)
    matrix = OPS.toeplitz_matrix(kernel, [4, 5], "same")
    x = torch.ones(2, 20, dtype=torch.float64).to_sparse_csr()  # every row of T is read
    with pytest.raises(RuntimeError, match=pattern):
        OPS.toeplitz_conv2d_precomputed(x.crow_indices(), x.col_indices(), x.values(), kernel,
                                        [4, 5], "same", *_corrupt(matrix, what))


def test_precomputed_t_shape_and_dtype_errors():
    kernel = torch.ones(3, 3, dtype=torch.float64)
    t_crow, t_col, t_values = OPS.toeplitz_matrix(kernel, [4, 5], "same")
    x = torch.ones(2, 20, dtype=torch.float64).to_sparse_csr()
    args = (x.crow_indices(), x.col_indices(), x.values(), kernel, [4, 5], "same")
    with pytest.raises(RuntimeError, match="t_crow must be 1-D int64 with H\\*W \\+ 1 = 21"):
        OPS.toeplitz_conv2d_precomputed(*args, t_crow[:-1], t_col, t_values)
    with pytest.raises(RuntimeError, match="t_values must be 1-D, one Double"):
        OPS.toeplitz_conv2d_precomputed(*args, t_crow, t_col, t_values.float())
    with pytest.raises(RuntimeError, match="t_col must be a 1-D int64"):
        OPS.toeplitz_conv2d_precomputed(*args, t_crow, t_col.int(), t_values)


# Invalid CSR arguments of every Toeplitz operator, for DEVICE (replaced by "cpu" or "cuda").
# The CPU and CUDA builds word some checks differently.
INVALID_CSR_SCRIPT = """
import pytest, torch, torch_sparse_conv
ops = torch.ops.torch_sparse_conv
dev = "DEVICE"
crow = torch.tensor([0, 2, 3], device=dev)
col = torch.tensor([1, 7, 4], device=dev)
values = torch.ones(3, dtype=torch.float64, device=dev)
kernel = torch.ones(3, 3, dtype=torch.float64, device=dev)
with pytest.raises(RuntimeError, match="x's column ind"):
    ops.toeplitz_conv2d(crow, torch.tensor([1, 30, 4], device=dev), values, kernel, [6, 5],
                        "same", "direct")
with pytest.raises(RuntimeError, match="row pointers must be non-decreasing"):
    ops.toeplitz_conv2d(torch.tensor([0, 4, 3], device=dev), col, values, kernel, [6, 5],
                        "same", "direct")
out_crow, out_col, out_values = ops.toeplitz_conv2d(crow, col, values, kernel, [6, 5], "same",
                                                    "direct")
grad = torch.ones_like(out_values)
def backward(out_crow, out_col):
    return ops._toeplitz_conv2d_backward(grad, crow, col, values, kernel, out_crow, out_col,
                                         [6, 5], "same", [True, True])
backward(out_crow, out_col)
with pytest.raises(RuntimeError, match="strictly ascending columns"):
    backward(out_crow, out_col.flip(0))
repeated = out_col.clone()
repeated[1] = repeated[0]
with pytest.raises(RuntimeError, match="strictly ascending columns"):
    backward(out_crow, repeated)
with pytest.raises(RuntimeError, match="the output's column indices must lie in"):
    backward(out_crow, out_col + 100)
# A row pointer beyond nnz before a smaller one: rejected before any column is read.
wild = out_crow.clone()
wild[1] = 10**6
with pytest.raises(RuntimeError, match="row pointers must be non-decreasing"):
    backward(wild, out_col)
t_crow, t_col, t_values = ops.toeplitz_matrix(kernel, [6, 5], "same")
with pytest.raises(RuntimeError,
                   match="T's columns must (be strictly increasing|ascend strictly)"):
    ops.toeplitz_conv2d_precomputed(crow, col, values, kernel, [6, 5], "same", t_crow,
                                    t_col.flip(0), t_values)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_invalid_csr_is_rejected_with_clear_messages(device):
    # In a fresh process: on the lent H100 every error message with an integer crashed inside
    # the library (scripts/gpu/NOTES.md), and a crash here must fail one test, not the suite.
    run_script(INVALID_CSR_SCRIPT.replace("DEVICE", device))
