"""The operators' Autograd kernels (csrc/common/autograd_kernel.h) go straight to the kernel when
a call can record no gradient (grad mode off, or no tensor argument requiring grad), and through
the autograd Function otherwise: results are the same either way, graphs are recorded exactly
when a gradient can flow, and gradients still reach every input that asks for one."""
import pytest
import torch

import torch_sparse_conv as tsc


def toeplitz_call(values_grad, kernel_grad):
    torch.manual_seed(0)
    dense = torch.rand(3, 64, dtype=torch.float64) * (torch.rand(3, 64) < 0.3)
    x = dense.to_sparse_csr()
    values = x.values().clone().requires_grad_(values_grad)
    x = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, x.shape)
    kernel = torch.rand(3, 3, dtype=torch.float64, requires_grad=kernel_grad)
    ops = torch.ops.torch_sparse_conv
    out = ops.toeplitz_conv2d(x.crow_indices(), x.col_indices(), values, kernel, [8, 8],
                              "same", "direct")
    return out, (values, kernel)


def sparse_filter_call(input_grad, weight_grad):
    torch.manual_seed(1)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64) * (torch.rand(4, 3, 3, 3) < 0.4)
    weight.requires_grad_(weight_grad)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=input_grad)
    return (tsc.sparse_conv2d(x, weight, padding=1, method="direct"),), (x, weight)


CALLS = {"toeplitz_conv2d": toeplitz_call, "sparse_filter_conv2d": sparse_filter_call}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("first,second", [(False, False), (True, False), (False, True),
                                          (True, True)])
def test_graph_recorded_exactly_when_a_gradient_can_flow(name, first, second):
    outputs, inputs = CALLS[name](first, second)
    result = outputs[-1]
    assert (result.grad_fn is not None) == (first or second)
    with torch.no_grad():
        plain, _ = CALLS[name](first, second)
    assert plain[-1].grad_fn is None
    for a, b in zip(outputs, plain):
        assert torch.equal(a.detach(), b)
    if first or second:
        result.sum().backward()
        for wanted, tensor in zip((first, second), inputs):
            assert (tensor.grad is not None) == wanted
