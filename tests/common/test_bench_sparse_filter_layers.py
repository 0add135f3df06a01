"""The sparse-filter benchmark's per-layer suites (1x1, stride 2, batch 1), the whole-model
ResNet suite, the roofline and heap records and the DeepSparse peer, on tiny sizes. No speed
is asserted. Tests that need torchvision skip without it (a benchmark-only dependency, not in
requirements-dev.txt); the ones that run DeepSparse need scripts/setup_deepsparse.sh's venv
and skip without it, as on CI."""
import json
import sys

import numpy as np
import pytest
import torch

from torch_sparse_conv.bench import (__main__ as cli, deepsparse_peer, deepsparse_worker,
                                     machine, onnx_spec, report, resnet50, sparse_filter,
                                     sparse_filter_layers, sparse_filter_train)
from torch_sparse_conv.bench.timing import RemoteTimed, time_interleaved_stats

needs_torchvision = pytest.mark.skipif(resnet50.unavailable() is not None,
                                       reason="torchvision not installed")
needs_deepsparse = pytest.mark.skipif(deepsparse_peer.venv_python()[0] is None,
                                      reason="no DeepSparse venv (scripts/setup_deepsparse.sh)")


def tiny_layers(batches=(1, 2)):
    return dict(layers=[dict(in_channels=6, out_channels=4, kernel=1, stride=1, size=5),
                        dict(in_channels=4, out_channels=4, kernel=3, stride=2, size=7)],
                sparsities=[0.5, 0.9], batches=list(batches), rounds=1,
                methods=["direct", "auto", "no-such-method"])


def test_layer_spec_label_and_useful_flop():
    square = sparse_filter.layer_spec((64, 56))
    assert sparse_filter.layer_label(square) == "64x56x56"  # as in every earlier result
    assert (square["kernel"], square["stride"], square["padding"], square["out_size"]) == \
        (3, 1, 1, 56)
    one = sparse_filter.layer_spec(sparse_filter_layers.RESNET50_1X1[0])
    assert sparse_filter.layer_label(one) == "1x1 256->64 @56" and one["padding"] == 0
    down = sparse_filter.layer_spec(sparse_filter_layers.RESNET50_3X3_STRIDE2[0])
    assert sparse_filter.layer_label(down) == "3x3/2 128->128 @56->28"
    assert sparse_filter.useful_flop(kept=10, batch=8, out_size=28) == 2 * 10 * 8 * 28 * 28


def test_layer_rows_have_every_batch_gflops_and_faults():
    config = tiny_layers()
    rows = sparse_filter.run(config)
    assert len(rows) == sparse_filter.cells(config) == 2 * 2 * 2
    assert [(r["layer"], r["batch"]) for r in rows[:4]] == \
        [("1x1 6->4 @5", 1)] * 2 + [("1x1 6->4 @5", 2)] * 2
    for row in rows:
        assert {"dense", "prune-mask", "seed-recipe", "ours:direct", "ours:auto"} <= set(
            row["seconds"])
        assert "ours:no-such-method" in row["unavailable"]
        assert row["useful_gflop"] == pytest.approx(
            2 * row["kept"] * row["batch"] * row["out_size"] ** 2 / 1e9)
        for name, seconds in row["seconds"].items():
            assert row["gflops"][name] == pytest.approx(row["useful_gflop"] / seconds)
            assert row["faults"][name] >= 0
    stride2 = [r for r in rows if r["kind"] == "3x3/2"]
    assert stride2 and all(r["out_size"] == 4 for r in stride2)
    result = dict(suite="sparse-filter-1x1", device="cpu", rows=rows,
                  machine=dict(peak=machine.cpu_peak(2, measure=False)),
                  heap=machine.heap_state())
    text = sparse_filter.markdown(result, compact=True)
    assert "| layer | batch | sparsity |" in text and "Useful GFLOP/s" in text
    assert "Crossover" in text and "1x1 6->4 @5 b2" in text  # one line a layer and batch
    assert "Minor page faults per call" in text
    if result["machine"]["peak"]["peak_gflops"]:
        assert "of peak" in text and "FLOP/cycle" in text
    assert all(" b1 at " in w or " b2 at " in w for w in sparse_filter.losses(result))
    assert set(sparse_filter.summarize(rows)["best_gflops"]) >= {"dense", "ours:auto"}


def test_layer_suites_are_registered_with_their_configs():
    for name in ("sparse-filter-batch1", "sparse-filter-1x1", "sparse-filter-stride2",
                 "resnet50"):
        assert name in report.SUITES and name in report.TITLES
        assert cli.parser().parse_args(["run", "--suite", name]).suite == name
    batch1 = sparse_filter_layers.BATCH1.default_config(False, "cpu")
    assert batch1["batch"] == 1 and batch1["sparsities"] == sparse_filter.SPARSITIES
    assert batch1["layers"] == sparse_filter.RESNET50_3X3 and batch1["deepsparse"]
    ones = sparse_filter_layers.ONE_BY_ONE.default_config(False, "cpu")
    assert ones["batch"] == 8 and len(ones["layers"]) == 8 and ones["sparsities"] == [0.9, 0.95]
    assert not sparse_filter_layers.STRIDE2.default_config(False, "cuda")["deepsparse"]
    # Pinning the heap cannot be undone: --suite all runs the suites that pin it last.
    order = cli.suite_order(list(report.SUITES))
    pinned = [bool(getattr(report.SUITES[n], "PIN_HEAP", False)) for n in order]
    assert pinned == sorted(pinned) and pinned[-1] and not pinned[0]


@needs_torchvision
def test_layer_lists_are_resnet50s_shapes():
    """The 1x1 and stride-2 3x3 lists are layers of torchvision's ResNet-50 on a 224x224
    input (forward hooks): every stride-2 3x3, and every 1x1 stride-1 shape but the four that
    occur once, in a stage's first block (timed in the whole model only)."""
    import torchvision
    model = torchvision.models.resnet50().eval()
    seen = set()

    def hook(module, inputs, output):
        seen.add((module.in_channels, module.out_channels, module.kernel_size[0],
                  module.stride[0], inputs[0].shape[-1]))
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(hook)
    with torch.inference_mode():
        model(torch.randn(1, 3, 224, 224))
    as_tuple = [(s["in_channels"], s["out_channels"], s["kernel"], s["stride"], s["size"])
                for s in sparse_filter_layers.RESNET50_1X1
                + sparse_filter_layers.RESNET50_3X3_STRIDE2]
    once = {(64, 64, 1, 1, 56), (256, 128, 1, 1, 56), (512, 256, 1, 1, 28),
            (1024, 512, 1, 1, 14)}
    assert set(as_tuple) == {s for s in seen if (s[2] == 1 and s[3] == 1) or
                             (s[2] == 3 and s[3] == 2)} - once
    assert once <= seen
    assert {(c, c, 3, 1, size) for c, size in sparse_filter.RESNET50_3X3} == \
        {s for s in seen if s[2] == 3 and s[3] == 1}


def test_machine_peak_and_pinned_heap():
    peak = machine.cpu_peak(2, measure=False)
    assert peak["flop_per_cycle"] == 32 and peak["cores"] <= 2
    if peak["mhz"]:
        assert peak["peak_gflops"] == pytest.approx(peak["cores"] * peak["mhz"] * 32 / 1e3)
    record = machine.pin_heap()
    if not record["applied"]:
        pytest.skip(f"no glibc mallopt here: {record.get('why')}")
    assert record["M_MMAP_THRESHOLD"] == 32 * 2 ** 20 and machine.heap_state() == record
    # The artefact's own pattern: the dense baseline's fresh output (and oneDNN's buffers)
    # every call. Pinned, the memory of the call before is reused: no page faults (batch 4
    # here: 1572-2320 a call with glibc's defaults in a fresh process, 0 pinned; measured
    # 2026-12-01). The least of three counts: the heap may still grow once after pinning.
    x, w = torch.randn(4, 64, 56, 56), torch.randn(64, 64, 3, 3)
    counts = [machine.faults_per_call(lambda: torch.nn.functional.conv2d(x, w, padding=1))
              for _ in range(3)]
    assert min(counts) < 50, counts
    assert deepsparse_worker.pin_heap()["applied"]  # the worker's copy of the same calls


class _Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


def test_onnx_spec_keeps_the_zeros_and_the_graph(tmp_path):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU(), _Residual(),
        torch.nn.MaxPool2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d((1, 1)), torch.nn.Flatten(),
        torch.nn.Linear(4, 5)).eval()
    with torch.no_grad():
        model[0].weight.mul_((torch.rand_like(model[0].weight) > 0.9).float())
    spec = onnx_spec.write(model, torch.randn(2, 3, 12, 12), str(tmp_path))
    assert [n["op"] for n in spec["nodes"]] == ["Conv", "Relu", "Conv", "BatchNormalization",
                                               "Add", "Relu", "MaxPool", "GlobalAveragePool",
                                               "Flatten", "Gemm"]
    assert spec["nodes"][0]["attrs"] == dict(kernel_shape=[3, 3], strides=[2, 2],
                                             pads=[1, 1, 1, 1], dilations=[1, 1], group=1)
    assert spec["outputs"][0]["shape"] == [2, 5] and spec["inputs"][0]["shape"] == [2, 3, 12, 12]
    first = np.load(tmp_path / spec["initializers"][spec["nodes"][0]["inputs"][1]])
    assert np.array_equal(first, model[0].weight.detach().numpy())  # zeros kept as zeros
    assert json.loads((tmp_path / "graph.json").read_text()) == spec
    with pytest.raises(onnx_spec.Unsupported, match="GELU"):
        onnx_spec.write(torch.nn.Sequential(torch.nn.GELU()), torch.randn(1, 2), str(tmp_path))


class _FakeRemote(RemoteTimed):
    """Stands in for the DeepSparse worker: its own clock, its own faults."""

    def __init__(self):
        self.samples = []

    def __call__(self):
        return torch.zeros(1)

    def warmup(self, calls):
        self.warm = calls

    def sample(self, min_seconds, max_repeat):
        self.samples.append((min_seconds, max_repeat))
        return 0.5, 2.0


def test_remote_contender_takes_its_turn_in_every_round():
    remote = _FakeRemote()
    stats = time_interleaved_stats({"local": lambda: None, "remote": remote}, rounds=3,
                                   warmup=2, min_round_seconds=0.001)
    assert remote.warm == 2 and remote.samples == [(0.001, 64)] * 3
    assert stats["seconds"]["remote"] == 0.5 and stats["faults"]["remote"] == 2.0
    assert stats["seconds"]["local"] > 0 and stats["faults"]["local"] >= 0


class _DyingRemote(_FakeRemote):
    def sample(self, min_seconds, max_repeat):
        raise deepsparse_peer.WorkerError("the DeepSparse worker exited (-9)")


def test_a_worker_that_dies_mid_cell_is_left_out_and_the_cell_timed_again():
    session = sparse_filter.PeerSession(False, "cpu", 1)
    contenders, unavailable = {"dense": lambda: None, "deepsparse": _DyingRemote()}, {}
    stats = session.time(contenders, unavailable, rounds=2, warmup=1)
    assert set(stats["seconds"]) == {"dense"}
    assert "worker failed" in unavailable["deepsparse"] and "(-9)" in session.note


def test_without_the_deepsparse_venv_the_peer_is_left_out_with_a_note(monkeypatch, tmp_path):
    monkeypatch.setenv(deepsparse_peer.VENV_VARIABLE, str(tmp_path / "nowhere"))
    peer, note = deepsparse_peer.start(1)
    assert peer is None and "no venv" in note and "setup_deepsparse.sh" in note
    config = dict(tiny_layers(batches=[1]), sparsities=[0.9], deepsparse=True)
    config["layers"] = config["layers"][:1]
    rows = sparse_filter.run(config)
    assert "deepsparse" not in rows[0]["seconds"]
    assert "no venv" in rows[0]["unavailable"]["deepsparse"]
    assert config["deepsparse_peer"]["available"] is False
    text = report.section(dict(suite="sparse-filter-1x1", device="cpu", rows=rows,
                               config=config))
    assert "- peer: DeepSparse left out: no venv" in text


@pytest.mark.slow
def test_worker_without_deepsparse_answers_with_the_import_error(monkeypatch):
    """The worker run by a python that lacks deepsparse (this one): the start fails cleanly."""
    monkeypatch.setattr(deepsparse_peer, "venv_python", lambda: (sys.executable, "test"))
    try:
        import deepsparse  # noqa: F401
        pytest.skip("deepsparse importable here")
    except ImportError:
        pass
    peer, note = deepsparse_peer.start(1)
    assert peer is None and "Error" in note and "DeepSparse left out" in note


@pytest.mark.slow
@needs_deepsparse
def test_deepsparse_peer_runs_a_pruned_layer_in_turn():
    config = dict(tiny_layers(batches=[2]), sparsities=[0.9], deepsparse=True)
    config["layers"] = [dict(in_channels=8, out_channels=8, kernel=3, stride=1, size=6)]
    rows = sparse_filter.run(config)
    assert config["deepsparse_peer"]["available"], config["deepsparse_peer"]["note"]
    assert config["deepsparse_peer"]["heap"]["applied"]
    row = rows[0]
    assert row["seconds"]["deepsparse"] > 0 and "deepsparse" in row["gflops"]
    assert "deepsparse" in sparse_filter.markdown(dict(device="cpu", rows=rows))


@needs_torchvision
def test_resnet_suite_on_a_tiny_resnet18():
    config = dict(resnet50.default_config(True, "cpu"), model="resnet18", image=32,
                  batches=[1], rounds=1, methods=["auto", "no-such-method"], deepsparse=False,
                  calibration_batch=2)
    rows = resnet50.run(config)
    assert len(rows) == resnet50.cells(config) == 1
    row = rows[0]
    assert row["convs"] == 20 and 0.09 < row["density"] < 0.11
    # default_config folds batch norm for a second pair of contenders (and a third with the
    # max pool through channels-last, a fourth with the epilogues fused, its bits checked
    # against the third's), and runs dense and ours:auto+fold-bn channels-last too
    contenders = {"dense", "ours:auto", "dense+fold-bn", "ours:auto+fold-bn",
                  "ours:auto+fold-bn+pool", "ours:auto+fold-bn+pool+fuse", "dense/channels-last",
                  "ours:auto+fold-bn/channels-last"}
    assert set(row["seconds"]) == contenders
    assert "ours:no-such-method" in row["unavailable"]
    assert row["useful_gflop"] < row["dense_gflop"]
    assert row["images_per_second"]["dense"] == pytest.approx(1 / row["seconds"]["dense"])
    result = dict(suite="resnet50", device="cpu", config=config, rows=rows,
                  machine=dict(peak=machine.cpu_peak(2, measure=False)))
    text = report.section(result)
    assert text.startswith("## Sparse-filter conv2d: the whole ResNet-50 on CPU")
    assert "20 convolutions pruned" in text and "Useful GFLOP/s (images/s)" in text
    assert isinstance(resnet50.losses(result), list)
    assert set(resnet50.summarize(rows)["per_batch"]["1"]) == contenders


def test_resnet_suite_says_why_without_torchvision(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision fails
    assert "torchvision==0.26.0" in resnet50.unavailable()
    with pytest.raises(SystemExit, match="torchvision"):
        cli.main(["--suite", "resnet50", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_training_suite_checks_and_counts_three_passes():
    """The training suite's rows: every contender's step timed after its output and both
    gradients were checked against dense's, useful GFLOP counting the three passes."""
    layers = [dict(in_channels=6, out_channels=4, kernel=3, stride=1, size=6),
              dict(in_channels=4, out_channels=8, kernel=1, stride=2, size=7)]
    assert sparse_filter_train.default_config(False, "cpu")["batches"] == [8, 32]
    assert sparse_filter_train.default_config(False, "cpu", batch=4)["batches"] == [4]
    config = dict(sparse_filter_train.default_config(True, "cpu"), layers=layers, batches=[3],
                  rounds=1)
    rows = sparse_filter_train.run(config)
    assert len(rows) == sparse_filter_train.cells(config) == 2
    assert {row["batch"] for row in rows} == {3}
    for row in rows:
        assert {"dense", "prune-mask", "ours:auto", "ours:direct"} == set(row["seconds"])
        forward = sparse_filter.useful_flop(row["kept"], 3, row["out_size"])
        assert row["useful_gflop"] == pytest.approx(3 * forward / 1e9)
    result = dict(suite=sparse_filter_train.NAME, device="cpu", config=config, rows=rows,
                  machine=dict(peak=machine.cpu_peak(2, measure=False)))
    text = report.section(result)
    assert text.startswith("## " + sparse_filter_train.TITLE)
    assert "a training step of nn.Conv2d" in text and "3 passes x 2 x kept taps" in text


def test_training_suite_refuses_a_wrong_gradient(monkeypatch):
    """A contender whose weight gradient is off at one kept tap stops the cell."""
    spec = sparse_filter.layer_spec(dict(in_channels=4, out_channels=4, kernel=3, stride=1,
                                         size=5))
    weight = torch.randn(4, 4, 3, 3)
    mask = (torch.rand(4, 4, 3, 3) > 0.5).float()
    steps, dense_grads, _ = sparse_filter_train._contenders(torch.randn(2, 4, 5, 5), weight,
                                                            mask, spec, ["direct"])
    sparse_filter_train._check(steps, dense_grads)  # as they are: equal
    right = steps["ours:direct"]

    def wrong():
        out, grad_x, grad_values = right()
        return out, grad_x, grad_values + (torch.arange(grad_values.numel()) == 0)
    steps["ours:direct"] = wrong
    with pytest.raises(AssertionError, match="'ours:direct' disagrees"):
        sparse_filter_train._check(steps, dense_grads)
