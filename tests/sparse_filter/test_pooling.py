"""ChannelsLastMaxPool2d and sparsify(pool_channels_last=True): max pooling of large NCHW CPU
tensors through channels-last, bit for bit nn.MaxPool2d's (values, NaN, gradients)."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_sparse_conv as tsc
from torch_sparse_conv.sparse_filter import ChannelsLastMaxPool2d, pool_channels_last
from torch_sparse_conv.sparse_filter.pooling import pools_through_channels_last

POOLS = [
    dict(kernel_size=3, stride=2, padding=1),  # ResNet's stem pool
    dict(kernel_size=2),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True),
    dict(kernel_size=3, stride=1, padding=1, dilation=2),
]


def tied_input(dtype=torch.float32, shape=(2, 16, 33, 35)):
    """Few distinct values (windows full of ties, as after a ReLU), NaN and -inf."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, shape, generator=gen).to(dtype)
    x[0, 0, 0, 0] = float("nan")
    x[1, 3, 5, 5:7] = float("nan")
    x[1, 5, 7, 7] = float("-inf")
    x[0, 2] = float("-inf")  # a plane of -inf only
    return x


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(0.5), b.nan_to_num(0.5))


@pytest.mark.parametrize("args", POOLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_same_values_and_gradients_as_max_pool(args, dtype):
    x = tied_input(dtype)
    assert pools_through_channels_last(x)
    pool = ChannelsLastMaxPool2d(**args)
    reference = nn.MaxPool2d(**args)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    out, expected = pool(a), reference(b)
    assert out.is_contiguous()  # the input's NCHW format
    assert_same_bits(out, expected)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(a.grad, b.grad)  # ties routed to the same element


def test_inputs_outside_the_rule_take_the_plain_path():
    pool = ChannelsLastMaxPool2d(2)
    small = torch.randn(4, 3, 32, 32)  # 3 channels: the copies cost more than the pool
    last = torch.randn(2, 16, 33, 35).contiguous(memory_format=torch.channels_last)
    unbatched = torch.randn(16, 64, 64)
    strided = torch.randn(2, 16, 66, 70)[:, :, ::2, ::2]
    for x in (small, last, unbatched, strided):
        assert not pools_through_channels_last(x)
        out = pool(x)
        assert_same_bits(out, F.max_pool2d(x, 2))
        assert out.is_contiguous(memory_format=torch.channels_last) == (x is last)


def test_from_max_pool_and_pool_channels_last():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.MaxPool2d(3, 2, 1),
                          nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, return_indices=True)),
                          nn.MaxPool2d(2, ceil_mode=True))
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        expected_inner = model[:2](x)
    assert pool_channels_last(model) == ["1", "3"]  # the one returning indices is kept
    assert type(model[1]) is ChannelsLastMaxPool2d and model[3].ceil_mode
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
    x = torch.randn(2, 3, 48, 48)
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
