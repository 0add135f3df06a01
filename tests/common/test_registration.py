"""Every operator of both families has a CUDA kernel in a CUDA build (skipped in a CPU-only
one)."""
import pytest
import torch

import torch_sparse_conv as tsc

OPS = ["sparse_filter_conv2d", "_sparse_filter_conv2d_backward", "toeplitz_conv2d",
       "_toeplitz_conv2d_backward", "toeplitz_matrix", "_toeplitz_matrix_backward",
       "toeplitz_conv2d_precomputed"]


@pytest.mark.skipif(tsc.cuda_version_compiled() == 0, reason="built without CUDA")
@pytest.mark.parametrize("op", OPS + ["pack_sparse_filter"])
def test_cuda_build_registers_a_cuda_kernel_for_every_op(op):
    name = f"torch_sparse_conv::{op}"
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    composite = torch._C._dispatch_has_kernel_for_dispatch_key(name,
                                                               "CompositeExplicitAutograd")
    assert has_cuda or composite
