"""Reference checks for the bad-input fuzzer (tests/fuzzing/bad_input.py).

Every fuzz case is a small program; the names below are in scope when it runs. They build
inputs and compare what the library returned with plain references: F.conv2d in float64, a
naive loop over the kept taps of a packed filter, a naive loop over the stored entries of a
sparse image. A failed comparison raises AssertionError (a wrong answer); a disagreement with
the documented non-finite rules raises RuleViolation. Kept in its own module so that a
reproducer can inline it and run without the fuzzer.
"""
import numpy as np
import scipy.sparse
import scipy.signal
import torch
import torch.nn.functional as F

import torch_sparse_conv as tsc  # noqa: F401  (used by the cases' programs)
from torch_sparse_conv.compat import Toeplitz_convolution2d  # noqa: F401  (used by cases)

OPS = torch.ops.torch_sparse_conv
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


class RuleViolation(Exception):
    """A result disagreeing with the documented semantics for NaN/inf (see the fuzzer's
    README section in bad_input.py)."""


# ------------------------------------------------------------------ inputs

def pruned_weight(c_out, c_in_per_group, kh, kw, density, dtype=torch.float32):
    """A dense weight with about `density` of its taps kept, at least one."""
    weight = torch.randn(c_out, c_in_per_group, kh, kw, dtype=torch.float64)
    keep = torch.rand_like(weight) < density
    if weight.numel() and not keep.any():
        keep.view(-1)[0] = True
    return (weight * keep).to(dtype)


def sparse_images(batch, h, w, density, dtype=torch.float64):
    """A torch CSR batch (B, H*W) with int64 indices, at least one stored entry."""
    dense = torch.randn(batch, h * w, dtype=torch.float64)
    keep = torch.rand(batch, h * w, dtype=torch.float64) < density
    if dense.numel() and not keep.any():
        keep.view(-1)[0] = True
    return (dense * keep).to(dtype).to_sparse_csr()


def strided_copy(tensor, filler):
    """The same values in a non-contiguous view whose neighbours in memory hold `filler`
    (a kernel reading the storage as if contiguous reads the filler)."""
    pair = torch.stack([tensor, torch.full_like(tensor, filler)], dim=-1)
    view = pair[..., 0]
    assert not view.is_contiguous() or view.numel() <= 1
    return view


def prune_conv(conv, density):
    """Zeroes about 1 - density of an nn.Conv2d's taps in place (at least one kept)."""
    with torch.no_grad():
        keep = torch.rand_like(conv.weight) < density
        if not keep.any():
            keep.view(-1)[0] = True
        conv.weight.mul_(keep)


def clip_stride(stride):
    """A stride beyond the input's size gives the same single output per axis as any larger
    one: clipped for F.conv2d, which may not take huge ones."""
    pair = [stride, stride] if isinstance(stride, int) else list(stride)
    pair = pair * 2 if len(pair) == 1 else pair
    return [min(int(s), 10**6) for s in pair]


def shuffle_rows(crow, col, values, duplicate):
    """In place (torch tensors or numpy arrays): each row's entries reversed (unsorted
    columns); with `duplicate`, a row's second entry takes its first one's column."""
    r = [int(v) for v in crow.tolist()]
    c, v = col.tolist(), values.tolist()
    for n in range(len(r) - 1):
        begin, end = r[n], r[n + 1]
        if end - begin >= 2:
            c[begin:end], v[begin:end] = c[begin:end][::-1], v[begin:end][::-1]
            if duplicate:
                c[begin + 1] = c[begin]
    for i in range(len(c)):
        col[i], values[i] = c[i], v[i]


def dense_from_csr(row_ptr, col_idx, values, weight_size):
    """The dense weight a packed filter stands for (duplicates summed; differentiable)."""
    rows = torch.repeat_interleave(torch.arange(weight_size[0]), row_ptr[1:] - row_ptr[:-1])
    taps = weight_size[1] * weight_size[2] * weight_size[3]
    flat = torch.zeros(weight_size[0], taps, dtype=values.dtype)
    return flat.index_put((rows, col_idx), values, accumulate=True).view(weight_size)


def replace_kernel(module, tensor):
    """Swaps a ToeplitzConv2d's kernel for another tensor (a Parameter stays a Parameter)."""
    if isinstance(module.kernel, torch.nn.Parameter):
        module.kernel = torch.nn.Parameter(tensor)
    else:
        module.kernel = tensor


def dense_csr_parts(x):
    """(crow, col, values) of a sparse CSR or COO batch."""
    if x.layout == torch.sparse_coo:
        x = x.coalesce().to_sparse_csr()
    return x.crow_indices(), x.col_indices(), x.values()


def tap_in_row_with_room(row_ptr, col_idx, taps):
    """(row, entry, unused column) for a row with at least one and fewer than `taps` entries,
    or None."""
    r = row_ptr.tolist()
    for row in range(len(r) - 1):
        if 0 < r[row + 1] - r[row] < taps:
            used = set(col_idx[r[row]:r[row + 1]].tolist())
            free = min(set(range(taps)) - used)
            return row, r[row], free
    return None


def move_tap_keeping_rows_sorted(row_ptr, col_idx, values, taps):
    """Moves one kept tap to an unused column of its row, in place through `.data`, keeping
    the row's columns sorted: a different but valid pattern. Returns whether it moved."""
    found = tap_in_row_with_room(row_ptr, col_idx, taps)
    if found is None:
        return False
    row, entry, free = found
    col_idx.data[entry] = free
    begin, end = int(row_ptr[row]), int(row_ptr[row + 1])
    order = col_idx.data[begin:end].argsort()
    col_idx.data[begin:end] = col_idx.data[begin:end][order].clone()
    values.data[begin:end] = values.data[begin:end][order].clone()
    return True


# ------------------------------------------------------------------ sparse filter references

def _as_double(t):
    return None if t is None else t.detach().double()


def _pair(v):
    return [v, v] if isinstance(v, int) else list(v) * (2 if len(v) == 1 else 1)


def filter_reference(x, weight, bias, stride, padding, dilation, groups):
    """F.conv2d in float64; explicit zero padding, so that empty planes (which F.conv2d
    rejects) and empty filters (where it returns no output channels) get the true sum."""
    x, weight = x.detach().double(), weight.detach().double()
    if not isinstance(padding, str):
        ph, pw = _pair(padding)
        x, padding = F.pad(x, (pw, pw, ph, ph)), 0
    if min(weight.shape[:2]) == 0 or x.shape[-1] == 0 or x.shape[-2] == 0:
        (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
        out_h = (x.shape[-2] - dh * (weight.shape[2] - 1) - 1) // sh + 1
        out_w = (x.shape[-1] - dw * (weight.shape[3] - 1) - 1) // sw + 1
        out = torch.zeros(*x.shape[:-3], weight.shape[0], out_h, out_w, dtype=torch.float64)
        return out if bias is None else out + bias.detach().double().view(-1, 1, 1)
    return F.conv2d(x, weight, _as_double(bias), stride, padding, dilation, groups)


def assert_close(actual, expected, dtype, what):
    tol = TOLERANCE.get(dtype, 1e-4)
    torch.testing.assert_close(actual.detach().double().cpu(), expected.detach().double().cpu(),
                               rtol=tol, atol=tol, equal_nan=True, msg=lambda m: f"{what}: {m}")


def check_filter(out, x, weight, bias, stride, padding, dilation, groups):
    """`out` must be F.conv2d(x, weight, bias, ...) in x's dtype and device."""
    assert isinstance(out, torch.Tensor), f"returned {type(out).__name__}, not a Tensor"
    ref = filter_reference(x, weight, bias, stride, padding, dilation, groups)
    if weight.shape[1] == 0 and out.numel() == 0 and weight.shape[0] != 0:
        # F.conv2d's own answer for filters over no input channels: (N, 0, H_out, W_out)
        ref = ref[..., :0, :, :]
    assert out.dtype == x.dtype, f"dtype {out.dtype}, expected {x.dtype}"
    assert out.device == x.device, f"device {out.device}, expected {x.device}"
    assert tuple(out.shape) == tuple(ref.shape), f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert_close(out, ref, x.dtype, "output")


def check_filter_dilated(out, x, weight, bias, stride, padding, dilation, groups):
    """A huge dilation is harmless only along an axis whose kernel has one tap (the result is
    then the undilated one); along any other axis the kernel reaches beyond the input and
    no result is right."""
    if isinstance(padding, str):  # 'same' / 'valid': F.conv2d's own geometry decides
        return check_filter(out, x, weight, bias, stride, padding, dilation, groups)
    dilation, pad = _pair(dilation), _pair(padding)
    for axis in (0, 1):
        taps, size = weight.shape[2 + axis], x.shape[-2 + axis] + 2 * pad[axis]
        assert taps == 1 or (taps - 1) * dilation[axis] + 1 <= size, \
            f"a result although the dilated kernel reaches beyond the padded input (axis {axis})"
    dilation = [d if weight.shape[2 + a] > 1 else 1 for a, d in enumerate(dilation)]
    check_filter(out, x, weight, bias, stride, padding, dilation, groups)


def check_meta_result(out, x, weight, stride, padding, dilation, groups):
    """A call on meta tensors may return a meta tensor: then of F.conv2d's shape."""
    ref = F.conv2d(x, weight.to(x.dtype).to("meta"), None, stride, padding, dilation, groups)
    assert out.device.type == "meta", f"device {out.device}, expected meta"
    assert tuple(out.shape) == tuple(ref.shape), f"shape {tuple(out.shape)} != {tuple(ref.shape)}"


def layer_weight(layer, values=None):
    return dense_from_csr(layer.row_ptr, layer.col_idx,
                          layer.values if values is None else values, layer.weight_size)


def check_module(out, layer, conv, x):
    """A SparseConv2d's output against F.conv2d with its current dense weight (what
    layer.dense_weight() returns, computed here independently) and bias, in conv's
    geometry."""
    check_filter(out, x, layer_weight(layer), layer.bias, conv.stride, conv.padding,
                 conv.dilation, conv.groups)


def check_module_via_dense(out, layer, x):
    """Against the equivalent nn.Conv2d (padding_mode included), in float64."""
    assert isinstance(out, torch.Tensor), f"returned {type(out).__name__}, not a Tensor"
    ref = layer.to_dense().double()(x.double())
    assert tuple(out.shape) == tuple(ref.shape), f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert_close(out, ref, x.dtype, "output")


def check_module_grads(out, layer, conv, x, grad_out):
    """Output and the gradients of x, the kept values and the bias after
    out.backward(grad_out), against autograd through F.conv2d."""
    v = layer.values.detach().clone().requires_grad_()
    b = None if layer.bias is None else layer.bias.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    ref = F.conv2d(xr, layer_weight(layer, v), b, conv.stride, conv.padding, conv.dilation,
                   conv.groups)
    ref.backward(grad_out)
    assert_close(out, ref, x.dtype, "output")
    assert_close(x.grad, xr.grad, x.dtype, "grad of x")
    assert_close(layer.values.grad, v.grad, x.dtype, "grad of values")
    if b is not None:
        assert_close(layer.bias.grad, b.grad, x.dtype, "grad of bias")


def check_filter_backward(grads, grad_output, x, weight, row_ptr, col_idx, stride, padding,
                          dilation, groups):
    """_sparse_filter_conv2d_backward's (grad_input, grad_values, grad_bias) against autograd
    through F.conv2d; grad_values are the dense weight's gradient at the kept taps."""
    grad_input, grad_values, grad_bias = grads
    xd = x.detach().double().requires_grad_()
    wd = weight.detach().double().requires_grad_()
    bd = torch.zeros(weight.shape[0], dtype=torch.float64, requires_grad=True)
    F.conv2d(xd, wd, bd, stride, padding, dilation, groups).backward(grad_output.double())
    rows = torch.repeat_interleave(torch.arange(weight.shape[0]), row_ptr[1:] - row_ptr[:-1])
    assert_close(grad_input, xd.grad, x.dtype, "grad_input")
    assert_close(grad_values, wd.grad.reshape(weight.shape[0], -1)[rows, col_idx], x.dtype,
                 "grad_values")
    assert_close(grad_bias, bd.grad, x.dtype, "grad_bias")


def kept_tap_sum(x, row_ptr, col_idx, values, weight_size, stride, padding, dilation, groups,
                 padding_products=True):
    """The convolution as a sum over kept taps only, float64: each kept tap adds
    value * shifted (zero-padded) input plane. NaN/inf reach an output only through a kept
    tap here. Without `padding_products`, a tap over the padding adds nothing (instead of
    value * 0, which is NaN for an infinite value)."""
    x = x.detach().double()
    n, _, h, w = x.shape
    c_out, c_in_g, kh, kw = weight_size
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = F.pad(x, (pw, pw, ph, ph))
    inside = F.pad(torch.ones_like(x, dtype=torch.bool), (pw, pw, ph, ph))
    out = torch.zeros(n, c_out, out_h, out_w, dtype=torch.float64)
    r, c, v = row_ptr.tolist(), col_idx.tolist(), values.detach().double().tolist()
    for oc in range(c_out):
        group = oc // (c_out // groups)
        for e in range(r[oc], r[oc + 1]):
            channel, tap = divmod(c[e], kh * kw)
            i, j = divmod(tap, kw)
            plane = padded[:, group * c_in_g + channel,
                           i * dh: i * dh + sh * (out_h - 1) + 1: sh,
                           j * dw: j * dw + sw * (out_w - 1) + 1: sw]
            product = v[e] * plane
            if not padding_products:
                product = torch.where(inside[:, group * c_in_g + channel,
                                             i * dh: i * dh + sh * (out_h - 1) + 1: sh,
                                             j * dw: j * dw + sw * (out_w - 1) + 1: sw],
                                      product, torch.zeros_like(product))
            out[:, oc] += product
    return out


def _class_of(t):
    """0 finite, 1 NaN, 2 +inf, 3 -inf."""
    t = t.detach().double().cpu()
    cls = torch.zeros_like(t, dtype=torch.int8)
    cls[torch.isnan(t)] = 1
    cls[t == float("inf")] = 2
    cls[t == float("-inf")] = 3
    return cls


def filter_nonfinite_report(out, x, row_ptr, col_idx, values, weight_size, bias, stride,
                            padding, dilation, groups, method):
    """Counts how `out` treats NaN/inf against the rule: equal to F.conv2d (float64) where
    that is finite; where a NaN/inf reaches an output only through pruned taps, 'direct'
    returns the finite kept-tap sum and 'dense'/'unfold'/'auto' may return NaN; outputs a
    kept tap feeds a non-finite product are non-finite. Raises RuleViolation on a
    disagreement, after filling the counts."""
    weight = dense_from_csr(row_ptr, col_idx, values.detach(), weight_size)
    ref = filter_reference(x, weight, bias, stride, padding, dilation, groups)
    kept = kept_tap_sum(x, row_ptr, col_idx, values, weight_size, stride, padding, dilation,
                        groups)
    kept_inside = kept_tap_sum(x, row_ptr, col_idx, values, weight_size, stride, padding,
                               dilation, groups, padding_products=False)
    if bias is not None:
        kept += bias.detach().double().view(1, -1, 1, 1)
        kept_inside += bias.detach().double().view(1, -1, 1, 1)
    got = out.detach().double()
    tol = TOLERANCE[x.dtype]
    ref_finite, kept_finite, got_finite = ref.isfinite(), kept.isfinite(), got.isfinite()
    close = (got - ref).abs() <= tol * (1 + ref.abs())
    close_kept = (got - kept).abs() <= tol * (1 + kept.abs())
    close_inside = (got - kept_inside).abs() <= tol * (1 + kept_inside.abs())
    pruned_only = ~ref_finite & kept_finite
    # inf * a padding zero: the only non-finite product of these outputs
    via_padding = ~kept_finite & kept_inside.isfinite()
    report = {
        "outputs": got.numel(),
        "ref_nonfinite": int((~ref_finite).sum()),
        "finite_ref_mismatch": int((ref_finite & ~(got_finite & close)).sum()),
        "kept_nonfinite_but_finite_out": int((~kept_finite & ~via_padding & got_finite).sum()),
        "padding_inf_times_zero": int(via_padding.sum()),
        # README: 'dense' follows at::conv2d, whose oneDNN path never multiplies the padding
        # (finite: the kept-tap sum without padding products); the other methods give NaN.
        "padding_inf_times_zero_finite_out": int((via_padding & got_finite & ~(
            close_inside if method in ("dense", "auto") else torch.zeros_like(got_finite)))
            .sum()),
        "kept_nonfinite_class_differs": int((~kept_finite & (_class_of(got) != _class_of(kept)))
                                            .sum()),
        "pruned_only": int(pruned_only.sum()),
        "pruned_only_kept_sum": int((pruned_only & got_finite & close_kept).sum()),
        "pruned_only_nan": int((pruned_only & torch.isnan(got)).sum()),
    }
    report["pruned_only_other"] = (report["pruned_only"] - report["pruned_only_kept_sum"]
                                   - report["pruned_only_nan"])
    violations = [k for k in ("finite_ref_mismatch", "kept_nonfinite_but_finite_out",
                              "padding_inf_times_zero_finite_out", "pruned_only_other")
                  if report[k]]
    if method == "direct" and report["pruned_only_nan"]:
        violations.append("pruned_only_nan (direct must return the kept-tap sum)")
    report["violations"] = violations
    MEASURED.clear()
    MEASURED.update(report)
    if violations:
        raise RuleViolation(f"{violations}: {report}")
    return report


MEASURED = {}  # the last non-finite report, read by the fuzzer's worker


# ------------------------------------------------------------------ Toeplitz references

def toeplitz_geometry(image_shape, kernel_shape, mode):
    (h, w), (kh, kw) = image_shape, kernel_shape
    if mode == "full":
        return (h + kh - 1, w + kw - 1), (0, 0)
    if mode == "same":
        return (h, w), ((kh - 1) // 2, (kw - 1) // 2)
    return (h - kh + 1, w - kw + 1), (kh - 1, kw - 1)


def naive_toeplitz(crow, col, values, kernel, image_shape, mode):
    """Per image, {output pixel: float64 sum over stored entries covering it of value * tap}
    (scipy.signal.convolve2d's alignment; unsorted and duplicate entries summed; stored zeros
    and kernel zeros included, so 0 * inf is NaN)."""
    crow = [int(v) for v in np.asarray(crow).tolist()]
    col = [int(v) for v in np.asarray(col).tolist()]
    values = np.asarray(values, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    (out_h, out_w), (off_h, off_w) = toeplitz_geometry(image_shape, kernel.shape, mode)
    w = image_shape[1]
    images = []
    with np.errstate(all="ignore"):
        for n in range(len(crow) - 1):
            pixels = {}
            for e in range(crow[n], crow[n + 1]):
                i, j = divmod(col[e], w)
                for u in range(kernel.shape[0]):
                    oi = i + u - off_h
                    if not 0 <= oi < out_h:
                        continue
                    for t in range(kernel.shape[1]):
                        oj = j + t - off_w
                        if 0 <= oj < out_w:
                            p = oi * out_w + oj
                            pixels[p] = pixels.get(p, 0.0) + values[e] * kernel[u, t]
            images.append(pixels)
    return images, out_h * out_w


def _check_csr_structure(out_crow, out_col, rows, width, what):
    crow = np.asarray(out_crow).astype(np.int64)
    col = np.asarray(out_col).astype(np.int64)
    assert crow.ndim == 1 and len(crow) == rows + 1, f"{what}: crow has {len(crow)} entries, " \
        f"expected {rows + 1}"
    assert crow[0] == 0 and crow[-1] == len(col), f"{what}: crow[0]={crow[0]}, " \
        f"crow[-1]={crow[-1]}, {len(col)} columns"
    assert (np.diff(crow) >= 0).all(), f"{what}: crow decreasing"
    assert len(col) == 0 or (col.min() >= 0 and col.max() < width), \
        f"{what}: column out of [0, {width})"
    for n in range(rows):
        row = col[crow[n]:crow[n + 1]]
        assert (np.diff(row) > 0).all(), f"{what}: columns of row {n} not strictly increasing"
    return crow, col


def compare_toeplitz(out_crow, out_col, out_values, crow, col, values, kernel, image_shape,
                     mode, dtype, drop_zeros=False, rule=False):
    """A CSR result against naive_toeplitz: the same stored pixels (compat leaves out exact
    zeros: `drop_zeros`) and values. With `rule`, also counts the non-finite classes and
    raises RuleViolation (instead of AssertionError) on any disagreement with the naive
    loop."""
    images, width = naive_toeplitz(crow, col, values, kernel, image_shape, mode)
    o_crow, o_col = _check_csr_structure(out_crow, out_col, len(images), width, "output")
    o_values = np.asarray(out_values, dtype=np.float64)
    assert len(o_values) == len(o_col), f"{len(o_values)} values for {len(o_col)} columns"
    tol = TOLERANCE.get(dtype, 1e-4)
    report = {"expected_entries": 0, "expected_nonfinite": 0, "pattern_mismatch": 0,
              "finite_mismatch": 0, "nonfinite_but_finite_out": 0,
              "finite_but_nonfinite_out": 0, "class_mismatch": 0}
    problems = []
    for n, expected in enumerate(images):
        got = dict(zip(o_col[o_crow[n]:o_crow[n + 1]].tolist(),
                       o_values[o_crow[n]:o_crow[n + 1]].tolist()))
        want = dict(expected)
        if drop_zeros:  # the package stores no exact zeros: tiny sums may go either way
            want = {p: v for p, v in want.items() if not (np.isfinite(v) and abs(v) <= tol)}
            got = {p: v for p, v in got.items() if not (np.isfinite(v) and abs(v) <= tol)}
        report["expected_entries"] += len(want)
        if set(got) != set(want):
            report["pattern_mismatch"] += len(set(got) ^ set(want))
            problems.append(f"image {n}: stored pixels differ: extra "
                            f"{sorted(set(got) - set(want))[:5]}, missing "
                            f"{sorted(set(want) - set(got))[:5]}")
        for p in set(got) & set(want):
            g, e = got[p], want[p]
            if np.isfinite(e):
                if not np.isfinite(g):
                    report["finite_but_nonfinite_out"] += 1
                    problems.append(f"image {n} pixel {p}: {g}, expected {e}")
                elif abs(g - e) > tol * (1 + abs(e)):
                    report["finite_mismatch"] += 1
                    problems.append(f"image {n} pixel {p}: {g}, expected {e}")
            else:
                report["expected_nonfinite"] += 1
                if np.isfinite(g):
                    report["nonfinite_but_finite_out"] += 1
                    problems.append(f"image {n} pixel {p}: {g}, expected {e}")
                elif not (np.isnan(g) and np.isnan(e)) and g != e:
                    report["class_mismatch"] += 1
                    problems.append(f"image {n} pixel {p}: {g}, expected {e}")
    if rule:
        report["violations"] = problems[:5]
        MEASURED.clear()
        MEASURED.update(report)
        if problems:
            raise RuleViolation(f"{problems[:5]} ({len(problems)} in all): {report}")
    assert not problems, f"{problems[:5]} ({len(problems)} in all)"
    return report


def check_toeplitz(result, crow, col, values, kernel, image_shape, mode, rule=False):
    """The (out_crow, out_col, out_values) of a Toeplitz operator."""
    out_crow, out_col, out_values = result
    assert out_crow.dtype == torch.int64 and out_col.dtype == torch.int64, \
        f"index dtypes {out_crow.dtype}, {out_col.dtype}, expected int64"
    assert out_values.dtype == values.dtype, f"dtype {out_values.dtype}, expected {values.dtype}"
    return compare_toeplitz(out_crow, out_col, out_values.detach(), crow, col, values.detach(),
                            kernel.detach(), image_shape, mode, values.dtype, rule=rule)


def check_toeplitz_scipy_op(result, crow, col, values, kernel, image_shape, mode, rule=False):
    """_toeplitz_conv2d_scipy's result: scipy conventions (exact zeros left out)."""
    out_crow, out_col, out_values = result
    assert out_values.dtype == values.dtype, f"dtype {out_values.dtype}, expected {values.dtype}"
    return compare_toeplitz(out_crow, out_col, out_values, crow, col, values, kernel,
                            image_shape, mode, values.dtype, drop_zeros=True, rule=rule)


def check_toeplitz_tensor(y, crow, col, values, kernel, image_shape, mode, rule=False):
    """A torch CSR result of tsc.toeplitz_conv2d / ToeplitzConv2d."""
    assert isinstance(y, torch.Tensor) and y.layout == torch.sparse_csr, \
        f"returned {type(y).__name__} {getattr(y, 'layout', '')}, expected sparse CSR"
    (out_h, out_w), _ = toeplitz_geometry(image_shape, tuple(kernel.shape), mode)
    assert tuple(y.shape) == (len(crow) - 1, out_h * out_w), \
        f"shape {tuple(y.shape)}, expected {(len(crow) - 1, out_h * out_w)}"
    return check_toeplitz((y.crow_indices(), y.col_indices(), y.values()), crow, col, values,
                          kernel, image_shape, mode, rule=rule)


def check_toeplitz_dense(y, dense_images, kernel, image_shape, mode):
    """A dense result (dense x) against scipy.signal.convolve2d per image."""
    kernel = kernel.detach().double().numpy()
    ref = np.stack([scipy.signal.convolve2d(img.reshape(image_shape), kernel, mode).ravel()
                    for img in dense_images.detach().double().numpy()])
    assert tuple(y.shape) == ref.shape, f"shape {tuple(y.shape)}, expected {ref.shape}"
    assert_close(y, torch.from_numpy(ref), y.dtype, "dense output")


def check_compat(y, indptr, indices, data, k, x_shape, mode, batching=True, rule=False):
    """compat.Toeplitz_convolution2d's scipy CSR result (exact zeros left out)."""
    assert scipy.sparse.issparse(y), f"returned {type(y).__name__}, expected scipy sparse"
    (out_h, out_w), _ = toeplitz_geometry(x_shape, np.shape(k), mode)
    rows = len(indptr) - 1
    expected_shape = (rows, out_h * out_w) if batching else (out_h, out_w)
    assert y.shape == expected_shape, f"shape {y.shape}, expected {expected_shape}"
    # The package's format for the method (compat.output_format), read as CSR here.
    y = y.reshape(rows, out_h * out_w).tocsr() if not batching else y.tocsr()
    dtype = {np.dtype(np.float32): torch.float32}.get(np.asarray(y.data).dtype, torch.float64)
    return compare_toeplitz(y.indptr, y.indices, y.data, indptr, indices, data, k, x_shape,
                            mode, dtype, drop_zeros=True, rule=rule)


def check_compat_dense(y, xd, k, x_shape, mode):
    """compat's dense (numpy) result against scipy.signal.convolve2d per image."""
    assert isinstance(y, np.ndarray), f"returned {type(y).__name__}, expected a numpy array"
    ref = np.stack([scipy.signal.convolve2d(row.reshape(x_shape), k, mode).ravel()
                    for row in np.asarray(xd, dtype=np.float64)])
    assert y.shape == ref.shape, f"shape {y.shape}, expected {ref.shape}"
    assert np.allclose(y, ref, rtol=1e-4, atol=1e-4), "values differ from convolve2d"


def check_toeplitz_backward(grads, grad_out_values, crow, col, values, kernel, out_crow,
                            out_col, image_shape, mode):
    """_toeplitz_conv2d_backward's (grad_values, grad_kernel) against a naive loop: the
    output value at a pixel is the sum of value * tap over the entries covering it, so
    d/dvalue[e] sums g[p] * tap and d/dtap sums g[p] * value[e] over covered stored pixels."""
    grad_values, grad_kernel = grads
    crow_l, col_l = crow.tolist(), col.tolist()
    v = values.detach().double().numpy()
    k = kernel.detach().double().numpy()
    (out_h, out_w), (off_h, off_w) = toeplitz_geometry(image_shape, k.shape, mode)
    o_crow, o_col = out_crow.tolist(), out_col.tolist()
    g = grad_out_values.detach().double().numpy()
    want_v, want_k = np.zeros_like(v), np.zeros_like(k)
    w = image_shape[1]
    for n in range(len(crow_l) - 1):
        grad_at = {}
        for q in range(o_crow[n], o_crow[n + 1]):
            grad_at[o_col[q]] = grad_at.get(o_col[q], 0.0) + g[q]
        for e in range(crow_l[n], crow_l[n + 1]):
            i, j = divmod(col_l[e], w)
            for u in range(k.shape[0]):
                for t in range(k.shape[1]):
                    oi, oj = i + u - off_h, j + t - off_w
                    if 0 <= oi < out_h and 0 <= oj < out_w and oi * out_w + oj in grad_at:
                        want_v[e] += grad_at[oi * out_w + oj] * k[u, t]
                        want_k[u, t] += grad_at[oi * out_w + oj] * v[e]
    assert_close(grad_values, torch.from_numpy(want_v), values.dtype, "grad_values")
    assert_close(grad_kernel, torch.from_numpy(want_k), values.dtype, "grad_kernel")


def toeplitz_module_reference_grad(x_dense, kernel, image_shape, mode, weights):
    """d/dkernel of sum(weights * conv(x)) through F.conv2d (x's stored pattern does not
    matter for the kernel's gradient: unstored pixels are zero and so contribute nothing
    more than the unstored output pixels, whose weight is masked by the caller)."""
    k = kernel.detach().double().clone().requires_grad_()
    h, w = image_shape
    (out_h, out_w), (off_h, off_w) = toeplitz_geometry(image_shape, tuple(k.shape), mode)
    kh, kw = k.shape
    images = x_dense.detach().double().reshape(-1, 1, h, w)
    # full convolution = correlation with the flipped kernel over a (k-1)-padded image
    full = F.conv2d(F.pad(images, (kw - 1, kw - 1, kh - 1, kh - 1)), k.flip(0, 1)[None, None])
    out = full[:, 0, off_h:off_h + out_h, off_w:off_w + out_w].reshape(len(images), -1)
    (out * weights).sum().backward()
    return k.grad
