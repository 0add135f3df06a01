"""A Toeplitz case: every torch entry point (functional API on CSR and COO, the raw and the
precomputed operators, ToeplitzConv2d, toeplitz_matrix, dense input) on every device and
method, then the scipy-convention ones in compat_checks.py."""
import dataclasses
from typing import Tuple

import numpy as np
import torch

import torch_sparse_conv as tsc
from torch_sparse_conv import compat

from . import library
from .checks import Case
from .compat_checks import toeplitz_compat, toeplitz_scipy_op
from .library import devices
from .toeplitz_cases import (MATRIX_LIMIT, TOEPLITZ_METHODS, SparseImages, ToeplitzConfig,
                             scipy_input, toeplitz_images, toeplitz_kernel, torch_csr,
                             torch_dtype_np)
from .toeplitz_reference import (ToeplitzReference, check_parts, check_toeplitz_gradients,
                                 check_torch_output, dense_reference, timed)


def run_toeplitz_case(cfg: ToeplitzConfig, ctx: Case) -> None:
    rng = np.random.default_rng(cfg.seed)
    images = toeplitz_images(cfg, rng)
    kernel = toeplitz_kernel(cfg, rng)
    (h, w), (kh, kw) = cfg.image_shape, cfg.kernel_shape
    if cfg.mode == "valid" and (kh > h or kw > w):
        toeplitz_expect_errors(cfg, ctx, images, kernel)
        return
    ref = ToeplitzReference(images, kernel, cfg.image_shape, cfg.mode, not cfg.huge)
    if not cfg.huge:
        with ctx.attempt("reference", "scatter vs scipy", "forward"):
            ref.self_check()
    upstream = rng.standard_normal(len(ref.keys)).astype(torch_dtype_np(cfg.dtype))
    small_t = h * w * kh * kw <= MATRIX_LIMIT
    for index, device in enumerate(devices()):
        # draws of its own per device: a CPU check sees the same data with or without a GPU
        device_rng = np.random.default_rng([cfg.seed, index])
        toeplitz_functional(cfg, ctx, images, kernel, ref, upstream, device, small_t)
        if small_t:
            toeplitz_precomputed_op(cfg, ctx, images, kernel, ref, upstream, device)
        toeplitz_module(cfg, ctx, images, kernel, ref, upstream, device, device_rng, small_t)
        if small_t:
            toeplitz_matrix_op(cfg, ctx, kernel, device_rng, device)
        if not cfg.huge:
            toeplitz_dense_input(cfg, ctx, images, kernel, device_rng, device)
    toeplitz_scipy_op(cfg, ctx, images, kernel, ref)
    toeplitz_compat(cfg, ctx, images, kernel, ref, small_t)


def is_canonical(images: SparseImages) -> bool:
    """Columns strictly increasing within every image (sorted, no duplicates)."""
    same_row = images.rows[1:] == images.rows[:-1]
    return bool(np.all(images.col[1:][same_row] > images.col[:-1][same_row]))


def api_gradients(cfg, ctx, images) -> Tuple[bool, bool]:
    """Which gradients the torch-CSR entry points are checked for: (values, kernel).

    torch's own autograd of a sparse CSR tensor's values() (torch 2.11, no operator of ours
    involved) permutes the gradient of unsorted entries, rejects duplicates, and densifies the
    frame: `x = torch.sparse_csr_tensor(crow, col, v); x.values()` backward does all three. So
    value gradients go through the CSR tensor only for canonical batches of ordinary frames,
    kernel gradients only for ordinary frames; the raw operators are checked on everything."""
    if not cfg.backward:
        return False, False
    values_ok, kernel_ok = is_canonical(images) and not cfg.huge, not cfg.huge
    if not values_ok:
        ctx.note("torch-CSR API: value gradient not checked (non-canonical CSR or huge frame:"
                 " torch's CSR autograd)")
    if not kernel_ok:
        ctx.note("torch-CSR API: kernel gradient not checked on a huge frame (torch's CSR "
                 "values() backward densifies the frame)")
    return values_ok, kernel_ok


def upstream_loss(values: torch.Tensor, upstream: np.ndarray, device) -> torch.Tensor:
    """sum(upstream * output values): its gradients are the references' closed forms."""
    return (values * torch.from_numpy(upstream).to(device)).sum()


def chosen_grads(loss, values, kernel, device):
    """autograd.grad for whichever of values / kernel require grad (None for the others)."""
    wanted = [t for t in (values, kernel) if t.requires_grad]
    grads = iter(torch.autograd.grad(loss, wanted)) if wanted else iter(())
    return [next(grads) if t.requires_grad else None for t in (values, kernel)]


def toeplitz_functional(cfg, ctx, images, kernel, ref, upstream, device, small_t):
    """tsc.toeplitz_conv2d on a torch CSR batch (and, forward, on COO) and the raw operator
    on the CSR arrays, every method."""
    values_grad, kernel_grad = api_gradients(cfg, ctx, images)
    for method in TOEPLITZ_METHODS:
        if method == "precomputed" and not small_t:
            ctx.note("method precomputed skipped: T too large for the frame")
            continue
        label = f"{device}:{method}"
        values = torch.from_numpy(images.values).to(device).requires_grad_(values_grad)
        k = torch.from_numpy(kernel).to(device).requires_grad_(kernel_grad)
        with ctx.attempt("toeplitz_conv2d", label, "forward") as a:
            x = torch_csr(images, values, device, cfg.index_dtype)
            out = timed(cfg, a, "toeplitz_conv2d", lambda: tsc.toeplitz_conv2d(
                x, k, cfg.image_shape, cfg.mode, method))
            check_torch_output(cfg, a, out, ref)
        if not a.failed and (values_grad or kernel_grad):
            with ctx.attempt("toeplitz_conv2d", label, "backward") as a:
                loss = upstream_loss(out.values(), upstream, device)
                check_toeplitz_gradients(cfg, a, ref, upstream,
                                         *chosen_grads(loss, values, k, device))
        toeplitz_raw_op(cfg, ctx, images, kernel, ref, upstream, device, method)
        if method == "auto" and cfg.batch and not cfg.huge:
            toeplitz_coo(cfg, ctx, images, kernel, ref, device)


def toeplitz_raw_op(cfg, ctx, images, kernel, ref, upstream, device, method):
    """torch.ops.torch_sparse_conv.toeplitz_conv2d on the CSR arrays as stored."""
    label = f"{device}:{method}"
    if cfg.strided_values:  # every second element of a wider tensor (a view, not a leaf)
        wide = torch.from_numpy(np.repeat(images.values, 2)).to(device)
        values = wide.requires_grad_(cfg.backward)[::2]
    else:
        values = torch.from_numpy(images.values).to(device).requires_grad_(cfg.backward)
    k = torch.from_numpy(kernel).to(device).requires_grad_(cfg.backward)
    crow, col = (torch.from_numpy(t).to(device) for t in (images.crow, images.col))
    with ctx.attempt("toeplitz_conv2d (op)", label, "forward") as a:
        parts = timed(cfg, a, "toeplitz_conv2d (op)", lambda: library.OPS.toeplitz_conv2d(
            crow, col, values, k, list(cfg.image_shape), cfg.mode, method))
        check_parts(cfg, a, *parts, ref)
    if not a.failed and cfg.backward:
        with ctx.attempt("toeplitz_conv2d (op)", label, "backward") as a:
            loss = upstream_loss(parts[2], upstream, device)
            grads = timed(cfg, a, "toeplitz_conv2d (op) backward",
                          lambda: torch.autograd.grad(loss, [values, k]))
            check_toeplitz_gradients(cfg, a, ref, upstream, *grads)


def toeplitz_coo(cfg, ctx, images, kernel, ref, device):
    """An uncoalesced COO batch (duplicates sum), forward."""
    with ctx.attempt("toeplitz_conv2d[coo]", f"{device}:auto", "forward") as a:
        coo = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([images.rows, images.col])).to(device),
            torch.from_numpy(images.values).to(device), (images.batch, images.pixels))
        out = tsc.toeplitz_conv2d(coo, torch.from_numpy(kernel).to(device), cfg.image_shape,
                                  cfg.mode)
        # Coalescing merges duplicates, so entries that cancel may leave the pattern: compare
        # the values on the footprint, and nothing stored off it.
        dense = out.to_dense().cpu().numpy().reshape(-1)
        got = dense[ref.keys] if len(ref.keys) else dense[:0]
        a.compare("output", got, ref.values, ref.magnitude, ref.terms, cfg.dtype)
        a.expect(np.count_nonzero(dense) == np.count_nonzero(got),
                 "values outside the footprint")


def toeplitz_precomputed_op(cfg, ctx, images, kernel, ref, upstream, device):
    """toeplitz_conv2d_precomputed with a T kept from toeplitz_matrix."""
    label = f"{device}:kept T"
    values = torch.from_numpy(images.values).to(device).requires_grad_(cfg.backward)
    k = torch.from_numpy(kernel).to(device).requires_grad_(cfg.backward)
    crow, col = (torch.from_numpy(t).to(device) for t in (images.crow, images.col))
    with ctx.attempt("toeplitz_conv2d_precomputed", label, "forward") as a:
        matrix = library.OPS.toeplitz_matrix(k.detach(), list(cfg.image_shape), cfg.mode)
        parts = library.OPS.toeplitz_conv2d_precomputed(crow, col, values, k, list(cfg.image_shape),
                                                cfg.mode, *matrix)
        check_parts(cfg, a, *parts, ref)
    if not a.failed and cfg.backward:
        with ctx.attempt("toeplitz_conv2d_precomputed", label, "backward") as a:
            loss = upstream_loss(parts[2], upstream, device)
            check_toeplitz_gradients(cfg, a, ref, upstream,
                                     *torch.autograd.grad(loss, [values, k]))


def toeplitz_module(cfg, ctx, images, kernel, ref, upstream, device, rng, small_t):
    """ToeplitzConv2d, every method: a call, the kernel rewritten in place through .data, a
    second call that must follow the new kernel (the kept T of 'precomputed' included), and
    the gradients of that second call."""
    kernel2 = toeplitz_kernel(cfg, rng)
    ref2 = ToeplitzReference(images, kernel2, cfg.image_shape, cfg.mode, not cfg.huge)
    values_grad, kernel_grad = api_gradients(cfg, ctx, images)
    for method in TOEPLITZ_METHODS:
        if method == "precomputed" and not small_t:
            continue
        label = f"{device}:{method}"
        module = tsc.ToeplitzConv2d(cfg.image_shape, torch.from_numpy(kernel), cfg.mode,
                                    method).to(device)
        module.kernel.requires_grad_(kernel_grad)
        values = torch.from_numpy(images.values).to(device).requires_grad_(values_grad)
        x = torch_csr(images, values, device, cfg.index_dtype)
        with ctx.attempt("ToeplitzConv2d", label, "forward") as a:
            check_torch_output(cfg, a, timed(cfg, a, "ToeplitzConv2d", lambda: module(x)), ref)
        with ctx.attempt("ToeplitzConv2d", label, "after kernel.data edit") as a:
            module.kernel.data.copy_(torch.from_numpy(kernel2))
            out = timed(cfg, a, "ToeplitzConv2d", lambda: module(x))
            check_torch_output(cfg, a, out, ref2)
        if not a.failed and (values_grad or kernel_grad):
            with ctx.attempt("ToeplitzConv2d", label, "backward") as a:
                loss = upstream_loss(out.values(), upstream, device)
                check_toeplitz_gradients(cfg, a, ref2, upstream,
                                         *chosen_grads(loss, values, module.kernel, device))


def toeplitz_matrix_op(cfg, ctx, kernel, rng, device):
    """T (tsc.toeplitz_matrix and the op): row p is the convolution of the p-th unit image;
    every tap landing inside the output is stored, zero taps included. Backward: the kernel's
    gradient sums T's upstream over the entries of each tap."""
    h, w = cfg.image_shape
    pixels = h * w
    unit = SparseImages(np.arange(pixels + 1, dtype=np.int64), np.arange(pixels, dtype=np.int64),
                        np.ones(pixels, dtype=torch_dtype_np(cfg.dtype)), pixels, pixels)
    ref = ToeplitzReference(unit, kernel, cfg.image_shape, cfg.mode, dense_values=False)
    label = f"{device}:-"
    unit_cfg = dataclasses.replace(cfg, batch=pixels)
    k = torch.from_numpy(kernel).to(device).requires_grad_(cfg.backward)
    with ctx.attempt("toeplitz_matrix", label, "forward") as a:
        t = tsc.toeplitz_matrix(k.detach(), cfg.image_shape, cfg.mode)
        a.expect(tuple(t.shape) == (pixels, ref.out_pixels), f"T's shape {tuple(t.shape)}")
        check_parts(unit_cfg, a, t.crow_indices(), t.col_indices(), t.values(), ref)
        parts = library.OPS.toeplitz_matrix(k, [h, w], cfg.mode)
        check_parts(unit_cfg, a, *parts, ref)
    if not a.failed and cfg.backward:
        with ctx.attempt("toeplitz_matrix", label, "backward") as a:
            upstream = rng.standard_normal(len(ref.keys)).astype(torch_dtype_np(cfg.dtype))
            (grad,) = torch.autograd.grad(upstream_loss(parts[2], upstream, device), [k])
            _, _, grad_k, grad_k_mag = ref.gradients(upstream)
            a.compare("grad kernel", grad, grad_k, grad_k_mag, pixels, cfg.dtype)


def toeplitz_dense_input(cfg, ctx, images, kernel, rng, device):
    """Dense x: a dense result, gradients for every pixel."""
    dense = images.dense().astype(torch_dtype_np(cfg.dtype))  # duplicates summed in float64
    every_pixel = SparseImages(np.arange(cfg.batch + 1, dtype=np.int64) * images.pixels,
                               np.tile(np.arange(images.pixels, dtype=np.int64), cfg.batch),
                               dense.reshape(-1), cfg.batch, images.pixels)
    ref = ToeplitzReference(every_pixel, kernel, cfg.image_shape, cfg.mode, True)
    x = torch.from_numpy(dense).to(device).requires_grad_(cfg.backward)
    k = torch.from_numpy(kernel).to(device).requires_grad_(cfg.backward)
    label = f"{device}:dense x"
    expected, magnitude, terms = dense_reference(ref, cfg.batch)
    with ctx.attempt("toeplitz_conv2d[dense x]", label, "forward") as a:
        out = tsc.toeplitz_conv2d(x, k, cfg.image_shape, cfg.mode)
        a.expect(out.layout == torch.strided and out.dtype == cfg.dtype,
                 f"{out.layout} {out.dtype} output for dense input")
        a.compare("output", out, expected, magnitude, terms, cfg.dtype)
    if not a.failed and cfg.backward:
        with ctx.attempt("toeplitz_conv2d[dense x]", label, "backward") as a:
            upstream = rng.standard_normal(out.shape).astype(torch_dtype_np(cfg.dtype))
            grads = torch.autograd.grad(out, [x, k], torch.from_numpy(upstream).to(device))
            # every output pixel is in the footprint of some pixel: keys are all of them
            grad_v, grad_v_mag, grad_k, grad_k_mag = ref.gradients(upstream.reshape(-1))
            taps = cfg.kernel_shape[0] * cfg.kernel_shape[1]
            a.compare("grad x", grads[0].reshape(-1), grad_v, grad_v_mag, taps, cfg.dtype)
            a.compare("grad kernel", grads[1], grad_k, grad_k_mag, max(1, len(ref.entry)),
                      cfg.dtype)


def toeplitz_expect_errors(cfg, ctx, images, kernel):
    """mode 'valid' with a kernel larger than the image: every entry point refuses."""
    values = torch.from_numpy(images.values)
    k = torch.from_numpy(kernel)
    for method in TOEPLITZ_METHODS:
        ctx.expect_error("toeplitz_conv2d", f"cpu:{method}", lambda: tsc.toeplitz_conv2d(
            torch_csr(images, values, "cpu"), k, cfg.image_shape, cfg.mode, method))
        ctx.expect_error("ToeplitzConv2d", f"cpu:{method}", lambda: tsc.ToeplitzConv2d(
            cfg.image_shape, k, cfg.mode, method)(torch_csr(images, values, "cpu")))
    ctx.expect_error("toeplitz_matrix", "cpu:-", lambda: library.OPS.toeplitz_matrix(
        k, list(cfg.image_shape), cfg.mode))
    ctx.expect_error("compat.Toeplitz_convolution2d", "cpu:direct",
                     lambda: compat.Toeplitz_convolution2d(cfg.image_shape, kernel, cfg.mode)(
                         scipy_input(images, np.int64)))
