"""Loads the compiled operator library and registers the fake (meta) kernels of both families
(sparse_filter/_fake.py, toeplitz/_fake.py).

Fake kernels are registered only after the library is loaded: they attach to schemas that
the library defines, and registering them first would fail or shadow a missing build. The
package's __init__ calls load() before importing anything else.
"""
import os

import torch

_LOADED = False


def load() -> None:
    global _LOADED
    if _LOADED:
        return
    try:
        from . import _C  # noqa: F401  (importing runs the TORCH_LIBRARY registrations)
    except ImportError as error:
        raise ImportError(
            "torch_sparse_conv: the compiled extension torch_sparse_conv._C could not be loaded "
            f"({error}). Build it first: `pip install --no-build-isolation -e .` from the "
            "repository (see README.md)."
        ) from error
    if not hasattr(torch.ops.torch_sparse_conv, "sparse_filter_conv2d"):
        raise ImportError("torch_sparse_conv._C loaded but registered no operators")
    from .sparse_filter import _fake as _sparse_filter_fake  # noqa: F401
    from .toeplitz import _fake as _toeplitz_fake  # noqa: F401
    _LOADED = True


def library_path() -> str:
    """Path of the compiled shared library (for torch.ops.load_library in other processes)."""
    from . import _C

    return os.path.abspath(_C.__file__)


def cuda_version_compiled() -> int:
    """CUDA_VERSION the library was built with (e.g. 13000), or 0 for a CPU-only build."""
    return int(torch.ops.torch_sparse_conv._cuda_version())


def cpu_auto_rule() -> str:
    """The constants the CPU ``auto`` method of the sparse-filter convolution chooses with on
    this processor: ``"zen4"`` (fitted on an AMD EPYC Zen 4; also other vendors' processors) or
    ``"intel-xeon"`` (an Intel Xeon), by CPUID's vendor; the environment variable
    ``TSC_AUTO_RULE`` picks one by name before the first call."""
    from . import _C

    return str(_C._cpu_auto_rule())


def conv_block_vector_bytes() -> int:
    """The bytes of the vectors the CPU sparse-filter ``direct`` kernel that lays out one
    sample (or a few interleaved, on small planes) computes in; it serves batches below the
    lanes layout's 8 float32 samples (4 float64). 64 on Intel processors
    with AVX-512 (chosen for those with two 512-bit multiply-add units, where it measured
    faster), 32 on others with AVX-512 (AMD Zen 4 splits a 512-bit one in two), 32 with AVX2,
    16 below it; ``TSC_CONV_VECTOR_BYTES=32|64`` picks the AVX-512 width before the first
    call. The results are the same bits either way."""
    from . import _C

    return int(_C._conv_block_vector_bytes())


def empty_output_cache() -> int:
    """Frees the memory the CPU kernels keep from outputs that were freed.

    Toeplitz outputs of 64 KiB and more, and the sparse filter's ``direct`` results (outputs,
    input gradients) of 32 MiB and more, are written into memory kept from earlier, freed
    outputs: fresh memory costs a page fault per 4 KiB, as long as the convolution itself on
    large batches, and below 32 MiB the C library's malloc reuses memory itself once its
    thresholds rise. (A channels-last result below the lanes layout's batch is computed NCHW
    and converted into fresh memory.) At most ``TSC_OUTPUT_CACHE_MB`` megabytes are kept
    (default 512; set it to 0 before the first call to keep none). Returns the number of bytes
    released."""
    from . import _C

    return int(_C._release_cached_outputs())


def empty_pattern_cache() -> int:
    """Frees the filter patterns the CPU kernels of a sparse filter keep.

    The forward keeps each layer's pattern once checked, with the plans its kernels derive
    from it (chunk bounds and tap offsets: a walk over the taps that cost up to a sixth of a
    forward of 512x7x7 at batch 1); the backward keeps the transposed pattern its input
    gradient convolves with (regrouping the taps took about 5 % of a training step on
    512x7x7). Each is found by the layer's ``row_ptr`` and ``col_idx`` compared bit for bit on
    every call (the values are read afresh each call), so a pattern written in place is never
    served stale. At most ``TSC_PATTERN_CACHE_MB`` megabytes are kept (default 256, read at
    the first call; set it to 0 before then to keep none); where a model's patterns exceed
    it, those kept stay until no call has found them for a while. Returns the number of bytes
    released (patterns in use by a running call are freed when it ends)."""
    from . import _C

    return int(_C._release_cached_patterns())
