"""args cases: one argument of one entry point replaced by a bad value (wrong type, sign,
length, spelling, overflow), from a table per entry point; every other argument stays valid."""
from .case import Case
from .setups import (compat_setup, filter_geometry, filter_setup, join, toeplitz_geometry,
                     toeplitz_setup)

# Per entry point, rows (argument, bad value, expectation[, names the message may use instead
# of the argument's own]); 'either' values are legal in some reading.
FILTER_FN_ARGS = [
    ("input", v, "raise") for v in ("None", "[1.0, 2.0]", "x.numpy()", "'x'", "3.0",
                                    "x.to_sparse()", "x.unsqueeze(-1)")
] + [
    ("weight", v, "raise") for v in ("None", "weight.tolist()", "weight.numpy()", "'w'",
                                     "weight.to_sparse()")
] + [
    ("bias", v, "raise") for v in ("3", "[1.0]", "'b'", "bias_of(weight.shape[0] + 1)",
                                   "bias_of(1, weight.shape[0])", "x.new_ones(())",
                                   "bias_of(weight.shape[0]).to('meta')")
] + [
    ("stride", v, "raise") for v in ("0", "-1", "(1, 0)", "(1, 2, 3)", "()", "1.5", "'1'",
                                     "None", "True", "(1, True)", "-2**63", "2**64")
] + [("stride", v, "either") for v in ("2**31", "2**62", "2**63 - 1", "[2]", "(2,)")] + [
    ("padding", v, "raise") for v in ("-1", "(0, -2)", "'full'", "'SAME'", "None", "1.5",
                                      "(1, 2, 3)", "2**62", "2**63 - 1", "-2**63")
] + [("padding", v, "either") for v in ("'same'", "'valid'", "[1]")] + [
    ("dilation", v, "raise") for v in ("0", "-2", "(1, 0)", "None", "1.0")
] + [("dilation", v, "either") for v in ("2**31", "2**62", "2**63 - 1")] + [
    ("groups", v, "raise") for v in ("0", "-1", "3", "1.5", "True", "None", "'1'", "2**62",
                                     "2**63 - 1", "2**64")
] + [
    ("method", v, "raise") for v in ("'Direct'", "''", "' direct'", "None", "1", "'fft'",
                                     "'auto\\x00'")
] + [("method", "'spmm'", "either")]  # CUDA's method: a CPU call may fall back

# Not ("input", "None"): a raw torch.ops call with None for a required Tensor fails in
# torch's dispatcher, before any kernel of ours runs ("tensor does not have a device"), as it
# does for every torch op; the functional API names it (the FUNCTIONAL cases).
FILTER_OP_ARGS = [
    ("input", v, "raise") for v in ("x[0]", "x.to_sparse()")
] + [
    ("weight_size", v, "raise") for v in ("weight_size[:3]", "weight_size + [1]",
                                          "[weight_size[0], weight_size[1], weight_size[2], -1]",
                                          "[2**62] + weight_size[1:]",
                                          "weight_size[:2] + [2**62, 1]")
] + [
    ("stride", v, "raise") for v in ("[0, 1]", "[1]", "[1, 1, 1]", "[-2**63, 1]")
] + [("stride", "[2**63 - 1, 2**63 - 1]", "either")] + [
    ("padding", v, "raise") for v in ("[-1, 0]", "[2**62, 0]", "[2**63 - 1, 0]")
] + [
    ("dilation", "[0, 1]", "raise")
] + [("dilation", v, "either") for v in ("[2**62, 1]", "[2**63 - 1, 1]")] + [
    ("groups", v, "raise") for v in ("0", "-1", "3", "2**62", "-2**63")
] + [
    ("method", v, "raise") for v in ("'Direct'", "''", "'fft'")
] + [("method", "'spmm'", "either")] + [
    ("bias", v, "raise") for v in ("bias_of(weight.shape[0] + 1)", "bias_of(weight.shape[0])"
                                   ".to('meta')", "bias_of(weight.shape[0]).double()"
                                   " if x.dtype == torch.float32 else bias_of(weight.shape[0])"
                                   ".float()")
]

MODULE_ARGS = [
    ("in_channels", v, "raise") for v in ("-1", "2.5", "None")
] + [("out_channels", "0", "either")] + [
    ("out_channels", v, "raise") for v in ("-3", "None")
] + [
    ("kernel_size", v, "raise") for v in ("0", "-1", "(3, 0)", "(1, 2, 3)", "None", "'x'")
] + [
    ("stride", v, "raise") for v in ("0", "-1", "(1, 0)")
] + [
    ("padding", v, "raise") for v in ("-1", "'full'", "(0, -1)")
] + [
    ("dilation", v, "raise") for v in ("0", "(0, 1)")
] + [
    ("groups", v, "raise") for v in ("0", "-1", "3", "1.5")
] + [
    ("density", v, "raise") for v in ("0", "1.5", "-0.1", "float('nan')", "'0.5'")
] + [
    ("pattern", v, "raise") for v in ("'blocks'", "None")
] + [
    ("method", v, "raise") for v in ("'fft'", "None")
] + [
    ("padding_mode", v, "raise") for v in ("'mirror'", "None")
]

TOEPLITZ_FN_ARGS = [
    ("x", v, "raise") for v in ("None", "[1.0, 2.0]", "x.to_dense().numpy()", "'x'",
                                "scipy.sparse.csr_matrix(x.to_dense().numpy())")
] + [
    ("kernel", v, "raise") for v in ("None", "[[1.0]]", "kernel.numpy()", "3.0")
] + [
    ("image_shape", v, "raise") for v in ("None", "(h, w, 1)", "(h * w,)", "(float(h), w)",
                                          "'hw'", "h * w", "(0, w)", "(-h, -w)",
                                          "(2**31, 1)", "(2**64, 1)")
] + [("image_shape", "(True, h * w)", "either")] + [
    ("mode", v, "raise") for v in ("'Same'", "''", "None", "1", "'same '")
] + [
    ("method", v, "raise") for v in ("'Direct'", "''", "None", "'dense'", "1")
]

TOEPLITZ_OP_ARGS = [
    ("image_shape", v, "raise") for v in ("[0, w]", "[-3, w]", "[h * w]", "[h, w, 1]",
                                          "[2**31, 1]", "[2**62, 4]", "[-2**63, 1]")
] + [
    ("mode", v, "raise") for v in ("'Same'", "''")
] + [
    ("method", v, "raise") for v in ("'Direct'", "'dense'")
]

TOEPLITZ_MODULE_ARGS = [
    ("image_shape", v, "raise") for v in ("(0, w)", "(-1, w)", "(h,)", "(h, w, 1)", "None",
                                          "('a', 'b')", "(h + 0.5, w)", "h")
] + [
    ("kernel", v, "raise") for v in ("None", "[[1.0]]", "kernel.numpy()", "kernel[0]",
                                     "kernel[None]", "kernel[:0]", "kernel.int()")
] + [
    ("mode", v, "raise") for v in ("'Same'", "None")
] + [
    ("method", v, "raise") for v in ("'Direct'", "None")
]

TOEPLITZ_MATRIX_ARGS = [
    ("kernel", v, "raise") for v in ("None", "kernel[0]", "kernel[:0]", "kernel.int()")
] + [
    ("image_shape", v, "raise") for v in ("(0, w)", "(-1, w)", "(h,)", "None", "(2**31, 1)")
] + [
    ("mode", v, "raise") for v in ("'Same'", "None")
]

COMPAT_CTOR_ARGS = [
    ("x_shape", v, "raise") for v in ("(0, w)", "(h,)", "None", "('a', 'b')", "(h, w, 1)",
                                      "(-1, w)", "h")
] + [
    ("k", v, "raise") for v in ("None", "'k'", "np.zeros((0, 3))", "np.ones(3)",
                                "np.ones((2, 2, 2))")
] + [("k", "np.array([['a']])", "raise", ("k", "dtype"))] + [
    ("mode", v, "raise") for v in ("'Same'", "None")
] + [
    ("method", v, "raise") for v in ("'fast'", "None")
] + [
    ("dtype", v, "raise") for v in ("np.int32", "'float16'", "'bogus'")
]

COMPAT_CALL_ARGS = [
    ("x", v, "raise") for v in ("None", "[1.0, 2.0]", "'x'", "np.zeros(5)",
                                "np.zeros((2, h * w + 1))", "x.toarray()[:, :-1]")
] + [
    ("mode", v, "raise") for v in ("'Same'", "1")
]

ARG_TABLES = {
    "sparse_conv2d": FILTER_FN_ARGS,
    "sparse_filter_conv2d": FILTER_OP_ARGS,
    "SparseConv2d": MODULE_ARGS,
    "toeplitz_conv2d": TOEPLITZ_FN_ARGS,
    "toeplitz_conv2d_op": TOEPLITZ_OP_ARGS,
    "ToeplitzConv2d": TOEPLITZ_MODULE_ARGS,
    "toeplitz_matrix": TOEPLITZ_MATRIX_ARGS,
    "Toeplitz_convolution2d": COMPAT_CTOR_ARGS,
    "Toeplitz_convolution2d.__call__": COMPAT_CALL_ARGS,
}

# The call of each entry point, its arguments as {placeholders} holding their normal value.
ARG_CALLS = {
    "sparse_conv2d": ("out = tsc.sparse_conv2d({input}, {weight}, {bias}, {stride}, {padding}, "
                      "{dilation}, {groups}, {method})",
                      dict(input="x", weight="weight", bias="bias", stride="stride",
                           padding="padding", dilation="dilation", groups="groups",
                           method="method")),
    "sparse_filter_conv2d": ("out = OPS.sparse_filter_conv2d({input}, row_ptr, col_idx, "
                             "values, {weight_size}, {bias}, {stride}, {padding}, {dilation}, "
                             "{groups}, {method})",
                             dict(input="x", weight_size="weight_size", bias="bias",
                                  stride="stride", padding="padding", dilation="dilation",
                                  groups="groups", method="method")),
    "SparseConv2d": ("layer = tsc.SparseConv2d({in_channels}, {out_channels}, {kernel_size}, "
                     "stride={stride}, padding={padding}, dilation={dilation}, groups={groups}, "
                     "padding_mode={padding_mode}, density={density}, pattern={pattern}, "
                     "method={method}, dtype=x.dtype)\nout = layer(x)",
                     dict(in_channels="x.shape[1]", out_channels="4", kernel_size="3",
                          stride="1", padding="1", dilation="1", groups="1",
                          padding_mode="'zeros'", density="0.3", pattern="'magnitude'",
                          method="'auto'")),
    "toeplitz_conv2d": ("y = tsc.toeplitz_conv2d({x}, {kernel}, {image_shape}, {mode}, "
                        "{method})",
                        dict(x="x", kernel="kernel", image_shape="image_shape", mode="mode",
                             method="method")),
    "toeplitz_conv2d_op": ("out = OPS.toeplitz_conv2d(crow, col, values, kernel, "
                           "{image_shape}, {mode}, {method})",
                           dict(image_shape="image_shape", mode="mode", method="method")),
    "ToeplitzConv2d": ("m = tsc.ToeplitzConv2d({image_shape}, {kernel}, mode={mode}, "
                       "method={method})\ny = m(x)",
                       dict(image_shape="image_shape", kernel="kernel", mode="mode",
                            method="method")),
    "toeplitz_matrix": ("t = tsc.toeplitz_matrix({kernel}, {image_shape}, {mode})",
                        dict(kernel="kernel", image_shape="image_shape", mode="mode")),
    "Toeplitz_convolution2d": ("conv = Toeplitz_convolution2d(x_shape={x_shape}, k={k}, "
                               "mode={mode}, method={method}, dtype={dtype})\ny = conv(x)",
                               dict(x_shape="x_shape", k="k", mode="mode", method="'direct'",
                                    dtype="None")),
    "Toeplitz_convolution2d.__call__": ("y = conv({x}, batching=True, mode={mode})",
                                        dict(x="x", mode="mode")),
}

# The reference check of an 'either' value's result (same placeholders).
ARG_CHECKS = {
    "sparse_conv2d": "check_filter_dilated(out, x, weight, bias, clip_stride({stride}), "
                     "{padding}, {dilation}, groups)",
    "sparse_filter_conv2d": "check_filter_dilated(out, x, weight, bias, clip_stride({stride}), "
                            "padding, {dilation}, groups)",
    "SparseConv2d": "check_module_via_dense(out, layer, x)",
    "toeplitz_conv2d": "check_toeplitz_tensor(y, crow, col, values, kernel, {image_shape}, mode)",
}


def gen_args(seed, rng) -> Case:
    entry = rng.choice(sorted(ARG_TABLES))
    arg, value, expect, *names = rng.choice(ARG_TABLES[entry])
    names = tuple(names[0]) if names else (arg,)
    template, defaults = ARG_CALLS[entry]
    arguments = dict(defaults, **{arg: value})
    run = template.format(**arguments)
    if entry in ("sparse_conv2d", "sparse_filter_conv2d", "SparseConv2d"):
        g = filter_geometry(rng)
        if entry == "SparseConv2d":
            g["groups"] = 1
        setup = join(filter_setup(seed, g), "bias_of = lambda *size: torch.randn(*size, "
                                            "dtype=x.dtype)")
    elif entry.startswith("Toeplitz_convolution2d"):
        g = toeplitz_geometry(rng)
        setup = join(compat_setup(seed, g, "direct"), f"h, w = {g['h']}, {g['w']}")
    else:
        g = toeplitz_geometry(rng)
        setup = join(toeplitz_setup(seed, g), f"h, w = {g['h']}, {g['w']}")
    check = ""
    if expect == "either":
        check = ARG_CHECKS[entry].format(**arguments)
        if entry == "toeplitz_conv2d":
            check = check.replace("(True, h * w)", "(1, h * w)")
    if arg == "padding" and "same" in value.lower() and g.get("stride") != [1, 1]:
        # 'same' padding needs stride 1
        expect, check = "raise", ""
    return Case(seed, "args", f"{entry}/{arg}={value}", setup, run, expect, names, check)
