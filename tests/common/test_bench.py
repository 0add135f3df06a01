"""The benchmark suite's code paths on tiny sizes: every contender runs and is checked, the
JSON / Markdown / plots are written, report regenerates marked sections. No timing is asserted
(speed is a benchmark, not a test)."""
import io
import json
import os

import pytest
import torch

from torch_sparse_conv.bench import __main__ as cli
from torch_sparse_conv.bench import plots, report, sparse_filter, toeplitz
from torch_sparse_conv.bench.peers import probe, tf32
from torch_sparse_conv.bench.timing import check_same, time_interleaved

needs_matplotlib = pytest.mark.skipif(not plots.available(), reason="matplotlib not installed")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def tiny_sparse_filter_config(quick=True, device="cpu", batch=None, rounds=None):
    return dict(layers=[(4, 6), (8, 5)], sparsities=[0.5, 0.9], batch=batch or 2, rounds=1,
                methods=sparse_filter.OUR_METHODS + ["no-such-method"])


def tiny_toeplitz_config(quick=True, device="cpu", batch=None, rounds=None):
    return dict(grid=[[12, 3, 2, 0.1], [12, 3, 1, 0.05]], base=[12, 3, 2, 0.1],
                sweeps=dict(batch=[1, 2], kernel=[3, 4]), rounds=1,
                methods=toeplitz.OUR_METHODS + ["no-such-method"], peers=True)


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


@pytest.fixture
def tiny_suites(monkeypatch):
    monkeypatch.setattr(sparse_filter, "default_config", tiny_sparse_filter_config)
    monkeypatch.setattr(toeplitz, "default_config", tiny_toeplitz_config)


def test_cli_quick_run_writes_json_markdown_and_plots(tmp_path, tiny_suites):
    out = tmp_path / "results"
    cli.main(["--suite", "all", "--quick", "--threads", "1", "--out", str(out)]
             + ([] if plots.available() else ["--no-plots"]))
    for suite in ("sparse-filter", "toeplitz"):
        result = json.loads((out / f"{suite}-cpu.json").read_text())
        assert result["suite"] == suite and result["rows"] and result["machine"]["torch"]
        assert (out / f"{suite}-cpu.md").read_text().startswith("## ")
    if plots.available():
        drawn = sorted(os.listdir(out / "plots-cpu"))
        assert drawn == ["sparse-filter-speedup.png", "toeplitz-grid.png",
                         "toeplitz-sweeps.png"]
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
