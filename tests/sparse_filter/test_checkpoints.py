"""Checkpoints move both ways between a dense model and its sparsified copy: densify,
dense_state_dict, and SparseConv2d loading a dense nn.Conv2d `weight` entry."""
import copy

import pytest
import torch
from torch import nn

import torch_sparse_conv as tsc


def _pruned_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 6, 3, stride=2, groups=2, bias=False)),
                          nn.Conv2d(6, 5, 1))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(torch.rand_like(module.weight) > 0.85)
    return model


def test_densify_returns_the_dense_architecture_with_the_same_weights():
    dense = _pruned_model()
    sparse = tsc.sparsify(copy.deepcopy(dense), min_sparsity=0.5)
    assert sum(isinstance(m, tsc.SparseConv2d) for m in sparse.modules()) == 3
    back = tsc.densify(sparse)
    assert not any(isinstance(m, tsc.SparseConv2d) for m in back.modules())
    assert back.state_dict().keys() == dense.state_dict().keys()
    for key, value in dense.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, rtol=0, atol=0)
    layer = tsc.SparseConv2d(3, 4, 3)
    assert type(tsc.densify(layer)) is nn.Conv2d


def test_a_sparsified_models_checkpoint_loads_into_the_dense_architecture():
    dense = _pruned_model()
    sparse = tsc.sparsify(copy.deepcopy(dense), min_sparsity=0.5)
    with torch.no_grad():
        for module in sparse.modules():
            if isinstance(module, tsc.SparseConv2d):
                module.values.mul_(2)  # trained after sparsifying
    state = tsc.dense_state_dict(sparse)
    fresh = _pruned_model(seed=1)
    fresh.load_state_dict(state)  # strict: no missing or unexpected key
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(fresh(x), sparse(x), rtol=1e-5, atol=1e-5)


def test_a_dense_checkpoint_loads_into_a_sparsified_model():
    dense = _pruned_model()
    sparse = tsc.sparsify(_pruned_model(seed=2), min_sparsity=0.5)
    sparse.load_state_dict(dense.state_dict())  # `weight` entries: their zeros are the pattern
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)
    first = sparse[0]
    assert first.nnz == int((dense[0].weight != 0).sum())
    # And round trip through the dense form.
    sparse.load_state_dict(tsc.dense_state_dict(sparse))
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)


def test_a_dense_weight_of_the_wrong_shape_is_reported():
    layer = tsc.SparseConv2d(4, 8, 3)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight: copying a dense weight "
                                           r"of shape \(8, 4, 5, 5\)"):
        layer.load_state_dict({"weight": torch.randn(8, 4, 5, 5), "bias": torch.zeros(8)})
