"""shapes cases: wrong, empty, degenerate and huge shapes and sizes for the three families
(a wrong one must be named; a degenerate one may be accepted with the correct result)."""
from .case import Case
from .setups import (CHECK_OP, FILTER_OP_CALL, FN_CALL, FN_CHECK, TOEPLITZ_FN_CALL,
                     TOEPLITZ_OP_CALL, compat_setup, filter_geometry, filter_setup, join,
                     toeplitz_geometry, toeplitz_setup)


def gen_shapes(seed, rng) -> Case:
    family = rng.choice(["filter", "filter", "toeplitz", "toeplitz", "compat"])
    if family == "filter":
        return filter_shape_case(seed, rng)
    if family == "toeplitz":
        return toeplitz_shape_case(seed, rng)
    return compat_shape_case(seed, rng)


def filter_shape_case(seed, rng) -> Case:
    g = filter_geometry(rng)

    def either_call():  # the functional API or the raw op
        return rng.choice([FN_CALL, FILTER_OP_CALL])

    cases = {
        "channels_mismatch": ("x = torch.randn(x.shape[0], x.shape[1] + 1, *x.shape[2:], "
                              "dtype=x.dtype)", FN_CALL, "raise", ("input", "weight")),
        "weight_size_channels": ("weight_size[1] += 1", FILTER_OP_CALL, "raise",
                                 ("weight_size", "input")),
        "weight_size_out": (f"weight_size[0] += {rng.choice([1, -1])}", FILTER_OP_CALL,
                            "raise", ("weight_size", "row_ptr")),
        "weight_size_kernel": (f"weight_size[{rng.choice([2, 3])}] += {rng.choice([1, -1])}",
                               FILTER_OP_CALL, "either", ("weight_size", "col_idx", "kernel")),
        "weight_size_negative": (f"weight_size[{rng.randint(0, 3)}] = -1", FILTER_OP_CALL,
                                 "raise", ("weight_size", "kernel")),
        "weight_size_length": (rng.choice(["weight_size = weight_size[:3]",
                                           "weight_size = weight_size + [1]"]),
                               FILTER_OP_CALL, "raise", ("weight_size",)),
        "bias_length": (rng.choice(["bias = torch.randn(weight.shape[0] + 1, dtype=x.dtype)",
                                    "bias = torch.randn(1, weight.shape[0], dtype=x.dtype)",
                                    "bias = torch.tensor(1.0, dtype=x.dtype)",
                                    "bias = torch.randn(0, dtype=x.dtype)"]),
                        either_call(), "raise", ("bias",)),
        "weight_not_4d": (rng.choice(["weight = weight[0]", "weight = weight[None]",
                                      "weight = weight.reshape(weight.shape[0], -1)"]),
                          FN_CALL, "raise", ("weight",)),
        "input_dims": (rng.choice(["x = x[0, 0]", "x = x[None]", "x = x.reshape(-1)"]),
                       FN_CALL, "raise", ("input",)),
        "unbatched_input": ("x = x[0]", FN_CALL, "correct", ()),
        "zero_batch": ("x = x[:0]", either_call(), "either",
                       ("input",)),
        "zero_in_channels": ("x = x[:, :0]\nweight = weight[:, :0]\ngroups = 1",
                             FN_CALL, "either", ("input", "weight")),
        "zero_out_channels": ("weight = weight[:0]\nbias = None", FN_CALL, "either",
                              ("weight",)),
        "zero_kernel": (f"weight = weight[:, :, {rng.choice([':0, :', ':, :0'])}]", FN_CALL,
                        "raise", ("weight", "weight_size", "kernel")),
        "zero_spatial": (f"x = x[:, :, {rng.choice([':0, :', ':, :0'])}]", FN_CALL, "either",
                         ("input", "kernel")),
        "kernel_larger_than_input": ("x = x[:, :, :1, :1]\nweight = pruned_weight("
                                     "weight.shape[0], weight.shape[1], 4, 4, 0.5, x.dtype)\n"
                                     "padding = [0, 0]", FN_CALL, "raise", ("kernel", "input")),
        # (a draw from one choice: kept, so that every later draw of the seed stays the same)
        "all_pruned": ("weight = torch.zeros_like(weight)", rng.choice([FN_CALL]), "correct",
                       ()),
        "huge_dilation": (f"dilation = [{rng.choice(['2**31', '2**62', '2**63 - 1'])}, 1]",
                          either_call(), "either",
                          ("dilation", "kernel")),
        "huge_padding": (f"padding = [{rng.choice(['2**62', '2**63 - 1', '2**61'])}, 0]",
                         either_call(), "raise",
                         ("padding", "memory")),
        "huge_stride": (f"stride = [{rng.choice(['2**31', '2**62', '2**63 - 1'])}, 1]",
                        either_call(), "either", ("stride",)),
    }
    kind = rng.choice(sorted(cases))
    code, run, expect, names = cases[kind]
    check = "" if expect == "raise" else {
        "huge_stride": "check_filter(out, x, weight, bias, clip_stride(stride), padding, "
                       "dilation, groups)",
        "huge_dilation": "check_filter_dilated(out, x, weight, bias, stride, padding, dilation, "
                         "groups)",
        "weight_size_kernel": "check_filter(out, x, dense_from_csr(row_ptr, col_idx, values, "
                              "weight_size), bias, stride, padding, dilation, groups)",
    }.get(kind, FN_CHECK)
    return Case(seed, "shapes", f"filter/{kind}", join(filter_setup(seed, g), code), run,
                expect, names, check)


def toeplitz_shape_case(seed, rng) -> Case:
    g = toeplitz_geometry(rng)
    h, w = g["h"], g["w"]

    def either_call():  # the functional API or the raw op
        return rng.choice([TOEPLITZ_FN_CALL, TOEPLITZ_OP_CALL])

    other = rng.choice([(h + 1, w), (h, w + 2), (w, h), (h * w, 1)])
    same_size = other[0] * other[1] == h * w  # then a valid reinterpretation of the rows
    cases = {
        "image_shape_vs_hw": (f"image_shape = {list(other)}", TOEPLITZ_FN_CALL,
                              "either" if same_size else "raise",
                              ("image_shape", "x") + (("mode", "kernel") if same_size else ())),
        "op_image_shape_smaller": (f"image_shape = [{max(1, h - 1)}, {w}]", TOEPLITZ_OP_CALL,
                                   "either", ("col", "image_shape")),
        "op_image_shape_larger": (f"image_shape = [{h + 2}, {w + 1}]", TOEPLITZ_OP_CALL,
                                  "either", ("col", "image_shape")),
        "kernel_dims": (rng.choice(["kernel = kernel[0]", "kernel = kernel[None]",
                                    "kernel = kernel[0, 0]"]),
                        either_call(), "raise", ("kernel",)),
        "kernel_empty": (rng.choice(["kernel = kernel[:0]", "kernel = kernel[:, :0]"]),
                         either_call(), "raise", ("kernel",)),
        "image_zero": (rng.choice([f"image_shape = [0, {w}]", f"image_shape = [{h}, 0]",
                                   f"image_shape = [-1, {w}]", f"image_shape = [{h}, -{w}]"]),
                       either_call(), "raise", ("image_shape", "x")),
        "image_shape_length": (rng.choice([f"image_shape = [{h * w}]",
                                           f"image_shape = [{h}, {w}, 1]"]),
                               either_call(), "raise", ("image_shape",)),
        "zero_batch": ("x = torch.sparse_csr_tensor(torch.zeros(1, dtype=torch.int64), "
                       "torch.zeros(0, dtype=torch.int64), values[:0], size=(0, pixels))\n"
                       "crow, col, values = x.crow_indices(), x.col_indices(), x.values()",
                       either_call(), "either", ("x",)),
        "no_entries": ("x = torch.sparse_csr_tensor(torch.zeros(batch + 1, dtype=torch.int64), "
                       "torch.zeros(0, dtype=torch.int64), values[:0], size=(batch, pixels))\n"
                       "crow, col, values = x.crow_indices(), x.col_indices(), x.values()",
                       either_call(), "correct", ()),
        "valid_kernel_too_large": (f"mode = 'valid'\nkernel = torch.randn({h + 1}, {w}, "
                                   "dtype=kernel.dtype)", either_call(), "raise",
                                   ("mode", "kernel")),
        "x_not_2d": (rng.choice(["x = x.to_dense()[0]", "x = x.to_dense()[None]",
                                 "x = x.to_dense().reshape(-1)"]), TOEPLITZ_FN_CALL, "raise",
                     ("x",)),
        "dense_x": ("x = x.to_dense()", TOEPLITZ_FN_CALL, "correct", ()),
        "coo_x": ("x = x.to_sparse_coo()", TOEPLITZ_FN_CALL, "correct", ()),
        "other_sparse_layout": (rng.choice(["x = x.to_sparse_csc()",
                                            "x = x.to_dense().to_sparse_bsr((1, 1))"]),
                                TOEPLITZ_FN_CALL, "raise", ("x",)),
        "huge_frame_direct": ("image_shape = [10**6, 10**6]\npixels = 10**12\n"
                              "col = col * 7919 % pixels\nx = torch.sparse_csr_tensor(crow, "
                              "col, values, size=(batch, pixels))\nmethod = 'direct'",
                              either_call(), "correct", ()),
        "huge_frame_precomputed": ("image_shape = [10**6, 10**6]\npixels = 10**12\n"
                                   "x = torch.sparse_csr_tensor(crow, col, values, "
                                   "size=(batch, pixels))\nmethod = 'precomputed'",
                                   either_call(), "either", ("image_shape", "memory", "method")),
        "side_2_31": ("image_shape = [2**31, 1]\nx = torch.sparse_csr_tensor(crow, col, values, "
                      "size=(batch, 2**31))", either_call(), "raise", ("image_shape",)),
    }
    kind = rng.choice(sorted(cases))
    code, run, expect, names = cases[kind]
    if kind == "dense_x":
        check = "check_toeplitz_dense(y, x, kernel, image_shape, mode)"
    elif run == TOEPLITZ_FN_CALL:
        check = ("crow, col, values = dense_csr_parts(x)\n"
                 "check_toeplitz_tensor(y, crow, col, values, kernel, image_shape, mode)")
    else:
        check = CHECK_OP
    return Case(seed, "shapes", f"toeplitz/{kind}", join(toeplitz_setup(seed, g), code), run,
                expect, names, "" if expect == "raise" else check)


def compat_shape_case(seed, rng) -> Case:
    g = toeplitz_geometry(rng, dtype="float64")
    h, w = g["h"], g["w"]
    if h == 1:  # a (1, W) batch of one image would also be a valid unbatched image
        g["b"] = 2
    cases = {
        "x_shape_mismatch": (f"x = scipy.sparse.csr_matrix(x.toarray()[:, :{h * w - 1}])"
                             if h * w > 1 else "x = scipy.sparse.csr_matrix((1, 2))",
                             "y = conv(x, batching=True)", "raise", ("x", "x_shape")),
        "unbatched_shape_mismatch": ("", "y = conv(x, batching=False)", "raise",
                                     ("x", "x_shape", "batching")),
        "unbatched": (f"x1 = scipy.sparse.csr_matrix(x.toarray()[:1].reshape({h}, {w}))",
                      "y = conv(x1, batching=False)", "correct", ()),
        "dense_numpy": ("xd = x.toarray()", "y = conv(xd, batching=True)", "correct", ()),
        "dense_numpy_wrong_shape": ("xd = x.toarray()[:, :-1]", "y = conv(xd, batching=True)",
                                    "raise", ("x", "x_shape")),
        "zero_rows": (f"x = scipy.sparse.csr_matrix((0, {h * w}))",
                      "y = conv(x, batching=True)", "either", ("x",)),
        "x_shape_zero": ("", f"conv = Toeplitz_convolution2d(x_shape=({rng.choice([0, -1])}, "
                             f"{w}), k=k, mode=mode)", "raise", ("x_shape",)),
        "k_dims": ("", f"conv = Toeplitz_convolution2d(x_shape=x_shape, "
                       f"k={rng.choice(['k[0]', 'k[None]', 'k[0, 0]'])}, mode=mode)", "raise",
                   ("k",)),
        "k_empty": ("", "conv = Toeplitz_convolution2d(x_shape=x_shape, k=k[:0], mode=mode)\n"
                        "y = conv(x)", "raise", ("k", "kernel")),
        "valid_k_too_large": ("", f"conv = Toeplitz_convolution2d(x_shape=x_shape, "
                                  f"k=np.ones(({h + 1}, {w})), mode='valid')\ny = conv(x)",
                              "raise", ("x", "k", "mode")),
        "coo_input": ("x = x.tocoo()", "y = conv(x, batching=True)", "correct", ()),
        "csc_input": ("x = x.tocsc()", "y = conv(x, batching=True)", "correct", ()),
    }
    kind = rng.choice(sorted(cases))
    code, run, expect, names = cases[kind]
    check = {"unbatched": "check_compat(y, x1.reshape(1, -1).tocsr().indptr, "
                          "x1.reshape(1, -1).tocsr().indices, x1.reshape(1, -1).tocsr().data, "
                          "k, x_shape, mode, batching=False)",
             "dense_numpy": "check_compat_dense(y, xd, k, x_shape, mode)"}.get(
        kind, "xc = x.tocsr()\ncheck_compat(y, xc.indptr, xc.indices, xc.data, k, x_shape, mode)")
    return Case(seed, "shapes", f"compat/{kind}", join(compat_setup(seed, g, "direct"), code),
                run, expect, names, "" if expect == "raise" else check)
