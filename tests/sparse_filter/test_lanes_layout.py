"""The CPU 'direct' method's batch-in-lanes layout (csrc/sparse_filter/cpu/direct_lanes.cpp),
taken when the batch fills blocks of 8 float32 / 4 float64 samples, against F.conv2d.

Batches that fill the blocks (8, 15, 16, 24 for float32; 4, 8 for float64) take it; 9 and 5
stay on the one-sample layout and are checked beside them. Shapes cover the tile tails (rows
and columns that do not divide the tile), several input-channel chunks, empty chunks, empty
and full patterns, stride, dilation, padding and groups. A channels-last input is laid out
from its pixels' channels and its output written channels-last without a conversion; each
case runs in both memory formats (channel counts that do and do not fill an 8 x 8 block).
"""
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc

from testing import random_weight, run_script


def random_config(rng):
    groups = rng.choice([1, 1, 2, 3])
    cin = groups * rng.randint(1, 5)
    cout = groups * rng.randint(1, 5)
    kh, kw = rng.randint(1, 5), rng.randint(1, 5)
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = (rng.randint(1, 3), rng.randint(1, 2))
    padding = (rng.randint(0, 3), rng.randint(0, 3))
    h = rng.randint((kh - 1) * dilation[0] + 1, 24)
    w = rng.randint((kw - 1) * dilation[1] + 1, 70)  # up to three column tiles
    return dict(batch=rng.choice([8, 15, 16, 24, 9, 5, 4]), cin=cin, cout=cout,
                kernel=(kh, kw), stride=stride, padding=padding, dilation=dilation,
                groups=groups, size=(h, w), density=rng.choice([0.0, 0.05, 0.3, 1.0]))


GRID = [random_config(random.Random(1000 + seed)) for seed in range(30)]


def case(cfg, dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(repr(sorted(cfg.items())).encode()))
    x = torch.randn(cfg["batch"], cfg["cin"], *cfg["size"], dtype=dtype, generator=gen)
    w = random_weight((cfg["cout"], cfg["cin"] // cfg["groups"], *cfg["kernel"]),
                      cfg["density"], dtype, gen)
    b = torch.randn(cfg["cout"], dtype=dtype, generator=gen)
    return x, w, b, (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def in_format(x, memory_format):
    return x.contiguous(memory_format=memory_format)


def check_format(got, expected):
    """The output in the memory format F.conv2d gives (the input's; NCHW where a tensor is
    both, as with one channel)."""
    for memory_format in (torch.contiguous_format, torch.channels_last):
        assert got.is_contiguous(memory_format=memory_format) == \
            expected.is_contiguous(memory_format=memory_format)


FORMATS = [torch.contiguous_format, torch.channels_last]
FORMAT_IDS = ["nchw", "channels_last"]


@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", GRID, ids=[f"cfg{i}" for i in range(len(GRID))])
def test_direct_matches_conv2d(cfg, dtype, memory_format):
    x, w, b, args = case(cfg, dtype)
    x = in_format(x, memory_format)
    for bias in (b, None):
        got = tsc.sparse_conv2d(x, w, bias, *args, method="direct")
        expected = F.conv2d(x, w, bias, *args)
        torch.testing.assert_close(got, expected, **tolerance(dtype))
        check_format(got, expected)


@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("batch", [8, 16, 9])
def test_many_input_channel_chunks_some_empty(batch, memory_format):
    """300 input channels split into chunks; output channels whose taps skip whole chunks."""
    gen = torch.Generator().manual_seed(batch)
    x = in_format(torch.randn(batch, 300, 9, 30, generator=gen), memory_format)
    w = random_weight((12, 300, 3, 3), 0.05, torch.float32, gen)
    w[:4, 40:260] = 0  # the middle chunks hold no tap of these channels
    w[5] = 0           # nor any of this one
    got = tsc.sparse_conv2d(x, w, None, 1, 1, method="direct")
    expected = F.conv2d(x, w, None, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    check_format(got, expected)


@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cout,size", [(257, 14), (131, 28), (600, 7)])
def test_output_channels_split_by_partial_sums(cout, size, dtype, memory_format):
    """Output channels whose partial sums of one tile exceed kMaxPartialBytes (128 KiB) are
    split among tasks, the last one shorter where the split does not divide them (257 and 131
    channels on AVX-512), with several input-channel chunks each. (A parity test: it cannot see
    the split itself.)"""
    gen = torch.Generator().manual_seed(cout)
    x = in_format(torch.randn(8, 96, size, size, dtype=dtype, generator=gen), memory_format)
    w = random_weight((cout, 96, 3, 3), 0.1, dtype, gen)
    w[-1] = 0  # the last task's last channel: no tap at all
    b = torch.randn(cout, dtype=dtype, generator=gen)
    got = tsc.sparse_conv2d(x, w, b, 1, 1, method="direct")
    expected = F.conv2d(x, w, b, 1, 1)
    torch.testing.assert_close(got, expected, **tolerance(dtype))
    check_format(got, expected)


@pytest.mark.parametrize("batch,channels,kernel", [(8, 20, 3), (8, 300, 3), (1, 300, 3),
                                                   (8, 300, 1), (1, 300, 1)])
def test_unsorted_columns_give_the_same_result(batch, channels, kernel):
    """A hand-made CSR whose columns are not sorted within a row: the chunk bounds are found
    again on a sorted copy (300 input channels: many chunks, taps on their boundaries)."""
    gen = torch.Generator().manual_seed(channels + batch)
    x = torch.randn(batch, channels, 11, 13, generator=gen)
    w = random_weight((6, channels, kernel, kernel), 0.3, torch.float32, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    shuffled_cols, shuffled_vals = col_idx.clone(), values.clone()
    for row in range(6):
        lo, hi = row_ptr[row].item(), row_ptr[row + 1].item()
        order = torch.randperm(hi - lo, generator=gen) + lo
        shuffled_cols[lo:hi], shuffled_vals[lo:hi] = col_idx[order], values[order]
    padding = kernel // 2
    got = tsc.sparse_conv2d_packed(x, row_ptr, shuffled_cols, shuffled_vals, list(w.shape), None,
                                   [1, 1], [padding] * 2, [0, 0], [1, 1], 1, "direct")
    torch.testing.assert_close(got, F.conv2d(x, w, None, 1, padding), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["channels_last", "batch_view", "transposed"])
def test_memory_formats_and_views(layout):
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(17, 6, 15, 15, generator=gen)
    x = {"channels_last": base[:16].contiguous(memory_format=torch.channels_last),
         "batch_view": base[1:],
         "transposed": base[:8].transpose(2, 3)}[layout]
    w = random_weight((7, 6, 3, 3), 0.4, torch.float32, gen)
    got = tsc.sparse_conv2d(x, w, None, 1, 1, method="direct")
    expected = F.conv2d(x, w, None, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if layout == "channels_last":
        assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("size,kernel,stride", [(14, 3, 1), (55, 3, 2), (7, 1, 1)],
                         ids=["3x3", "odd-phase-rows-strided", "odd-rows-1x1"])
def test_half_precision_is_the_float32_result_rounded_once(dtype, size, kernel, stride):
    """Also where the layout gets a zero column on AVX-512 (odd phase rows: a strided 3x3 on
    55 columns, padded 57, phase rows of 29; a 1x1 on 7), laid out from the half-precision
    planes by the polyphase fill."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(16, 9, size, size, generator=gen).to(dtype)
    w = random_weight((10, 9, kernel, kernel), 0.2, torch.float32, gen).to(dtype)
    b = torch.randn(10, generator=gen).to(dtype)
    pad = kernel // 2
    got = tsc.sparse_conv2d(x, w, b, stride, pad, method="direct")
    expected = tsc.sparse_conv2d(x.float(), w.float(), b.float(), stride, pad, method="direct")
    assert got.dtype == dtype
    assert torch.equal(got, expected.to(dtype))


def test_gradcheck_float64_on_a_full_block():
    """The forward on a full float64 block (4 samples), gradients of input, kept values and
    bias."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 6, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    w = random_weight((4, 3, 3, 3), 0.5, torch.float64, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    values = values.clone().requires_grad_()
    b = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)

    def fn(x, values, b):
        return torch.ops.torch_sparse_conv.sparse_filter_conv2d(
            x, row_ptr, col_idx, values, list(w.shape), b, [2, 1], [1, 1], [1, 1], 1, "direct")
    assert torch.autograd.gradcheck(fn, (x, values, b))


AVX2_SCRIPT = r"""
import torch, torch.nn.functional as F, torch_sparse_conv as tsc
torch.manual_seed(0)
for dtype in (torch.float32, torch.float64):
    for (n, c, h, w, o, k, s, p, d) in [(8, 5, 7, 7, 6, 3, 1, 1, 1), (16, 7, 13, 61, 5, 3, 1, 1, 1),
                                        (8, 4, 20, 30, 3, 5, 2, 2, 2), (9, 19, 6, 9, 11, 1, 1, 0, 1)]:
      for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=memory_format)
        wt = torch.randn(o, c, k, k, dtype=dtype) * (torch.rand(o, c, k, k) < 0.3)
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        out = tsc.sparse_conv2d(x, wt, None, s, p, d, method="direct")
        expected = F.conv2d(x, wt, None, s, p, d)
        torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
        assert out.stride() == expected.stride()
print("ok")
"""


def test_avx2_tiles_match_conv2d():
    """AVX2 has 16 vector registers: its tiles hold 12 accumulators, not 28."""
    run_script(AVX2_SCRIPT, TSC_CPU_ISA="avx2")


@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [1, 2, 3, 5, 7, 9, 14, 15, 28, 29, 56, 57])
@pytest.mark.parametrize("channels", [6, 160])
def test_two_pixel_vectors_at_every_row_tail(width, channels, dtype, memory_format):
    """On AVX-512 a tile vector holds two adjacent pixels; an odd output width ends each row
    of a tile with a vector half as wide (one pixel), loaded, accumulated and stored on its
    own. Odd padded row widths also put every other row's vectors across cache lines. Heights
    1-7 take tiles of 1-7 rows, 14 rows tiles of 3 and 4 (rows dealt out evenly); 160 input
    channels at 10 % take several input-channel chunks, so the tiles' partial sums, half
    vectors included, are reloaded and added to."""
    gen = torch.Generator().manual_seed(width * 1000 + channels)
    density = 0.5 if channels < 10 else 0.1
    for height in (1, 4, 7, 14):
        x = torch.randn(8, channels, height, width, dtype=dtype, generator=gen)
        x = in_format(x, memory_format)
        w = random_weight((5, channels, 3, 3), density, dtype, gen)
        b = torch.randn(5, dtype=dtype, generator=gen)
        for padding in (0, 1):
            if height + 2 * padding < 3 or width + 2 * padding < 3:
                continue
            got = tsc.sparse_conv2d(x, w, b, 1, padding, method="direct")
            expected = F.conv2d(x, w, b, 1, padding)
            torch.testing.assert_close(got, expected, **tolerance(dtype))
            check_format(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size,stride,padding", [
    ((1, 1), 1, 0), ((3, 5), 1, 0), ((7, 7), 1, 0), ((9, 9), 1, 0), ((14, 14), 2, 0),
    ((13, 13), 2, 0), ((21, 21), 1, 1), ((20, 19), 1, 2), ((11, 12), 3, 1)])
@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
def test_one_by_one_planes_are_tiled_as_one_row(size, stride, padding, dtype, memory_format):
    """A 1x1 kernel's layout rows have no halo columns: the lanes path cuts the whole plane
    into tiles as one row (tiles cross row ends; an odd pixel count ends the last tile with a
    half-wide vector), except where two pixels share a vector (AVX-512) and the rows are an
    odd number of pixels: then a column of zeros is added so that every row and plane starts
    on a whole vector, and the tiles are cut by rows. Several input-channel chunks, some
    output channels empty."""
    gen = torch.Generator().manual_seed(size[0] * 100 + size[1] + stride)
    x = in_format(torch.randn(8, 70, *size, dtype=dtype, generator=gen), memory_format)
    w = random_weight((9, 70, 1, 1), 0.2, dtype, gen)
    w[3] = 0
    b = torch.randn(9, dtype=dtype, generator=gen)
    got = tsc.sparse_conv2d(x, w, b, stride, padding, method="direct")
    expected = F.conv2d(x, w, b, stride, padding)
    torch.testing.assert_close(got, expected, **tolerance(dtype))
    check_format(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,size,stride,dilation", [
    (16, (20, 22), (1, 1), (1, 1)),   # two blocks, several row tiles each (ten on AVX-512)
    (24, (23, 17), (2, 1), (1, 2)),   # three blocks, a stride and a dilation
    (8, (31, 9), (1, 1), (3, 1)),     # rows of tiles that do not divide the plane
])
def test_layout_by_rows_at_any_thread_count(dtype, batch, size, stride, dilation):
    """An NCHW input of whole blocks is laid out by the rows of each thread's tiles, into a
    window of its own that moves down a block tile by tile (direct_lanes.cpp, RowWindow): at
    1, 2 and 3 threads a thread's rows begin and end at different tiles, and at 3 its range
    crosses from one block into the next. Every count gives F.conv2d's result with the same
    bits."""
    gen = torch.Generator().manual_seed(batch + size[0])
    L = 8 if dtype == torch.float32 else 4
    assert batch % L == 0
    x = torch.randn(batch, 10, *size, dtype=dtype, generator=gen)
    w = random_weight((12, 10, 3, 3), 0.2, dtype, gen)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(tsc.sparse_conv2d(x, w, None, stride, 1, dilation, method="direct"))
    finally:
        torch.set_num_threads(threads)
    for got in results[1:]:
        assert torch.equal(got, results[0])
    torch.testing.assert_close(results[0], F.conv2d(x, w, None, stride, 1, dilation),
                               **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    ((1, 1), (1, 1), (0, 0), (1, 1)), ((3, 1), (1, 1), (1, 0), (1, 1)),
    ((2, 1), (1, 1), (2, 0), (3, 1)), ((3, 3), (2, 2), (1, 1), (1, 1)),
    ((3, 3), (1, 2), (1, 1), (1, 1)), ((5, 3), (2, 3), (2, 1), (1, 2))])
@pytest.mark.parametrize("width", [7, 9, 15, 8, 57])
@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
def test_odd_phase_rows_get_a_zero_column(kernel, stride, padding, dilation, width, dtype,
                                          memory_format):
    """Kernels one column wide, and strided layers: where their phase rows are an odd number
    of pixels (stride 1: widths 7, 9, 15, 57; stride 2 with padding 1: widths 7, 9, 15, 8),
    the layout gets a column of zeros more on AVX-512 (two pixels a vector; aligned rows and
    planes, direct_lanes.cpp's lanes_geometry), which no output may read; the other widths
    keep their rows. (Without AVX-512 every case keeps its rows and checks the values
    only.)"""
    gen = torch.Generator().manual_seed(width * 10 + kernel[0] + stride[1])
    x = in_format(torch.randn(8, 40, 9, width, dtype=dtype, generator=gen), memory_format)
    w = random_weight((24, 40, *kernel), 0.3, dtype, gen)
    b = torch.randn(24, dtype=dtype, generator=gen)
    got = tsc.sparse_conv2d(x, w, b, stride, padding, dilation, method="direct")
    expected = F.conv2d(x, w, b, stride, padding, dilation)
    torch.testing.assert_close(got, expected, **tolerance(dtype))
    check_format(got, expected)


@pytest.mark.parametrize("cin,cout", [(64, 24), (24, 64)])
def test_one_by_one_gradients_on_rows_of_odd_width(cin, cout):
    """The forward lays out a 1x1 layer's 7x7 planes with a zero column more; the input's
    gradient (a forward of grad_output) keeps the layer's rows, since the values' gradient
    reads that layout: both gradients against autograd of F.conv2d."""
    gen = torch.Generator().manual_seed(cin)
    w = random_weight((cout, cin, 1, 1), 0.1, torch.float32, gen)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    values.requires_grad_()
    x = torch.randn(8, cin, 7, 7, generator=gen, requires_grad=True)
    go = torch.randn(8, cout, 7, 7, generator=gen)
    out = torch.ops.torch_sparse_conv.sparse_filter_conv2d(
        x, row_ptr, col_idx, values, list(w.shape), None, [1, 1], [0, 0], [1, 1], 1, "direct")
    gx, gv = torch.autograd.grad(out, (x, values), go)
    x2, w2 = x.detach().requires_grad_(), w.clone().requires_grad_()
    ex, ew = torch.autograd.grad(F.conv2d(x2, w2), (x2, w2), go)
    torch.testing.assert_close(gx, ex, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tsc.unpack_sparse_filter(row_ptr, col_idx, gv, list(w.shape)),
                               ew * (w != 0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("cout,kernel", [(61, 1), (21, 3), (450, 1)])
def test_input_beyond_l2_runs_a_threads_tasks_together(cout, kernel, memory_format):
    """A block of 8 samples whose lanes layout outgrows any core's L2 (over 16 MiB: 11264
    channels of 7x7 float32, 17 MiB without padding): a thread runs its consecutive tasks of
    output channels together, chunk by chunk (direct_lanes.cpp, tasks_at_once). Output
    channels that do not divide into the tasks (with AVX-512's one tile a plane: 21 at 2
    threads leaves a task none), 450 so that partial sums split a tile's channels into tasks
    on AVX2 too; bias, the residual and ReLU epilogue; against F.conv2d, and the same bits
    at 1 and 2 threads (each output channel's chunks are added in the same order however the
    tasks group)."""
    gen = torch.Generator().manual_seed(cout)
    x = torch.randn(8, 11264, 7, 7, generator=gen).contiguous(memory_format=memory_format)
    w = random_weight((cout, 11264, kernel, kernel), 0.02, torch.float32, gen)
    b = torch.randn(cout, generator=gen)
    padding = kernel // 2
    expected = F.conv2d(x, w, b, 1, padding)
    residual = torch.randn(expected.shape, generator=gen).contiguous(
        memory_format=memory_format)
    expected = F.relu(expected + residual)
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    got = {}
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got[n] = tsc.sparse_conv2d_packed(
                x, row_ptr, col_idx, values, list(w.shape), b, [1, 1], [padding, padding],
                [0, 0], [1, 1], 1, "direct", residual=residual, relu=True)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got[2], expected, rtol=1e-4, atol=1e-3)
    check_format(got[2], expected)
    assert torch.equal(got[1], got[2])
