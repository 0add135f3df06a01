"""The package's import paths: both families' names gathered in torch_sparse_conv.nn and
.functional, and the paths that objects pickled before the families became subpackages name."""
import io
import pickle

import torch_sparse_conv as tsc
import torch_sparse_conv.functional as functional
import torch_sparse_conv.nn as nn


def test_nn_and_functional_gather_both_families():
    assert nn.SparseConv2d is tsc.SparseConv2d and nn.ToeplitzConv2d is tsc.ToeplitzConv2d
    assert nn.sparsify is tsc.sparsify
    assert functional.sparse_conv2d is tsc.sparse_conv2d
    assert functional.toeplitz_conv2d is tsc.toeplitz_conv2d
    assert functional.pack_sparse_filter is tsc.pack_sparse_filter


def test_models_pickled_under_the_old_module_paths_resolve():
    find = pickle.Unpickler(io.BytesIO(b"")).find_class
    assert find("torch_sparse_conv.nn", "SparseConv2d") is tsc.SparseConv2d
    assert find("torch_sparse_conv.toeplitz", "ToeplitzConv2d") is tsc.ToeplitzConv2d


def test_a_pickled_module_round_trips():
    layer = tsc.SparseConv2d(4, 6, 3, padding=1)
    restored = pickle.loads(pickle.dumps(layer))
    assert type(restored) is tsc.SparseConv2d
    assert restored.weight_size == layer.weight_size
