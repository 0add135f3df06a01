"""SparseConv2d and sparsify: against nn.Conv2d, torch.nn.utils.prune, training, state dicts,
CUDA graphs."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import torch_sparse_conv as tsc

from testing import load_example, needs_gpu

models = load_example("models")
SmallCNN, prune_convs = models.SmallCNN, models.prune_convs


def test_module_matches_its_dense_weight():
    torch.manual_seed(0)
    layer = tsc.SparseConv2d(6, 9, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                             groups=3, density=0.25)
    assert abs(layer.density - 0.25) < 0.02
    x = torch.randn(2, 6, 11, 13)
    expected = F.conv2d(x, layer.dense_weight(), layer.bias, layer.stride, (1, 0),
                        layer.dilation, 3)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert "density=0.2" in repr(layer) and "groups=3" in repr(layer)


@pytest.mark.parametrize("pattern", ["magnitude", "random"])
def test_initial_pattern(pattern):
    torch.manual_seed(1)
    layer = tsc.SparseConv2d(16, 16, 3, density=0.1, pattern=pattern, bias=False)
    assert layer.nnz == round(0.1 * 16 * 16 * 9)
    assert layer.bias is None


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_from_dense_to_dense_round_trip(padding_mode, padding):
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, (3, 4) if padding == "same" else 3, padding=padding,
                     padding_mode=padding_mode)
    mask = torch.rand_like(conv.weight) < 0.3
    sparse = tsc.SparseConv2d.from_dense(conv, mask=mask)
    x = torch.randn(2, 4, 9, 10)
    reference = nn.Conv2d(4, 6, conv.kernel_size, padding=padding, padding_mode=padding_mode)
    with torch.no_grad():
        reference.weight.copy_(conv.weight * mask)
        reference.bias.copy_(conv.bias)
    torch.testing.assert_close(sparse(x), reference(x), rtol=1e-5, atol=1e-5)
    back = sparse.to_dense()
    assert isinstance(back, nn.Conv2d)
    torch.testing.assert_close(back(x), reference(x), rtol=1e-5, atol=1e-5)


def test_from_dense_of_prune_module():
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    prune.l1_unstructured(conv, "weight", amount=0.9)  # hook kept: weight_orig * weight_mask
    sparse = tsc.SparseConv2d.from_dense(conv)
    x = torch.randn(1, 8, 7, 7)
    torch.testing.assert_close(sparse(x), conv(x), rtol=1e-5, atol=1e-5)
    assert sparse.nnz == int(conv.weight_mask.sum())


def test_training_keeps_pruned_taps_at_zero():
    torch.manual_seed(4)
    layer = tsc.SparseConv2d(4, 8, 3, padding=1, density=0.2)
    pruned = layer.dense_weight().detach() == 0
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    target = torch.randn(4, 8, 6, 6)
    before = layer.values.detach().clone()
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.mse_loss(layer(torch.randn(4, 4, 6, 6)), target)
        loss.backward()
        optimizer.step()
    assert not torch.equal(before, layer.values.detach()), "kept values must train"
    assert torch.all(layer.dense_weight().detach()[pruned] == 0)
    # The functional form: the dense weight's gradient is zero at pruned taps.
    w = layer.dense_weight().detach().requires_grad_()
    tsc.sparse_conv2d(torch.randn(2, 4, 6, 6), w, padding=1).square().sum().backward()
    assert torch.all(w.grad[pruned] == 0) and w.grad[~pruned].abs().sum() > 0


def test_state_dict_round_trip_with_a_different_pattern():
    torch.manual_seed(5)
    source = tsc.SparseConv2d(4, 6, 3, density=0.3)
    target = tsc.SparseConv2d(4, 6, 3, density=0.05)
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(target(x), source(x))
    assert target.nnz == source.nnz
    # And through torch.save / torch.load.
    import io
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    fresh = tsc.SparseConv2d(4, 6, 3, density=0.9)
    fresh.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(fresh(x), source(x))


def test_sparsify_swaps_only_sparse_layers():
    torch.manual_seed(6)
    model = prune_convs(SmallCNN(width=16).eval(), 0.9)
    dense = copy.deepcopy(model)
    result = tsc.sparsify(model)
    assert result is model
    kinds = [type(m) for m in model.features if isinstance(m, (nn.Conv2d, tsc.SparseConv2d))]
    assert kinds[0] is nn.Conv2d  # the unpruned 3-channel stem stays dense
    assert all(k is tsc.SparseConv2d for k in kinds[1:])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense(x), rtol=1e-4, atol=1e-4)


def test_sparsify_handles_unremoved_prune_hooks():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    prune.random_unstructured(model[2], "weight", amount=0.95)
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        expected = model(x)
    tsc.sparsify(model)
    assert isinstance(model[2], tsc.SparseConv2d) and isinstance(model[0], nn.Conv2d)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_sparsify_errors():
    with pytest.raises(TypeError, match="model"):
        tsc.sparsify("not a model")
    with pytest.raises(ValueError, match="min_sparsity"):
        tsc.sparsify(nn.Sequential(), min_sparsity=2.0)


@needs_gpu
def test_cuda_graph_capture_of_a_module():
    layer = tsc.SparseConv2d(16, 16, 3, padding=1, density=0.1, method="direct").cuda()
    x = torch.randn(2, 16, 12, 12, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        layer(x)  # warm-up outside the capture (torch's advice for every captured module)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = layer(x)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    with torch.no_grad():
        torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)


# Replays a captured layer after a write through .data put a column index out of range: the
# graph's device-side check stops the device before any kernel reads it. In a child process,
# since a device-side assertion leaves the CUDA context unusable.
_CORRUPT_REPLAY = """
import torch, torch_sparse_conv as tsc
layer = tsc.SparseConv2d(16, 16, 3, padding=1, density=0.1, method="direct").cuda()
x = torch.randn(2, 16, 12, 12, device="cuda")
stream = torch.cuda.Stream()
stream.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(stream), torch.no_grad():
    layer(x)
torch.cuda.current_stream().wait_stream(stream)
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph), torch.no_grad():
    out = layer(x)
graph.replay()
torch.cuda.synchronize()
print("clean replay ok", flush=True)
layer.col_idx.data[0] = 10 ** 6
graph.replay()
torch.cuda.synchronize()
print("corrupt replay returned", flush=True)
"""


@needs_gpu
def test_cuda_graph_replay_checks_the_indices_on_the_device():
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", _CORRUPT_REPLAY], capture_output=True,
                         text=True, timeout=120)
    assert "clean replay ok" in run.stdout, run.stderr
    assert "corrupt replay returned" not in run.stdout
    assert run.returncode != 0 and "assert" in run.stderr.lower(), run.stderr
