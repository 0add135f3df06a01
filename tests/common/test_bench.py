"""The benchmark suite's code paths on tiny sizes: every contender runs and is checked, the
JSON / Markdown / plots are written, report regenerates marked sections. No timing is asserted
(speed is a benchmark, not a test)."""
import io
import json
import os

import pytest
import torch

from torch_sparse_conv.bench import __main__ as cli
from torch_sparse_conv.bench import (plots, report, resnet18_train, resnet50, sparse_filter,
                                     sparse_filter_layers, sparse_filter_train, toeplitz,
                                     toeplitz_workloads)
from torch_sparse_conv.bench.peers import probe, tf32
from torch_sparse_conv.bench.timing import check_same, needs_lead_in, time_interleaved

needs_matplotlib = pytest.mark.skipif(not plots.available(), reason="matplotlib not installed")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def tiny_sparse_filter_config(quick=True, device="cpu", batch=None, rounds=None):
    return dict(layers=[(4, 6), (8, 5)], sparsities=[0.5, 0.9], batch=batch or 2, rounds=1,
                methods=sparse_filter.OUR_METHODS + ["no-such-method"])


def tiny_layers_config(quick=True, device="cpu", batch=None, rounds=None):
    return dict(layers=[dict(in_channels=6, out_channels=4, kernel=1, stride=1, size=5),
                        dict(in_channels=4, out_channels=4, kernel=3, stride=2, size=7)],
                sparsities=[0.9], batch=batch or 2, rounds=1, methods=["direct", "auto"])


def tiny_train_config(quick=True, device="cpu", batch=None, rounds=None):
    return dict(tiny_layers_config(quick, device, batch, rounds), deepsparse=False,
                training=True)


def tiny_resnet_config(quick=True, device="cpu", batch=None, rounds=None):
    return dict(model="resnet18", image=32, sparsities=[0.9], batches=[1], rounds=1,
                methods=["auto"], deepsparse=False, calibration_batch=2, seed=0,
                fold_batchnorm=True)


def tiny_toeplitz_config(quick=True, device="cpu", batch=None, rounds=None):
    return dict(grid=[[12, 3, 2, 0.1], [12, 3, 1, 0.05]], base=[12, 3, 2, 0.1],
                sweeps=dict(batch=[1, 2], kernel=[3, 4]), rounds=1,
                methods=toeplitz.OUR_METHODS + ["no-such-method"], peers=True)


def tiny_workload_cells(suite):
    """One or two small cells of each workload suite."""
    return {
        "roi": [dict(label="64x64 n20 k3", generator="roi_footprints",
                     args=dict(n_rois=20, frame=[64, 64]), shape=[64, 64], batch=20, kernel=3,
                     density=None)],
        "events": [dict(label=f"26x35 b{b} d5% k3", generator="event_frames",
                        args=dict(batch=b, shape=[26, 35], density=0.05), shape=[26, 35],
                        batch=b, kernel=3, density=0.05) for b in (1, 3)],
        "lidar": [dict(label="64x64 b2 d3% k5", generator="lidar_bev",
                       args=dict(batch=2, shape=[64, 64], density=0.03), shape=[64, 64],
                       batch=2, kernel=5, density=0.03)],
    }[suite]


def tiny_workload_config(suite):
    def config(quick=True, device="cpu", batch=None, rounds=None):
        return dict(cells=tiny_workload_cells(suite), rounds=1, max_call_seconds=2.0,
                    methods=toeplitz.OUR_METHODS + ["no-such-method"], peers=True)
    return config


def test_sparse_filter_rows_checked_and_summarized():
    rows = sparse_filter.run(tiny_sparse_filter_config())
    assert len(rows) == 4
    for row in rows:
        assert {"dense", "prune-mask", "seed-recipe", "ours:direct", "ours:auto"} <= set(
            row["seconds"])
        assert all(t > 0 for t in row["seconds"].values())
        assert row["speedup"]["dense"] == pytest.approx(1.0)
        assert "ours:no-such-method" in row["unavailable"]
    result = dict(suite="sparse-filter", device="cpu", rows=rows)
    summary = sparse_filter.summarize(rows)
    assert set(summary["crossover"]["ours:direct"]) == {"4x6x6", "8x5x5"}
    text = sparse_filter.markdown(result)
    assert "Crossover" in text and "ours:no-such-method" in text
    assert isinstance(sparse_filter.losses(result), list)


@pytest.mark.parametrize("points, kind, sparsity", [
    ([(0.5, 0.5), (0.9, 2.0)], "between", 0.7),      # log-linear: halfway in log(speedup)
    ([(0.5, 1.2), (0.9, 3.0)], "below", 0.5),
    ([(0.5, 0.3), (0.9, 0.8)], "never", None),
    ([(0.5, 2.0), (0.7, 0.5), (0.9, 2.0)], "between", 0.8),  # the last loss decides
    ([(0.5, 0.99), (0.9, 1.01)], "never", None),     # a tie (a dense fallback) is no crossover
])
def test_crossover(points, kind, sparsity):
    found = sparse_filter.crossover(points)
    assert found["kind"] == kind
    if sparsity is None:
        assert found["sparsity"] is None
    else:
        assert found["sparsity"] == pytest.approx(sparsity)


def test_toeplitz_rows_checked_with_every_peer():
    config = tiny_toeplitz_config()
    assert toeplitz.cells(config) == 4  # the base cell is measured once for all its groups
    rows = toeplitz.run(config)
    assert len(rows) == 4
    for row in rows:
        assert {"ours:compat", "ours:auto", "ours:direct", "scipy:convolve2d",
                "torch:conv2d"} <= set(row["seconds"])
        assert row["winner"] in row["seconds"]
        assert "ours:no-such-method" in row["unavailable"]
    base = next(r for r in rows if (r["size"], r["kernel"], r["batch"]) == (12, 3, 2))
    assert set(base["groups"]) == {"grid", "sweep:batch", "sweep:kernel"}
    result = dict(suite="toeplitz", device="cpu", config=config, rows=rows)
    full, compact = toeplitz.markdown(result), toeplitz.markdown(result, compact=True)
    assert "Sweep over batch" in full and "Sweep over kernel" in full
    assert len(compact.splitlines()[2]) <= len(full.splitlines()[2])
    try:
        import sparse_convolution  # noqa: F401
        assert rows[0]["bar"] == "sc:direct+numba"
    except ImportError:
        assert rows[0]["bar"] == "scipy:convolve2d"
        assert "sc:*" in rows[0]["unavailable"]


def test_toeplitz_without_peers_still_runs():
    config = dict(tiny_toeplitz_config(), peers=False, sweeps={})
    rows = toeplitz.run(config)
    assert not any(name.startswith("sc:") for row in rows for name in row["seconds"])


def test_check_same_rejects_a_wrong_contender():
    good, bad = torch.ones(3), torch.tensor([1.0, 1.0, 1.5])
    check_same({"a": good, "b": good.clone()}, "a")
    with pytest.raises(AssertionError, match="'b' disagrees"):
        check_same({"a": good, "b": bad}, "a")
    check_same({"a": good, "b": bad}, "a", tolerances={"b": (0.0, 0.6)})


def test_time_interleaved_and_probe():
    seconds = time_interleaved({"x": lambda: sum(range(10)), "y": lambda: None}, rounds=2,
                               warmup=1)
    assert set(seconds) == {"x", "y"} and all(t >= 0 for t in seconds.values())
    assert probe(lambda: None) is None
    assert "boom" in probe(lambda: (_ for _ in ()).throw(RuntimeError("boom\nmore")))


def test_lead_in_calls_only_where_the_thread_pool_changes():
    """A round runs torch's pool's contenders, then numba's; a contender whose predecessor
    ran on the other pool gets one untimed call first, the others are called only to be
    timed."""
    calls = {"ours:a": 0, "sc:direct+numba": 0, "ours:b": 0, "sc:lazy+numpy": 0}

    def counter(name):
        def call():
            calls[name] += 1
        return call

    time_interleaved({name: counter(name) for name in calls}, rounds=3, warmup=0)
    # Round order ours:a, ours:b, sc:lazy+numpy, sc:direct+numba, wrapping to ours:a.
    assert calls == {"ours:a": 6, "ours:b": 3, "sc:direct+numba": 6, "sc:lazy+numpy": 3}
    assert needs_lead_in("sc:direct+numba", "ours:compat")
    assert needs_lead_in("ours:compat", "sc:direct+numba")
    assert not needs_lead_in("ours:compat", "torch:conv2d")
    assert not needs_lead_in(None, "sc:direct+numba")


def test_tf32_switch_is_restored():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with tf32(not before[0]):
        assert torch.backends.cudnn.allow_tf32 == (not before[0])
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_progress_bar_writes_every_cell_into_a_file():
    stream = io.StringIO()
    with cli.progress_bar(3, "suite", stream=stream) as bar:
        for i in range(3):
            cli._step(bar, f"cell {i}")
    updates = [u for u in stream.getvalue().split("\r") if u.strip()]
    for i in range(3):  # one update per cell, none dropped by tqdm's rate limit
        assert any(f"{i + 1}/3" in u and f"cell {i}" in u for u in updates)
    assert updates[-1].startswith("suite: 100%")


def test_report_update_replaces_only_its_own_section(tmp_path):
    result = dict(suite="sparse-filter", device="cpu",
                  rows=sparse_filter.run(tiny_sparse_filter_config()))
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nhand-written words\n")
    assert report.update(str(path), result, "first") is False
    assert report.update(str(path), result, report.section(result)) is True
    text = path.read_text()
    assert "hand-written words" in text and "first" not in text
    assert text.count(report.markers(result)[0]) == 1 and "Where we lose" in text


@pytest.mark.parametrize("name", list(toeplitz_workloads.SUITES))
def test_workload_suite_rows_checked_with_bytes_and_summary(name):
    suite = toeplitz_workloads.SUITES[name]
    config = tiny_workload_config(name)()
    rows = suite.run(config)
    assert len(rows) == suite.cells(config) == len(config["cells"])
    for row in rows:
        assert {"ours:compat", "ours:auto", "ours:direct", "scipy:convolve2d",
                "torch:conv2d"} <= set(row["seconds"])
        assert "ours:no-such-method" in row["unavailable"]
        assert row["nnz"] > 0 and 0 < row["measured_density"] < 1
        for ours in toeplitz_workloads.OURS:
            out = row["output"][ours]
            assert out["nnz"] > 0 and out["bytes"] > out["nnz"] * 8
            assert out["gbps"] == pytest.approx(out["bytes"] / row["seconds"][ours] / 1e9)
        # ours:auto returns a torch CSR tensor: 8-byte columns and values, 8-byte crow.
        auto = row["output"]["ours:auto"]
        assert auto["bytes"] == 16 * auto["nnz"] + 8 * (row["batch"] + 1)
        assert row["bandwidth"]["warm"] > 0 and row["bandwidth"]["fresh"] > 0
    summary = suite.summarize(rows)
    assert set(summary["ours"]) == {"ours:compat", "ours:auto"}
    assert summary["ours"]["ours:auto"]["worst"]["cell"] in [r["cell"] for r in rows]
    result = dict(suite=name, device="cpu", config=config, rows=rows)
    text = report.section(result)
    assert text.startswith(f"## {suite.title} on CPU")
    assert "geometric-mean speedup" in text and "% of fresh" in text
    assert "ours:no-such-method" in text and isinstance(suite.losses(result), list)


def test_workload_suite_leaves_out_slow_and_big_contenders(monkeypatch):
    """Contenders estimated over the time limit, precomputed ones with too big a T and dense
    peers of too big a batch are left out with why; ours:compat, ours:auto and the bar stay."""
    monkeypatch.setattr(toeplitz_workloads, "MAX_T_ENTRIES", 10)
    monkeypatch.setattr(toeplitz_workloads, "DENSE_MAX_BYTES", 10)
    config = dict(tiny_workload_config("lidar")(), max_call_seconds=1e-9)
    rows = toeplitz_workloads.LIDAR.run(config)
    seconds, why = rows[0]["seconds"], rows[0]["unavailable"]
    assert set(seconds) == {"ours:compat", "ours:auto"} | (
        {"sc:direct+numba"} if toeplitz.sparse_convolution() else set())
    assert "T would hold" in why["ours:precomputed"]
    assert "densified batch" in why["torch:conv2d"]
    assert "s a call" in why["ours:direct"]


def test_workload_check_rejects_a_wrong_contender():
    x = toeplitz_workloads.workloads.lidar_bev(3, (20, 20), 0.05, seed=0)
    k = toeplitz_workloads.workloads.gaussian_kernel(3)
    contenders, _ = toeplitz.contenders_for(x, k, [20, 20], dict(methods=["auto"], peers=False),
                                            "cpu")
    contenders["wrong"] = lambda: contenders["ours:auto"]() * 1.001
    with pytest.raises(AssertionError, match="'wrong' disagrees"):
        toeplitz_workloads._check(contenders, x, k, [20, 20], ["scipy:convolve2d"])


def test_output_bytes_and_rate():
    out = torch.eye(4, dtype=torch.float32).to_sparse_csr()
    assert toeplitz_workloads.csr_output_bytes(out) == 4 * (8 + 4) + 5 * 8
    scipy_sparse = pytest.importorskip("scipy.sparse")
    matrix = scipy_sparse.csr_matrix(out.to_dense().numpy())  # int32 indices
    assert toeplitz_workloads.csr_output_bytes(matrix) == 4 * (4 + 4) + 5 * 4
    assert toeplitz_workloads.csr_output_bytes(torch.ones(3)) is None
    assert toeplitz_workloads.effective_gbps(2e9, 0.5) == pytest.approx(4.0)
    assert toeplitz_workloads.effective_gbps(None, 0.5) is None


@pytest.fixture
def tiny_suites(monkeypatch):
    monkeypatch.setattr(sparse_filter, "default_config", tiny_sparse_filter_config)
    monkeypatch.setattr(toeplitz, "default_config", tiny_toeplitz_config)
    for name, suite in toeplitz_workloads.SUITES.items():
        monkeypatch.setattr(suite, "default_config", tiny_workload_config(name))
    for suite in sparse_filter_layers.SUITES.values():
        monkeypatch.setattr(suite, "default_config", tiny_layers_config)
    monkeypatch.setattr(sparse_filter_train, "default_config", tiny_train_config)
    monkeypatch.setattr(resnet50, "default_config", tiny_resnet_config)
    # The whole-model suites have their own tests (test_bench_sparse_filter_layers.py,
    # test_bench_resnet18_train.py); here they are skipped as without torchvision, which
    # --suite all reports and goes on.
    monkeypatch.setattr(resnet50, "unavailable", lambda: "no torchvision (test)")
    monkeypatch.setattr(resnet18_train, "unavailable", lambda: "no torchvision (test)")


def test_cli_quick_run_writes_json_markdown_and_plots(tmp_path, tiny_suites, capsys):
    out = tmp_path / "results"
    cli.main(["--suite", "all", "--quick", "--threads", "1", "--out", str(out)]
             + ([] if plots.available() else ["--no-plots"]))
    err = capsys.readouterr().err
    assert "skipping suite resnet50: no torchvision (test)" in err
    assert "skipping suite resnet18-train: no torchvision (test)" in err
    assert not (out / "resnet50-cpu.json").exists()
    assert not (out / "resnet18-train-cpu.json").exists()
    suites = ["sparse-filter", *sparse_filter_layers.SUITES, "sparse-filter-train", "toeplitz",
              "roi", "events", "lidar"]
    for suite in suites:
        result = json.loads((out / f"{suite}-cpu.json").read_text())
        assert result["suite"] == suite and result["rows"] and result["machine"]["torch"]
        assert (out / f"{suite}-cpu.md").read_text().startswith("## ")
        if suite.startswith("sparse-filter") or suite == "resnet50":  # glibc here
            assert result["heap"]["applied"] and result["heap"]["how"] == "mallopt"
    assert result["machine"]["peak"]["peak_gflops"] is None or \
        result["machine"]["peak"]["peak_gflops"] > 0
    if plots.available():
        drawn = sorted(os.listdir(out / "plots-cpu"))
        assert drawn == sorted([f"{s}-speedup.png" for s in suites if s != "toeplitz"]
                               + ["toeplitz-grid.png", "toeplitz-sweeps.png"])
        assert all(os.path.getsize(out / "plots-cpu" / name) > 1000 for name in drawn)


@needs_matplotlib
def test_cli_report_and_plot_from_json(tmp_path, tiny_suites, capsys):
    out = tmp_path / "results"
    cli.main(["--suite", "toeplitz", "--out", str(out), "--no-plots"])
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n")
    cli.main(["report", str(out / "toeplitz-cpu.json"), "--update", str(benchmarks),
              "--plots", str(tmp_path / "figures")])
    text = benchmarks.read_text()
    assert "](figures/toeplitz-grid.png)" in text and "<!-- bench:toeplitz:cpu begin -->" in text
    assert (tmp_path / "figures" / "toeplitz-sweeps.png").exists()
    capsys.readouterr()
    cli.main(["plot", str(out / "toeplitz-cpu.json"), "--out", str(tmp_path / "again")])
    assert "toeplitz-grid.png" in capsys.readouterr().out


@needs_gpu
def test_sparse_filter_on_cuda_has_the_tf32_peers():
    rows = sparse_filter.run(tiny_sparse_filter_config(), device="cuda")
    assert {"dense:tf32", "dense:no-tf32", "ours:direct"} <= set(rows[0]["seconds"])


@needs_gpu
def test_toeplitz_on_cuda_runs_the_gpu_peers():
    rows = toeplitz.run(dict(tiny_toeplitz_config(), sweeps={}), device="cuda")
    assert "torch:conv2d@cuda" in rows[0]["seconds"]
