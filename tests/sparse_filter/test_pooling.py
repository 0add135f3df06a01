"""ChannelsLastMaxPool2d and sparsify(pool_channels_last=True): max pooling of large NCHW CPU
tensors through channels-last in inference, bit for bit nn.MaxPool2d's."""
import copy
import io
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_sparse_conv as tsc
from torch_sparse_conv.sparse_filter import ChannelsLastMaxPool2d, pool_channels_last
from torch_sparse_conv.sparse_filter import pooling
from torch_sparse_conv.sparse_filter.pooling import pools_through_channels_last

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


def assert_same_bits(a, b):
    """Bit for bit (-0.0 is not 0.0), NaN where the other has NaN (a bfloat16 NaN's sign and
    payload may differ between torch's two pooling kernels)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    numbers = ~a.isnan()
    assert torch.equal(a.contiguous().view(BITS[a.dtype])[numbers],
                       b.contiguous().view(BITS[b.dtype])[numbers])


@pytest.fixture
def layouts_pooled(monkeypatch):
    """The memory format of every tensor pooling.py hands F.max_pool2d, in call order."""
    seen = []

    def max_pool2d(input, *args, **kwargs):
        seen.append("channels_last" if input.dim() == 4 and not input.is_contiguous()
                    and input.is_contiguous(memory_format=torch.channels_last) else "nchw")
        return F.max_pool2d(input, *args, **kwargs)

    monkeypatch.setattr(pooling, "F", types.SimpleNamespace(max_pool2d=max_pool2d))
    return seen


@pytest.mark.parametrize("args", POOLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_same_bits_as_max_pool_through_channels_last(args, dtype, layouts_pooled):
    x = tied_input(dtype)
    assert pools_through_channels_last(x)
    out = ChannelsLastMaxPool2d(**args)(x)
    assert layouts_pooled == ["channels_last"]  # the fast path was taken
    assert out.is_contiguous()  # the input's NCHW format
    assert_same_bits(out, nn.MaxPool2d(**args)(x))


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
        ChannelsLastMaxPool2d(**args)(a)
    assert layouts_pooled[-1] == "channels_last"
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


def test_inputs_outside_the_rule_take_the_plain_path(layouts_pooled):
    pool = ChannelsLastMaxPool2d(2)
    few_channels = torch.randn(64, 3, 32, 32)  # the copies cost more than the pool
    small = torch.randn(2, 32, 32, 32)  # 65,536 elements
    last = tied_input().contiguous(memory_format=torch.channels_last)
    unbatched = torch.randn(16, 128, 128)
    strided = torch.randn(2, 16, 130, 134)[:, :, ::2, ::2]
    for x in (few_channels, small, last, unbatched, strided):
        assert not pools_through_channels_last(x)
        out = pool(x)
        assert_same_bits(out, nn.MaxPool2d(2)(x))
        assert out.is_contiguous(memory_format=torch.channels_last) == (x is last)
    # the channels-last input was pooled as it came; no other went through channels-last
    assert layouts_pooled == ["nchw", "nchw", "channels_last", "nchw", "nchw"]


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
