"""Helpers the test files and the fuzzers share (tests/ is on sys.path: conftest.py puts it
there for pytest, the fuzzers' scripts for themselves).

* devices: ``DEVICES`` (a test's ``device`` parameter: CPU always, CUDA skipped where torch
  sees no GPU) and ``needs_gpu`` (a CUDA-only test);
* subprocesses: ``run_python`` and ``run_script`` (a fresh interpreter, for settings the
  library reads once at load, and for code that must not take the test process down);
* random inputs: ``random_weight`` (a pruned filter), ``random_csr`` (a batch of sparse
  images), ``csr_of`` / ``csr_from_scipy`` / ``csr_to`` (CSR batches from numpy, scipy, or on
  another device), ``csr_arrays`` (a CSR batch's three arrays, as ``forward_csr`` takes them);
* references: ``scipy_reference`` (``scipy.signal.convolve2d`` image by image);
* the pattern cache: ``pattern_cache_counts`` (what a call found kept or built);
* TorchScript: ``saved_and_loaded`` (a scripted or traced module after ``torch.jit.save`` and
  ``torch.jit.load``);
* ``load_example``: a module of examples/python (the demo's CNN).
"""
import importlib.util
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "python"

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_gpu)]


# ------------------------------------------------------------------------- subprocesses

def run_python(*args, timeout=300, **env) -> subprocess.CompletedProcess:
    """``python *args`` in a fresh interpreter (this one's), with `env` added to the
    environment; output captured as text."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **env))


def run_script(script, timeout=300, **env):
    """Runs `script` in a fresh interpreter (with `env` added to the environment) and checks
    it finished and printed 'ok'."""
    result = run_python("-c", script, timeout=timeout, **env)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def assert_same_digest_with_and_without_pattern_cache(script):
    """Runs `script` (which prints a digest of its results last) with the pattern cache at
    its default size and with TSC_PATTERN_CACHE_MB=0 (nothing kept), and checks both printed
    the same digest: what is kept between calls gives the bits built afresh."""
    digests = []
    for limit in ("256", "0"):
        result = run_python("-c", script, TSC_PATTERN_CACHE_MB=limit)
        assert result.returncode == 0, result.stderr[-3000:]
        digests.append(result.stdout.split()[-1])
    assert digests[0] == digests[1]


def pattern_cache_counts(call):
    """What ``call()`` did to the CPU pattern cache (csrc/sparse_filter/pattern_cache.h): how
    many patterns it found kept or built, and how many plans kept with them it found or built,
    as a dict of the counters' increments (``patterns_found``, ``patterns_built``,
    ``plans_found``, ``plans_built``)."""
    from torch_sparse_conv import _C
    before = _C._pattern_cache_counters()
    call()
    after = _C._pattern_cache_counters()
    return {name: after[name] - before[name] for name in before}


# ------------------------------------------------------------------------- sparse filters

def random_weight(shape, density, dtype, generator=None):
    """A dense weight of normal values with about `density` of its taps kept (the others 0)."""
    weight = torch.randn(shape, dtype=dtype, generator=generator)
    keep = torch.rand(shape, generator=generator) < density
    return weight * keep


def gradcheck_packed(x, weight, stride, padding, dilation, groups, method="auto"):
    """torch.autograd.gradcheck of sparse_filter_conv2d w.r.t. the input and the kept values
    of ``weight`` (float64), without a bias."""
    import torch_sparse_conv as tsc
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    values = values.clone().requires_grad_()

    def conv(x, values):
        return torch.ops.torch_sparse_conv.sparse_filter_conv2d(
            x, row_ptr, col_idx, values, list(weight.shape), None, list(stride), list(padding),
            list(dilation), groups, method)
    return torch.autograd.gradcheck(conv, (x.detach().requires_grad_(), values))


# ------------------------------------------------------------------------- sparse images

def random_csr(rng, batch, h, w, density, dtype=torch.float64):
    """A CSR batch (batch, h*w) of normal values at about `density` of the pixels, drawn from
    the numpy Generator `rng`."""
    dense = rng.standard_normal((batch, h * w)) * (rng.random((batch, h * w)) < density)
    return torch.tensor(dense, dtype=dtype).to_sparse_csr()


def csr_of(images, dtype=None):
    """The CSR batch (B, H*W) of numpy images (B, H, W), one flattened image a row."""
    return torch.tensor(images.reshape(images.shape[0], -1), dtype=dtype).to_sparse_csr()


def csr_from_scipy(matrix):
    """A torch CSR tensor on a scipy CSR matrix's arrays (int64 indices)."""
    return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr).long(),
                                   torch.from_numpy(matrix.indices).long(),
                                   torch.from_numpy(matrix.data), size=matrix.shape)


def csr_to(x, device):
    """The CSR tensor `x` with its arrays on `device`."""
    return torch.sparse_csr_tensor(x.crow_indices().to(device), x.col_indices().to(device),
                                   x.values().to(device), size=x.shape)


def csr_arrays(x):
    """The (crow_indices, col_indices, values) of the CSR tensor `x`, copied: tensors of their
    own, not views of `x` (torch.export cannot take a view of a sparse tensor as an input)."""
    return x.crow_indices().clone(), x.col_indices().clone(), x.values().clone()


def scipy_reference(images, kernel, mode):
    """scipy.signal.convolve2d of every image (B, H, W), flattened: (B, H_out*W_out)."""
    return np.stack([scipy.signal.convolve2d(im, kernel, mode).reshape(-1) for im in images])


# ------------------------------------------------------------------------- TorchScript

def saved_and_loaded(module):
    """A scripted or traced `module` after torch.jit.save and torch.jit.load, in memory."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


# ------------------------------------------------------------------------- examples

def load_example(name: str):
    """A module of examples/python (e.g. the demo's models), loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"examples.{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
