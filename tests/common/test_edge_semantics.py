"""The edge semantics README.md states: non-finite numbers in both families, degenerate sizes,
masks, and CUDA asked for where there is none."""
import numpy as np
import pytest
import scipy.signal
import scipy.sparse
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc
from torch_sparse_conv.compat import Toeplitz_convolution2d
from torch_sparse_conv.toeplitz import output_shape

from testing import csr_from_scipy, random_weight


# ---------------------------------------------------------------- sparse input (Toeplitz)

def stored_entries_reference(images, kernel, image_shape, mode):
    """The rule: an output pixel is the sum of value * tap over the stored entries whose
    kernel footprint covers it; nothing else is multiplied. float64, dense (B, H_out*W_out)."""
    (h, w), (kh, kw) = image_shape, kernel.shape
    batch = images.shape[0]
    full = np.zeros((batch, h + kh - 1, w + kw - 1))
    for b in range(batch):
        row = images.getrow(b).tocoo()
        for pixel, value in zip(row.col, row.data):
            i, j = divmod(int(pixel), w)
            with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf are NaN, as wanted
                full[b, i:i + kh, j:j + kw] += value * kernel
    top, left = {"full": (0, 0), "same": ((kh - 1) // 2, (kw - 1) // 2),
                 "valid": (kh - 1, kw - 1)}[mode]
    out_h, out_w = output_shape((h, w), (kh, kw), mode)
    return full[:, top:top + out_h, left:left + out_w].reshape(batch, -1)


def roi_and_scattered_images(h, w, seed):
    """Two dense blobs (the dense-tile path) and one scattered image (the sparse paths), with a
    stored explicit zero."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((3, h, w))
    dense[0, 3:9, 4:12] = rng.random((6, 8)) + 0.5
    dense[1, h - 7:h - 1, w - 9:w - 2] = rng.random((6, 7)) + 0.5
    dense[2] = rng.random((h, w)) * (rng.random((h, w)) < 0.03)
    images = scipy.sparse.csr_matrix(dense.reshape(3, -1))
    images = scipy.sparse.vstack([images[:2], scipy.sparse.csr_matrix(
        (np.append(images[2].data, 0.0), np.append(images[2].indices, 5),
         [0, images[2].nnz + 1]), shape=(1, h * w))]).tocsr()
    return images


def same_non_finite_pattern(got, expected):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("where", ["kernel", "values"])
def test_toeplitz_non_finite_numbers_reach_what_stored_entries_reach(mode, where):
    h, w = 24, 26
    images = roi_and_scattered_images(h, w, seed=1)
    kernel = np.random.default_rng(2).random((5, 4))
    if where == "kernel":
        kernel[2, 1], kernel[0, 3], kernel[4, 0] = np.nan, np.inf, -np.inf
    else:
        images.data[[3, 17]] = [np.nan, np.inf]
        images.data[-3] = -np.inf
    expected = stored_entries_reference(images, kernel, (h, w), mode)
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    x = csr_from_scipy(images)
    for method in ["direct", "precomputed"]:
        out = tsc.toeplitz_conv2d(x, torch.from_numpy(kernel), (h, w), mode, method)
        same_non_finite_pattern(out.to_dense().numpy(), expected)
        compat = Toeplitz_convolution2d((h, w), kernel, mode, method=method)(images)
        same_non_finite_pattern(compat.toarray(), expected)


# ---------------------------------------------------------------- sparse filter

@pytest.mark.parametrize("method", ["direct", "unfold", "dense", "auto"])
def test_sparse_filter_non_finite_inputs(method):
    """Every method: F.conv2d's value wherever F.conv2d is finite, and non-finite wherever a
    kept tap meets a NaN or inf. Through pruned taps only: 'direct' never multiplies them and
    returns the finite sum of the kept taps; 'dense' and 'unfold' may give NaN (0 * inf)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    x[0, 1, 4, 4], x[1, 2, 2, 6], x[1, 0, 7, 1] = float("nan"), float("inf"), -float("inf")
    w = random_weight((5, 4, 3, 3), 0.3, torch.float64)
    dense_reference = F.conv2d(x, w, padding=1)
    columns = F.unfold(x, 3, padding=1)  # (N, C*9, H*W)
    flat = w.reshape(5, -1)
    kept_reference = torch.stack(
        [(flat[o, flat[o] != 0, None] * columns[:, flat[o] != 0]).sum(1) for o in range(5)],
        dim=1).reshape(2, 5, 9, 9)
    got = tsc.sparse_conv2d(x, w, padding=1, method=method)
    finite = dense_reference.isfinite()
    torch.testing.assert_close(got[finite], dense_reference[finite])
    assert not got[~kept_reference.isfinite()].isfinite().any()
    only_pruned = finite.logical_not() & kept_reference.isfinite()
    assert only_pruned.any()
    if method == "direct":
        torch.testing.assert_close(got[only_pruned], kept_reference[only_pruned])
    else:
        matches = (got == kept_reference) | got.isnan() | (got - kept_reference).abs().lt(1e-9)
        assert matches[only_pruned].all()


# ---------------------------------------------------------------- degenerate arguments

def test_zero_sizes_name_their_argument():
    kernel = torch.ones(3, 3)
    with pytest.raises(ValueError, match="ToeplitzConv2d: image_shape must be two positive"):
        tsc.ToeplitzConv2d((0, 10), kernel)
    with pytest.raises(ValueError, match="ToeplitzConv2d: kernel must be 2-D .* kH, kW >= 1"):
        tsc.ToeplitzConv2d((10, 10), torch.ones(0, 3))
    with pytest.raises(ValueError, match="toeplitz_conv2d: kernel must be 2-D .* kH, kW >= 1"):
        tsc.toeplitz_conv2d(torch.zeros(1, 100).to_sparse_csr(), torch.ones(3, 0), (10, 10))
    with pytest.raises(ValueError, match="k must be a 2-D array with at least one row"):
        Toeplitz_convolution2d((10, 10), np.ones((0, 3)))
    with pytest.raises(ValueError, match="SparseConv2d: kernel_size must be positive, got 0"):
        tsc.SparseConv2d(4, 8, 0)
    with pytest.raises(ValueError, match="SparseConv2d: stride must be positive"):
        tsc.SparseConv2d(4, 8, 3, stride=(1, 0))
    with pytest.raises(ValueError, match="SparseConv2d: dilation must be positive"):
        tsc.SparseConv2d(4, 8, 3, dilation=-1)


def test_numpy_integers_are_image_sizes():
    module = tsc.ToeplitzConv2d((np.int64(6), np.int32(5)), torch.ones(2, 2))
    assert module.output_shape == (6, 5)


def test_from_dense_masks_select_and_never_scale():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    keep = torch.rand_like(conv.weight) < 0.4
    by_bool = tsc.SparseConv2d.from_dense(conv, mask=keep)
    by_float = tsc.SparseConv2d.from_dense(conv, mask=keep.float())  # prune's weight_mask
    assert torch.equal(by_bool.dense_weight(), by_float.dense_weight())
    assert torch.equal(by_bool.dense_weight(), conv.weight.detach() * keep)
    with pytest.raises(ValueError, match="mask must be boolean or hold only 0s and 1s"):
        tsc.SparseConv2d.from_dense(conv, mask=keep.float() * 0.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no GPU exists")
def test_cuda_asked_for_without_a_gpu_says_so():
    with pytest.raises(RuntimeError, match="asks for a CUDA GPU, but this machine has none"):
        Toeplitz_convolution2d((10, 10), np.ones((3, 3)), device="cuda")


# ---------------------------------------------------------------- found by the bad-input fuzzer

OPS = torch.ops.torch_sparse_conv


@pytest.mark.parametrize("method", ["direct", "unfold", "dense", "auto"])
def test_huge_strides_dilations_and_paddings(method):
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    w = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    for name, value in [("stride", (2**62, 1)), ("stride", (2**31, 1)),
                        ("dilation", (1, 2**63 - 1)), ("padding", (2**61, 0))]:
        with pytest.raises(RuntimeError, match=f"sparse_filter_conv2d: {name} must be below 2"):
            tsc.sparse_conv2d(x, w, **{name: value}, method=method)
    # Below the bound, a stride larger than the input leaves one output row: the result of
    # any stride that does, computed with the polyphase layout of the padded input only.
    got = tsc.sparse_conv2d(x, w, stride=(2**31 - 1, 1), method=method)
    torch.testing.assert_close(got, F.conv2d(x, w, stride=(3, 1)))


@pytest.mark.parametrize("method", ["direct", "unfold", "dense", "auto"])
def test_filters_over_zero_input_channels_give_the_bias(method):
    x, w, b = torch.randn(1, 0, 4, 1), torch.randn(2, 0, 1, 1), torch.tensor([1.5, -2.0])
    got = tsc.sparse_conv2d(x, w, b, method=method)
    torch.testing.assert_close(got, b.view(1, 2, 1, 1).expand(1, 2, 4, 1))


def test_meta_tensors_mixed_with_cpu_ones_are_named():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="bias is on meta but input is on cpu"):
        tsc.sparse_conv2d(x, w, bias=torch.zeros(3, device="meta"))
    row_ptr, col_idx, values = tsc.pack_sparse_filter(w)
    with pytest.raises(RuntimeError, match="col_idx is on meta but input is on cpu"):
        OPS._sparse_filter_conv2d_backward(torch.randn(1, 3, 3, 3), x, row_ptr,
                                           col_idx.to("meta"), values, [3, 2, 3, 3], [1, 1],
                                           [0, 0], [1, 1], 1, [True] * 3)
    images = torch.zeros(2, 25, dtype=torch.float64)
    images[0, 3], images[1, 7] = 1.0, 2.0
    images = images.to_sparse_csr()
    with pytest.raises(RuntimeError, match="kernel is on meta but x's values is on cpu"):
        OPS.toeplitz_conv2d(images.crow_indices(), images.col_indices(), images.values(),
                            torch.ones(3, 3, dtype=torch.float64, device="meta"), [5, 5],
                            "same", "direct")


def test_a_kept_toeplitz_matrix_with_corrupt_row_pointers_raises():
    kernel = torch.tensor([[2.0]], dtype=torch.float64)
    t_crow, t_col, t_values = OPS.toeplitz_matrix(kernel, [2, 2], "same")
    x = (torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1.0], dtype=torch.float64))
    for index, value, message in [(0, 1, r"t_crow\[0\] = 1"),
                                  (2, 0, r"t_crow\[2\] = 0 < t_crow\[1\] = 1"),
                                  (4, 3, r"last row pointer t_crow\[4\] = 3")]:
        bad = t_crow.clone()
        bad[index] = value
        with pytest.raises(RuntimeError,
                           match="toeplitz_conv2d_precomputed: invalid T: T's .*" + message):
            OPS.toeplitz_conv2d_precomputed(*x, kernel, [2, 2], "same", bad, t_col, t_values)


@pytest.mark.parametrize("method", ["direct", "precomputed"])
def test_compat_rejects_malformed_scipy_matrices_and_copies_odd_strides(method):
    conv = Toeplitz_convolution2d(x_shape=(6, 6), k=np.ones((3, 3)), mode="same",
                                  method=method)
    x = scipy.sparse.random(3, 36, density=0.3, format="csr", random_state=0)
    x.indptr = np.append(x.indptr, x.indptr[-1])
    with pytest.raises(ValueError, match="x is not a valid CSR matrix: indptr has 5 entries "
                                         "for 3 rows"):
        conv(x)
    one = scipy.sparse.csr_matrix(([2.0], [7], [0, 1]), shape=(1, 36))
    one.indices = one.indices.astype(np.int32)[::-1].copy()[::-1]  # 1 element, stride -4
    expected = scipy.signal.convolve2d(one.toarray().reshape(6, 6), np.ones((3, 3)), "same")
    np.testing.assert_allclose(conv(one).toarray().reshape(6, 6), expected)
    with pytest.raises(TypeError, match="x must be a scipy.sparse matrix or a real numeric"):
        conv(None)
    with pytest.raises(ValueError, match="Toeplitz_convolution2d: x_shape must be two positive"):
        Toeplitz_convolution2d(x_shape=5, k=np.ones((3, 3)))


def test_sparse_input_to_the_sparse_filter_op_is_named():
    x = torch.randn(1, 2, 4, 4).to_sparse()
    row_ptr, col_idx, values = tsc.pack_sparse_filter(torch.randn(2, 2, 3, 3))
    with pytest.raises(TypeError, match="input must be a dense .strided. tensor, got layout"):
        OPS.sparse_filter_conv2d(x, row_ptr, col_idx, values, [2, 2, 3, 3], None, [1, 1],
                                 [0, 0], [1, 1], 1, "auto")
    with pytest.raises(TypeError, match="sparse_conv2d: input must be a dense .strided. tensor"):
        tsc.sparse_conv2d(x, torch.randn(2, 2, 3, 3))
