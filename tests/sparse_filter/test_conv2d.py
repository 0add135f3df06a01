"""sparse_filter_conv2d against F.conv2d: values, gradients, registration, TorchScript."""
import io
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

CPU_METHODS = ["direct", "unfold", "dense", "auto"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tolerances(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)


def seed_of(cfg):
    """A stable seed per configuration (str hashes change between processes)."""
    return zlib.crc32(repr(sorted(cfg.items())).encode())


def random_weight(shape, density, dtype, generator=None):
    weight = torch.randn(shape, dtype=dtype, generator=generator)
    keep = torch.rand(shape, generator=generator) < density
    return weight * keep


def random_config(rng):
    """A random conv2d configuration covering stride, padding, dilation, groups, shape."""
    groups = rng.choice([1, 1, 2, 3])
    cin = groups * rng.randint(1, 4)
    cout = groups * rng.randint(1, 4)
    kh, kw = rng.randint(1, 4), rng.randint(1, 4)
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = (rng.randint(1, 2), rng.randint(1, 2))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    h = rng.randint((kh - 1) * dilation[0] + 1, 12)
    w = rng.randint((kw - 1) * dilation[1] + 1, 12)
    batch = rng.randint(1, 3)
    return dict(batch=batch, cin=cin, cout=cout, kernel=(kh, kw), stride=stride,
                padding=padding, dilation=dilation, groups=groups, size=(h, w))


GRID = [random_config(random.Random(seed)) for seed in range(40)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", CPU_METHODS)
@pytest.mark.parametrize("cfg", GRID, ids=[f"cfg{i}" for i in range(len(GRID))])
def test_forward_matches_conv2d(cfg, method, dtype, device):
    if device == "cuda" and method == "unfold":
        pytest.skip("'unfold' is CPU-only")
    gen = torch.Generator().manual_seed(seed_of(cfg))
    density = [0.0, 0.05, 0.3, 0.7, 1.0][seed_of(cfg) % 5]
    x = torch.randn(cfg["batch"], cfg["cin"], *cfg["size"], dtype=dtype, generator=gen)
    w = random_weight((cfg["cout"], cfg["cin"] // cfg["groups"], *cfg["kernel"]), density, dtype,
                      gen)
    b = torch.randn(cfg["cout"], dtype=dtype, generator=gen)
    x, w, b = x.to(device), w.to(device), b.to(device)
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    expected = F.conv2d(x, w, b, *args)
    got = tsc.sparse_conv2d(x, w, b, *args, method=method)
    torch.testing.assert_close(got, expected, **tolerances(dtype))
    got = tsc.sparse_conv2d(x, w, None, *args, method=method)
    torch.testing.assert_close(got, F.conv2d(x, w, None, *args), **tolerances(dtype))


@pytest.mark.parametrize("density", [0.0, 0.02, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("method", CPU_METHODS)
def test_resnet_like_layer(method, density):
    torch.manual_seed(0)
    x = torch.randn(2, 32, 15, 17)
    w = random_weight((48, 32, 3, 3), density, torch.float32)
    b = torch.randn(48)
    for stride in (1, 2):
        expected = F.conv2d(x, w, b, stride, 1)
        torch.testing.assert_close(tsc.sparse_conv2d(x, w, b, stride, 1, method=method),
                                   expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", CPU_METHODS)
def test_memory_formats_and_views(method):
    torch.manual_seed(1)
    base = torch.randn(3, 8, 20, 22, dtype=torch.float64)
    w = random_weight((6, 8, 3, 3), 0.3, torch.float64)
    inputs = {
        "channels_last": base.to(memory_format=torch.channels_last),
        "sliced": base[:, 1:7, 2:18:2, ::3],
        "transposed": base.transpose(2, 3),
        "batch_view": base[1:],
    }
    for name, x in inputs.items():
        weight = w[:, : x.shape[1]]
        expected = F.conv2d(x, weight, None, 1, 1)
        got = tsc.sparse_conv2d(x, weight, None, 1, 1, method=method)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("padding", ["same", "valid", 0, 2, (1, 3)])
@pytest.mark.parametrize("kernel", [(3, 3), (2, 4), (1, 5), (4, 1)])
def test_padding_modes(padding, kernel):
    torch.manual_seed(2)
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    w = random_weight((5, 4, *kernel), 0.4, torch.float64)
    for dilation in (1, 2):
        expected = F.conv2d(x, w, None, 1, padding, dilation)
        got = tsc.sparse_conv2d(x, w, None, 1, padding, dilation)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_unbatched_input():
    torch.manual_seed(3)
    x = torch.randn(4, 8, 8)
    w = random_weight((5, 4, 3, 3), 0.3, torch.float32)
    torch.testing.assert_close(tsc.sparse_conv2d(x, w, padding=1), F.conv2d(x, w, padding=1),
                               rtol=1e-5, atol=1e-5)


def test_empty_batch_and_empty_weight():
    x = torch.randn(0, 4, 8, 8)
    w = random_weight((5, 4, 3, 3), 0.3, torch.float32)
    assert tsc.sparse_conv2d(x, w).shape == (0, 5, 6, 6)
    x = torch.randn(2, 4, 8, 8)
    b = torch.randn(5)
    out = tsc.sparse_conv2d(x, torch.zeros(5, 4, 3, 3), b, method="direct")
    torch.testing.assert_close(out, b.view(1, 5, 1, 1).expand(2, 5, 6, 6))


def test_large_plane_and_many_channels():
    """Runs longer than one cache block and more channels than one L1 chunk."""
    torch.manual_seed(4)
    x = torch.randn(2, 300, 40, 41)
    w = random_weight((7, 300, 3, 3), 0.05, torch.float32)
    expected = F.conv2d(x, w, None, 1, 1)
    for method in ("direct", "unfold"):
        torch.testing.assert_close(tsc.sparse_conv2d(x, w, None, 1, 1, method=method), expected,
                                   rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("method", CPU_METHODS)
@pytest.mark.parametrize("cfg", GRID[:20], ids=[f"cfg{i}" for i in range(20)])
def test_gradients_match_masked_conv2d(cfg, method):
    gen = torch.Generator().manual_seed(7 + seed_of(cfg))
    dtype = torch.float64
    x = torch.randn(cfg["batch"], cfg["cin"], *cfg["size"], dtype=dtype, generator=gen)
    w = random_weight((cfg["cout"], cfg["cin"] // cfg["groups"], *cfg["kernel"]), 0.4, dtype,
                      gen)
    b = torch.randn(cfg["cout"], dtype=dtype, generator=gen)
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    mask = (w != 0).to(dtype)

    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    out = tsc.sparse_conv2d(*leaves, *args, method=method)
    grad_out = torch.randn(out.shape, dtype=dtype, generator=gen)
    got = torch.autograd.grad(out, leaves, grad_out)

    ref_leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(ref_leaves[0], ref_leaves[1] * mask, ref_leaves[2], *args)
    expected = torch.autograd.grad(ref, ref_leaves, grad_out)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)
    assert torch.all(got[1][mask == 0] == 0), "pruned taps must get zero gradient"


def test_gradcheck_float64():
    torch.manual_seed(5)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    w = random_weight((6, 2, 3, 2), 0.5, torch.float64)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    values = values.clone().requires_grad_()
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    for stride, padding, dilation in [((1, 1), (1, 0), (1, 1)), ((2, 1), (0, 1), (1, 2))]:
        def fn(x, values, b):
            return torch.ops.torch_sparse_conv.sparse_filter_conv2d(
                x, row_ptr, col_idx, values, list(w.shape), b, list(stride), list(padding),
                list(dilation), 2, "direct")
        assert torch.autograd.gradcheck(fn, (x, values, b))


def test_gradient_of_values_only_and_input_only():
    torch.manual_seed(6)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    w = random_weight((4, 3, 3, 3), 0.5, torch.float64).requires_grad_()
    (gw,) = torch.autograd.grad(tsc.sparse_conv2d(x, w).sum(), [w])
    ref_w = w.detach().clone().requires_grad_()
    (rw,) = torch.autograd.grad(F.conv2d(x, ref_w * (w != 0)).sum(), [ref_w])
    torch.testing.assert_close(gw, rw * (w != 0))
    x.requires_grad_()
    (gx,) = torch.autograd.grad(tsc.sparse_conv2d(x, w.detach()).sum(), [x])
    (rx,) = torch.autograd.grad(F.conv2d(x, w.detach()).sum(), [x])
    torch.testing.assert_close(gx, rx)


# ----------------------------------------------------------------------------- registration

def _opcheck_samples():
    torch.manual_seed(8)
    samples = []
    for stride, padding, groups in [((1, 1), (1, 1), 1), ((2, 1), (0, 2), 2)]:
        x = torch.randn(2, 4, 7, 8, dtype=torch.float64, requires_grad=True)
        w = random_weight((6, 4 // groups, 3, 3), 0.4, torch.float64)
        row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
        values = values.clone().requires_grad_()
        b = torch.randn(6, dtype=torch.float64, requires_grad=True)
        samples.append((x, row_ptr, col_idx, values, list(w.shape), b, list(stride),
                        list(padding), [1, 1], groups, "direct"))
    return samples


@pytest.mark.parametrize("sample", range(2))
def test_opcheck_forward(sample):
    args = _opcheck_samples()[sample]
    torch.library.opcheck(torch.ops.torch_sparse_conv.sparse_filter_conv2d.default, args)
    no_bias = args[:5] + (None,) + args[6:]
    torch.library.opcheck(torch.ops.torch_sparse_conv.sparse_filter_conv2d.default, no_bias)


def test_opcheck_backward_and_pack():
    x, row_ptr, col_idx, values, size, b, stride, padding, dilation, groups, _ = \
        _opcheck_samples()[1]
    out = torch.ops.torch_sparse_conv.sparse_filter_conv2d(
        x, row_ptr, col_idx, values, size, b, stride, padding, dilation, groups, "direct")
    grad = torch.randn_like(out)
    torch.library.opcheck(
        torch.ops.torch_sparse_conv._sparse_filter_conv2d_backward.default,
        (grad, x.detach(), row_ptr, col_idx, values.detach(), size, stride, padding, dilation,
         groups, [True, True, True]))
    w = random_weight((6, 2, 3, 3), 0.4, torch.float32)
    torch.library.opcheck(torch.ops.torch_sparse_conv.pack_sparse_filter.default, (w,),
                          test_utils=("test_schema", "test_autograd_registration"))


def test_pack_and_unpack_round_trip():
    w = random_weight((5, 3, 2, 3), 0.3, torch.float64)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    assert row_ptr.dtype == col_idx.dtype == torch.int64
    assert row_ptr.shape == (6,) and int(row_ptr[-1]) == int((w != 0).sum())
    assert torch.equal(tsc.unpack_sparse_filter(row_ptr, col_idx, values, list(w.shape)), w)


def test_torch_compile_fullgraph():
    torch.manual_seed(9)
    layer = tsc.SparseConv2d(8, 16, 3, padding=1, density=0.2)
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    out.sum().backward()
    assert x.grad is not None and layer.values.grad is not None


def test_torch_compile_functional_inductor():
    torch.manual_seed(10)
    x = torch.randn(2, 4, 9, 9)
    w = random_weight((6, 4, 3, 3), 0.3, torch.float32)

    def fn(x):
        return torch.relu(tsc.sparse_conv2d(x, w, padding=1))

    compiled = torch.compile(fn, fullgraph=True)
    torch.testing.assert_close(compiled(x), torch.relu(F.conv2d(x, w, padding=1)))


def test_cuda_version_reported():
    version = tsc.cuda_version_compiled()
    assert version == 0 or version >= 11000


# ----------------------------------------------------------------------------- TorchScript

def test_script_save_load_module():
    torch.manual_seed(11)
    model = torch.nn.Sequential(tsc.SparseConv2d(3, 8, 3, padding=1, density=0.3),
                                torch.nn.ReLU(),
                                tsc.SparseConv2d(8, 4, (2, 3), stride=2, density=0.2))
    x = torch.randn(2, 3, 12, 12)
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    torch.testing.assert_close(loaded(x), model(x))
    loaded(x).sum().backward()  # gradients flow through the loaded model's C++ autograd


def test_dense_method_sees_in_place_updates_of_the_packed_weight():
    """The 'dense' method must follow in-place updates of the packed weight."""
    torch.manual_seed(12)
    x = torch.randn(2, 4, 8, 8)
    w = random_weight((6, 4, 3, 3), 0.3, torch.float32)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)

    def run():
        return tsc.sparse_conv2d_packed(x, row_ptr, col_idx, values, list(w.shape), None,
                                        [1, 1], [1, 1], [0, 0], [1, 1], 1, "dense")

    torch.testing.assert_close(run(), F.conv2d(x, w, None, 1, 1))
    with torch.no_grad():
        values.mul_(2)
    torch.testing.assert_close(run(), F.conv2d(x, 2 * w, None, 1, 1))
    layer = tsc.SparseConv2d(4, 6, 3, padding=1, density=0.3, method="dense")
    before = layer(x)
    with torch.no_grad():
        layer.values.add_(1.0)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.dense_weight(), layer.bias, 1, 1))
    assert not torch.allclose(before, layer(x))


@pytest.mark.parametrize("method", ["direct", "unfold"])
def test_narrow_inputs_with_large_strides(method):
    """Phases whose columns fall entirely outside a 1- or 2-pixel-wide input."""
    torch.manual_seed(13)
    for width, stride, padding in [(1, 3, 0), (1, 3, 1), (2, 4, 1), (1, 2, 2), (3, 5, 2)]:
        x = torch.randn(2, 3, width + 4, width, dtype=torch.float64)
        w = random_weight((4, 3, 2, 1), 0.7, torch.float64)
        expected = F.conv2d(x, w, None, (1, stride), (0, padding))
        got = tsc.sparse_conv2d(x, w, None, (1, stride), (0, padding), method=method)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
        expected = F.conv2d(x.transpose(2, 3), w.transpose(2, 3), None, (stride, 1), (padding, 0))
        got = tsc.sparse_conv2d(x.transpose(2, 3), w.transpose(2, 3), None, (stride, 1),
                                (padding, 0), method=method)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
