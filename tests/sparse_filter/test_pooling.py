"""ChannelsLastMaxPool2d and sparsify(pool_channels_last=True): max pooling of NCHW CPU tensors
in inference by the library's one-pass kernel (float32/float64, rows of 16 output columns or
more) or through channels-last (other large inputs), bit for bit nn.MaxPool2d's."""
import copy
import io
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_sparse_conv as tsc
from testing import run_script
from torch_sparse_conv.sparse_filter import ChannelsLastMaxPool2d, pool_channels_last
from torch_sparse_conv.sparse_filter import pooling
from torch_sparse_conv.sparse_filter.pooling import pools_in_one_pass, pools_through_channels_last

POOLS = [
    dict(kernel_size=3, stride=2, padding=1),  # ResNet's stem pool
    dict(kernel_size=2),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True),
    dict(kernel_size=3, stride=1, padding=1, dilation=2),
]
BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
        torch.bfloat16: torch.int16}


def tied_input(dtype=torch.float32, shape=(2, 16, 65, 67)):
    """Few distinct values (windows full of ties, as after a ReLU), NaN, -inf and -0.0."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, shape, generator=gen).to(dtype)
    x[0, 0, 0, 0] = float("nan")
    x[1, 3, 5, 5:7] = float("nan")
    x[1, 5, 7, 7] = float("-inf")
    x[0, 2] = float("-inf")  # a plane of -inf only
    x[0, 4, :4, :4] = -0.0
    return x


def small_tied_input(dtype, shape, seed=2):
    """tied_input's ingredients on any shape: ties, -0.0 beside 0.0, -inf, and NaNs with
    distinct payloads (float32/float64), so that which NaN a window keeps is seen."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, shape, generator=gen).to(dtype)
    flat = x.view(-1)
    x.view(-1)[(torch.rand(flat.shape, generator=gen) < 0.15)] = -0.0
    x.view(-1)[(torch.rand(flat.shape, generator=gen) < 0.05)] = float("-inf")
    nans = (torch.rand(flat.shape, generator=gen) < 0.08).nonzero().flatten()
    if dtype in (torch.float32, torch.float64):
        bits = flat.view(BITS[dtype])
        quiet = 0x7FC00000 if dtype == torch.float32 else 0x7FF8000000000000
        for i, at in enumerate(nans.tolist()):
            bits[at] = quiet | (i + 1)  # NaN, payload i + 1
    else:
        flat[nans] = float("nan")
    return x


def assert_same_nan_bits(a, b):
    """float32/float64: the NaNs too bit for bit (the same NaN of each window kept)."""
    assert torch.equal(a.contiguous().view(BITS[a.dtype]), b.contiguous().view(BITS[b.dtype]))


def assert_same_bits(a, b):
    """Bit for bit (-0.0 is not 0.0), NaN where the other has NaN (a bfloat16 NaN's sign and
    payload may differ between torch's two pooling kernels)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    numbers = ~a.isnan()
    assert torch.equal(a.contiguous().view(BITS[a.dtype])[numbers],
                       b.contiguous().view(BITS[b.dtype])[numbers])


ONE_PASS_DTYPES = (torch.float32, torch.float64)


def pool_args(args):
    """nn.MaxPool2d's keyword arguments as _max_pool2d_nchw's positional ones."""
    def two(v):
        return [v, v] if isinstance(v, int) else list(v)
    kernel = two(args["kernel_size"])
    return (kernel, two(args.get("stride", kernel)), two(args.get("padding", 0)),
            two(args.get("dilation", 1)), args.get("ceil_mode", False))


@pytest.fixture
def layouts_pooled(monkeypatch):
    """The memory format of every tensor pooling.py hands F.max_pool2d, in call order (the
    one-pass kernel calls none)."""
    seen = []

    def max_pool2d(input, *args, **kwargs):
        seen.append("channels_last" if input.dim() == 4 and not input.is_contiguous()
                    and input.is_contiguous(memory_format=torch.channels_last) else "nchw")
        return F.max_pool2d(input, *args, **kwargs)

    monkeypatch.setattr(pooling, "F", types.SimpleNamespace(max_pool2d=max_pool2d))
    return seen


@pytest.mark.parametrize("args", POOLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_same_bits_as_max_pool_on_the_fast_paths(args, dtype, layouts_pooled):
    x = tied_input(dtype)
    assert pools_through_channels_last(x)
    assert pools_in_one_pass(x, *pool_args(args)) == (dtype in ONE_PASS_DTYPES)
    out = ChannelsLastMaxPool2d(**args)(x)
    # float32/float64: the one-pass kernel; float16/bfloat16 through channels-last
    assert layouts_pooled == ([] if dtype in ONE_PASS_DTYPES else ["channels_last"])
    assert out.is_contiguous()  # the input's NCHW format
    assert_same_bits(out, nn.MaxPool2d(**args)(x))


ONE_PASS_POOLS = POOLS + [
    dict(kernel_size=2, stride=3),  # windows that skip columns
    dict(kernel_size=(1, 4), stride=(3, 2), padding=(0, 2), ceil_mode=True),
    dict(kernel_size=5, stride=2, padding=2, ceil_mode=True),
    dict(kernel_size=3, stride=3, ceil_mode=True),  # a last window past the input
    dict(kernel_size=(2, 3), stride=(1, 4), padding=(1, 1), dilation=(3, 2)),
    dict(kernel_size=1),
]


@pytest.mark.parametrize("args", ONE_PASS_POOLS)
@pytest.mark.parametrize("dtype", ONE_PASS_DTYPES)
@pytest.mark.parametrize("shape", [(2, 16, 65, 67), (1, 3, 5, 4), (3, 2, 9, 1), (1, 1, 1, 40)])
def test_one_pass_kernel_same_bits_as_max_pool(args, dtype, shape):
    """The operator itself on any geometry (rows narrower than a vector, a column or a row
    alone, planes fewer than the threads): nn.MaxPool2d's bits, ties, -inf, -0.0 and NaN
    included, down to which NaN each window keeps; a strided input read as its values."""
    x = small_tied_input(dtype, shape)
    op = torch.ops.torch_sparse_conv._max_pool2d_nchw
    try:
        expected = nn.MaxPool2d(**args)(x)
    except RuntimeError:  # an empty output or too much padding for this shape
        with pytest.raises(RuntimeError, match="_max_pool2d_nchw"):
            op(x, *pool_args(args))
        return
    assert_same_nan_bits(op(x, *pool_args(args)), expected)
    wide = torch.cat([x, x], dim=3)[..., ::2]
    assert_same_nan_bits(op(wide, *pool_args(args)), nn.MaxPool2d(**args)(wide))


ISA_SCRIPT = r"""
import torch
from torch import nn
import torch_sparse_conv
op = torch.ops.torch_sparse_conv._max_pool2d_nchw
gen = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float64):
    for (k, s, p, d, ceil) in [(3, 2, 1, 1, False), (2, 2, 0, 1, True), (3, 1, 1, 2, False),
                               (4, 3, 2, 1, True)]:
        x = torch.randint(0, 3, (2, 5, 37, 41), generator=gen).to(dtype)
        x[0, 0, 0, :3] = float("nan")
        x[1, 1, :4, :4] = -0.0
        out = op(x, [k, k], [s, s], [p, p], [d, d], ceil)
        expected = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)(x)
        bits = torch.int32 if dtype == torch.float32 else torch.int64
        assert torch.equal(out.isnan(), expected.isnan())
        assert torch.equal(out.view(bits)[~out.isnan()], expected.view(bits)[~out.isnan()])
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_one_pass_kernel_on_every_instruction_set(isa):
    """The narrower compilations of the kernel (this process runs the machine's widest)."""
    run_script(ISA_SCRIPT, TSC_CPU_ISA=isa)


def test_one_pass_kernel_checks_its_arguments():
    op = torch.ops.torch_sparse_conv._max_pool2d_nchw
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(RuntimeError, match="input must be 4-D"):
        op(x[0], [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        op(x.half(), [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="stride must be at least 1"):
        op(x, [2, 2], [0, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="padding must be at most half"):
        op(x, [2, 2], [2, 2], [2, 0], [1, 1], False)
    # within half the effective kernel (2 x 3 - 2 = 4) but not half the kernel: torch refuses
    with pytest.raises(RuntimeError, match="padding must be at most half"):
        op(x, [2, 2], [1, 1], [2, 0], [3, 1], False)
    with pytest.raises(RuntimeError, match="non-zero channels, height and width"):
        op(torch.randn(1, 4, 0, 40), [2, 2], [1, 1], [1, 1], [1, 1], False)
    with pytest.raises(RuntimeError, match="would be empty"):
        op(x, [9, 2], [1, 1], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="kernel_size must have 2 values"):
        op(x, [2], [2, 2], [0, 0], [1, 1], False)
    assert op(torch.randn(0, 3, 8, 8), [2, 2], [2, 2], [0, 0], [1, 1], False).shape == (0, 3, 4, 4)
    # (opcheck compares outputs with assert_close, which fails on NaN: no NaN here)
    finite = torch.randn(2, 4, 33, 35, generator=torch.Generator().manual_seed(3))
    torch.library.opcheck(op, (finite, [3, 3], [2, 2], [1, 1], [1, 1], True))
    torch.library.opcheck(op, (finite.double(), [2, 3], [1, 2], [0, 1], [2, 1], False))


@pytest.mark.parametrize("args", POOLS[:2])
def test_inputs_that_require_grad_take_the_plain_path(args, layouts_pooled):
    """In training the plain pool runs (no channels-last copy kept for the backward, an NCHW
    gradient for the layer before): the same gradients as nn.MaxPool2d's, ties included."""
    x = tied_input(torch.float64)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    out, expected = ChannelsLastMaxPool2d(**args)(a), nn.MaxPool2d(**args)(b)
    assert layouts_pooled == ["nchw"]
    grad = torch.randn(expected.shape, dtype=x.dtype,
                       generator=torch.Generator().manual_seed(1))
    out.backward(grad)
    expected.backward(grad)
    assert_same_bits(a.grad, b.grad)
    with torch.no_grad():
        assert_same_bits(ChannelsLastMaxPool2d(**args)(a), expected)
    assert layouts_pooled == ["nchw"]  # without autograd: the one-pass kernel
    assert torch.autograd.gradcheck(ChannelsLastMaxPool2d(**args),
                                    (torch.randn(1, 8, 9, 9, dtype=torch.float64,
                                                 requires_grad=True),))


def test_takes_max_pool_arguments_in_their_order():
    pool = ChannelsLastMaxPool2d(3, 2, 1, 1, False, True)
    assert (pool.kernel_size, pool.stride, pool.padding, pool.dilation) == (3, 2, 1, 1)
    assert pool.ceil_mode and not pool.return_indices
    with pytest.raises(ValueError, match="return_indices"):
        ChannelsLastMaxPool2d(3, 2, 1, 1, True)
    with pytest.raises(ValueError, match="return_indices"):
        ChannelsLastMaxPool2d(2, return_indices=True)


def test_inputs_outside_the_rules_take_the_plain_path(layouts_pooled):
    pool = ChannelsLastMaxPool2d(2)
    args = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    # Too small or too few channels for the copies through channels-last to pay; float32
    # rows of 16 output columns: the one-pass kernel pools them (no F.max_pool2d call).
    few_channels = torch.randn(64, 3, 32, 32)
    small = torch.randn(2, 32, 32, 32)  # 65,536 elements
    for x in (few_channels, small):
        assert not pools_through_channels_last(x) and pools_in_one_pass(x, *args)
        assert_same_bits(pool(x), nn.MaxPool2d(2)(x))
    assert layouts_pooled == []
    # Rows of 15 output columns, or float16: the plain NCHW pool.
    narrow = torch.randn(2, 32, 30, 30)
    half = torch.randn(2, 32, 32, 32).half()
    # Already channels-last, unbatched, not contiguous: neither fast path.
    last = tied_input().contiguous(memory_format=torch.channels_last)
    unbatched = torch.randn(16, 128, 128)
    strided = torch.randn(2, 16, 130, 134)[:, :, ::2, ::2]
    for x in (narrow, half, last, unbatched, strided):
        assert not pools_through_channels_last(x)
        assert x.dim() != 4 or not pools_in_one_pass(x, *args)
        out = pool(x)
        assert_same_bits(out, nn.MaxPool2d(2)(x))
        assert out.is_contiguous(memory_format=torch.channels_last) == (x is last)
    # the channels-last input was pooled as it came; no other went through channels-last
    assert layouts_pooled == ["nchw", "nchw", "channels_last", "nchw", "nchw"]
    # Arguments torch refuses, or empty dimensions: torch's pool and its error, not the
    # one-pass kernel's.
    x = torch.randn(1, 8, 64, 64)
    for refused in (dict(kernel_size=2, dilation=3, padding=2), dict(kernel_size=3, stride=0)):
        assert not pools_in_one_pass(x, *pool_args(refused))
        with pytest.raises(RuntimeError) as ours:
            ChannelsLastMaxPool2d(**refused)(x)
        with pytest.raises(RuntimeError) as torchs:
            nn.MaxPool2d(**refused)(x)
        assert str(ours.value) == str(torchs.value)
    empty_rows = torch.randn(1, 4, 0, 40)
    assert not pools_in_one_pass(empty_rows, [2, 2], [1, 1], [1, 1], [1, 1], False)
    # One-element sequences stand for both dimensions, an empty stride for the kernel, as
    # torch reads them.
    assert layouts_pooled[-2:] == ["nchw", "nchw"]  # the refused ones, to torch's pool
    for short in (dict(kernel_size=(3,), stride=(2,), padding=(1,)), dict(kernel_size=2,
                                                                       stride=())):
        assert_same_bits(ChannelsLastMaxPool2d(**short)(x), nn.MaxPool2d(**short)(x))
    assert len(layouts_pooled) == 7  # these two pooled in one pass, not by torch
    # A large input pooled to rows of 8 columns goes through channels-last (the one-pass
    # kernel lost there).
    wide_planes = torch.randn(1, 512, 16, 16)
    assert pools_through_channels_last(wide_planes) and not pools_in_one_pass(wide_planes, *args)
    assert_same_bits(pool(wide_planes), nn.MaxPool2d(2)(wide_planes))
    assert layouts_pooled[-1] == "channels_last"


def test_from_max_pool_and_pool_channels_last():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.MaxPool2d(3, 2, 1),
                          nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, return_indices=True)),
                          nn.MaxPool2d(2, ceil_mode=True))
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        expected_inner = model[:2](x)
    model[3].eval()
    assert pool_channels_last(model) == ["1", "3"]  # the one returning indices is kept
    assert type(model[1]) is ChannelsLastMaxPool2d and model[3].ceil_mode
    assert model[1].training and not model[3].training  # each keeps its mode
    assert type(model[2][1]) is nn.MaxPool2d
    with torch.no_grad():
        assert torch.equal(model[:2](x), expected_inner)
    with pytest.raises(ValueError, match="return_indices"):
        ChannelsLastMaxPool2d.from_max_pool(nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(TypeError, match="nn.MaxPool2d"):
        ChannelsLastMaxPool2d.from_max_pool(nn.AvgPool2d(2))
    with pytest.raises(TypeError, match="nn.Module"):
        pool_channels_last("model")


def pruned_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                          nn.Conv2d(16, 16, 3, padding=1))
    with torch.no_grad():
        for conv in (model[0], model[3]):
            conv.weight.mul_(torch.rand_like(conv.weight) > 0.9)
    return model.eval()


def test_sparsify_option_reports_and_densify_turns_back():
    model = pruned_net()
    x = torch.randn(2, 3, 64, 64)  # the pool's input: 2 x 16 x 64 x 64, 131,072 elements
    with torch.no_grad():
        expected = model(x)
    dense = copy.deepcopy(model)
    sparse, report = tsc.sparsify(model, return_report=True, pool_channels_last=True)
    assert report.pooled == ["2"] and type(sparse[2]) is ChannelsLastMaxPool2d
    assert tsc.sparsify(copy.deepcopy(dense), return_report=True)[1].pooled == []  # opt-in
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), expected, rtol=1e-5, atol=1e-5)
    back = tsc.densify(sparse)
    assert type(back[2]) is nn.MaxPool2d and back[2].padding == 1 and back[2].stride == 2
    assert not back[2].training
    dense.load_state_dict(back.state_dict())


def test_scripts_and_exports():
    model = nn.Sequential(ChannelsLastMaxPool2d(3, 2, 1), nn.ReLU())
    x = tied_input()
    expected = model(x)
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    assert_same_bits(torch.jit.load(buffer)(x), expected)
    exported = torch.export.export(model, (x,))
    assert_same_bits(exported.module()(x), expected)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert_same_bits(compiled(x), expected)
