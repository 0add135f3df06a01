"""The scipy-convention entry points and the drop-ins: the seed recipe's compat.sparse_conv2d*
(sparse filter), _toeplitz_conv2d_scipy and compat.Toeplitz_convolution2d (Toeplitz), the
latter also against the sparse_convolution package it replaces, where importable."""
import numpy as np
import scipy.sparse
import torch

from torch_sparse_conv import compat

from . import library
from .filter_cases import maybe_int
from .filter_reference import (check_filter_gradients, filter_reference, filter_terms,
                               functional_conv, reference_raises)
from .library import leaf
from .toeplitz_cases import (SparseImages, scipy_input, stored_index_dtype, torch_dtype_np,
                             torch_index)
from .toeplitz_reference import (compare_sparse_output, dense_reference, single_image_reference,
                                 sparse_output_keys, timed)


def filter_compat_recipe(cfg, ctx, gen, rng, base, view, weight, bias):
    """compat.sparse_conv2d / _unfold / _batch: the recipe's signatures, `indices` shared by
    every output channel."""
    cin, (kh, kw) = cfg.in_channels, cfg.kernel
    taps = cin * kh * kw
    indices = sorted(rng.sample(range(taps), round(cfg.density * taps)))
    sparse_filter = torch.randn(cfg.out_channels, cin, kh, kw, dtype=torch.float64,
                                generator=gen).to(cfg.dtype)
    keep = torch.zeros(taps, dtype=torch.bool)
    keep[indices] = True
    masked = sparse_filter * keep.view(1, cin, kh, kw)
    conv = functional_conv(cfg)  # the recipe's configurations have dilation 1, groups 1
    stride = maybe_int(cfg.stride, rng)
    calls = [("sparse_conv2d_batch", "auto", compat.sparse_conv2d_batch, False)]
    if not cfg.unbatched and cfg.batch >= 1:
        calls += [("sparse_conv2d", "auto", compat.sparse_conv2d, True),
                  ("sparse_conv2d_unfold", "unfold", compat.sparse_conv2d_unfold, True)]
    if reference_raises(lambda: conv(view(base.double()), masked.double(), None)):
        for name, method, fn, single in calls:
            ctx.expect_error(f"compat.{name}", f"cpu:{method}", lambda: fn(
                view(base)[0] if single else view(base), sparse_filter, indices, (1, 1),
                stride, cfg.padding))
        return
    ref = filter_reference(conv, base, view, masked.double(), None, cfg.dtype, gen,
                           cfg.backward)
    terms = filter_terms(cfg, ref.out.shape)
    mask = (masked != 0).double()
    for name, method, fn, single in calls:
        x = leaf(base, "cpu", cfg.backward and not single)
        filt = leaf(sparse_filter, "cpu", cfg.backward and not single)
        with ctx.attempt(f"compat.{name}", f"cpu:{method}", "forward") as a:
            out = fn(view(x)[0] if single else view(x), filt, indices, ref.out.shape[-2:],
                     stride, cfg.padding)
            a.compare("output", out, ref.out[0] if single else ref.out,
                      ref.out_mag[0] if single else ref.out_mag, terms.out, cfg.dtype)
        if single or a.failed or not cfg.backward:
            continue
        with ctx.attempt(f"compat.{name}", f"cpu:{method}", "backward") as a:
            grads = torch.autograd.grad(out, [x, filt], ref.grad_out)
            check_filter_gradients(a, ref, terms, cfg.dtype, grads[0], grads[1],
                                   *ref.masked_weight_grads(mask), None)


def expected_scipy_index_dtype(cfg, images: SparseImages, out_pixels: int):
    """int32 when scipy's rule allows it: columns (< H_out*W_out) fit, and so does an upper
    bound of the entries, nnz(x) * kH * kW or B * H_out*W_out."""
    limit = 2**31 - 1
    taps = cfg.kernel_shape[0] * cfg.kernel_shape[1]
    entries_fit = images.col.size * taps <= limit or cfg.batch * out_pixels <= limit
    return np.int32 if out_pixels <= limit and entries_fit else np.int64


def toeplitz_scipy_op(cfg, ctx, images, kernel, ref):
    """_toeplitz_conv2d_scipy: int32 or int64 indices in, scipy's conventions out."""
    index_dtype = stored_index_dtype(images, cfg.index_dtype)
    index = torch_index(index_dtype)
    with ctx.attempt("_toeplitz_conv2d_scipy", f"cpu:{np.dtype(index_dtype).name}",
                     "forward") as a:
        parts = timed(cfg, a, "_toeplitz_conv2d_scipy",
                      lambda: library.OPS._toeplitz_conv2d_scipy(
                          torch.from_numpy(images.crow).to(index),
                          torch.from_numpy(images.col).to(index),
                          torch.from_numpy(images.values), torch.from_numpy(kernel),
                          list(cfg.image_shape), cfg.mode))
        keys = sparse_output_keys(a, parts[0], parts[1], cfg.batch, ref.out_pixels,
                                  expected_scipy_index_dtype(cfg, images, ref.out_pixels))
        compare_sparse_output(a, "output", keys, parts[2], ref, cfg.dtype, exact_pattern=False)


def toeplitz_compat(cfg, ctx, images, kernel, ref, small_t):
    """compat.Toeplitz_convolution2d: scipy CSR in (batched, one image), dense numpy in,
    methods direct and precomputed, against the reference and, where importable, the
    sparse_convolution package it replaces."""
    np_dtype = torch_dtype_np(cfg.dtype)
    kernel_arg = kernel if not cfg.compat_dtype_given else kernel.astype(np.float64)
    other_mode = next(m for m in ("full", "same") if m != cfg.mode)
    build_mode = other_mode if cfg.compat_mode_override else cfg.mode
    call_mode = cfg.mode if cfg.compat_mode_override else None
    (h, w), (out_h, out_w) = cfg.image_shape, (ref.out_h, ref.out_w)
    inputs = [("csr batched", scipy_input(images, cfg.index_dtype), True)]
    if not cfg.huge:
        dense = images.dense().astype(np_dtype)
        inputs += [("dense batched", dense, True)]
        if cfg.batch:
            single = scipy.sparse.csr_matrix(dense[0].reshape(h, w))
            inputs += [("csr single", single, False), ("dense single", dense[0].reshape(h, w),
                                                       False)]
    single_ref = None
    for method in ("direct", "precomputed"):
        if method == "precomputed" and not small_t:
            continue
        conv = compat.Toeplitz_convolution2d(
            cfg.image_shape, kernel_arg, build_mode, dtype=np_dtype if cfg.compat_dtype_given
            else None, method=method)
        for name, x, batching in inputs:
            with ctx.attempt("compat.Toeplitz_convolution2d", f"cpu:{method}/{name}",
                             "forward") as a:
                out = timed(cfg, a, "compat", lambda: conv(x, batching=batching, mode=call_mode))
                if name.startswith("dense"):
                    check_compat_dense(a, out, ref, batching, cfg, (out_h, out_w))
                else:
                    if not batching and single_ref is None:
                        single_ref = single_image_reference(images, kernel, cfg)
                    check_compat_sparse(a, out, ref if batching else single_ref, batching,
                                        cfg, images, (out_h, out_w), method)
                if library.sparse_convolution is not None and not cfg.huge and cfg.batch \
                        and method == "direct":
                    compare_with_package(ctx, a, cfg, kernel_arg, build_mode, call_mode, x,
                                         batching, out)


def check_compat_sparse(a, out, ref, batching, cfg, images, out_shape, method):
    rows = cfg.batch if batching else 1
    # The package's format: for an unbatched 'direct' call scipy's reshape of a row.
    expected = compat.output_format(method, None, batching) or (
        "csr" if out_shape[0] == 1 else "coo")
    a.expect(out.format == expected, f"returned {type(out).__name__}, expected {expected}")
    if batching:
        out = out.tocsr() if expected != "csr" else out
        a.expect(type(out) is scipy.sparse.csr_matrix, f"returned {type(out).__name__}")
        a.expect(out.shape == (rows, ref.out_pixels), f"shape {out.shape}")
        if not cfg.huge:
            out.check_format(full_check=True)
        a.expect(out.data.dtype == torch_dtype_np(cfg.dtype), f"data dtype {out.data.dtype}")
        keys = sparse_output_keys(a, out.indptr, out.indices, rows, ref.out_pixels,
                                  expected_scipy_index_dtype(cfg, images, ref.out_pixels))
        compare_sparse_output(a, "output", keys, out.data, ref, cfg.dtype, exact_pattern=False)
        return
    a.expect(scipy.sparse.issparse(out) and out.shape == out_shape,
             f"returned {type(out).__name__} of shape {out.shape}")
    a.expect(out.dtype == torch_dtype_np(cfg.dtype), f"dtype {out.dtype}")
    coo = out.tocoo()
    keys = coo.row.astype(np.int64) * out_shape[1] + coo.col
    order = np.argsort(keys, kind="stable")
    a.expect(len(np.unique(keys)) == len(keys), "duplicate output entries")
    compare_sparse_output(a, "output", keys[order], coo.data[order], ref, cfg.dtype,
                          exact_pattern=False)


def check_compat_dense(a, out, ref, batching, cfg, out_shape):
    a.expect(isinstance(out, np.ndarray), f"returned {type(out).__name__} for dense input")
    a.expect(out.dtype == torch_dtype_np(cfg.dtype), f"dtype {out.dtype}")
    expected, magnitude, terms = dense_reference(ref, cfg.batch)
    if not batching:  # image 0, as an (H_out, W_out) array
        expected, magnitude, terms = (t[0].reshape(out_shape) for t in
                                      (expected, magnitude, terms))
    a.compare("output", out, expected, magnitude, terms, cfg.dtype)


def compare_with_package(ctx, a, cfg, kernel_arg, build_mode, call_mode, x, batching, ours):
    """The drop-in's promise: the package's types and shapes, and its values where the
    package itself agrees with scipy (a disagreement of the package alone is noted)."""
    theirs_conv = library.sparse_convolution.Toeplitz_convolution2d(
        cfg.image_shape, kernel_arg, build_mode,
        dtype=torch_dtype_np(cfg.dtype) if cfg.compat_dtype_given else None)
    try:
        theirs = theirs_conv(x, batching=batching, mode=call_mode)
    except Exception:  # noqa: BLE001 - the package's own failure is not ours
        ctx.note("sparse_convolution raised on this input")
        return
    a.expect(type(ours) is type(theirs),
             f"returns {type(ours).__name__}, sparse_convolution {type(theirs).__name__}")
    a.expect(ours.shape == theirs.shape, f"shape {ours.shape}, package {theirs.shape}")
    a.expect(ours.dtype == theirs.dtype, f"dtype {ours.dtype}, package {theirs.dtype}")
    dense_ours = ours.toarray() if scipy.sparse.issparse(ours) else ours
    dense_theirs = theirs.toarray() if scipy.sparse.issparse(theirs) else theirs
    ctx.note("compared with sparse_convolution")
    if not np.allclose(dense_ours, dense_theirs, rtol=1e-4 if cfg.dtype == torch.float32
                       else 1e-10, atol=1e-5 if cfg.dtype == torch.float32 else 1e-12):
        ctx.note("sparse_convolution's values differ from ours (ours match scipy)")
