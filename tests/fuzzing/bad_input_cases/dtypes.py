"""dtypes cases: unsupported dtypes (integer, bool, complex) given to each family's entry
points, modules and the compat class, and float16/bfloat16 where they mix with another dtype
(a call wholly in float16 or bfloat16 is valid: it accumulates in float32)."""
from .case import Case
from .setups import (FILTER_OP_CALL, FN_CALL, TOEPLITZ_FN_CALL, TOEPLITZ_OP_CALL, compat_setup,
                     filter_geometry, filter_setup, join, toeplitz_geometry, toeplitz_setup)

NOT_FLOAT = ("int32", "int64", "int8", "uint8", "bool", "complex64", "complex128")
BAD_DTYPES = NOT_FLOAT + ("float16", "bfloat16")  # bad beside float32/float64 arguments


def gen_dtypes(seed, rng) -> Case:
    dt = rng.choice(BAD_DTYPES)
    kind = rng.choice(["fn_input", "fn_weight", "fn_both", "op_input", "op_values", "bias",
                       "toeplitz_x", "toeplitz_kernel", "toeplitz_op_values", "toeplitz_op_kernel",
                       "module_dtype", "compat_k", "compat_dtype_arg", "compat_data"])
    if kind in ("fn_both", "module_dtype"):  # every floating argument in dt
        dt = rng.choice(NOT_FLOAT)
    if kind.startswith(("fn", "op", "bias", "module")):
        g = filter_geometry(rng)
        setup = filter_setup(seed, g)
        code, run, names = {
            "fn_input": (f"x = x.to(torch.{dt})", FN_CALL, ("input", "weight")),
            "fn_weight": (f"weight = weight.to(torch.{dt})", FN_CALL, ("weight",)),
            "fn_both": (f"x, weight = x.to(torch.{dt}), weight.to(torch.{dt})", FN_CALL,
                        ("input",)),
            "op_input": (f"x = x.to(torch.{dt})", FILTER_OP_CALL, ("input", "values")),
            "op_values": (f"values = values.to(torch.{dt})", FILTER_OP_CALL, ("values",)),
            "bias": (f"bias = torch.ones(weight.shape[0], dtype=torch.{dt})",
                     rng.choice([FN_CALL, FILTER_OP_CALL]), ("bias",)),
            "module_dtype": ("", f"layer = tsc.SparseConv2d({g['c_in']}, {g['c_out']}, 3, "
                                 f"padding=1, dtype=torch.{dt})\nout = layer(x.to(torch.{dt}))",
                             ("dtype", "input", "weight")),
        }[kind]
        return Case(seed, "dtypes", f"{kind}/{dt}", join(setup, code), run, "raise", names)
    g = toeplitz_geometry(rng)
    if kind.startswith("compat"):
        setup = compat_setup(seed, g, "direct")
        npdt = {"bfloat16": "float16", "bool": "bool_"}.get(dt, dt)
        code, run, expect, names = {
            "compat_k": ("", f"conv = Toeplitz_convolution2d(x_shape=x_shape, "
                             f"k=k.astype(np.{npdt}), mode=mode)\ny = conv(x)", "raise",
                         ("k", "dtype")),
            "compat_dtype_arg": ("", f"conv = Toeplitz_convolution2d(x_shape=x_shape, k=k, "
                                     f"mode=mode, dtype=np.{npdt})\ny = conv(x)", "raise",
                                 ("dtype",)),
            "compat_data": (f"x.data = x.data.astype(np.{npdt})\n"
                            "ref_data = x.data.real.astype(np.float64)", "y = conv(x)",
                            "either", ("x", "data")),
        }[kind]
        check = "check_compat(y, x.indptr, x.indices, ref_data, k, x_shape, mode)"
        return Case(seed, "dtypes", f"{kind}/{dt}", join(setup, code), run, expect, names,
                    check if expect == "either" else "")
    setup = toeplitz_setup(seed, g)
    code, run, names = {
        "toeplitz_x": (f"x = x.to_dense().to(torch.{dt}).to_sparse_csr()", TOEPLITZ_FN_CALL,
                       ("x",)),
        "toeplitz_kernel": (f"kernel = kernel.to(torch.{dt})", TOEPLITZ_FN_CALL, ("kernel",)),
        "toeplitz_op_values": (f"values = values.to(torch.{dt})", TOEPLITZ_OP_CALL,
                               ("values", "x", "kernel")),
        "toeplitz_op_kernel": (f"kernel = kernel.to(torch.{dt})", TOEPLITZ_OP_CALL,
                               ("kernel",)),
    }[kind]
    return Case(seed, "dtypes", f"{kind}/{dt}", join(setup, code), run, "raise", names)
