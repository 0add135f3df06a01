"""The input's lanes layout kept by the forward for the values' gradient
(_sparse_filter_conv2d_keeping_input_layout, csrc/sparse_filter/cpu/backward.h): the autograd
kernel calls it on plain CPU tensors whose values need a gradient and passes the layout to
_sparse_filter_conv2d_backward, which reads it instead of laying the input out again. The
results are those of the plain operators, bit for bit."""
import os
import platform

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

import torch_sparse_conv as tsc

from testing import random_weight

OPS = torch.ops.torch_sparse_conv
KEEPING = OPS._sparse_filter_conv2d_keeping_input_layout
BACKWARD = OPS._sparse_filter_conv2d_backward
LANES = {torch.float32: 8, torch.float64: 4}

# The lanes kernels, which lay the input out, exist on x86-64 with AVX2 or AVX-512 (GCC
# builds, as setup.py's), unless TSC_CPU_ISA turns them off.
needs_lanes = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64")
    or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512")
    or os.environ.get("TSC_CPU_ISA", "") not in ("", "avx2", "avx512"),
    reason="needs the lanes kernels (x86-64 with AVX2)")


def _in_whole_blocks_changed(x):
    """x with the samples of its whole lane blocks changed: the values' gradient reads those
    from the layout, the samples after them (one at a time) from x."""
    blocked = x.shape[0] // LANES[x.dtype] * LANES[x.dtype]
    changed = x.clone()
    changed[:blocked] *= -3.0
    return changed


def _layer(batch, channels, size, dtype, density=0.1, seed=0, channels_last=False):
    torch.manual_seed(seed)
    w = random_weight((channels, channels, 3, 3), density, dtype)
    x = torch.randn(batch, channels, size, size, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w, tsc.pack_sparse_filter(w)


def _args(x, w, packed):
    return (x, *packed, list(w.shape), None, [1, 1], [1, 1], [1, 1], 1, "auto")


@needs_lanes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [8, 15, 16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("epilogue", [False, True])
def test_kept_layout_gives_the_same_output_and_gradients(dtype, batch, channels_last, epilogue):
    """Whole blocks (8, 16) and a part-filled last block (15: the values' gradient takes its
    samples one at a time); NCHW and channels-last inputs (their layouts written by different
    code); with and without residual and ReLU."""
    x, w, packed = _layer(batch, 24, 12, dtype, channels_last=channels_last)
    extra = {}
    if epilogue:
        extra = {"residual": torch.randn(batch, 24, 12, 12, dtype=dtype), "relu": True}
    output, layout = KEEPING(*_args(x, w, packed), **extra)
    assert torch.equal(output, OPS.sparse_filter_conv2d(*_args(x, w, packed), **extra))
    assert layout is not None
    blocks = -(-batch // LANES[dtype])
    assert layout.dtype == dtype and layout.numel() == blocks * 24 * 14 * 14 * LANES[dtype]
    grad_out = torch.randn_like(output)
    geometry = (list(w.shape), [1, 1], [1, 1], [1, 1], 1)
    laid_out_here = BACKWARD(grad_out, x, *packed, *geometry, [True, True, False])
    # The layout, not the input's whole blocks, is what the values' gradient reads.
    read = BACKWARD(grad_out, _in_whole_blocks_changed(x), *packed, *geometry,
                    [True, True, False], layout)
    assert torch.equal(read[0], laid_out_here[0]) and torch.equal(read[1], laid_out_here[1])
    # And against autograd of F.conv2d on the masked weight, at the kept taps (the backward
    # operator's grad_out is the convolution's, past any epilogue).
    leaf = w.clone().requires_grad_()
    (grad_w,) = torch.autograd.grad(F.conv2d(x, leaf, None, 1, 1), leaf, grad_out)
    row_ptr, col_idx, _ = packed
    got = tsc.unpack_sparse_filter(row_ptr, col_idx, read[1], list(w.shape))
    tolerance = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else {}
    torch.testing.assert_close(got, grad_w * (w != 0), **tolerance)


# (in, out, size, kernel, stride, padding, kept): layers whose lanes forward would otherwise
# pad its phase planes one column wider (strided, 1x1 on an odd plane): kept with up to twice
# as many output channels as input channels, not above.
UNALIGNED_CASES = [
    (12, 16, 15, 3, 2, 1, True),
    (16, 8, 14, 3, 2, 1, True),
    (32, 16, 7, 1, 1, 0, True),
    (8, 32, 7, 1, 1, 0, False),
]


@needs_lanes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", UNALIGNED_CASES,
                         ids=[f"case{i}" for i in range(len(UNALIGNED_CASES))])
def test_layers_that_would_align_their_layout(dtype, case):
    """The forward with the layout kept (the layer's own geometry) gives the bits of the
    forward without (one column wider), and the backward reading it those of one laying the
    input out itself."""
    cin, cout, size, kernel, stride, padding, kept = case
    torch.manual_seed(1)
    w = random_weight((cout, cin, kernel, kernel), 0.1, dtype)
    x = torch.randn(8, cin, size, size, dtype=dtype)
    packed = tsc.pack_sparse_filter(w)
    geometry = (list(w.shape), [stride] * 2, [padding] * 2, [1, 1], 1)
    output, layout = KEEPING(x, *packed, *geometry[:1], None, *geometry[1:], "auto")
    # Without AVX-512 a vector holds one pixel: the layout is the layer's and always kept.
    if kept or torch.backends.cpu.get_cpu_capability() == "AVX512":
        assert (layout is not None) == kept
    assert torch.equal(output, OPS.sparse_filter_conv2d(x, *packed, *geometry[:1], None,
                                                        *geometry[1:], "auto"))
    grad_out = torch.randn_like(output)
    laid_out_here = BACKWARD(grad_out, x, *packed, *geometry, [True, True, False])
    changed = _in_whole_blocks_changed(x) if kept else x
    read = BACKWARD(grad_out, changed, *packed, *geometry, [True, True, False], layout)
    assert torch.equal(read[0], laid_out_here[0]) and torch.equal(read[1], laid_out_here[1])


@needs_lanes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("epilogue", [False, True])
def test_autograd_passes_the_kept_layout_to_the_backward(dtype, channels_last, epilogue):
    """A probe, not a promise to callers: overwriting the input's storage through .data
    (which autograd does not see) between the forward and the backward leaves the values'
    gradient that of the input the forward read, because the backward reads the layout the
    forward kept (batch 8: whole blocks only). The input's gradient does not read the input."""
    x, w, packed = _layer(8, 16, 10, dtype, channels_last=channels_last)
    row_ptr, col_idx, values = packed
    residual = torch.randn(8, 16, 10, 10, dtype=dtype) if epilogue else None
    leaf_x, leaf_v = x.clone().requires_grad_(), values.clone().requires_grad_()
    out = OPS.sparse_filter_conv2d(leaf_x, row_ptr, col_idx, leaf_v, list(w.shape), None,
                                   [1, 1], [1, 1], [1, 1], 1, "auto", residual, epilogue)
    grad_out = torch.randn_like(out)
    # The convolution's gradient past the epilogue, as the autograd kernel computes it.
    grad_conv = grad_out * (out > 0) if epilogue else grad_out
    expected = BACKWARD(grad_conv, x, *packed, list(w.shape), [1, 1], [1, 1], [1, 1], 1,
                        [True, True, False])
    leaf_x.data.mul_(-3.0)
    out.backward(grad_out)
    assert torch.equal(leaf_v.grad, expected[1])
    assert torch.equal(leaf_x.grad, expected[0])


@needs_lanes
def test_a_checkpointed_layer_recomputes_what_it_saved():
    """Non-reentrant checkpointing reruns the forward inside the backward and requires it to
    save as many tensors as the first run: the layout is kept by whether the values require
    a gradient, not by which gradients this backward asks for (here the input's only)."""
    x, w, packed = _layer(8, 16, 10, torch.float32)
    row_ptr, col_idx, values = packed
    leaf_x, leaf_v = x.clone().requires_grad_(), values.clone().requires_grad_()

    def layer(inp, vals):
        return OPS.sparse_filter_conv2d(inp, row_ptr, col_idx, vals, list(w.shape), None,
                                        [1, 1], [1, 1], [1, 1], 1, "auto")

    out = checkpoint(layer, leaf_x, leaf_v, use_reentrant=False)
    (grad_x,) = torch.autograd.grad(out.sum(), leaf_x)
    expected = BACKWARD(torch.ones_like(out), x, *packed, list(w.shape), [1, 1], [1, 1],
                        [1, 1], 1, [True, False, False])[0]
    assert torch.equal(grad_x, expected)
    out = checkpoint(layer, leaf_x, leaf_v, use_reentrant=False)
    out.sum().backward()
    assert torch.equal(leaf_v.grad, BACKWARD(torch.ones_like(out), x, *packed, list(w.shape),
                                             [1, 1], [1, 1], [1, 1], 1,
                                             [False, True, False])[1])


@pytest.mark.parametrize("case", ["batch_below_a_block", "float16", "strided_1x1", "dense",
                                  "unfold"])
def test_no_layout_where_the_values_gradient_would_not_read_it(case):
    """None where the backward would lay out nothing from the forward's lanes: a batch that
    does not fill the lanes, float16 (computed on float32 copies), a 1x1 stride-2 layer (its
    own kernel on the picked pixels), a density where oneDNN's gradient runs, a forward by
    another method."""
    dtype = torch.float16 if case == "float16" else torch.float32
    batch = 2 if case == "batch_below_a_block" else 8
    density = 0.8 if case == "dense" else 0.1  # the forward in the lanes, oneDNN's gradient
    x, w, packed = _layer(batch, 16, 8, dtype, density=density)
    stride, padding = ([2, 2], [0, 0]) if case == "strided_1x1" else ([1, 1], [1, 1])
    if case == "strided_1x1":
        w = random_weight((16, 16, 1, 1), 0.1, dtype)
        packed = tsc.pack_sparse_filter(w)
    method = {"unfold": "unfold", "dense": "direct"}.get(case, "auto")
    output, layout = KEEPING(x, *packed, list(w.shape), None, stride, padding, [1, 1], 1,
                             method)
    assert layout is None
    assert torch.equal(output, OPS.sparse_filter_conv2d(x, *packed, list(w.shape), None,
                                                        stride, padding, [1, 1], 1, method))


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_dispatch_mode_sees_the_plain_operator():
    """Under a dispatch mode (as under torch.compile's fake tensors) the autograd kernel calls
    sparse_filter_conv2d, and the backward lays the input out itself: the same gradients."""
    x, w, packed = _layer(8, 16, 10, torch.float32)
    row_ptr, col_idx, values = packed
    grads = []
    for mode in (None, _Recorder()):
        leaf_v = values.clone().requires_grad_()
        if mode is not None:
            with mode:
                out = OPS.sparse_filter_conv2d(x, row_ptr, col_idx, leaf_v, list(w.shape), None,
                                               [1, 1], [1, 1], [1, 1], 1, "auto")
            assert any("sparse_filter_conv2d.default" in op for op in mode.ops)
            assert not any("keeping_input_layout" in op for op in mode.ops)
        else:
            out = OPS.sparse_filter_conv2d(x, row_ptr, col_idx, leaf_v, list(w.shape), None,
                                           [1, 1], [1, 1], [1, 1], 1, "auto")
        out.sum().backward()
        grads.append(leaf_v.grad)
    assert torch.equal(grads[0], grads[1])


def test_a_layout_of_the_wrong_size_is_named():
    x, w, packed = _layer(8, 16, 10, torch.float32)
    grad_out = torch.randn(8, 16, 10, 10)
    with pytest.raises(RuntimeError, match="input_layout must be the layout that "
                                           "_sparse_filter_conv2d_keeping_input_layout returned"):
        BACKWARD(grad_out, x, *packed, list(w.shape), [1, 1], [1, 1], [1, 1], 1,
                 [False, True, False], torch.zeros(10))
    with pytest.raises(RuntimeError, match="input_layout"):
        BACKWARD(grad_out, x, *packed, list(w.shape), [1, 1], [1, 1], [1, 1], 1,
                 [False, True, False], torch.zeros(8 * 16 * 12 * 12, dtype=torch.float64))


def test_the_keeping_operator_is_not_traced():
    """Its layout's size depends on the CPU kernel that runs, so it has no fake kernel of
    shapes: traced code calls sparse_filter_conv2d instead, and a fake call says so."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    x, w, packed = _layer(8, 16, 10, torch.float32)
    with FakeTensorMode() as mode, pytest.raises(RuntimeError, match="trace sparse_filter_conv2d"):
        fake = [mode.from_tensor(t) for t in (x, *packed)]
        KEEPING(*_args(fake[0], w, tuple(fake[1:])))
