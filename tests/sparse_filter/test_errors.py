"""Bad input to the sparse-filter convolution raises a clear exception naming the argument."""
import pytest
import torch

import torch_sparse_conv as tsc

from testing import random_weight

X = torch.randn(2, 4, 8, 8)
W = random_weight((6, 4, 3, 3), 0.3, torch.float32)
OP = torch.ops.torch_sparse_conv.sparse_filter_conv2d


def packed(weight=W):
    return tsc.pack_sparse_filter(weight)


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(input=torch.randn(8, 8)), ValueError, "input must be 4-D"),
    (dict(input=torch.randn(1, 2, 4, 8, 8)), ValueError, "input must be 4-D"),
    (dict(weight=torch.randn(6, 4, 3)), ValueError, "weight must be 4-D"),
    (dict(input=torch.randn(2, 5, 8, 8)), RuntimeError, "expected input with 4 channels"),
    (dict(groups=3), RuntimeError, "divisible by groups"),
    (dict(groups=0), ValueError, "groups must be a positive"),
    (dict(stride=0), ValueError, "stride must be positive"),
    (dict(stride=(1, -2)), ValueError, "stride must be positive"),
    (dict(dilation=0), ValueError, "dilation must be positive"),
    (dict(padding=-1), ValueError, "padding must be non-negative"),
    (dict(padding="full"), ValueError, "padding must be an int, a pair, 'same' or 'valid'"),
    (dict(padding="same", stride=2), ValueError, "not supported for strided"),
    (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
    (dict(stride=1.5), TypeError, "stride must be an int or a pair"),
    (dict(input=torch.randn(2, 4, 2, 8)), RuntimeError, "can't be greater than the padded input"),
    (dict(dilation=5), RuntimeError, "can't be greater than the padded input"),
    (dict(bias=torch.randn(5)), RuntimeError, "bias must be 1-D with C_out = 6"),
    (dict(bias=torch.randn(6, 1)), RuntimeError, "bias must be 1-D"),
    (dict(bias=torch.randn(6, dtype=torch.float64)), RuntimeError, "bias .* dtype"),
    (dict(weight=W.double()), TypeError, "weight dtype"),
    (dict(input=X.int(), weight=W.int()), TypeError, "float32, float64, float16 or bfloat16"),
    (dict(input=X.half(), weight=W), TypeError, "weight dtype"),
    (dict(input=[1, 2]), TypeError, "input must be a Tensor"),
    (dict(weight="w"), TypeError, "weight must be a Tensor"),
    (dict(bias=3), TypeError, "bias must be a Tensor"),
    (dict(method="fast"), ValueError, "method must be one of"),
])
def test_functional_errors(kwargs, error, pattern):
    args = dict(input=X, weight=W, bias=None, stride=1, padding=0, dilation=1, groups=1)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        tsc.sparse_conv2d(**args)


def op_args(**overrides):
    row_ptr, col_idx, values = packed()
    args = dict(input=X, row_ptr=row_ptr, col_idx=col_idx, values=values,
                weight_size=list(W.shape), bias=None, stride=[1, 1], padding=[0, 0],
                dilation=[1, 1], groups=1, method="direct")
    args.update(overrides)
    return list(args.values())


@pytest.mark.parametrize("overrides,pattern", [
    (dict(row_ptr=torch.tensor([0, 1, 2])), "row_ptr must have C_out \\+ 1"),
    (dict(row_ptr=torch.zeros(7, dtype=torch.int32)), "row_ptr must be a 1-D int64"),
    (dict(col_idx=torch.zeros(3)), "col_idx must be a 1-D int64"),
    (dict(values=torch.zeros(2)), "values must be 1-D with one entry per col_idx"),
    (dict(values=None), None),
    (dict(weight_size=[6, 4, 3]), "weight_size must be"),
    (dict(weight_size=[6, 4, 0, 3]), "kernel size"),
    (dict(stride=[1]), "stride must have 2 elements"),
    (dict(padding=[0, -1]), "padding must be non-negative"),
    (dict(method="sparse"), "method must be one of"),
])
def test_operator_argument_errors(overrides, pattern):
    if pattern is None:
        with pytest.raises((RuntimeError, TypeError)):
            OP(*op_args(**overrides))
        return
    with pytest.raises(RuntimeError, match=pattern):
        OP(*op_args(**overrides))


def test_invalid_csr_contents_are_rejected_before_any_read():
    row_ptr, col_idx, values = packed()
    bad_col = col_idx.clone()
    bad_col[0] = 4 * 9  # one past the last tap
    with pytest.raises(RuntimeError, match="col_idx\\[0\\] = 36 is out of range"):
        OP(*op_args(col_idx=bad_col))
    bad_col[0] = -1
    with pytest.raises(RuntimeError, match="out of range"):
        OP(*op_args(col_idx=bad_col))
    bad_rows = row_ptr.clone()
    bad_rows[2] = int(row_ptr[3]) + 1  # row 2 ends after row 3 starts: decreasing
    with pytest.raises(RuntimeError, match=r"row pointers must be non-decreasing, "
                                           r"but row_ptr\[3\] = \d+ < row_ptr\[2\]"):
        OP(*op_args(row_ptr=bad_rows))
    bad_end = row_ptr.clone()
    bad_end[-1] += 1
    with pytest.raises(RuntimeError, match=r"row pointers must end at the number of entries in "
                                           r"col_idx \(\d+\), got last row pointer row_ptr\[6\]"):
        OP(*op_args(row_ptr=bad_end))
    bad_start = row_ptr.clone()
    bad_start[0] = 1
    with pytest.raises(RuntimeError, match=r"row pointers must start at 0, got row_ptr\[0\] = 1"):
        OP(*op_args(row_ptr=bad_start))


def test_operator_rejects_integer_input_and_mixed_precision():
    row_ptr, col_idx, values = packed()
    with pytest.raises(RuntimeError, match="input must be float32, float64, float16 or bfloat16"):
        OP(*op_args(input=X.int(), values=values.int()))
    # bfloat16 input with float32 values: named, not widened into agreement.
    with pytest.raises(RuntimeError, match=r"must have the dtype of input \(BFloat16\)"):
        OP(*op_args(input=X.bfloat16()))


def test_backward_checks_grad_output():
    row_ptr, col_idx, values = packed()
    with pytest.raises(RuntimeError, match="grad_output must have shape"):
        torch.ops.torch_sparse_conv._sparse_filter_conv2d_backward(
            torch.randn(2, 6, 5, 5), X, row_ptr, col_idx, values, list(W.shape), [1, 1],
            [0, 0], [1, 1], 1, [True, True, True])


def test_pack_errors():
    with pytest.raises(ValueError, match="weight must be 4-D"):
        tsc.pack_sparse_filter(torch.randn(3, 3))
    with pytest.raises(TypeError, match="weight must be a Tensor"):
        tsc.pack_sparse_filter([1.0])
    with pytest.raises(RuntimeError, match="floating-point"):
        torch.ops.torch_sparse_conv.pack_sparse_filter(torch.ones(2, 2, 1, 1, dtype=torch.int64))


def test_module_constructor_errors():
    with pytest.raises(ValueError, match="groups"):
        tsc.SparseConv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="density"):
        tsc.SparseConv2d(4, 6, 3, density=0.0)
    with pytest.raises(ValueError, match="pattern"):
        tsc.SparseConv2d(4, 6, 3, pattern="blocks")
    with pytest.raises(ValueError, match="padding_mode"):
        tsc.SparseConv2d(4, 6, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="method"):
        tsc.SparseConv2d(4, 6, 3, method="fft")
    with pytest.raises(TypeError, match="nn.Conv2d"):
        tsc.SparseConv2d.from_dense(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="mask"):
        tsc.SparseConv2d.from_dense(torch.nn.Conv2d(2, 2, 3), mask=torch.ones(3))


def test_in_place_corruption_after_a_valid_call_is_still_caught():
    """Validation is remembered per unchanged tensors: an in-place edit must re-validate."""
    row_ptr, col_idx, values = packed()
    OP(*op_args(row_ptr=row_ptr, col_idx=col_idx, values=values))  # valid, remembered
    col_idx[0] = 10_000
    with pytest.raises(RuntimeError, match="out of range"):
        OP(*op_args(row_ptr=row_ptr, col_idx=col_idx, values=values))
    with pytest.raises(RuntimeError, match="out of range"):
        torch.ops.torch_sparse_conv._sparse_filter_conv2d_backward(
            torch.randn(2, 6, 6, 6), X, row_ptr, col_idx, values, list(W.shape), [1, 1],
            [0, 0], [1, 1], 1, [True, True, True])


def test_device_mismatch_is_named():
    with pytest.raises(ValueError, match="weight is on cpu but input is on meta"):
        tsc.sparse_conv2d(X.to("meta"), W)
    row_ptr, col_idx, values = packed()
    with pytest.raises(RuntimeError, match="packed weight is on cpu but input is on meta"):
        OP(*op_args(input=X.to("meta")))
