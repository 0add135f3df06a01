"""The valid starting points of the cases: random geometries, the programs that build valid
inputs for each family (packed filter, Toeplitz over a torch CSR batch, the scipy-compat
class), the usual calls and checks, and small helpers that write program text.

Every generator draws from one `random.Random(seed)`: the order of the draws is part of what a
seed means, so a change here changes every seed's program.
"""


def join(*parts) -> str:
    """Lines of code, the empty ones left out."""
    return "\n".join(p for p in parts if p)


def fraction_index(rng, length_expr: str) -> str:
    """An index expression into a sequence of data-dependent length (at least 1)."""
    return f"int({rng.random():.3f} * ({length_expr} - 1))"


def filler_for(name: str) -> str:
    """What a non-contiguous view's neighbours in memory hold: out-of-range indices, NaN
    values (an int32-safe index for the CSR arrays that may be int32)."""
    return {"row_ptr": "10**12", "col_idx": "10**12", "crow": "10**6", "col": "10**6"}.get(
        name, "float('nan')")


# Grad modes a call runs under (writes through .data must be followed in every one).
CONTEXTS = ("contextlib.nullcontext()", "torch.inference_mode()", "torch.no_grad()")


def under(context: str, statement: str) -> str:
    """`statement` run inside `with context:`."""
    return join(f"with {context}:", "    " + statement)


# ---------------------------------------------------------------- packed sparse filter

FILTER_METHODS = ("auto", "direct", "unfold", "dense")


def filter_geometry(rng, small=False, dtype=None):
    """A small conv2d whose kernel reaches at least one output pixel (padding included)."""
    groups = rng.choice([1, 1, 1, 2])
    c_in, c_out = groups * rng.randint(1, 2 if small else 3), groups * rng.randint(1, 3)
    kh, kw = rng.randint(1, 3), rng.randint(1, 3)
    stride = [rng.randint(1, 2), rng.randint(1, 2)]
    dilation = [rng.randint(1, 2), rng.randint(1, 2)]
    padding = [rng.randint(0, 2), rng.randint(0, 2)]
    reach = [(kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1]
    h = rng.randint(max(1, reach[0] - 2 * padding[0]), reach[0] + (2 if small else 4))
    w = rng.randint(max(1, reach[1] - 2 * padding[1]), reach[1] + (2 if small else 4))
    return dict(n=rng.randint(1, 2), c_in=c_in, c_out=c_out, groups=groups, kh=kh, kw=kw,
                stride=stride, dilation=dilation, padding=padding, h=h, w=w,
                dtype=dtype or rng.choice(["float32", "float64"]),
                density=rng.choice([0.2, 0.5, 0.9]), method=rng.choice(FILTER_METHODS),
                bias=rng.random() < 0.5)


def filter_setup(seed, g) -> str:
    """x, a pruned weight and its packed CSR (row_ptr, col_idx, values), bias and the conv
    parameters, all valid."""
    return join(
        f"torch.manual_seed({seed})",
        f"x = torch.randn({g['n']}, {g['c_in']}, {g['h']}, {g['w']}, dtype=torch.{g['dtype']})",
        f"weight = pruned_weight({g['c_out']}, {g['c_in'] // g['groups']}, {g['kh']}, "
        f"{g['kw']}, {g['density']}, torch.{g['dtype']})",
        f"bias = torch.randn({g['c_out']}, dtype=torch.{g['dtype']}) if {g['bias']} else None",
        "row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)",
        "weight_size = list(weight.shape)",
        f"stride, padding, dilation, groups = {g['stride']}, {g['padding']}, {g['dilation']}, "
        f"{g['groups']}",
        f"method = {g['method']!r}",
        "taps = weight_size[1] * weight_size[2] * weight_size[3]")


# The raw op on the packed filter, and the functional API on the dense weight.
FILTER_OP_CALL = ("out = OPS.sparse_filter_conv2d(x, row_ptr, col_idx, values, weight_size, "
                  "bias, stride, padding, dilation, groups, method)")

FN_CALL = ("out = tsc.sparse_conv2d(x, weight, bias, stride, padding, dilation, groups, "
           "method)")
FN_CHECK = "check_filter(out, x, weight, bias, stride, padding, dilation, groups)"


# ---------------------------------------------------------------- Toeplitz (torch CSR)

TOEPLITZ_METHODS = ("auto", "direct", "precomputed")
MODES = ("full", "same", "valid")


def toeplitz_geometry(rng, dtype=None):
    """A batch of small images and a kernel; 'valid' only where the kernel fits."""
    h, w = rng.randint(1, 7), rng.randint(1, 7)
    kh, kw = rng.randint(1, 4), rng.randint(1, 4)
    mode = rng.choice(MODES)
    if mode == "valid" and (kh > h or kw > w):
        mode = "same"
    return dict(b=rng.randint(1, 3), h=h, w=w, kh=kh, kw=kw, mode=mode,
                dtype=dtype or rng.choice(["float32", "float64"]),
                density=rng.choice([0.1, 0.3, 0.7]), method=rng.choice(TOEPLITZ_METHODS))


def output_pixels(g) -> int:
    (h, w), (kh, kw) = (g["h"], g["w"]), (g["kh"], g["kw"])
    return {"full": (h + kh - 1) * (w + kw - 1), "same": h * w,
            "valid": (h - kh + 1) * (w - kw + 1)}[g["mode"]]


def toeplitz_setup(seed, g) -> str:
    """A torch CSR batch x, copies of its arrays (crow, col, values) and a kernel."""
    return join(
        f"torch.manual_seed({seed})",
        f"image_shape, mode, method = [{g['h']}, {g['w']}], {g['mode']!r}, {g['method']!r}",
        f"x = sparse_images({g['b']}, {g['h']}, {g['w']}, {g['density']}, torch.{g['dtype']})",
        "crow, col, values = x.crow_indices().clone(), x.col_indices().clone(), "
        "x.values().clone()",
        f"kernel = torch.randn({g['kh']}, {g['kw']}, dtype=torch.{g['dtype']})",
        f"pixels, out_pixels, batch = {g['h'] * g['w']}, {output_pixels(g)}, {g['b']}")


# The raw ops take x's arrays (checked by CHECK_OP); the functional API and the module take a
# CSR tensor (checked by CHECK_TENSOR).
TENSOR_CSR = "xs = torch.sparse_csr_tensor(crow, col, values, size=(batch, pixels))"
CHECK_OP = "check_toeplitz(out, crow, col, values, kernel, image_shape, mode)"
CHECK_TENSOR = "check_toeplitz_tensor(y, crow, col, values, kernel, image_shape, mode)"
TOEPLITZ_FN_CALL = "y = tsc.toeplitz_conv2d(x, kernel, image_shape, mode, method)"
TOEPLITZ_OP_CALL = ("out = OPS.toeplitz_conv2d(crow, col, values, kernel, image_shape, mode, "
                    "method)")
KEPT_T = "T = OPS.toeplitz_matrix(kernel, image_shape, mode)"
PRECOMPUTED_OP_CALL = ("out = OPS.toeplitz_conv2d_precomputed(crow, col, values, kernel, "
                       "image_shape, mode, *T)")
SCIPY_OP_CALL = "out = OPS._toeplitz_conv2d_scipy(crow, col, values, kernel, image_shape, mode)"
CHECK_SCIPY_OP = "check_toeplitz_scipy_op(out, crow, col, values, kernel, image_shape, mode)"
MODULE_CALL = join("m = tsc.ToeplitzConv2d(image_shape, kernel, mode, method)", TENSOR_CSR,
                   "y = m(xs)")


# ---------------------------------------------------------------- compat (scipy CSR)

def compat_setup(seed, g, method) -> str:
    """A scipy CSR batch x (int32 indices unless g['index'] says otherwise), its arrays
    (indptr, indices, data), a kernel k and a Toeplitz_convolution2d `conv`."""
    index = g.get("index", "int32")
    return join(
        f"torch.manual_seed({seed})",
        f"x_shape, mode = ({g['h']}, {g['w']}), {g['mode']!r}",
        f"xt = sparse_images({g['b']}, {g['h']}, {g['w']}, {g['density']}, torch.float64)",
        "indptr = xt.crow_indices().numpy().copy()",
        "indices = xt.col_indices().numpy().copy()",
        f"data = xt.values().numpy().astype(np.{g['dtype']})",
        f"x = scipy.sparse.csr_matrix((data.copy(), indices.copy(), indptr.copy()), "
        f"shape=({g['b']}, {g['h'] * g['w']}))",
        f"x.indices, x.indptr = x.indices.astype(np.{index}), x.indptr.astype(np.{index})",
        f"k = np.random.RandomState({seed % 2**32}).randn({g['kh']}, {g['kw']})"
        f".astype(np.{g['dtype']})",
        f"conv = Toeplitz_convolution2d(x_shape=x_shape, k=k, mode=mode, method={method!r})",
        f"pixels = {g['h'] * g['w']}")
