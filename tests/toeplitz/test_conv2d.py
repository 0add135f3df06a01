"""toeplitz_conv2d and toeplitz_matrix against scipy.signal.convolve2d: values and output
pattern through every entry point, gradients, registration (opcheck), scale; the CUDA kernels
against the CPU ones (skipped without a GPU)."""
import numpy as np
import pytest
import scipy.sparse
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv.compat import Toeplitz_convolution2d

from testing import (DEVICES, csr_of, csr_to, needs_gpu, random_csr, run_script,
                     scipy_reference)

MODES = ["full", "same", "valid"]
METHODS = ["auto", "direct", "precomputed"]
OPS = torch.ops.torch_sparse_conv


def all_methods(images, kernel, mode):
    """(name, dense output) of every way to run the operator: each method of toeplitz_conv2d,
    the precomputed operator with a T kept from toeplitz_matrix, and compat's scipy path."""
    n, h, w = images.shape
    x, k = csr_of(images), torch.tensor(kernel)
    outs = []
    for method in METHODS:
        out = tsc.toeplitz_conv2d(x, k, (h, w), mode, method)
        assert out.layout == torch.sparse_csr
        outs.append((method, out))
    matrix = OPS.toeplitz_matrix(k, [h, w], mode)
    parts = OPS.toeplitz_conv2d_precomputed(x.crow_indices(), x.col_indices(), x.values(), k,
                                            [h, w], mode, *matrix)
    outs.append(("kept T", torch.sparse_csr_tensor(*parts, size=outs[0][1].shape)))
    for name, out in outs[1:]:  # one output pattern for all
        assert torch.equal(out.crow_indices(), outs[0][1].crow_indices()), name
        assert torch.equal(out.col_indices(), outs[0][1].col_indices()), name
    dense = [(name, out.to_dense().numpy()) for name, out in outs]
    compat = Toeplitz_convolution2d((h, w), kernel, mode)(
        scipy.sparse.csr_matrix(images.reshape(n, -1)))
    return dense + [("compat", compat.toarray())]


@pytest.mark.parametrize("mode", MODES)
def test_every_small_shape_against_scipy(mode):
    """Every image 1..6 x 1..6 against every kernel 1..6 x 1..6, batched and single, every
    method."""
    rng = np.random.default_rng(0)
    for h in range(1, 7):
        for w in range(1, 7):
            for kh in range(1, 7):
                for kw in range(1, 7):
                    if mode == "valid" and (kh > h or kw > w):
                        continue
                    images = rng.random((3, h, w)) * (rng.random((3, h, w)) < 0.5)
                    kernel = rng.random((kh, kw)) - 0.5
                    expected = scipy_reference(images, kernel, mode)
                    for name, out in all_methods(images, kernel, mode):
                        np.testing.assert_allclose(out, expected, atol=1e-12, err_msg=name)
                    for name, out in all_methods(images[:1], kernel, mode):
                        np.testing.assert_allclose(out, expected[:1], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.02, 0.2, 0.5])
@pytest.mark.parametrize("mode", MODES)
def test_larger_random_images(mode, density, dtype, method):
    rng = np.random.default_rng(int(density * 1000) + len(mode))
    for (h, w), (kh, kw) in [((50, 64), (5, 5)), ((37, 23), (11, 4)), ((100, 7), (3, 7))]:
        images = rng.standard_normal((6, h, w)) * (rng.random((6, h, w)) < density)
        kernel = rng.standard_normal((kh, kw))
        x = torch.tensor(images.reshape(6, -1), dtype=dtype).to_sparse_csr()
        out = tsc.toeplitz_conv2d(x, torch.tensor(kernel, dtype=dtype), (h, w), mode, method)
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        np.testing.assert_allclose(out.to_dense().numpy(), scipy_reference(images, kernel, mode),
                                   atol=tol, rtol=tol)
        assert out.col_indices().dtype == torch.int64
        for n in range(6):  # columns sorted within every image
            cols = out.col_indices()[out.crow_indices()[n]:out.crow_indices()[n + 1]]
            assert torch.all(cols[1:] > cols[:-1])


def test_coo_dense_duplicates_unsorted_and_explicit_zeros():
    rng = np.random.default_rng(1)
    h, w = 9, 8
    kernel = torch.tensor(rng.random((3, 4)))
    # Image 0: unsorted columns with a duplicate and an explicit zero; image 1 empty.
    crow = torch.tensor([0, 5, 5])
    col = torch.tensor([40, 3, 17, 3, 60])
    values = torch.tensor([1.0, 2.0, -1.5, 0.5, 0.0], dtype=torch.float64)
    x = torch.sparse_csr_tensor(crow, col, values, size=(2, h * w), check_invariants=False)
    dense = np.zeros((2, h * w))
    np.add.at(dense[0], col.numpy(), values.numpy())
    expected = scipy_reference(dense.reshape(2, h, w), kernel.numpy(), "same")
    out = tsc.toeplitz_conv2d(x, kernel, (h, w))
    np.testing.assert_allclose(out.to_dense().numpy(), expected, atol=1e-12)
    coo = torch.tensor(dense).to_sparse_coo()
    np.testing.assert_allclose(tsc.toeplitz_conv2d(coo, kernel, (h, w)).to_dense().numpy(),
                               expected, atol=1e-12)
    dense_out = tsc.toeplitz_conv2d(torch.tensor(dense), kernel, (h, w))
    assert dense_out.layout == torch.strided
    np.testing.assert_allclose(dense_out.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_dense_input_every_mode(mode):
    rng = np.random.default_rng(2)
    for kh, kw in [(1, 1), (2, 2), (3, 4), (6, 5)]:
        images = rng.random((2, 8, 9))
        kernel = rng.random((kh, kw))
        out = tsc.toeplitz_conv2d(torch.tensor(images.reshape(2, -1)), torch.tensor(kernel),
                                  (8, 9), mode)
        np.testing.assert_allclose(out.numpy(), scipy_reference(images, kernel, mode),
                                   atol=1e-12)


def footprint(images, kernel_shape, mode):
    """The pixels every stored entry reaches: the output pattern of the operator, which keeps
    covered pixels whose sums cancel (unlike compat)."""
    reach = scipy_reference((images != 0).astype(np.float64), np.ones(kernel_shape), mode)
    return reach > 0


@pytest.mark.parametrize("mode", MODES)
def test_operator_keeps_every_covered_pixel_and_compat_only_nonzeros(mode):
    """Kernels with zero taps and entries that cancel, at densities that send images down each
    kernel path (footprint or per-product flags in dense boxes, bit flags in sparse boxes, row
    by row for spread-out entries): the operator's pattern is the footprint, compat's the
    nonzero sums."""
    rng = np.random.default_rng(5)
    for (h, w), density, batch in [((40, 70), 0.3, 4), ((40, 70), 0.01, 6), ((9, 9), 0.6, 5),
                                   ((300, 8), 0.002, 3), ((2, 500), 0.05, 3)]:
        for kernel in (np.array([[1.0, -1.0]]), np.array([[0.0, 1.0, 0.0], [1.0, 0.0, -1.0]]),
                       rng.integers(-1, 2, (4, 3)).astype(np.float64)):
            if mode == "valid" and (kernel.shape[0] > h or kernel.shape[1] > w):
                continue
            images = rng.integers(1, 3, (batch, h, w)) * (rng.random((batch, h, w)) < density)
            images = images.astype(np.float64)
            images[:, :, 1::2] = images[:, :, ::2][:, :, :w // 2]  # equal pairs cancel
            expected = scipy_reference(images, kernel, mode)
            x = torch.tensor(images.reshape(batch, -1)).to_sparse_csr()
            out = tsc.toeplitz_conv2d(x, torch.tensor(kernel), (h, w), mode, "direct")
            pattern = np.zeros(expected.shape, dtype=bool)
            for n in range(batch):
                cols = out.col_indices()[out.crow_indices()[n]:out.crow_indices()[n + 1]]
                pattern[n, cols.numpy()] = True
            np.testing.assert_array_equal(pattern, footprint(images, kernel.shape, mode))
            np.testing.assert_array_equal(out.to_dense().numpy(), expected)
            scipy_out = Toeplitz_convolution2d((h, w), kernel, mode)(
                scipy.sparse.csr_matrix(images.reshape(batch, -1)))
            scipy_out.check_format(full_check=True)
            assert scipy_out.nnz == np.count_nonzero(expected)
            np.testing.assert_array_equal(scipy_out.toarray(), expected)


@pytest.mark.parametrize("kernel_shape", [(11, 11), (7, 15), (3, 64)])
def test_footprint_of_dense_boxes_wider_than_a_word(kernel_shape):
    """Images that cover their box densely yet are too sparse for the dense tile (their sums
    over the box, flags ORed from each input row's line of footprint bits, 64 pixels a word):
    boxes wider than a word that start and end inside a word, kernel zeros and cancelling
    entries. The pattern is the footprint and the values are exact, twice in a row (the box's
    sums must be left zero for the next image)."""
    rng = np.random.default_rng(12)
    h, w = 60, 200
    images = np.zeros((3, h, w))
    images[:, 5:50, 21:171] = rng.integers(-1, 2, (3, 45, 150)) * (
        rng.random((3, 45, 150)) < 0.1)
    images[1, :, 21:171:2] = -images[1, :, 22:172:2]  # pairs cancel under [1, 1] rows
    kernel = rng.integers(-1, 2, kernel_shape).astype(np.float64)
    kernel[0, :2] = [1.0, 1.0]
    x = torch.tensor(images.reshape(3, -1)).to_sparse_csr()
    expected = scipy_reference(images, kernel, "same")
    for _ in range(2):
        out = tsc.toeplitz_conv2d(x, torch.tensor(kernel), (h, w), "same", "direct")
        pattern = np.zeros(expected.shape, dtype=bool)
        for n in range(3):
            pattern[n, out.col_indices()[out.crow_indices()[n]:out.crow_indices()[n + 1]]] = True
        np.testing.assert_array_equal(pattern, footprint(images, kernel.shape, "same"))
        np.testing.assert_array_equal(out.to_dense().numpy(), expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", [1, 2, 5, 31, 63, 64, 65, 70])
def test_footprint_bits_spread_across_words(mode, kw):
    """The footprint's lines come from one bit per entry spread over the kernel's width,
    word by word (box.h, spread_bits_down; a run per entry past 64 columns): frames just under,
    at and over a word wide and several words wide, entries in the first and last columns,
    densities that take the dense box and the dense tile. Pattern = footprint, values exact."""
    rng = np.random.default_rng(kw)
    for h, w in [(6, 63), (5, 64), (7, 65), (4, 130), (3, 200)]:
        if mode == "valid" and kw > w:
            continue
        for density in (0.15, 0.7):
            images = rng.integers(1, 4, (3, h, w)) * (rng.random((3, h, w)) < density)
            images = images.astype(np.float64)
            images[0, :, 0] = 1.0
            images[1, :, w - 1] = 2.0
            kernel = rng.integers(-1, 2, (2, kw)).astype(np.float64)
            expected = scipy_reference(images, kernel, mode)
            x = torch.tensor(images.reshape(3, -1)).to_sparse_csr()
            out = tsc.toeplitz_conv2d(x, torch.tensor(kernel), (h, w), mode, "direct")
            pattern = np.zeros(expected.shape, dtype=bool)
            for n in range(3):
                cols = out.col_indices()[out.crow_indices()[n]:out.crow_indices()[n + 1]]
                pattern[n, cols.numpy()] = True
            np.testing.assert_array_equal(pattern, footprint(images, kernel.shape, mode),
                                          err_msg=f"{h}x{w} density {density}")
            np.testing.assert_allclose(out.to_dense().numpy(), expected, atol=1e-12)


def test_images_down_different_paths_share_scratch_safely():
    """One thread, one call: a dense box whose flags come from footprints (a narrow, tall
    box), then an image too spread out for a box, summed row by row, then a tall box one
    pixel wide. Scratch buffers sized by one path must not be read or written past their size
    by the next (a reviewer found acc and touched resized apart), nor grow 64-fold."""
    h, w = 1000, 1000
    images = np.zeros((3, h, w))
    images[0, :, :2] = 1.0 + np.arange(h)[:, None] % 3      # columns 0 and 1, every row
    images[1, 0, 0], images[1, 0, 200], images[1, h - 1, w - 1] = 2.0, -1.0, 3.0
    images[2, ::7, 500] = 1.5                                  # a tall, one-pixel-wide box
    for kernel in (np.ones((1, 1)), np.array([[1.0, -2.0, 0.5]])):
        expected = scipy_reference(images, kernel, "same")
        x = torch.tensor(images.reshape(3, -1)).to_sparse_csr()
        out = tsc.toeplitz_conv2d(x, torch.tensor(kernel), (h, w), "same", "direct")
        np.testing.assert_array_equal(out.to_dense().numpy(), expected)
        compat = Toeplitz_convolution2d((h, w), kernel)(
            scipy.sparse.csr_matrix(images.reshape(3, -1)))
        np.testing.assert_array_equal(compat.toarray(), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_images_through_the_dense_tile_match_scipy(dtype):
    """Images whose entries fill their box densely go through a dense input tile (output rows
    computed a vector block at a time, rows padded past the box): every mode, kernels from
    1x1 to wider than the blocks, boxes narrower and wider than a block, duplicate entries."""
    rng = np.random.default_rng(31)
    tolerance = 1e-10 if dtype == torch.float64 else 2e-4
    for (h, w), (kh, kw) in [((37, 41), (3, 5)), ((9, 70), (1, 1)), ((30, 12), (11, 11)),
                             ((25, 90), (2, 40)), ((5, 6), (6, 2))]:
        kernel = rng.standard_normal((kh, kw))
        images = rng.standard_normal((3, h, w)) * (rng.random((3, h, w)) < 0.7)
        for mode in MODES:
            if mode == "valid" and (kh > h or kw > w):
                continue
            expected = scipy_reference(images, kernel, mode)
            x = torch.tensor(images.reshape(3, -1), dtype=dtype).to_sparse_csr()
            out = tsc.toeplitz_conv2d(x, torch.tensor(kernel, dtype=dtype), (h, w), mode)
            np.testing.assert_allclose(out.to_dense().double().numpy(), expected,
                                       atol=tolerance, rtol=tolerance)
            pattern = np.zeros(expected.shape, dtype=bool)
            for n in range(3):
                row = slice(out.crow_indices()[n], out.crow_indices()[n + 1])
                pattern[n, out.col_indices()[row].numpy()] = True
            np.testing.assert_array_equal(pattern, footprint(images, kernel.shape, mode))
            compat = Toeplitz_convolution2d((h, w), kernel, mode, dtype=np.dtype(
                "float64" if dtype == torch.float64 else "float32"))(
                scipy.sparse.csr_matrix(images.reshape(3, -1)))
            np.testing.assert_allclose(compat.toarray(), expected, atol=tolerance,
                                       rtol=tolerance)
    # every entry stored twice, in reversed order: duplicates are summed
    images = rng.standard_normal((2, 20, 20)) * (rng.random((2, 20, 20)) < 0.8)
    coo = scipy.sparse.coo_matrix(images.reshape(2, -1))
    doubled = scipy.sparse.csr_matrix(
        (np.r_[coo.data, coo.data][::-1], (np.r_[coo.row, coo.row][::-1],
                                           np.r_[coo.col, coo.col][::-1])), shape=coo.shape)
    doubled.has_canonical_format = False
    kernel = rng.standard_normal((4, 3))
    np.testing.assert_allclose(Toeplitz_convolution2d((20, 20), kernel)(doubled).toarray(),
                               2 * scipy_reference(images, kernel, "same"), atol=1e-10)


def test_non_finite_kernel_keeps_nan_to_the_footprint():
    """0 * inf is NaN: a kernel with an infinite tap must not spread NaN to pixels no entry
    reaches, so dense images skip the dense tile then. The pattern stays the footprint."""
    images = np.zeros((1, 30, 30))
    images[0, 5:25, 5:25] = 1.0  # dense box
    kernel = np.ones((3, 3))
    kernel[1, 1] = np.inf
    x = torch.tensor(images.reshape(1, -1)).to_sparse_csr()
    out = tsc.toeplitz_conv2d(x, torch.tensor(kernel), (30, 30), "same")
    pattern = np.zeros(900, dtype=bool)
    pattern[out.col_indices().numpy()] = True
    np.testing.assert_array_equal(pattern, footprint(images, (3, 3), "same").reshape(-1))
    dense = out.to_dense().numpy().reshape(30, 30)
    assert not np.isnan(dense).any()
    np.testing.assert_array_equal(np.isinf(dense), images[0] != 0)  # the inf tap's reach
    compat = Toeplitz_convolution2d((30, 30), kernel)(scipy.sparse.csr_matrix(
        images.reshape(1, -1)))
    assert compat.nnz == footprint(images, (3, 3), "same").sum()


SCALAR_COMPACTION = """
import numpy as np, scipy.signal, scipy.sparse, torch
import torch_sparse_conv as tsc
from torch_sparse_conv.compat import Toeplitz_convolution2d
rng = np.random.default_rng(2)
for dtype in (np.float32, np.float64):
    for density in (0.01, 0.3):
        images = (rng.standard_normal((5, 30, 41)) * (rng.random((5, 30, 41)) < density))
        kernel = rng.standard_normal((5, 3))
        expected = np.stack([scipy.signal.convolve2d(im, kernel, 'same').reshape(-1)
                             for im in images])
        x = torch.tensor(images.reshape(5, -1), dtype=torch.float64 if dtype == np.float64
                         else torch.float32).to_sparse_csr()
        out = tsc.toeplitz_conv2d(x, torch.tensor(kernel, dtype=x.dtype), (30, 41))
        tol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(out.to_dense().numpy(), expected, atol=tol, rtol=tol)
        ours = Toeplitz_convolution2d((30, 41), kernel, dtype=dtype)(
            scipy.sparse.csr_matrix(images.reshape(5, -1)))
        ours.check_format(full_check=True)
        np.testing.assert_allclose(ours.toarray(), expected, atol=tol, rtol=tol)
print('ok')
"""


@pytest.mark.slow
def test_scalar_compaction_without_avx512():
    """TSC_NO_AVX512 runs the compaction's scalar loop, which machines without AVX-512 use."""
    run_script(SCALAR_COMPACTION, TSC_NO_AVX512="1")


def test_toeplitz_matrix_is_the_convolution_matrix():
    rng = np.random.default_rng(13)
    for mode in MODES:
        for (h, w), (kh, kw) in [((1, 1), (1, 1)), ((5, 7), (3, 2)), ((4, 3), (6, 5)),
                                 ((9, 9), (4, 4))]:
            if mode == "valid" and (kh > h or kw > w):
                continue
            kernel = rng.standard_normal((kh, kw))
            kernel[0, 0] = 0.0  # zero taps stay stored: the pattern is the footprint
            t = tsc.toeplitz_matrix(torch.tensor(kernel), (h, w), mode)
            # Row p of T is the convolution of the p-th unit image.
            eye = np.eye(h * w).reshape(h * w, h, w)
            np.testing.assert_allclose(t.to_dense().numpy(), scipy_reference(eye, kernel, mode),
                                       atol=1e-12)
            pattern = scipy_reference(eye, np.ones((kh, kw)), mode) != 0
            assert t.values().numel() == pattern.sum()
            for p in range(h * w):
                cols = t.col_indices()[t.crow_indices()[p]:t.crow_indices()[p + 1]]
                assert torch.all(cols[1:] > cols[:-1])


# -------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_values_and_kernel(mode, device):
    rng = np.random.default_rng(5)
    x = csr_to(random_csr(rng, 3, 6, 7, 0.3), device)
    values = x.values().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 2)), device=device, requires_grad=True)

    def fn(values, kernel):
        return OPS.toeplitz_conv2d(x.crow_indices(), x.col_indices(), values, kernel, [6, 7],
                                   mode, "direct")[2]

    assert torch.autograd.gradcheck(fn, (values, kernel))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_precomputed(mode):
    rng = np.random.default_rng(14)
    x = random_csr(rng, 3, 6, 7, 0.3)
    values = x.values().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 2)), requires_grad=True)

    def kept_t(values, kernel):  # T kept from the kernel; the gradient reaches the kernel
        matrix = OPS.toeplitz_matrix(kernel.detach(), [6, 7], mode)
        return OPS.toeplitz_conv2d_precomputed(x.crow_indices(), x.col_indices(), values,
                                               kernel, [6, 7], mode, *matrix)[2]

    def method(values, kernel):
        return OPS.toeplitz_conv2d(x.crow_indices(), x.col_indices(), values, kernel, [6, 7],
                                   mode, "precomputed")[2]

    assert torch.autograd.gradcheck(kept_t, (values, kernel))
    assert torch.autograd.gradcheck(method, (values, kernel))
    assert torch.autograd.gradcheck(
        lambda kernel: OPS.toeplitz_matrix(kernel, [6, 7], mode)[2], (kernel,))


# ----------------------------------------------------------------------------- registration

def opcheck_args(device):
    rng = np.random.default_rng(7)
    x = csr_to(random_csr(rng, 3, 6, 5, 0.3), device)
    values = x.values().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 3)), device=device, requires_grad=True)
    return (x.crow_indices(), x.col_indices(), values, kernel, [6, 5], "same", "direct")


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    # test_aot_dispatch_dynamic is left out: its harness multiplies every output by a float
    # cotangent, including the (non-differentiable) int64 row pointers and columns.
    torch.library.opcheck(OPS.toeplitz_conv2d.default, opcheck_args(device),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


def test_opcheck_backward():
    crow, col, values, kernel, image_shape, mode, method = args = opcheck_args("cpu")
    out_crow, out_col, out_values = OPS.toeplitz_conv2d(*args)
    torch.library.opcheck(
        OPS._toeplitz_conv2d_backward.default,
        (torch.randn_like(out_values), crow, col, values.detach(), kernel.detach(), out_crow,
         out_col, image_shape, mode, [True, True]))


def test_opcheck_precomputed_and_scipy_ops():
    rng = np.random.default_rng(16)
    x = random_csr(rng, 3, 6, 5, 0.3)
    values = x.values().clone().requires_grad_()
    kernel = torch.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    no_aot = ("test_schema", "test_autograd_registration", "test_faketensor")
    for mode in MODES:
        torch.library.opcheck(OPS.toeplitz_matrix.default, (kernel, [6, 5], mode),
                              test_utils=no_aot)
        matrix = OPS.toeplitz_matrix(kernel.detach(), [6, 5], mode)
        torch.library.opcheck(OPS._toeplitz_matrix_backward.default,
                              (torch.randn_like(matrix[2]), kernel.detach(), [6, 5], mode))
        torch.library.opcheck(OPS.toeplitz_conv2d_precomputed.default,
                              (x.crow_indices(), x.col_indices(), values, kernel, [6, 5], mode,
                               *matrix), test_utils=no_aot)
        torch.library.opcheck(OPS.toeplitz_conv2d.default,
                              (x.crow_indices(), x.col_indices(), values, kernel, [6, 5], mode,
                               "precomputed"), test_utils=no_aot)
        torch.library.opcheck(OPS._toeplitz_conv2d_scipy.default,
                              (x.crow_indices().int(), x.col_indices().int(), values.detach(),
                               kernel.detach(), [6, 5], mode))


# ------------------------------------------------------------------------------------ scale

HUGE_FRAME = r"""
import time, torch, torch_sparse_conv as tsc
n = 100_000                                   # 10^10 pixels: past 2^31, never scanned
cols = torch.tensor([0, 5 * n + 7, n * n // 2 + 3, n * n - 1, 17])
x = torch.sparse_csr_tensor(torch.tensor([0, 4, 5]), cols, torch.ones(5, dtype=torch.float64),
                            size=(2, n * n))
out = tsc.toeplitz_conv2d(x, torch.ones(3, 3, dtype=torch.float64), (n, n), "same")
assert out.shape == (2, n * n)
assert out.values().numel() == 4 + 9 + 9 + 4 + 6, out.values().numel()
assert int(out.col_indices().max()) == n * n - 1
assert float(out.values().sum()) == 4 + 9 + 9 + 4 + 6
print("ok")
"""


@pytest.mark.slow
def test_huge_frame_with_a_handful_of_nonzeros():
    """Memory and time must follow the nonzeros, not the 10^10-pixel frame (a run that scanned
    the frame would not finish within the limit)."""
    run_script(HUGE_FRAME, timeout=120)


def test_pixel_indices_near_and_past_2_to_the_52():
    """The direct method splits pixel indices into (row, column) through a double-precision
    reciprocal below 2^52 and by division above (csrc/toeplitz/cpu/direct/pixel_split.h): in
    a frame of about 2^62 pixels, isolated entries on both sides of 2^52 and at the frame's
    edges each give their kernel's footprint, at exact int64 positions."""
    height, width = 2 ** 31 - 1, 2 ** 31 - 3  # sides below 2^31: H*W about 2^62
    kernel = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(3, 3)
    spots = [(0, 0), (1, width - 1), (2 ** 52 // width, 2 ** 52 % width),
             ((2 ** 52 - 1) // width, (2 ** 52 - 1) % width), (2 ** 30, 7),
             (height - 1, width - 1)]
    for method in ("direct", "auto"):
        for a, b in spots:
            x = torch.sparse_csr_tensor(torch.tensor([0, 1]), torch.tensor([a * width + b]),
                                        torch.tensor([2.0], dtype=torch.float64),
                                        size=(1, height * width))
            out = tsc.toeplitz_conv2d(x, kernel, (height, width), "same", method=method)
            expected = {}
            for da in (-1, 0, 1):
                for db in (-1, 0, 1):
                    if 0 <= a + da < height and 0 <= b + db < width:
                        expected[(a + da) * width + (b + db)] = 2.0 * float(kernel[da + 1, db + 1])
            got = dict(zip(out.col_indices().tolist(), out.values().tolist()))
            assert got == expected, (a, b, method)


# --------------------------------------------------------------------- CUDA against the CPU

@needs_gpu
@pytest.mark.parametrize("method", ["direct", "auto", "precomputed"])
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_cpu_and_scipy(mode, method):
    rng = np.random.default_rng(len(mode) + len(method))
    for (h, w), (kh, kw), density in [((50, 64), (5, 5), 0.02), ((37, 23), (11, 4), 0.3),
                                      ((100, 7), (3, 7), 0.001), ((6, 6), (6, 6), 0.9),
                                      ((1, 1), (1, 1), 1.0)]:
        x = random_csr(rng, 7, h, w, density)
        kernel = torch.tensor(rng.standard_normal((kh, kw)))
        cpu = tsc.toeplitz_conv2d(x, kernel, (h, w), mode, method="direct")
        gpu = tsc.toeplitz_conv2d(csr_to(x, "cuda"), kernel.cuda(), (h, w), mode,
                                  method=method)
        assert gpu.layout == torch.sparse_csr and gpu.col_indices().dtype == torch.int64
        expected = scipy_reference(x.to_dense().numpy().reshape(-1, h, w), kernel.numpy(), mode)
        np.testing.assert_allclose(gpu.to_dense().cpu().numpy(), expected, atol=1e-10)
        if method != "precomputed":  # cuSPARSE may drop or keep zero products differently
            assert torch.equal(gpu.crow_indices().cpu(), cpu.crow_indices())
            assert torch.equal(gpu.col_indices().cpu(), cpu.col_indices())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes(dtype, device):
    """float32, float16 and bfloat16 against float64 (the reduced ones accumulate in float32)."""
    rng = np.random.default_rng(1)
    x = random_csr(rng, 5, 30, 40, 0.05, torch.float64)
    kernel = torch.tensor(rng.standard_normal((5, 5)))
    ref = tsc.toeplitz_conv2d(x, kernel, (30, 40), "same").to_dense()
    xg = csr_to(x, device)
    xg = torch.sparse_csr_tensor(xg.crow_indices(), xg.col_indices(), xg.values().to(dtype),
                                 size=x.shape)
    out = tsc.toeplitz_conv2d(xg, kernel.to(dtype).to(device), (30, 40), "same")
    assert out.values().dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    torch.testing.assert_close(out.to_dense().double().cpu(), ref, rtol=tol, atol=tol * 4)


@needs_gpu
def test_cuda_duplicates_unsorted_empty_and_huge_frame():
    crow = torch.tensor([0, 3, 3, 5])
    col = torch.tensor([7, 2, 7, 0, 24])      # image 0: pixel 7 twice, unsorted
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    kernel = torch.arange(9, dtype=torch.float64).view(3, 3)
    cpu = OPS.toeplitz_conv2d(crow, col, values, kernel, [5, 5], "same", "direct")
    gpu = OPS.toeplitz_conv2d(crow.cuda(), col.cuda(), values.cuda(), kernel.cuda(), [5, 5],
                              "same", "direct")
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)
    empty = OPS.toeplitz_conv2d(torch.zeros(4, dtype=torch.long, device="cuda"),
                                torch.zeros(0, dtype=torch.long, device="cuda"),
                                torch.zeros(0, dtype=torch.float64, device="cuda"), kernel.cuda(),
                                [5, 5], "full", "direct")
    assert empty[0].tolist() == [0, 0, 0, 0] and empty[1].numel() == 0
    n = 100_000                                # 10^10 pixels: int64 keys, never scanned
    cols = torch.tensor([0, 5 * n + 7, n * n // 2 + 3, n * n - 1, 17], device="cuda")
    out = OPS.toeplitz_conv2d(torch.tensor([0, 4, 5], device="cuda"), cols,
                              torch.ones(5, dtype=torch.float64, device="cuda"),
                              torch.ones(3, 3, dtype=torch.float64, device="cuda"), [n, n], "same",
                              "direct")
    assert out[2].numel() == 4 + 9 + 9 + 4 + 6 and float(out[2].sum()) == 32
    assert int(out[1].max()) == n * n - 1


@needs_gpu
def test_cuda_gradients_match_cpu_and_are_deterministic():
    rng = np.random.default_rng(4)
    x = random_csr(rng, 6, 20, 17, 0.1)
    kernel = torch.tensor(rng.standard_normal((4, 5)))
    grads = {}
    for device in ("cpu", "cuda", "cuda"):
        values = x.values().to(device).clone().requires_grad_()
        k = kernel.to(device).clone().requires_grad_()
        out = OPS.toeplitz_conv2d(x.crow_indices().to(device), x.col_indices().to(device),
                                  values, k, [20, 17], "same", "direct")
        weights = torch.linspace(-1, 1, out[2].numel(), dtype=torch.float64, device=device)
        gv, gk = torch.autograd.grad((out[2] * weights).sum(), (values, k))
        if device in grads:
            assert torch.equal(gv, grads[device][0]) and torch.equal(gk, grads[device][1])
        grads[device] = (gv, gk)
    torch.testing.assert_close(grads["cuda"][0].cpu(), grads["cpu"][0])
    torch.testing.assert_close(grads["cuda"][1].cpu(), grads["cpu"][1])


BOTH_DIRECT_PATHS_SCRIPT = """
import numpy as np, torch, torch_sparse_conv
op = torch.ops.torch_sparse_conv.toeplitz_conv2d
rng = np.random.default_rng(12)
# Frames that fit the frame tile (all but the last, which takes the sort-based kernels either
# way); with TSC_CUDA_FRAME_TILE=0 every call takes the sort-based kernels.
for (b, h, w, kh, kw, mode, density, dtype) in [
        (500, 100, 100, 5, 5, "same", 0.1, torch.float32),
        (50, 100, 100, 11, 11, "full", 0.01, torch.float64),
        (7, 33, 70, 4, 3, "valid", 0.3, torch.float16),
        (3, 300, 400, 3, 3, "same", 0.01, torch.float32)]:
    dense = rng.standard_normal((b, h * w)) * (rng.random((b, h * w)) < density)
    x = torch.tensor(dense).to_sparse_csr()
    kernel = torch.tensor(rng.standard_normal((kh, kw)))
    cpu = op(x.crow_indices(), x.col_indices(), x.values(), kernel, [h, w], mode, "direct")
    gpu = op(x.crow_indices().cuda(), x.col_indices().cuda(), x.values().to(dtype).cuda(),
             kernel.to(dtype).cuda(), [h, w], mode, "direct")
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
    tol = 1e-9 if dtype == torch.float64 else 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(gpu[2].double().cpu(), cpu[2], rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.slow
@needs_gpu
@pytest.mark.parametrize("frame_tile", ["1", "0"])
def test_cuda_both_direct_paths_match_cpu(frame_tile):
    run_script(BOTH_DIRECT_PATHS_SCRIPT, timeout=600, TSC_CUDA_FRAME_TILE=frame_tile)


@needs_gpu
@pytest.mark.parametrize("mode", MODES)
def test_cuda_toeplitz_matrix_and_kept_product_match_cpu(mode):
    rng = np.random.default_rng(11)
    kernel = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    t_cpu = OPS.toeplitz_matrix(kernel, [9, 8], mode)
    kernel_gpu = kernel.detach().cuda().requires_grad_()
    t_gpu = OPS.toeplitz_matrix(kernel_gpu, [9, 8], mode)
    for a, b in zip(t_cpu, t_gpu):
        torch.testing.assert_close(b.detach().cpu(), a.detach())
    weights = torch.randn(t_cpu[2].shape, dtype=torch.float64)
    (grad_cpu,) = torch.autograd.grad((t_cpu[2] * weights).sum(), kernel)
    (grad_gpu,) = torch.autograd.grad((t_gpu[2] * weights.cuda()).sum(), kernel_gpu)
    torch.testing.assert_close(grad_gpu.cpu(), grad_cpu)
    x = random_csr(rng, 5, 9, 8, 0.2)
    args = [x.crow_indices(), x.col_indices(), x.values(), kernel.detach(), [9, 8], mode]
    cpu = OPS.toeplitz_conv2d_precomputed(*args, *[t.detach() for t in t_cpu])
    gpu = OPS.toeplitz_conv2d_precomputed(
        *[a.cuda() if isinstance(a, torch.Tensor) else a for a in args],
        *[t.detach() for t in t_gpu])
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)
    bad_col = t_gpu[1].detach().clone()
    bad_col[0] = 10**6
    with pytest.raises(RuntimeError, match="T's column indices must lie"):
        OPS.toeplitz_conv2d_precomputed(
            *[a.cuda() if isinstance(a, torch.Tensor) else a for a in args],
            t_gpu[0].detach(), bad_col, t_gpu[2].detach())
