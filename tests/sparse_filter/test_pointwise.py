"""The CPU 'direct' method's in-place path for 1x1 convolutions without padding
(csrc/sparse_filter/cpu/pointwise.cpp), against F.conv2d.

The path writes the output where it is, and reads the (N, C, H, W) input in place where a
plane is whole vectors (H*W a multiple of 16 float32 / 8 float64 positions) or where each
input element is read by fewer than 24 taps; else from a copy with each plane zero-padded to
whole vectors (aligned loads). It is taken for planes of at least one tile (128 float32 / 64
float64 positions); smaller planes take the other layouts, checked here beside it. Both
kinds of plane, both sides of the copy's rule, one input-channel chunk or several (large,
prefetched inputs), groups, empty and full patterns, channels-last input, an input read in
place from inside a larger buffer, strides (which sample the input first) and large outputs
written by non-temporal stores are checked.
"""
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import random_weight


def random_config(rng):
    groups = rng.choice([1, 1, 2, 4])
    return dict(batch=rng.choice([1, 2, 8, 9]), cin=groups * rng.randint(1, 40),
                cout=groups * rng.randint(1, 40), groups=groups,
                size=rng.choice([(1, 1), (1, 15), (4, 4), (7, 7), (5, 13), (23, 23), (32, 16),
                                 (3, 200), (28, 28)]),
                density=rng.choice([0.0, 0.05, 0.1, 0.5, 1.0]))


GRID = [random_config(random.Random(2000 + seed)) for seed in range(40)]


def case(cfg, dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(repr(sorted(cfg.items())).encode()))
    x = torch.randn(cfg["batch"], cfg["cin"], *cfg["size"], dtype=dtype, generator=gen)
    w = random_weight((cfg["cout"], cfg["cin"] // cfg["groups"], 1, 1), cfg["density"], dtype,
                      gen)
    b = torch.randn(cfg["cout"], dtype=dtype, generator=gen)
    return x, w, b


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", GRID, ids=[f"cfg{i}" for i in range(len(GRID))])
def test_direct_matches_conv2d(cfg, dtype):
    x, w, b = case(cfg, dtype)
    for bias in (b, None):
        got = tsc.sparse_conv2d(x, w, bias, 1, 0, 1, cfg["groups"], method="direct")
        torch.testing.assert_close(got, F.conv2d(x, w, bias, 1, 0, 1, cfg["groups"]),
                                   **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(23, 23), (12, 12), (9, 15), (1, 200)])
def test_input_read_in_place_from_inside_a_larger_buffer(size, dtype):
    """The kernel reads a contiguous input where it is: here a view at an offset inside a
    buffer of NaN, so anything read from before or after it would reach the output as NaN
    (the sanitizer stage checks the same reads for overruns)."""
    h, w_ = size
    gen = torch.Generator().manual_seed(h * 100 + w_)
    numel = 3 * 20 * h * w_
    storage = torch.full((numel + 80,), float("nan"), dtype=dtype)
    x = storage[16: 16 + numel].view(3, 20, h, w_)
    x.copy_(torch.randn(3, 20, h, w_, dtype=dtype, generator=gen))
    weight = random_weight((33, 20, 1, 1), 0.3, dtype, gen)
    got = tsc.sparse_conv2d(x, weight, None, method="direct")
    torch.testing.assert_close(got, F.conv2d(x.clone(), weight), **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("size", [(13, 13), (14, 14), (9, 15)])
def test_planes_not_whole_vectors_at_the_end_of_their_storage(size, batch, dtype):
    """Planes that are not whole vectors: each plane's last vector reads on into the next
    plane (those lanes are dropped), and the last sample is read from a copy, since its last
    plane ends where the tensor's memory ends (here the end of its storage: the sanitizer
    stage would report a read past it)."""
    h, w_ = size
    gen = torch.Generator().manual_seed(h * 100 + w_ + batch)
    numel = batch * 40 * h * w_
    storage = torch.full((numel + 16,), float("nan"), dtype=dtype)
    x = storage[16:].view(batch, 40, h, w_)
    x.copy_(torch.randn(batch, 40, h, w_, dtype=dtype, generator=gen))
    weight = random_weight((21, 40, 1, 1), 0.3, dtype, gen)
    bias = torch.randn(21, dtype=dtype, generator=gen)
    got = tsc.sparse_conv2d(x, weight, bias, method="direct")
    torch.testing.assert_close(got, F.conv2d(x.clone(), weight, bias), **tolerance(dtype))


@pytest.mark.parametrize("shape,dtype", [((3, 160, 70, 70), torch.float32),
                                         ((2, 136, 64, 64), torch.float64),
                                         ((1, 600, 60, 60), torch.float32)])
def test_large_inputs_prefetched_a_tile_ahead(shape, dtype):
    """Inputs of 8 MiB and more take the path that prefetches their rows a tile ahead
    (planes whole vectors or not, one sample or several, several chunks), here at the end of
    their storage: the values, and (in the sanitizer stage) no read past it. Prefetches
    change no value and never fault, so where they point is checked by the benchmark, not
    here."""
    gen = torch.Generator().manual_seed(shape[1])
    numel = torch.Size(shape).numel()
    assert numel * dtype.itemsize >= 8 << 20
    x = torch.empty(numel + 8, dtype=dtype)[8:].view(shape)
    x.copy_(torch.randn(shape, dtype=dtype, generator=gen))
    weight = random_weight((24, shape[1], 1, 1), 0.1, dtype, gen)
    bias = torch.randn(24, dtype=dtype, generator=gen)
    got = tsc.sparse_conv2d(x, weight, bias, method="direct")
    torch.testing.assert_close(got, F.conv2d(x, weight, bias), **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups", [1, 2])
def test_large_outputs_streamed_past_the_caches(groups, dtype):
    """Outputs of a quarter of L3 and more (pointwise.cpp: 8 MiB on a 32 MiB L3; these are
    32-64 MiB) computed in one chunk of input channels are written by non-temporal stores:
    the values, bias, residual and ReLU as with ordinary stores, and odd positions of a plane
    (not whole vectors: never streamed) beside them."""
    gen = torch.Generator().manual_seed(groups)
    for size in [(64, 64), (63, 65)]:
        x = torch.randn(4, 32, *size, dtype=dtype, generator=gen)
        conv = torch.nn.Conv2d(32, 512, 1, groups=groups).to(dtype)
        with torch.no_grad():
            conv.weight.copy_(random_weight(conv.weight.shape, 0.1, dtype, gen))
        layer = tsc.SparseConv2d.from_dense(conv, method="direct")
        residual = torch.randn(4, 512, *size, dtype=dtype, generator=gen)
        with torch.no_grad():
            expected = conv(x)
            torch.testing.assert_close(layer(x), expected, **tolerance(dtype))
            torch.testing.assert_close(layer(x, residual, True),
                                       torch.relu(expected + residual), **tolerance(dtype))


# Taps per input channel of the 1x1 kernel's rule (pointwise.cpp, kAlignedReuse): from it on,
# planes that are not whole vectors are read from a copy padded to whole vectors.
ALIGNED_REUSE = 24


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [(14, 14), (13, 13), (9, 15), (12, 12)])
@pytest.mark.parametrize("groups,cin,cout,density", [
    (1, 40, 120, 0.5),    # 60 taps a channel: copied
    (1, 40, 120, 0.1),    # 12: in place
    (2, 24, 100, 0.6),    # 30 a channel, per group: copied
    (1, 300, 64, 0.5),    # 32, 300 input channels (one chunk: not prefetched): copied
])
def test_input_copied_to_whole_vectors_where_each_is_read_often(groups, cin, cout, density,
                                                                 size, batch, dtype):
    """Planes that are not whole vectors: copied to planes padded to whole vectors where
    each input element is read by at least ALIGNED_REUSE taps, read in place below that (the
    zeros past each copied plane reach only dropped lanes); with bias, and at the end of the
    input's storage (the sanitizer stage checks reads past it)."""
    h, w_ = size
    gen = torch.Generator().manual_seed(h * 1000 + w_ * 10 + batch + cin)
    numel = batch * cin * h * w_
    storage = torch.full((numel + 16,), float("nan"), dtype=dtype)
    x = storage[16:].view(batch, cin, h, w_)
    x.copy_(torch.randn(batch, cin, h, w_, dtype=dtype, generator=gen))
    weight = random_weight((cout, cin // groups, 1, 1), density, dtype, gen)
    bias = torch.randn(cout, dtype=dtype, generator=gen)
    reuse = int((weight != 0).sum()) / cin
    assert (reuse >= ALIGNED_REUSE) == (density >= 0.5), reuse  # the side of the rule named
    got = tsc.sparse_conv2d(x, weight, bias, 1, 0, 1, groups, method="direct")
    torch.testing.assert_close(got, F.conv2d(x.clone(), weight, bias, 1, 0, 1, groups),
                               **tolerance(dtype))


def test_many_input_channel_chunks_some_empty():
    """2048 input channels split into chunks; output channels whose taps skip whole chunks
    or that keep none at all."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2048, 9, 9, generator=gen)
    w = random_weight((40, 2048, 1, 1), 0.02, torch.float32, gen)
    w[:10, 200:1900] = 0
    w[11] = 0
    b = torch.randn(40, generator=gen)
    got = tsc.sparse_conv2d(x, w, b, method="direct")
    torch.testing.assert_close(got, F.conv2d(x, w, b), rtol=1e-4, atol=1e-4)


def test_channels_last_input_gives_channels_last_output():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 24, 14, 14, generator=gen).to(memory_format=torch.channels_last)
    w = random_weight((48, 24, 1, 1), 0.1, torch.float32, gen)
    got = tsc.sparse_conv2d(x, w, None, method="direct")
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, F.conv2d(x, w), rtol=1e-4, atol=1e-4)


def test_module_gradients_through_the_path():
    """The backward is unchanged; the forward it pairs with now comes from this path."""
    gen = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv2d(6, 10, 1, dtype=torch.float64)
    layer = tsc.SparseConv2d.from_dense(conv, mask=torch.rand(10, 6, 1, 1, generator=gen) > 0.5,
                                        method="direct")
    x = torch.randn(3, 6, 5, 7, dtype=torch.float64, requires_grad=True, generator=gen)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride,size", [((2, 2), (56, 56)), ((2, 2), (27, 29)), ((2, 1), (30, 17)),
                                         ((3, 2), (40, 33)), ((2, 2), (13, 13)),
                                         ((5, 1), (1, 300)), ((1, 4), (130, 3))])
def test_strided_1x1_matches_conv2d(stride, size, dtype):
    """Strided 1x1 layers (ResNet-50's downsampling shortcuts) sample the input first; odd
    sizes leave the last row or column unread, and a single output row caps the stride."""
    gen = torch.Generator().manual_seed(size[0] * 1000 + size[1] + stride[0])
    x = torch.randn(3, 24, *size, dtype=dtype, generator=gen)
    w = random_weight((20, 24, 1, 1), 0.3, dtype, gen)
    b = torch.randn(20, dtype=dtype, generator=gen)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm = x.to(memory_format=memory_format)
        got = tsc.sparse_conv2d(xm, w, b, stride, method="direct")
        torch.testing.assert_close(got, F.conv2d(xm, w, b, stride), **tolerance(dtype))
        assert got.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride,size", [((2, 2), (28, 30)), ((2, 2), (33, 35)), ((3, 2), (40, 31)),
                                         ((2, 3), (25, 50))])
def test_strided_1x1_picked_block_by_block_matches_conv2d(stride, size, groups, batch, dtype):
    """A strided 1x1 layer whose output planes the in-place 1x1 kernels take (a tile of
    positions or more) on a contiguous NCHW input: at batch 16 each task is one block of
    positions and copies that block's pixels of every input channel itself, at batch 1 (a
    block split among several tasks) the pixels are copied out first. Planes not whole
    vectors, a block ending mid-row (17x18), groups and bias; one-tap filters of weight 1
    give the picked pixels bit for bit."""
    gen = torch.Generator().manual_seed(size[0] * 100 + size[1] + 7 * stride[0] + groups)
    cin, cout = 12, 10
    x = torch.randn(batch, cin, *size, dtype=dtype, generator=gen)
    w = random_weight((cout, cin // groups, 1, 1), 0.4, dtype, gen)
    b = torch.randn(cout, dtype=dtype, generator=gen)
    got = tsc.sparse_conv2d(x, w, b, stride, groups=groups, method="direct")
    torch.testing.assert_close(got, F.conv2d(x, w, b, stride, groups=groups), **tolerance(dtype))
    source = torch.randint(0, cin // groups, (cout,), generator=gen)
    ones = torch.zeros(cout, cin // groups, 1, 1, dtype=dtype)
    ones[torch.arange(cout), source] = 1
    picked = tsc.sparse_conv2d(x, ones, None, stride, groups=groups, method="direct")
    first_channel = torch.arange(cout) // (cout // groups) * (cin // groups)
    assert torch.equal(picked, x[:, first_channel + source, ::stride[0], ::stride[1]])


@pytest.mark.parametrize("density", [0.0, 1.0])
def test_strided_1x1_picked_block_by_block_empty_and_all_kept(density):
    """The tasks' own picks with no tap kept (bias only) and every tap kept."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(16, 7, 29, 33, generator=gen)
    w = random_weight((9, 7, 1, 1), density, torch.float32, gen)
    b = torch.randn(9, generator=gen)
    got = tsc.sparse_conv2d(x, w, b, 2, method="direct")
    torch.testing.assert_close(got, F.conv2d(x, w, b, 2), **tolerance(torch.float32))


def test_strided_1x1_picked_block_by_block_gradients():
    """gradcheck (float64) of a layer whose forward picks its pixels in its tasks: batch 8,
    8x8 output planes (a whole tile of float64 positions)."""
    gen = torch.Generator().manual_seed(6)
    conv = torch.nn.Conv2d(2, 3, 1, stride=2, dtype=torch.float64)
    layer = tsc.SparseConv2d.from_dense(conv, mask=torch.rand(3, 2, 1, 1, generator=gen) > 0.3,
                                        method="direct")
    x = torch.randn(8, 2, 16, 15, dtype=torch.float64, requires_grad=True, generator=gen)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "cropped", "channels_last"])
@pytest.mark.parametrize("stride,size", [((2, 2), (28, 30)), ((2, 2), (9, 7)), ((3, 2), (10, 11)),
                                         ((1, 3), (4, 17))])
def test_strided_1x1_picks_pixels_exactly(stride, size, dtype, layout):
    """The pixels a strided 1x1 layer reads are copied out bit for bit whatever the element's
    size (2 and 8 bytes here, 4 above) and the input's layout (a cropped view of a larger
    tensor and channels-last take ATen's copy, contiguous NCHW the extension's own loop). Each
    output channel keeps one tap of weight 1, so its output is one input channel's picked
    pixels exactly."""
    gen = torch.Generator().manual_seed(size[0] * 100 + size[1] + 7 * stride[0] + stride[1])
    batch, cin, cout = 3, 10, 7
    big = torch.randn(batch, cin, size[0] + 3, size[1] + 5, generator=gen).to(dtype)
    x = big[:, :, 2:2 + size[0], 1:1 + size[1]]
    if layout == "contiguous":
        x = x.contiguous()
    elif layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    source = torch.randint(0, cin, (cout,), generator=gen)
    w = torch.zeros(cout, cin, 1, 1, dtype=dtype)
    w[torch.arange(cout), source] = 1
    got = tsc.sparse_conv2d(x, w, None, stride, method="direct")
    expected = x[:, source, ::stride[0], ::stride[1]]
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
