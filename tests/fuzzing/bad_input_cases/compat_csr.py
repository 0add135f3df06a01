"""compat_csr cases: the scipy CSR batch given to compat.Toeplitz_convolution2d corrupted
after construction (indices, indptr, data: values, lengths, dtypes, layouts)."""
from .case import Case
from .setups import compat_setup, fraction_index, join, toeplitz_geometry

CHECK_COMPAT = "check_compat(y, indptr, indices, ref_data, k, x_shape, mode)"


def compat_corruption(rng, g):
    """(kind, code, expect, names) corrupting the scipy CSR batch after construction."""
    wide = g["index"] == "int64"
    bad_columns = ["pixels", "pixels + 5", "-1", "-5", "2**31 - 1", "-2**31"] + (
        ["10**12", "-2**63", "2**63 - 1"] if wide else [])
    entry = fraction_index(rng, "x.indices.size")
    names = ("x", "indices", "indptr", "data")
    kinds = {
        "indices_out_of_range": (f"x.indices[{entry}] = {rng.choice(bad_columns)}", "raise"),
        "indptr_first": (f"x.indptr[0] = {rng.choice(['1', '-1'])}", "raise"),
        "indptr_negative": (f"x.indptr[max(1, {fraction_index(rng, 'x.indptr.size')})] = -3",
                            "raise"),
        "indptr_decreasing": (join(f"i = {fraction_index(rng, 'x.indptr.size - 1')}",
                                   "x.indptr[i] = x.indptr[i + 1] + 1"), "raise"),
        "indptr_last": (f"x.indptr[-1] = x.indices.size + {rng.choice(['1', '-1'])}", "raise"),
        "indptr_length": (rng.choice(["x.indptr = x.indptr[:-1]",
                                      "x.indptr = np.append(x.indptr, x.indptr[-1])"]), "raise"),
        "data_length": (rng.choice(["x.data = x.data[:-1]", "x.data = np.append(x.data, 1.0)"]),
                        "raise"),
        "indices_length": ("x.indices = x.indices[:-1]", "raise"),
        "indices_dtype": (f"x.indices = x.indices.astype(np.{rng.choice(['float64', 'int16', 'uint32', 'bool'])})",  # noqa: E501
                          "either"),
        "mixed_index_dtypes": ("x.indices = x.indices.astype(np.int64 if x.indices.dtype == "
                               "np.int32 else np.int32)", "either"),
        "noncontiguous_indices": ("x.indices = np.repeat(x.indices, 2)[::2]", "either"),
        "negative_stride_indices": ("x.indices = x.indices[::-1].copy()[::-1]", "either"),
        "noncontiguous_data": ("x.data = np.repeat(x.data, 2)[::2]", "either"),
        "data_dtype": (f"x.data = x.data.astype({rng.choice(['np.int64', 'np.float16', 'np.complex128', 'bool', 'object'])})",  # noqa: E501
                       "either"),
        "unsorted_or_duplicate": (f"shuffle_rows(x.indptr, x.indices, x.data, "
                                  f"duplicate={rng.random() < 0.5})", "correct"),
        "readonly_arrays": ("for a in (x.indices, x.indptr, x.data): a.flags.writeable = False",
                            "correct"),
    }
    kind = rng.choice(sorted(kinds))
    code, expect = kinds[kind]
    return kind, code, expect, names


def gen_compat_csr(seed, rng) -> Case:
    g = toeplitz_geometry(rng)
    g["index"] = rng.choice(["int32", "int64"])
    method = rng.choice(["direct", "direct", "precomputed", "lazy", "gather_scatter"])
    kind, code, expect, names = compat_corruption(rng, g)
    setup, check = join(compat_setup(seed, g, method), code), ""
    if expect != "raise":
        # the reference convolves the entries as the corrupted matrix holds them, in float
        setup = join(setup,
                     "indptr, indices = np.asarray(x.indptr).copy(), np.asarray(x.indices).copy()",
                     "ref_data = np.asarray(x.data).real.astype(np.float64)")
        check = CHECK_COMPAT
    return Case(seed, "compat_csr", f"{method}/{kind}", setup, "y = conv(x, batching=True)",
                expect, names, check)
