"""sparse_filter_conv2d against F.conv2d: values, gradients, registration, TorchScript, on every
device; the CUDA kernels against the CPU ones (skipped without a GPU)."""
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import (
    DEVICES,
    ROOT,
    needs_gpu,
    random_weight,
    run_python,
    run_script,
    saved_and_loaded,
)

CPU_METHODS = ["direct", "unfold", "dense", "auto"]
CUDA_METHODS = ["direct", "spmm", "dense", "auto"]
HALF_TYPES = [torch.float16, torch.bfloat16]


def tolerances(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)


def seed_of(cfg):
    """A stable seed per configuration (str hashes change between processes)."""
    return zlib.crc32(repr(sorted(cfg.items())).encode())


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cin, cout, kernel, kwargs, size", [
    (2048, 24, 1, {}, 7),                          # one chunk in float32, not float64
    (512, 16, 3, dict(padding=1), 7),              # a 3x3 kernel's halo columns
    (512, 12, 3, dict(padding=1, stride=2), 14),   # strided: four phase planes a channel
    (256, 8, 3, dict(padding=1, groups=2), 7),     # each group's channels one chunk
    (8192, 8, 1, {}, 7),                           # more than half of L2: chunks again
])
def test_one_sample_short_runs(cin, cout, kernel, kwargs, size, dtype):
    """A single sample of a 7x7 plane reads all its input channels as one chunk where they
    fit half of L2 (direct.cpp, one_chunk_pays), in L1-sized chunks where they do not."""
    torch.manual_seed(cin + cout)
    groups = kwargs.get("groups", 1)
    x = torch.randn(1, cin, size, size, dtype=dtype)
    w = random_weight((cout, cin // groups, kernel, kernel), 0.1, dtype)
    bias = torch.randn(cout, dtype=dtype)
    expected = F.conv2d(x, w, bias, **kwargs)
    got = tsc.sparse_conv2d(x, w, bias, method="direct", **kwargs)
    torch.testing.assert_close(got, expected, **tolerances(dtype))


# -------------------------------------------------------------------------------- gradients

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


@pytest.mark.slow
def test_torch_compile_fullgraph():
    torch.manual_seed(9)
    layer = tsc.SparseConv2d(8, 16, 3, padding=1, density=0.2)
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    out.sum().backward()
    assert x.grad is not None and layer.values.grad is not None


@pytest.mark.slow
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


# ------------------------------------------------------------------------------ TorchScript

def _scripted_or_traced(model, how, x):
    converted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, (x,))
    return [converted, saved_and_loaded(converted)]


@pytest.mark.parametrize("how", ["script", "trace"])
def test_module_scripts_and_traces_through_save_and_load(how):
    torch.manual_seed(11)
    model = torch.nn.Sequential(
        tsc.SparseConv2d(3, 8, 3, padding="same", padding_mode="reflect", density=0.3),
        torch.nn.ReLU(),
        tsc.SparseConv2d(8, 4, (2, 3), stride=2, padding=(1, 0), groups=2, bias=False,
                         density=0.4))
    for module in _scripted_or_traced(model, how, torch.randn(2, 3, 12, 12)):
        x = torch.randn(3, 3, 11, 12, requires_grad=True)  # not the traced batch and size
        torch.testing.assert_close(module(x), model(x))
        # Gradients flow through the converted model's C++ autograd, as through the eager one.
        expected = torch.autograd.grad(model(x).sum(), x)[0]
        torch.testing.assert_close(torch.autograd.grad(module(x).sum(), x)[0], expected)


class _Functional(torch.nn.Module):
    """tsc.sparse_conv2d called with each form its arguments take: int, tuple, list, 'same'."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(random_weight((6, 4, 3, 3), 0.3, torch.float32))
        self.b1 = torch.nn.Parameter(torch.randn(6))
        self.w2 = torch.nn.Parameter(random_weight((4, 3, 2, 3), 0.4, torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(tsc.sparse_conv2d(x, self.w1, self.b1, 1, "same"))
        return tsc.sparse_conv2d(y, self.w2, None, (2, 1), [1, 0], 1, 2, "direct")


@pytest.mark.parametrize("how", ["script", "trace"])
def test_functional_scripts_and_traces_through_save_and_load(how):
    torch.manual_seed(13)
    model = _Functional()
    x = torch.randn(2, 4, 9, 9)
    for module in _scripted_or_traced(model, how, x):
        x = torch.randn(3, 4, 9, 10)
        torch.testing.assert_close(module(x), model(x))
    reference = F.conv2d(torch.relu(F.conv2d(x, model.w1, model.b1, padding="same")),
                         model.w2, stride=(2, 1), padding=(1, 0), groups=2)
    torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-4)


def test_scripted_functional_checks_its_arguments():
    """The argument checks run in TorchScript too (its own text for values: lists, no quotes)."""
    scripted = torch.jit.script(tsc.sparse_conv2d)
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    torch.testing.assert_close(scripted(x, w, None, 1, "same"), F.conv2d(x, w, padding="same"))
    for call, message in [
            (lambda: scripted(x, w, None, 1, "full"), "padding must be an int, a pair, 'same' "
                                                      "or 'valid', got full"),
            (lambda: scripted(x, w, None, [1, 2, 3]), r"stride must be an int or a pair of "
                                                      r"ints, got \[1, 2, 3\]"),
            (lambda: scripted(x[0, 0], w), r"input must be 4-D .* got shape \[5, 5\]"),
            (lambda: scripted(x, w, method="fft"), "method must be one of"),
            (lambda: scripted(x.long(), w.long()), "input must be float32")]:
        with pytest.raises(Exception, match=message):
            call()


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


# --------------------------------------------------------------------- CUDA against the CPU

def _case(cfg, dtype, density=0.3):
    gen = torch.Generator().manual_seed(seed_of(cfg))
    x = torch.randn(cfg["batch"], cfg["cin"], *cfg["size"], dtype=dtype, generator=gen)
    w = random_weight((cfg["cout"], cfg["cin"] // cfg["groups"], *cfg["kernel"]), density,
                      dtype, gen)
    b = torch.randn(cfg["cout"], dtype=dtype, generator=gen)
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    return x, w, b, args, gen


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", GRID[:24], ids=[f"cfg{i}" for i in range(24)])
def test_cuda_matches_cpu_forward_and_backward(cfg, dtype):
    x, w, b, args, gen = _case(cfg, dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    cpu_leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    cpu_out = tsc.sparse_conv2d(*cpu_leaves, *args, method="direct")
    grad = torch.randn(cpu_out.shape, dtype=dtype, generator=gen)
    cpu_grads = torch.autograd.grad(cpu_out, cpu_leaves, grad)
    for method in CUDA_METHODS:
        leaves = [t.cuda().requires_grad_() for t in (x, w, b)]
        out = tsc.sparse_conv2d(*leaves, *args, method=method)
        torch.testing.assert_close(out.cpu(), cpu_out.detach(), **tol, msg=method)
        grads = torch.autograd.grad(out, leaves, grad.cuda())
        for got, expected in zip(grads, cpu_grads):
            torch.testing.assert_close(got.cpu(), expected, **tol, msg=method)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("cfg", GRID[:12], ids=[f"cfg{i}" for i in range(12)])
def test_half_precision_accumulates_in_float(cfg, dtype, device):
    """float16/bfloat16 in and out, float32 inside: within the input rounding of float64."""
    x, w, b, args, gen = _case(cfg, dtype)
    ref_leaves = [t.double().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(*ref_leaves, *args)
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    ref_grads = list(torch.autograd.grad(ref, ref_leaves, grad))
    ref_grads[1] = ref_grads[1] * (w != 0)  # pruned taps stay pruned: no gradient there
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=4e-3, atol=4e-3)
    for method in ("direct", "dense", "auto") + (("unfold",) if device == "cpu" else ()):
        leaves = [t.to(device).requires_grad_() for t in (x, w, b)]
        out = tsc.sparse_conv2d(*leaves, *args, method=method)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double().cpu(), ref.detach(), **tol, msg=method)
        grads = torch.autograd.grad(out, leaves, grad.to(dtype).to(device))
        for got, expected in zip(grads, ref_grads):
            scale = expected.abs().max().item() + 1
            torch.testing.assert_close(got.double().cpu() / scale, expected / scale, **tol,
                                       msg=method)


@needs_gpu
@pytest.mark.parametrize("shape,kernel,kwargs", [
    ((2, 64, 30, 41), (3, 3), dict(padding=1)),                  # several channel chunks
    ((3, 40, 9, 70), (3, 5), dict(stride=(1, 2), padding=2)),   # wide, strided
    ((5, 16, 7, 7), (3, 3), dict(padding=1, groups=4)),         # several images per block
    ((1, 3, 40, 40), (7, 7), dict(dilation=6, padding=9)),      # large dilated window
    ((2, 2, 300, 300), (31, 31), dict(dilation=9)),             # window too big: fallback
    ((2, 96, 5, 5), (1, 1), {}),                                 # 1x1, many output blocks
])
def test_cuda_direct_tiling_shapes(shape, kernel, kwargs):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    groups = kwargs.get("groups", 1)
    cout = 48 if shape[1] != 2 else 3
    w = random_weight((cout, shape[1] // groups, *kernel), 0.2, torch.float64, gen)
    expected = F.conv2d(x, w, **kwargs)
    out = tsc.sparse_conv2d(x.cuda(), w.cuda(), method="direct", **kwargs)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)


MERGED_WINDOW_SCRIPT = """
import torch, torch.nn.functional as F, torch_sparse_conv as tsc
torch.manual_seed(4)
# ResNet-50's first 3x3 layer at batch 64: its 64-channel window (77 KiB in float32) takes
# the opt-in shared memory and both output-channel blocks are walked by one block; in
# float64 the window is split into chunks instead.
for dtype in (torch.float32, torch.float64):
    x = torch.randn(64, 64, 56, 56, device="cuda", dtype=dtype)
    w = torch.randn(64, 64, 3, 3, device="cuda", dtype=dtype)
    w = w * (torch.rand_like(w) < 0.1)
    out = tsc.sparse_conv2d(x, w, padding=1, method="direct")
    expected = F.conv2d(x.double(), w.double(), padding=1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
print("ok")
"""


@pytest.mark.slow
@needs_gpu
@pytest.mark.parametrize("merged_window", ["1", "0"])
def test_cuda_direct_one_window_for_all_input_channels(merged_window):
    # TSC_CUDA_MERGED_WINDOW=0 keeps every window within 48 KiB: both plans must agree with
    # conv2d (each runs in a fresh process, the switch is read once).
    run_script(MERGED_WINDOW_SCRIPT, timeout=600, TSC_CUDA_MERGED_WINDOW=merged_window)


@needs_gpu
def test_cuda_empty_and_odd_shapes():
    for method in CUDA_METHODS:
        x = torch.randn(0, 4, 5, 5, device="cuda")
        w = random_weight((3, 4, 3, 3), 0.5, torch.float32).cuda()
        assert tsc.sparse_conv2d(x, w, method=method).shape == (0, 3, 3, 3)
        x = torch.randn(3, 4, 1, 17, device="cuda")
        w = random_weight((5, 4, 1, 4), 0.5, torch.float32).cuda()
        torch.testing.assert_close(tsc.sparse_conv2d(x, w, stride=(1, 3), method=method),
                                   F.conv2d(x, w, stride=(1, 3)), rtol=1e-4, atol=1e-4)
        w = torch.zeros(5, 4, 1, 4, device="cuda")          # nothing kept
        assert tsc.sparse_conv2d(x, w, method=method).abs().max() == 0


@needs_gpu
def test_cuda_results_are_deterministic():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(4, 32, 20, 20, generator=gen).cuda().requires_grad_()
    w = random_weight((32, 32, 3, 3), 0.1, torch.float32, gen).cuda().requires_grad_()
    runs = []
    for _ in range(2):
        out = tsc.sparse_conv2d(x, w, padding=1, method="direct")
        runs.append((out, *torch.autograd.grad(out.square().sum(), (x, w))))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


@pytest.mark.slow
@needs_gpu
def test_cuda_opcheck_and_invalid_indices():
    x = torch.randn(2, 4, 7, 8, dtype=torch.float64, device="cuda", requires_grad=True)
    w = random_weight((6, 4, 3, 3), 0.4, torch.float64).cuda()
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    values = values.clone().requires_grad_()
    for method in ("direct", "spmm"):
        args = (x, row_ptr, col_idx, values, list(w.shape), None, [1, 1], [1, 1], [1, 1], 1,
                method)
        torch.library.opcheck(torch.ops.torch_sparse_conv.sparse_filter_conv2d.default, args)
    # An out-of-range index must raise (run apart: a crash must not take the suite down).
    repro = run_python(str(ROOT / "scripts" / "gpu" / "repro_bad_index.py"))
    assert repro.returncode == 0, repro.stderr[-3000:]
    assert repro.stdout.count("raised as expected") == 2 and "col_idx" in repro.stdout
    with pytest.raises(RuntimeError, match="'unfold' is the CPU GEMM path"):
        torch.ops.torch_sparse_conv.sparse_filter_conv2d(x, row_ptr, col_idx, values,
                                                         list(w.shape), None, [1, 1], [1, 1],
                                                         [1, 1], 1, "unfold")
    with pytest.raises(RuntimeError, match="'spmm' supports float32 and float64"):
        tsc.sparse_conv2d(x.detach().half(), w.half(), method="spmm")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kernel,padding,size", [
    ((3, 1), (1, 0), (9, 7)), ((3, 1), (2, 0), (5, 11)), ((1, 1), (2, 0), (7, 7)),
    ((5, 1), (0, 0), (12, 6)), ((3, 1), (1, 0), (300, 3)), ((1, 1), (2, 0), (200, 16)),
    ((1, 1), (40, 0), (200, 16)), ((3, 3), (1, 1), (120, 9))])
def test_one_sample_layout_rows_on_any_thread_count(kernel, padding, size, dtype):
    """Batch 1 in the one-sample layout: each thread lays out only the rows its blocks read
    (direct.cpp), rows that are the input's own (stride 1, no column padding) in one copy per
    channel with zero rows for the row padding (polyphase.h), a thread's rows all padding
    where the padding is larger than its blocks. On 1, 2 and 3 threads, each call after one on
    another input (so a row left out would hold that input's values): the same bits, and
    F.conv2d's values."""
    gen = torch.Generator().manual_seed(seed_of(dict(k=kernel, p=padding, s=size)))
    weight = random_weight((6, 5, *kernel), 0.5, torch.float64, gen).to(dtype)
    x, other = (torch.randn(1, 5, *size, dtype=torch.float64, generator=gen).to(dtype)
                for _ in range(2))
    expected = F.conv2d(x.double(), weight.double(), None, 1, padding)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            tsc.sparse_conv2d(other, weight, padding=padding, method="direct")
            outputs.append(tsc.sparse_conv2d(x, weight, padding=padding, method="direct"))
    finally:
        torch.set_num_threads(threads)
    tol = dict(rtol=2e-2, atol=5e-2) if dtype == torch.bfloat16 else tolerances(dtype)
    torch.testing.assert_close(outputs[0].double(), expected, **tol)
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


@pytest.mark.parametrize("batch,shape,stride", [
    (8, (1024, 40, 1, 8), 1), (8, (2048, 24, 1, 7), 1), (8, (768, 36, 3, 9), 1),
    (8, (1024, 20, 3, 12), 2), (1, (24, 40, 1, 56), 1), (1, (40, 24, 1, 28), 1),
    (3, (16, 13, 1, 20), 1)])
def test_tasks_shared_out_on_any_thread_count(batch, shape, stride):
    """The threads share the tasks out, a thread that finishes first taking the other's last
    (balanced_parallel.h): batch 8 in the lanes layout with a block's input past a core's L2
    (2-4 MB here), where a thread runs a tile's tasks in groups (direct_lanes.cpp), and 1x1
    layers read in place (pointwise.cpp). On 1, 2 and 3 threads: the same bits, and F.conv2d's
    values."""
    in_channels, out_channels, k, size = shape
    gen = torch.Generator().manual_seed(seed_of(dict(b=batch, shape=shape, stride=stride)))
    weight = random_weight((out_channels, in_channels, k, k), 0.9, torch.float32, gen)
    x = torch.randn(batch, in_channels, size, size, generator=gen)
    expected = F.conv2d(x.double(), weight.double(), None, stride, k // 2)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            outputs.append(tsc.sparse_conv2d(x, weight, stride=stride, padding=k // 2,
                                             method="direct"))
    finally:
        torch.set_num_threads(threads)
    # Sums of up to 2000 float32 products: within the summation's error bound, (terms added)
    # x 2^-24 x the sum of the products' magnitudes, not a fixed tolerance.
    magnitudes = F.conv2d(x.double().abs(), weight.double().abs(), None, stride, k // 2)
    terms = in_channels * k * k
    assert ((outputs[0].double() - expected).abs() <= terms * 2.0 ** -24 * magnitudes).all()
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])
